"""Local servers for tests: a fake platform over HTTP on 127.0.0.1, and a throwaway Redis."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from ._platform import FakePlatform


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # socketserver's 5 resets connections in a burst of concurrent clients
    daemon_threads = True


def _handler_class(fake: FakePlatform) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"retrypolicy-{type(fake).__name__}"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: no access log on stderr

        def _serve(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length > 0 else b""
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in ("host", "content-length")]
                request = httpx.Request(self.command, f"http://127.0.0.1{self.path}", headers=headers, content=body)
                response = fake._respond(request)
            except Exception as exc:  # noqa: BLE001 - a bad request must not kill the server thread
                response = httpx.Response(500, text=f"fake platform error: {type(exc).__name__}")
            if response is None:  # Dropped: processed, then no answer at all
                self.close_connection = True
                return
            try:
                self.send_response(response.status_code)
                for key, value in response.headers.multi_items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)
            except OSError:  # the client went away (e.g. it timed out on a Slow fault)
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler


# -- a throwaway Redis, for tests of RedisTokenStore --------------------------------------------


@dataclass
class RedisServer:
    """A redis-server started by :func:`redis_server`: ``url`` to connect, ``kill()`` to crash it.

    With TLS, ``url`` is ``rediss://`` and ``tls_ca`` the certificate file to trust
    (``RedisTokenStore.from_url(server.url, ssl_ca_certs=server.tls_ca)``)."""

    process: subprocess.Popen[bytes]
    port: int
    password: str | None = None
    tls_ca: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls_ca else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __repr__(self) -> str:  # never the password
        tls = ", tls=True" if self.tls_ca else ""
        return f"RedisServer(port={self.port}, running={self.process.poll() is None}{tls})"


def _self_signed(directory: str) -> tuple[str, str]:
    """(certificate, key) files for 127.0.0.1, valid for a day, made by the openssl binary."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("redis_server(tls=True) needs the openssl binary (apt-get install openssl)")
    cert, key = os.path.join(directory, "redis.crt"), os.path.join(directory, "redis.key")
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl could not make a certificate: {result.stderr.strip()[-300:]}")
    return cert, key


def _answers(port: int, tls_ca: str | None) -> bool:
    """Does a Redis on 127.0.0.1:port answer PING (over TLS, trusting ``tls_ca``, if given)?"""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as raw:
        if tls_ca is None:
            raw.sendall(b"PING\r\n")
            return bool(raw.recv(64))
        with ssl.create_default_context(cafile=tls_ca).wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            conn.sendall(b"PING\r\n")
            return bool(conn.recv(64))
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def redis_server(
    password: str | None = None, *, tls: bool = False, options: Sequence[str] = (), timeout: float = 10.0
) -> Iterator[RedisServer]:
    """Start a redis-server on 127.0.0.1 and a free port, without persistence; kill it at the end.

    For tests of :class:`~retrypolicy.RedisTokenStore` with several workers::

        with redis_server() as server:
            store = retrypolicy.RedisTokenStore.from_url(server.url)

    ``tls=True``: the server speaks only TLS, with a self-signed certificate for 127.0.0.1 made
    for it (and removed at the end); connect with ``ssl_ca_certs=server.tls_ca``. ``options``:
    more ``redis-server`` options, e.g. ``["--cluster-enabled", "yes"]`` for a cluster node
    (its files go to a temporary directory, removed at the end).

    Needs the ``redis-server`` binary (Debian/Ubuntu: ``apt-get install redis-server``), and for
    TLS ``openssl``; raises ``RuntimeError`` naming what is missing, or when the server does not
    answer within ``timeout`` seconds.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis_server() needs the redis-server binary (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="retrypolicy-redis-") as directory:
        port = free_port()
        args = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory]
        tls_ca: str | None = None
        if tls:
            tls_ca, key = _self_signed(directory)
            args += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", tls_ca, "--tls-key-file", key]
            args += ["--tls-ca-cert-file", tls_ca, "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(port)]
        if password:
            args += ["--requirepass", password]
        args += [str(option) for option in options]
        log = os.path.join(directory, "redis.log")
        with open(log, "wb") as output:
            process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)
        server = RedisServer(process, port, password, tls_ca)
        try:
            deadline = time.monotonic() + timeout
            while not _answers(port, tls_ca):
                if process.poll() is not None:  # it refused its options: say why, in its own words
                    with open(log, encoding="utf-8", errors="replace") as f:
                        said = f.read().strip()[-400:]
                    if password:
                        said = said.replace(password, "***")
                    raise RuntimeError(f"redis-server exited with code {process.returncode} at start: {said}")
                if time.monotonic() > deadline:
                    built = " (is this redis-server built with TLS?)" if tls else ""
                    raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{port} within {timeout:g} s{built}")
                time.sleep(0.02)
            yield server
        finally:
            server.kill()
