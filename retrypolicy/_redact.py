"""Keeping credentials out of logs, exception messages, exception chains and reprs.

The rule (stated in the README, "What is redacted, and by which rule"):

* a query parameter, header, ``name=value`` pair or JSON/dict ``"name": "value"`` pair is secret
  when its name, compared case-insensitively, contains one of :data:`SECRET_NAME_PARTS` (token,
  secret, sig, passw, ticket, key), or is in the fixed lists :data:`SECRET_PARAMS` /
  :data:`SECRET_HEADERS` (authorization, cookie, authorization codes, ...);
* ``Bearer ...`` / ``Basic ...`` credentials in free text;
* known secret values (the current tokens, the token of the request), wherever they appear;
* a bot token in a URL path (Telegram's ``/bot<id>:<secret>/...``), in URLs and in free text.

Exceptions we raise are chained only to a scrubbed stand-in of their cause (:func:`raise_from`).
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Iterable
from typing import NoReturn

import httpx

__all__ = [
    "REDACTED",
    "SECRET_HEADERS",
    "SECRET_NAME_PARTS",
    "SECRET_PARAMS",
    "is_secret_name",
    "raise_from",
    "redact_headers",
    "redact_path_token",
    "redact_url",
    "scrub",
    "stand_in",
]

REDACTED = "***"
SECRET_NAME_PARTS = ("token", "secret", "sig", "passw", "ticket", "key")
"""A name containing any of these (case-insensitive) is secret: ``component_access_token``,
``authorizer_refresh_token``, ``jsapi_ticket``, ``X-Acs-Dingtalk-Access-Token``, ``usersig``,
``api_key``... (and, harmlessly, ``keyword`` or ``design``)."""
SECRET_PARAMS = frozenset(
    {
        "access_token",
        "usersig",
        "secret",
        "appsecret",
        "client_secret",
        "password",
        "token",
        "sig",
        "userSig",
        # one-time authorization codes that can be exchanged for tokens (OAuth, WeChat Open Platform)
        "auth_code",
        "pre_auth_code",
        "authorization_code",
    }
)
"""Query parameter and pair names that are secret whatever the rule says."""
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
"""Header names that are secret whatever the rule says."""

_FIXED = frozenset(n.lower() for n in SECRET_PARAMS | SECRET_HEADERS)
_NAME_RULE = re.compile("|".join(SECRET_NAME_PARTS), re.IGNORECASE)
# Free text: name=value (query strings, forms, logfmt), optionally quoted, or "name": "value" /
# 'name': 'value' (JSON, Python reprs), whose value may be cut short by the end of the text (a
# vendor message truncated to 500 characters). Not "name: value", which is prose ("Error validating
# access token: Session has expired"). Which names are secret is decided by is_secret_name().
# The name is matched possessively and only from its start, so a long text is scanned in one pass.
_PAIR = re.compile(
    r"""(?<![A-Za-z0-9_.\-])(?P<name>[A-Za-z0-9_.\-]++)(?:
        (?P<eq>\s*=\s*)(?P<v1>"[^"]*"|'[^']*'|["']?[^\s&"',;]+)
      | (?P<q>["'])(?P<colon>\s*:\s*)(?P<vq>["'])(?P<v2>(?:\\.|(?!(?P=vq))[^\\])*)(?:(?P=vq)|\Z)
    )""",
    re.VERBOSE,
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
# a bot token as a URL path segment: /bot<digits>:<secret> (the colon may be percent-encoded)
_PATH_TOKEN = re.compile(r"(/bot)\d+(?::|%3[Aa])[A-Za-z0-9_-]+")
_SHORTEST = 4  # known values shorter than this are not searched for (they would match everywhere)


@functools.lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """Is a parameter, header or field of this name secret? (See the module docstring.)"""
    return name.lower() in _FIXED or _NAME_RULE.search(name) is not None


def redact_url(url: httpx.URL | str) -> str:
    """The URL as text with secret query parameters (by name, see :func:`is_secret_name`), secret
    pairs in the fragment and userinfo replaced by ``***``."""
    try:
        u = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return scrub(str(url))
    if u.userinfo:
        u = u.copy_with(username=REDACTED, password=None)
    if u.query:
        items = u.params.multi_items()
        if any(is_secret_name(k) for k, _ in items):
            u = u.copy_with(params=[(k, REDACTED if is_secret_name(k) else v) for k, v in items])
    text = redact_path_token(str(u).replace("%2A%2A%2A", REDACTED))
    if u.fragment:  # OAuth's implicit flow returns #access_token=...
        head, _, fragment = text.partition("#")
        text = f"{head}#{scrub(fragment)}"
    return text


def redact_path_token(text: str) -> str:
    """Text with every bot token in a URL path replaced: ``/bot123456:ABC-DEF.../getMe`` ->
    ``/bot***/getMe`` (Telegram puts the token there: ``/bot<token>/...``, ``/file/bot<token>/...``)."""
    return _PATH_TOKEN.sub(r"\1" + REDACTED, text) if "/bot" in text else text


def redact_headers(headers: httpx.Headers | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as a dict, values of secret names (see :func:`is_secret_name`) replaced by ``***``."""
    items = headers.multi_items() if isinstance(headers, httpx.Headers) else headers
    return {k: (REDACTED if is_secret_name(k) else v) for k, v in items}


def _pair(match: re.Match[str]) -> str:
    if not is_secret_name(match["name"]):
        return match[0]
    if match["eq"] is not None:
        value = match["v1"]
        quote = value[0] if value[:1] in ('"', "'") else ""
        return f"{match['name']}{match['eq']}{quote}{REDACTED}{quote}"
    return f"{match['name']}{match['q']}{match['colon']}{match['vq']}{REDACTED}{match['vq']}"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Text with known secret values, secret ``name=value`` / ``"name": "value"`` pairs and
    bearer/basic credentials replaced by ``***``.

    A known value is also found URL-encoded, and as a prefix at the very end of the text (where a
    message was cut short).
    """
    for secret in secrets:
        if secret and len(secret) >= _SHORTEST:
            text = _without(text, secret)
    if "=" in text or ":" in text:
        text = _PAIR.sub(_pair, text)
    return redact_path_token(_BEARER.sub(lambda m: m.group(1) + " " + REDACTED, text))


def _without(text: str, secret: str) -> str:
    text = text.replace(secret, REDACTED)
    for encoded in {urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret, safe="")}:
        if encoded != secret:
            text = text.replace(encoded, REDACTED)
    # a message truncated in the middle of the value: its tail is a prefix of the secret
    head = secret[:_SHORTEST]
    at = text.find(head, max(0, len(text) - len(secret) + 1))
    while at >= 0:
        if secret.startswith(text[at:]):
            return text[:at] + REDACTED
        at = text.find(head, at + 1)
    return text


# -- exception chains -----------------------------------------------------------------------------


def stand_in(exc: BaseException, secrets: Iterable[str] = ()) -> BaseException:
    """What to chain instead of ``exc``: an exception of the same type built from the scrubbed
    message alone, so with no ``__cause__``, ``__context__``, traceback or request (whose URL and
    headers hold the token).

    A type that cannot be built from one message, or whose text would differ from the scrubbed
    one, is stood in for by a :class:`ChainedError` naming it.
    """
    secrets = list(secrets)
    cls = type(exc)
    try:
        message = scrub(str(exc), secrets)
    except Exception:  # noqa: BLE001 - a broken __str__: say no more than the type
        message = ""
    try:
        copy = cls(message)
        if str(copy) == message and not _holds(copy, message):
            return copy
    except Exception:  # noqa: BLE001 - any constructor may refuse a lone message
        pass
    return ChainedError(f"{cls.__module__}.{cls.__qualname__}: {message}" if message else cls.__qualname__)


def _holds(copy: BaseException, message: str) -> bool:
    """Does the copy carry anything besides the message (args, a chain)?"""
    return copy.args != (message,) or copy.__cause__ is not None or copy.__context__ is not None


class ChainedError(Exception):
    """Stands in, in an exception chain, for a cause that could not be copied by type: its text is
    the original type's qualified name and its scrubbed message."""


def raise_from(exc: BaseException, cause: BaseException | None, secrets: Iterable[str] = ()) -> NoReturn:
    """``raise exc from <a scrubbed stand-in of cause>`` (``from None`` without a cause), and
    nothing else reachable from ``exc``.

    Python would also set ``exc.__context__`` to the exception being handled where we raise: a
    hook's error, or the failed first attempt that the transport hands to the flow, whose text and
    ``request`` may hold a token. ``from`` only hides it from tracebacks; here it is dropped.
    """
    try:
        raise exc from (stand_in(cause, secrets) if cause is not None else None)
    except BaseException:
        exc.__context__ = None  # a bare raise below sets no new context
        raise
