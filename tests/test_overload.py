"""Retry budget, cooldowns and the snapshot, through the sync and the async transport alike."""

from __future__ import annotations

import threading
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import Cooldown, RetryBudget

from .support import Recorder, TrackedStream, make_client, ok, wechat

SEND = "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=t0k3n-value"
CLOUD = "https://graph.facebook.com/v21.0/123/messages"


pytestmark = pytest.mark.usefixtures("testing")  # zero waits (tests/conftest.py)


class Session:
    """One transport (so budget and cooldowns persist) used for several requests, sync or async."""

    def __init__(self, mode: str, handler: Any, **kwargs: Any) -> None:
        self.mode = mode
        self.client = make_client(mode, handler, **kwargs)

    @property
    def transport(self) -> Any:
        return self.client._transport

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        if self.mode == "sync":
            response: httpx.Response = self.client.post(url, **kwargs)
            return response

        async def run() -> httpx.Response:
            response: httpx.Response = await self.client.post(url, **kwargs)
            return response

        return anyio.run(run)


def cloud_error(code: int, status: int = 429) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": f"error {code}", "fbtrace_id": "Ftr"}})


# -- retry budget ------------------------------------------------------------------------------


def test_empty_budget_gives_up_at_once(mode: str) -> None:
    rec = Recorder(default=lambda r: wechat(-1))
    s = Session(mode, rec, policy="wechat", budget=RetryBudget(capacity=3, retry_cost=1, refill=0.5))
    with pytest.raises(retrypolicy.RetriesExhausted):
        s.post(SEND)  # 4 attempts, 3 retries: the bucket is now empty
    assert len(rec.requests) == 4
    with capture_logs() as logs, pytest.raises(retrypolicy.RetryBudgetExhausted) as info:
        s.post(SEND)
    assert len(rec.requests) == 5  # one attempt, no retry
    assert info.value.classification.code == -1 and info.value.attempts == 1
    assert logs[-1]["event"] == "retrypolicy.gave_up" and logs[-1]["reason"] == "the retry budget is empty"
    assert logs[-1]["error"] == "RetryBudgetExhausted"
    assert s.transport.snapshot().budget == {"wechat": 0.0}


def test_successes_refill_the_budget(mode: str) -> None:
    answers = iter([wechat(-1)] * 4 + [ok(), ok()] + [wechat(-1), ok()])
    rec = Recorder(default=lambda r: next(answers))
    s = Session(mode, rec, policy="wechat", budget=RetryBudget(capacity=3, retry_cost=1, refill=0.5))
    with pytest.raises(retrypolicy.RetriesExhausted):
        s.post(SEND)
    s.post(SEND)
    s.post(SEND)  # two successes: +1.0
    assert s.transport.snapshot().budget == {"wechat": 1.0}
    assert s.post(SEND).json()["errcode"] == 0  # a failure, then one paid retry that succeeds
    assert s.transport.snapshot().budget == {"wechat": 0.5}


def test_budget_can_be_switched_off(mode: str, tmp_path: Any) -> None:
    rec = Recorder(default=lambda r: wechat(-1))
    s = Session(mode, rec, policy="wechat", budget=None)
    for _ in range(3):
        with pytest.raises(retrypolicy.RetriesExhausted):
            s.post(SEND)
    assert len(rec.requests) == 12
    # a table can switch it off (or resize it) for its platform
    table = tmp_path / "mine.toml"
    table.write_text('extends = "wechat"\n[budget]\nenabled = false\n')
    rec2 = Recorder(default=lambda r: wechat(-1))
    s2 = Session(mode, rec2, policy=str(table), budget=RetryBudget(capacity=1))
    for _ in range(2):
        with pytest.raises(retrypolicy.RetriesExhausted):
            s2.post(SEND)
    assert len(rec2.requests) == 8


def test_bad_budget_is_a_clear_error() -> None:
    with pytest.raises(retrypolicy.ConfigurationError, match="retry_cost"):
        RetryBudget(retry_cost=0)
    with pytest.raises(retrypolicy.ConfigurationError, match="budget"):
        retrypolicy.RetryTransport(policy="wechat", budget=5)  # type: ignore[arg-type]


