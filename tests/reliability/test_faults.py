"""Scripted fault injection: resets mid-body, lost answers, broken bodies and headers, failing
token hooks, and cancellation. Every scenario runs through real httpx clients, sync and async."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, cast

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy.testing import Busy, Dropped, FakeWeChat, GatewayError, Slow

from ..support import Recorder, send
from .conftest import report, size
from .scenarios import (
    PLATFORMS,
    BrokenStream,
    ClosingStream,
    Tally,
    Wire,
    async_client,
    check_run,
    injected_summary,
    json_response,
    send_async,
    send_sync,
    sync_client,
)

SEND_URL = "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=given-token-abc"
OK_BODY = json.dumps({"errcode": 0, "errmsg": "ok", "msgid": 1234}).encode()
DEADLOCK_BOUND = 20.0  # seconds: only a hang gets anywhere near it


def ok_response() -> httpx.Response:
    return json_response(200, OK_BODY)


# -- connection reset in the middle of the body ----------------------------------------------------

RESET_ERRORS: list[Callable[[str], httpx.TransportError]] = [
    httpx.ReadError,
    httpx.RemoteProtocolError,
    httpx.ReadTimeout,
]
RESET_IDS = ["ReadError", "RemoteProtocolError", "ReadTimeout"]


def reset_mid_body(
    cut: int, make: Callable[[str], httpx.TransportError], streams: list[BrokenStream]
) -> httpx.Response:
    stream = BrokenStream(OK_BODY, cut, lambda: make("connection reset by peer"))
    streams.append(stream)
    headers = {"content-type": "application/json", "content-length": str(len(OK_BODY))}
    return httpx.Response(200, headers=headers, stream=stream)


def _reset_handler(
    cut: int, make: Callable[[str], httpx.TransportError], streams: list[BrokenStream], request: httpx.Request
) -> httpx.Response:
    return reset_mid_body(cut, make, streams)


@pytest.mark.parametrize("make", RESET_ERRORS, ids=RESET_IDS)
def test_reset_mid_body_post_is_never_resent(mode: str, make: Callable[[str], httpx.TransportError]) -> None:
    cases = 0
    for cut in (0, 1, len(OK_BODY) // 2, len(OK_BODY) - 1):
        streams: list[BrokenStream] = []
        rec = Recorder(default=functools.partial(_reset_handler, cut, make, streams))
        with pytest.raises(retrypolicy.ResendUnsafe) as info:
            send(mode, rec, "POST", SEND_URL, policy="wechat", request={"json": {"touser": "o1"}})
        exc = info.value
        assert len(rec.requests) == 1  # the server may have carried it out: never sent again
        assert isinstance(exc.__cause__, httpx.TransportError) and exc.response is None
        assert exc.classification.source == "transport" and exc.classification.ambiguous
        assert exc.attempts == 1 and "duplicate" in str(exc)
        assert [s.closed for s in streams] == [True]  # the half-read response was closed
        cases += 1
    report(f"reset_mid_body_post[{mode},{RESET_IDS[RESET_ERRORS.index(make)]}]", cases=cases, resent=0)


@pytest.mark.parametrize("make", RESET_ERRORS, ids=RESET_IDS)
def test_reset_mid_body_get_is_retried(mode: str, make: Callable[[str], httpx.TransportError]) -> None:
    streams: list[BrokenStream] = []
    first, second = reset_mid_body(7, make, streams), reset_mid_body(30, make, streams)
    rec = Recorder([first, second], default=lambda r: ok_response())
    response = send(mode, rec, "GET", SEND_URL, policy="wechat")
    assert response.status_code == 200 and response.json()["msgid"] == 1234
    assert len(rec.requests) == 3 and all(s.closed for s in streams)
    report(f"reset_mid_body_get[{mode},{RESET_IDS[RESET_ERRORS.index(make)]}]", attempts=len(rec.requests), faults=2)


class _Server(ThreadingHTTPServer):
    plans: deque[str]
    received: list[tuple[str, bytes]]


class _PartialHandler(BaseHTTPRequestHandler):
    """Answers by plan: ``partial`` sends half the promised body and closes; ``full`` answers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        server = cast(_Server, self.server)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        plan = server.plans.popleft() if server.plans else "full"
        server.received.append((self.command, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(OK_BODY)))
        self.end_headers()
        if plan == "partial":
            self.wfile.write(OK_BODY[: len(OK_BODY) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.wfile.write(OK_BODY)

    do_GET = do_POST = _serve


@contextlib.contextmanager
def partial_server(*plans: str) -> Iterator[tuple[str, _Server]]:
    server = _Server(("127.0.0.1", 0), _PartialHandler)
    server.daemon_threads = True
    server.plans = deque(plans)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _real_send(mode: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    if mode == "sync":
        transport = retrypolicy.RetryTransport("wechat", transport=httpx.HTTPTransport())
        with httpx.Client(transport=transport, timeout=5) as client:
            return client.request(method, url, **kwargs)

    async def run() -> httpx.Response:
        atransport = retrypolicy.AsyncRetryTransport("wechat", transport=httpx.AsyncHTTPTransport())
        async with httpx.AsyncClient(transport=atransport, timeout=5) as client:
            with anyio.fail_after(DEADLOCK_BOUND):
                return await client.request(method, url, **kwargs)

    return anyio.run(run)


def test_reset_mid_body_over_a_real_socket(mode: str) -> None:
    """The same rule over TCP on 127.0.0.1: the server promises a length, sends half, hangs up."""
    with partial_server("partial") as (base, server), pytest.raises(retrypolicy.ResendUnsafe) as info:
        _real_send(mode, "POST", f"{base}/cgi-bin/message/custom/send?access_token=abc", json={"touser": "o1"})
    assert [m for m, _ in server.received] == ["POST"]
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    with partial_server("partial", "partial") as (base, server):
        response = _real_send(mode, "GET", f"{base}/cgi-bin/menu/get?access_token=abc")
    assert response.json()["msgid"] == 1234 and [m for m, _ in server.received] == ["GET"] * 3
    report(f"reset_mid_body_tcp[{mode}]", post_sends=1, get_sends=3)


# -- answers lost after the platform acted (read timeout after sending) --------------------------------


@pytest.mark.parametrize("platform_name", list(PLATFORMS))
def test_no_duplicate_under_ambiguous_faults(mode: str, platform_name: str) -> None:
    """N sends with lost answers (Dropped: processed, then ReadTimeout), busy answers and 502 pages
    injected: not one message is accepted twice, and every request ends in a response or a
    RequestFailed. N is 10,000 for WeChat (100,000 with RETRYPOLICY_LONG=1)."""
    platform = PLATFORMS[platform_name]
    n = size(10_000, 100_000) if platform_name == "wechat" else size(1_000, 20_000)
    fake = platform.make()
    seed = 1000 + list(PLATFORMS).index(platform_name)
    fake.fault_rate(0.2, faults=[Dropped(), Busy(), GatewayError(502)], seed=seed)
    wire = Wire(fake, platform)
    tally = Tally()
    started = time.perf_counter()
    if mode == "sync":
        with sync_client(platform, wire, token=fake.token_hook()) as client:
            for i in range(n):
                send_sync(client, platform, fake, f"m{i}", tally)
    else:

        async def main() -> None:
            limiter = anyio.CapacityLimiter(32)
            async with async_client(platform, wire, token=fake.token_hook()) as client:

                async def one(mid: str) -> None:
                    async with limiter:
                        await send_async(client, platform, fake, mid, tally)

                with anyio.fail_after(DEADLOCK_BOUND * 5):
                    async with anyio.create_task_group() as tg:
                        for i in range(n):
                            tg.start_soon(one, f"m{i}")

        anyio.run(main)
    figures = check_run(tally, wire, fake, platform, n)
    assert figures["dropped"] > 0 and figures["faults"] > n // 10  # the faults really happened
    assert tally.failed  # and some requests failed with a typed error
    report(
        f"no_duplicates[{mode},{platform_name}]",
        **figures,
        injected=injected_summary(fake),
        outcomes=tally.kinds(),
        seconds=round(time.perf_counter() - started, 2),
    )


@pytest.mark.parametrize("fault", ["dropped", "slow"])
def test_lost_answer_over_a_real_socket_is_not_resent(mode: str, fault: str) -> None:
    """Over TCP: the fake handles the POST and closes without answering (Dropped), or answers too
    late for the client's read timeout (Slow): ResendUnsafe, and the message was accepted once."""
    fake = FakeWeChat()
    fake.script(Dropped() if fault == "dropped" else Slow(0.6))
    timeout = httpx.Timeout(5.0, read=0.2)
    with fake.serve() as base:
        url = f"{base}/cgi-bin/message/custom/send"
        body = {"touser": "o1", "msgtype": "text", "text": {"content": "once"}}
        with pytest.raises(retrypolicy.ResendUnsafe) as info:
            if mode == "sync":
                transport = retrypolicy.RetryTransport(
                    "wechat", token=fake.token_hook(), transport=httpx.HTTPTransport()
                )
                with httpx.Client(transport=transport, timeout=timeout) as client:
                    client.post(url, json=body)
            else:

                async def run() -> None:
                    t = retrypolicy.AsyncRetryTransport(
                        "wechat", token=fake.token_hook(), transport=httpx.AsyncHTTPTransport()
                    )
                    async with httpx.AsyncClient(transport=t, timeout=timeout) as client:
                        with anyio.fail_after(DEADLOCK_BOUND):
                            await client.post(url, json=body)

                anyio.run(run)
        expected = httpx.RemoteProtocolError if fault == "dropped" else httpx.ReadTimeout
        assert isinstance(info.value.__cause__, expected)
        for _ in range(100):  # Slow: the fake finishes its work after the client gave up
            if fake.sent:
                break
            time.sleep(0.02)
    assert [m["text"]["content"] for m in fake.sent] == ["once"]
    assert fake.requests - fake.token_requests == 1
    report(f"lost_answer_tcp[{mode},{fault}]", sends=1, accepted=len(fake.sent), duplicates=0)


# -- bodies and headers that are not what they claim ---------------------------------------------

TRUNCATED = {
    "wechat": b'{"errcode":-1,"errmsg":"system error rid: 65f0-1"}',
    "tencent_im": b'{"ActionStatus":"FAIL","ErrorInfo":"server overloaded","ErrorCode":-10114}',
    "whatsapp_onprem": b'{"errors":[{"code":1016,"title":"System overloaded"}],"meta":{"version":"2"}}',
    "whatsapp_cloud": b'{"error":{"message":"(#131000) Something went wrong","code":131000,"is_transient":true}}',
    "slack": b'{"ok":false,"error":"service_unavailable"}',
    "telegram": b'{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1",'
    b'"parameters":{"retry_after":1}}',
}


@pytest.mark.parametrize("platform_name", list(PLATFORMS))
def test_truncated_json_is_handed_back_or_judged_by_status(mode: str, platform_name: str) -> None:
    """Every proper prefix of an error body, sent once with 200 either way (a POST is never
    resent on a guess): one that names the platform's code key cannot be read for it, so it is
    never a success (ResendUnsafe: it may have been carried out); one that does not is handed back
    untouched. With 503 it is judged by the status (retryable) and resent; with 502 a POST is not
    resent (ambiguous)."""
    body = TRUNCATED[platform_name]
    url = "https://api.example.invalid/send?access_token=abc"
    keys = retrypolicy.load_policy(platform_name).extract.markers()  # the code and failure keys, quoted
    cases = 0
    for cut in range(0, len(body), 3 if mode == "async" else 1):
        part = body[:cut]
        rec = Recorder([json_response(200, part)], default=lambda r: ok_response())
        if any(key in part for key in keys):
            with pytest.raises(retrypolicy.ResendUnsafe) as info:
                send(mode, rec, "POST", url, policy=platform_name, request={"json": {}})
            assert "could not be parsed" in str(info.value)
        else:
            response = send(mode, rec, "POST", url, policy=platform_name, request={"json": {}})
            assert response.status_code == 200 and response.content == part
            assert retrypolicy.EXTENSION not in response.extensions
        assert len(rec.requests) == 1
        rec = Recorder([json_response(503, part)], default=lambda r: ok_response())
        assert send(mode, rec, "POST", url, policy=platform_name, request={"json": {}}).content == OK_BODY
        assert len(rec.requests) == 2
        rec = Recorder([json_response(502, part)], default=lambda r: ok_response())
        with pytest.raises(retrypolicy.ResendUnsafe):
            send(mode, rec, "POST", url, policy=platform_name, request={"json": {}})
        assert len(rec.requests) == 1
        cases += 3
    report(f"truncated_json[{mode},{platform_name}]", cases=cases)


HTML = b"<html><head><title>Login</title></head><body><h1>Please sign in to the Wi-Fi</h1></body></html>"


@pytest.mark.parametrize("platform_name", list(PLATFORMS))
def test_html_pages(mode: str, platform_name: str) -> None:
    url = "https://api.example.invalid/send?access_token=abc"
    streams: list[ClosingStream] = []

    def html(status: int) -> httpx.Response:
        response = json_response(status, HTML, ctype="text/html; charset=utf-8")
        assert isinstance(response.stream, ClosingStream)
        streams.append(response.stream)
        return response

    # a 200 with HTML (captive portal, WAF page): no code to read, handed back as is, sent once
    rec = Recorder([html(200)], default=lambda r: ok_response())
    response = send(mode, rec, "POST", url, policy=platform_name, request={"json": {}})
    assert response.content == HTML and len(rec.requests) == 1
    # proxy error pages: 502/504 are ambiguous (POST not resent, GET retried), 503 is not
    for status in (502, 504):
        rec = Recorder([html(status)], default=lambda r: ok_response())
        with pytest.raises(retrypolicy.ResendUnsafe) as info:
            send(mode, rec, "POST", url, policy=platform_name, request={"json": {}})
        assert len(rec.requests) == 1 and info.value.classification.status_code == status
        rec = Recorder([html(status)], default=lambda r: ok_response())
        assert send(mode, rec, "GET", url, policy=platform_name).content == OK_BODY and len(rec.requests) == 2
    rec = Recorder([html(503), html(503)], default=lambda r: ok_response())
    assert send(mode, rec, "POST", url, policy=platform_name, request={"json": {}}).content == OK_BODY
    assert len(rec.requests) == 3
    assert all(s.closed for s in streams[1:])  # every discarded page was closed
    report(f"html_pages[{mode},{platform_name}]", cases=7)


BAD_RETRY_AFTER = [
    "garbage",
    "",
    " ",
    "-1",
    "0",
    "-0",
    "nan",
    "inf",
    "-inf",
    "1e400",
    "0x10",
    "Wed, 21 Oct 2015 07:28:00 GMT",  # in the past
    "Mon, 32 Foo 2020 99:99:99 GMT",
    "Thu, 01 Jan 1970 00:00:00 +0000",
    "Fri, 31 Dec 9999 23:59:59 -2359",  # absurdly far: capped, then past the deadline
    "\x7f",
]


def test_garbage_or_past_retry_after_falls_back_to_backoff(mode: str) -> None:
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    cases = 0
    for value in [*BAD_RETRY_AFTER[:-2], past, BAD_RETRY_AFTER[-1]]:
        rec = Recorder([httpx.Response(503, headers={"Retry-After": value})], default=lambda r: ok_response())
        with capture_logs() as logs:
            response = send(mode, rec, "POST", SEND_URL, policy="wechat", request={"json": {}})
        assert response.content == OK_BODY and len(rec.requests) == 2
        delays = [e["delay"] for e in logs if e["event"] == "retrypolicy.retry_scheduled"]
        assert len(delays) == 1 and 0 <= delays[0] <= 0.5, (value, delays)  # plain backoff, header ignored
        cases += 1
    # far in the future: capped at a day, which passes the deadline, so it gives up at once
    for value in ("999999999", BAD_RETRY_AFTER[-2]):
        rec = Recorder([httpx.Response(503, headers={"Retry-After": value})], default=lambda r: ok_response())
        with pytest.raises(retrypolicy.RetriesExhausted, match="deadline"):
            send(mode, rec, "POST", SEND_URL, policy="wechat", request={"json": {}})
        assert len(rec.requests) == 1
        cases += 1
    report(f"retry_after_garbage[{mode}]", cases=cases)


def test_non_ascii_content_length_is_not_a_crash(mode: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"\xb2")]
        return httpx.Response(200, headers=headers, stream=ClosingStream(OK_BODY))

    response = send(mode, handler, "POST", SEND_URL, policy="wechat", request={"json": {}})
    assert response.status_code == 200


# -- token hooks that fail -----------------------------------------------------------------------

HOOK_FAILURES = ["raises", "hangs", "empty", "blank", "none", "wrong-type", "same-stale"]


class FaultyHook:
    """Returns good tokens, except for call number ``bad_call``, which fails the ``kind`` way.

    Counts calls; ``release`` unblocks a hanging call (set when the test ends).
    """

    def __init__(self, kind: str, bad_call: int) -> None:
        self.kind = kind
        self.bad_call = bad_call
        self.calls = 0
        self.release = threading.Event()
        self._lock = threading.Lock()

    def _count(self) -> int:
        with self._lock:
            self.calls += 1
            return self.calls

    def _result(self, n: int) -> Any:
        if n != self.bad_call:
            return retrypolicy.Token(f"tok-{n}-goodvalue", expires_in=7200)
        if self.kind == "raises":
            raise ConnectionError("vault unreachable: GET https://vault.invalid/v1/wx?secret=s3cr3t-hook-value")
        return {
            "empty": "",
            "blank": "   \t",
            "none": None,
            "wrong-type": 12345,
            "same-stale": f"tok-{n - 1}-goodvalue",
        }[self.kind]

    def __call__(self) -> Any:
        n = self._count()
        if n == self.bad_call and self.kind == "hangs":
            self.release.wait(30)
        return self._result(n)

    async def acall(self) -> Any:
        n = self._count()
        if n == self.bad_call and self.kind == "hangs":
            await anyio.sleep(30)
        return self._result(n)


class PlainHook:
    """The same hook without ``acall``: the async transport runs it in a worker thread."""

    def __init__(self, inner: FaultyHook) -> None:
        self.inner = inner

    def __call__(self) -> Any:
        return self.inner()


def _token_handler(request: httpx.Request) -> httpx.Response:
    """The platform: the first token is expired (42001), every later one works."""
    token = request.url.params.get("access_token", "")
    if token == "tok-1-goodvalue":
        return httpx.Response(200, json={"errcode": 42001, "errmsg": "access_token expired rid: 1-2"})
    return httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})


