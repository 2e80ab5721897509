"""Network settings of the default inner transport (``proxy``, ``verify``, ``cert``,
``trust_env``, ``limits``, ``http2``), over real sockets: a threaded HTTP forward proxy and a
self-signed HTTPS server on 127.0.0.1, with FakeWeChat behind them, sync and async."""

from __future__ import annotations

import contextlib
import http.client
import ssl
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import pytest

import retrypolicy
from retrypolicy.testing import Busy, FakeWeChat
from retrypolicy.testing._servers import _handler_class, _self_signed, _Server

SEND = "/cgi-bin/message/custom/send"
MESSAGE = {"touser": "o1", "msgtype": "text", "text": {"content": "hi"}}

pytestmark = pytest.mark.usefixtures("testing")  # zero waits (tests/conftest.py)


# -- a forward proxy -----------------------------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "transfer-encoding", "te"}


@dataclass
class Proxy:
    url: str
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, absolute URL) of each request
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def forward_proxy() -> Iterator[Proxy]:
    """An HTTP forward proxy on 127.0.0.1: takes absolute-form requests for http:// URLs, records
    them and forwards them to their origin."""
    proxy = Proxy("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            target = urllib.parse.urlsplit(self.path)
            if target.scheme != "http" or not target.hostname:
                self.send_error(400, "absolute-form http:// URL expected")
                return
            with proxy.lock:
                proxy.seen.append((self.command, self.path))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
            try:
                path = target.path + (f"?{target.query}" if target.query else "")
                upstream.request(self.command, path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
            finally:
                upstream.close()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- a self-signed HTTPS FakeWeChat ----------------------------------------------------------------


@dataclass
class Tls:
    base: str
    cert: str
    key: str


@contextlib.contextmanager
def https_wechat(fake: FakeWeChat, *, client_cert_required: bool = False) -> Iterator[Tls]:
    """FakeWeChat over HTTPS on 127.0.0.1 with a self-signed certificate for 127.0.0.1 (made by
    openssl); with ``client_cert_required``, clients must present that same certificate."""
    with tempfile.TemporaryDirectory(prefix="retrypolicy-tls-") as directory:
        cert, key = _self_signed(directory)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if client_cert_required:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cert)
        server = _Server(("127.0.0.1", 0), _handler_class(fake))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield Tls(f"https://127.0.0.1:{server.server_address[1]}", cert, key)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


# -- sending ---------------------------------------------------------------------------------------


def post(mode: str, base: str, options: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
    """One send through a fresh client whose only settings are on our transport."""
    extensions = {"retrypolicy": options} if options else {}
    if mode == "sync":
        with httpx.Client(transport=retrypolicy.RetryTransport(policy="wechat", **kwargs), base_url=base) as client:
            return client.post(SEND, json=MESSAGE, extensions=extensions)

    async def run() -> httpx.Response:
        transport = retrypolicy.AsyncRetryTransport(policy="wechat", **kwargs)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            return await client.post(SEND, json=MESSAGE, extensions=extensions)

    return anyio.run(run)


def api_requests(fake: FakeWeChat) -> int:
    """Requests that reached the fake's API (its token endpoint, called by the hook, not counted)."""
    return fake.requests - fake.token_requests


class Hook:
    def __init__(self, fake: FakeWeChat) -> None:
        self._hook = fake.token_hook()
        self.tokens: list[str] = []

    def __call__(self) -> retrypolicy.Token:
        token = self._hook()
        self.tokens.append(token.value)
        return token


# -- proxy -----------------------------------------------------------------------------------------


def test_requests_go_through_the_proxy_with_the_token_and_a_retry(mode: str) -> None:
    fake = FakeWeChat()
    fake.script(Busy())
    hook = Hook(fake)
    with fake.serve() as base, forward_proxy() as proxy:
        response = post(mode, base, token=hook, proxy=proxy.url)
    assert response.json()["errcode"] == 0 and len(fake.sent) == 1
    [token] = hook.tokens
    # both attempts passed through the proxy, in absolute form, each with the token filled in
    assert proxy.seen == [("POST", f"{base}{SEND}?access_token={token}")] * 2
    assert api_requests(fake) == 2


def test_a_proxy_given_as_httpx_proxy_works_too(mode: str) -> None:
    fake = FakeWeChat()
    with fake.serve() as base, forward_proxy() as proxy:
        response = post(mode, base, token=Hook(fake), proxy=httpx.Proxy(proxy.url))
    assert response.json()["errcode"] == 0 and len(proxy.seen) == 1


def test_a_client_proxy_bypasses_our_transport(mode: str) -> None:
    """Why the README says proxies go on our transport: a client's ``proxy=`` mounts httpx's own
    proxy transport for every URL, and ours is never called (no token, no classification)."""
    fake = FakeWeChat()
    with fake.serve() as base, forward_proxy() as proxy:
        transport_kwargs: dict[str, Any] = {"policy": "wechat", "token": Hook(fake)}
        if mode == "sync":
            with httpx.Client(
                transport=retrypolicy.RetryTransport(**transport_kwargs), proxy=proxy.url, base_url=base
            ) as client:
                response = client.post(SEND, json=MESSAGE)
        else:

            async def run() -> httpx.Response:
                async with httpx.AsyncClient(
                    transport=retrypolicy.AsyncRetryTransport(**transport_kwargs), proxy=proxy.url, base_url=base
                ) as client:
                    return await client.post(SEND, json=MESSAGE)

            response = anyio.run(run)
    assert proxy.seen == [("POST", f"{base}{SEND}")]  # no token was filled in
    assert response.json()["errcode"] == 41001 and "retrypolicy" not in response.extensions


# -- TLS ---------------------------------------------------------------------------------------------


def test_verify_takes_an_ssl_context_for_a_self_signed_server(mode: str) -> None:
    fake = FakeWeChat()
    fake.script(Busy())
    hook = Hook(fake)
    with https_wechat(fake) as tls:
        context = ssl.create_default_context(cafile=tls.cert)
        response = post(mode, tls.base, token=hook, verify=context)
    assert response.json()["errcode"] == 0 and api_requests(fake) == 2 and len(fake.sent) == 1


def test_verify_takes_a_ca_file_path_and_false(mode: str) -> None:
    fake = FakeWeChat()
    with https_wechat(fake) as tls:
        assert post(mode, tls.base, token=Hook(fake), verify=tls.cert).json()["errcode"] == 0
        assert post(mode, tls.base, token=Hook(fake), verify=False).json()["errcode"] == 0
    assert len(fake.sent) == 2


def test_without_verify_the_self_signed_server_is_refused(mode: str) -> None:
    fake = FakeWeChat()
    with https_wechat(fake) as tls, pytest.raises(retrypolicy.RetriesExhausted) as info:
        post(mode, tls.base, {"max_attempts": 1}, token=Hook(fake), trust_env=False)
    assert info.value.classification.description.startswith("ConnectError")
    assert api_requests(fake) == 0


def test_trust_env_reads_ssl_cert_file(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWeChat()
    with https_wechat(fake) as tls:
        monkeypatch.setenv("SSL_CERT_FILE", tls.cert)
        assert post(mode, tls.base, token=Hook(fake)).json()["errcode"] == 0  # trust_env: httpx's default, True
        assert post(mode, tls.base, token=Hook(fake), trust_env=True).json()["errcode"] == 0
        with pytest.raises(retrypolicy.RetriesExhausted):
            post(mode, tls.base, {"max_attempts": 1}, token=Hook(fake), trust_env=False)
    assert len(fake.sent) == 2


def test_cert_presents_a_client_certificate(mode: str) -> None:
    fake = FakeWeChat()
    with https_wechat(fake, client_cert_required=True) as tls:
        response = post(mode, tls.base, token=Hook(fake), verify=tls.cert, cert=(tls.cert, tls.key))
        assert response.json()["errcode"] == 0 and len(fake.sent) == 1
        # the same without a certificate: refused. (The server's TLS alert comes on the first read;
        # httpcore's anyio backend lets it out as a bare ssl.SSLError, not an httpx error.)
        with pytest.raises((retrypolicy.RequestFailed, ssl.SSLError)):
            post(mode, tls.base, {"max_attempts": 1}, token=Hook(fake), verify=tls.cert)
    assert len(fake.sent) == 1


def test_limits_reach_the_inner_transport(mode: str) -> None:
    limits = httpx.Limits(max_connections=3, max_keepalive_connections=2, keepalive_expiry=7.0)
    cls = retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport
    inner: Any = cls(policy="wechat", limits=limits)._transport
    pool = inner._pool
    assert (pool._max_connections, pool._max_keepalive_connections, pool._keepalive_expiry) == (3, 2, 7.0)


def test_http2_without_h2_is_a_configuration_error(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h2", None)  # as if h2 were not installed (it is not a dependency)
    cls = retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport
    with pytest.raises(
        retrypolicy.ConfigurationError, match=r"http2=True needs the h2 package: pip install 'httpx\[http2\]'"
    ):
        cls(policy="wechat", http2=True)
    cls(policy="wechat", http2=False)  # fine without h2


def test_a_client_with_a_transport_ignores_proxy_variables(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the README says to pass ``proxy=`` to the transport: httpx reads HTTP_PROXY only for
    the transports it builds itself."""
    fake = FakeWeChat()
    with fake.serve() as base, forward_proxy() as proxy:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("http_proxy", proxy.url)
        response = post(mode, base, token=Hook(fake))
    assert response.json()["errcode"] == 0 and proxy.seen == []
