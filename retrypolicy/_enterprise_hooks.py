"""Token hooks of the enterprise chat platforms: WeCom, Feishu/Lark and DingTalk.

Import them from :mod:`retrypolicy.hooks`, which re-exports these names (this module builds on
``_hookbase._HTTPTokenHook``). They behave like the other HTTP hooks there: one
token endpoint call per ``hook()`` / ``await hook.acall()``, errors of the token endpoint
classified by the platform's own table and raised as :class:`~retrypolicy.hooks.HookError`,
secrets never in a repr, message or log record.

Each hook has non-secret attributes that name its app in a token store (see
``retrypolicy._store.store_key``): ``corpid`` and ``agent`` (WeCom), ``app_id`` (Feishu),
``appkey`` (DingTalk).
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar

import httpx

from ._errors import ConfigurationError
from ._hookbase import _check_secret, _HTTPTokenHook, _redact_httpx_logs, _token_field
from ._load import load_policy
from ._redact import redact_url
from ._token import Token

__all__ = ["DingTalkTokenHook", "FeishuTenantToken", "WeComTokenHook"]


def _check_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ConfigurationError(f"{name} must be a non-empty str without spaces, got {value!r}")
    return value


def _host(flag_name: str, flag: object, base_url: str | None, if_set: str, if_not: str) -> str:
    """The base URL of a hook whose boolean ``flag`` picks one of two hosts (``base_url`` overrides)."""
    if not isinstance(flag, bool):
        raise ConfigurationError(f"{flag_name} must be True or False, got {flag!r}")
    return base_url if base_url is not None else (if_set if flag else if_not)


def _app_fingerprint(platform: str, owner: str, secret: str) -> str:
    """A stable name for the app a secret belongs to, from which the secret cannot be recovered:
    16 hex digits of a SHA-256 over the platform, the owner and the secret."""
    digest = hashlib.sha256(f"retrypolicy:{platform}:{owner}\0{secret}".encode()).hexdigest()
    return f"secret-{digest[:16]}"


class WeComTokenHook(_HTTPTokenHook):
    """Gets a WeCom (企业微信) access_token: ``GET /cgi-bin/gettoken?corpid=&corpsecret=``.

    WeCom issues one token per app secret (each app, the contacts sync and Customer Contact have
    their own), and a token works only for its app. So two apps of one corp must not share a
    token: in a token store the hook is keyed by ``corpid`` and ``agent``, which is
    ``agentid`` when you give it (``WeComTokenHook(corpid, secret, agentid=1000002)``) and
    otherwise a fingerprint of the secret (``secret-`` and 16 hex digits of a SHA-256 over the
    corpid and the secret), never the secret itself. Give ``agentid`` to keep the key when the
    secret is reset.

    The secret travels in the query string, so httpx's own log records of the call are
    redacted. Errors are classified with the ``wecom`` table: 40001 (wrong or reset secret,
    disabled app: user-action), 40013 (wrong corpid: fatal), 45009 (called too often:
    retryable with a cooldown, not retried by the hook), -1 (busy: retried within
    ``token_timeout`` when a transport calls the hook).
    """

    platform: ClassVar[str] = "wecom"

    def __init__(
        self,
        corpid: str,
        corpsecret: str,
        *,
        agentid: int | None = None,
        base_url: str = "https://qyapi.weixin.qq.com",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.corpid = _check_id("corpid", corpid)
        self._corpsecret = _check_secret("corpsecret", corpsecret)
        if agentid is not None and (isinstance(agentid, bool) or not isinstance(agentid, int) or agentid < 0):
            raise ConfigurationError(f"agentid must be a non-negative int (the app's AgentId), got {agentid!r}")
        super().__init__(base_url, timeout=timeout, transport=transport, async_transport=async_transport)
        self.agentid = agentid
        self.agent = str(agentid) if agentid is not None else _app_fingerprint("wecom", corpid, corpsecret)
        """The app within the corp, as a token store names it: the agentid, or a fingerprint of the secret."""
        _redact_httpx_logs()

    def __repr__(self) -> str:
        return f"WeComTokenHook(corpid={self.corpid!r}, agent={self.agent!r}, base_url={redact_url(self._base_url)!r})"

    def _secrets(self) -> tuple[str, ...]:
        return (self._corpsecret,)

    def _what(self) -> str:
        return f"the gettoken endpoint for corpid {self.corpid} (app {self.agent})"

    def _build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        params = {"corpid": self.corpid, "corpsecret": self._corpsecret}
        return client.build_request("GET", f"{self._base_url}/cgi-bin/gettoken", params=params)

    def _token_from(self, body: dict[str, Any]) -> Token | str:
        return _token_field(body, "access_token", "expires_in")


class FeishuTenantToken(_HTTPTokenHook):
    """Gets a Feishu / Lark tenant_access_token for a self-built app:
    ``POST /open-apis/auth/v3/tenant_access_token/internal`` with ``app_id`` and ``app_secret``.

    ``lark=True`` uses Lark's host (``https://open.larksuite.com``) instead of Feishu's
    (``https://open.feishu.cn``); ``base_url`` overrides both. The token's lifetime is the
    ``expire`` Feishu returns, which is what the token has left: Feishu returns the current token
    until less than 30 minutes remain, then a new one while the old one stays valid until it
    expires. The transport renews a token before it expires (5 minutes before, for a 2-hour
    token), which falls in those 30 minutes, so it gets a new token, and requests still carrying
    the old one do not fail meanwhile. Renewing after a 99991663 more than 30 minutes before
    expiry returns the same token: the transport then stops with
    :class:`~retrypolicy.TokenRefreshFailed` rather than resend it.

    Errors are classified with the ``feishu`` table: 10003 (wrong app_id, or app not
    published: fatal), 10014/10015 (wrong secret, disabled app: user-action).
    """

    platform: ClassVar[str] = "feishu"
    FEISHU: ClassVar[str] = "https://open.feishu.cn"
    LARK: ClassVar[str] = "https://open.larksuite.com"
    _PATH: ClassVar[str] = "/open-apis/auth/v3/tenant_access_token/internal"

    def __init__(
        self,
        app_id: str,
        app_secret: str,
        *,
        lark: bool = False,
        base_url: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.app_id = _check_id("app_id", app_id)
        self._app_secret = _check_secret("app_secret", app_secret)
        base = _host("lark", lark, base_url, self.LARK, self.FEISHU)
        super().__init__(base, timeout=timeout, transport=transport, async_transport=async_transport)
        self.lark = lark

    def __repr__(self) -> str:
        return f"FeishuTenantToken(app_id={self.app_id!r}, base_url={redact_url(self._base_url)!r})"

    def _secrets(self) -> tuple[str, ...]:
        return (self._app_secret,)

    def _what(self) -> str:
        return f"the tenant_access_token endpoint for app_id {self.app_id}"

    def _build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        body = {"app_id": self.app_id, "app_secret": self._app_secret}
        return client.build_request("POST", f"{self._base_url}{self._PATH}", json=body)

    def _token_from(self, body: dict[str, Any]) -> Token | str:
        return _token_field(body, "tenant_access_token", "expire")


class DingTalkTokenHook(_HTTPTokenHook):
    """Gets a DingTalk app access token from its AppKey and AppSecret.

    By default from the new API, ``POST https://api.dingtalk.com/v1.0/oauth2/accessToken``
    (``{"appKey", "appSecret"}``); with ``legacy=True`` from the old one, ``GET
    https://oapi.dingtalk.com/gettoken?appkey=&appsecret=`` (its URLs are redacted in httpx's log
    records). Either token works on both APIs: use one hook for ``policy="dingtalk"``
    (``oapi.dingtalk.com``, token in the ``access_token`` query parameter) and
    ``"dingtalk_v1"`` (``api.dingtalk.com``, token in ``x-acs-dingtalk-access-token``).
    ``base_url`` overrides the host (e.g. ``https://api.dingtalk.io``, the international edition).
    DingTalk returns the current token while it is valid (and extends it), so processes of one
    app renewing at once all get the same token.

    Errors are classified with the table of the endpoint's API: ``dingtalk_v1`` for the new one
    (400 ``invalidClientIdOrSecret``: user-action), ``dingtalk`` for the old one (40089: wrong
    AppKey or AppSecret, user-action).
    """

    platform: ClassVar[str] = "dingtalk"
    NEW: ClassVar[str] = "https://api.dingtalk.com"
    OLD: ClassVar[str] = "https://oapi.dingtalk.com"

    def __init__(
        self,
        appkey: str,
        appsecret: str,
        *,
        legacy: bool = False,
        base_url: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.appkey = _check_id("appkey", appkey)
        self._appsecret = _check_secret("appsecret", appsecret)
        base = _host("legacy", legacy, base_url, self.OLD, self.NEW)
        super().__init__(base, timeout=timeout, transport=transport, async_transport=async_transport)
        self.legacy = legacy
        if not legacy:
            self._policy = load_policy("dingtalk_v1")  # the new API's string codes and HTTP statuses
        else:
            _redact_httpx_logs()

    def __repr__(self) -> str:
        return (
            f"DingTalkTokenHook(appkey={self.appkey!r}, base_url={redact_url(self._base_url)!r}, "
            f"legacy={self.legacy!r})"
        )

    def _secrets(self) -> tuple[str, ...]:
        return (self._appsecret,)

    def _what(self) -> str:
        endpoint = "gettoken" if self.legacy else "oauth2/accessToken"
        return f"the {endpoint} endpoint for appkey {self.appkey}"

    def _build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        if self.legacy:
            params = {"appkey": self.appkey, "appsecret": self._appsecret}
            return client.build_request("GET", f"{self._base_url}/gettoken", params=params)
        body = {"appKey": self.appkey, "appSecret": self._appsecret}
        return client.build_request("POST", f"{self._base_url}/v1.0/oauth2/accessToken", json=body)

    def _token_from(self, body: dict[str, Any]) -> Token | str:
        if self.legacy:
            return _token_field(body, "access_token", "expires_in")
        return _token_field(body, "accessToken", "expireIn")
