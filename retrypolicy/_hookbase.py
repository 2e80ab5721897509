"""What the built-in token hooks share (see :mod:`retrypolicy.hooks`): :class:`HookError`, the
HTTP hook base :class:`_HTTPTokenHook` with its bounded retry of a token endpoint, and the checks
of their arguments. The hooks of each platform build on it in their own modules, and
:mod:`retrypolicy.hooks` gathers them; none of those imports another, so any can be imported first.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
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


# Public as retrypolicy.hooks.HookError / UserSigError: named so in reprs and tracebacks, and
# pickled by that name (the pickling tests send them through a process pool).
HookError.__module__ = UserSigError.__module__ = "retrypolicy.hooks"
