"""In-process fake messaging platforms: see the library work without credentials or network.

Four fakes speak the real wire shapes of the platforms that retrypolicy knows:

============================  =================================================================
:class:`FakeWeChat`           ``POST /cgi-bin/stable_token``, ``GET /cgi-bin/token``,
                              ``POST /cgi-bin/message/custom/send``, ``.../template/send``
:class:`FakeTencentIM`        ``POST /v4/openim/sendmsg?sdkappid=&identifier=&usersig=&random=``
:class:`FakeWhatsAppOnPrem`   ``POST /v1/users/login`` (basic auth), ``POST /v1/messages``
:class:`FakeWhatsAppCloud`    ``POST /v{N}/{phone_number_id}/messages`` (Bearer)
============================  =================================================================

A fake is a plain, thread-safe ``handler(request) -> httpx.Response``, so it plugs into
``httpx.MockTransport`` for sync and async clients alike (the host of the URL is ignored)::

    wechat = FakeWeChat(appid="wx1", secret="s3cret")
    client = httpx.Client(transport=httpx.MockTransport(wechat), base_url=FakeWeChat.BASE_URL)

or is served over real HTTP on 127.0.0.1 for code that builds its own client::

    with wechat.serve() as base_url:            # "http://127.0.0.1:54321"
        httpx.post(f"{base_url}/cgi-bin/stable_token", json={...})

Tokens. Each fake issues tokens with an expiry read from ``clock`` (``time.monotonic`` by
default; pass a :class:`FakeClock` to move time by hand). WeChat and on-prem issue them from their
token endpoints (a new WeChat token invalidates the previous one: 40001); Tencent UserSigs and
Cloud tokens are minted by the test with :meth:`FakePlatform.issue_token`, as your own code (UserSig
generation) or Business Manager would. :meth:`FakePlatform.expire_tokens` expires every current
token: the next call gets the platform's token-expired code. :meth:`FakePlatform.token_hook` returns
a ready token hook for ``RetryTransport(token=...)`` that fetches or mints a token from the fake.

Faults. :meth:`FakePlatform.script` queues faults for the next API (non-token) requests in order;
:meth:`FakePlatform.fault_rate` applies a random one of a list to a fraction of API requests,
deterministically for a given seed. The faults are :class:`Busy`, :class:`RateLimited`,
:class:`TokenExpired`, :class:`UserAction`, :class:`Fatal`, :class:`GatewayError`, :class:`Slow`,
:class:`Dropped` and :class:`ErrorCode`; each platform answers them with its own code, listed in
its ``FAULT_CODES``. Token endpoints never get faults.

Counters. ``fake.requests`` (every request), ``fake.token_requests`` (token endpoint hits, or
tokens minted through :meth:`~FakePlatform.token_hook` where the platform has no endpoint),
``fake.sent`` (accepted message payloads, to prove a message went out exactly once) and
``fake.injected`` (the faults applied so far).

A pytest fixture, with the fake as the inner transport of :class:`retrypolicy.RetryTransport`::

    import httpx
    import pytest

    import retrypolicy
    from retrypolicy.testing import Busy, FakeWeChat, TokenExpired


    @pytest.fixture
    def wechat() -> FakeWeChat:
        return FakeWeChat(appid="wx1", secret="s3cret")


    def test_send_survives_busy_and_expiry(wechat: FakeWeChat) -> None:
        retrypolicy.set_testing(True)  # keep the decisions, skip the backoff sleeps (a global switch)
        wechat.script(Busy(), TokenExpired())
        transport = retrypolicy.RetryTransport(
            policy="wechat", token=wechat.token_hook(), transport=httpx.MockTransport(wechat)
        )
        with httpx.Client(transport=transport, base_url=FakeWeChat.BASE_URL) as client:
            r = client.post("/cgi-bin/message/custom/send", json={"touser": "OPENID", "msgtype": "text"})
        assert r.json()["errcode"] == 0
        assert len(wechat.sent) == 1  # sent exactly once, after a retry and a token renewal
        assert wechat.token_requests == 2  # the first token, then the renewal

Notes: a fake's handler is synchronous, so :class:`Slow` blocks the event loop of an
``AsyncClient`` using ``MockTransport``; use :meth:`~FakePlatform.serve` to test client timeouts.
WeChat's rate-limit code 45011 asks for a 60 s wait (``min_delay``): ``set_testing`` skips the
sleep, but the wait still counts against the 60 s default deadline, so pass
``retry=RetrySettings(deadline=600)`` to see a retry after it. No repr of a fake shows a secret
or a token.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal, NamedTuple, TypeAlias

import httpx

from ._token import Token

__all__ = [
    "Busy",
    "Dropped",
    "ErrorCode",
    "FakeClock",
    "FakePlatform",
    "FakeTencentIM",
    "FakeWeChat",
    "FakeWhatsAppCloud",
    "FakeWhatsAppOnPrem",
    "Fatal",
    "Fault",
    "GatewayError",
    "RateLimited",
    "RedisServer",
    "Slow",
    "TokenExpired",
    "UserAction",
    "redis_server",
]


# -- faults ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Busy:
    """The platform's "system busy" answer: retryable and not ambiguous.

    WeChat -1, Tencent -10114 (server overloaded, refuses service), on-prem 1016 (system
    overloaded, HTTP 503), Cloud 131000 (something went wrong, HTTP 500).
    """


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The platform's rate-limit answer, with a ``Retry-After`` header when ``retry_after`` is given.

    WeChat 45011 in an HTTP 200 body (as WeChat does); Tencent 60011, on-prem 1015 and Cloud
    130429 with HTTP 429.
    """

    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.retry_after is not None and not (0 <= self.retry_after < math.inf):
            raise ValueError(f"retry_after must be a finite number of seconds >= 0, got {self.retry_after!r}")


