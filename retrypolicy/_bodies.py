"""Request and response bodies, and origins: what can be sent again, what to read for a code,
and where a redirect chain started. No I/O beyond reading a response the driver hands over."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
from httpx._multipart import MultipartStream

from ._policy import Policy

__all__ = [
    "ORIGIN",
    "aread_small",
    "mark_redirect",
    "no_rewind",
    "origin",
    "read_small",
    "readable",
    "recipient_of",
    "redirected",
    "replayer",
]

ORIGIN = "retrypolicy.origin"  # request.extensions key: the origin whose token a redirect chain carries
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def no_rewind() -> None:
    return None


def replayer(stream: object) -> Callable[[], None] | None:
    """How to make a request body ready to be sent again byte for byte, or None if it cannot be.

    Bytes can always be sent again. A multipart body can when every file in it is bytes or a
    seekable file (httpx rewinds each file before sending it). A file given as ``content=``
    can when it is seekable: it is rewound to where it stood before the first send. A read-once
    object (a socket, an S3 ``StreamingBody``) or a generator cannot: resending it would send
    what is left of it, an empty or truncated body.
    """
    if type(stream) is httpx.ByteStream:
        return no_rewind
    if isinstance(stream, MultipartStream):
        seekable = all(isinstance(f.file, (bytes, str)) or _seekable(f.file) for f in _files(stream))
        return no_rewind if seekable else None
    if isinstance(stream, httpx.ByteStream):
        return no_rewind
    inner = getattr(stream, "_stream", None)  # httpx's IteratorByteStream around a file object
    if type(stream).__name__ == "IteratorByteStream" and inner is not None and _seekable(inner):
        try:
            start = inner.tell()
        except (OSError, ValueError):
            return None
        return functools.partial(inner.seek, start)
    return None


def _files(stream: MultipartStream) -> list[Any]:
    return [f for f in stream.fields if hasattr(f, "file")]


def _seekable(fileobj: object) -> bool:
    seekable = getattr(fileobj, "seekable", None)
    try:
        return callable(seekable) and seekable() is True and hasattr(fileobj, "tell")
    except (OSError, ValueError):  # a closed file
        return False


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the default port filled in."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def redirected(response: httpx.Response) -> bool:
    return response.status_code in _REDIRECT_STATUSES and "location" in response.headers


def mark_redirect(request: httpx.Request, response: httpx.Response) -> None:
    """A redirect is followed by the client with the same ``extensions`` dict: remember whose
    origin the chain started at, so that the next hop carries our token only back to it."""
    if 300 <= response.status_code < 400 and redirected(response):
        request.extensions.setdefault(ORIGIN, origin(request.url))


def recipient_of(request: httpx.Request, policy: Policy) -> str | None:
    """The recipient named in a JSON request body (the table's ``recipient`` paths), if any."""
    if not isinstance(request.stream, httpx.ByteStream):
        return None
    try:
        body = json.loads(b"".join(request.stream))  # a ByteStream yields its bytes, again and again
    except (ValueError, RecursionError):
        return None
    for path in policy.recipient:
        value: object = body
        for key in path:
            if isinstance(key, int):
                value = value[key] if isinstance(value, list) and -len(value) <= key < len(value) else None
            else:
                value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return None


def read_small(response: httpx.Response, limit: int) -> bytes:
    """Read a small body for its code and leave it readable for the caller as if unread:
    ``read()``, ``iter_bytes()``, ``iter_text()`` and ``iter_raw()`` all keep working. A body
    without a Content-Length (see :func:`readable`) is read up to ``limit`` bytes
    (``max_body_bytes``); if it is longer, what was read goes back in front of the rest of the
    stream and it is left unread."""
    if "content-length" not in response.headers:
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)
        chunks: list[bytes] = []
        size = 0
        rest = iter(stream)
        for chunk in rest:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return _too_long(response, _Rest(chunks, rest, stream, None))
        stream.close()
        raw = b"".join(chunks)
    elif "content-encoding" in response.headers:  # keep the raw (compressed) bytes for iter_raw()
        raw = b"".join(response.iter_raw())
    else:
        content = raw = response.read()
        _unread(response, raw)
        return content
    _unread(response, raw)
    content = response.read()
    _unread(response, raw)
    return content


async def aread_small(response: httpx.Response, limit: int) -> bytes:
    """The async twin of :func:`read_small`."""
    if "content-length" not in response.headers:
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        chunks: list[bytes] = []
        size = 0
        rest = stream.__aiter__()
        async for chunk in rest:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                return _too_long(response, _Rest(chunks, None, stream, rest))
        await stream.aclose()
        raw = b"".join(chunks)
    elif "content-encoding" in response.headers:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    else:
        content = raw = await response.aread()
        _unread(response, raw)
        return content
    _unread(response, raw)
    content = await response.aread()
    _unread(response, raw)
    return content


class _Rest(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body read in part for its code: the chunks read, then the rest of the network stream."""

    def __init__(
        self,
        head: list[bytes],
        rest: Iterator[bytes] | None,
        stream: httpx.SyncByteStream | httpx.AsyncByteStream,
        arest: AsyncIterator[bytes] | None,
    ) -> None:
        self._head, self._rest, self._stream, self._arest = head, rest, stream, arest

    def __iter__(self) -> Iterator[bytes]:
        yield from self._head
        if self._rest is not None:
            yield from self._rest

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._head:
            yield chunk
        if self._arest is not None:
            async for chunk in self._arest:
                yield chunk

    def close(self) -> None:
        if isinstance(self._stream, httpx.SyncByteStream):
            self._stream.close()

    async def aclose(self) -> None:
        if isinstance(self._stream, httpx.AsyncByteStream):
            await self._stream.aclose()


_TOO_LONG = "_retrypolicy_too_long"  # set once a read without a length found it too long: never read again


def _unread(response: httpx.Response, raw: bytes) -> None:
    # The network stream is read and closed (its connection back in the pool); the caller gets a
    # stream of the same bytes, so a later iter_raw() does not raise StreamConsumed.
    response.stream = httpx.ByteStream(raw)
    response.is_stream_consumed = False
    response.is_closed = False


def _too_long(response: httpx.Response, stream: _Rest) -> bytes:
    response.stream = stream
    response.is_stream_consumed = False
    setattr(response, _TOO_LONG, True)
    return b""


def readable(response: httpx.Response, max_bytes: int) -> bool:
    """Should the body be read for an error code? Small JSON or text bodies: with a length up to
    ``max_bytes``; without one (chunked, HTTP/2, some proxies) only when declared JSON or text,
    and then :func:`read_small` reads at most ``max_bytes`` of it. A download stays a stream."""
    length = ctype = None
    for key, value in response.headers.raw:  # one pass (each Headers.get() walks every header)
        name = key.lower()
        if name == b"content-length":
            length = value.decode("latin-1")
        elif name == b"content-type":
            ctype = value.decode("latin-1").lower()
    ctype = ctype or ""
    if length is None:
        return ("json" in ctype or ctype.startswith("text/")) and not hasattr(response, _TOO_LONG)
    if not (length.isascii() and length.isdigit()) or int(length) > max_bytes:
        return False
    return not ctype or "json" in ctype or ctype.startswith("text/")
