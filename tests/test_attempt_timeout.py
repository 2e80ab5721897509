"""Attempt timeouts inside the deadline (issue 19): each attempt's httpx timeouts are capped by the
``attempt_timeout`` setting (table, transport, request) and by the time left before the request's
deadline; no wait and no attempt starts past the deadline; settings that cannot work are refused
by the constructors and by ``retrypolicy lint``."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import CircuitBreaker, ConfigurationError, RetrySettings
from retrypolicy._decide import Limits, RetryState, decide
from retrypolicy._policy import Category, Classification
from retrypolicy.cli import main
from tests.realserver import Reply, Seen, serve
from tests.support import Recorder, ok, send, wechat

INFO = "https://api.weixin.qq.com/cgi-bin/user/info"
OK = Reply.json({"errcode": 0, "errmsg": "ok"})
BUSY = Reply.json({"errcode": -1, "errmsg": "system busy"})


def _timeouts(rec: Recorder) -> list[dict[str, float | None]]:
    return [dict(r.extensions["timeout"]) for r in rec.requests]


# -- the cap -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("testing")
def test_each_attempt_is_capped_by_the_time_left_before_the_deadline(mode: str) -> None:
    """A 6 s wait (virtual, in testing mode) of a 10 s deadline leaves the second attempt at most
    4 s: its 5 s httpx timeouts are cut to that, and the first attempt's are left alone."""
    rec = Recorder([wechat(-1), ok()])
    settings = RetrySettings(max_attempts=2, min_delay=6, deadline=10)
    send(mode, rec, "GET", INFO, policy="wechat", retry=settings, request={"timeout": 5.0})
    first, second = _timeouts(rec)
    assert first == {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}
    assert set(second) == set(first)
    assert all(3.0 < v <= 4.0 for v in second.values() if v is not None)


@pytest.mark.parametrize("where", ["table", "transport", "request"])
def test_attempt_timeout_from_the_table_the_transport_or_the_request(mode: str, where: str, tmp_path: Path) -> None:
    rec = Recorder([ok()])
    kwargs: dict[str, Any] = {"policy": "wechat"}
    request: dict[str, Any] = {"timeout": httpx.Timeout(5.0, read=1.0)}
    if where == "table":
        path = tmp_path / "mine.toml"
        path.write_text('extends = "wechat"\n[retry]\nattempt_timeout = 2.5\n', encoding="utf-8")
        kwargs["policy"], cap = path, 2.5
    elif where == "transport":
        kwargs["retry"], cap = RetrySettings(attempt_timeout=2.0), 2.0
    else:
        request["extensions"], cap = {"retrypolicy": {"attempt_timeout": 1.5}}, 1.5
    send(mode, rec, "GET", INFO, request=request, **kwargs)
    assert _timeouts(rec) == [{"connect": cap, "read": 1.0, "write": cap, "pool": cap}]  # read was shorter


def test_the_clients_own_request_keeps_its_timeouts() -> None:
    rec = Recorder([ok()])
    transport = retrypolicy.RetryTransport(
        "wechat", transport=httpx.MockTransport(rec), retry=RetrySettings(attempt_timeout=2.0)
    )
    with httpx.Client(transport=transport, timeout=None) as client:
        request = client.build_request("GET", INFO)
        client.send(request)
    assert request.extensions["timeout"] == {"connect": None, "read": None, "write": None, "pool": None}
    assert _timeouts(rec) == [{"connect": 2.0, "read": 2.0, "write": 2.0, "pool": 2.0}]


def test_no_timeout_at_all_is_capped_by_the_deadline(mode: str) -> None:
    rec = Recorder([ok()])
    send(mode, rec, "GET", INFO, policy="wechat", retry=RetrySettings(deadline=30), request={"timeout": None})
    assert _timeouts(rec) == [{"connect": 30.0, "read": 30.0, "write": 30.0, "pool": 30.0}]


def _slow_second(delay: float) -> Any:
    """A handler: WeChat's busy at once for the first request, then ok after ``delay`` seconds."""
    count = 0
    lock = threading.Lock()

    def handler(seen: Seen) -> Reply:
        nonlocal count
        with lock:
            count += 1
            n = count
        if n == 1:
            return BUSY
        time.sleep(delay)
        return OK

    return handler