# -- cooldowns ---------------------------------------------------------------------------------


def test_app_cooldown_fails_fast_without_sending(mode: str) -> None:
    retrypolicy.set_testing(False)  # cooldowns are scaled like waits in testing mode
    rec = Recorder([cloud_error(130429)], default=lambda r: httpx.Response(200, json={"messages": [{"id": "m"}]}))
    s = Session(mode, rec, policy="whatsapp_cloud", token=lambda: "tok-abcdef")
    no_retry = {"extensions": {"retrypolicy": {"retry": False}}, "json": {"to": "15550001"}}
    with capture_logs() as logs, pytest.raises(retrypolicy.RetriesExhausted):
        s.post(CLOUD, **no_retry)
    assert logs[0]["event"] == "retrypolicy.cooldown_started"
    assert logs[0]["scope"] == "app" and logs[0]["seconds"] == 1.0 and logs[0]["code"] == 130429
    with pytest.raises(retrypolicy.CooldownActive) as info:
        s.post(CLOUD, json={"to": "15550002"})
    assert len(rec.requests) == 1  # the second request never left
    assert 0 < info.value.remaining <= 1.0 and info.value.attempts == 0
    assert info.value.classification.code == 130429
    active = s.transport.snapshot().cooldowns
    assert [(c.platform, c.scope, c.code) for c in active] == [("whatsapp_cloud", "app", 130429)]
    # after the cooldown, requests go through again
    cooldowns = s.transport._core.cooldowns
    now = cooldowns.clock()
    cooldowns.clock = lambda: now + 1.5
    assert s.post(CLOUD, json={"to": "15550002"}).status_code == 200
    assert s.transport.snapshot().cooldowns == []
    assert cooldowns.quiet  # the ended cooldown was dropped: first attempts skip the checks again


def test_recipient_cooldown_blocks_only_that_recipient(mode: str) -> None:
    retrypolicy.set_testing(False)
    rec = Recorder([cloud_error(131056, 400)], default=lambda r: httpx.Response(200, json={"messages": [{"id": "m"}]}))
    s = Session(mode, rec, policy="whatsapp_cloud", token=lambda: "tok-abcdef")
    with pytest.raises(retrypolicy.RetriesExhausted):
        s.post(CLOUD, json={"to": "A"}, extensions={"retrypolicy": {"retry": False}})
    with pytest.raises(retrypolicy.CooldownActive, match="recipient cooldown"):
        s.post(CLOUD, json={"to": "A"})
    assert s.post(CLOUD, json={"to": "B"}).status_code == 200
    assert [r.read() and r.url.path for r in rec.requests] == ["/v21.0/123/messages"] * 2


def test_request_that_started_a_cooldown_retries_after_its_wait(mode: str) -> None:
    retrypolicy.set_testing(True, scale=0.001)  # 60 s -> 60 ms: the cooldown and the wait scale alike
    rec = Recorder([wechat(45011)], default=lambda r: ok())
    s = Session(mode, rec, policy="wechat")
    assert s.post(SEND).json()["errcode"] == 0  # not blocked by its own cooldown
    assert len(rec.requests) == 2


def test_daily_cooldown_lasts_until_midnight_beijing() -> None:
    rule = retrypolicy.load_policy("wechat").rule_for(45009)
    assert rule is not None and rule.cooldown == Cooldown(scope="app", until="00:00+08:00")
    # 2026-11-23 23:30 in Beijing is 15:30 UTC
    import datetime as dt  # noqa: PLC0415

    now = dt.datetime(2026, 11, 23, 15, 30, tzinfo=dt.UTC).timestamp()
    assert rule.cooldown.duration(now) == 30 * 60
    assert Cooldown(scope="app", seconds=6).duration(now) == 6


