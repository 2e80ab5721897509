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
import logging
import math
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import Any, ClassVar, Self

import anyio
import httpx

from ._errors import ConfigurationError, RetryPolicyError
from ._load import load_policy
from ._policy import Category, Classification, Policy
from ._redact import redact_url, scrub
from ._token import Token, hook_deadline
from ._transport import AsyncRetryTransport, RetryTransport

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


class HookError(RetryPolicyError):
    """A built-in token hook could not obtain a credential.

    The message starts with the platform, the error code (or HTTP status, or network error) and
    the category from the platform's policy table, e.g.
    ``wechat code 40125 [fatal] from the stable_token endpoint for appid wx...: Invalid AppSecret...``.
    It never contains a secret. ``classification`` is ``None`` when the response could not be
    classified at all (a 200 whose body is not what the endpoint returns).
    """

    def __init__(self, message: str, *, platform: str, classification: Classification | None = None) -> None:
        super().__init__(message)
        self.platform = platform
        self.classification = classification

    @property
    def code(self) -> int | str | None:
        """The platform's error code, if it sent one (a string for a vendor's string codes)."""
        return self.classification.code if self.classification is not None else None

    @property
    def category(self) -> Category | None:
        """The category from the platform's table (``None``: unclassifiable response)."""
        return self.classification.category if self.classification is not None else None

    @property
    def status_code(self) -> int | None:
        """The HTTP status of the failed response, if one arrived."""
        return self.classification.status_code if self.classification is not None else None

    def __repr__(self) -> str:
        category = self.category.value if self.category is not None else None
        return f"{type(self).__name__}(platform={self.platform!r}, code={self.code!r}, category={category!r})"


class UserSigError(HookError, ValueError):
    """:meth:`TencentUserSig.verify` rejected a UserSig; ``code`` is the Tencent Cloud Chat code a
    server would answer with (70001 expired, 70002 empty, 70003 malformed, 70009 bad signature,
    70013 identifier mismatch, 70014 SDKAppID mismatch)."""


# -- shared helpers --------------------------------------------------------------------------


def _code_text(c: Classification) -> str:
    if c.code is not None:
        return f"code {c.code}"
    if c.status_code is not None:
        return f"HTTP {c.status_code}, no error code"
    return c.description.split(":", 1)[0]  # a network error: its exception name


def _describe_classified(c: Classification, what: str, secrets: tuple[str, ...], where: str = "") -> str:
    """``<platform> code <n> [<category>] from <what>: <description> | vendor message | what to do | where``."""
    text = f"{c.platform} {_code_text(c)} [{c.category.value}] from {what}: {c.description}"
    if c.message:
        text += f" | vendor message: {scrub(c.message, secrets)}"
    if c.details:
        text += f" | details: {scrub(c.details, secrets)}"
    if c.remediation:
        text += f" | what to do: {c.remediation}"
    if where:
        text += f" | {where}"
    return text


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    """The body as a JSON object, or ``None``. Never raises (so no decoder error, which holds the
    whole document, ends up chained to a HookError)."""
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


