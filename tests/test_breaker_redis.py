"""The circuit breaker shared through Redis between two processes (issue 19), against a real
redis-server and a real local server that hangs: one process's breaker opens, the other's
requests fail fast unsent; a half-open breaker gets one probe from both together; a probe's
success in one process closes the breaker in the other.

The parent is one process, a ``spawn``-ed worker (tests/breaker_workers.py) the other; the
server runs in the parent and counts the attempts of both. Skipped only without the
``redis-server`` binary (CI installs it)."""

from __future__ import annotations

import multiprocessing
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

import retrypolicy
from retrypolicy.testing import RedisServer, redis_server
from tests.breaker_workers import breaker_transport, breaker_worker, circuit, outcome
from tests.hanging import hanging_server
from tests.redis_workers import drain

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="the redis-server binary is not installed (apt-get install redis-server); CI installs it",
)

OPEN_FOR = 0.5


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as srv:
        yield srv


class Worker:
    """The other process: ``ask("send")`` -> (outcome, attempts); ``ask("circuit")`` -> its breaker."""

    def __init__(self, redis_url: str, namespace: str, base_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.commands: Any = ctx.Queue()
        self.results: Any = ctx.Queue()
        self.process = ctx.Process(
            target=breaker_worker,
            args=(redis_url, namespace, base_url, OPEN_FOR, self.commands, self.results),
            daemon=True,
        )
        self.process.start()

    def ask(self, command: str) -> tuple[Any, ...]:
        self.commands.put(command)
        (answer,) = drain(self.results, 1, 60)
        assert answer[0] != "worker crashed", answer
        return tuple(answer)

    def stop(self) -> None:
        self.commands.put("stop")
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


def test_the_breaker_is_shared_between_two_processes(redis: RedisServer) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    with hanging_server() as server:
        worker = Worker(redis.url, namespace, server.url)
        transport = breaker_transport(redis.url, namespace, OPEN_FOR)
        try:
            with httpx.Client(transport=transport, base_url=server.url) as client:
                # the worker meets the outage: two requests, four timed-out attempts, its breaker opens
                assert [worker.ask("send") for _ in range(2)] == [("RetriesExhausted", 2)] * 2
                assert worker.ask("circuit") == ("open", 1, 0)
                assert server.attempts == 4
                # this process has sent nothing, yet fails fast, unsent: it pulled the open breaker
                assert [outcome(client) for _ in range(3)] == [("CircuitOpen", 0)] * 3
                assert circuit(transport) == ("open", 1, 0)
                assert server.attempts == 4
                # half-open in both: this process gets the one probe; it hangs, the breaker opens
                # again, for longer, and the worker, whose own open period is over too, is refused
                # by the store without sending
                time.sleep(OPEN_FOR + 0.1)
                assert outcome(client) == ("CircuitOpen", 1)
                assert server.attempts == 5
                assert worker.ask("send") == ("CircuitOpen", 0)
                assert server.attempts == 5
                assert circuit(transport) == ("open", 2, 1)
                # the platform recovers; after the longer wait the worker's probe closes the breaker
                server.recover()
                time.sleep(2 * OPEN_FOR + 0.1)
                assert worker.ask("send") == ("ok", -1)
                assert worker.ask("circuit")[0] == "closed"
                assert server.attempts == 6
                time.sleep(0.1)  # two sync intervals: this process pulls the closed breaker
                assert outcome(client) == ("ok", -1)
                state, _opened, probes = circuit(transport)
                assert (state, probes) == ("closed", 1)  # closed by the worker: no probe of its own
                assert server.attempts == 7
        finally:
            worker.stop()


def test_a_store_that_does_not_share_breakers_keeps_them_per_process(redis: RedisServer) -> None:
    namespace = f"t{uuid.uuid4().hex[:12]}"
    store = retrypolicy.RedisTokenStore.from_url(redis.url, namespace=namespace, share_breakers=False)
    retry = retrypolicy.RetrySettings(max_attempts=2, initial_delay=0.001, max_delay=0.001)
    breaker = retrypolicy.CircuitBreaker(min_calls=4, window=60, open_for=30)
    with hanging_server() as server:
        one = retrypolicy.RetryTransport("wechat", token_store=store, retry=retry, breaker=breaker)
        two = retrypolicy.RetryTransport("wechat", token_store=store, retry=retry, breaker=breaker)
        with (
            httpx.Client(transport=one, base_url=server.url) as c1,
            httpx.Client(transport=two, base_url=server.url) as c2,
        ):
            assert [outcome(c1) for _ in range(3)] == [
                ("RetriesExhausted", 2),
                ("RetriesExhausted", 2),
                ("CircuitOpen", 0),
            ]
            assert outcome(c2) == ("RetriesExhausted", 2)  # its own breaker is closed
            assert server.attempts == 6
    store.close()


def test_an_async_transport_pulls_probes_and_closes_through_redis(redis: RedisServer) -> None:
    """The async transport makes its store calls in a worker thread: it pulls the breaker a sync
    transport opened, claims the probe from the store and closes the breaker for both."""
    namespace = f"t{uuid.uuid4().hex[:12]}"
    retry = retrypolicy.RetrySettings(max_attempts=2, initial_delay=0.001, max_delay=0.001)
    breaker = retrypolicy.CircuitBreaker(min_calls=4, window=60, open_for=OPEN_FOR)

    def store() -> retrypolicy.RedisTokenStore:
        return retrypolicy.RedisTokenStore.from_url(redis.url, namespace=namespace, sync_interval=0.05)

    with hanging_server() as server:
        sync_transport = retrypolicy.RetryTransport("wechat", token_store=store(), retry=retry, breaker=breaker)
        with httpx.Client(transport=sync_transport, base_url=server.url) as client:
            assert [outcome(client) for _ in range(2)] == [("RetriesExhausted", 2)] * 2

            async def main() -> list[tuple[str, int]]:
                transport = retrypolicy.AsyncRetryTransport("wechat", token_store=store(), retry=retry, breaker=breaker)
                out = []
                async with httpx.AsyncClient(transport=transport, base_url=server.url) as aclient:

                    async def one() -> tuple[str, int]:
                        try:
                            await aclient.get("/cgi-bin/user/info", timeout=httpx.Timeout(5.0, read=0.1))
                        except retrypolicy.RequestFailed as exc:
                            return type(exc).__name__, exc.attempts
                        return "ok", -1

                    out.append(await one())  # pulled: open, unsent
                    server.recover()
                    await anyio.sleep(OPEN_FOR + 0.1)
                    out.append(await one())  # the probe, claimed from Redis: it closes the breaker
                    out.append(await one())
                    (status,) = transport.snapshot().circuits
                    out.append((status.state, status.probes))
                return out

            assert anyio.run(main) == [("CircuitOpen", 0), ("ok", -1), ("ok", -1), ("closed", 1)]
            assert server.attempts == 6
            time.sleep(0.1)  # the sync transport pulls the closed breaker: no probe of its own
            assert outcome(client) == ("ok", -1)
            assert circuit(sync_transport)[::2] == ("closed", 0)
            assert server.attempts == 7
