"""The transport over HTTP/2 (``http2=True``), against a real HTTP/2 server on 127.0.0.1: hypercorn
over TLS with a self-signed certificate, ALPN choosing h2. HTTP/2 answers often come without a
Content-Length (the body is DATA frames until END_STREAM), so the transport reads them up to
``max_body_bytes`` for their code; this checks that path, retries, token renewal and long bodies
on h2 streams, sync and async, against bare httpx's own HTTP/2 client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

import retrypolicy
from retrypolicy.testing._servers import _self_signed, free_port

from .support import CountingHook

pytest.importorskip("h2", reason="HTTP/2 needs the h2 package (a dev dependency)")
hypercorn_asyncio = pytest.importorskip("hypercorn.asyncio")
hypercorn_config = pytest.importorskip("hypercorn.config")

pytestmark = pytest.mark.usefixtures("testing")

SEND = "/cgi-bin/message/custom/send"


@dataclass(frozen=True)
class Answer:
    body: bytes
    pieces: int = 2  # DATA frames; with no Content-Length unless sized
    sized: bool = False  # send a Content-Length


def answer(obj: Any, **kwargs: Any) -> Answer:
    return Answer(json.dumps(obj).encode(), **kwargs)


OK = answer({"errcode": 0, "errmsg": "ok", "msgid": 1})
BUSY = answer({"errcode": -1, "errmsg": "system error"})
EXPIRED = answer({"errcode": 42001, "errmsg": "access_token expired"})


@dataclass
class H2Server:
    """Answers the n-th request with ``answers[n]`` (the last one again after that)."""

    answers: list[Answer]
    base: str = ""
    cert: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)  # http_version, path, query, body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.seen.append(
            {
                "http_version": scope["http_version"],
                "path": scope["path"],
                "query": scope["query_string"].decode(),
                "body": body,
            }
        )
        reply = self.answers[min(len(self.seen), len(self.answers)) - 1]
        headers = [(b"content-type", b"application/json")]
        if reply.sized:
            headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        step = max(1, -(-len(reply.body) // reply.pieces))
        for i in range(0, len(reply.body), step):
            more = i + step < len(reply.body)
            await send({"type": "http.response.body", "body": reply.body[i : i + step], "more_body": more})


@contextlib.contextmanager
def h2_server(*answers: Answer) -> Iterator[H2Server]:
    server = H2Server(list(answers))
    with tempfile.TemporaryDirectory(prefix="retrypolicy-h2-") as directory:
        server.cert, key = _self_signed(directory)
        port = free_port()
        config = hypercorn_config.Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.certfile, config.keyfile = server.cert, key
        config.alpn_protocols = ["h2"]  # HTTP/2 only: a client that cannot speak it fails loudly
        config.accesslog = config.errorlog = None
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        ready = threading.Event()

        async def run() -> None:
            config.startup_timeout = 10
            task = asyncio.ensure_future(hypercorn_asyncio.serve(server, config, shutdown_trigger=stop.wait))
            while not ready.is_set():  # listening once a connection is accepted
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    ready.set()
                except OSError:
                    await asyncio.sleep(0.02)
            await task

        thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
        thread.start()
        assert ready.wait(10), "hypercorn did not start"
        server.base = f"https://127.0.0.1:{port}"
        try:
            yield server
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(timeout=10)
            loop.close()


def request(mode: str, transport: Any, url: str, **kwargs: Any) -> httpx.Response:
    """One POST through a client on ``transport`` (a RetryTransport, or None for bare httpx over
    HTTP/2), read whole; an async client runs in its own event loop."""
    if mode == "sync":
        with httpx.Client(transport=transport) as client:
            return client.post(url, **kwargs)

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.post(url, **kwargs)

    return asyncio.run(go())


def transport(mode: str, server: H2Server, **kwargs: Any) -> Any:
    cls = retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport
    return cls("wechat", http2=True, verify=ssl.create_default_context(cafile=server.cert), budget=None, **kwargs)


def bare(mode: str, server: H2Server) -> Any:
    cls = httpx.HTTPTransport if mode == "sync" else httpx.AsyncHTTPTransport
    return cls(http2=True, verify=ssl.create_default_context(cafile=server.cert))


def seen(response: httpx.Response) -> dict[str, Any]:
    return {
        "http_version": response.http_version,
        "content": response.content,
        "closed": response.is_closed,
        "elapsed": response.elapsed.total_seconds() >= 0,  # raises unless read and closed
        "downloaded": response.num_bytes_downloaded,
    }


@pytest.mark.parametrize("sized", [False, True], ids=["no-length", "length"])
def test_a_success_over_http2_is_read_for_its_code_and_handed_back_as_bare_httpx_does(mode: str, sized: bool) -> None:
    ok = Answer(OK.body, pieces=3, sized=sized)
    with h2_server(ok) as server:
        url = f"{server.base}{SEND}?access_token=t0k3n-value"
        ours = seen(request(mode, transport(mode, server), url, json={"touser": "o1"}))
        plain = seen(request(mode, bare(mode, server), url, json={"touser": "o1"}))
    assert ours == plain
    assert ours["http_version"] == "HTTP/2" and ours["content"] == OK.body
    assert [s["http_version"] for s in server.seen] == ["2", "2"]


def test_errors_in_http2_bodies_are_retried_and_a_refused_token_renewed_once(mode: str) -> None:
    hook = CountingHook()
    retry = retrypolicy.RetrySettings(max_attempts=3, initial_delay=0.01)
    with h2_server(BUSY, EXPIRED, OK) as server:
        hooked = transport(mode, server, token=hook if mode == "sync" else hook.acall, retry=retry)
        response = request(mode, hooked, f"{server.base}{SEND}", json={"touser": "o1"})
    assert response.http_version == "HTTP/2" and response.json()["errcode"] == 0
    assert hook.calls == 2  # the first token, and one renewal after 42001
    tokens = [s["query"] for s in server.seen]
    assert tokens == ["access_token=tok1-secretvalue"] * 2 + ["access_token=tok2-secretvalue"]
    assert [json.loads(s["body"]) for s in server.seen] == [{"touser": "o1"}] * 3


def test_a_long_http2_body_without_a_length_is_read_no_further_than_max_body_bytes(mode: str) -> None:
    big = answer({"errcode": 0, "errmsg": "ok", "items": ["x" * 100] * 2000}, pieces=40)  # ~210 KB
    with h2_server(big) as server:
        url = f"{server.base}{SEND}?access_token=t0k3n-value"
        ours = seen(request(mode, transport(mode, server), url, json={"touser": "o1"}))
        plain = seen(request(mode, bare(mode, server), url, json={"touser": "o1"}))
    assert ours == plain
    assert ours["content"] == big.body and len(big.body) > 200_000
