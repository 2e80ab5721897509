"""The fake of DingTalk: the old API (oapi.dingtalk.com) and the new one (api.dingtalk.com/v1.0)."""

from __future__ import annotations

import hashlib
import math
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Unpack

import httpx

from .._token import Token
from ._platform import ErrorMore, FakePlatform, Route, _fault_codes, _json_object, _json_response, _Spec

_OLD_TOKEN = "/gettoken"
_OLD_SEND = "/topapi/message/corpconversation/asyncsend_v2"
_V1_TOKEN = "/v1.0/oauth2/accessToken"
_V1_SEND = "/v1.0/robot/oToMessages/batchSend"
_V1_PREFIX = "/v1.0/"


class FakeDingTalk(FakePlatform):
    """DingTalk, both APIs on one fake (one app, one token: a DingTalk app token works on both).

    The old API (``oapi.dingtalk.com``, policy ``"dingtalk"``): ``GET /gettoken?appkey=&appsecret=``
    and ``POST /topapi/message/corpconversation/asyncsend_v2?access_token=``. Errors come with
    HTTP 200 and ``errcode``/``errmsg``; the topapi gateway reports token and permission problems
    as errcode 88 with a string ``sub_code`` (``"40014"``: invalid or expired token, ``"40000"``:
    no token, ``"60011"``: no permission) and a ``request_id``. gettoken: 40035 without appkey,
    40089 for a wrong appkey or appsecret. Sends: 40035 without ``agent_id`` or recipients.

    The new API (``api.dingtalk.com``, policy ``"dingtalk_v1"``): ``POST /v1.0/oauth2/accessToken``
    (``{"appKey", "appSecret"}``) and ``POST /v1.0/robot/oToMessages/batchSend`` with the token in
    ``x-acs-dingtalk-access-token``. Errors come with HTTP 4xx/5xx and a string ``code``,
    ``message`` and ``requestid``: 400 ``InvalidAuthentication`` for an invalid or expired token,
    400 ``AuthenticationFailed.MissingParameter`` without one, 400 ``invalidClientIdOrSecret``
    from the token endpoint, 400 ``invalidParameter.robotCode.empty``/``.userIds.empty``/
    ``.msgKey.empty`` for a send that lacks them.

    Both token endpoints return the app's current token while it is valid and extend its
    lifetime (DingTalk: "repeated calls within the validity period return the same token and
    renew it"), and a new one once it expired. A fault answers in the shape of the API whose
    path the request took: :attr:`FAULT_CODES` for the old API, :attr:`FAULT_CODES_V1` (strings)
    for the new one.
    """

    platform: ClassVar[str] = "dingtalk"
    BASE_URL: ClassVar[str] = "https://oapi.dingtalk.com"
    V1_PLATFORM: ClassVar[str] = "dingtalk_v1"
    """The policy of the new API (``load_policy(FakeDingTalk.V1_PLATFORM)``)."""
    V1_BASE_URL: ClassVar[str] = "https://api.dingtalk.com"
    """The new API's base URL (``MockTransport`` ignores the host: paths tell the APIs apart)."""
    _SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec(-1, 200, "系统繁忙"),
        "rate_limited": _Spec(90018, 200, "当前企业应用调用该接口超过每秒调用次数限制"),
        "user_action": _Spec(88, 200, "没有调用该接口的权限", subcode=60011),
        "fatal": _Spec(33012, 200, "无效的USERID"),
    }
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = _fault_codes(_SPECS, token_expired=88)
    """The old API's codes (errcode; the token expiry and the user-action code are 88 with
    sub_code 40014 and 60011)."""
    _V1_SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec("serviceBusy", 503, "服务繁忙，请稍后重试"),  # noqa: RUF001 - DingTalk's own punctuation
        "rate_limited": _Spec("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", 403, "应用调用该接口的QPS超过限制"),
        "user_action": _Spec(
            "Forbidden.AccessDenied.AccessTokenPermissionDenied",
            403,
            "没有调用该接口的权限，请在开发者后台申请权限",  # noqa: RUF001 - DingTalk's own punctuation
        ),
        "fatal": _Spec("invalidParameter.userIds.empty", 400, "userIds不能为空"),
    }
    FAULT_CODES_V1: ClassVar[Mapping[str, int | str]] = _fault_codes(_V1_SPECS, token_expired="InvalidAuthentication")
    """The new API's codes (strings, with HTTP 4xx/5xx)."""

    def __init__(
        self,
        appkey: str = "dingfake0000000000",
        appsecret: str = "fake-appsecret",
        *,
        agent_id: int = 3000000001,
        robot_code: str = "dingfake0000000000",
        token_lifetime: float = 7200.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, clock=clock)
        self.appkey = appkey
        self._secret = appsecret
        self.agent_id = agent_id
        self.robot_code = robot_code
        self._v1 = False  # the API of the request being answered (set under the lock by _route)

    def token_hook(self, *, legacy: bool = False) -> Callable[[], Token]:
        """A token hook: ``POST /v1.0/oauth2/accessToken`` (default) or, with ``legacy=True``,
        ``GET /gettoken``. Either token works on both APIs."""

        def hook() -> Token:
            if legacy:
                params = {"appkey": self.appkey, "appsecret": self._secret}
                request = httpx.Request("GET", f"{self.BASE_URL}{_OLD_TOKEN}", params=params)
                what = "FakeDingTalk gettoken"
                return self._fetch_token(request, "access_token", "expires_in", what=what, code="errcode")
            body = {"appKey": self.appkey, "appSecret": self._secret}
            response = self(httpx.Request("POST", f"{self.V1_BASE_URL}{_V1_TOKEN}", json=body))
            answer = response.json()
            if response.status_code != 200:
                raise RuntimeError(
                    f"FakeDingTalk accessToken answered HTTP {response.status_code} {answer.get('code')}"
                )
            return Token(answer["accessToken"], expires_in=float(answer["expireIn"]))

        return hook

    # -- tokens ----------------------------------------------------------------------------

    def _new_token_value(self) -> str:
        return secrets.token_hex(16)

    def _current_or_new(self) -> tuple[str, int]:
        """The app's token: the current one, its lifetime extended, or a new one."""
        current = self._latest
        if current is not None and self._left(current) is not None:
            self._tokens[current].expires_at = self._clock() + self._lifetime
            return current, math.ceil(self._lifetime)
        return self._mint(self._lifetime), math.ceil(self._lifetime)

    # -- wire shapes -----------------------------------------------------------------------

    def _json(self, status: int, body: Mapping[str, Any]) -> httpx.Response:
        return _json_response(status, body, {"content-type": "application/json;charset=utf-8"})

    def _request_id(self) -> str:
        n = self._serial
        return "".join("abcdefghijklmnopqrstuvwxyz0123456789"[(n * 7919 + i * 104729) % 36] for i in range(12))

    def _old_error(
        self, code: int | str, message: str, *, subcode: int | str | None = None, status: int = 200
    ) -> httpx.Response:
        body: dict[str, Any] = {"errcode": code}
        if subcode is not None:  # the topapi gateway: the reason is in sub_code / sub_msg
            body.update(sub_code=str(subcode), sub_msg=message)
            body["errmsg"] = f"ding talk error[subcode={subcode},submsg={message}]"
        else:
            body["errmsg"] = message
        body["request_id"] = self._request_id()
        return self._json(status, body)

    def _v1_error(self, code: int | str, status: int, message: str) -> httpx.Response:
        requestid = str(uuid.UUID(bytes=hashlib.md5(f"dingtalk-{self._serial}".encode()).digest())).upper()
        return self._json(status, {"code": code, "requestid": requestid, "message": message})

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        if self._v1:
            response = self._v1_error(code, status, message)
        else:
            response = self._old_error(code, message, subcode=more.get("subcode"), status=status)
        for key, value in (more.get("headers") or {}).items():
            response.headers[key] = value
        return response

    def _spec_error(
        self, kind: str, code: int | str | None = None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        spec = (self._V1_SPECS if self._v1 else self._SPECS)[kind]
        if code is not None and code != spec.code:
            text = f"error {code} injected by retrypolicy.testing"
            spec = _Spec(code, spec.status, text)
        return self._error(spec.code, spec.status, spec.message, subcode=spec.subcode, headers=headers)

    # -- routes ----------------------------------------------------------------------------

    def _route(self, request: httpx.Request) -> Route:
        path, method = request.url.path, request.method
        self._v1 = path.startswith(_V1_PREFIX)
        if (method, path) in (("GET", _OLD_TOKEN), ("POST", _V1_TOKEN)):
            return "token"
        if method == "POST" and path in (_OLD_SEND, _V1_SEND):
            return "api"
        return None

    def _handle_token(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == _V1_TOKEN:
            body = _json_object(request.content) or {}
            key, secret = body.get("appKey"), body.get("appSecret")
            if not isinstance(key, str) or not isinstance(secret, str) or not self._matches(key, secret):
                return self._v1_error("invalidClientIdOrSecret", 400, "无效的clientId或者clientSecret")
            token, seconds = self._current_or_new()
            return self._json(200, {"accessToken": token, "expireIn": seconds})
        params = request.url.params
        key, secret = params.get("appkey"), params.get("appsecret")
        if not key or not secret:
            return self._old_error(40035, "缺少参数 corpid or appkey")
        if not self._matches(key, secret):
            return self._old_error(40089, "不合法的corpid或corpsecret")
        token, seconds = self._current_or_new()
        return self._json(200, {"errcode": 0, "access_token": token, "errmsg": "ok", "expires_in": seconds})

    def _matches(self, key: str, secret: str) -> bool:
        return key == self.appkey and secrets.compare_digest(secret.encode(), self._secret.encode())

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == _V1_SEND:
            return self._v1_send(request)
        status = self._token_status(request.url.params.get("access_token"))
        if status == "missing":
            return self._old_error(88, "access_token is blank", subcode=40000)
        if status != "valid":
            return self._old_error(88, "不合法的access_token", subcode=40014)
        payload = _json_object(request.content)
        if payload is None:
            return self._old_error(40035, "缺少参数 json body")
        agent_id = payload.get("agent_id")
        if isinstance(agent_id, bool) or not isinstance(agent_id, (int, str)) or str(agent_id) != str(self.agent_id):
            return self._old_error(40035, "缺少参数 agent_id")
        if not payload.get("userid_list") and not payload.get("dept_id_list") and not payload.get("to_all_user"):
            return self._old_error(40035, "缺少参数 userid_list, dept_id_list or to_all_user")
        msg = payload.get("msg")
        if not isinstance(msg, dict) or not isinstance(msg.get("msgtype"), str):
            return self._old_error(40035, "缺少参数 msg")
        self._sent.append(payload)
        task_id = 256_000_000_000 + self._serial
        return self._json(200, {"errcode": 0, "errmsg": "ok", "task_id": task_id, "request_id": self._request_id()})

    def _v1_send(self, request: httpx.Request) -> httpx.Response:
        status = self._token_status(request.headers.get("x-acs-dingtalk-access-token"))
        if status == "missing":
            message = "缺少参数：x-acs-dingtalk-access-token"  # noqa: RUF001 - DingTalk's own punctuation
            return self._v1_error("AuthenticationFailed.MissingParameter", 400, message)
        if status != "valid":
            return self._v1_error("InvalidAuthentication", 400, "不合法的access_token")
        payload = _json_object(request.content) or {}
        if not isinstance(payload.get("robotCode"), str) or payload["robotCode"] != self.robot_code:
            return self._v1_error("invalidParameter.robotCode.empty", 400, "robotCode不能为空或无效")
        users = payload.get("userIds")
        if not isinstance(users, list) or not users:
            return self._v1_error("invalidParameter.userIds.empty", 400, "userIds不能为空")
        if not isinstance(payload.get("msgKey"), str) or not payload["msgKey"]:
            return self._v1_error("invalidParameter.msgKey.empty", 400, "缺少msgKey")
        self._sent.append(payload)
        key = secrets.token_urlsafe(24)
        return self._json(200, {"processQueryKey": key, "invalidStaffIdList": [], "flowControlledStaffIdList": []})