def _positive(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value > 0 else None


def _token_field(body: dict[str, Any], key: str, lifetime: str) -> Token | str:
    """The token in ``body[key]`` with the lifetime in ``body[lifetime]``, or what is wrong with it
    (``_HTTPTokenHook._token_from``'s answer for an endpoint that answers a flat JSON object)."""
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        return f"no {key} in the response" if value is None else f"{key} is not a non-empty string"
    return Token(value, expires_in=_positive(body.get(lifetime)))


def _check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _check_base_url(base_url: str) -> str:
    if not isinstance(base_url, str):
        raise ConfigurationError(f"base_url must be a str, got {type(base_url).__name__}")
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ConfigurationError(f"base_url is not a valid URL: {redact_url(base_url)!r}") from None
    if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
        raise ConfigurationError(
            f"base_url must be an http(s) URL with a host and no query, got {redact_url(base_url)!r}"
        )
    return base_url.rstrip("/")


def _check_secret(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty str")  # never echo the value
    return value


class _RedactURLs(logging.Filter):
    """Redacts URL arguments of the ``httpx`` logger's records (``HTTP Request: GET <url> ...``).

    httpx logs each request's full URL at INFO level; WeChat's legacy ``/cgi-bin/token`` endpoint
    takes the AppSecret in the query string. Installed on the ``httpx`` logger by hooks that put a
    secret in a URL; it only replaces secret query values by ``***`` and never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(a, httpx.URL) for a in args):
            record.args = tuple(redact_url(a) if isinstance(a, httpx.URL) else a for a in args)
        return True


_filter_lock = threading.Lock()


def _redact_httpx_logs() -> None:
    logger = logging.getLogger("httpx")
    with _filter_lock:
        if not any(isinstance(f, _RedactURLs) for f in logger.filters):
            logger.addFilter(_RedactURLs())


# -- hooks that call an HTTP endpoint --------------------------------------------------------


class _HTTPTokenHook:
    """One request per call, sync or async, then :meth:`_parse`. Subclasses build the request."""

    platform: ClassVar[str]

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        transport: httpx.BaseTransport | None,
        async_transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        if isinstance(transport, RetryTransport) or isinstance(async_transport, AsyncRetryTransport):
            raise ConfigurationError("a token hook's HTTP client must not go through a retrying transport")
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise ConfigurationError(f"transport must be an httpx.BaseTransport, got {type(transport).__name__}")
        if async_transport is not None and not isinstance(async_transport, httpx.AsyncBaseTransport):
            raise ConfigurationError(
                f"async_transport must be an httpx.AsyncBaseTransport, got {type(async_transport).__name__}"
            )
        self._base_url = _check_base_url(base_url)
        self._timeout = _check_timeout(timeout)
        self._transport = transport
        self._async_transport = async_transport
        self._policy: Policy = load_policy(self.platform)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._aclient: httpx.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        """The endpoint's base URL (no trailing slash)."""
        return self._base_url

    # -- what subclasses provide

    def _secrets(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _what(self) -> str:
        raise NotImplementedError

    def _build(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        raise NotImplementedError

    def _token_from(self, body: dict[str, Any]) -> Token | str:
        """A Token, or a description of what is missing from a successful body."""
        raise NotImplementedError

    def _auth(self) -> httpx.Auth | None:
        return None

    # -- clients

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(transport=self._transport, timeout=self._timeout, auth=self._auth())
            return self._client

    def _async_client(self) -> httpx.AsyncClient:
        if self._aclient is None:  # no await in between: safe within one event loop
            self._aclient = httpx.AsyncClient(transport=self._async_transport, timeout=self._timeout, auth=self._auth())
        return self._aclient

    def close(self) -> None:
        """Close the synchronous HTTP client (a later call opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close both HTTP clients (a later call opens new ones)."""
        aclient, self._aclient = self._aclient, None
        if aclient is not None:
            await aclient.aclose()
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- calls

    def __call__(self) -> Token:
        client = self._sync_client()
        calls = _Calls(self)
        while True:
            request = calls.next(client)
            try:
                return self._parse(request, client.send(request))
            except (httpx.HTTPError, HookError) as exc:
                failure = calls.failed(request, exc)
            time.sleep(calls.wait(failure))

    async def acall(self) -> Token:
        client = self._async_client()
        calls = _Calls(self)
        while True:
            request = calls.next(client)
            try:
                return self._parse(request, await client.send(request))
            except (httpx.HTTPError, HookError) as exc:
                failure = calls.failed(request, exc)
            await anyio.sleep(calls.wait(failure))

    # -- results

    @staticmethod
    def _where(request: httpx.Request) -> str:
        return f"{request.method} {redact_url(request.url)}"

    def _network_error(self, request: httpx.Request, exc: httpx.HTTPError) -> HookError:
        name = type(exc).__name__
        text = scrub(str(exc), self._secrets())[:200]
        c = Classification(
            platform=self.platform,
            code=None,
            category=Category.RETRYABLE,
            message=text,
            description=f"{name}: no response arrived",
            source="transport",
        )
        message = f"{self.platform} {name} [retryable] from {self._what()}: no response arrived"
        if text:
            message += f" ({text})"
        return HookError(f"{message} | {self._where(request)}", platform=self.platform, classification=c)

    def _parse(self, request: httpx.Request, response: httpx.Response) -> Token:
        c = self._policy.classify(response)
        if c is not None:
            secrets = self._secrets()
            c = replace(c, message=scrub(c.message, secrets), details=scrub(c.details, secrets) if c.details else None)
            message = _describe_classified(c, self._what(), self._secrets(), self._where(request))
            raise HookError(message, platform=self.platform, classification=c)
        body = _json_object(response)
        if body is None:
            ctype = response.headers.get("content-type") or "no content-type"
            problem = f"the body is not a JSON object ({ctype})"
        else:
            result = self._token_from(body)
            if isinstance(result, Token):
                return result
            problem = result
        raise HookError(
            f"{self.platform} unexpected response from {self._what()}: HTTP {response.status_code}, {problem}"
            f" | {self._where(request)}",
            platform=self.platform,
        )


_FIRST_WAIT = 0.1  # seconds before the second call of a token endpoint that failed transiently...
_MAX_WAIT = 2.0  # ...doubling up to this (each wait drawn from its upper half)
_ROOM = 0.1  # a retry needs at least this much of token_timeout left after its wait


class _Calls:
    """One ``hook()`` / ``await hook.acall()``: the calls of the token endpoint, all but their I/O
    (the two methods only send and sleep). ``next()`` builds the next request, its timeout cut to
    the transport's ``token_timeout``; ``failed()`` makes a HookError of a failure; ``wait()``
    says how long to wait before the next call, or raises the last failure. Called outside the
    ``except`` block, it raises with nothing chained (an httpx error's text may hold a secret)."""

    __slots__ = ("_attempt", "_deadline", "_hook", "_started")

    def __init__(self, hook: _HTTPTokenHook) -> None:
        self._hook = hook
        self._deadline, self._started = hook_deadline(), time.monotonic()
        self._attempt = 0

    def next(self, client: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        self._attempt += 1
        return _bounded(self._hook._build(client), self._hook._timeout, self._deadline)

    def failed(self, request: httpx.Request, exc: httpx.HTTPError | HookError) -> HookError:
        return exc if isinstance(exc, HookError) else self._hook._network_error(request, exc)

    def wait(self, failure: HookError) -> float:
        delay = _retry_in(failure, self._attempt, self._deadline)
        if delay is None:
            raise _final(failure, self._attempt, self._started)
        return delay


def _bounded(request: httpx.Request, timeout: float, deadline: float | None) -> httpx.Request:
    """The request with its timeout cut to what is left of the transport's ``token_timeout``, so
    that the hook's own error, not the transport's timeout, says what went wrong."""
    if deadline is not None:
        left = deadline - time.monotonic() - _ROOM / 2
        if left < timeout:
            request.extensions["timeout"] = httpx.Timeout(max(left, _ROOM / 2)).as_dict()
    return request


def _retry_in(failure: HookError, attempt: int, deadline: float | None) -> float | None:
    """Seconds to wait before calling the token endpoint again, or None to give up: only when a
    transport called the hook (``deadline``), only after a transient failure (the table says
    retryable and starts no cooldown: a network error, a 5xx, WeChat's -1), and only if the wait
    and another call fit before the deadline."""
    c = failure.classification
    if deadline is None or c is None or c.category is not Category.RETRYABLE or c.cooldown is not None:
        return None
    delay = max(c.min_delay, min(_MAX_WAIT, _FIRST_WAIT * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))
    return delay if time.monotonic() + delay + _ROOM <= deadline else None


def _final(failure: HookError, attempts: int, started: float) -> HookError:
    if attempts == 1:
        return failure
    spent = time.monotonic() - started
    return HookError(
        f"{failure} | gave up after {attempts} calls in {spent:.3g} s (token_timeout)",
        platform=failure.platform,
        classification=failure.classification,
    )


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


from ._chat_hooks import SlackRotatingToken  # noqa: E402 - it builds on _HTTPTokenHook above
from ._enterprise_hooks import DingTalkTokenHook, FeishuTenantToken, WeComTokenHook  # noqa: E402 - same