def _get(mode: str, url: str, **kwargs: Any) -> Any:
    """One GET through a fresh transport over a real socket (client timeouts 5 s); the response or
    the exception it raised."""
    timeout = httpx.Timeout(5.0)

    async def main() -> Any:
        try:
            if mode == "sync":
                with httpx.Client(transport=retrypolicy.RetryTransport("wechat", **kwargs), timeout=timeout) as c:
                    return c.get(url)
            async with httpx.AsyncClient(
                transport=retrypolicy.AsyncRetryTransport("wechat", **kwargs), timeout=timeout
            ) as ac:
                return await ac.get(url)
        except retrypolicy.RequestFailed as exc:
            return exc

    return anyio.run(main)


def test_attempt_timeout_cuts_a_slow_answer_over_a_real_socket(mode: str) -> None:
    """The client allows 5 s; the attempt timeout (0.2 s) ends an attempt whose answer takes 1 s."""
    with serve(_slow_second(1.0)) as server:
        settings = RetrySettings(max_attempts=2, initial_delay=0.001, max_delay=0.001, attempt_timeout=0.2)
        out = _get(mode, server.url + "/cgi-bin/user/info", retry=settings)
        assert isinstance(out, retrypolicy.RetriesExhausted)
        assert out.classification.description.startswith("ReadTimeout") and out.attempts == 2
        assert len(server.seen) == 2


@pytest.mark.usefixtures("testing")
def test_the_deadline_cuts_a_slow_answer_over_a_real_socket(mode: str) -> None:
    """Busy, then a 9.7 s wait (virtual) of a 10 s deadline: the second attempt gets about 0.3 s,
    not the client's 5 s, so the answer that takes 1 s is not waited for."""
    with serve(_slow_second(1.0)) as server:
        settings = RetrySettings(max_attempts=2, min_delay=9.7, deadline=10)
        out = _get(mode, server.url + "/cgi-bin/user/info", retry=settings)
        assert isinstance(out, retrypolicy.RetriesExhausted)
        assert out.classification.description.startswith("ReadTimeout") and out.attempts == 2
        assert len(server.seen) == 2


def test_no_attempt_starts_after_the_deadline(mode: str) -> None:
    """A token renewal that outlasts the deadline: the request is not sent again."""
    calls = 0

    def hook() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            time.sleep(0.3)  # past the 0.2 s deadline
        return f"token-{calls}-abcdefgh"

    async def ahook() -> str:
        return hook()

    rec = Recorder([wechat(40001)], default=lambda r: ok())
    with pytest.raises(retrypolicy.RetriesExhausted, match="deadline passed before attempt 2") as info:
        send(mode, rec, "GET", INFO, policy="wechat", token=hook if mode == "sync" else ahook,
             retry=RetrySettings(deadline=0.2))  # fmt: skip
    assert len(rec.requests) == 1
    assert info.value.attempts == 1 and [r.action for r in info.value.history] == ["renew"]


# -- never sleep past the deadline -----------------------------------------------------------------

BUSY_C = Classification("wechat", -1, Category.RETRYABLE, "busy", "System busy")


def test_decide_waits_at_least_min_delay_and_never_past_the_deadline() -> None:
    limits = Limits(max_attempts=4, initial_delay=0.5, max_delay=20, deadline=10, max_renewals=1, min_delay=3.0)
    d = decide(BUSY_C, RetryState(), limits, elapsed=0, resend_safe=True, can_renew=False, wait=0.1)
    assert (d.action, d.delay) == ("retry", 3.0)
    d = decide(BUSY_C, RetryState(), limits, elapsed=7.5, resend_safe=True, can_renew=False, wait=0.1)
    assert d.action == "give_up" and "3 s wait would pass the 10 s deadline" in d.reason
    d = decide(BUSY_C, RetryState(), limits, elapsed=1, resend_safe=True, can_renew=False, retry_after=9.5)
    assert d.action == "give_up" and "9.5 s wait would pass" in d.reason  # a wait hint too


@pytest.mark.usefixtures("testing")
def test_a_body_wait_hint_past_the_deadline_gives_up_at_once(mode: str) -> None:
    """Telegram's ``parameters.retry_after`` (the table's [wait_hint]) asks for 120 s; the deadline
    is 60 s: no wait is scheduled and the request is not resent."""
    body = {"ok": False, "error_code": 429, "description": "Too Many Requests", "parameters": {"retry_after": 120}}
    rec = Recorder([httpx.Response(429, json=body)], default=lambda r: httpx.Response(200, json={"ok": True}))
    with capture_logs() as logs, pytest.raises(retrypolicy.RetriesExhausted, match="would pass the 60 s deadline"):
        send(mode, rec, "POST", "https://api.telegram.org/bot123:ABC/sendMessage", policy="telegram")
    assert len(rec.requests) == 1
    assert not [e for e in logs if e["event"] == "retrypolicy.retry_scheduled"]


