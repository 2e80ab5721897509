"""Where a request carries its token, and a copy of a request with the token filled in.

The hot-path helpers the core calls for every request with a token hook: :func:`token_in` (is a
token already there, and which?) and :func:`with_token` (a copy with this token in its place).
A table's ``[token]`` says where the token goes (:class:`~retrypolicy._policy.TokenPlacement`):

* ``location = "query"``: the query parameter ``name`` (``?access_token=...``);
* ``location = "header"``: the header ``name``, after ``scheme`` if any (``Authorization: Bearer ...``);
* ``location = "path"``: a path segment ``prefix + token``, first in the path or right after one of
  the path prefixes in ``after`` (Telegram: ``/bot<token>/sendMessage``, ``/file/bot<token>/<file>``).

Neither function ever writes into the request it is given: httpx logs the client's own request
URL at INFO, so a token written into it would reach the logs; and the inner transport keeps what
it was sent.
"""

from __future__ import annotations

import functools
import urllib.parse

import httpx

from ._policy import TokenPlacement
from ._redact import redact_url

__all__ = ["Sent", "copy_of", "token_in", "with_token"]


def token_in(request: httpx.Request, placement: TokenPlacement) -> str | None:
    """The token the request already carries where the platform expects it, or ``None``.

    For a path token: the segment at the token's place (first in the path, or right after a
    prefix in ``placement.after``) when it starts with ``placement.prefix`` and has more after
    it, percent-decoded (``/bot123:ABC/getMe`` -> ``123:ABC``).
    """
    if placement.location == "query":
        query = request.url.query
        if placement.name.encode() + b"=" not in query:  # cheap test before parsing the query
            return None
        return _query_value(query, placement.name)
    if placement.location == "path":
        _, tail = _split(request.url.raw_path.partition(b"?")[0], placement.after)
        segment = _segment(tail)
        prefix = placement.prefix.encode()
        if not segment.startswith(prefix) or len(segment) == len(prefix):
            return None
        return urllib.parse.unquote(segment[len(prefix) :].decode("ascii", "replace")) or None
    value = request.headers.get(placement.name)
    if not value:
        return None
    if placement.scheme and value[: len(placement.scheme) + 1].lower() == placement.scheme.lower() + " ":
        value = value[len(placement.scheme) + 1 :]
    return value.strip() or None


def with_token(request: httpx.Request, placement: TokenPlacement, token: str) -> httpx.Request:
    """A copy of the request with the token where the platform expects it.

    Query and header: the parameter or header is set (an old value replaced). Path: the token
    segment is replaced when the path has one at its place (:func:`token_in` finds it), and
    filled in otherwise (``/sendMessage`` -> ``/bot<token>/sendMessage``, ``/file/photos/a.jpg``
    -> ``/file/bot<token>/photos/a.jpg`` with ``after = ("/file",)``). A caller that must leave
    a URL carrying its own token as it is asks :func:`token_in` first, as the transport does.

    Never in place: httpx logs the client's own request URL at INFO, so a token written into it
    would reach the logs; and the inner transport keeps what it was sent.
    """
    copy = copy_of(request)  # as httpx.Request(...) with the same parts would build it, without re-parsing them
    if placement.location == "query":
        copy.url = _url_with_param(str(request.url), placement.name, token)
    elif placement.location == "path":
        copy.url = _url_with_path_token(str(request.url), placement.prefix, placement.after, token)
    else:
        copy.headers = request.headers.copy()
        copy.headers[placement.name] = placement.header_value(token)
    return copy


def copy_of(request: httpx.Request) -> httpx.Request:
    """A shallow copy: the same method, URL, headers object, stream; its own extensions dict (as
    ``httpx.Request(...)`` gives it). The caller swaps the URL or the headers, never changes them.
    Its repr hides credentials (see :class:`Sent`)."""
    copy = httpx.Request.__new__(Sent)
    copy.__dict__.update(request.__dict__)
    copy.extensions = dict(request.extensions)
    return copy


class Sent(httpx.Request):
    """A request retrypolicy built from the caller's (a token filled in, a timeout capped). Its
    repr redacts the URL: Sentry (``include_local_variables``), structlog's ``dict_tracebacks``
    (``show_locals``) and ``pytest --showlocals`` print the repr of every local of every frame in a
    traceback, and the frames that send it hold it."""

    def __repr__(self) -> str:
        return f"<Request({self.method!r}, {redact_url(self.url)!r})>"


@functools.lru_cache(maxsize=256)
def _query_value(query: bytes, name: str) -> str | None:
    # parsing a query takes httpx ~5 us; an SDK that builds its URLs with the token sends the same
    # few queries again and again (cached in memory only, like _url_with_param: the key holds the token)
    return httpx.QueryParams(query.decode("ascii")).get(name) or None


@functools.lru_cache(maxsize=256)
def _url_with_param(url: str, name: str, value: str) -> httpx.URL:
    # httpx parses and validates a URL in ~15 us; most apps call a few endpoints with one token at a
    # time, so the rewritten URLs are cached (in memory only; the key holds the token).
    return httpx.URL(url).copy_set_param(name, value)


@functools.lru_cache(maxsize=256)
def _url_with_path_token(url: str, prefix: str, after: tuple[str, ...], token: str) -> httpx.URL:
    # cached for the same reason as _url_with_param (the key holds the token, in memory only)
    parsed = httpx.URL(url)
    path, mark, query = parsed.raw_path.partition(b"?")
    head, tail = _split(path, after)
    segment = _segment(tail)
    filled = b"/" + prefix.encode() + urllib.parse.quote(token, safe=":").encode()
    if segment.startswith(prefix.encode()) and len(segment) > len(prefix):
        tail = tail[1 + len(segment) :]  # replace the token segment that is there
    return parsed.copy_with(raw_path=head + filled + tail + mark + query)


def _split(path: bytes, after: tuple[str, ...]) -> tuple[bytes, bytes]:
    """(head, tail) of a raw path: the token's segment is the first segment of ``tail``; ``head``
    is the listed prefix it follows (the longest that matches), or nothing."""
    for root in after:  # sorted longest first by the loader
        prefix = root.encode()
        if path == prefix or path.startswith(prefix + b"/"):
            return prefix, path[len(prefix) :]
    return b"", path


def _segment(tail: bytes) -> bytes:
    """The first segment of a path tail (``/bot1:A/getMe`` -> ``bot1:A``)."""
    if not tail.startswith(b"/"):
        return b""
    end = tail.find(b"/", 1)
    return tail[1:] if end < 0 else tail[1:end]
