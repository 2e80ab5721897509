"""The fake of Feishu / Lark Open Platform: tenant_access_token and im/v1 messages."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Unpack

import httpx

from .._token import Token
from ._faults import Fault, RateLimited
from ._platform import (
    ErrorMore,
    FakePlatform,
    Route,
    _bearer,
    _fault_codes,
    _header_number,
    _json_object,
    _json_response,
    _Spec,
)

_TOKEN_PATHS = ("/open-apis/auth/v3/tenant_access_token/internal", "/open-apis/auth/v3/tenant_access_token/internal/")
_SEND = "/open-apis/im/v1/messages"
_RECEIVE_ID_TYPES = ("open_id", "user_id", "union_id", "email", "chat_id")
_NEW_TOKEN_WITHIN = 1800.0  # Feishu: a new tenant token only when the current one has less than 30 minutes left
_UUID_WINDOW = 3600.0  # im/v1: one message per uuid within an hour
_HELP = "https://open.feishu.cn/document/uAjLw4CM/ugTN1YjL4UTN24CO1UjN/trouble-shooting/"


class FakeFeishu(FakePlatform):
    """Feishu / Lark: ``POST /open-apis/auth/v3/tenant_access_token/internal`` and
    ``POST /open-apis/im/v1/messages?receive_id_type=...`` with ``Authorization: Bearer``.

    The paths are the same on ``open.feishu.cn`` (:attr:`BASE_URL`) and ``open.larksuite.com``
    (:attr:`LARK_BASE_URL`); the fake serves both. ``app_id``/``app_secret`` are what the token
    endpoint accepts (10003 for a wrong app_id, 10014 for a wrong secret, both with HTTP 200 as
    Feishu answers them). As on Feishu, the token endpoint returns the current token, with the
    seconds it has left in ``expire``, until less than 30 minutes remain; then it issues a new
    one, and the old one stays valid until it expires.

    Every answer carries ``X-Tt-Logid``; errors are ``{"code", "msg", "error": {"log_id", ...}}``
    with the HTTP status Feishu sends them with: a missing token 99991661 and an invalid or
    expired one 99991663, both with ``token_error_status`` (400, as current APIs answer; some
    answer 200); the rate limit 99991400 with ``rate_limit_status`` (429; older APIs 400) and the
    ``x-ogw-ratelimit-limit``/``x-ogw-ratelimit-reset`` headers (a :class:`RateLimited` fault's
    ``retry_after`` is sent as ``x-ogw-ratelimit-reset``, Feishu's wait hint, not as
    ``Retry-After``); 99992402 (HTTP 400) for a missing or unknown ``receive_id_type``, 230001 for
    an empty ``receive_id``. A send that repeats the ``uuid`` of one accepted within the hour
    answers like the first and is not delivered again, as im/v1 does.
    """

    platform: ClassVar[str] = "feishu"
    BASE_URL: ClassVar[str] = "https://open.feishu.cn"
    LARK_BASE_URL: ClassVar[str] = "https://open.larksuite.com"
    """Lark, Feishu's international edition: the same API on another host."""
    _SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec(1500, 500, "Internal Error, please try again later"),
        "rate_limited": _Spec(99991400, 429, "request trigger frequency limit"),
        "user_action": _Spec(230013, 400, "Bot has NO availability to this user."),
        "fatal": _Spec(230001, 400, "Your request contains an invalid request parameter, ext=invalid receive_id."),
    }
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = _fault_codes(_SPECS, token_expired=99991663)

    def __init__(
        self,
        app_id: str = "cli_fake0000000000",
        app_secret: str = "fake-app-secret",
        *,
        token_error_status: int = 400,
        rate_limit_status: int = 429,
        token_lifetime: float = 7200.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, clock=clock)
        for name, status in (("token_error_status", token_error_status), ("rate_limit_status", rate_limit_status)):
            if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
                raise ValueError(f"{name} must be an HTTP status (200-599), got {status!r}")
        self.app_id = app_id
        self._secret = app_secret
        self._token_status_code = token_error_status
        self._rate_status = rate_limit_status
        self._uuids: dict[str, tuple[float, dict[str, Any]]] = {}  # uuid -> (until, answer)

    def token_hook(self) -> Callable[[], Token]:
        def hook() -> Token:
            body = {"app_id": self.app_id, "app_secret": self._secret}
            request = httpx.Request("POST", f"{self.BASE_URL}{_TOKEN_PATHS[0]}", json=body)
            what = "FakeFeishu tenant_access_token"
            return self._fetch_token(request, "tenant_access_token", "expire", what=what, code="code")

        return hook

    # -- wire shapes -----------------------------------------------------------------------

    def _new_token_value(self) -> str:
        return "t-" + secrets.token_hex(20)

    def _logid(self) -> str:
        n = self._serial
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        return f"{stamp}{(n * 0x9E3779B97F4A7C15) & (2**80 - 1):020X}"

    def _json(
        self, status: int, body: Mapping[str, Any], logid: str, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        base = {"content-type": "application/json; charset=utf-8", "X-Tt-Logid": logid}
        return _json_response(status, body, {**base, **(headers or {})})

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        logid = self._logid()
        body: dict[str, Any] = {"code": code, "msg": message}
        if code != 99991400:  # the rate-limit answer carries no error object
            troubleshooter = (
                f"Troubleshooting suggestions: https://open.feishu.cn/search?from=openapi&log_id={logid}&code={code}"
            )
            error: dict[str, Any] = {"log_id": logid, "troubleshooter": troubleshooter}
            if more.get("details"):
                error["message"] = more["details"]
            body["error"] = error
        return self._json(status, body, logid, more.get("headers"))

    def _fault_response(self, fault: Fault) -> httpx.Response:
        if isinstance(fault, RateLimited):
            headers = {"x-ogw-ratelimit-limit": "50"}
            if fault.retry_after is not None:
                headers["x-ogw-ratelimit-reset"] = _header_number(fault.retry_after)
            return self._error(99991400, self._rate_status, self._SPECS["rate_limited"].message, headers=headers)
        return super()._fault_response(fault)

    # -- routes ----------------------------------------------------------------------------

    def _route(self, request: httpx.Request) -> Route:
        if request.method != "POST":
            return None
        if request.url.path in _TOKEN_PATHS:
            return "token"
        return "api" if request.url.path == _SEND else None

    def _handle_token(self, request: httpx.Request) -> httpx.Response:
        body = _json_object(request.content)
        app_id = body.get("app_id") if body is not None else None
        secret = body.get("app_secret") if body is not None else None
        if app_id != self.app_id or not isinstance(secret, str):
            return self._error(10003, 200, "invalid param")
        if not secrets.compare_digest(secret.encode(), self._secret.encode()):
            return self._error(10014, 200, "app secret invalid")
        current = self._latest
        left = self._left(current)
        if left is not None and left >= _NEW_TOKEN_WITHIN:  # the same token, with what it has left
            answer = {"code": 0, "msg": "ok", "tenant_access_token": current, "expire": math.floor(left)}
            return self._json(200, answer, self._logid())
        token = self._mint(self._lifetime)  # the old token stays valid until it expires
        answer = {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": math.ceil(self._lifetime)}
        return self._json(200, answer, self._logid())

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        status = self._token_status(_bearer(request))
        if status == "missing":
            return self._error(99991661, self._token_status_code, "Need a token")
        if status != "valid":
            message = "Invalid access token for authorization. Please make a request with token attached."
            details = f"Refer to the documentation to fix the error: {_HELP}how-to-fix-99991663-error"
            return self._error(99991663, self._token_status_code, message, details=details)
        if request.url.params.get("receive_id_type") not in _RECEIVE_ID_TYPES:
            return self._error(99992402, 400, "field validation failed", details="receive_id_type is invalid")
        payload = _json_object(request.content)
        if payload is None:
            return self._error(99992402, 400, "field validation failed", details="the body is not a JSON object")
        receive_id = payload.get("receive_id")
        if not isinstance(receive_id, str) or not receive_id:
            return self._error(230001, 400, self._SPECS["fatal"].message)
        if not all(isinstance(payload.get(k), str) and payload[k] for k in ("msg_type", "content")):
            return self._error(99992402, 400, "field validation failed", details="msg_type and content are required")
        now = self._clock()
        uuid = payload.get("uuid")
        if isinstance(uuid, str) and uuid:
            seen = self._uuids.get(uuid)
            if seen is not None and now < seen[0]:
                return self._json(200, seen[1], self._logid())  # the same uuid within the hour: sent once
        self._sent.append(payload)
        data = {
            "message_id": f"om_{secrets.token_hex(16)}",
            "msg_type": payload["msg_type"],
            "create_time": str(int(time.time() * 1000)),
            "chat_id": f"oc_{secrets.token_hex(16)}",
            "body": {"content": payload["content"]},
        }
        answer = {"code": 0, "msg": "success", "data": data}
        if isinstance(uuid, str) and uuid:
            self._uuids[uuid] = (now + _UUID_WINDOW, answer)
        return self._json(200, answer, self._logid())
