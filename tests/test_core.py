"""The sans-IO core driven by hand, as httpx's auth-flow tests drive ``auth_flow`` with
``next``/``send``; and :func:`decide` on its own, a table of cases."""

from __future__ import annotations

import types
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import AttemptRecord, Category, Classification, RetriesExhausted, UserActionRequired
from retrypolicy._bodies import BOUNDED, ENCODED, LENGTH, _triples, readable
from retrypolicy._core import Close, FetchToken, First, Read, RenewToken, RetryCore, Sleep
from retrypolicy._decide import Decision, Limits, RetryState, decide
from retrypolicy._token import TokenManager

SEND = "https://api.weixin.qq.com/cgi-bin/message/custom/send"


def core(*, hook: Any = None, **kwargs: Any) -> RetryCore:
    policy = retrypolicy.load_policy("wechat")
    managers = {"wechat": TokenManager(hook, timeout=5)} if hook is not None else {}
    kwargs.setdefault("retry", None)
    return RetryCore(policy, managers, max_renewals=1, raise_on=frozenset(Category), logger=None, budget=None, **kwargs)


def wechat(code: int) -> httpx.Response:
    return httpx.Response(200, json={"errcode": code, "errmsg": f"err {code} rid: 1-2"})


OK = {"errcode": 0, "errmsg": "ok"}


def test_a_busy_answer_is_closed_waited_for_and_resent() -> None:
    flow = core().flow(httpx.Request("POST", SEND, json={"touser": "o1"}))
    sent = next(flow)
    assert isinstance(sent, httpx.Request) and sent.url == SEND
    busy = wechat(-1)
    with capture_logs() as logs:
        action = flow.send(busy)  # already read (json=): no Read, straight to closing it
        assert action == Close(busy)
        sleep = flow.send(None)
    assert isinstance(sleep, Sleep) and 0 <= sleep.seconds <= 0.5  # full jitter, first attempt
    assert [e["event"] for e in logs] == ["retrypolicy.retry_scheduled"]
    again = flow.send(None)
    assert isinstance(again, httpx.Request) and again.url == SEND
    with pytest.raises(StopIteration) as done:
        flow.send(httpx.Response(200, json=OK))
    assert done.value.value.json() == OK


def test_an_unread_small_body_is_read_before_it_is_judged() -> None:
    flow = core().flow(httpx.Request("POST", SEND, json={}))
    next(flow)
    body = b'{"errcode":0,"errmsg":"ok"}'
    unread = httpx.Response(200, headers={"content-length": str(len(body))}, stream=httpx.ByteStream(body))
    # max_body_bytes: the most read of a body without a length; LENGTH: this one has a length
    assert flow.send(unread) == Read(unread, 65536, LENGTH)
    unread.read()  # what the driver does for a Read
    with pytest.raises(StopIteration) as done:
        flow.send(None)
    assert done.value.value is unread


def test_the_token_is_fetched_put_in_and_renewed_once() -> None:
    c = core(hook=lambda: "unused")
    manager = c.managers["wechat"]
    flow = c.flow(httpx.Request("POST", SEND, json={}))
    assert flow.send(None) == FetchToken(manager)
    sent = flow.send("tok-1")
    assert isinstance(sent, httpx.Request) and sent.url.params["access_token"] == "tok-1"
    expired = wechat(42001)
    assert flow.send(expired) == Close(expired)
    assert flow.send(None) == RenewToken(manager, "tok-1")
    resent = flow.send(("tok-2", True))  # (fresh token, the hook was called)
    assert isinstance(resent, httpx.Request) and resent.url.params["access_token"] == "tok-2"
    with pytest.raises(StopIteration):
        flow.send(httpx.Response(200, json=OK))
    assert c.snapshot().renewals == 1


