"""The fake Slack Web API: string error codes in HTTP 200 bodies, 429 with Retry-After, and
token rotation through ``oauth.v2.access`` with single-use refresh tokens."""

from __future__ import annotations

import base64
import math
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, ClassVar, Unpack

import httpx

from .._token import Token
from ._platform import ErrorMore, FakePlatform, Route, _bearer, _call_params, _fault_codes, _json_response, _Spec

__all__ = ["FakeSlack"]

_API = "/api/"
_TOKEN_METHOD = "oauth.v2.access"
_METHODS = ("chat.postMessage", "chat.update", "auth.test")
_TEAM = {"id": "T0FAKE0001", "name": "Fake Workspace"}
_BOT_USER, _BOT_ID, _APP_ID = "U0FAKEBOT1", "B0FAKEBOT1", "A0FAKEAPP1"


def _params(request: httpx.Request) -> dict[str, Any] | None:
    """A Web API call's arguments: the query, then a JSON or form body over it (a body without a
    Content-Type is a form). ``None`` when the body is neither JSON nor a well-formed form."""
    return _call_params(request, untyped_form=True, strict=True)


class FakeSlack(FakePlatform):
    """Slack Web API: ``POST /api/chat.postMessage``, ``/api/chat.update``, ``/api/auth.test`` with
    ``Authorization: Bearer <token>`` (or a ``token`` argument), and ``/api/oauth.v2.access``.

    Errors are HTTP 200 ``{"ok": false, "error": "<code>"}`` (a ``x-slack-req-id`` header on every
    answer), except the rate limit: HTTP 429 with ``Retry-After`` and ``error: ratelimited``. A JSON
    call whose ``Content-Type`` declares no charset succeeds with ``"warning": "missing_charset"``,
    as Slack's does (a success all the same).

    Token rotation (``rotation=True``, the default): access tokens ``xoxe.xoxb-1-...`` live
    ``token_lifetime`` seconds (12 h); ``oauth.v2.access`` with ``grant_type=refresh_token``, the
    client id and secret (HTTP Basic or form fields) and the current refresh token issues a new
    access token and a new refresh token, and revokes the refresh token it was given: a refresh
    token works once (``invalid_refresh_token`` after that; :attr:`refresh_reuses` counts such
    attempts). :attr:`refresh_token` is the one that works now. An expired access token gets
    ``token_expired``. Without rotation, tokens ``xoxb-...`` never expire; one that
    :meth:`expire_tokens` (or :class:`TokenExpired`) killed gets ``token_revoked``, as when the app
    is uninstalled.

    Missing token: ``not_authed``; unknown token: ``invalid_auth``. ``chat.postMessage`` needs a
    ``channel`` (``channel_not_found`` otherwise, or when ``channels`` is given and does not hold
    it) and a ``text``, ``blocks`` or ``attachments`` (``no_text``); ``chat.update`` needs the
    ``channel`` and ``ts`` of a posted message (``message_not_found``). Other methods:
    ``unknown_method``. Faults: busy is ``service_unavailable``, the rate limit ``ratelimited``
    (HTTP 429), user-action ``not_in_channel``, fatal ``channel_not_found``.
    """

    platform: ClassVar[str] = "slack"
    BASE_URL: ClassVar[str] = "https://slack.com"
    _SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec("service_unavailable", 200, "service_unavailable"),
        "rate_limited": _Spec("ratelimited", 429, "ratelimited"),
        "user_action": _Spec("not_in_channel", 200, "not_in_channel"),
        "fatal": _Spec("channel_not_found", 200, "channel_not_found"),
    }
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = _fault_codes(_SPECS, token_expired="token_expired")

    def __init__(
        self,
        client_id: str = "1111111111.2222222222",
        client_secret: str = "fake-slack-client-secret",
        *,
        rotation: bool = True,
        channels: Collection[str] | None = None,
        token_lifetime: float = 43200.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime if rotation else 100 * 365 * 86400.0, clock=clock)
        self.client_id = client_id
        self._client_secret = client_secret
        self.rotation = bool(rotation)
        self._channels = None if channels is None else frozenset(channels)
        self._refresh = self._new_refresh() if self.rotation else None
        self._hook_refresh = self._refresh  # the refresh token token_hook() renews with
        self._used_refresh: set[str] = set()
        self._refresh_reuses = 0
        self._posted: dict[tuple[str, str], str] = {}  # (channel, ts) of each posted message -> text
        self._updates: list[dict[str, Any]] = []

    # -- what tests read

    @property
    def refresh_token(self) -> str:
        """The refresh token that works now (rotation only); each renewal replaces it."""
        with self._lock:
            if self._refresh is None:
                raise ValueError("FakeSlack(rotation=False) has no refresh token")
            return self._refresh

    @property
    def refresh_reuses(self) -> int:
        """``oauth.v2.access`` calls that brought a refresh token already used (a lost rotation)."""
        with self._lock:
            return self._refresh_reuses

    @property
    def updates(self) -> list[dict[str, Any]]:
        """A copy of the ``chat.update`` calls the platform accepted, in order."""
        with self._lock:
            return list(self._updates)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f" rotation={self.rotation} refresh_reuses={self._refresh_reuses}>"

    # -- tokens

    def _new_refresh(self) -> str:
        return "xoxe-1-" + secrets.token_hex(40)

    def _new_token_value(self) -> str:
        if self.rotation:
            return "xoxe.xoxb-1-" + secrets.token_hex(40)
        return f"xoxb-{secrets.randbelow(10**12):012d}-{secrets.randbelow(10**12):012d}-{secrets.token_hex(12)}"

    def token_hook(self) -> Callable[[], Token]:
        """With rotation: a hook that calls ``oauth.v2.access`` on this fake with the refresh token
        the previous call got (the fake keeps that chain; use one such hook per fake). Without: a
        hook that mints a new ``xoxb-`` token, as an admin reinstalling the app would."""
        if not self.rotation:
            return super().token_hook()

        def hook() -> Token:
            with self._lock:
                refresh = self._hook_refresh
            basic = base64.b64encode(f"{self.client_id}:{self._client_secret}".encode()).decode()
            form = {"grant_type": "refresh_token", "refresh_token": refresh or ""}
            request = httpx.Request(
                "POST", f"{self.BASE_URL}{_API}{_TOKEN_METHOD}", data=form, headers={"Authorization": f"Basic {basic}"}
            )
            answer = self(request).json()
            if not answer.get("ok"):
                raise RuntimeError(f"FakeSlack oauth.v2.access answered error {answer.get('error')!r}")
            with self._lock:
                self._hook_refresh = answer["refresh_token"]
            return Token(answer["access_token"], expires_in=float(answer["expires_in"]))

        return hook

    # -- the wire

    def _headers(self) -> dict[str, str]:
        return {"content-type": "application/json; charset=utf-8", "x-slack-req-id": f"{self._serial:08x}fake"}

    def _json(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> httpx.Response:
        return _json_response(status, body, {**self._headers(), **(headers or {})}, ensure_ascii=True)

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        body: dict[str, Any] = {"ok": False, "error": code}
        details = more.get("details")
        if details and details != message:
            body["response_metadata"] = {"messages": [f"[ERROR] {details}"]}
        return self._json(status, body, more.get("headers"))

    def _route(self, request: httpx.Request) -> Route:
        path = request.url.path
        if not path.startswith(_API) or request.method not in ("GET", "POST"):
            return None
        return "token" if path == _API + _TOKEN_METHOD else "api"

    def _handle_token(self, request: httpx.Request) -> httpx.Response:
        params = _params(request)
        if params is None or request.method != "POST":
            return self._error("invalid_form_data", 200, "invalid_form_data")
        client_id, secret = params.get("client_id"), params.get("client_secret")
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id = secret = None
        if client_id != self.client_id:
            return self._error("invalid_client_id", 200, "invalid_client_id")
        if secret != self._client_secret:
            return self._error("bad_client_secret", 200, "bad_client_secret")
        if params.get("grant_type") != "refresh_token":
            return self._error("invalid_grant_type", 200, "invalid_grant_type")
        given = params.get("refresh_token")
        if self._refresh is None or given != self._refresh:
            if isinstance(given, str) and given in self._used_refresh:
                self._refresh_reuses += 1
            return self._error("invalid_refresh_token", 200, "invalid_refresh_token")
        self._used_refresh.add(given)
        self._refresh = self._new_refresh()
        access = self._mint(self._lifetime)
        return self._json(
            200,
            {
                "ok": True,
                "app_id": _APP_ID,
                "access_token": access,
                "token_type": "bot",
                "scope": "chat:write",
                "bot_user_id": _BOT_USER,
                "expires_in": math.ceil(self._lifetime),
                "refresh_token": self._refresh,
                "team": _TEAM,
                "enterprise": None,
                "is_enterprise_install": False,
            },
        )

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        params = _params(request)
        if params is None:
            return self._error("invalid_form_data", 200, "invalid_form_data")
        token = _bearer(request) or params.get("token")
        status = self._token_status(token if isinstance(token, str) else None)
        if status == "missing":
            return self._error("not_authed", 200, "not_authed")
        if status == "unknown":
            return self._error("invalid_auth", 200, "invalid_auth")
        if status in ("expired", "revoked"):
            code = "token_expired" if self.rotation else "token_revoked"
            return self._error(code, 200, code)
        method = request.url.path[len(_API) :]
        if method not in _METHODS:
            return self._error("unknown_method", 200, "unknown_method")
        if method == "auth.test":
            return self._success(
                request,
                {
                    "url": "https://fake.slack.com/",
                    "team": _TEAM["name"],
                    "user": "bot",
                    "team_id": _TEAM["id"],
                    "user_id": _BOT_USER,
                    "bot_id": _BOT_ID,
                },
            )
        channel = params.get("channel")
        known = self._channels is None or channel in self._channels
        if not isinstance(channel, str) or not channel or not known:
            return self._error("channel_not_found", 200, "channel_not_found")
        text = params.get("text")
        if not (text or params.get("blocks") or params.get("attachments")):
            return self._error("no_text", 200, "no_text")
        if method == "chat.update":
            ts = params.get("ts")
            if (channel, ts) not in self._posted:
                return self._error("message_not_found", 200, "message_not_found")
            self._updates.append(params)
            self._posted[(channel, str(ts))] = str(text)
            return self._success(request, {"channel": channel, "ts": ts, "text": text})
        ts = f"{1_700_000_000 + self._serial}.{self._serial % 1_000_000:06d}"
        self._posted[(channel, ts)] = str(text)
        self._sent.append(params)
        message = {"type": "message", "text": text, "user": _BOT_USER, "bot_id": _BOT_ID, "ts": ts}
        return self._success(request, {"channel": channel, "ts": ts, "message": message})

    def _success(self, request: httpx.Request, result: Mapping[str, Any]) -> httpx.Response:
        body: dict[str, Any] = {"ok": True, **result}
        ctype = request.headers.get("content-type", "").lower()
        if ctype.startswith("application/json") and "charset" not in ctype:
            body["warning"] = "missing_charset"
            body["response_metadata"] = {
                "warnings": ["missing_charset"],
                "messages": [
                    "[WARN] A Content-Type HTTP header was presented but did not declare a charset, such as a 'utf-8'"
                ],
            }
        return self._json(200, body)
