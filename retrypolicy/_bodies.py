"""Request and response bodies, and origins: what can be sent again, what to read for a code,
and where a redirect chain started. No I/O beyond reading a response the driver hands over."""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
from httpx._multipart import MultipartStream

from ._policy import Policy

__all__ = [
    "BOUNDED",
    "ENCODED",
    "LENGTH",
    "ORIGIN",
    "Unread",
    "aread_small",
    "hand_back",
    "keep",
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


LENGTH, BOUNDED, ENCODED = 1, 2, 4
"""What :func:`readable` says of a body to read: it has a Content-Length (within the limit), or
none (read no more than the limit of it); ENCODED: a Content-Encoding applies (gzip, ...)."""


class Unread(httpx.ByteStream):
    """A small body the transport read for its code, handed back to the caller as a stream not yet
    read: the bytes as they came off the network (still compressed, for ``iter_raw()``)."""


def read_small(response: httpx.Response, limit: int, plan: int) -> bytes | None:
    """Read a small body for its code (``plan``: what :func:`readable` said of it) and leave it
    readable for the caller as if unread: ``read()``, ``iter_bytes()``, ``iter_text()`` and
    ``iter_raw()`` all keep working. The network stream is read straight, not through the
    response's own read (its decoder, chunker and request contexts run again when the client
    reads the stream handed back). A body without a Content-Length is read up to ``limit`` bytes
    (``max_body_bytes``); if it is longer, what was read goes back in front of the rest of the
    stream and it is left unread (``None``: not read). Returns the body, decoded; the flow keeps
    it in ``_content`` (see :func:`keep`) until :func:`hand_back`."""
    stream = response.stream
    assert isinstance(stream, httpx.SyncByteStream)
    if plan & BOUNDED:
        chunks: list[bytes] = []
        size = 0
        rest = iter(stream)
        for chunk in rest:
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                _too_long(response, _Rest(chunks, rest, stream, None))
                return None
        raw = b"".join(chunks)
    else:
        raw = b"".join(stream)
    stream.close()  # the connection goes back to the pool
    return _unread(response, raw, plan)


async def aread_small(response: httpx.Response, limit: int, plan: int) -> bytes | None:
    """The async twin of :func:`read_small`."""
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    chunks: list[bytes] = []
    size = 0
    rest = stream.__aiter__()
    async for chunk in rest:
        chunks.append(chunk)
        size += len(chunk)
        if size > limit and plan & BOUNDED:
            _too_long(response, _Rest(chunks, None, stream, rest))
            return None
    await stream.aclose()
    return _unread(response, b"".join(chunks), plan)


def hand_back(response: httpx.Response) -> httpx.Response:
    """The response as the flow returns it to the client: a body it read is a stream again, with
    nothing read (the client reads it, closes it, and sets ``elapsed``, as with bare httpx; left
    read, the client would skip its read and never close it). The fast path never sets
    ``_content`` on a success, so it hands its response back as it is."""
    if type(response.stream) is Unread and hasattr(response, "_content"):
        del response._content  # never through __dict__: that would turn the instance's inline values into a dict
    return response


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


def _unread(response: httpx.Response, raw: bytes, plan: int) -> bytes:
    # The network stream is read and closed, straight (the response's own flags untouched: not
    # consumed, not closed); the caller gets a stream of the same bytes to read as if unread.
    response.stream = Unread(raw)
    return _decoded(response, raw) if plan & ENCODED else raw


def _decoded(response: httpx.Response, raw: bytes) -> bytes:
    """The body decoded as httpx decodes it: gzip, the usual one, as httpx's GZipDecoder does it
    (the same zlib call, the same DecodingError); any other coding or a list of them by a response
    of our own."""
    if response.headers.get("content-encoding", "").strip().lower() == "gzip":
        decompressor = zlib.decompressobj(zlib.MAX_WBITS | 16)
        try:
            return decompressor.decompress(raw) + decompressor.flush()
        except zlib.error as exc:
            raise httpx.DecodingError(str(exc)) from exc
    return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(raw)).read()


def keep(response: httpx.Response, content: bytes | None) -> None:
    """Leave the body read for the flow (``response.content``, ``json()``, the exceptions'
    response), as a failed first attempt's or each attempt of the flow is; :func:`hand_back`
    drops it again if the flow returns the response."""
    if content is not None and type(response.stream) is Unread:
        response._content = content


def _too_long(response: httpx.Response, stream: _Rest) -> None:
    response.stream = stream
    response.is_stream_consumed = False
    setattr(response, _TOO_LONG, True)


def readable(response: httpx.Response, max_bytes: int) -> int:
    """Should the body be read for an error code, and how (0: no; else :data:`LENGTH` or
    :data:`BOUNDED`, with :data:`ENCODED`)? Small JSON or text bodies: with a length up to
    ``max_bytes``; without one (chunked, HTTP/2, some proxies) only when declared JSON or text,
    and then :func:`read_small` reads at most ``max_bytes`` of it. A download stays a stream."""
    length = ctype = None
    encoded = 0
    for _, name, value in _triples(response.headers):  # one pass (each Headers.get() walks every header)
        if name == b"content-length":
            length = value
        elif name == b"content-type":
            ctype = value.lower()
        elif name == b"content-encoding" and value.strip().lower() not in _IDENTITY:
            encoded = ENCODED
    declared = ctype is not None and (b"json" in ctype or ctype.startswith(b"text/"))
    if length is None:
        return BOUNDED | encoded if declared and not hasattr(response, _TOO_LONG) else 0
    if not length.isdigit() or int(length) > max_bytes:  # bytes.isdigit(): ASCII digits only
        return 0
    return LENGTH | encoded if not ctype or declared else 0  # a body of known length, untyped: read too


_IDENTITY = (b"", b"identity")


def _triples(headers: httpx.Headers) -> list[tuple[bytes, bytes, bytes]]:
    """(raw name, lower-case name, value) of each header, as bytes: the list httpx keeps (its
    lower-case names are the ones it matches on), without building a new one as ``Headers.raw``
    does; built from ``Headers.raw`` should a later httpx keep them otherwise."""
    triples = getattr(headers, "_list", None)
    if isinstance(triples, list):
        return triples
    return [(name, name.lower(), value) for name, value in headers.raw]
