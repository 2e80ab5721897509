"""Many threads and many tasks through one transport, with random platform faults.

Deadlock is detected by bounds (``concurrent.futures.wait(timeout=...)``, ``anyio.fail_after``),
never by asserting on speed. Every request must end in a response or a typed RequestFailed, and
the counters must agree: the client's, the fake platform's and the transport's own snapshot.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import anyio
import httpx
import pytest

import retrypolicy
from retrypolicy.testing import Busy, FakePlatform, Fault, GatewayError, TokenExpired, UserAction

from ..support import Recorder
from .conftest import report, size
from .scenarios import (
    PLATFORMS,
    Platform,
    Tally,
    Wire,
    async_client,
    check_run,
    injected_summary,
    send_async,
    send_sync,
    sync_client,
)

# No rate-limit code in the random mix: it starts an app-wide cooldown (WeChat 45011: 60 s) that
# testing mode runs on its virtual clock as in production, so every later request of the storm
# would fail fast, unsent. Cooldowns under concurrency: the demo's phase 2 (test_demo.py).
FAULTS: list[Fault] = [Busy(), TokenExpired(), GatewayError(502), UserAction()]
BOUND = 120.0  # seconds before a run counts as deadlocked (a healthy run takes about one)


class CountingHook:
    """The fake's own token hook, counted (the single-flight check needs the number of calls)."""

    def __init__(self, fake: FakePlatform) -> None:
        self._hook = fake.token_hook()
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> retrypolicy.Token:
        with self._lock:
            self.calls += 1
        return self._hook()


def check_counters(
    figures: dict[str, int], tally: Tally, hook: CountingHook, snapshot: retrypolicy.Snapshot, requests: int
) -> None:
    # the transport's own counters agree with what the clients and the platform saw
    assert snapshot.requests == requests
    assert snapshot.succeeded == len(tally.ok)
    assert sum(snapshot.gave_up.values()) == len(tally.failed)
    assert snapshot.attempts == figures["attempts"]
    # single flight: one hook call for the first token, then at most one per expiry event
    assert 1 <= hook.calls <= 1 + figures["token_expired"]
    assert snapshot.renewals == hook.calls - 1


@pytest.mark.parametrize("platform_name", list(PLATFORMS))
def test_64_threads_one_transport(platform_name: str) -> None:
    platform: Platform = PLATFORMS[platform_name]
    threads = 64
    n = threads * size(40, 400)
    fake = platform.make()
    fake.fault_rate(0.2, faults=FAULTS, seed=64 + list(PLATFORMS).index(platform_name))
    wire = Wire(fake, platform)
    hook = CountingHook(fake)
    tally = Tally()
    started = time.perf_counter()
    with sync_client(platform, wire, token=hook) as client, ThreadPoolExecutor(threads) as pool:
        transport = client._transport
        assert isinstance(transport, retrypolicy.RetryTransport)
        futures = [pool.submit(send_sync, client, platform, fake, f"t{i}", tally) for i in range(n)]
        done, not_done = wait(futures, timeout=BOUND)
        assert not not_done, f"{len(not_done)} requests still running after {BOUND} s: deadlock"
        for future in done:
            future.result()  # send_sync tallies every outcome; this only re-raises a bug in it
        snapshot = transport.snapshot()
    figures = check_run(tally, wire, fake, platform, n)
    check_counters(figures, tally, hook, snapshot, n)
    assert figures["faults"] > n // 10 and tally.failed
    report(
        f"threads64[{platform_name}]",
        **figures,
        hook_calls=hook.calls,
        injected=injected_summary(fake),
        outcomes=tally.kinds(),
        seconds=round(time.perf_counter() - started, 2),
    )


@pytest.mark.parametrize("platform_name", list(PLATFORMS))
def test_1000_tasks_one_transport(platform_name: str) -> None:
    platform = PLATFORMS[platform_name]
    waves = size(1, 20)  # waves of 1,000 concurrent tasks (20 under RETRYPOLICY_LONG=1)
    n = 1_000 * waves
    fake = platform.make()
    fake.fault_rate(0.2, faults=FAULTS, seed=1000 + list(PLATFORMS).index(platform_name))
    wire = Wire(fake, platform)
    hook = CountingHook(fake)
    tally = Tally()
    started = time.perf_counter()

    async def main() -> retrypolicy.Snapshot:
        async with async_client(platform, wire, token=hook) as client:
            transport = client._transport
            assert isinstance(transport, retrypolicy.AsyncRetryTransport)
            for wave in range(waves):
                with anyio.fail_after(BOUND):  # a deadlock ends here, as a TimeoutError
                    async with anyio.create_task_group() as tg:
                        for i in range(1_000):
                            tg.start_soon(send_async, client, platform, fake, f"a{wave}-{i}", tally)
            return transport.snapshot()

    snapshot = anyio.run(main)
    figures = check_run(tally, wire, fake, platform, n)
    check_counters(figures, tally, hook, snapshot, n)
    assert figures["faults"] > n // 10 and tally.failed
    report(
        f"tasks1000[{platform_name}]",
        waves=waves,
        **figures,
        hook_calls=hook.calls,
        injected=injected_summary(fake),
        outcomes=tally.kinds(),
        seconds=round(time.perf_counter() - started, 2),
    )


