"""The circuit breaker (issue 19): opening on a failure ratio over a sliding window, failing fast
while open, probing while half-open, closing; its settings, events, counters and pickling.

The state machine is tested on a clock moved by hand; the transports, sync and async, against a
real local server that accepts connections and never answers (tests/hanging.py). No assertion is
on time: they count attempts the server saw, outcomes and the breaker's own counters.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import CircuitBreaker, CircuitOpen, ConfigurationError, RetrySettings
from retrypolicy._breaker import CLOSED, HALF_OPEN, OPEN, Breakers
from retrypolicy._policy import Category, Classification
from tests.hanging import HangingServer, hanging_server
from tests.support import Recorder, ok, send, wechat

INFO = "/cgi-bin/user/info"  # a GET: idempotent, so a read timeout is resent
TIMEOUT = httpx.Timeout(5.0, read=0.1)
QUICK = RetrySettings(max_attempts=2, initial_delay=0.001, max_delay=0.001)
BUSY = Classification("wechat", -1, Category.RETRYABLE, "busy", "System busy")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _breakers(**settings: Any) -> tuple[Breakers, Any, Clock]:
    clock = Clock()
    breakers = Breakers(clock)
    b = breakers.add("wechat", "*", CircuitBreaker(**settings))
    assert b is not None
    return breakers, b, clock


# -- the state machine, on a clock moved by hand --------------------------------------------------


def test_opens_at_the_failure_ratio_once_the_window_holds_min_calls() -> None:
    breakers, b, _ = _breakers(failure_ratio=0.5, min_calls=20)
    for _ in range(10):
        assert not breakers.answered(b, probe=False)
    for _ in range(9):
        assert breakers.failure(b, BUSY, probe=False) is None  # 9 of 19: below min_calls and the ratio
    assert breakers.quiet and b.state == CLOSED
    opened = breakers.failure(b, BUSY, probe=False)  # 10 of 20: 50%
    assert opened is not None and (opened.failures, opened.calls, opened.reopened) == (10, 20, False)
    assert opened.seconds == 5.0 and b.state == OPEN and not breakers.quiet
    assert breakers.admit(b) == ("open", 5.0)
    assert b.rejected == 1 and b.opened == 1


def test_below_min_calls_it_never_opens_however_many_fail() -> None:
    breakers, b, _ = _breakers(min_calls=20)
    for _ in range(19):
        assert breakers.failure(b, BUSY, probe=False) is None
    assert b.state == CLOSED
    assert breakers.failure(b, BUSY, probe=False) is not None  # the 20th


def test_failures_older_than_the_window_drop_out() -> None:
    breakers, b, clock = _breakers(min_calls=4, window=30.0)
    for _ in range(3):
        breakers.failure(b, BUSY, probe=False)
    clock.now += 31  # the three slid out of the window
    for _ in range(3):
        assert breakers.failure(b, BUSY, probe=False) is None
    assert b.totals(clock.now) == (3, 3)
    assert breakers.failure(b, BUSY, probe=False) is not None


def test_successes_after_a_quiet_spell_count_for_the_window_share_only() -> None:
    """Successes are counted without a timestamp (the fast path takes no lock); at the next tally
    they are taken as spread since the last one, so 64 successes in an hour are not 64 recent ones."""
    breakers, b, clock = _breakers(min_calls=4, window=30.0)
    breakers.answered(b, probe=False)  # the first success is tallied at once
    for _ in range(62):
        breakers.answered(b, probe=False)
    clock.now += 3600
    for _ in range(4):
        breakers.failure(b, BUSY, probe=False)
    calls, failures = b.totals(clock.now)
    assert failures == 4 and calls < 5  # 62 successes over an hour: about half a success in 30 s
    assert b.state == OPEN


def test_every_64th_success_enters_the_window_with_its_time() -> None:
    breakers, b, clock = _breakers(min_calls=4, window=30.0)
    for _ in range(128):  # a burst: tallied at the 1st, 65th (and so on) success
        breakers.answered(b, probe=False)
    clock.now += 10
    for _ in range(4):
        breakers.failure(b, BUSY, probe=False)
    calls, failures = b.totals(clock.now)
    assert failures == 4 and calls >= 4 + 65  # the burst counts in full: it is 10 s old
    assert b.state == CLOSED


def test_half_open_lets_probes_through_a_success_closes_and_a_failure_reopens_longer() -> None:
    breakers, b, clock = _breakers(min_calls=1, open_for=5.0, max_open_for=12.0, probes=2)
    assert breakers.failure(b, BUSY, probe=False) is not None
    waits = []
    for _ in range(3):
        clock.now = b.until
        assert breakers.admit(b) == ("probe", 0.0)
        assert breakers.admit(b) == ("probe", 0.0)
        assert breakers.admit(b) == ("busy", 0.0)  # both probes out
        assert b.state == HALF_OPEN and not breakers.quiet
        opened = breakers.failure(b, BUSY, probe=True)
        assert opened is not None and opened.reopened
        waits.append(opened.seconds)
        assert breakers.failure(b, BUSY, probe=True) is None  # the other probe: already open again
    assert waits == [10.0, 12.0, 12.0]  # doubled, capped at max_open_for
    clock.now = b.until
    assert breakers.admit(b) == ("probe", 0.0)
    assert breakers.answered(b, probe=True)  # closes
    assert b.state == CLOSED and breakers.quiet and b.wait == 5.0
    assert b.totals(clock.now) == (0, 0)  # a fresh window
    assert breakers.admit(b) == ("pass", 0.0)


def test_a_probe_that_ends_without_an_outcome_frees_its_place() -> None:
    breakers, b, clock = _breakers(min_calls=1)
    breakers.failure(b, BUSY, probe=False)
    clock.now = b.until
    assert breakers.admit(b)[0] == "probe"
    assert breakers.admit(b)[0] == "busy"
    breakers.release(b)
    assert breakers.admit(b)[0] == "probe"


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"failure_ratio": 0}, "failure_ratio"),
        ({"failure_ratio": 1.5}, "failure_ratio"),
        ({"failure_ratio": float("nan")}, "failure_ratio"),
        ({"min_calls": 0}, "min_calls"),
        ({"min_calls": 2.5}, "min_calls"),
        ({"probes": 0}, "probes"),
        ({"window": 0}, "window"),
        ({"window": float("inf")}, "window"),
        ({"open_for": -1}, "open_for"),
        ({"open_for": True}, "open_for"),
        ({"open_for": 10, "max_open_for": 5}, "max_open_for"),
    ],
)
def test_breaker_settings_are_checked(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"CircuitBreaker.{field}"):
        CircuitBreaker(**settings)


def test_transport_refuses_a_breaker_of_the_wrong_type() -> None:
    with pytest.raises(ConfigurationError, match=r"breaker must be a retrypolicy\.CircuitBreaker, None"):
        retrypolicy.RetryTransport("wechat", breaker={"window": 30})  # type: ignore[arg-type]


# -- through the transports, against a server that hangs ------------------------------------------


async def _outcome(mode: str, client: Any) -> tuple[str, int, float]:
    """(what one GET ended with, attempts it sent, CircuitOpen.remaining or -1)."""
    try:
        if mode == "sync":
            client.get(INFO, params={"openid": "o1"})
        else:
            await client.get(INFO, params={"openid": "o1"})
    except CircuitOpen as exc:
        return "CircuitOpen", exc.attempts, exc.remaining
    except retrypolicy.RequestFailed as exc:
        return type(exc).__name__, exc.attempts, -1.0
    return "ok", -1, -1.0


def _run(mode: str, server: HangingServer, scenario: Callable[[Any, Any], Awaitable[None]], **kwargs: Any) -> None:
    """Run ``scenario(transport, client)`` with a client of the given mode on the server."""
    kwargs.setdefault("retry", QUICK)

    async def main() -> None:
        if mode == "sync":
            transport: Any = retrypolicy.RetryTransport("wechat", **kwargs)
            with httpx.Client(transport=transport, base_url=server.url, timeout=TIMEOUT) as client:
                await scenario(transport, client)
        else:
            transport = retrypolicy.AsyncRetryTransport("wechat", **kwargs)
            async with httpx.AsyncClient(transport=transport, base_url=server.url, timeout=TIMEOUT) as client:
                await scenario(transport, client)

    anyio.run(main)


def test_breaker_opens_fails_fast_probes_and_closes_over_a_hanging_server(mode: str) -> None:
    breaker = CircuitBreaker(min_calls=4, window=60, open_for=0.2, max_open_for=0.4)

    async def scenario(transport: Any, client: Any) -> None:
        # two requests, two attempts each, every one timing out: 4 of 4 failed, it opens
        assert [await _outcome(mode, client) for _ in range(2)] == [("RetriesExhausted", 2, -1)] * 2
        assert server.attempts == 4
        (status,) = transport.snapshot().circuits
        assert (status.state, status.opened, status.failures) == ("open", 1, 4)
        # open: five requests fail at once, unsent
        for _ in range(5):
            what, attempts, remaining = await _outcome(mode, client)
            assert (what, attempts) == ("CircuitOpen", 0) and 0 < remaining <= 0.2
        assert server.attempts == 4
        # half-open: one probe goes; it hangs, so the breaker opens again, for twice as long, and
        # the probe's own retry is refused
        await anyio.sleep(0.25)
        what, attempts, remaining = await _outcome(mode, client)
        assert (what, attempts) == ("CircuitOpen", 1) and 0 < remaining <= 0.4
        assert server.attempts == 5
        assert (await _outcome(mode, client))[:2] == ("CircuitOpen", 0)
        # the platform recovers; after the longer wait the next probe gets an answer and closes it
        server.recover()
        await anyio.sleep(0.45)
        assert await _outcome(mode, client) == ("ok", -1, -1)
        assert server.attempts == 6
        assert [await _outcome(mode, client) for _ in range(3)] == [("ok", -1, -1)] * 3
        assert server.attempts == 9
        (status,) = transport.snapshot().circuits
        assert (status.state, status.opened, status.rejected, status.probes) == ("closed", 2, 7, 2)

    with hanging_server() as server, capture_logs() as logs:
        _run(mode, server, scenario, breaker=breaker)
    events = [e for e in logs if e["event"].startswith("retrypolicy.circuit_")]
    assert [(e["event"], e.get("reopened")) for e in events] == [
        ("retrypolicy.circuit_opened", False),
        ("retrypolicy.circuit_opened", True),
        ("retrypolicy.circuit_closed", None),
    ]
    opened, reopened, closed = events
    assert opened["log_level"] == "warning" and closed["log_level"] == "info"
    assert opened["platform"] == "wechat" and opened["description"].startswith("ReadTimeout")
    assert (opened["failures"], opened["calls"], opened["seconds"]) == (4, 4, 0.2)
    assert reopened["seconds"] == 0.4
    gave_up = [e for e in logs if e["event"] == "retrypolicy.gave_up" and e["error"] == "CircuitOpen"]
    assert len(gave_up) == 7


def test_a_circuit_open_error_says_why_and_carries_what_opened_it(mode: str) -> None:
    async def scenario(transport: Any, client: Any) -> None:
        for _ in range(2):
            await _outcome(mode, client)
        with pytest.raises(CircuitOpen) as info:
            if mode == "sync":
                client.get(INFO, params={"access_token": "tok-SECRET-0123456789"})
            else:
                await client.get(INFO, params={"access_token": "tok-SECRET-0123456789"})
        exc = info.value
        assert isinstance(exc, retrypolicy.RequestFailed)
        assert exc.classification.category is Category.RETRYABLE
        assert exc.classification.description.startswith("ReadTimeout")
        assert exc.attempts == 0 and exc.history == () and exc.response is None
        assert "circuit breaker of wechat is open" in str(exc) and "0 attempt(s)" in str(exc)
        assert "SECRET" not in str(exc) and "SECRET" not in repr(exc) and "access_token=***" in exc.url
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is CircuitOpen and back.remaining == exc.remaining > 0
        assert back.classification == exc.classification and str(back) == str(exc)
        assert b"SECRET" not in pickle.dumps(exc)

    with hanging_server() as server:
        _run(mode, server, scenario, breaker=CircuitBreaker(min_calls=4, window=60, open_for=30))
        assert server.attempts == 4


def test_without_a_breaker_every_request_waits_out_the_outage(mode: str) -> None:
    async def scenario(transport: Any, client: Any) -> None:
        assert [(await _outcome(mode, client))[:2] for _ in range(6)] == [("RetriesExhausted", 2)] * 6
        assert transport.snapshot().circuits == []

    with hanging_server() as server:
        _run(mode, server, scenario, breaker=None)
        assert server.attempts == 12


def test_a_table_can_turn_its_breaker_off_and_the_transport_overrides_the_table(tmp_path: Path) -> None:
    off = tmp_path / "off.toml"
    off.write_text('extends = "wechat"\n[breaker]\nenabled = false\n', encoding="utf-8")
    tight = tmp_path / "tight.toml"
    tight.write_text('extends = "wechat"\n[breaker]\nmin_calls = 3\nopen_for = 20\n', encoding="utf-8")
    assert retrypolicy.load_policy(off).breaker is None
    assert retrypolicy.load_policy(tight).breaker == CircuitBreaker(min_calls=3, open_for=20)
    busy = Recorder(default=lambda r: wechat(-1))

    def outcomes(**kwargs: Any) -> list[tuple[str, int]]:
        transport = retrypolicy.RetryTransport(transport=httpx.MockTransport(busy), retry=QUICK, **kwargs)
        out = []
        with httpx.Client(transport=transport) as client:
            for _ in range(4):
                with pytest.raises(retrypolicy.RequestFailed) as info:
                    client.get("https://api.weixin.qq.com" + INFO)
                out.append((type(info.value).__name__, info.value.attempts))
        return out

    # three failed attempts open a breaker with min_calls 3: the second request's retry is refused
    tripped = [("RetriesExhausted", 2), ("CircuitOpen", 1), ("CircuitOpen", 0), ("CircuitOpen", 0)]
    assert outcomes(policy=off) == [("RetriesExhausted", 2)] * 4
    assert outcomes(policy=tight) == tripped
    assert outcomes(policy=tight, breaker=None) == [("RetriesExhausted", 2)] * 4
    assert outcomes(policy=off, breaker=CircuitBreaker(min_calls=3)) == tripped


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("min_calls = 0", "breaker.min_calls"),
        ('window = "30"', "breaker.window"),
        ("failure_ratio = 2.0", "breaker.failure_ratio"),
        ("open_for = 60\nmax_open_for = 30", "breaker.max_open_for"),
        ("colour = 1", "breaker.colour"),
        ("enabled = 1", "breaker.enabled"),
        ("enabled = false\nwindow = 10", "breaker.enabled"),
    ],
)
def test_a_bad_breaker_section_names_the_field(tmp_path: Path, section: str, field: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f'extends = "wechat"\n[breaker]\n{section}\n', encoding="utf-8")
    with pytest.raises(retrypolicy.PolicyError) as info:
        retrypolicy.load_policy(path)
    assert info.value.field == field and "bad.toml" in str(info.value)


def _posts(mode: str, rec: Recorder, n: int, breaker: CircuitBreaker) -> list[str]:
    """``n`` message sends, sent once each (``retry: False``), through one client; what each ended with."""

    async def main() -> list[str]:
        kwargs: dict[str, Any] = {"policy": "wechat", "breaker": breaker, "transport": httpx.MockTransport(rec)}
        options = {"retrypolicy": {"retry": False}}
        out = []
        if mode == "sync":
            with httpx.Client(transport=retrypolicy.RetryTransport(**kwargs)) as client:
                for _ in range(n):
                    try:
                        client.post(SEND, json={"touser": "o1"}, extensions=options)
                        out.append("ok")
                    except retrypolicy.RequestFailed as exc:
                        out.append(type(exc).__name__)
        else:
            async with httpx.AsyncClient(transport=retrypolicy.AsyncRetryTransport(**kwargs)) as aclient:
                for _ in range(n):
                    try:
                        await aclient.post(SEND, json={"touser": "o1"}, extensions=options)
                        out.append("ok")
                    except retrypolicy.RequestFailed as exc:
                        out.append(type(exc).__name__)
        return out

    return anyio.run(main)


SEND = "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=given-token-abc"


def test_user_action_and_fatal_answers_never_open_it(mode: str) -> None:
    """A platform that answers "the user must act" or "this request is wrong" is up: 30 such
    answers in a row leave a breaker that opens after 2 failed attempts closed."""
    rec = Recorder(script=[wechat(45015), wechat(40003), wechat(43004)] * 10)  # user-action, fatal, user-action
    out = _posts(mode, rec, 30, CircuitBreaker(min_calls=2))
    assert out == ["UserActionRequired", "RequestRejected", "UserActionRequired"] * 10
    assert len(rec.requests) == 30


def test_answers_of_other_categories_count_for_the_platform(mode: str) -> None:
    """Busy, user-action, busy, user-action: 2 of 4 failed, below a ratio of 0.7; then three more
    busy answers: 3 of 5, 4 of 6, 5 of 7, which opens it. (Were the user-action answers not
    counted at all, 4 of 4 would have opened it at the sixth request.)"""
    rec = Recorder(script=[wechat(-1), wechat(45015), wechat(-1), wechat(45015)], default=lambda r: wechat(-1))
    out = _posts(mode, rec, 8, CircuitBreaker(min_calls=4, failure_ratio=0.7))
    exhausted, user = "RetriesExhausted", "UserActionRequired"
    assert out == [exhausted, user, exhausted, user, exhausted, exhausted, exhausted, "CircuitOpen"]
    assert len(rec.requests) == 7


def test_one_breaker_per_host_where_a_policy_maps_several(mode: str) -> None:
    """Two hosts of one platform: one host's outage opens its breaker only."""
    rec = Recorder(default=lambda r: wechat(-1) if r.url.host == "down.example" else ok())
    policy = {"down.example": "wechat", "up.example": "wechat"}

    async def main() -> tuple[list[str], list[Any]]:
        kwargs: dict[str, Any] = {"policy": policy, "retry": QUICK, "breaker": CircuitBreaker(min_calls=4)}
        kwargs["transport"] = httpx.MockTransport(rec)
        out = []
        hosts = ["down.example"] * 3 + ["up.example"] * 2
        if mode == "sync":
            transport: Any = retrypolicy.RetryTransport(**kwargs)
            with httpx.Client(transport=transport) as client:
                for host in hosts:
                    try:
                        client.get(f"https://{host}{INFO}")
                        out.append("ok")
                    except retrypolicy.RequestFailed as exc:
                        out.append(type(exc).__name__)
        else:
            transport = retrypolicy.AsyncRetryTransport(**kwargs)
            async with httpx.AsyncClient(transport=transport) as aclient:
                for host in hosts:
                    try:
                        await aclient.get(f"https://{host}{INFO}")
                        out.append("ok")
                    except retrypolicy.RequestFailed as exc:
                        out.append(type(exc).__name__)
        return out, transport.snapshot().circuits

    out, circuits = anyio.run(main)
    assert out == ["RetriesExhausted", "RetriesExhausted", "CircuitOpen", "ok", "ok"]
    assert sorted((c.host, c.state) for c in circuits) == [("down.example", "open"), ("up.example", "closed")]


