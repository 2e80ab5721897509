"""The fake of WeCom (企业微信, WeChat Work): gettoken and application messages."""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Unpack

import httpx

from .._token import Token
from ._platform import ErrorMore, FakePlatform, Route, _fault_codes, _json_object, _json_response, _Spec

_MORE_INFO = "https://open.work.weixin.qq.com/devtool/query?e="


class FakeWeCom(FakePlatform):
    """WeCom server API: ``GET /cgi-bin/gettoken`` and ``POST /cgi-bin/message/send``.

    ``corpid``/``corpsecret`` are what gettoken accepts for the app ``agentid``;
    :meth:`add_app` adds more apps of the same corp, each with its own secret. As on WeCom, each
    app has its own token: gettoken returns the app's current token while it is valid (asking
    again does not invalidate it) and a new one once it expired, and a token sends only for its
    own app (301002 when the message's ``agentid`` names another app). Errors come with HTTP 200,
    ``errcode`` and an ``errmsg`` ending in ``hint: [<id>], from ip: ..., more info at ...`` (the
    hint is the request id), echoed in the ``Error-Code``/``Error-Msg`` headers; an unknown path
    answers 404 with an empty body.

    gettoken: 41002 without corpid, 41004 without corpsecret, 40013 for a wrong corpid, 40001 for
    a wrong secret. Sends: 41001 without a token, 40014 for an unknown one, 42001 for an expired
    one; 40058 for a body that is not JSON, 40056 for a wrong ``agentid``, 82001 without
    ``touser``/``toparty``/``totag``, 40008 without ``msgtype``. A send with
    ``"enable_duplicate_check": 1`` that repeats one accepted within ``duplicate_check_interval``
    (1800 s by default) answers like the first and is not delivered again, as on WeCom.
    """

    platform: ClassVar[str] = "wecom"
    BASE_URL: ClassVar[str] = "https://qyapi.weixin.qq.com"
    _SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec(-1, 200, "system busy"),
        "rate_limited": _Spec(45009, 200, "api freq out of limit"),
        "user_action": _Spec(60020, 200, "not allow to access from your ip"),
        "fatal": _Spec(81013, 200, "user & party & tag all invalid"),
    }
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = _fault_codes(_SPECS, token_expired=42001)
    _SEND = "/cgi-bin/message/send"

    def __init__(
        self,
        corpid: str = "ww0000000000fake",
        corpsecret: str = "fake-corpsecret",
        agentid: int = 1000002,
        *,
        token_lifetime: float = 7200.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_lifetime=token_lifetime, clock=clock)
        self.corpid = corpid
        self.agentid = agentid
        self._apps: dict[int, str] = {}  # agentid -> secret
        self._current: dict[int, str] = {}  # agentid -> its latest token
        self._owner: dict[str, int] = {}  # token -> agentid
        self._minting_for = agentid
        self._recent: dict[str, tuple[float, dict[str, Any]]] = {}  # duplicate check: body -> (until, answer)
        self.add_app(agentid, corpsecret)

    def add_app(self, agentid: int, corpsecret: str) -> None:
        """Another app of this corp, with its own secret (and so its own tokens)."""
        if isinstance(agentid, bool) or not isinstance(agentid, int):
            raise TypeError(f"agentid must be an int, got {agentid!r}")
        if not isinstance(corpsecret, str) or not corpsecret:
            raise ValueError("corpsecret must be a non-empty str")
        with self._lock:
            self._apps[agentid] = corpsecret

    def token_hook(self, agentid: int | None = None) -> Callable[[], Token]:
        """A token hook calling ``GET /cgi-bin/gettoken`` with the secret of app ``agentid``
        (default: the first app)."""
        app = self.agentid if agentid is None else agentid
        with self._lock:
            secret = self._apps[app]

        def hook() -> Token:
            params = {"corpid": self.corpid, "corpsecret": secret}
            request = httpx.Request("GET", f"{self.BASE_URL}/cgi-bin/gettoken", params=params)
            return self._fetch_token(request, "access_token", "expires_in", what="FakeWeCom gettoken", code="errcode")

        return hook

    # -- tokens ----------------------------------------------------------------------------

    def _new_token_value(self) -> str:
        return secrets.token_urlsafe(150)[:200]

    def _mint(self, lifetime: float) -> str:
        value = super()._mint(lifetime)
        self._owner[value] = self._minting_for
        self._current[self._minting_for] = value
        return value

    # -- wire shapes -----------------------------------------------------------------------

    def _hint(self) -> str:
        n = self._serial
        return f"{1_700_000_000 + n}{(n * 2_654_435_761) % 10**15:015d}"

    def _json(
        self, body: Mapping[str, Any], headers: Mapping[str, str] | None = None, status: int = 200
    ) -> httpx.Response:
        return _json_response(status, body, {"content-type": "application/json; charset=UTF-8", **(headers or {})})

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        errmsg = f"{message}, hint: [{self._hint()}], from ip: 127.0.0.1, more info at {_MORE_INFO}{code}"
        headers = {"Error-Code": str(code), "Error-Msg": errmsg, **(more.get("headers") or {})}
        return self._json({"errcode": code, "errmsg": errmsg}, headers, status)

    def _respond(self, request: httpx.Request) -> httpx.Response | None:
        response = super()._respond(request)
        if response is not None and response.status_code == 404 and response.content == b"404 Not Found":
            return httpx.Response(404, content=b"")  # WeCom answers an unknown path with no body at all
        return response

    # -- routes ----------------------------------------------------------------------------

    def _route(self, request: httpx.Request) -> Route:
        path, method = request.url.path, request.method
        if (method, path) == ("GET", "/cgi-bin/gettoken"):
            return "token"
        if (method, path) == ("POST", self._SEND):
            return "api"
        return None

    def _handle_token(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        corpid, secret = params.get("corpid"), params.get("corpsecret")
        if not secret:
            return self._error(41004, 200, "corpsecret missing")
        if not corpid:
            return self._error(41002, 200, "corpid missing")
        if corpid != self.corpid:
            return self._error(40013, 200, "invalid corpid")
        given = secret.encode()
        app = next((a for a, s in self._apps.items() if secrets.compare_digest(s.encode(), given)), None)
        if app is None:
            return self._error(40001, 200, "invalid credential")
        current = self._current.get(app)
        left = self._left(current)
        if left is not None:
            remaining = max(1, math.ceil(left))
            return self._json({"errcode": 0, "errmsg": "ok", "access_token": current, "expires_in": remaining})
        self._minting_for = app
        try:
            token = self._mint(self._lifetime)
        finally:
            self._minting_for = self.agentid
        return self._json(
            {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": math.ceil(self._lifetime)}
        )

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("access_token")
        status = self._token_status(token)
        if status == "missing":
            return self._error(41001, 200, "access_token missing")
        if status in ("unknown", "revoked"):
            return self._error(40014, 200, "invalid access_token")
        if status == "expired":
            return self._error(42001, 200, "access_token expired")
        assert token is not None
        payload = _json_object(request.content)
        if payload is None:
            return self._error(40058, 200, "Warning: wrong json format. invalid parameter")
        agentid = payload.get("agentid")
        if isinstance(agentid, str) and agentid.isdigit():
            agentid = int(agentid)
        if isinstance(agentid, bool) or not isinstance(agentid, int) or agentid not in self._apps:
            return self._error(40056, 200, "invalid agentid")
        if agentid != self._owner.get(token):
            return self._error(301002, 200, "not allow to operate another agent")
        if not any(isinstance(payload.get(k), str) and payload[k] for k in ("touser", "toparty", "totag")):
            return self._error(82001, 200, "All touser & toparty & totag invalid")
        if not isinstance(payload.get("msgtype"), str) or not payload["msgtype"]:
            return self._error(40008, 200, "invalid message type")
        key = json.dumps(payload, sort_keys=True)
        now = self._clock()
        if payload.get("enable_duplicate_check") in (1, "1", True):
            seen = self._recent.get(key)
            if seen is not None and now < seen[0]:
                return self._json(seen[1])  # the same message within the interval: not delivered again
        self._sent.append(payload)
        answer = {
            "errcode": 0,
            "errmsg": "ok",
            "invaliduser": "",
            "invalidparty": "",
            "invalidtag": "",
            "unlicenseduser": "",
            "msgid": secrets.token_urlsafe(24),
            "response_code": secrets.token_urlsafe(32),
        }
        interval = payload.get("duplicate_check_interval", 1800)
        if isinstance(interval, (int, float)) and not isinstance(interval, bool):
            self._recent[key] = (now + max(0.0, min(float(interval), 4 * 3600.0)), answer)
        return self._json(answer)