@dataclass(frozen=True, slots=True)
class TokenExpired:
    """Expire the current tokens before handling: the request gets the token-expired code.

    WeChat 42001, Tencent 70001, on-prem 1005 (HTTP 401), Cloud 190/463 (HTTP 401).
    """


@dataclass(frozen=True, slots=True)
class UserAction:
    """A code that needs a person; ``code`` overrides the platform's typical one.

    WeChat 45015, Tencent 80005, on-prem 470, Cloud 131047.
    """

    code: int | None = None


@dataclass(frozen=True, slots=True)
class Fatal:
    """A code saying the request can never succeed as is; ``code`` overrides the default.

    WeChat 40003, Tencent 20003, on-prem 1008 (HTTP 400), Cloud 131009 (HTTP 400).
    """

    code: int | None = None


@dataclass(frozen=True, slots=True)
class GatewayError:
    """A proxy in front of the platform fails: an HTML page with no error code (``text/html``)."""

    status: int = 502

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {self.status!r}")


@dataclass(frozen=True, slots=True)
class Slow:
    """Sleep ``seconds`` (real time, without holding the fake's lock), then answer normally."""

    seconds: float

    def __post_init__(self) -> None:
        if not (0 <= self.seconds < math.inf):
            raise ValueError(f"seconds must be a finite number >= 0, got {self.seconds!r}")


@dataclass(frozen=True, slots=True)
class Dropped:
    """Process the request (a message IS recorded in ``sent``), then lose the answer.

    Through ``MockTransport`` the call raises ``httpx.ReadTimeout``; over :meth:`FakePlatform.serve`
    the connection is closed without a response.
    """


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """Any other platform code, in the platform's error body, with this HTTP status."""

    code: int
    status: int = 200
    message: str | None = None
    subcode: int | None = None
    """Graph ``error_subcode`` (WhatsApp Cloud only)."""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status (100-599), got {self.status!r}")


Fault: TypeAlias = Busy | RateLimited | TokenExpired | UserAction | Fatal | GatewayError | Slow | Dropped | ErrorCode
_FAULT_TYPES = (Busy, RateLimited, TokenExpired, UserAction, Fatal, GatewayError, Slow, Dropped, ErrorCode)


# -- clock -------------------------------------------------------------------------------------


class FakeClock:
    """A clock for ``clock=``: stands still until :meth:`advance` moves it."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward, got {seconds!r}")
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock({self():g})"


# -- the shared machinery ----------------------------------------------------------------------


def _fault_codes(specs: Mapping[str, _Spec], *, token_expired: int) -> Mapping[str, int]:
    """The code each fault kind gets, as documented in ``FAULT_CODES``: the specs' codes plus expiry."""
    return {**{kind: spec.code for kind, spec in specs.items()}, "token_expired": token_expired}


class _Spec(NamedTuple):
    code: int
    status: int
    message: str
    details: str | None = None
    subcode: int | None = None
    transient: bool = False


@dataclass(slots=True)
class _Issued:
    expires_at: float
    expired: bool = False
    revoked: bool = False


