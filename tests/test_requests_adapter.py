"""retrypolicy.requests.RetryAdapter: requests sessions driven by the transports' core, over real sockets."""

from __future__ import annotations

import contextlib
import gzip
import io
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

requests = pytest.importorskip("requests")

import retrypolicy  # noqa: E402
from retrypolicy.requests import RetryAdapter, classification  # noqa: E402
from retrypolicy.testing import Busy, Dropped, FakeWeChat, UserAction  # noqa: E402
from tests.realserver import Reply, script, serve  # noqa: E402

SEND = "/cgi-bin/message/custom/send"
MESSAGE = {"touser": "oUser1", "msgtype": "text", "text": {"content": "hello"}}


class Events:
    """A structlog-like logger that keeps the events."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def _log(self, event: str, **fields: Any) -> None:
        with self._lock:
            self.seen.append((event, fields))

    debug = info = warning = error = _log

    def bind(self, **fields: Any) -> Events:
        return self

    def names(self) -> list[str]:
        return [e for e, _ in self.seen]


def session_for(adapter: RetryAdapter) -> Any:
    session = requests.Session()
    session.trust_env = False  # a proxy from the environment must not take the loopback requests
    session.mount("http://", adapter)
    return session


@pytest.fixture
def wechat() -> Iterator[FakeWeChat]:
    with retrypolicy.set_testing(True):
        yield FakeWeChat(plain_text_every=0)


def test_a_busy_answer_is_retried(wechat: FakeWeChat) -> None:
    wechat.script(Busy())
    log = Events()
    adapter = RetryAdapter(policy="wechat", token=wechat.token_hook(), logger=log)
    with wechat.serve() as base, session_for(adapter) as session:
        response = session.post(base + SEND, json=MESSAGE)
    assert response.status_code == 200 and response.json() == {"errcode": 0, "errmsg": "ok"}
    assert wechat.sent == [MESSAGE]  # delivered once, the body intact
    assert log.names() == ["retrypolicy.retry_scheduled"]
    assert log.seen[0][1]["code"] == -1 and "access_token=***" in log.seen[0][1]["url"]
    snap = adapter.snapshot()
    assert (snap.requests, snap.attempts, snap.retries, snap.succeeded) == (1, 2, 1, 1)
    # the token went into the copy that was sent, never into the session's request or the response's URL
    assert "access_token" not in response.url and "access_token" not in (response.request.url or "")


def test_a_renewal_across_32_threads_calls_the_hook_once(wechat: FakeWeChat) -> None:
    adapter = RetryAdapter(policy="wechat", token=wechat.token_hook())
    with wechat.serve() as base, session_for(adapter) as session:
        session.post(base + SEND, json=MESSAGE).raise_for_status()  # the first token
        assert wechat.token_requests == 1
        wechat.expire_tokens()  # every thread now sends an expired token
        barrier = threading.Barrier(32)
        answers: list[Any] = []
        errors: list[BaseException] = []

        def send(i: int) -> None:
            barrier.wait()
            try:
                answers.append(session.post(base + SEND, json={**MESSAGE, "touser": f"o{i}"}).json())
            except Exception as exc:  # noqa: BLE001 - whatever a thread meets, the test reports
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert errors == []
    assert answers == [{"errcode": 0, "errmsg": "ok"}] * 32
    assert wechat.token_requests == 2  # the first token and one renewal for all 32 threads
    assert sorted(m["touser"] for m in wechat.sent[1:]) == sorted(f"o{i}" for i in range(32))
    assert adapter.snapshot().renewals == 1


def test_a_user_action_code_raises(wechat: FakeWeChat) -> None:
    wechat.script(UserAction())
    adapter = RetryAdapter(policy="wechat", token=wechat.token_hook())
    with (
        wechat.serve() as base,
        session_for(adapter) as session,
        pytest.raises(retrypolicy.UserActionRequired) as caught,
    ):
        session.post(base + SEND, json=MESSAGE)
    assert caught.value.classification.code == 45015 and caught.value.attempts == 1
    assert "48 hours" in (caught.value.classification.remediation or "")
    assert wechat.sent == [] and wechat.requests - wechat.token_requests == 1  # never resent


def test_a_dropped_answer_to_a_post_is_not_resent(wechat: FakeWeChat) -> None:
    """The platform processed the message, then closed the connection without an answer: requests
    raises ConnectionError, which may have been carried out, so the POST is never resent."""
    wechat.script(Dropped())
    adapter = RetryAdapter(policy="wechat", token=wechat.token_hook())
    with (
        wechat.serve() as base,
        session_for(adapter) as session,
        pytest.raises(retrypolicy.ResendUnsafe) as caught,
    ):
        session.post(base + SEND, json=MESSAGE)
    assert wechat.sent == [MESSAGE]  # delivered once, and never a second time
    assert "RemoteProtocolError" in caught.value.classification.description


def test_raise_on_returns_the_failure_with_its_classification(wechat: FakeWeChat) -> None:
    wechat.script(UserAction())
    adapter = RetryAdapter(policy="wechat", token=wechat.token_hook(), raise_on=["fatal"])
    with wechat.serve() as base, session_for(adapter) as session:
        response = session.post(base + SEND, json=MESSAGE)
        ok = session.post(base + SEND, json=MESSAGE)
    assert response.json()["errcode"] == 45015
    c = classification(response)
    assert c is not None and c.category is retrypolicy.Category.USER_ACTION
    assert classification(ok) is None


# -- a threaded server whose answers the test holds back


class Held:
    """A server on 127.0.0.1 that answers each request after ``release`` is set (or 10 s), and can
    send a streamed body in two parts with ``release`` in between."""

    def __init__(self, body: bytes = b'{"errcode":0,"errmsg":"ok"}', *, hold_first_only: bool = False) -> None:
        self.release = threading.Event()
        self.body = body
        self.hold_first_only = hold_first_only
        self.seen: list[tuple[str, str, bytes]] = []
        self.finished = threading.Event()  # the streamed body was sent in full
        self.url = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                server.seen.append((self.command, self.path, body))
                if not server.hold_first_only or len(server.seen) == 1:
                    server.release.wait(10)
                self._answer(b'{"errcode":0,"errmsg":"ok"}', "application/json")

            def do_GET(self) -> None:
                server.seen.append((self.command, self.path, b""))
                if self.path.startswith("/media"):  # a download: first half, held, then the rest
                    half = len(server.body) // 2
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(server.body)))
                    self.end_headers()
                    self.wfile.write(server.body[:half])
                    self.wfile.flush()
                    server.release.wait(10)
                    self.wfile.write(server.body[half:])
                    server.finished.set()
                    return
                if not server.hold_first_only or len(server.seen) == 1:
                    server.release.wait(10)
                self._answer(b'{"errcode":0,"errmsg":"ok"}', "application/json")

            def _answer(self, body: bytes, ctype: str) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    self.close_connection = True

        return Handler


@contextlib.contextmanager
def held(server: Held) -> Iterator[Held]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), server.handler())
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_a_read_timeout_on_a_post_is_not_resent() -> None:
    adapter = RetryAdapter(policy="wechat", token=lambda: retrypolicy.Token("tok-secretvalue", expires_in=7200))
    with retrypolicy.set_testing(True), held(Held()) as server, session_for(adapter) as session:
        with pytest.raises(retrypolicy.ResendUnsafe) as caught:
            session.post(server.url + SEND, json=MESSAGE, timeout=(5, 0.3))
        server.release.set()
    assert len(server.seen) == 1  # sent once, never again
    assert (
        caught.value.classification.source == "transport" and "ReadTimeout" in caught.value.classification.description
    )
    assert "tok-secretvalue" not in str(caught.value) and "tok-secretvalue" not in repr(caught.value.__cause__)


def test_a_read_timeout_on_a_get_is_resent() -> None:
    adapter = RetryAdapter(policy="wechat", token=lambda: retrypolicy.Token("tok-secretvalue", expires_in=7200))
    with retrypolicy.set_testing(True), held(Held(hold_first_only=True)) as server, session_for(adapter) as session:
        response = session.get(server.url + "/cgi-bin/user/info", timeout=(5, 0.3))
        server.release.set()
    assert response.json() == {"errcode": 0, "errmsg": "ok"}
    assert len(server.seen) == 2


def test_a_stream_download_stays_a_stream() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB
    adapter = RetryAdapter(policy="wechat", token=lambda: retrypolicy.Token("tok-secretvalue", expires_in=7200))
    with held(Held(body)) as server, session_for(adapter) as session:
        response = session.get(server.url + "/media/get?media_id=M1", stream=True, timeout=10)
        # the adapter handed the response back with only half of the body sent: nothing read it
        assert not server.finished.is_set()
        assert response.raw.tell() == 0
        server.release.set()
        received = b"".join(response.iter_content(65536))
    assert received == body


def test_a_small_json_body_read_for_its_code_stays_readable_as_a_stream() -> None:
    answer = b'{"errcode":0,"errmsg":"ok","msgid":42}'
    reply = Reply(200, answer, {"Content-Type": "application/json"}, gzip=True)
    with serve(script(then=reply)) as server:
        adapter = RetryAdapter(policy="wechat", token=lambda: retrypolicy.Token("tok-secretvalue", expires_in=7200))
        with session_for(adapter) as session:
            streamed = session.post(server.url + SEND, json=MESSAGE, stream=True)
            raw = streamed.raw.read(decode_content=False)
            again = session.post(server.url + SEND, json=MESSAGE, stream=True)
            chunks = b"".join(again.iter_content(7))
    assert gzip.decompress(raw) == answer  # still encoded, as requests gives it
    assert chunks == answer


def test_a_connection_refused_is_resent_for_a_post() -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = retrypolicy.RetrySettings(max_attempts=3, initial_delay=0.01, max_delay=0.01)
    adapter = RetryAdapter(policy="wechat", token=lambda: "tok-secretvalue", retry=settings)
    with (
        retrypolicy.set_testing(True),
        session_for(adapter) as session,
        pytest.raises(retrypolicy.RetriesExhausted) as caught,
    ):
        session.post(f"http://127.0.0.1:{port}{SEND}", json=MESSAGE, timeout=5)
    assert caught.value.attempts == 3  # never sent, so resent even for a POST
    assert "ConnectError" in caught.value.classification.description
    assert "tok-secretvalue" not in str(caught.value)


def test_a_host_no_policy_covers_gets_requests_own_exception() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    adapter = RetryAdapter(policy={"api.weixin.qq.com": "wechat"})
    with session_for(adapter) as session, pytest.raises(requests.ConnectionError):
        session.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert adapter.snapshot().requests == 0


def test_a_seekable_file_upload_is_sent_again_in_full(tmp_path: Any) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(bytes(range(256)) * 40)
    busy = Reply.json({"errcode": -1, "errmsg": "system error"})
    with retrypolicy.set_testing(True), serve(script(busy)) as server:
        adapter = RetryAdapter(policy="wechat", token=lambda: "tok-secretvalue")
        with session_for(adapter) as session, photo.open("rb") as f:
            session.post(server.url + "/cgi-bin/media/upload?type=image", data=f).raise_for_status()
    assert [len(s.body) for s in server.seen] == [10240, 10240]
    assert server.seen[0].body == server.seen[1].body == photo.read_bytes()


def test_a_generator_body_is_never_sent_twice() -> None:
    busy = Reply.json({"errcode": -1, "errmsg": "system error"})
    with retrypolicy.set_testing(True), serve(script(busy)) as server:
        adapter = RetryAdapter(policy="wechat", token=lambda: "tok-secretvalue")
        with session_for(adapter) as session, pytest.raises(retrypolicy.ResendUnsafe):
            session.post(server.url + SEND, data=iter([b'{"touser":"o1",', b'"msgtype":"text"}']))
    assert len(server.seen) == 1 and server.seen[0].body == b'{"touser":"o1","msgtype":"text"}'


def test_a_multipart_upload_is_resent_byte_for_byte() -> None:
    busy = Reply.json({"errcode": -1, "errmsg": "system error"})
    with retrypolicy.set_testing(True), serve(script(busy)) as server:
        adapter = RetryAdapter(policy="wechat", token=lambda: "tok-secretvalue")
        with session_for(adapter) as session:
            files = {"media": ("photo.jpg", io.BytesIO(b"\xff\xd8" + b"x" * 5000), "image/jpeg")}
            session.post(server.url + "/cgi-bin/media/upload?type=image", files=files).raise_for_status()
    assert len(server.seen) == 2 and server.seen[0].body == server.seen[1].body
    assert b"x" * 5000 in server.seen[1].body


def test_a_redirect_to_another_origin_gets_no_token() -> None:
    with serve(script(then=Reply.json({"errcode": 0, "errmsg": "ok"}))) as other:
        moved = Reply(302, b"", {"Location": other.url + "/landing"})
        with serve(script(moved)) as origin:
            adapter = RetryAdapter(policy="wechat", token=lambda: "tok-secretvalue")
            with session_for(adapter) as session:
                response = session.get(origin.url + "/cgi-bin/user/info?openid=o1")
                back = session.get(origin.url + "/cgi-bin/user/info?openid=o2")
    assert response.json() == {"errcode": 0, "errmsg": "ok"} and len(response.history) == 1
    assert origin.seen[0].query["access_token"] == ["tok-secretvalue"]
    assert "access_token" not in other.seen[0].query  # the other origin never sees our token
    assert back.status_code == 200 and origin.seen[1].query["access_token"] == ["tok-secretvalue"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(retrypolicy.ConfigurationError, match="max_renewals"):
        RetryAdapter(policy="wechat", max_renewals=-1)
    with pytest.raises(retrypolicy.ConfigurationError, match="telemetry"):
        RetryAdapter(policy="wechat", telemetry="otel")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_retries"):
        RetryAdapter(policy="wechat", max_retries=3)  # type: ignore[call-arg]  # urllib3 would resend on its own
