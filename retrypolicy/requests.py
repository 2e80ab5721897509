"""retrypolicy for requests: :class:`RetryAdapter`, a ``requests.adapters.HTTPAdapter`` to mount on a
``requests.Session`` (``pip install 'retrypolicy[requests]'``).

::

    session = requests.Session()
    session.mount("https://", RetryAdapter(policy="wechat", token=WeChatTokenHook(APPID, APPSECRET)))

The adapter is a thin edge around the same core as the httpx transports: it turns each
``requests.PreparedRequest`` into an ``httpx.Request`` and hands it to a ``RetryTransport`` whose
inner transport sends each attempt with requests' own ``HTTPAdapter.send`` and turns the
``requests.Response`` into an ``httpx.Response`` whose stream is the urllib3 response, unread. So
the decisions, log events, retry budget, cooldowns, token store, exceptions and the rule that a
POST which may have been carried out is never resent are the transports', and a ``stream=True``
download stays a stream. requests' and urllib3's exceptions become the httpx exceptions the core
knows (a connection refused: ``httpx.ConnectError``, never sent; a read timeout:
``httpx.ReadTimeout``, maybe carried out); for a host no policy covers, requests' own exception is
raised, as without the adapter.

wechatpy: see :class:`WeChatTokenStorage`.
"""

from __future__ import annotations

import functools
import http.client
import io
import ssl
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

try:
    import requests
    import requests.adapters
    import requests.exceptions as rex
    import urllib3
    import urllib3.exceptions as uex
    from requests.structures import CaseInsensitiveDict
except ImportError:  # pragma: no cover - exercised in an environment without the extra
    raise ModuleNotFoundError(
        "retrypolicy.requests needs requests: pip install 'retrypolicy[requests]'", name="requests"
    ) from None

import httpx

from ._bodies import ORIGIN, Unread
from ._core import EXTENSION
from ._errors import ConfigurationError, TokenRefreshFailed
from ._observe import Binds
from ._overload import RetryBudget, Snapshot
from ._policy import Category, Classification, RetrySettings
from ._store import TokenStore
from ._token import TokenHook, TokenHookError, TokenManager
from ._transport import _DEFAULT_BUDGET, PolicyArg, RetryTransport

__all__ = ["RetryAdapter", "WeChatTokenStorage", "classification"]

_CALL = "retrypolicy.requests"  # request.extensions: the requests call behind an httpx.Request
_RESPONSE = "retrypolicy.requests.response"  # response.extensions: the requests.Response behind it
_CHUNK = 64 * 1024
_CLASSIFIED: weakref.WeakKeyDictionary[requests.Response, Classification] = weakref.WeakKeyDictionary()


def classification(response: requests.Response) -> Classification | None:
    """The classification of a failure the adapter returned instead of raising (a category left
    out of ``raise_on``), as ``response.extensions["retrypolicy"]`` holds it with httpx; else None."""
    return _CLASSIFIED.get(response)


@dataclass(slots=True)
class _Call:
    """What one ``adapter.send()`` was given: the request as requests prepared it, and its options."""

    prepared: requests.PreparedRequest
    url: httpx.URL
    timeout: Any
    verify: Any
    cert: Any
    proxies: Any