def test_daily_quota_user_action_then_fail_fast(mode: str) -> None:
    retrypolicy.set_testing(False)
    rec = Recorder([wechat(45009, "reach max api daily quota limit")], default=lambda r: ok())
    s = Session(mode, rec, policy="wechat")
    with pytest.raises(retrypolicy.UserActionRequired):
        s.post(SEND)
    with pytest.raises(retrypolicy.CooldownActive) as info:
        s.post(SEND)
    assert info.value.remaining > 0 and len(rec.requests) == 1


# -- snapshot ----------------------------------------------------------------------------------


def test_snapshot_counts(mode: str) -> None:
    hook_values = iter(["tok-one-abc", "tok-two-abc"])

    def handler(request: httpx.Request) -> httpx.Response:
        return wechat(42001) if request.url.params["access_token"] == "tok-one-abc" else ok()

    rec = Recorder([wechat(-1), handler, handler, wechat(45015)])
    s = Session(mode, rec, policy="wechat", token=lambda: next(hook_values))
    s.post(SEND.split("?", maxsplit=1)[0])  # -1, then 42001, then ok
    with pytest.raises(retrypolicy.UserActionRequired):
        s.post(SEND.split("?", maxsplit=1)[0])
    snap = s.transport.snapshot()
    assert (snap.requests, snap.attempts, snap.retries, snap.renewals, snap.succeeded) == (2, 4, 1, 1, 1)
    assert snap.gave_up == {"user-action": 1}
    assert snap.budget == {"wechat": 99.1}  # 100 - 1 retry + 0.1 for one success


# -- shared state: store calls leave the flow, and the event loop ------------------------------


class RecordingSharedStore(retrypolicy.MemoryTokenStore):
    """A token store that also shares cooldowns and the budget, recording the thread of each call."""

    sync_interval = 0.0  # pull and push before every request

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def cooldown_start(self, name: str, scope: str, key: str, seconds: float, classification: object) -> None:
        self.calls.append(("cooldown_start", threading.get_ident()))

    def cooldown_pull(self, name: str, since: float | None) -> tuple[float, list[tuple[str, str, float, object]]]:
        self.calls.append(("cooldown_pull", threading.get_ident()))
        return 0.0, []

    def budget_take(self, name: str, capacity: float, cost: float, refill: float) -> tuple[bool, float]:
        self.calls.append(("budget_take", threading.get_ident()))
        return True, capacity


def test_store_calls_run_off_the_event_loop(mode: str) -> None:
    store = RecordingSharedStore()
    answers = iter([cloud_error(130429), ok(), ok()])  # a rate limit: cooldown, one retry, then success
    s = Session(mode, lambda r: next(answers), policy="whatsapp_cloud", token=lambda: "tok", token_store=store)
    loop_threads: list[int] = []

    if mode == "sync":
        s.post(CLOUD, json={"to": "1"})
        s.post(CLOUD, json={"to": "1"})
        caller = threading.get_ident()
    else:

        async def run() -> None:
            loop_threads.append(threading.get_ident())
            await s.client.post(CLOUD, json={"to": "1"})
            await s.client.post(CLOUD, json={"to": "1"})

        anyio.run(run)
        caller = loop_threads[0]
    names = [name for name, _ in store.calls]
    # pulled before each attempt, the cooldown published, the retry spent, refills pushed before request 2
    assert names.count("cooldown_pull") >= 2
    assert names.count("cooldown_start") == 1
    assert names.count("budget_take") == 2
    threads = {thread for _, thread in store.calls}
    if mode == "sync":
        assert threads == {caller}  # the sync transport calls the store in the caller's thread
    else:
        assert caller not in threads  # never in the event loop's thread


class Interrupt(BaseException):
    """Like KeyboardInterrupt: not an Exception, so nothing on the way may swallow it."""


class InterruptingStore(RecordingSharedStore):
    def budget_take(self, name: str, capacity: float, cost: float, refill: float) -> tuple[bool, float]:
        super().budget_take(name, capacity, cost, refill)
        if cost:  # the retry's spend, while the failed response is still open
            raise Interrupt
        return True, capacity