def test_cancellation_storm_async() -> None:
    """300 tasks with random deadlines cancel in the middle of sends, backoff sleeps (real, short)
    and renewals; afterwards the transport still serves a batch with no failure, no message was
    accepted twice, and the renewal lock is free."""
    import random  # noqa: PLC0415

    retrypolicy.set_testing(True, scale=0.05)  # real, short waits to be cancelled in
    platform = PLATFORMS["wechat"]
    fake = platform.make()
    fake.fault_rate(0.3, faults=[Busy(), TokenExpired(), GatewayError(503)], seed=7)
    wire = Wire(fake, platform)
    hook = CountingHook(fake)
    rng = random.Random(7)
    n = size(300, 3000)
    tally = Tally()
    cancelled = [0]

    async def main() -> None:
        # no circuit breaker: the storm's failures may open it, and this test is about cancellations
        # (a cancelled probe is tests/test_breaker.py's)
        async with async_client(platform, wire, token=hook, breaker=None) as client:

            async def one(mid: str, after: float) -> None:
                with anyio.move_on_after(after) as scope:
                    await send_async(client, platform, fake, mid, tally)
                if scope.cancelled_caught:
                    cancelled[0] += 1

            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(one, f"c{i}", rng.uniform(0, 0.0005 * n))  # deadlines spread over the run
            fake.clear_faults()
            after = Tally()
            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    for i in range(50):
                        tg.start_soon(send_async, client, platform, fake, f"after{i}", after)
            assert after.unexpected == [] and after.failed == {} and len(after.ok) == 50

    anyio.run(main)
    assert tally.unexpected == []
    assert cancelled[0] + tally.requests == n
    counts = [platform.ident(body) for body in fake.sent]
    assert len(counts) == len(set(counts))  # no duplicates, cancellations included
    assert wire.resent_after_ambiguous == []
    report(
        "cancellation_storm[async]",
        requests=n,
        cancelled=cancelled[0],
        ok=len(tally.ok),
        failed=len(tally.failed),
        faults=len(fake.injected),
        duplicates=0,
    )


# -- single flight when the hook fails -----------------------------------------------------------

SEND_URL = "https://api.weixin.qq.com/cgi-bin/message/custom/send"


def _expired_handler(request: httpx.Request) -> httpx.Response:
    if request.url.params.get("access_token") == "tok-1-value":
        return httpx.Response(200, json={"errcode": 42001, "errmsg": "access_token expired"})
    return httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})


def test_failed_renewal_is_shared_by_waiters_sync() -> None:
    """A request that fails with the same stale token while a renewal is in flight waits for that
    renewal; when the hook fails, it shares the failure instead of calling the hook again.
    (Regression: the waiter used to read a call count that already included the in-flight call,
    and called the failing hook once more, serially, each up to token_timeout.)"""
    entered, release = threading.Event(), threading.Event()
    calls = [0]

    def hook() -> str:
        calls[0] += 1
        if calls[0] == 1:
            return "tok-1-value"
        entered.set()
        release.wait(10)
        raise ConnectionError("token service down")

    rec = Recorder(default=_expired_handler)
    transport = retrypolicy.RetryTransport("wechat", token=hook, transport=httpx.MockTransport(rec))
    outcomes: dict[str, Any] = {}
    with httpx.Client(transport=transport) as client, ThreadPoolExecutor(2) as pool:

        def post(name: str) -> None:
            try:
                client.post(SEND_URL, json={"touser": name})
                outcomes[name] = "ok"
            except retrypolicy.RequestFailed as exc:
                outcomes[name] = type(exc).__name__

        first = pool.submit(post, "A")
        assert entered.wait(10)  # A is renewing: its hook call is in flight
        second = pool.submit(post, "B")
        for _ in range(500):  # B has sent with the same stale token and is about to wait
            if len(rec.requests) == 2:
                break
            time.sleep(0.01)
        time.sleep(0.2)  # B now waits for the renewal lock
        release.set()
        assert not wait([first, second], timeout=30).not_done
    assert outcomes == {"A": "TokenRefreshFailed", "B": "TokenRefreshFailed"}
    assert calls[0] == 2  # the first token and the one failed renewal; B shares its failure
    report("failed_renewal_shared[sync]", hook_calls=calls[0], waiters=1)


def test_failed_renewal_is_shared_by_waiters_async() -> None:
    """The async twin of :func:`test_failed_renewal_is_shared_by_waiters_sync`."""
    calls = [0]
    outcomes: dict[str, str] = {}
    rec = Recorder(default=_expired_handler)

    async def main() -> None:
        entered, release = anyio.Event(), anyio.Event()

        async def hook() -> str:
            calls[0] += 1
            if calls[0] == 1:
                return "tok-1-value"
            entered.set()
            await release.wait()
            raise ConnectionError("token service down")

        transport = retrypolicy.AsyncRetryTransport("wechat", token=hook, transport=httpx.MockTransport(rec))
        async with httpx.AsyncClient(transport=transport) as client:

            async def post(name: str) -> None:
                try:
                    await client.post(SEND_URL, json={"touser": name})
                    outcomes[name] = "ok"
                except retrypolicy.RequestFailed as exc:
                    outcomes[name] = type(exc).__name__

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(post, "A")
                    await entered.wait()
                    tg.start_soon(post, "B")
                    while len(rec.requests) < 2:
                        await anyio.sleep(0.01)
                    await anyio.sleep(0.05)  # B waits for the renewal lock
                    release.set()

    anyio.run(main)
    assert outcomes == {"A": "TokenRefreshFailed", "B": "TokenRefreshFailed"}
    assert calls[0] == 2
    report("failed_renewal_shared[async]", hook_calls=calls[0], waiters=1)