class RetryAdapter(requests.adapters.HTTPAdapter):
    """A ``requests`` transport adapter that classifies platform errors, retries, and renews tokens.

    Takes the arguments of :class:`retrypolicy.RetryTransport` (``policy``, ``token``, ``retry``,
    ``max_renewals``, ``raise_on``, ``token_timeout``, ``budget``, ``logger``, ``token_store``,
    ``telemetry``) and ``requests.adapters.HTTPAdapter``'s pool settings. It makes no retries of
    its own in urllib3 (``max_retries`` is 0, and not an argument): every resend is decided by the
    policy. Mount it on the prefixes to cover (``"https://"``, or ``"https://api.weixin.qq.com"``).

    A final failure of a category left out of ``raise_on`` is returned as the response:
    :func:`classification` gives its classification. Proxies, ``verify`` and ``cert`` come from
    the session (or the call), as with requests' own adapter.
    """

    def __init__(
        self,
        policy: PolicyArg,
        *,
        token: TokenHook | Callable[[], Any] | Mapping[str, Callable[[], Any]] | None = None,
        retry: RetrySettings | None = None,
        max_renewals: int = 1,
        raise_on: Collection[Category | str] | None = None,
        token_timeout: float = 30.0,
        budget: RetryBudget | None = _DEFAULT_BUDGET,
        logger: Any = None,
        token_store: TokenStore | None = None,
        telemetry: Binds | None = None,
        pool_connections: int = requests.adapters.DEFAULT_POOLSIZE,
        pool_maxsize: int = requests.adapters.DEFAULT_POOLSIZE,
        pool_block: bool = requests.adapters.DEFAULT_POOLBLOCK,
    ) -> None:
        super().__init__(pool_connections=pool_connections, pool_maxsize=pool_maxsize, pool_block=pool_block)
        self._retry = RetryTransport(
            policy,
            token=token,
            transport=_Sender(self),
            retry=retry,
            max_renewals=max_renewals,
            raise_on=raise_on,
            token_timeout=token_timeout,
            budget=budget,
            logger=logger,
            token_store=token_store,
            telemetry=telemetry,
        )

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        extensions: dict[str, Any] = {}
        # A redirect chain's origin rides on the request's hooks dict, which requests shares between
        # a request and the copies it makes for each redirect hop (as httpx shares extensions):
        # a hop to another origin then gets no token of ours.
        hooks = request.hooks if isinstance(request.hooks, dict) else None
        if hooks is not None and ORIGIN in hooks:
            extensions[ORIGIN] = hooks[ORIGIN]
        asked = _httpx_request(request, extensions)
        extensions = asked.extensions
        extensions[_CALL] = _Call(request, asked.url, timeout, verify, cert, proxies)
        failure: BaseException | None = None
        try:
            response = self._retry.handle_request(asked)
        except httpx.TransportError as exc:  # passed through untouched (no policy covers the host)
            if not isinstance(exc.__cause__, requests.RequestException):
                raise
            failure = exc.__cause__  # requests' own exception, as without the adapter
        finally:
            if hooks is not None:
                if ORIGIN in extensions:
                    hooks[ORIGIN] = extensions[ORIGIN]
                else:
                    hooks.pop(ORIGIN, None)
        if failure is not None:
            raise failure
        return _requests_response(response, request)

    def snapshot(self) -> Snapshot:
        """Counters (requests, attempts, retries, renewals, outcomes), budget levels, cooldowns."""
        return self._retry.snapshot()

    def close(self) -> None:
        super().close()
        self._retry.close()

    def __repr__(self) -> str:
        return f"<retrypolicy.requests.RetryAdapter policy={self._retry._core.policies!r}>"

    def _manager(self, platform: str) -> TokenManager:
        manager = self._retry._core.managers.get(platform)
        if not isinstance(manager, TokenManager):
            raise ConfigurationError(
                f"this RetryAdapter has no token hook for {platform!r}: "
                f"RetryAdapter(policy={platform!r}, token=<a token hook>)"
            )
        return manager


class _Sender(httpx.BaseTransport):
    """The inner transport of the adapter's ``RetryTransport``: each attempt goes out through
    requests' own ``HTTPAdapter.send``, its answer comes back as an unread ``httpx.Response``."""

    def __init__(self, adapter: RetryAdapter) -> None:
        self._adapter = adapter

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call = request.extensions[_CALL]
        assert isinstance(call, _Call)
        prepared = call.prepared.copy()  # requests' own body object: a file, rewound by the flow, is sent again
        if request.url != call.url:  # the token filled in, or a refused one replaced
            prepared.url = str(request.url)
        keep_host = call.prepared.headers is not None and "host" in call.prepared.headers
        headers: CaseInsensitiveDict[str | bytes] = CaseInsensitiveDict()
        for key, value in request.headers.raw:
            name = key.decode("latin-1")
            if keep_host or name.lower() != "host":  # httpx adds Host to each request; urllib3 writes its own
                headers[name] = value.decode("latin-1")
        prepared.headers = headers
        try:
            answer = requests.adapters.HTTPAdapter.send(
                self._adapter,
                prepared,
                stream=True,  # the flow reads a small body for its code; anything else stays a stream
                timeout=call.timeout,
                verify=call.verify,
                cert=call.cert,
                proxies=call.proxies,
            )
        except requests.RequestException as exc:
            mapped = _httpx_error(exc, request)
            if mapped is None:
                raise
            raise mapped from exc
        raw = answer.raw
        raw_headers = raw.headers.items() if isinstance(raw, urllib3.HTTPResponse) else answer.headers.items()
        return httpx.Response(
            answer.status_code,
            headers=[(_latin1(k), _latin1(v)) for k, v in raw_headers],
            stream=_Body(answer),
            request=request,
            extensions={_RESPONSE: answer, "reason_phrase": _latin1(answer.reason or "")},
        )