def test_a_user_action_code_raises_with_its_history() -> None:
    flow = core().flow(httpx.Request("POST", SEND, json={}))
    next(flow)
    flow.send(wechat(-1))  # Close
    flow.send(None)  # Sleep
    flow.send(None)  # the resend
    refused = wechat(45015)
    assert flow.send(refused) == Close(refused)
    with pytest.raises(UserActionRequired) as info:
        flow.send(None)
    error = info.value
    assert error.attempts == 2
    assert [(h.attempt, h.code, h.action) for h in error.history] == [(1, -1, "retry"), (2, 45015, "give_up")]
    assert "history: #1 -1 retryable -> retry; #2 45015 user-action -> give up" in str(error)


def test_the_flow_takes_over_a_first_attempt_without_classifying_it_again() -> None:
    """settle() hands its verdict over in First: the flow acts on it, not on a second reading
    (here a verdict that differs from what the table says of the body: the flow follows it)."""
    c = core()
    request = httpx.Request("POST", SEND, json={})
    busy = wechat(-1)  # the table: retryable
    verdict = Classification("wechat", -1, Category.FATAL, "system error", "handed over")
    flow = c.flow(request, First(request, c.clock(), busy, None, verdict))
    assert flow.send(None) == Close(busy)  # straight to the failure path: nothing sent, nothing read
    with pytest.raises(retrypolicy.RequestRejected, match="handed over"):
        flow.send(None)


def test_a_transport_error_before_sending_is_resent_for_a_post() -> None:
    flow = core().flow(httpx.Request("POST", SEND, json={}))
    next(flow)
    sleep = flow.throw(httpx.ConnectError("refused"))
    assert isinstance(sleep, Sleep)
    assert isinstance(flow.send(None), httpx.Request)


def test_retry_off_stops_after_one_send() -> None:
    flow = core().flow(httpx.Request("POST", SEND, json={}, extensions={"retrypolicy": {"retry": False}}))
    next(flow)
    busy = wechat(-1)
    assert flow.send(busy) == Close(busy)
    with pytest.raises(RetriesExhausted, match="retry is off"):
        flow.send(None)


# -- decide(): a table ------------------------------------------------------------------------

LIMITS = Limits(max_attempts=3, initial_delay=0.5, max_delay=20.0, deadline=10.0, max_renewals=1)


def _c(category: Category, **kwargs: Any) -> Classification:
    return Classification("wechat", 1, category, "", "d", **kwargs)


CASES: list[tuple[str, Classification, RetryState, dict[str, Any], tuple[str, str | None]]] = [
    ("user-action gives up", _c(Category.USER_ACTION), RetryState(), {}, ("give_up", "UserActionRequired")),
    ("fatal gives up", _c(Category.FATAL), RetryState(), {}, ("give_up", "RequestRejected")),
    ("retryable retries", _c(Category.RETRYABLE), RetryState(), {}, ("retry", None)),
    ("unsafe resend", _c(Category.RETRYABLE), RetryState(), {"resend_safe": False}, ("give_up", "ResendUnsafe")),
    ("out of attempts", _c(Category.RETRYABLE), RetryState(attempt=3), {}, ("give_up", "RetriesExhausted")),
    ("past the deadline", _c(Category.RETRYABLE, min_delay=60), RetryState(), {}, ("give_up", "RetriesExhausted")),
    (
        "wait hint past the deadline",
        _c(Category.RETRYABLE),
        RetryState(),
        {"retry_after": 11.0},
        ("give_up", "RetriesExhausted"),
    ),
    ("token renews", _c(Category.TOKEN_REFRESH), RetryState(), {}, ("renew", None)),
    (
        "token without a hook",
        _c(Category.TOKEN_REFRESH),
        RetryState(),
        {"can_renew": False},
        ("give_up", "TokenRefreshFailed"),
    ),
    (
        "fresh token refused again",
        _c(Category.TOKEN_REFRESH),
        RetryState(renewals=1),
        {},
        ("give_up", "TokenRefreshFailed"),
    ),
    (
        "a token that worked, then expired",
        _c(Category.TOKEN_REFRESH),
        RetryState(renewals=1),
        {"token_worked": True},
        ("renew", None),
    ),
    (
        "unsafe resend still renews",
        _c(Category.TOKEN_REFRESH),
        RetryState(),
        {"resend_safe": False},
        ("give_up", "ResendUnsafe"),
    ),
]


