"""Built-in token hooks: WeChat access_token, Tencent Cloud Chat UserSig, WhatsApp on-premises login.

Each hook is a small object that a transport calls when it needs a credential::

    from retrypolicy import RetryTransport
    from retrypolicy.hooks import WeChatTokenHook

    hook = WeChatTokenHook("wx0123456789abcdef", appsecret_from_your_vault)
    client = httpx.Client(transport=RetryTransport("wechat", token=hook))
    ...
    client.close()
    hook.close()

* ``hook()`` is the synchronous call (used by :class:`~retrypolicy.RetryTransport`, through an
  internal :class:`httpx.Client`); ``await hook.acall()`` is the asynchronous one (used by
  :class:`~retrypolicy.AsyncRetryTransport`, through an internal :class:`httpx.AsyncClient`).
  Both return a :class:`~retrypolicy.Token` with the lifetime the platform announced.
* The hooks' own HTTP clients never go through a retrying transport. Called by a transport, a
  hook retries a transient failure of its token endpoint (a connection error or timeout, an
  HTTP 5xx, a busy code such as WeChat's ``-1``: what the platform's table calls retryable,
  without a cooldown) with jittered exponential backoff (0.1 s doubling up to 2 s) until the
  transport's ``token_timeout`` would pass, each call's own timeout cut to the time left. Any
  other failure, or the last one, raises :class:`HookError` (saying how many calls were made);
  the transport turns it into :class:`~retrypolicy.TokenRefreshFailed`, and the next request
  calls the hook again. Called directly (``hook()``, ``await hook.acall()``), a hook makes one
  request and does not retry. Pass ``transport=`` / ``async_transport=`` (e.g.
  :class:`httpx.MockTransport`) to replace the network in tests; passing a RetryTransport there
  is refused.
* The clients are created on first use. ``close()`` closes the sync client, ``aclose()`` both;
  a later call opens a new one. Hooks are also (async) context managers. Like any
  :class:`httpx.AsyncClient`, the async client belongs to the event loop that first used it.
* Secrets (AppSecret, password, SecretKey) and the credentials obtained never appear in a repr,
  an exception message or a log record: vendor text is scrubbed, URLs are redacted with
  :func:`retrypolicy.redact_url`, and a :class:`HookError` is raised with no chained exception
  (an httpx error's message or a JSON decoder's ``doc`` could otherwise carry them).
* A :class:`HookError` names the platform, the error code and its category from the platform's
  built-in policy table (``wechat``, ``tencent_im``, ``whatsapp_onprem``); ``.classification``
  holds the full verdict. Examples: ``wechat code 40125 [fatal]`` (wrong AppSecret),
  ``wechat code 40164 [user-action]`` (server IP not whitelisted, with what to do).

WhatsApp Cloud API has no built-in hook: its credential is a long-lived system-user access token
issued in Meta Business Manager, not something an endpoint hands out for a password. Write your
own hook, a function of no arguments returning the token (``str``) or a
:class:`~retrypolicy.Token` if you know its lifetime::

    def whatsapp_cloud_token() -> str:
        return my_secret_store.read("whatsapp/system-user-token")  # re-read on every call

    transport = RetryTransport("whatsapp_cloud", token=whatsapp_cloud_token)

    # a token with a known expiry (e.g. a 60-day user token):
    def expiring_token() -> Token:
        value, expires_at = my_secret_store.read_with_expiry("whatsapp/token")
        return Token(value, expires_in=expires_at - time.time())

For :class:`~retrypolicy.AsyncRetryTransport` the hook may be ``async def``. When Meta rejects the
token (code 190), the transport calls the hook once; if it returns the same token, the request
fails with :class:`~retrypolicy.TokenRefreshFailed` instead of resending, so rotate the token in
the store and the next request picks it up.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import time
import zlib
from collections.abc import Callable
from typing import Any, ClassVar

import httpx

from ._chat_hooks import SlackRotatingToken
from ._enterprise_hooks import DingTalkTokenHook, FeishuTenantToken, WeComTokenHook
from ._errors import ConfigurationError
from ._hookbase import (
    HookError,
    UserSigError,
    _check_secret,
    _describe_classified,
    _HTTPTokenHook,
    _positive,
    _redact_httpx_logs,
    _token_field,
)
from ._load import load_policy
from ._redact import redact_url
from ._token import Token

__all__ = [
    "DingTalkTokenHook",
    "FeishuTenantToken",
    "HookError",
    "SlackRotatingToken",
    "TencentUserSig",
    "UserSigError",
    "WeChatTokenHook",
    "WeComTokenHook",
    "WhatsAppOnPremLogin",
]


class WeChatTokenHook(_HTTPTokenHook):
    """Gets a WeChat Official Account access_token from the AppID and AppSecret.

    ``stable=True`` (default) uses ``POST /cgi-bin/stable_token``, which returns the *current*
    token while it is valid, so several processes sharing one AppID get the same token and do not
    invalidate each other's. It never sends ``force_refresh`` unless you set
    ``force_refresh=True``: a forced refresh invalidates the token every other process is using
    and is limited to a small daily quota (20 a day, 30 s apart), so a renewal loop in normal
    operation would knock out your other workers and then exhaust the quota (code 45009).
    ``stable=False`` uses the legacy ``GET /cgi-bin/token``, which issues a new token each call
    (invalidating the previous one after 5 minutes) and takes the AppSecret in the query string;
    its URLs are redacted wherever retrypolicy shows them, including httpx's own log records.

    Errors of the token endpoint are classified with the ``wechat`` table, e.g. 40013 (invalid
    AppID, fatal), 40125 (invalid AppSecret, fatal), 40164 (IP not whitelisted, user-action).
    """

    platform: ClassVar[str] = "wechat"

    def __init__(
        self,
        appid: str,
        appsecret: str,
        *,
        stable: bool = True,
        force_refresh: bool = False,
        base_url: str = "https://api.weixin.qq.com",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not isinstance(appid, str) or not appid.strip():
            raise ConfigurationError(f"appid must be a non-empty str, got {appid!r}")
        self._appsecret = _check_secret("appsecret", appsecret)
        if force_refresh and not stable:
            raise ConfigurationError("force_refresh applies to the stable_token endpoint only (stable=True)")
        super().__init__(base_url, timeout=timeout, transport=transport, async_transport=async_transport)
        self.appid = appid
        self.stable = bool(stable)
        self.force_refresh = bool(force_refresh)
        if not self.stable:
            _redact_httpx_logs()

    def __repr__(self) -> str:
        extra = ", force_refresh=True" if self.force_refresh else ""
        return (
            f"WeChatTokenHook(appid={self.appid!r}, base_url={redact_url(self._base_url)!r}, "
            f"stable={self.stable!r}{extra})"
        )

    def _secrets(self) -> tuple[str, ...]:
        return (self._appsecret,)

    def _what(self) -> str:
        endpoint = "stable_token" if self.stable else "token"
        return f"the {endpoint} endpoint for appid {self.appid}"

    def _build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        if self.stable:
            body: dict[str, Any] = {"grant_type": "client_credential", "appid": self.appid, "secret": self._appsecret}
            if self.force_refresh:
                body["force_refresh"] = True
            return client.build_request("POST", f"{self._base_url}/cgi-bin/stable_token", json=body)
        params = {"grant_type": "client_credential", "appid": self.appid, "secret": self._appsecret}
        return client.build_request("GET", f"{self._base_url}/cgi-bin/token", params=params)

    def _token_from(self, body: dict[str, Any]) -> Token | str:
        return _token_field(body, "access_token", "expires_in")


class WhatsAppOnPremLogin(_HTTPTokenHook):
    """Logs in to a WhatsApp Business API on-premises client for a bearer token.

    ``POST {base_url}/v1/users/login`` with HTTP basic auth; the response's
    ``users[0].token`` becomes the token and ``users[0].expires_after`` (e.g.
    ``2026-11-30 12:00:00+00:00``; UTC when it has no offset) its lifetime. An unparsable or past
    timestamp (clock skew) gives ``expires_in=None``: the token is then renewed only when the
    client rejects it. Errors are classified with the ``whatsapp_onprem`` table.
    ``clock`` is the wall clock (``time.time``), injectable for tests.
    """

    platform: ClassVar[str] = "whatsapp_onprem"

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(username, str) or not username:
            raise ConfigurationError(f"username must be a non-empty str, got {username!r}")
        self._password = _check_secret("password", password)
        self.username = username
        self._clock = clock
        super().__init__(base_url, timeout=timeout, transport=transport, async_transport=async_transport)

    def __repr__(self) -> str:
        return f"WhatsAppOnPremLogin(base_url={redact_url(self._base_url)!r}, username={self.username!r})"

    def _secrets(self) -> tuple[str, ...]:
        return (self._password,)

    def _what(self) -> str:
        return f"the login endpoint for user {self.username}"

    def _auth(self) -> httpx.Auth | None:
        return httpx.BasicAuth(self.username, self._password)

    def _build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        return client.build_request("POST", f"{self._base_url}/v1/users/login")

    def _token_from(self, body: dict[str, Any]) -> Token | str:
        users = body.get("users")
        user = users[0] if isinstance(users, list) and users else None
        if not isinstance(user, dict):
            return "no users[0] in the response"
        value = user.get("token")
        if not isinstance(value, str) or not value.strip():
            return "users[0].token is missing or not a non-empty string"
        return Token(value, expires_in=self._seconds_until(user.get("expires_after")))

    def _seconds_until(self, stamp: object) -> float | None:
        if not isinstance(stamp, str):
            return None
        try:
            when = dt.datetime.fromisoformat(stamp.strip())
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return _positive(when.timestamp() - self._clock())


# -- Tencent Cloud Chat UserSig ----------------------------------------------------------------

_SIG_ENCODE = str.maketrans({"+": "*", "/": "-", "=": "_"})
_SIG_DECODE = str.maketrans({"*": "+", "-": "/", "_": "="})
_MAX_SIG_JSON = 16384


class TencentUserSig:
    """Generates Tencent Cloud Chat UserSigs locally (no HTTP) from the SDKAppID and SecretKey.

    The algorithm is TLSSigAPIv2, and the output matches Tencent's ``tls-sig-api-v2`` libraries
    (``TLSSigAPIv2(sdkappid, key).genUserSig(identifier, expire)``) for the same second: a JSON
    document ``{"TLS.ver": "2.0", "TLS.identifier", "TLS.sdkappid", "TLS.expire", "TLS.time",
    "TLS.sig"}`` where ``TLS.sig`` is the base64 HMAC-SHA256, keyed with the SecretKey, of
    ``"TLS.identifier:<id>\\nTLS.sdkappid:<appid>\\nTLS.time:<t>\\nTLS.expire:<s>\\n"``; the document
    is zlib-compressed and base64-encoded with ``+ / =`` replaced by ``* - _``.

    Each call returns ``Token(sig, expires_in=expire)`` for ``identifier`` (the REST API's admin
    account by default). ``clock`` (``time.time`` by default) gives ``TLS.time``.
    """

    platform: ClassVar[str] = "tencent_im"

    def __init__(
        self,
        sdkappid: int,
        key: str,
        identifier: str = "administrator",
        *,
        expire: int = 86400 * 180,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(sdkappid, bool) or not isinstance(sdkappid, int) or sdkappid <= 0:
            raise ConfigurationError(f"sdkappid must be a positive int, got {sdkappid!r}")
        self._key = _check_secret("key", key)
        if not isinstance(identifier, str) or not identifier:
            raise ConfigurationError(f"identifier must be a non-empty str, got {identifier!r}")
        if isinstance(expire, bool) or not isinstance(expire, int) or expire <= 0:
            raise ConfigurationError(f"expire must be a positive number of seconds (int), got {expire!r}")
        self.sdkappid = sdkappid
        self.identifier = identifier
        self.expire = expire
        self._clock = clock
        self._policy = load_policy(self.platform)

    def __repr__(self) -> str:
        return f"TencentUserSig(sdkappid={self.sdkappid!r}, identifier={self.identifier!r}, expire={self.expire!r})"

    def _hmac(self, identifier: str, sdkappid: int, curr_time: int, expire: int, userbuf: str | None) -> str:
        content = f"TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{curr_time}\nTLS.expire:{expire}\n"
        if userbuf is not None:
            content += f"TLS.userbuf:{userbuf}\n"
        digest = hmac.new(self._key.encode(), content.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def generate(self, identifier: str | None = None, *, expire: int | None = None) -> str:
        """A UserSig for ``identifier`` (default: the hook's) valid ``expire`` seconds from now."""
        identifier = self.identifier if identifier is None else identifier
        expire = self.expire if expire is None else expire
        if not isinstance(identifier, str) or not identifier:
            raise ConfigurationError(f"identifier must be a non-empty str, got {identifier!r}")
        if isinstance(expire, bool) or not isinstance(expire, int) or expire <= 0:
            raise ConfigurationError(f"expire must be a positive number of seconds (int), got {expire!r}")
        # Two signatures made in the same second would be identical, and a renewal that returns the
        # rejected UserSig again is refused; so each new one is dated at least a second after the last.
        now = max(int(self._clock()), getattr(self, "_last_time", 0) + 1)
        self._last_time = now
        doc: dict[str, Any] = {
            "TLS.ver": "2.0",
            "TLS.identifier": identifier,
            "TLS.sdkappid": self.sdkappid,
            "TLS.expire": expire,
            "TLS.time": now,
        }
        doc["TLS.sig"] = self._hmac(identifier, self.sdkappid, now, expire, None)
        compressed = zlib.compress(json.dumps(doc).encode())
        return base64.b64encode(compressed).decode().translate(_SIG_ENCODE)

    def __call__(self) -> Token:
        return Token(self.generate(), expires_in=self.expire)

    async def acall(self) -> Token:
        return self()

    def close(self) -> None:
        """Nothing to release (no HTTP client); present for symmetry with the other hooks."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def _invalid(self, code: int, problem: str) -> UserSigError:
        c = self._policy.explain(code)
        text = _describe_classified(c, "UserSig verification", ()) + f" | {problem}"
        return UserSigError(text, platform=self.platform, classification=c)

    def verify(self, sig: str, *, identifier: str | None = None, check_expiry: bool = True) -> dict[str, Any]:
        """Decode a UserSig, check its HMAC with this hook's key and return the JSON document.

        Raises :class:`UserSigError` (a ``ValueError``) carrying the code a Tencent server would
        answer with: 70002 empty, 70003 malformed, 70014 SDKAppID mismatch, 70009 bad signature
        (another key, or tampered), 70013 ``identifier`` given and not the signed one, 70001
        expired (by ``clock``; skipped with ``check_expiry=False``). Messages never include the
        sig or the key.
        """
        if not isinstance(sig, str) or not sig:
            raise self._invalid(70002, "the UserSig is empty")
        doc = self._decode(sig)
        if doc is None:
            raise self._invalid(70003, "the UserSig is not base64/zlib/JSON as TLSSigAPIv2 makes it")
        fields = (doc.get(k) for k in ("TLS.sdkappid", "TLS.expire", "TLS.time"))
        sdkappid, expire, curr_time = (v if isinstance(v, int) and not isinstance(v, bool) else None for v in fields)
        signed_id, mac, userbuf = doc.get("TLS.identifier"), doc.get("TLS.sig"), doc.get("TLS.userbuf")
        if (
            doc.get("TLS.ver") != "2.0"
            or sdkappid is None
            or expire is None
            or curr_time is None
            or not isinstance(signed_id, str)
            or not isinstance(mac, str)
            or not (userbuf is None or isinstance(userbuf, str))
        ):
            raise self._invalid(70003, "the UserSig lacks a TLSSigAPIv2 2.0 field")
        if sdkappid != self.sdkappid:
            raise self._invalid(70014, f"signed for SDKAppID {sdkappid}, expected {self.sdkappid}")
        expected = self._hmac(signed_id, sdkappid, curr_time, expire, userbuf)
        if not hmac.compare_digest(expected.encode(), mac.encode()):
            raise self._invalid(70009, "the signature does not match this SecretKey (another key, or altered)")
        if identifier is not None and identifier != signed_id:
            raise self._invalid(70013, f"signed for identifier {signed_id!r}, expected {identifier!r}")
        if check_expiry and self._clock() >= curr_time + expire:
            raise self._invalid(70001, f"expired at {curr_time + expire} (unix time)")
        return doc

    @staticmethod
    def _decode(sig: str) -> dict[str, Any] | None:
        try:
            raw = base64.b64decode(sig.translate(_SIG_DECODE).encode("ascii"), validate=True)
            inflater = zlib.decompressobj()
            data = inflater.decompress(raw, _MAX_SIG_JSON)
            if inflater.unconsumed_tail:
                return None
            doc = json.loads(data)
        except (ValueError, binascii.Error, zlib.error, RecursionError):
            return None
        return doc if isinstance(doc, dict) else None