class _Body(httpx.SyncByteStream):
    """A requests response's body as httpx reads it: the raw (still encoded) bytes from urllib3."""

    def __init__(self, response: requests.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        raw = self._response.raw
        try:
            if isinstance(raw, urllib3.HTTPResponse):
                yield from raw.stream(_CHUNK, decode_content=False)
            else:  # pragma: no cover - requests' HTTPAdapter always gives urllib3's response
                while chunk := raw.read(_CHUNK):
                    yield chunk
        except uex.ReadTimeoutError as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except uex.SSLError as exc:
            raise httpx.ReadError(str(exc)) from exc
        except uex.ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc)) from exc

    def close(self) -> None:
        self._response.close()


def _latin1(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("latin-1", "replace")


def _header_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")  # what http.client sends a str header as
    except UnicodeEncodeError:
        return value.encode("utf-8")


def _httpx_request(prepared: requests.PreparedRequest, extensions: dict[str, Any]) -> httpx.Request:
    """The ``httpx.Request`` the core sees: the same method, URL, headers and body (a body it can
    tell replayable or not, as it tells httpx's)."""
    body: Any = prepared.body
    content: Any = None
    stream: httpx.SyncByteStream | None = None
    if body is None:
        stream = httpx.ByteStream(b"")
    elif isinstance(body, (bytes, bytearray, memoryview)):
        stream = httpx.ByteStream(bytes(body))
    elif isinstance(body, str):
        stream = httpx.ByteStream(body.encode("utf-8"))
    elif isinstance(body, Iterable) and not isinstance(body, Mapping):
        content = body  # a file (replayed if seekable) or a generator (sent once), as with httpx
    else:
        stream = _ReadOnce()  # a read()-only object (a streaming multipart encoder): sent once
    try:
        url = _url(prepared.url or "")
        request = httpx.Request(prepared.method or "GET", url, content=content, stream=stream, extensions=extensions)
    except httpx.InvalidURL as exc:
        raise rex.InvalidURL(str(exc), request=prepared) from None
    given: Mapping[str, str | bytes] = prepared.headers or {}
    request.headers = httpx.Headers([(_header_bytes(k), _header_bytes(v)) for k, v in given.items()])
    return request


@functools.lru_cache(maxsize=256)
def _url(url: str) -> httpx.URL:
    # httpx parses a URL in ~15 us; an app calls a few endpoints, so parsed URLs are cached (in
    # memory only: a URL an SDK built may hold the token, as in _placement's caches)
    return httpx.URL(url)


class _ReadOnce(httpx.SyncByteStream):
    """Stands for a body the core must not resend: only requests reads the real one."""

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


def _httpx_error(exc: requests.RequestException, request: httpx.Request) -> httpx.TransportError | None:
    """The httpx exception the core knows for what requests raised while sending (None: not a
    transport error; it propagates as it is). Errors before anything was sent become
    ``ConnectError``/``ConnectTimeout`` (resent for any method); everything else is ambiguous."""
    message = str(exc)
    if isinstance(exc, rex.ConnectTimeout):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, rex.ReadTimeout):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, rex.ProxyError):
        return httpx.ProxyError(message, request=request)
    if isinstance(exc, rex.SSLError):
        # a certificate refused is a handshake that failed: nothing was sent. Any other TLS error
        # may come after the request went out, so it is not taken as never sent.
        if _caused_by(exc, (ssl.SSLCertVerificationError,)):
            return httpx.ConnectError(message, request=request)
        return httpx.ReadError(message, request=request)
    if isinstance(exc, rex.InvalidSchema):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, (rex.InvalidURL, rex.InvalidHeader)):
        return httpx.LocalProtocolError(message, request=request)
    if isinstance(exc, rex.ChunkedEncodingError):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, rex.ConnectionError):
        reason: object = exc.args[0] if exc.args else None
        if isinstance(reason, uex.MaxRetryError):
            reason = reason.reason
        if isinstance(reason, uex.NewConnectionError):  # before ConnectTimeoutError: it subclasses it
            return httpx.ConnectError(message, request=request)
        if isinstance(reason, uex.ConnectTimeoutError):
            return httpx.ConnectTimeout(message, request=request)
        if isinstance(reason, uex.ProtocolError) and _caused_by(reason, (http.client.RemoteDisconnected,)):
            return httpx.RemoteProtocolError(message, request=request)  # closed without an answer, as httpx says
        if isinstance(reason, uex.ProtocolError) and _caused_by(reason, (ConnectionResetError, BrokenPipeError)):
            return httpx.ReadError(message, request=request)
        return httpx.RemoteProtocolError(message, request=request)
    return None


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Is ``exc``, or anything in its arguments, causes and contexts, one of ``kinds``?"""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kinds):
            return True
        todo.extend((*item.args, item.__cause__, item.__context__, getattr(item, "reason", None)))
    return False


def _requests_response(response: httpx.Response, prepared: requests.PreparedRequest) -> requests.Response:
    """The ``requests.Response`` behind the flow's final ``httpx.Response``, readable as if unread."""
    answer = response.extensions[_RESPONSE]
    assert isinstance(answer, requests.Response)
    if isinstance(response.stream, Unread):
        # The core read this small body for its code (and closed the connection's stream, returning
        # it to the pool). requests reads it again from the same bytes, still encoded, as it would
        # have from the socket: .content, .iter_content(), .raw.read() and cookies all work.
        old = answer.raw
        answer.raw = urllib3.HTTPResponse(
            body=io.BytesIO(b"".join(response.stream)),
            headers=old.headers,
            status=answer.status_code,
            version=getattr(old, "version", 0),
            reason=getattr(old, "reason", None),
            preload_content=False,
            decode_content=getattr(old, "decode_content", True),
            original_response=getattr(old, "_original_response", None),
            request_method=prepared.method,
            request_url=prepared.url,
        )
    # The client's own request and URL, never the copy the token was written into.
    answer.request = prepared
    answer.url = prepared.url or answer.url
    found = response.extensions.get(EXTENSION)
    if isinstance(found, Classification):
        _CLASSIFIED[answer] = found
    return answer