TokenStatus: TypeAlias = Literal["valid", "missing", "unknown", "expired", "revoked"]
Route: TypeAlias = Literal["token", "api"] | None
_DROP_MESSAGE = "the fake platform processed the request, then dropped the connection (Dropped fault)"


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _header_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _bearer(request: httpx.Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _check_lifetime(seconds: float) -> float:
    if not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
        raise ValueError(f"a token lifetime must be a finite number of seconds > 0, got {seconds!r}")
    return float(seconds)


class FakePlatform:
    """What every fake shares: routing, tokens, faults, counters, a lock and :meth:`serve`.

    Subclasses describe one platform: its routes, token checks, wire shapes and fault codes.
    """

    platform: ClassVar[str] = ""
    """The name of the platform's policy table (``retrypolicy.load_policy(fake.platform)``)."""
    BASE_URL: ClassVar[str] = "http://fake.invalid"
    """The platform's real base URL, handy with ``MockTransport`` (which ignores the host)."""
    FAULT_CODES: ClassVar[Mapping[str, int]] = {}
    """The code each fault kind is answered with: busy, rate_limited, token_expired, user_action, fatal."""
    _SPECS: ClassVar[Mapping[str, _Spec]] = {}
    _SINGLE_TOKEN: ClassVar[bool] = False  # does a new token invalidate the others?

    def __init__(self, *, token_lifetime: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds, got {type(clock).__name__}")
        self._lock = threading.Lock()
        self._clock = clock
        self._lifetime = _check_lifetime(token_lifetime)
        self._tokens: dict[str, _Issued] = {}
        self._latest: str | None = None
        self._script: deque[Fault] = deque()
        self._rate = 0.0
        self._rate_faults: tuple[Fault, ...] = ()
        self._rng = random.Random(0)
        self._requests = 0
        self._token_requests = 0
        self._sent: list[dict[str, Any]] = []
        self._injected: list[Fault] = []
        self._serial = 0

    # -- counters --------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        """Every request received, token endpoints and unknown paths included."""
        with self._lock:
            return self._requests

    @property
    def token_requests(self) -> int:
        """Token endpoint hits (or tokens minted through :meth:`token_hook` on Tencent and Cloud)."""
        with self._lock:
            return self._token_requests

    @property
    def sent(self) -> list[dict[str, Any]]:
        """A copy of the message payloads the platform accepted, in order."""
        with self._lock:
            return list(self._sent)

    @property
    def injected(self) -> list[Fault]:
        """A copy of the faults applied so far, in order (scripted and random)."""
        with self._lock:
            return list(self._injected)

    def __repr__(self) -> str:
        with self._lock:
            live = sum(1 for t in self._tokens.values() if self._alive(t))
            return (
                f"<{type(self).__name__} requests={self._requests} token_requests={self._token_requests} "
                f"sent={len(self._sent)} live_tokens={live} scripted={len(self._script)} rate={self._rate:g}>"
            )

    # -- faults ----------------------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue faults for the next API (non-token) requests, one each, in order."""
        for fault in faults:
            if not isinstance(fault, _FAULT_TYPES):
                raise TypeError(f"not a fault: {fault!r}")
        with self._lock:
            self._script.extend(faults)

    def fault_rate(self, rate: float, faults: Sequence[Fault] | None = None, *, seed: int | None = None) -> None:
        """Apply a random fault of ``faults`` (default ``[Busy()]``) to ``rate`` of API requests.

        Deterministic for a given ``seed``: the n-th API request not taken by :meth:`script` gets
        the same fault every run (and in any thread interleaving the count is the same).
        ``fault_rate(0)`` turns it off.
        """
        chosen = tuple(faults) if faults is not None else (Busy(),)
        if not (isinstance(rate, (int, float)) and 0 <= rate <= 1):
            raise ValueError(f"rate must be a number from 0 to 1, got {rate!r}")
        if rate > 0 and not chosen:
            raise ValueError("faults must not be empty")
        for fault in chosen:
            if not isinstance(fault, _FAULT_TYPES):
                raise TypeError(f"not a fault: {fault!r}")
        with self._lock:
            self._rate = float(rate)
            self._rate_faults = chosen
            self._rng = random.Random(seed)

    def clear_faults(self) -> None:
        """Drop the scripted faults and turn the fault rate off."""
        with self._lock:
            self._script.clear()
            self._rate = 0.0

    def _next_fault(self) -> Fault | None:
        if self._script:
            return self._script.popleft()
        if self._rate > 0 and self._rng.random() < self._rate:
            return self._rng.choice(self._rate_faults)
        return None

    # -- tokens ----------------------------------------------------------------------------

    def issue_token(self, expires_in: float | None = None) -> str:
        """Mint a token the fake accepts until it expires (``expires_in`` defaults to the platform's lifetime).

        On WeChat this invalidates the previous token, like a call of the token endpoint.
        """
        lifetime = self._lifetime if expires_in is None else _check_lifetime(expires_in)
        with self._lock:
            return self._mint(lifetime)

    def expire_tokens(self) -> None:
        """Expire every current token: the next API call gets the platform's token-expired code."""
        with self._lock:
            self._expire_all()

    def token_hook(self) -> Callable[[], Token]:
        """A token hook for ``RetryTransport(token=...)`` that gets a token from this fake.

        WeChat: ``POST /cgi-bin/stable_token``; on-prem: ``POST /v1/users/login``; Tencent and
        Cloud: a freshly minted token (counted in ``token_requests``). Thread-safe.
        """

        def hook() -> Token:
            with self._lock:
                self._token_requests += 1
                value = self._mint(self._lifetime)
            return Token(value, expires_in=self._lifetime)

        return hook

    def _mint(self, lifetime: float) -> str:
        if self._SINGLE_TOKEN:
            for record in self._tokens.values():
                record.revoked = True
        value = self._new_token_value()
        self._tokens[value] = _Issued(self._clock() + lifetime)
        self._latest = value
        return value

    def _new_token_value(self) -> str:
        return secrets.token_urlsafe(32)

    def _alive(self, record: _Issued) -> bool:
        return not record.revoked and not record.expired and self._clock() < record.expires_at

    def _expire_all(self) -> None:
        for record in self._tokens.values():
            record.expired = True

    def _expire_for(self, request: httpx.Request) -> None:
        """The TokenExpired fault: expire every token, the one in this request included."""
        self._expire_all()

    def _token_status(self, token: str | None) -> TokenStatus:
        if not token:
            return "missing"
        record = self._tokens.get(token)
        if record is None:
            return "unknown"
        if record.revoked:
            return "revoked"
        if record.expired or self._clock() >= record.expires_at:
            return "expired"
        return "valid"

    # -- serving ---------------------------------------------------------------------------

    def __call__(self, request: httpx.Request) -> httpx.Response:
        """Answer one request: the ``httpx.MockTransport`` handler. Thread-safe."""
        response = self._respond(request)
        if response is None:
            raise httpx.ReadTimeout(_DROP_MESSAGE, request=request)
        return response

    def _respond(self, request: httpx.Request) -> httpx.Response | None:
        """The answer to a request, or ``None`` when a :class:`Dropped` fault loses it."""
        try:
            request.content  # noqa: B018 - raises if the body has not been read
        except httpx.RequestNotRead:
            request.read()
        with self._lock:
            self._requests += 1
            self._serial += 1
            route = self._route(request)
            if route == "token":
                self._token_requests += 1
                return self._handle_token(request)
            if route is None:
                return httpx.Response(404, text="404 Not Found")
            fault = self._next_fault()
            if fault is not None:
                self._injected.append(fault)
            if isinstance(fault, TokenExpired):
                self._expire_for(request)
            elif fault is not None and not isinstance(fault, (Slow, Dropped)):
                return self._fault_response(fault)
            if not isinstance(fault, Slow):
                response = self._handle_api(request)
                return None if isinstance(fault, Dropped) else response
        time.sleep(fault.seconds)  # outside the lock: other requests go on meanwhile
        with self._lock:
            return self._handle_api(request)

    def _fault_response(self, fault: Fault) -> httpx.Response:
        if isinstance(fault, GatewayError):
            title = f"{fault.status} {HTTPStatus(fault.status).phrase}"
            html = f"<html><body><h1>{title}</h1></body></html>"
            return httpx.Response(fault.status, content=html.encode(), headers={"content-type": "text/html"})
        if isinstance(fault, ErrorCode):
            message = fault.message or f"error {fault.code} injected by retrypolicy.testing"
            return self._error(fault.code, fault.status, message, subcode=fault.subcode)
        if isinstance(fault, Busy):
            return self._spec_error("busy")
        if isinstance(fault, RateLimited):
            headers = None if fault.retry_after is None else {"Retry-After": _header_number(fault.retry_after)}
            return self._spec_error("rate_limited", headers=headers)
        if isinstance(fault, UserAction):
            return self._spec_error("user_action", fault.code)
        if isinstance(fault, Fatal):
            return self._spec_error("fatal", fault.code)
        raise AssertionError(f"unexpected fault {fault!r}")  # pragma: no cover

    def _spec_error(
        self, kind: str, code: int | None = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        spec = self._SPECS[kind]
        if code is not None and code != spec.code:
            text = f"error {code} injected by retrypolicy.testing"
            spec = _Spec(code, spec.status, text, text)
        return self._error(
            spec.code,
            spec.status,
            spec.message,
            details=spec.details,
            subcode=spec.subcode,
            transient=spec.transient,
            headers=headers,
        )

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """Serve this fake over HTTP on 127.0.0.1 (a free port) while the block runs.

        Yields the base URL, e.g. ``"http://127.0.0.1:54321"``. A :class:`Dropped` fault closes
        the connection without an answer. The server stops when the block exits.
        """
        server = _Server(("127.0.0.1", 0), _handler_class(self))
        server.daemon_threads = True
        port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-serve-{port}",
            daemon=True,
        )
        thread.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    # -- what each platform defines --------------------------------------------------------

    def _route(self, request: httpx.Request) -> Route:
        raise NotImplementedError

    def _handle_token(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="404 Not Found")

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError

    def _error(
        self,
        code: int,
        status: int,
        message: str,
        *,
        details: str | None = None,
        subcode: int | None = None,
        transient: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        raise NotImplementedError


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


# -- WeChat ------------------------------------------------------------------------------------


class FakeWeChat(FakePlatform):
    """WeChat Official Accounts: stable and classic access tokens, customer-service and template sends.

    ``appid``/``secret`` are what the token endpoints accept (40013 for a wrong appid, 40125 for a
    wrong secret). Every token issued invalidates the previous one (40001); an expired token gets
    42001, a missing one 41001. Error messages end with ``rid: <id>`` as WeChat's do. Every
    ``plain_text_every``-th response is served as ``text/plain`` (WeChat does that); 0 turns it off.
    """

    platform: ClassVar[str] = "wechat"
    BASE_URL: ClassVar[str] = "https://api.weixin.qq.com"
    _SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec(-1, 200, "system error"),
        "rate_limited": _Spec(45011, 200, "api minute-quota reach limit  mustslower  retry next minute"),
        "user_action": _Spec(45015, 200, "response out of time limit or subscription is canceled"),
        "fatal": _Spec(40003, 200, "invalid openid"),
    }
    FAULT_CODES: ClassVar[Mapping[str, int]] = _fault_codes(_SPECS, token_expired=42001)
    _SINGLE_TOKEN: ClassVar[bool] = True
    _SEND = "/cgi-bin/message/custom/send"
    _TEMPLATE = "/cgi-bin/message/template/send"

    def __init__(
        self,
        appid: str = "wx0000000000000fake",
        secret: str = "fake-appsecret",
        *,
        token_lifetime: float = 7200.0,
        plain_text_every: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, clock=clock)
        if plain_text_every < 0:
            raise ValueError(f"plain_text_every must be >= 0, got {plain_text_every!r}")
        self.appid = appid
        self._secret = secret
        self._plain_text_every = plain_text_every

    def token_hook(self) -> Callable[[], Token]:
        def hook() -> Token:
            body = {"grant_type": "client_credential", "appid": self.appid, "secret": self._secret}
            answer = self(httpx.Request("POST", f"{self.BASE_URL}/cgi-bin/stable_token", json=body)).json()
            if "access_token" not in answer:
                raise RuntimeError(f"FakeWeChat stable_token answered errcode {answer.get('errcode')}")
            return Token(answer["access_token"], expires_in=float(answer["expires_in"]))

        return hook

    def _new_token_value(self) -> str:
        return f"{86 + self._serial % 10}_{secrets.token_urlsafe(96)}"

    def _json(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> httpx.Response:
        every = self._plain_text_every
        ctype = "text/plain" if every and self._serial % every == 0 else "application/json; encoding=utf-8"
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return httpx.Response(status, content=content, headers={"content-type": ctype, **(headers or {})})

    def _rid(self) -> str:
        n = self._serial
        return f"{0x65F00000 + n:08x}-{(n * 0x9E3779B1) & 0xFFFFFFFF:08x}-{(n * 0x85EBCA6B) & 0xFFFFFFFF:08x}"

    def _error(
        self,
        code: int,
        status: int,
        message: str,
        *,
        details: str | None = None,
        subcode: int | None = None,
        transient: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        return self._json(status, {"errcode": code, "errmsg": f"{message} rid: {self._rid()}"}, headers)

    def _route(self, request: httpx.Request) -> Route:
        path, method = request.url.path, request.method
        if (method, path) in (("POST", "/cgi-bin/stable_token"), ("GET", "/cgi-bin/token")):
            return "token"
        if method == "POST" and path in (self._SEND, self._TEMPLATE):
            return "api"
        return None

    def _handle_token(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/token":
            params = request.url.params
            grant, appid, secret = params.get("grant_type"), params.get("appid"), params.get("secret")
            force = True  # the classic endpoint always issues a new token
        else:
            body = _json_object(request.content)
            if body is None:
                return self._error(47001, 200, "data format error")
            grant, appid, secret = body.get("grant_type"), body.get("appid"), body.get("secret")
            force = body.get("force_refresh") is True
        if grant != "client_credential":
            return self._error(40002, 200, "invalid grant_type")
        if appid != self.appid:
            return self._error(40013, 200, "invalid appid")
        if secret != self._secret:
            return self._error(40125, 200, "invalid appsecret")
        current = self._latest
        if not force and current is not None and self._alive(self._tokens[current]):
            remaining = max(1, math.ceil(self._tokens[current].expires_at - self._clock()))
            return self._json(200, {"access_token": current, "expires_in": remaining})
        token = self._mint(self._lifetime)
        return self._json(200, {"access_token": token, "expires_in": math.ceil(self._lifetime)})

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        status = self._token_status(request.url.params.get("access_token"))
        if status == "missing":
            return self._error(41001, 200, "access_token missing")
        if status in ("unknown", "revoked"):
            return self._error(40001, 200, "invalid credential, access_token is invalid or not latest")
        if status == "expired":
            return self._error(42001, 200, "access_token expired")
        if not request.content.strip():
            return self._error(44002, 200, "empty post data")
        payload = _json_object(request.content)
        if payload is None:
            return self._error(47001, 200, "data format error")
        touser = payload.get("touser")
        if not isinstance(touser, str) or not touser:
            return self._error(40003, 200, "invalid openid")
        if request.url.path == self._TEMPLATE:
            if not isinstance(payload.get("template_id"), str) or not payload["template_id"]:
                return self._error(40037, 200, "invalid template_id")
            self._sent.append(payload)
            return self._json(200, {"errcode": 0, "errmsg": "ok", "msgid": 2_000_000_000 + self._serial})
        if not isinstance(payload.get("msgtype"), str):
            return self._error(47001, 200, "data format error")
        self._sent.append(payload)
        return self._json(200, {"errcode": 0, "errmsg": "ok"})


# -- Tencent Cloud Chat ------------------------------------------------------------------------


class FakeTencentIM(FakePlatform):
    """Tencent Cloud Chat REST API: ``POST /v4/openim/sendmsg`` with the UserSig in the query.

    There is no token endpoint: your code generates UserSigs. The fake accepts a UserSig minted by
    :meth:`issue_token` until it expires, and any other non-empty UserSig that is not expired (see
    :meth:`expire_tokens`) and that ``usersig_validator(identifier, usersig)`` accepts (default:
    all; it is called under the fake's lock, keep it quick). ``identifier`` must be ``admin``
    (90009 otherwise) and ``sdkappid`` must match (60006). Errors: 70002 for a missing UserSig,
    70001 for an expired one, 70003 for one the validator refuses; bodies are checked like the
    real API (90001 bad JSON, 90003 To_Account, 90005 MsgRandom, 90007 MsgBody).
    """

    platform: ClassVar[str] = "tencent_im"
    BASE_URL: ClassVar[str] = "https://console.tim.qq.com"
    _SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec(-10114, 200, "server overloaded, service refused; try again later"),
        "rate_limited": _Spec(60011, 429, "SDKAppID request rate exceeds the limit"),
        "user_action": _Spec(80005, 200, "service disabled: edition expired or account overdue"),
        "fatal": _Spec(20003, 200, "invalid To_Account: the account does not exist"),
    }
    FAULT_CODES: ClassVar[Mapping[str, int]] = _fault_codes(_SPECS, token_expired=70001)

    def __init__(
        self,
        sdkappid: int = 1400000000,
        admin: str = "administrator",
        *,
        usersig_validator: Callable[[str, str], bool] | None = None,
        token_lifetime: float = 180 * 86400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, clock=clock)
        self.sdkappid = sdkappid
        self.admin = admin
        self._validator = usersig_validator

    def _new_token_value(self) -> str:
        return "eJw" + secrets.token_urlsafe(120)

    def _expire_for(self, request: httpx.Request) -> None:
        self._expire_all()
        usersig = request.url.params.get("usersig")
        if usersig:
            self._tokens.setdefault(usersig, _Issued(math.inf)).expired = True

    def _error(
        self,
        code: int,
        status: int,
        message: str,
        *,
        details: str | None = None,
        subcode: int | None = None,
        transient: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        body = {"ActionStatus": "FAIL", "ErrorInfo": message, "ErrorCode": code}
        return httpx.Response(status, json=body, headers=headers)

    def _route(self, request: httpx.Request) -> Route:
        return "api" if (request.method, request.url.path) == ("POST", "/v4/openim/sendmsg") else None

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        if params.get("sdkappid") != str(self.sdkappid):
            return self._error(60006, 200, "SDKAppID invalid")
        identifier, usersig = params.get("identifier", ""), params.get("usersig")
        status = self._token_status(usersig)
        if status == "missing":
            return self._error(70002, 200, "UserSig is empty")
        if status in ("expired", "revoked"):
            return self._error(70001, 200, "UserSig expired, please regenerate it")
        if status == "unknown":
            assert usersig is not None
            if self._validator is not None and not self._validator(identifier, usersig):
                return self._error(70003, 200, "UserSig is invalid")
            self._tokens[usersig] = _Issued(math.inf)  # seen: expire_tokens() will expire it
        if identifier != self.admin:
            return self._error(90009, 200, "the request requires app admin permission")
        payload = _json_object(request.content)
        if payload is None:
            return self._error(90001, 200, "failed to parse the JSON request packet")
        if not isinstance(payload.get("To_Account"), str) or not payload["To_Account"]:
            return self._error(90003, 200, "To_Account is missing or the account does not exist")
        random_value = payload.get("MsgRandom")
        if not isinstance(random_value, int) or isinstance(random_value, bool):
            return self._error(90005, 200, "MsgRandom is missing or not an integer")
        if not isinstance(payload.get("MsgBody"), list) or not payload["MsgBody"]:
            return self._error(90007, 200, "MsgBody is not an array")
        self._sent.append(payload)
        now = int(time.time())
        return httpx.Response(
            200,
            json={
                "ActionStatus": "OK",
                "ErrorInfo": "",
                "ErrorCode": 0,
                "MsgTime": now,
                "MsgKey": f"{self._serial}_{random_value & 0xFFFFFFFF}_{now}",
            },
        )


# -- WhatsApp Business on-premises -------------------------------------------------------------


class FakeWhatsAppOnPrem(FakePlatform):
    """WhatsApp Business API on-premises client: basic-auth login, Bearer-token message sends.

    ``POST /v1/users/login`` with ``username``/``password`` (basic auth) issues a token valid
    ``token_lifetime`` seconds (7 days by default). Auth errors are 1005 with HTTP 401; a message
    without ``to`` gets 1008, a body that is not JSON 1009 (HTTP 400). Success is HTTP 201.
    """

    platform: ClassVar[str] = "whatsapp_onprem"
    BASE_URL: ClassVar[str] = "https://localhost:9090"
    _SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec(1016, 503, "System overloaded", "The system is under heavy load; try again later."),
        "rate_limited": _Spec(1015, 429, "Too many requests", "The rate limit has been hit."),
        "user_action": _Spec(
            470,
            400,
            "Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied "
            "to this number.",
        ),
        "fatal": _Spec(1008, 400, "Required parameter is missing", "Parameter 'to' is required."),
    }
    FAULT_CODES: ClassVar[Mapping[str, int]] = _fault_codes(_SPECS, token_expired=1005)

    def __init__(
        self,
        username: str = "admin",
        password: str = "fake-Passw0rd!",
        *,
        token_lifetime: float = 7 * 86400.0,
        version: str = "2.53.1",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, clock=clock)
        self.username = username
        self._password = password
        self.version = version

    @property
    def _meta(self) -> dict[str, str]:
        return {"api_status": "stable", "version": self.version}

    def token_hook(self) -> Callable[[], Token]:
        def hook() -> Token:
            basic = base64.b64encode(f"{self.username}:{self._password}".encode()).decode()
            headers = {"Authorization": f"Basic {basic}"}
            request = httpx.Request("POST", f"{self.BASE_URL}/v1/users/login", headers=headers, json={})
            response = self(request)
            if response.status_code != 200:
                raise RuntimeError(f"FakeWhatsAppOnPrem login answered HTTP {response.status_code}")
            return Token(response.json()["users"][0]["token"], expires_in=self._lifetime)

        return hook

    def _new_token_value(self) -> str:
        return "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + secrets.token_urlsafe(48) + "." + secrets.token_urlsafe(32)

    def _error(
        self,
        code: int,
        status: int,
        message: str,
        *,
        details: str | None = None,
        subcode: int | None = None,
        transient: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        error = {"code": code, "title": message, "details": details or message}
        return httpx.Response(status, json={"errors": [error], "meta": self._meta}, headers=headers)

    def _route(self, request: httpx.Request) -> Route:
        if request.method != "POST":
            return None
        if request.url.path == "/v1/users/login":
            return "token"
        return "api" if request.url.path == "/v1/messages" else None

    def _handle_token(self, request: httpx.Request) -> httpx.Response:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user = password = ""
        if scheme.lower() != "basic" or user != self.username or password != self._password:
            return self._error(1005, 401, "Access denied", details="Invalid credentials.")
        token = self._mint(self._lifetime)
        expires = datetime.now(UTC) + timedelta(seconds=self._lifetime)
        users = [{"token": token, "expires_after": expires.strftime("%Y-%m-%d %H:%M:%S+00:00")}]
        return httpx.Response(200, json={"users": users, "meta": self._meta})

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        status = self._token_status(_bearer(request))
        if status == "expired":
            return self._error(1005, 401, "Access denied", details="Token expired.")
        if status != "valid":
            return self._error(1005, 401, "Access denied", details="Invalid credentials.")
        payload = _json_object(request.content)
        if payload is None:
            return self._error(1009, 400, "Parameter value is not valid", details="The request body is not JSON.")
        if not isinstance(payload.get("to"), str) or not payload["to"]:
            return self._error(1008, 400, "Required parameter is missing", details="Parameter 'to' is required.")
        self._sent.append(payload)
        message_id = "gBEG" + base64.b64encode(f"{payload['to']}:{self._serial}".encode()).decode().rstrip("=")
        return httpx.Response(201, json={"messages": [{"id": message_id}], "meta": self._meta})


# -- WhatsApp Cloud API ------------------------------------------------------------------------

_CLOUD_PATH = re.compile(r"/v\d+(?:\.\d+)?/([^/]+)/messages")


class FakeWhatsAppCloud(FakePlatform):
    """WhatsApp Cloud API (Graph): ``POST /v{N}/{phone_number_id}/messages`` with a Bearer token.

    Cloud tokens come from Business Manager, so the test mints them with :meth:`issue_token`
    (24 h by default). An unknown token gets 190, an expired one 190/463 (HTTP 401); an unknown
    phone number id 100/33, a body without ``messaging_product: "whatsapp"`` 100, one without
    ``to`` 131008 (HTTP 400).
    """

    platform: ClassVar[str] = "whatsapp_cloud"
    BASE_URL: ClassVar[str] = "https://graph.facebook.com"
    _SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec(
            131000, 500, "(#131000) Something went wrong", "Message failed to send due to an unknown error.", None, True
        ),
        "rate_limited": _Spec(
            130429, 429, "(#130429) Rate limit hit", "Cloud API message throughput has been reached.", None, True
        ),
        "user_action": _Spec(
            131047,
            400,
            "(#131047) Re-engagement message",
            "Message failed to send because more than 24 hours have passed since the customer last replied "
            "to this number.",
        ),
        "fatal": _Spec(
            131009, 400, "(#131009) Parameter value is not valid", "One or more parameter values are invalid."
        ),
    }
    FAULT_CODES: ClassVar[Mapping[str, int]] = _fault_codes(_SPECS, token_expired=190)

    def __init__(
        self,
        phone_number_id: str = "106540352242922",
        *,
        token_lifetime: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, clock=clock)
        self.phone_number_id = phone_number_id

    @property
    def messages_path(self) -> str:
        """The send endpoint of this phone number, e.g. ``/v21.0/106540352242922/messages``."""
        return f"/v21.0/{self.phone_number_id}/messages"

    def _new_token_value(self) -> str:
        return "EAAG" + secrets.token_urlsafe(150).replace("-", "A").replace("_", "z")

    def _error(
        self,
        code: int,
        status: int,
        message: str,
        *,
        details: str | None = None,
        subcode: int | None = None,
        transient: bool = False,
        headers: Mapping[str, str] | None = None,
        kind: str = "OAuthException",
    ) -> httpx.Response:
        error: dict[str, Any] = {"message": message, "type": kind, "code": code}
        if subcode is not None:
            error["error_subcode"] = subcode
        error["is_transient"] = transient
        if details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": details}
        error["fbtrace_id"] = "A" + base64.urlsafe_b64encode(self._serial.to_bytes(16, "big")).decode()[:22]
        return httpx.Response(status, json={"error": error}, headers=headers)

    def _route(self, request: httpx.Request) -> Route:
        return "api" if request.method == "POST" and _CLOUD_PATH.fullmatch(request.url.path) else None

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        status = self._token_status(_bearer(request))
        if status == "expired":
            return self._error(
                190, 401, "Error validating access token: Session has expired.", subcode=463, kind="OAuthException"
            )
        if status != "valid":
            return self._error(190, 401, "Invalid OAuth access token - Cannot parse access token")
        match = _CLOUD_PATH.fullmatch(request.url.path)
        assert match is not None
        if match.group(1) != self.phone_number_id:
            text = (
                f"Unsupported post request. Object with ID '{match.group(1)}' does not exist, cannot be loaded "
                "due to missing permissions, or does not support this operation."
            )
            return self._error(100, 400, text, subcode=33, kind="GraphMethodException")
        payload = _json_object(request.content)
        if payload is None or payload.get("messaging_product") != "whatsapp":
            return self._error(100, 400, "(#100) The parameter messaging_product is required.")
        to = payload.get("to")
        if not isinstance(to, str) or not to:
            return self._error(
                131008, 400, "(#131008) Required parameter is missing", details="The parameter to is required."
            )
        self._sent.append(payload)
        wa_id = re.sub(r"\D", "", to)
        wamid = "wamid." + base64.b64encode(f"HBgL{wa_id}:{self._serial}".encode()).decode()
        return httpx.Response(
            200,
            json={
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": wa_id}],
                "messages": [{"id": wamid}],
            },
        )


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
