"""A local HTTP/1.1 server for outages: while down it accepts connections and reads each request,
then never answers (an overloaded gateway often fails so); once up, it answers WeChat's ok."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OK = json.dumps({"errcode": 0, "errmsg": "ok"}).encode()


class HangingServer:
    """``attempts``: requests that arrived (each attempt of a client is one); ``hung``: those
    left unanswered. :meth:`recover` and :meth:`fail` switch it up and down."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.closing = threading.Event()
        self.attempts = 0
        self.hung = 0
        self.lock = threading.Lock()
        self.url = ""

    def recover(self) -> None:
        self.up.set()

    def fail(self) -> None:
        self.up.clear()

    def arrived(self) -> bool:
        """Count a request; True if it is to be answered."""
        with self.lock:
            self.attempts += 1
            if not self.up.is_set():
                self.hung += 1
                return False
            return True


def _handler(server: HangingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if not server.arrived():
                # hang: no byte back until the server stops or recovers, then drop the connection
                while not server.closing.is_set() and not server.up.wait(0.05):
                    pass
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(OK)))
            self.end_headers()
            self.wfile.write(OK)

        do_GET = do_POST = _serve

    return Handler


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and closed its end is the point of this server


@contextlib.contextmanager
def hanging_server(up: bool = False) -> Iterator[HangingServer]:
    """Run a :class:`HangingServer` on 127.0.0.1 (a free port), down unless ``up``."""
    server = HangingServer()
    if up:
        server.recover()
    httpd = _Quiet(("127.0.0.1", 0), _handler(server))
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.closing.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