HOOK_CASES = [
    pytest.param(kind, phase, style, id=f"{style}-{phase}-{kind}")
    for kind in HOOK_FAILURES
    for phase in ("fetch", "renew")
    for style in ("sync", "async-acall", "async-thread")
    if not (kind == "same-stale" and phase == "fetch")  # nothing is stale before the first token
]


@pytest.mark.parametrize(("kind", "phase", "style"), HOOK_CASES)
def test_failing_hook_gives_token_refresh_failed_quickly(kind: str, phase: str, style: str) -> None:
    """The hook raises, hangs (bounded by token_timeout), returns "", blanks, None, a non-string or
    the token just rejected: TokenRefreshFailed, within the bound, no hook loop; then the next
    request (hook healthy again) succeeds on the same transport: no lock was left held."""
    hook = FaultyHook(kind, bad_call=1 if phase == "fetch" else 2)
    timeout = 0.25
    url = "https://api.weixin.qq.com/cgi-bin/message/custom/send"
    wire = Recorder(default=_token_handler)
    started = time.monotonic()
    try:
        if style == "sync":
            transport = retrypolicy.RetryTransport(
                "wechat", token=hook, transport=httpx.MockTransport(wire), token_timeout=timeout
            )
            with httpx.Client(transport=transport) as client, ThreadPoolExecutor(1) as pool:
                first = pool.submit(client.post, url, json={"touser": "o1"})
                with pytest.raises(retrypolicy.TokenRefreshFailed) as info:
                    first.result(timeout=DEADLOCK_BOUND)
                failed_after = time.monotonic() - started
                hook.release.set()  # let an abandoned hanging call finish now
                second = pool.submit(client.post, url, json={"touser": "o1"}).result(timeout=DEADLOCK_BOUND)
        else:
            token: Any = hook if style == "async-acall" else PlainHook(hook)

            async def main() -> tuple[pytest.ExceptionInfo[retrypolicy.TokenRefreshFailed], float, httpx.Response]:
                t = retrypolicy.AsyncRetryTransport(
                    "wechat", token=token, transport=httpx.MockTransport(wire), token_timeout=timeout
                )
                async with httpx.AsyncClient(transport=t) as client:
                    with anyio.fail_after(DEADLOCK_BOUND), pytest.raises(retrypolicy.TokenRefreshFailed) as err:
                        await client.post(url, json={"touser": "o1"})
                    after = time.monotonic() - started
                    hook.release.set()  # an abandoned worker thread finishes while the loop runs
                    with anyio.fail_after(DEADLOCK_BOUND):
                        return err, after, await client.post(url, json={"touser": "o1"})

            info, failed_after, second = anyio.run(main)
    finally:
        hook.release.set()
    exc = info.value
    assert "tok-" not in str(exc) and "s3cr3t-hook-value" not in str(exc) and "tok-" not in repr(exc)
    assert exc.__cause__ is None  # hook errors are summarised, never chained
    assert failed_after < DEADLOCK_BOUND / 2
    if kind == "hangs":
        assert "did not return within" in str(exc)
    assert second.json()["errcode"] == 0
    # no hook loop: one failing call for the failed request, one good call for the next one
    assert hook.calls == hook.bad_call + 1
    sent_with = [r.url.params.get("access_token") for r in wire.requests]
    # a failed renewal leaves tok-1 current: the next request tries it once more, then renews
    expected = ["tok-2-goodvalue"] if phase == "fetch" else ["tok-1-goodvalue", "tok-1-goodvalue", "tok-3-goodvalue"]
    assert sent_with == expected
    report(f"failing_hook[{style},{phase},{kind}]", hook_calls=hook.calls, seconds=round(failed_after, 3))