@pytest.mark.parametrize(("name", "c", "state", "kwargs", "expected"), CASES, ids=[case[0] for case in CASES])
def test_decide(
    name: str, c: Classification, state: RetryState, kwargs: dict[str, Any], expected: tuple[str, str | None]
) -> None:
    args: dict[str, Any] = {"elapsed": 1.0, "resend_safe": True, "can_renew": True, "wait": 0.2}
    args.update(kwargs)
    decision = decide(c, state, LIMITS, **args)
    assert (decision.action, decision.error.__name__ if decision.error else None) == expected
    if decision.action == "retry":
        assert decision.delay == max(0.2, c.min_delay, kwargs.get("retry_after") or 0)
    assert decision.renew is (name == "unsafe resend still renews")


def test_decide_is_pure_and_the_state_is_immutable() -> None:
    c, state = _c(Category.RETRYABLE), RetryState()
    first = decide(c, state, LIMITS, elapsed=0.0, resend_safe=True, can_renew=False, wait=0.3)
    assert first == decide(c, state, LIMITS, elapsed=0.0, resend_safe=True, can_renew=False, wait=0.3)
    after = state.next(c, first)
    assert (state.attempt, state.history) == (1, ())
    assert after.attempt == 2 and after.history == (AttemptRecord(1, 1, Category.RETRYABLE, "retry", 0.3, "1"),)
    assert Decision("retry", 0.3) == first


READABLE: list[tuple[Any, int]] = [
    # (headers, what readable() says): small JSON or text is read, a download is not
    ({"Content-Type": "application/json", "Content-Length": "27"}, LENGTH),
    ({"content-type": "text/plain; charset=gbk", "content-length": "27"}, LENGTH),
    ({"Content-Length": "27"}, LENGTH),  # untyped, of known length: read
    ({"Content-Type": "", "Content-Length": "27"}, LENGTH),  # an empty type is no type
    ({"Content-Type": "image/jpeg", "Content-Length": "27"}, 0),
    ({"Content-Type": "application/json", "Content-Length": "65537"}, 0),  # past max_body_bytes
    ([(b"Content-Type", b"application/json"), (b"Content-Length", "\uff12\uff17".encode())], 0),  # not ASCII digits
    ({"Content-Type": "application/json", "Content-Length": "27x"}, 0),
    ({"Content-Type": "application/json", "Content-Length": "-1"}, 0),
    ({"Content-Type": "application/json"}, BOUNDED),  # chunked: read up to max_body_bytes
    ({"Content-Type": "text/html"}, BOUNDED),
    ({"Content-Type": ""}, 0),  # no length and no declared type: a stream
    ({}, 0),
    ({"Content-Type": "application/json", "Content-Length": "27", "Content-Encoding": "gzip"}, LENGTH | ENCODED),
    ({"Content-Type": "application/json", "Content-Encoding": "br"}, BOUNDED | ENCODED),
    ({"Content-Type": "application/json", "Content-Length": "27", "Content-Encoding": "identity"}, LENGTH),
]


@pytest.mark.parametrize(("headers", "plan"), READABLE, ids=[repr(h) for h, _ in READABLE])
def test_readable_says_which_bodies_to_read_and_how(headers: Any, plan: int) -> None:
    response = httpx.Response(200, headers=headers, stream=httpx.ByteStream(b"{}"))
    assert readable(response, 65536) == plan


def test_readable_reads_header_names_without_httpx_private_list() -> None:
    """readable() walks the (raw, lower-case, value) list httpx keeps; without it (a later httpx)
    the same triples are built from Headers.raw."""
    raw = [(b"Content-Type", b"application/json"), (b"CONTENT-LENGTH", b"27")]
    plain = types.SimpleNamespace(raw=raw)
    built = _triples(plain)  # type: ignore[arg-type]
    assert built == [
        (b"Content-Type", b"content-type", b"application/json"),
        (b"CONTENT-LENGTH", b"content-length", b"27"),
    ]
    assert _triples(httpx.Headers(raw)) == built