def test_a_closed_breaker_keeps_successes_on_the_fast_path(mode: str, flows: list[bool]) -> None:
    """The success path makes one check while every breaker is closed: no flow starts, and the
    successes are in the window."""
    rec = Recorder(default=lambda r: ok())
    for _ in range(3):
        send(mode, rec, method="GET", url="https://api.weixin.qq.com" + INFO, policy="wechat")
    assert flows == []
    transport = retrypolicy.RetryTransport("wechat", transport=httpx.MockTransport(rec))
    with httpx.Client(transport=transport) as client:
        for _ in range(70):
            client.get("https://api.weixin.qq.com" + INFO)
    assert flows == []
    (status,) = transport.snapshot().circuits
    assert (status.state, status.calls, status.failures) == ("closed", 70, 0)


def test_snapshot_lists_the_circuits_of_every_platform() -> None:
    transport = retrypolicy.RetryTransport({"api.weixin.qq.com": "wechat", "console.tim.qq.com": "tencent_im"})
    circuits = sorted(transport.snapshot().circuits, key=lambda c: c.platform)
    assert [(c.platform, c.host, c.state, c.opened) for c in circuits] == [
        ("tencent_im", None, "closed", 0),
        ("wechat", None, "closed", 0),
    ]


def test_a_probe_cancelled_in_flight_frees_its_place() -> None:
    """A probe whose request is cancelled (a task group timeout) reports nothing: the breaker lets
    the next probe through instead of staying half-open for good."""
    breaker = CircuitBreaker(min_calls=2, window=60, open_for=0.1, max_open_for=0.1)

    async def main(server: HangingServer) -> list[str]:
        transport = retrypolicy.AsyncRetryTransport("wechat", retry=QUICK, breaker=breaker)
        out = []
        async with httpx.AsyncClient(transport=transport, base_url=server.url, timeout=TIMEOUT) as client:
            out.append((await _outcome("async", client))[0])
            await anyio.sleep(0.15)
            with anyio.move_on_after(0.02):  # the probe hangs; cancelled before its read timeout
                await client.get(INFO)
            out.append("cancelled")
            out.append((await _outcome("async", client))[0])  # the next request is a probe again
        return out

    with hanging_server() as server:
        out = anyio.run(main, server)
        assert out == ["RetriesExhausted", "cancelled", "CircuitOpen"]
        assert server.attempts == 4  # 2, the cancelled probe, the next probe