# -- settings that cannot work ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "fragments"),
    [
        ({"attempt_timeout": 90, "deadline": 60}, ["attempt_timeout (90 s)", "deadline (60 s)"]),
        ({"max_attempts": 5, "min_delay": 20, "deadline": 60}, ["max_attempts (5)", "min_delay (20 s)", "80 s"]),
        ({"attempt_timeout": 0}, ["attempt_timeout must be"]),
        ({"attempt_timeout": float("nan")}, ["attempt_timeout must be"]),
        ({"min_delay": -1}, ["min_delay must be"]),
    ],
)
def test_retry_settings_that_cannot_work_are_refused(settings: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        RetrySettings(**settings)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_a_breaker_window_shorter_than_two_attempt_timeouts_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"breaker\.window \(30 s\) is shorter than twice") as info:
        retrypolicy.RetryTransport("wechat", retry=RetrySettings(attempt_timeout=20))
    assert "retry.attempt_timeout (20 s)" in str(info.value)
    retrypolicy.RetryTransport("wechat", retry=RetrySettings(attempt_timeout=20), breaker=CircuitBreaker(window=40))
    retrypolicy.RetryTransport("wechat", retry=RetrySettings(attempt_timeout=20), breaker=None)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"attempt_timeout": 100}, "attempt_timeout (100 s) is longer than the deadline (90 s)"),
        ({"attempt_timeout": 5, "deadline": 2}, "attempt_timeout (5 s) is longer than the deadline (2 s)"),
        ({"attempt_timeout": 20}, "shorter than twice this request's attempt_timeout (20 s)"),
        ({"attempt_timeout": "2"}, "attempt_timeout must be a finite number"),
        ({"attempt_timeout": True}, "attempt_timeout must be a finite number"),
    ],
)
def test_request_options_that_cannot_work_are_refused(mode: str, options: dict[str, Any], fragment: str) -> None:
    rec = Recorder([ok()])
    with pytest.raises(ConfigurationError) as info:
        send(mode, rec, "GET", INFO, policy="wechat", request={"extensions": {"retrypolicy": options}})
    assert fragment in str(info.value)
    assert rec.requests == []


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        ("[retry]\nattempt_timeout = 120\n", ["field 'retry'", "attempt_timeout (120 s)", "deadline (90 s)"]),
        ("[retry]\nmax_attempts = 4\nmin_delay = 30\n", ["max_attempts (4)", "min_delay (30 s)", "deadline (90 s)"]),
        (
            "[retry]\nattempt_timeout = 20\n[breaker]\nwindow = 30\n",
            ["field 'breaker.window'", "breaker.window (30 s)", "retry.attempt_timeout (20 s)"],
        ),
        ("[retry]\nattempt_timeout = 0\n", ["field 'retry.attempt_timeout'", "> 0"]),
        ("[breaker]\nprobes = 0\n", ["field 'breaker.probes'"]),
    ],
)
def test_lint_rejects_settings_that_cannot_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, fragments: list[str]
) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(f'extends = "wechat"\n{toml}', encoding="utf-8")
    code = main(["lint", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert str(path) in err
    for fragment in fragments:
        assert fragment in err


def test_lint_accepts_settings_that_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'extends = "wechat"\n[retry]\nattempt_timeout = 10\nmin_delay = 1\n'
        "[breaker]\nwindow = 60\nmin_calls = 10\nfailure_ratio = 0.8\n",
        encoding="utf-8",
    )
    assert main(["lint", str(path)]) == 0
    assert "ok: platform wechat" in capsys.readouterr().out
    policy = retrypolicy.load_policy(path)
    assert policy.retry.attempt_timeout == 10 and policy.retry.min_delay == 1
    assert policy.breaker == CircuitBreaker(window=60, min_calls=10, failure_ratio=0.8)


def test_every_shipped_table_passes_the_new_checks() -> None:
    for name in retrypolicy.SHIPPED_POLICIES:
        policy = retrypolicy.load_policy(name)
        assert policy.breaker == CircuitBreaker()
        assert policy.retry.attempt_timeout is None