def test_interrupted_store_call_closes_the_open_response(mode: str) -> None:
    store = InterruptingStore()
    streams: list[TrackedStream] = []

    def handler(request: httpx.Request) -> httpx.Response:
        stream = TrackedStream(b"<html>busy</html>")  # no length: passed on unread, classified by status
        streams.append(stream)
        return httpx.Response(503, headers={"content-type": "text/html"}, stream=stream)

    s = Session(mode, handler, policy="whatsapp_cloud", token=lambda: "tok", token_store=store)
    with pytest.raises(Interrupt):
        s.post(CLOUD, json={"to": "1"})
    assert [name for name, _ in store.calls][-1] == "budget_take"
    assert len(streams) == 1 and streams[0].closed  # the driver closed what the flow still held


class PushRecordingStore(RecordingSharedStore):
    sync_interval = 3600.0  # one pull and one push, then none until the test says so

    def __init__(self) -> None:
        super().__init__()
        self.refills: list[float] = []

    def budget_take(self, name: str, capacity: float, cost: float, refill: float) -> tuple[bool, float]:
        self.refills.append(refill)
        return super().budget_take(name, capacity, cost, refill)


def test_shared_state_first_attempts_skip_the_flow_between_syncs(mode: str, flows: list[bool]) -> None:
    store = PushRecordingStore()
    s = Session(mode, lambda r: ok(), policy="wechat", token=lambda: "tok", token_store=store)
    s.transport._core.budgets.bucket("wechat").level = 50.0  # refills change the level, not only pending
    url = SEND.split("?", maxsplit=1)[0]  # the transport fills in the token
    for _ in range(3):
        s.post(url)
    # request 1: the flow (no token yet; cooldowns due to be pulled); 2 and 3: no flow, no store call
    assert flows == [False] and [name for name, _ in store.calls] == ["cooldown_pull"]
    core = s.transport._core
    core.budgets.push_gate.next_at = core.cooldowns.pull_gate.next_at = 0.0  # the interval has passed
    s.post(url)
    assert flows == [False, False]  # the flow pushes the three refills before request 4 is sent
    assert store.refills == [pytest.approx(0.3)]
    assert [name for name, _ in store.calls] == ["cooldown_pull", "budget_take", "cooldown_pull"]


@pytest.mark.parametrize("gate", ["pull", "push"])
def test_either_sync_falling_due_sends_the_next_request_through_the_flow(
    mode: str, flows: list[bool], gate: str
) -> None:
    """ready() asks both gates with one clock read: each one alone must still be noticed."""
    store = PushRecordingStore()
    s = Session(mode, lambda r: ok(), policy="wechat", token=lambda: "tok", token_store=store)
    url = SEND.split("?", maxsplit=1)[0]
    s.post(url)
    s.post(url)
    assert flows == [False] and [name for name, _ in store.calls] == ["cooldown_pull"]
    core = s.transport._core
    assert core.budgets.push_gate.clock is core.cooldowns.pull_gate.clock is core.clock
    (core.cooldowns.pull_gate if gate == "pull" else core.budgets.push_gate).next_at = 0.0
    s.post(url)
    assert flows == [False, False]
    assert [name for name, _ in store.calls][1:] == ["cooldown_pull" if gate == "pull" else "budget_take"]
    s.post(url)  # claimed: not due again for an interval
    assert flows == [False, False]


def test_refills_from_concurrent_successes_are_all_counted() -> None:
    """Successes count themselves without a lock; the level adds up every refill once."""
    transport = retrypolicy.RetryTransport(
        "wechat", transport=httpx.MockTransport(lambda r: ok()), budget=RetryBudget(capacity=100, refill=0.01)
    )
    bucket = transport._core.budgets.bucket("wechat")
    assert bucket is not None
    bucket.level = 50.0
    with httpx.Client(transport=transport) as client:

        def send_many() -> None:
            for _ in range(250):
                client.post(SEND)

        threads = [threading.Thread(target=send_many) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    snap = transport.snapshot()
    assert snap.succeeded == snap.requests == 2000
    assert snap.budget == {"wechat": 70.0}  # 50 + 2000 x 0.01
