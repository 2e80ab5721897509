"""What every fake platform shares: tokens, faults, routing, and serving itself over HTTP."""

from __future__ import annotations

import contextlib
import json
import math
import random
import secrets
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Literal, NamedTuple, TypeAlias, TypedDict, Unpack

import httpx

from .._token import Token
from . import _faults
from ._servers import _handler_class, _Server

# -- the shared machinery ----------------------------------------------------------------------


def _fault_codes(specs: Mapping[str, _Spec], *, token_expired: int | str) -> Mapping[str, int | str]:
    """The code each fault kind gets, as documented in ``FAULT_CODES``: the specs' codes plus expiry."""
    return {**{kind: spec.code for kind, spec in specs.items()}, "token_expired": token_expired}


class _Spec(NamedTuple):
    code: int | str
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


def _json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str], *, ensure_ascii: bool = False
) -> httpx.Response:
    """A JSON answer as the platforms send one: compact, UTF-8 (``ensure_ascii``: non-ASCII escaped, as Slack's)."""
    content = json.dumps(body, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
    return httpx.Response(status, content=content, headers=headers)


def _call_params(request: httpx.Request, *, untyped_form: bool, strict: bool) -> dict[str, Any] | None:
    """A Web API method's arguments: the query string, then a JSON or form body over it (Slack and
    the Bot API take all three; python-telegram-bot sends a form). ``None`` for a body that cannot be
    read. ``untyped_form``: a body without a Content-Type is a form; ``strict``: a malformed form is
    refused (both as Slack does)."""
    params: dict[str, Any] = dict(request.url.params)
    if not request.content:
        return params
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        body = _json_object(request.content)
        return None if body is None else {**params, **body}
    if ctype == "application/x-www-form-urlencoded" or (untyped_form and not ctype):
        try:
            pairs = urllib.parse.parse_qsl(request.content.decode(), keep_blank_values=True, strict_parsing=strict)
        except ValueError:  # UnicodeDecodeError included
            return None
        return {**params, **dict(pairs)}
    return None


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


class ErrorMore(TypedDict, total=False):
    """What a platform's error answer may carry besides its code, status and message."""

    details: str | None
    subcode: int | None
    transient: bool
    headers: Mapping[str, str] | None
    kind: str  # Graph's error type, e.g. "OAuthException"


class FakePlatform:
    """What every fake shares: routing, tokens, faults, counters, a lock and :meth:`serve`.

    Subclasses describe one platform: its routes, token checks, wire shapes and fault codes.
    """

    platform: ClassVar[str] = ""
    """The name of the platform's policy table (``retrypolicy.load_policy(fake.platform)``)."""
    BASE_URL: ClassVar[str] = "http://fake.invalid"
    """The platform's real base URL, handy with ``MockTransport`` (which ignores the host)."""
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = {}
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
        self._script: deque[_faults.Fault] = deque()
        self._rate = 0.0
        self._rate_faults: tuple[_faults.Fault, ...] = ()
        self._rng = random.Random(0)
        self._requests = 0
        self._token_requests = 0
        self._sent: list[dict[str, Any]] = []
        self._injected: list[_faults.Fault] = []
        self._serial = 0
        self._expiries = 0

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
    def expiries(self) -> int:
        """How many times the current token was alive and got expired (a :class:`TokenExpired`
        fault or :meth:`expire_tokens`): each one needs one renewal. ``fault_rate(0.005,
        [TokenExpired()])`` invalidates the current token on 0.5% of sends, as another deployment
        renewing it would; a fault that hits an already dead token is not counted here."""
        with self._lock:
            return self._expiries

    @property
    def injected(self) -> list[_faults.Fault]:
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

    def script(self, *faults: _faults.Fault) -> None:
        """Queue faults for the next API (non-token) requests, one each, in order."""
        for fault in faults:
            if not isinstance(fault, _faults._FAULT_TYPES):
                raise TypeError(f"not a fault: {fault!r}")
        with self._lock:
            self._script.extend(faults)

    def fault_rate(
        self, rate: float, faults: Sequence[_faults.Fault] | None = None, *, seed: int | None = None
    ) -> None:
        """Apply a random fault of ``faults`` (default ``[Busy()]``) to ``rate`` of API requests.

        Deterministic for a given ``seed``: the n-th API request not taken by :meth:`script` gets
        the same fault every run (and in any thread interleaving the count is the same).
        ``fault_rate(0)`` turns it off.
        """
        chosen = tuple(faults) if faults is not None else (_faults.Busy(),)
        if not (isinstance(rate, (int, float)) and 0 <= rate <= 1):
            raise ValueError(f"rate must be a number from 0 to 1, got {rate!r}")
        if rate > 0 and not chosen:
            raise ValueError("faults must not be empty")
        for fault in chosen:
            if not isinstance(fault, _faults._FAULT_TYPES):
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

    def _next_fault(self) -> _faults.Fault | None:
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

    def _fetch_token(self, request: httpx.Request, key: str, lifetime: str, *, what: str, code: str) -> Token:
        """What a fake's own token hook does: ask this fake's token endpoint (``what``, e.g.
        ``"FakeWeChat stable_token"``) and return the token in the answer's ``key`` with the
        lifetime in ``lifetime``; an answer without it raises RuntimeError with its ``code`` field."""
        answer = self(request).json()
        if key not in answer:
            raise RuntimeError(f"{what} answered {code} {answer.get(code)}")
        return Token(answer[key], expires_in=float(answer[lifetime]))

    def _left(self, token: str | None) -> float | None:
        """The seconds ``token`` has left, or None if it is not a live token (under the lock)."""
        record = self._tokens.get(token) if token is not None else None
        if record is None or not self._alive(record):
            return None
        return record.expires_at - self._clock()

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
        latest = self._tokens.get(self._latest) if self._latest is not None else None
        if latest is not None and self._alive(latest):
            self._expiries += 1
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
            if isinstance(fault, _faults.TokenExpired):
                self._expire_for(request)
            elif fault is not None and not isinstance(fault, (_faults.Slow, _faults.Dropped)):
                return self._fault_response(fault)
            if not isinstance(fault, _faults.Slow):
                response = self._handle_api(request)
                return None if isinstance(fault, _faults.Dropped) else response
        time.sleep(fault.seconds)  # outside the lock: other requests go on meanwhile
        with self._lock:
            return self._handle_api(request)

    def _fault_response(self, fault: _faults.Fault) -> httpx.Response:
        if isinstance(fault, _faults.GatewayError):
            title = f"{fault.status} {HTTPStatus(fault.status).phrase}"
            html = f"<html><body><h1>{title}</h1></body></html>"
            return httpx.Response(fault.status, content=html.encode(), headers={"content-type": "text/html"})
        if isinstance(fault, _faults.ErrorCode):
            message = fault.message or f"error {fault.code} injected by retrypolicy.testing"
            return self._error(fault.code, fault.status, message, subcode=fault.subcode)
        if isinstance(fault, _faults.Busy):
            return self._spec_error("busy")
        if isinstance(fault, _faults.RateLimited):
            headers = None if fault.retry_after is None else {"Retry-After": _header_number(fault.retry_after)}
            return self._spec_error("rate_limited", headers=headers)
        if isinstance(fault, _faults.UserAction):
            return self._spec_error("user_action", fault.code)
        if isinstance(fault, _faults.Fatal):
            return self._spec_error("fatal", fault.code)
        raise AssertionError(f"unexpected fault {fault!r}")  # pragma: no cover

    def _spec_error(
        self, kind: str, code: int | str | None = None, headers: Mapping[str, str] | None = None
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

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        raise NotImplementedError