class WeChatTokenStorage:
    """A wechatpy session storage (``WeChatClient(..., session=WeChatTokenStorage(adapter))``)
    whose access token is the adapter's: wechatpy puts the adapter's current token in each URL and
    never fetches one itself, and the adapter renews a refused token and swaps it into the request
    it resends. Every other key (JS-API tickets, ...) is kept in ``storage`` (a wechatpy storage;
    default: a dict in memory). Give the client ``auto_retry=False`` too (see the README).
    """

    def __init__(self, adapter: RetryAdapter, *, platform: str = "wechat", storage: Any = None) -> None:
        if not isinstance(adapter, RetryAdapter):
            raise ConfigurationError(
                f"adapter must be a retrypolicy.requests.RetryAdapter, got {type(adapter).__name__}"
            )
        if storage is not None and not all(callable(getattr(storage, m, None)) for m in ("get", "set", "delete")):
            raise ConfigurationError(
                f"storage must be a wechatpy session storage (get, set, delete), got {type(storage).__name__}"
            )
        self._manager = adapter._manager(platform)
        self._platform = platform
        self._storage = storage
        self._data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        if key.endswith("_access_token"):
            return self.access_token()
        if self._storage is not None:
            return self._storage.get(key, default)
        return self._data.get(key, default)

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        if key.endswith("_access_token"):
            return  # the adapter owns the token
        if self._storage is not None:
            self._storage.set(key, value, ttl)
        elif value is not None:
            self._data[key] = value

    def delete(self, key: str) -> None:
        if key.endswith("_access_token"):
            return
        if self._storage is not None:
            self._storage.delete(key)
        else:
            self._data.pop(key, None)

    def access_token(self) -> str:
        """The adapter's current token, from its hook if it has none yet (single-flight)."""
        try:
            return self._manager.get()
        except TokenHookError as exc:
            c = exc.classification or Classification(
                self._platform,
                None,
                Category.TOKEN_REFRESH,
                "",
                "Could not obtain a token before sending",
                source="transport",
            )
            raise TokenRefreshFailed(
                f"{self._platform}: could not obtain a token: {exc}", classification=c, attempts=0
            ) from None

    def __repr__(self) -> str:  # never the token
        return f"<retrypolicy.requests.WeChatTokenStorage platform={self._platform!r}>"
