"""Keeping credentials out of logs, exception messages and reprs."""

from __future__ import annotations

import re
from collections.abc import Iterable

import httpx

__all__ = ["REDACTED", "SECRET_HEADERS", "SECRET_PARAMS", "redact_headers", "redact_url", "scrub"]

REDACTED = "***"
SECRET_PARAMS = frozenset(
    {"access_token", "usersig", "secret", "appsecret", "client_secret", "password", "token", "sig", "userSig"}
)
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
_LOWER_PARAMS = frozenset(p.lower() for p in SECRET_PARAMS)
# name=value pairs in free text (query strings, form bodies echoed by a server)
# name=value (query strings, forms) or "name": "value" (JSON); not "name: value", which is prose
# ("Error validating access token: Session has expired").
_PAIR = re.compile(
    r"(?i)\b(" + "|".join(sorted(map(re.escape, SECRET_PARAMS))) + r")(\s*=\s*|\"\s*:\s*\")([^\s&\"',;]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")


def redact_url(url: httpx.URL | str) -> str:
    """The URL as text with secret query parameters and userinfo replaced by ``***``."""
    try:
        u = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return scrub(str(url))
    if u.userinfo:
        u = u.copy_with(username=REDACTED, password=None)
    if u.query:
        params = [(k, REDACTED if k.lower() in _LOWER_PARAMS else v) for k, v in u.params.multi_items()]
        u = u.copy_with(params=params)
    return str(u).replace("%2A%2A%2A", REDACTED)


def redact_headers(headers: httpx.Headers | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Headers as a dict, secret values replaced by ``***``."""
    items = headers.multi_items() if isinstance(headers, httpx.Headers) else headers
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in items}


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Text with known secret values, ``name=value`` secret pairs and bearer tokens removed."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _PAIR.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + " " + REDACTED, text)
