"""RetryTransport and AsyncRetryTransport: every behaviour runs through both, over MockTransport."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import Category

from .support import CountingHook, Recorder, TrackedStream, make_client, ok, request_with, send, tracked_json, wechat

SEND_URL = "https://api.weixin.qq.com/cgi-bin/message/custom/send"


pytestmark = pytest.mark.usefixtures("testing")  # zero waits (tests/conftest.py)


# -- retryable -------------------------------------------------------------------------------


def test_busy_then_ok_is_retried_and_logged_exactly(mode: str) -> None:
    rec = Recorder([wechat(-1, "system error rid: 6601-aa"), ok()])
    with capture_logs() as logs:
        response = send(mode, rec, policy="wechat")
    assert response.status_code == 200 and response.json()["errcode"] == 0
    assert len(rec.requests) == 2
    assert len(logs) == 1
    event = logs[0]
    assert 0 <= event.pop("delay") <= 0.5  # first full-jitter wait: uniform(0, initial_delay)
    assert 0 <= event.pop("elapsed") < 5
    assert event == {
        "event": "retrypolicy.retry_scheduled",
        "log_level": "warning",
        "platform": "wechat",
        "code": -1,
        "category": "retryable",
        "message": "system error rid: 6601-aa",
        "description": logs[0]["description"],
        "attempt": 1,
        "method": "POST",
        "url": "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=***",
        "request_id": "6601-aa",
        "status_code": 200,
    }
    assert "busy" in event["description"].lower() or "try again" in event["description"].lower()


def test_retries_exhausted_carries_classification_and_attempts(mode: str) -> None:
    rec = Recorder(default=lambda r: wechat(-1))
    with capture_logs() as logs, pytest.raises(retrypolicy.RetriesExhausted) as info:
        send(mode, rec, policy="wechat")
    exc = info.value
    assert exc.attempts == 4 == len(rec.requests)  # the wechat table allows 4 attempts
    assert exc.classification.code == -1 and exc.classification.category is Category.RETRYABLE
    assert exc.response is not None and exc.response.json()["errcode"] == -1
    assert [e["event"] for e in logs] == ["retrypolicy.retry_scheduled"] * 3 + ["retrypolicy.gave_up"]
    assert logs[-1]["log_level"] == "error" and logs[-1]["reason"].startswith("no attempts left")
    assert "wechat code -1 [retryable]" in str(exc) and "given-token-abc" not in str(exc)


def test_retry_after_seconds_is_honoured(mode: str) -> None:
    busy = httpx.Response(429, headers={"Retry-After": "7"}, text="slow down")
    with capture_logs() as logs:
        send(mode, Recorder([busy, ok()]), policy="wechat")
    assert logs[0]["delay"] == 7.0 and logs[0]["status_code"] == 429 and logs[0]["code"] is None


@pytest.mark.parametrize("header", ["garbage", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "nan"])
def test_bad_or_past_retry_after_is_ignored(mode: str, header: str) -> None:
    busy = httpx.Response(503, headers={"Retry-After": header})
    with capture_logs() as logs:
        send(mode, Recorder([busy, ok()]), policy="wechat")
    assert logs[0]["delay"] <= 0.5


def test_retry_after_http_date_in_future(mode: str) -> None:
    when = email.utils.formatdate(time.time() + 12, usegmt=True)
    with capture_logs() as logs:
        send(mode, Recorder([httpx.Response(503, headers={"Retry-After": when}), ok()]), policy="wechat")
    assert 9 <= logs[0]["delay"] <= 12


def test_rule_min_delay_applies(mode: str) -> None:
    with capture_logs() as logs:
        send(mode, Recorder([wechat(45011), ok()]), policy="wechat")
    assert [e["event"] for e in logs] == ["retrypolicy.cooldown_started", "retrypolicy.retry_scheduled"]
    assert logs[1]["code"] == 45011 and logs[1]["delay"] >= 60


def test_wait_past_deadline_gives_up_at_once(mode: str) -> None:
    busy = httpx.Response(503, headers={"Retry-After": "500"})
    rec = Recorder([busy])
    with pytest.raises(retrypolicy.RetriesExhausted, match="deadline"):
        send(mode, rec, policy="wechat")
    assert len(rec.requests) == 1


def test_backoff_grows_and_is_capped(mode: str) -> None:
    settings = retrypolicy.RetrySettings(max_attempts=8, initial_delay=1.0, max_delay=3.0, deadline=1000)
    with capture_logs() as logs, pytest.raises(retrypolicy.RetriesExhausted):
        send(mode, Recorder(default=lambda r: wechat(-1)), policy="wechat", retry=settings)
    delays = [e["delay"] for e in logs if e["event"] == "retrypolicy.retry_scheduled"]
    assert len(delays) == 7
    assert all(0 <= d <= 3.0 for d in delays)
    assert delays[0] <= 1.0 and delays[1] <= 2.0


def test_discarded_responses_are_closed(mode: str) -> None:
    first, stream1 = tracked_json({"errcode": -1, "errmsg": "busy"})
    second, stream2 = tracked_json({"errcode": 0, "errmsg": "ok"})
    response = send(mode, Recorder([first, second]), policy="wechat")
    assert stream1.closed and stream1.yielded == 1  # read for its code, then closed
    assert response.json() == {"errcode": 0, "errmsg": "ok"}
    assert stream2.yielded == 1


# -- transport errors and duplicates ----------------------------------------------------------


def test_connect_error_is_retried_even_for_post(mode: str) -> None:
    rec = Recorder([httpx.ConnectError("refused"), ok()])
    assert send(mode, rec, policy="wechat").status_code == 200
    assert len(rec.requests) == 2


def test_read_timeout_on_post_is_never_resent(mode: str) -> None:
    rec = Recorder([httpx.ReadTimeout("timed out")], default=lambda r: ok())
    with capture_logs() as logs, pytest.raises(retrypolicy.ResendUnsafe) as info:
        send(mode, rec, policy="wechat", request={"json": {"touser": "o1"}})
    assert len(rec.requests) == 1
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert info.value.classification.source == "transport" and info.value.response is None
    assert logs[-1]["event"] == "retrypolicy.gave_up" and "duplicate" in logs[-1]["reason"]


def test_read_timeout_on_get_is_retried(mode: str) -> None:
    rec = Recorder([httpx.ReadTimeout("timed out"), ok()])
    assert send(mode, rec, method="GET", policy="wechat").status_code == 200
    assert len(rec.requests) == 2


def test_post_marked_idempotent_is_retried(mode: str) -> None:
    rec = Recorder([httpx.RemoteProtocolError("peer closed"), ok()])
    options = {"extensions": {"retrypolicy": {"idempotent": True}}, "json": {}}
    assert send(mode, rec, policy="wechat", request=options).status_code == 200
    assert len(rec.requests) == 2


def test_gateway_502_html_retried_for_get_not_for_post(mode: str) -> None:
    html = httpx.Response(502, html="<html><body><h1>502 Bad Gateway</h1></body></html>")
    rec = Recorder([html, ok()])
    assert send(mode, rec, method="GET", policy="wechat").status_code == 200
    rec = Recorder([httpx.Response(502, html="<h1>502</h1>")], default=lambda r: ok())
    with pytest.raises(retrypolicy.ResendUnsafe):
        send(mode, rec, policy="wechat")
    assert len(rec.requests) == 1


def test_unreplayable_body_is_not_resent(mode: str) -> None:
    rec = Recorder([wechat(-1)], default=lambda r: ok())

    def body() -> Iterator[bytes]:
        yield b'{"touser":"o1"}'

    content: Any = body()
    if mode == "async":

        async def abody() -> Any:
            yield b'{"touser":"o1"}'

        content = abody()
    with pytest.raises(retrypolicy.ResendUnsafe, match="cannot be sent again"):
        send(mode, rec, policy="wechat", request={"content": content})
    assert len(rec.requests) == 1


# -- user-action, fatal, raise_on ---------------------------------------------------------------


def test_user_action_raises_with_remediation(mode: str) -> None:
    rec = Recorder([wechat(45015, "response out of time limit rid: 77-bb")])
    with capture_logs() as logs, pytest.raises(retrypolicy.UserActionRequired) as info:
        send(mode, rec, policy="wechat")
    exc = info.value
    assert exc.attempts == 1 and len(rec.requests) == 1
    c = exc.classification
    assert c.category is Category.USER_ACTION and c.code == 45015 and c.remediation
    assert c.remediation in str(exc) and "response out of time limit" in str(exc)
    assert logs[0]["event"] == "retrypolicy.gave_up" and logs[0]["remediation"] == c.remediation
    assert repr(exc) == "UserActionRequired(platform='wechat', code=45015, category='user-action', attempts=1)"


def test_fatal_raises_request_rejected_once(mode: str) -> None:
    rec = Recorder([wechat(40003, "invalid openid")])
    with pytest.raises(retrypolicy.RequestRejected) as info:
        send(mode, rec, policy="wechat")
    assert info.value.classification.category is Category.FATAL and len(rec.requests) == 1


def test_unknown_code_is_fatal_not_retried(mode: str) -> None:
    rec = Recorder([wechat(987654)])
    with pytest.raises(retrypolicy.RequestRejected) as info:
        send(mode, rec, policy="wechat")
    assert not info.value.classification.known and len(rec.requests) == 1


def test_raise_on_returns_response_with_classification(mode: str) -> None:
    rec = Recorder([wechat(45015)])
    response = send(mode, rec, policy="wechat", raise_on=["retryable", "fatal"])
    c = response.extensions["retrypolicy"]
    assert isinstance(c, retrypolicy.Classification) and c.code == 45015
    assert response.json()["errcode"] == 45015


def test_raise_on_rejects_unknown_category() -> None:
    with pytest.raises(retrypolicy.ConfigurationError, match="raise_on"):
        retrypolicy.RetryTransport(policy="wechat", raise_on=["sometimes"])


# -- per-request control, hosts --------------------------------------------------------------


def test_request_can_disable_retries(mode: str) -> None:
    rec = Recorder(default=lambda r: wechat(-1))
    with pytest.raises(retrypolicy.RetriesExhausted):
        send(mode, rec, policy="wechat", request={"extensions": {"retrypolicy": {"retry": False}}})
    assert len(rec.requests) == 1


def test_request_can_override_attempts(mode: str) -> None:
    rec = Recorder(default=lambda r: wechat(-1))
    with pytest.raises(retrypolicy.RetriesExhausted) as info:
        send(mode, rec, policy="wechat", request={"extensions": {"retrypolicy": {"max_attempts": 2}}})
    assert info.value.attempts == 2 == len(rec.requests)


def test_unknown_request_option_is_a_clear_error(mode: str) -> None:
    rec = Recorder(default=lambda r: ok())
    with pytest.raises(retrypolicy.ConfigurationError, match="'retires'"):
        send(mode, rec, policy="wechat", request={"extensions": {"retrypolicy": {"retires": 3}}})
    assert rec.requests == []


def test_host_mapping_picks_policy_per_host(mode: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "console.tim.qq.com":
            return httpx.Response(200, json={"ActionStatus": "FAIL", "ErrorCode": 40001, "ErrorInfo": "bad param"})
        return wechat(40003)

    policy = {"api.weixin.qq.com": "wechat", "console.tim.qq.com": "tencent_im"}
    with pytest.raises(retrypolicy.RequestRejected) as info:
        send(mode, handler, url="https://console.tim.qq.com/v4/openim/sendmsg", policy=policy)
    assert info.value.classification.platform == "tencent_im"
    with pytest.raises(retrypolicy.RequestRejected) as info:
        send(mode, handler, policy=policy)
    assert info.value.classification.platform == "wechat"
    passthrough = send(mode, handler, url="https://example.com/x", policy=policy)
    assert passthrough.json()["errcode"] == 40003  # unmapped host: untouched


# -- tokens ----------------------------------------------------------------------------------


def test_token_is_filled_in_and_renewed_once(mode: str) -> None:
    hook = CountingHook()

    def handler(request: httpx.Request) -> httpx.Response:
        return ok() if request.url.params["access_token"] == "tok2-secretvalue" else wechat(42001)

    rec = Recorder(default=handler)
    with capture_logs() as logs:
        response = send(mode, rec, url=SEND_URL, policy="wechat", token=hook)
    assert response.json()["errcode"] == 0
    assert hook.calls == 2  # first fill, one renewal
    assert [r.url.params["access_token"] for r in rec.requests] == ["tok1-secretvalue", "tok2-secretvalue"]
    assert [e["event"] for e in logs] == ["retrypolicy.token_renewed"]
    assert logs[0]["code"] == 42001 and logs[0]["category"] == "token-refresh"
    assert "secretvalue" not in repr(logs)


def test_fresh_token_rejected_is_an_error_not_a_loop(mode: str) -> None:
    hook = CountingHook()
    rec = Recorder(default=lambda r: wechat(40001))
    with pytest.raises(retrypolicy.TokenRefreshFailed, match="after 1 renewal") as info:
        send(mode, rec, url=SEND_URL, policy="wechat", token=hook)
    assert hook.calls == 2 and len(rec.requests) == 2
    assert "secretvalue" not in str(info.value)


def test_token_refresh_without_hook_is_clear(mode: str) -> None:
    with pytest.raises(retrypolicy.TokenRefreshFailed, match="no token hook"):
        send(mode, Recorder([wechat(42001)]), policy="wechat")


def test_header_token_for_whatsapp(mode: str) -> None:
    hook = CountingHook("wa")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer wa2-secretvalue":
            return httpx.Response(200, json={"messages": [{"id": "wamid.1"}]})
        error = {"code": 190, "error_subcode": 463, "message": "Session has expired", "fbtrace_id": "Atr1"}
        return httpx.Response(401, json={"error": error})

    url = "https://graph.facebook.com/v21.0/123/messages"
    response = send(mode, handler, url=url, policy="whatsapp_cloud", token=hook)
    assert response.json()["messages"][0]["id"] == "wamid.1" and hook.calls == 2


@pytest.mark.parametrize(
    ("hook_kind", "message"),
    [("raises", "token hook raised RuntimeError"), ("empty", "empty token"), ("hangs", "did not return within")],
)
def test_bad_hook_gives_token_refresh_failed(mode: str, hook_kind: str, message: str) -> None:
    class Bad:
        def __call__(self) -> str:
            if hook_kind == "raises":
                raise RuntimeError("vault down, secret=hunter2")
            if hook_kind == "hangs":
                time.sleep(5)
            return "  "

        async def acall(self) -> str:
            if hook_kind == "hangs":
                await anyio.sleep(5)
            return self()

    rec = Recorder(default=lambda r: ok())
    started = time.monotonic()
    with pytest.raises(retrypolicy.TokenRefreshFailed, match=message) as info:
        send(mode, rec, url=SEND_URL, policy="wechat", token=Bad(), token_timeout=0.2)
    assert time.monotonic() - started < 4
    assert rec.requests == [] and "hunter2" not in str(info.value)


def test_async_hook_rejected_by_sync_transport() -> None:
    async def hook() -> str:
        return "x"

    with pytest.raises(retrypolicy.ConfigurationError, match="AsyncRetryTransport"):
        retrypolicy.RetryTransport(policy="wechat", token=hook)


def test_stale_failure_reuses_newer_token_without_hook() -> None:
    """A request that failed with an old token resends with the current one: no renewal."""
    hook = CountingHook()
    valid = {"tok1-secretvalue"}

    def handler(request: httpx.Request) -> httpx.Response:
        return ok() if request.url.params["access_token"] in valid else wechat(40001)

    transport = retrypolicy.RetryTransport(policy="wechat", token=hook, transport=httpx.MockTransport(handler))
    with httpx.Client(transport=transport) as client:
        client.post(SEND_URL)  # fills tok1
        old = f"{SEND_URL}?access_token=older-token-xyz"
        assert client.post(old).json()["errcode"] == 0
    assert hook.calls == 1


def test_concurrent_threads_renew_once() -> None:
    import concurrent.futures  # noqa: PLC0415

    hook = CountingHook(delay=0.05)
    valid = {"tok1-secretvalue"}

    def handler(request: httpx.Request) -> httpx.Response:
        return ok() if request.url.params["access_token"] in valid else wechat(42001)

    transport = retrypolicy.RetryTransport(policy="wechat", token=hook, transport=httpx.MockTransport(handler))
    with httpx.Client(transport=transport) as client:
        client.post(SEND_URL)
        valid.clear()
        valid.add("tok2-secretvalue")  # tok1 expires for everyone
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(lambda _: client.post(SEND_URL).json()["errcode"], range(32)))
    assert results == [0] * 32
    assert hook.calls == 2  # the first fill and exactly one renewal


def test_concurrent_tasks_renew_once() -> None:
    hook = CountingHook(delay=0.05)
    valid = {"tok1-secretvalue"}

    def handler(request: httpx.Request) -> httpx.Response:
        return ok() if request.url.params["access_token"] in valid else wechat(42001)

    results: list[int] = []

    async def main() -> None:
        transport = retrypolicy.AsyncRetryTransport(policy="wechat", token=hook, transport=httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport) as client:
            await client.post(SEND_URL)
            valid.clear()
            valid.add("tok2-secretvalue")

            async def one() -> None:
                results.append((await client.post(SEND_URL)).json()["errcode"])

            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(one)

    anyio.run(main)
    assert results == [0] * 200
    assert hook.calls == 2


def test_cancelled_renewal_releases_the_lock() -> None:
    class SlowFirst:
        calls = 0

        async def acall(self) -> str:
            self.calls += 1
            if self.calls == 2:  # the renewal of the first request hangs
                await anyio.sleep(10)
            return f"tok{self.calls}-secretvalue"

        def __call__(self) -> str:  # pragma: no cover - async transport uses acall
            raise AssertionError

    hook = SlowFirst()

    def handler(request: httpx.Request) -> httpx.Response:
        return ok() if request.url.params["access_token"] == "tok3-secretvalue" else wechat(42001)

    async def main() -> int:
        transport = retrypolicy.AsyncRetryTransport(policy="wechat", token=hook, transport=httpx.MockTransport(handler))
        async with httpx.AsyncClient(transport=transport) as client:
            with anyio.move_on_after(0.2):
                await client.post(SEND_URL)  # cancelled while renewing
            with anyio.fail_after(2):  # would hang if the lock were still held
                response = await client.post(SEND_URL)
            code: int = response.json()["errcode"]
            return code

    assert anyio.run(main) == 0
    assert hook.calls == 3


def test_token_renewed_before_known_expiry() -> None:
    now = [1000.0]
    from retrypolicy._token import TokenManager  # noqa: PLC0415

    hook = CountingHook()
    manager = TokenManager(hook, clock=lambda: now[0])
    assert manager.get() == "tok1-secretvalue"
    now[0] += 7200 - 400  # outside the 300 s margin
    assert manager.get() == "tok1-secretvalue"
    now[0] += 200  # inside the margin: renew proactively
    assert manager.get() == "tok2-secretvalue" and hook.calls == 2


# -- streams ---------------------------------------------------------------------------------


def test_download_stream_passes_through_unread(mode: str) -> None:
    stream = TrackedStream(b"x" * 1_000_000, chunks=100)
    response_in = httpx.Response(200, headers={"content-type": "image/jpeg"}, stream=stream)
    transport_kwargs: dict[str, Any] = {"policy": "wechat"}
    if mode == "sync":
        transport = retrypolicy.RetryTransport(transport=httpx.MockTransport(lambda r: response_in), **transport_kwargs)
        with httpx.Client(transport=transport) as client, client.stream("GET", SEND_URL) as response:
            assert stream.yielded == 0  # nothing was buffered by the transport
            total = sum(len(chunk) for chunk in response.iter_raw())
    else:

        async def run() -> int:
            t = retrypolicy.AsyncRetryTransport(
                transport=httpx.MockTransport(lambda r: response_in), **transport_kwargs
            )
            async with httpx.AsyncClient(transport=t) as client, client.stream("GET", SEND_URL) as response:
                assert stream.yielded == 0
                return sum([len(chunk) async for chunk in response.aiter_raw()])

        total = anyio.run(run)
    assert total == 1_000_000 and stream.yielded == 100


# -- secrets ---------------------------------------------------------------------------------


def test_no_secret_in_logs_exceptions_or_reprs(mode: str) -> None:
    hook = CountingHook()
    rec = Recorder(default=lambda r: wechat(40001, f"bad token access_token={r.url.params['access_token']}"))
    with capture_logs() as logs, pytest.raises(retrypolicy.TokenRefreshFailed) as info:
        send(mode, rec, url=SEND_URL, policy="wechat", token=hook)
    texts = [repr(logs), str(info.value), repr(info.value), repr(info.value.classification)]
    texts.append(repr(retrypolicy.RetryTransport(policy="wechat", token=hook)))
    for text in texts:
        assert "secretvalue" not in text
    assert "access_token=***" in str(info.value)


def test_refused_token_in_client_headers_is_replaced_up_front(mode: str) -> None:
    """A client whose default header still holds a refused token: after one renewal, later
    requests go out with the current token on their first attempt (pywa keeps its own header)."""
    hook = CountingHook("wa")
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer wa1-secretvalue":
            return httpx.Response(200, json={"messages": [{"id": "wamid.1"}]})
        return httpx.Response(401, json={"error": {"code": 190, "error_subcode": 463, "message": "expired"}})

    url = "https://graph.facebook.com/v21.0/123/messages"
    headers = {"Authorization": "Bearer old-token-from-pywa"}
    if mode == "sync":
        transport = retrypolicy.RetryTransport("whatsapp_cloud", token=hook, transport=httpx.MockTransport(handler))
        with httpx.Client(transport=transport, headers=headers) as client:
            for _ in range(3):
                assert client.post(url, json={}).status_code == 200
    else:

        async def run() -> None:
            t = retrypolicy.AsyncRetryTransport("whatsapp_cloud", token=hook, transport=httpx.MockTransport(handler))
            async with httpx.AsyncClient(transport=t, headers=headers) as client:
                for _ in range(3):
                    assert (await client.post(url, json={})).status_code == 200

        anyio.run(run)
    assert seen == ["Bearer old-token-from-pywa"] + ["Bearer wa1-secretvalue"] * 3
    assert hook.calls == 1


def test_table_marks_read_only_post_endpoints_safe(mode: str) -> None:
    rec = Recorder([httpx.ReadTimeout("timed out"), ok(user_info_list=[])])
    url = "https://api.weixin.qq.com/cgi-bin/user/info/batchget?access_token=given-token-abc"
    assert send(mode, rec, url=url, policy="wechat", request={"json": {"user_list": []}}).status_code == 200
    assert len(rec.requests) == 2  # resent: the table lists it in idempotent_paths
    rec = Recorder([httpx.ReadTimeout("timed out")], default=lambda r: ok())
    with pytest.raises(retrypolicy.ResendUnsafe):
        send(mode, rec, policy="wechat", request={"json": {}})  # a message send is not
    assert len(rec.requests) == 1


# -- the first attempt without the flow (RetryCore.ready / settle) ----------------------------


class BreakingStream(TrackedStream):
    """A JSON body that breaks off with ``error`` after its first chunk (sync), or hangs there
    (async, ``hang=True``) until cancelled."""

    def __init__(self, error: BaseException | None = None, *, hang: bool = False) -> None:
        super().__init__(b'{"errcode":0,"errmsg":"ok","pad":"' + b"x" * 100 + b'"}', chunks=4)
        self.error = error
        self.hang = hang

    def _parts(self) -> Iterator[bytes]:
        for i, part in enumerate(super()._parts()):
            if i == 1 and self.error is not None:
                raise self.error
            yield part

    async def __aiter__(self) -> Any:
        for i, part in enumerate(self._parts()):
            if i == 1 and self.hang:
                await anyio.sleep(60)
            yield part

    def response(self) -> httpx.Response:
        headers = {"content-type": "application/json", "content-length": str(len(self.data))}
        return httpx.Response(200, headers=headers, stream=self)


def test_first_attempt_success_never_starts_the_flow(mode: str, flows: list[bool]) -> None:
    busy, stream = tracked_json({"errcode": -1, "errmsg": "busy"})
    rec = Recorder([ok(), ok(), busy, ok(), ok()])
    client = make_client(mode, rec, policy="wechat", token=CountingHook())
    for options in ({}, {}, {}, {retrypolicy.EXTENSION: {"max_attempts": 2}}):
        request_with(mode, client, "POST", SEND_URL, extensions=options)
    # 1: no token yet, the flow fetches it; 2: a success without the flow; 3: a failure the flow
    # takes over (first given); 4: request options, checked before sending: still without the flow
    assert flows == [False, True] and stream.closed
    assert [r.url.params["access_token"] for r in rec.requests] == ["tok1-secretvalue"] * 5
    snap = client._transport.snapshot()
    assert (snap.requests, snap.attempts, snap.retries, snap.succeeded) == (4, 5, 1, 4)


def test_first_attempt_successes_are_counted_and_refill_the_budget(mode: str) -> None:
    rec = Recorder([ok(), ok(), wechat(-1), ok(), ok()])
    client = make_client(mode, rec, policy="wechat")
    for _ in range(4):
        request_with(mode, client, "POST", SEND_URL + "?access_token=t0k3n-value")
    snap = client._transport.snapshot()
    assert (snap.requests, snap.attempts, snap.retries, snap.renewals, snap.succeeded) == (4, 5, 1, 0, 4)
    assert snap.gave_up == {} and snap.budget == {"wechat": 99.2}  # 100, one retry, then two successes


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_body_breaking_off_on_first_attempt(mode: str, method: str) -> None:
    broken = BreakingStream(httpx.ReadError("connection reset"))
    rec = Recorder([broken.response(), ok()])
    if method == "POST":  # the platform may have carried it out: never resent
        with pytest.raises(retrypolicy.ResendUnsafe) as info:
            send(mode, rec, method, policy="wechat")
        assert isinstance(info.value.__cause__, httpx.ReadError) and len(rec.requests) == 1
    else:
        assert send(mode, rec, method, policy="wechat").json()["errcode"] == 0 and len(rec.requests) == 2
    assert broken.closed and broken.yielded == 2  # read up to the break, then closed


def test_interrupted_first_attempt_closes_its_response_and_is_counted(mode: str) -> None:
    if mode == "sync":
        broken = BreakingStream(KeyboardInterrupt())
        client = make_client(mode, Recorder([broken.response()]), policy="wechat")
        with pytest.raises(KeyboardInterrupt):
            client.post(SEND_URL + "?access_token=t0k3n-value")
    else:
        broken = BreakingStream(hang=True)
        client = make_client(mode, Recorder([broken.response()]), policy="wechat")

        async def run() -> None:
            with anyio.move_on_after(0.2) as scope:
                await client.post(SEND_URL + "?access_token=t0k3n-value")
            assert scope.cancelled_caught

        anyio.run(run)
    assert broken.closed and broken.yielded == 2  # read up to the break, then closed
    snap = client._transport.snapshot()
    assert (snap.requests, snap.attempts, snap.succeeded, snap.gave_up) == (1, 1, 0, {})


def test_body_failing_with_a_non_httpx_error_on_first_attempt_is_closed(mode: str) -> None:
    broken = BreakingStream(RuntimeError("a bug in the stream"))
    rec = Recorder([broken.response()])
    with pytest.raises(RuntimeError, match="a bug in the stream"):
        send(mode, rec, policy="wechat")  # not classified: raised as it is, as without the transport
    assert broken.closed and len(rec.requests) == 1
