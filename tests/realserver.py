"""A scripted HTTP/1.1 server on 127.0.0.1 for the real-socket tests.

``httpx.MockTransport`` reads request streams into bytes before the handler sees them and hands
back responses whose bodies are already read, so it hides what a transport does to streams,
uploads, redirects and connections. This server is a real peer: it reads each request off the
socket as sent (Content-Length or chunked), records it byte for byte, and answers from a script.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Seen:
    """One request as it arrived on the socket."""

    method: str
    target: str  # path and query, as sent
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    port: int = 0  # the client's port: one per connection

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    gzip: bool = False  # send the body gzip-encoded, with Content-Encoding
    chunked: bool = False  # send the body chunked (no Content-Length), in pieces of up to 4 KiB
    stall: float = 0.0  # with a Content-Length: send half the body, wait this long, then the rest
    cut: bool = False  # with a Content-Length: send half the body, then close the connection

    @classmethod
    def json(cls, obj: Any, status: int = 200, charset: str = "", **headers: str) -> Reply:
        text = json.dumps(obj, ensure_ascii=False)
        ctype = "application/json" + (f"; charset={charset}" if charset else "")
        return cls(status, text.encode(charset or "utf-8"), {"Content-Type": ctype, **headers})


Handler = Callable[[Seen], Reply]


class Server:
    """Answers each request with ``handler(seen)``; ``seen`` lists every request in order."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.url = ""

    def record(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
        return self.handler(seen)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def _handler_class(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            try:
                self._answer()
            except OSError:  # the client went away (it timed out on a slow answer): nothing to tell it
                self.close_connection = True

        def _answer(self) -> None:
            body = _read_body(self)
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = server.record(Seen(self.command, self.path, headers, body, self.client_address[1]))
            payload = gzip.compress(reply.body, mtime=0) if reply.gzip else reply.body
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if reply.gzip:
                self.send_header("Content-Encoding", "gzip")
            if reply.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(payload), 4096):
                    piece = payload[i : i + 4096]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if reply.stall or reply.cut:
                half = len(payload) // 2
                self.wfile.write(payload[:half])
                self.wfile.flush()
                if reply.cut:
                    self.close_connection = True
                    return
                time.sleep(reply.stall)
                payload = payload[half:]
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return Handler


@contextlib.contextmanager
def serve(handler: Handler) -> Iterator[Server]:
    """Run a :class:`Server` on 127.0.0.1 (a free port) while the block runs."""
    server = Server(handler)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(server))
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def script(*replies: Reply, then: Reply | None = None) -> Handler:
    """A handler answering with ``replies`` in order, then ``then`` (default: WeChat's ok)."""
    queue = list(replies)
    lock = threading.Lock()
    last = then or Reply.json({"errcode": 0, "errmsg": "ok"})

    def handler(seen: Seen) -> Reply:
        with lock:
            return queue.pop(0) if queue else last

    return handler
