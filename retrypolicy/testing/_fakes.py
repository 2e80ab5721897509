"""The fakes of the four platforms of the first tables: WeChat, Tencent Cloud Chat, WhatsApp on-prem and Cloud."""

from __future__ import annotations

import base64
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Unpack

import httpx

from .._token import Token
from ._platform import (
    ErrorMore,
    FakePlatform,
    Route,
    _bearer,
    _fault_codes,
    _Issued,
    _json_object,
    _json_response,
    _Spec,
)

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
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = _fault_codes(_SPECS, token_expired=42001)
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
            request = httpx.Request("POST", f"{self.BASE_URL}/cgi-bin/stable_token", json=body)
            what = "FakeWeChat stable_token"
            return self._fetch_token(request, "access_token", "expires_in", what=what, code="errcode")

        return hook

    def _new_token_value(self) -> str:
        return f"{86 + self._serial % 10}_{secrets.token_urlsafe(96)}"

    def _json(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> httpx.Response:
        every = self._plain_text_every
        ctype = "text/plain" if every and self._serial % every == 0 else "application/json; encoding=utf-8"
        return _json_response(status, body, {"content-type": ctype, **(headers or {})})

    def _rid(self) -> str:
        n = self._serial
        return f"{0x65F00000 + n:08x}-{(n * 0x9E3779B1) & 0xFFFFFFFF:08x}-{(n * 0x85EBCA6B) & 0xFFFFFFFF:08x}"

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        return self._json(status, {"errcode": code, "errmsg": f"{message} rid: {self._rid()}"}, more.get("headers"))

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
        left = None if force else self._left(self._latest)
        if left is not None:
            return self._json(200, {"access_token": self._latest, "expires_in": max(1, math.ceil(left))})
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
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = _fault_codes(_SPECS, token_expired=70001)

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

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        body = {"ActionStatus": "FAIL", "ErrorInfo": message, "ErrorCode": code}
        return httpx.Response(status, json=body, headers=more.get("headers"))

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
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = _fault_codes(_SPECS, token_expired=1005)

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

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        error = {"code": code, "title": message, "details": more.get("details") or message}
        return httpx.Response(status, json={"errors": [error], "meta": self._meta}, headers=more.get("headers"))

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
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = _fault_codes(_SPECS, token_expired=190)

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

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        error: dict[str, Any] = {"message": message, "type": more.get("kind", "OAuthException"), "code": code}
        if more.get("subcode") is not None:
            error["error_subcode"] = more["subcode"]
        error["is_transient"] = more.get("transient", False)
        if more.get("details") is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": more["details"]}
        error["fbtrace_id"] = "A" + base64.urlsafe_b64encode(self._serial.to_bytes(16, "big")).decode()[:22]
        return httpx.Response(status, json={"error": error}, headers=more.get("headers"))

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