# -- cancellation (async) and interruption (sync) -----------------------------------------------------


class Interrupted(BaseException):
    """Raised by a SIGALRM handler: the sync stand-in for a task cancellation (like Ctrl-C)."""


@contextlib.contextmanager
def interrupt_after(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


needs_sigalrm = pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")


def _busy_then_ok(streams: list[ClosingStream]) -> Callable[[httpx.Request], httpx.Response]:
    calls = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        calls[0] += 1
        if calls[0] == 1:
            stream = ClosingStream(b"Service Unavailable")
            streams.append(stream)
            return httpx.Response(503, headers={"Retry-After": "30", "content-length": "19"}, stream=stream)
        return ok_response()

    return handler


def test_cancel_during_backoff_sleep_async() -> None:
    retrypolicy.set_testing(True, scale=1.0)  # a real 30 s wait (Retry-After); the fixture restores
    streams: list[ClosingStream] = []
    rec = Recorder(default=_busy_then_ok(streams))

    async def main() -> tuple[bool, float, httpx.Response]:
        t = retrypolicy.AsyncRetryTransport("wechat", transport=httpx.MockTransport(rec))
        async with httpx.AsyncClient(transport=t) as client:
            began = time.monotonic()
            with anyio.move_on_after(0.3) as scope:
                await client.post(SEND_URL, json={"touser": "o1"})
            waited = time.monotonic() - began
            with anyio.fail_after(5):
                follow = await client.post(SEND_URL, json={"touser": "o1"})
            return scope.cancelled_caught, waited, follow

    cancelled, waited, follow = anyio.run(main)
    assert cancelled and waited < 5  # cancelled in the middle of the 30 s sleep
    assert len(rec.requests) == 2  # the cancelled request was not resent; the next one went out
    assert streams[0].closed  # the 503 was closed before the sleep
    assert follow.content == OK_BODY
    report("cancel_backoff[async]", waited=round(waited, 2), resent=0)


@needs_sigalrm
def test_interrupt_during_backoff_sleep_sync() -> None:
    retrypolicy.set_testing(True, scale=1.0)
    streams: list[ClosingStream] = []
    rec = Recorder(default=_busy_then_ok(streams))
    transport = retrypolicy.RetryTransport("wechat", transport=httpx.MockTransport(rec))
    with httpx.Client(transport=transport) as client:
        began = time.monotonic()
        with pytest.raises(Interrupted), interrupt_after(0.3):
            client.post(SEND_URL, json={"touser": "o1"})
        waited = time.monotonic() - began
        follow = client.post(SEND_URL, json={"touser": "o1"})
    assert waited < 5 and len(rec.requests) == 2 and streams[0].closed
    assert follow.content == OK_BODY
    report("cancel_backoff[sync]", waited=round(waited, 2), resent=0)


class SlowRenewal:
    """tok-1 first; call 2 (the first renewal) sleeps ``hang`` s; later calls answer at once."""

    def __init__(self, hang: float = 30.0) -> None:
        self.calls = 0
        self.hang = hang
        self.release = threading.Event()

    def __call__(self) -> str:
        self.calls += 1
        n = self.calls
        if n == 2:
            self.release.wait(self.hang)
        return f"tok-{n}-goodvalue"

    async def acall(self) -> str:
        self.calls += 1
        n = self.calls
        if n == 2:
            await anyio.sleep(self.hang)
        return f"tok-{n}-goodvalue"


def test_cancel_during_renewal_with_waiters_async() -> None:
    """Task A renews (the hook hangs) while B and C wait for the renewal lock; A is cancelled.
    B then renews, C reuses B's token, both succeed; a later request succeeds too."""
    hook = SlowRenewal()
    rec = Recorder(default=_token_handler)
    results: dict[str, str] = {}

    async def scenario() -> None:
        t = retrypolicy.AsyncRetryTransport("wechat", token=hook, transport=httpx.MockTransport(rec))
        url = "https://api.weixin.qq.com/cgi-bin/message/custom/send"
        async with httpx.AsyncClient(transport=t) as client:

            async def task(name: str, cancel_after: float) -> None:
                with anyio.move_on_after(cancel_after) as scope:
                    response = await client.post(url, json={"touser": name})
                    results[name] = str(response.json()["errcode"])
                if scope.cancelled_caught:
                    results[name] = "cancelled"

            with anyio.fail_after(DEADLOCK_BOUND):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(task, "A", 0.3)
                    await anyio.sleep(0.05)  # A holds the renewal lock, its hook call hangs
                    tg.start_soon(task, "B", 60)
                    tg.start_soon(task, "C", 60)
                await task("D", 5)

    anyio.run(scenario)
    assert results == {"A": "cancelled", "B": "0", "C": "0", "D": "0"}
    assert hook.calls == 3  # tok-1, A's cancelled renewal, one renewal shared by B and C
    report("cancel_renewal_with_waiters[async]", hook_calls=hook.calls, deadlocks=0)


@needs_sigalrm
def test_interrupt_during_renewal_sync() -> None:
    """The main thread is interrupted while it waits for a hanging hook: the renewal lock is
    released, and the next request renews with the (now quick) hook and succeeds."""
    hook = SlowRenewal()
    rec = Recorder(default=_token_handler)
    transport = retrypolicy.RetryTransport("wechat", token=hook, transport=httpx.MockTransport(rec))
    url = "https://api.weixin.qq.com/cgi-bin/message/custom/send"
    try:
        with httpx.Client(transport=transport) as client:
            with pytest.raises(Interrupted), interrupt_after(0.3):
                client.post(url, json={"touser": "A"})
            with ThreadPoolExecutor(1) as pool:  # a thread: a lock still held would hang, not fail
                follow = pool.submit(client.post, url, json={"touser": "B"}).result(timeout=DEADLOCK_BOUND)
    finally:
        hook.release.set()
    assert follow.json()["errcode"] == 0 and hook.calls == 3
    report("cancel_renewal[sync]", hook_calls=hook.calls, deadlocks=0)