def test_a_breaker_opened_by_a_slow_platform_in_real_time_closes_again(mode: str) -> None:
    """Real clock, no testing mode: the open period passes in real time."""
    assert not retrypolicy.is_testing()
    with hanging_server() as server:

        async def scenario(transport: Any, client: Any) -> None:
            for _ in range(2):
                await _outcome(mode, client)
            server.recover()
            started = time.monotonic()
            while (await _outcome(mode, client))[0] != "ok":  # fails fast until the probe
                await anyio.sleep(0.02)
                assert time.monotonic() - started < 30, "the breaker never let a probe through"
            (status,) = transport.snapshot().circuits
            assert status.state == "closed" and status.probes == 1

        _run(mode, server, scenario, breaker=CircuitBreaker(min_calls=4, window=60, open_for=0.1))
        assert server.attempts == 5


def test_the_longest_wait_is_six_open_periods_unless_given() -> None:
    assert CircuitBreaker().longest == 30.0
    assert CircuitBreaker(open_for=60).longest == 360.0  # a longer open_for alone needs no cap of its own
    assert CircuitBreaker(open_for=2, max_open_for=3).longest == 3.0
    breakers, b, clock = _breakers(min_calls=1, open_for=1.0)
    breakers.failure(b, BUSY, probe=False)
    waits = []
    for _ in range(4):
        clock.now = b.until
        breakers.admit(b)
        opened = breakers.failure(b, BUSY, probe=True)
        assert opened is not None
        waits.append(opened.seconds)
    assert waits == [2.0, 4.0, 6.0, 6.0]
