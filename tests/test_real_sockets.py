"""The transport over real sockets, sync and async: redirects, request bodies, response bodies
and streams, and tokens, as users run it (MockTransport hides all of these; see realserver.py)."""

from __future__ import annotations

import functools
import io
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import Category, ResendUnsafe, RetriesExhausted, TokenRefreshFailed, UserActionRequired

from .realserver import Reply, Seen, Server, script, serve
from .support import CountingHook

pytestmark = pytest.mark.usefixtures("testing")

BUSY = Reply.json({"errcode": -1, "errmsg": "system error rid: 1-2"})
EXPIRED = Reply.json({"errcode": 42001, "errmsg": "access_token expired rid: 1-2"})
OK = Reply.json({"errcode": 0, "errmsg": "ok"})
SEND = "/cgi-bin/message/custom/send"


class Runner:
    """Clients of one mode for one test: an async client runs in one event loop for the whole
    test (as in an app), and every client is closed at the end."""

    def __init__(self, mode: str, portal: BlockingPortal | None) -> None:
        self.mode, self.portal = mode, portal
        self.clients: list[Any] = []

    def client(self, policy: Any = "wechat", **kwargs: Any) -> Any:
        kwargs.setdefault("budget", None)
        if self.mode == "sync":
            c: Any = httpx.Client(transport=retrypolicy.RetryTransport(policy, **kwargs), follow_redirects=True)
        else:
            transport = retrypolicy.AsyncRetryTransport(policy, **kwargs)
            c = httpx.AsyncClient(transport=transport, follow_redirects=True)
        self.clients.append(c)
        return c

    def bare(self) -> Any:
        c = httpx.Client() if self.mode == "sync" else httpx.AsyncClient()
        self.clients.append(c)
        return c

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.portal is None:
            return fn(*args, **kwargs)
        return self.portal.call(functools.partial(fn, *args, **kwargs))

    def request(self, c: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response: httpx.Response = self.call(c.request, method, url, **kwargs)
        return response

    def close(self) -> None:
        for c in self.clients:
            self.call(c.close if self.mode == "sync" else c.aclose)


@pytest.fixture
def runner(mode: str) -> Iterator[Runner]:
    if mode == "sync":
        r = Runner(mode, None)
        yield r
        r.close()
        return
    with start_blocking_portal() as portal:
        r = Runner(mode, portal)
        yield r
        r.close()


def hook_for(mode: str, hook: CountingHook) -> Callable[[], Any]:
    return hook if mode == "sync" else hook.acall


# -- credentials stay with their origin --------------------------------------------------------


@pytest.fixture
def foreign() -> Iterator[Server]:
    """Another origin (same host, another port): it must never see a token."""
    with serve(lambda seen: Reply.json({"errcode": 40001, "errmsg": "invalid credential"})) as server:
        yield server


@pytest.mark.parametrize("policy", ["wechat", "whatsapp_cloud"])
def test_redirect_to_another_origin_carries_no_token(runner: Runner, policy: str, foreign: Server) -> None:
    hook = CountingHook()
    redirect = Reply(302, headers={"Location": f"{foreign.url}/landing?x=1"})
    with serve(script(redirect)) as origin:
        c = runner.client(policy, token=hook_for(runner.mode, hook))
        response = runner.request(c, "GET", f"{origin.url}/cgi-bin/user/info?openid=o1")
    # the foreign origin's answer is not classified by our table: no exception, no renewal
    assert response.status_code == 200
    assert response.json()["errcode"] == 40001
    assert hook.calls == 1
    assert len(origin.seen) == 1 and len(foreign.seen) == 1
    sent_home, sent_away = origin.seen[0], foreign.seen[0]
    assert "tok1" in (sent_home.query.get("access_token", [""])[0] + sent_home.headers.get("authorization", ""))
    assert "access_token" not in sent_away.query
    assert "authorization" not in sent_away.headers
    assert "tok1" not in repr(sent_away)


def test_same_origin_redirect_keeps_the_token_and_classification(runner: Runner) -> None:
    hook = CountingHook()

    def handler(seen: Seen) -> Reply:
        if seen.path == "/old":
            return Reply(307, headers={"Location": "/new"})
        return BUSY if sum(s.path == "/new" for s in origin.seen) == 1 else OK

    with serve(handler) as origin:
        c = runner.client(token=hook_for(runner.mode, hook))
        response = runner.request(c, "GET", f"{origin.url}/old")
    assert response.json() == {"errcode": 0, "errmsg": "ok"}
    assert [s.path for s in origin.seen] == ["/old", "/new", "/new"]  # the busy answer was retried
    assert all(s.query["access_token"] == ["tok1-secretvalue"] for s in origin.seen)


def test_redirect_away_and_back_gives_the_token_only_at_home(runner: Runner) -> None:
    hook = CountingHook()
    with (
        serve(lambda seen: Reply(302, headers={"Location": f"{home.url}/back"})) as away,
        serve(
            lambda seen: Reply(302, headers={"Location": f"{away.url}/away"}) if seen.path == "/start" else OK
        ) as home,
    ):
        c = runner.client(token=hook_for(runner.mode, hook))
        response = runner.request(c, "GET", f"{home.url}/start")
    assert response.json()["errcode"] == 0
    assert [s.path for s in home.seen] == ["/start", "/back"]
    assert all("access_token" in s.query for s in home.seen)
    assert "access_token" not in away.seen[0].query


# -- tokens with whitespace --------------------------------------------------------------------


def test_hook_token_with_surrounding_whitespace_is_stripped(runner: Runner) -> None:
    def hook() -> str:
        return "  tok-from-a-file\n"

    async def ahook() -> str:
        return hook()

    with serve(script()) as server:
        c = runner.client("whatsapp_cloud", token=hook if runner.mode == "sync" else ahook)
        runner.request(c, "POST", f"{server.url}/v19.0/123/messages", json={"to": "1"})
    assert server.seen[0].headers["authorization"] == "Bearer tok-from-a-file"


@pytest.mark.parametrize(("value", "problem"), [("tok en", "whitespace"), ("tok\x00en", "a control character")])
def test_hook_token_with_inner_whitespace_is_refused_before_sending(runner: Runner, value: str, problem: str) -> None:
    def hook() -> str:
        return value

    async def ahook() -> str:
        return value

    with serve(script()) as server:
        c = runner.client("whatsapp_cloud", token=hook if runner.mode == "sync" else ahook)
        with pytest.raises(TokenRefreshFailed) as info:
            runner.request(c, "POST", f"{server.url}/v19.0/123/messages", json={"to": "1"})
    assert server.seen == []
    assert problem in str(info.value)
    assert value not in str(info.value) and value not in repr(info.value.args)
    assert info.value.attempts == 0


def test_a_request_httpx_cannot_build_is_fatal_and_never_sent(runner: Runner) -> None:
    with serve(script()) as server:
        c = runner.client()
        with pytest.raises(retrypolicy.RequestRejected) as info:
            runner.request(c, "POST", f"{server.url}{SEND}", json={}, headers={"X-Trace": "a\r\nb"})
    assert server.seen == []
    c11n = info.value.classification
    assert (c11n.category, c11n.ambiguous, c11n.source) == (Category.FATAL, False, "transport")
    assert "never sent" in str(info.value)


# -- request bodies: replayed byte for byte, or not at all -------------------------------------


class ReadOnce(io.RawIOBase):
    """A body that can be read once, like a socket stream or an S3 StreamingBody."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


IMAGE = bytes(range(256)) * 40


def _upload_files(kind: str, tmp_path: Path) -> Any:
    if kind == "bytesio":
        return io.BytesIO(IMAGE)
    if kind == "disk":
        path = tmp_path / "photo.jpg"
        path.write_bytes(IMAGE)
        return path.open("rb")
    return io.BufferedReader(ReadOnce(IMAGE))


@pytest.mark.parametrize("kind", ["bytesio", "disk"])
def test_seekable_upload_is_resent_byte_for_byte(runner: Runner, kind: str, tmp_path: Path) -> None:
    fileobj = _upload_files(kind, tmp_path)
    with serve(script(BUSY, BUSY)) as server:
        c = runner.client()
        files = {"media": ("photo.jpg", fileobj, "image/jpeg")}
        response = runner.request(c, "POST", f"{server.url}/cgi-bin/media/upload?type=image", files=files)
    fileobj.close()
    assert response.json()["errcode"] == 0
    bodies = [s.body for s in server.seen]
    assert len(bodies) == 3
    assert IMAGE in bodies[0]
    assert bodies[0] == bodies[1] == bodies[2]


def test_read_once_upload_is_not_resent(runner: Runner, tmp_path: Path) -> None:
    fileobj = _upload_files("read-once", tmp_path)
    with serve(script(BUSY)) as server:
        c = runner.client()
        files = {"media": ("photo.jpg", fileobj, "image/jpeg")}
        with pytest.raises(ResendUnsafe) as info:
            runner.request(c, "POST", f"{server.url}/cgi-bin/media/upload?type=image", files=files)
    assert len(server.seen) == 1
    assert IMAGE in server.seen[0].body
    assert "cannot be sent again" in str(info.value)


@pytest.mark.parametrize("mode", ["sync"])  # httpx sends a file as content= from a Client only
def test_seekable_file_as_content_is_rewound_and_resent_whole(runner: Runner, tmp_path: Path) -> None:
    path = tmp_path / "voice.amr"
    path.write_bytes(IMAGE)
    with serve(script(BUSY)) as server, path.open("rb") as fileobj:
        c = runner.client()
        response = runner.request(c, "POST", f"{server.url}/cgi-bin/media/upload?type=voice", content=fileobj)
    assert response.json()["errcode"] == 0
    assert [s.body for s in server.seen] == [IMAGE, IMAGE]


GENERATED = b'{"touser":"o1","msgtype":"text"}'


def generated(mode: str) -> Any:
    """A request body from a generator (an async one for an AsyncClient), in two chunks: GENERATED."""

    def chunks() -> Iterator[bytes]:
        yield GENERATED[:15]
        yield GENERATED[15:]

    async def achunks() -> Any:
        for chunk in chunks():
            yield chunk

    return chunks() if mode == "sync" else achunks()


def test_generator_body_meeting_an_expired_token_renews_for_the_next_request(runner: Runner) -> None:
    hook = CountingHook()

    def handler(seen: Seen) -> Reply:
        return EXPIRED if seen.query["access_token"] == ["tok1-secretvalue"] else OK

    with serve(handler) as server:
        c = runner.client(token=hook_for(runner.mode, hook))
        with pytest.raises(ResendUnsafe):
            runner.request(c, "POST", f"{server.url}{SEND}", content=generated(runner.mode))
        assert hook.calls == 2  # renewed although this request could not be resent
        response = runner.request(c, "POST", f"{server.url}{SEND}", json={"touser": "o1"})
    assert response.json()["errcode"] == 0
    assert [s.query["access_token"] for s in server.seen] == [["tok1-secretvalue"], ["tok2-secretvalue"]]


def test_retry_off_sends_exactly_once_and_renews_for_later_requests(runner: Runner) -> None:
    hook = CountingHook()

    def handler(seen: Seen) -> Reply:
        return EXPIRED if seen.query["access_token"] == ["tok1-secretvalue"] else OK

    with serve(handler) as server:
        c = runner.client(token=hook_for(runner.mode, hook))
        with capture_logs() as logs, pytest.raises(RetriesExhausted) as info:
            runner.request(
                c, "POST", f"{server.url}{SEND}", json={"a": 1}, extensions={"retrypolicy": {"retry": False}}
            )
        assert len(server.seen) == 1
        assert info.value.attempts == 1
        assert "retry is off" in str(info.value)
        runner.request(c, "POST", f"{server.url}{SEND}", json={"a": 1})
    assert [s.query["access_token"] for s in server.seen] == [["tok1-secretvalue"], ["tok2-secretvalue"]]
    renewed = [e for e in logs if e["event"] == "retrypolicy.token_renewed"]
    assert len(renewed) == 1 and renewed[0]["resent"] is False


# -- response bodies: never a false success ----------------------------------------------------

USER_ACTION = {"errcode": 45015, "errmsg": "回复时间超过限制 rid: 1-2"}


@pytest.mark.parametrize("charset", ["gbk", "gb18030", "utf-16", "utf-8-sig"])
def test_error_in_a_declared_charset_is_read(runner: Runner, charset: str) -> None:
    with serve(script(Reply.json(USER_ACTION, charset=charset))) as server:
        c = runner.client()
        with pytest.raises(UserActionRequired) as info:
            runner.request(c, "POST", f"{server.url}{SEND}", json={"touser": "o1"})
    assert info.value.classification.code == 45015
    assert "回复时间超过限制" in info.value.classification.message


def test_undecodable_body_is_not_a_success(runner: Runner) -> None:
    body = '{"errcode":45015,"errmsg":"回复时间超过限制"}'.encode("gbk")  # declared as UTF-8 by omission
    reply = Reply(200, body, {"Content-Type": "application/json"})
    with serve(script(reply, reply, reply, reply)) as server:
        c = runner.client()
        with pytest.raises(ResendUnsafe):  # a POST: it may have been carried out, so it is not resent
            runner.request(c, "POST", f"{server.url}{SEND}", json={"touser": "o1"})
        assert len(server.seen) == 1
        response = runner.request(c, "GET", f"{server.url}/cgi-bin/user/info")  # a GET is retried, then succeeds
    assert response.json()["errcode"] == 0
    assert len(server.seen) == 5


# -- streams stay readable ---------------------------------------------------------------------


_WAYS = ("iter_raw", "read", "iter_bytes", "iter_text")


def _stream_all(runner: Runner, c: Any, url: str) -> dict[str, Any]:
    """Open a stream for each way httpx offers to read one, and read it that way."""
    got: dict[str, Any] = {}
    for way in _WAYS:
        if runner.mode == "sync":
            with c.stream("POST", url, json={"a": 1}) as response:
                got[way] = response.read() if way == "read" else list(getattr(response, way)())
            continue

        async def go(way: str = way) -> Any:
            async with c.stream("POST", url, json={"a": 1}) as response:
                if way == "read":
                    return await response.aread()
                return [chunk async for chunk in getattr(response, "a" + way)()]

        got[way] = runner.call(go)
    return got


@pytest.mark.parametrize("gzipped", [False, True], ids=["identity", "gzip"])
def test_small_body_read_by_the_transport_stays_a_stream_for_the_caller(runner: Runner, gzipped: bool) -> None:
    body = b'{"errcode":0,"errmsg":"ok","msgid":1}'
    reply = Reply(200, body, {"Content-Type": "application/json"}, gzip=gzipped)
    with serve(script(reply, then=reply)) as server:
        got = _stream_all(runner, runner.client(), f"{server.url}{SEND}")
        bare = _stream_all(runner, runner.bare(), f"{server.url}{SEND}")
    assert got == bare
    assert got["read"] == body and "".join(got["iter_text"]) == body.decode()
    assert (b"".join(got["iter_raw"]) != body) is gzipped


def test_unused_port_is_a_connect_error_never_sent(runner: Runner) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = runner.client(retry=retrypolicy.RetrySettings(max_attempts=2, initial_delay=0.01, deadline=5))
    with pytest.raises(RetriesExhausted) as info:
        runner.request(c, "POST", f"http://127.0.0.1:{port}{SEND}", json={"touser": "o1"})
    assert info.value.attempts == 2  # a POST that never left is resent
    assert info.value.classification.ambiguous is False


# -- bodies without a Content-Length (chunked, HTTP/2, proxies) ----------------------------------


def _chunked(obj: Any, **kwargs: Any) -> Reply:
    reply = Reply.json(obj)
    return Reply(reply.status, reply.body, reply.headers, chunked=True, **kwargs)


@pytest.mark.parametrize("gzipped", [False, True], ids=["identity", "gzip"])
def test_a_chunked_error_is_read_for_its_code(runner: Runner, gzipped: bool) -> None:
    with serve(script(_chunked(USER_ACTION, gzip=gzipped))) as server:
        c = runner.client()
        with pytest.raises(UserActionRequired) as info:
            runner.request(c, "POST", f"{server.url}{SEND}", json={"touser": "o1"})
    assert info.value.classification.code == 45015
    assert len(server.seen) == 1


def test_a_chunked_success_stays_readable_every_way(runner: Runner) -> None:
    body = {"errcode": 0, "errmsg": "ok", "msgid": 7}
    with serve(script(_chunked(body), then=_chunked(body))) as server:
        got = _stream_all(runner, runner.client(), f"{server.url}{SEND}")
        bare = _stream_all(runner, runner.bare(), f"{server.url}{SEND}")
    assert got == bare


def test_a_long_chunked_body_is_read_no_further_than_max_body_bytes_and_handed_back_whole(runner: Runner) -> None:
    big = {"errcode": 0, "errmsg": "ok", "items": ["x" * 100] * 2000}  # ~210 KB, past the 64 KiB limit
    with serve(script(_chunked(big), then=_chunked(big))) as server:
        got = _stream_all(runner, runner.client(), f"{server.url}{SEND}")
        bare = _stream_all(runner, runner.bare(), f"{server.url}{SEND}")

    def joined(ways: dict[str, Any]) -> dict[str, Any]:  # the same bytes, in chunks of other sizes
        return {way: v if way == "read" else ("" if way == "iter_text" else b"").join(v) for way, v in ways.items()}

    assert joined(got) == joined(bare)
    assert len(got["read"]) > 200_000


def _finished(response: httpx.Response) -> dict[str, Any]:
    """What a caller sees of a response that ``client.request()`` handed back, read."""
    return {
        "closed": response.is_closed,
        "consumed": response.is_stream_consumed,
        "elapsed": response.elapsed.total_seconds() >= 0,  # raises RuntimeError unless read and closed
        "downloaded": response.num_bytes_downloaded,
        "content": response.content,
    }


@pytest.mark.parametrize("gzipped", [False, True], ids=["identity", "gzip"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_a_response_handed_back_is_read_and_closed_as_bare_httpx_leaves_it(
    runner: Runner, gzipped: bool, chunked: bool
) -> None:
    """``client.post()`` through the transport, on the fast path and after a retry by the flow,
    leaves the response as bare httpx does: read, closed, ``elapsed`` set (it used to raise
    RuntimeError: the transport's own read left ``_content`` behind, so the client never read the
    stream it handed back, and never closed it)."""
    json_type = {"Content-Type": "application/json"}
    ok = Reply(200, b'{"errcode":0,"errmsg":"ok","msgid":1}', json_type, gzip=gzipped, chunked=chunked)
    busy = Reply(200, b'{"errcode":-1,"errmsg":"system error"}', json_type, gzip=gzipped, chunked=chunked)
    retry = retrypolicy.RetrySettings(max_attempts=2, initial_delay=0.01)
    with serve(script(ok, busy, ok, then=ok)) as server:
        url = f"{server.url}{SEND}"
        c, bare = runner.client(retry=retry), runner.bare()
        fast = _finished(runner.request(c, "POST", url, json={"a": 1}))
        flow = _finished(runner.request(c, "POST", url, json={"a": 1}))  # -1, then ok: the flow's response
        plain = _finished(runner.request(bare, "POST", url, json={"a": 1}))
        assert len(server.seen) == 4
    assert fast == plain
    assert flow == plain


def test_every_kind_of_body_takes_the_fast_path_and_a_failure_still_resends_only_what_can_be(
    runner: Runner, flows: list[bool], tmp_path: Path
) -> None:
    """A generator, a seekable ``content=`` file and a read-once upload are sent without the flow
    once the token has worked (the body's replayer is asked before sending and handed over in
    ``First``); when they fail, the flow that takes over resends the seekable file whole and never
    the other two."""
    hook = CountingHook()
    path = tmp_path / "voice.amr"
    path.write_bytes(IMAGE)

    with serve(script(OK, OK, BUSY, BUSY, BUSY, then=OK)) as server, path.open("rb") as fileobj:
        c = runner.client(token=hook_for(runner.mode, hook))
        url = f"{server.url}{SEND}"
        runner.request(c, "POST", url, json={"touser": "o1"})  # the token's first success: the flow
        runner.request(c, "POST", url, content=generated(runner.mode))  # OK
        with pytest.raises(ResendUnsafe, match="cannot be sent again"):
            runner.request(c, "POST", url, content=generated(runner.mode))  # BUSY
        files = {"media": ("photo.jpg", _upload_files("read-once", tmp_path), "image/jpeg")}
        with pytest.raises(ResendUnsafe, match="cannot be sent again"):
            runner.request(c, "POST", f"{server.url}/cgi-bin/media/upload?type=image", files=files)  # BUSY
        if runner.mode == "sync":  # httpx sends a file as content= from a Client only
            response = runner.request(c, "POST", f"{server.url}/cgi-bin/media/upload?type=voice", content=fileobj)
            assert response.json()["errcode"] == 0
    bodies = [s.body for s in server.seen]
    assert bodies[1] == bodies[2] == GENERATED
    assert IMAGE in bodies[3]
    if runner.mode == "sync":
        assert bodies[4:] == [IMAGE, IMAGE]  # BUSY, then resent whole from where it started
        assert flows == [False, True, True, True]
    else:
        assert len(bodies) == 4 and flows == [False, True, True]
    assert hook.calls == 1


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("how", ["stall", "cut"])
def test_a_body_broken_off_while_read_for_its_code(runner: Runner, flows: list[bool], method: str, how: str) -> None:
    """The transport reads a small body straight off the socket (not through the response's own
    read): a read timeout halfway through, or a connection closed halfway through, is a failure
    after sending, as it was through ``response.read()``. A POST may have been carried out, so it is
    not resent; a GET is, and its next answer is handed back whole."""
    body = b'{"errcode":0,"errmsg":"ok","pad":"' + b"x" * 2000 + b'"}'
    json_type = {"Content-Type": "application/json"}
    broken = Reply(200, body, json_type, stall=1.0 if how == "stall" else 0, cut=how == "cut")
    timeout = httpx.Timeout(5.0, read=0.3)
    retry = retrypolicy.RetrySettings(max_attempts=2, initial_delay=0.01)
    with serve(script(broken, then=Reply(200, body, json_type))) as server:
        c = runner.client(retry=retry)
        url = f"{server.url}{SEND}"
        if method == "POST":
            with pytest.raises(ResendUnsafe) as info:
                runner.request(c, "POST", url, json={"touser": "o1"}, timeout=timeout)
            assert len(server.seen) == 1
            expected = httpx.ReadTimeout if how == "stall" else httpx.RemoteProtocolError
            assert type(info.value.__cause__) is expected
        else:
            response = runner.request(c, "GET", url, timeout=timeout)
            assert response.content == body and len(server.seen) == 2
    assert flows == [True]  # the fast path sent it; the flow took over the failure


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_bodies_read_for_their_code_leave_the_connection_to_be_reused(runner: Runner, chunked: bool) -> None:
    """The transport reads a small body straight off the socket and closes that stream: the
    connection goes back to the pool, and the next request reuses it (keep-alive), as with bare
    httpx: 20 requests, one connection, on the fast path and through the flow alike."""
    ok = Reply(200, b'{"errcode":0,"errmsg":"ok"}', {"Content-Type": "application/json"}, chunked=chunked)
    busy = Reply(200, b'{"errcode":-1,"errmsg":"busy"}', {"Content-Type": "application/json"}, chunked=chunked)
    retry = retrypolicy.RetrySettings(max_attempts=2, initial_delay=0.01)
    with serve(script(*[ok] * 10, busy, then=ok)) as server:
        c = runner.client(retry=retry)
        for _ in range(20):
            runner.request(c, "POST", f"{server.url}{SEND}?access_token=t0k3n-value", json={"touser": "o1"})
    assert len(server.seen) == 21  # the 11th was resent after the busy answer
    assert len({seen.port for seen in server.seen}) == 1
