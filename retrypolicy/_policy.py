"""Policy tables: the data model, and classification of a response.

A :class:`Policy` is immutable and its :meth:`Policy.classify` is a pure function of the
response: no I/O, no logging, no clock. Loading and validating TOML lives in ``_load.py``.
"""

from __future__ import annotations

import bisect
import email.utils
import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

import httpx

from ._breaker import CircuitBreaker, check_attempt_timeout
from ._errors import ConfigurationError
from ._overload import RetryBudget

__all__ = [
    "Category",
    "Classification",
    "Code",
    "Cooldown",
    "Extraction",
    "Policy",
    "RetrySettings",
    "Rule",
    "TokenPlacement",
    "WaitHint",
]

_decode = json.JSONDecoder().decode  # str in: skips json.loads' encoding sniffing (bodies are UTF-8)
_MAX_TEXT = 500  # longest vendor message kept in a classification
_MAX_CODE = 200  # longest string code kept from a body
MAX_WAIT = 86400.0
"""The longest relative wait a response can ask for (a day); a longer one is cut to it."""

Code = int | str
"""An error code or subcode: a number (``40001``), or a vendor's string (``"channel_not_found"``)."""


class Category(StrEnum):
    """What to do about a failure."""

    RETRYABLE = "retryable"
    """Transient: resend after a backoff."""
    TOKEN_REFRESH = "token-refresh"
    """The credential is expired or invalid: renew it once and resend."""
    USER_ACTION = "user-action"
    """A person must act (follow, reply, verify, pay, unfreeze...): never resent."""
    FATAL = "fatal"
    """The request itself is wrong: never resent."""


def categories_of(values: Iterable[Category | str], what: str) -> frozenset[Category]:
    """The categories named (``"fatal"`` or ``Category.FATAL``), or a ConfigurationError that says
    ``what`` took them (``raise_on``, ``categories``) and which are known."""
    values = list(values)
    try:
        return frozenset(Category(c) for c in values)
    except (ValueError, TypeError):
        raise ConfigurationError(
            f"{what} takes categories ({', '.join(Category)}), got {sorted(map(str, values))}"
        ) from None


@dataclass(frozen=True, slots=True)
class Cooldown:
    """After this code, requests in ``scope`` fail fast locally for a while.

    ``scope`` is ``"app"`` (every request to the platform) or ``"recipient"`` (requests to the
    same recipient, read from the request body with the table's ``recipient`` paths). The length
    is ``seconds``, or lasts ``until`` a wall-clock time such as ``"00:00+08:00"`` (the next
    midnight in Beijing, when WeChat's daily quotas reset).
    """

    scope: Literal["app", "recipient"]
    seconds: float = 0.0
    until: str = ""

    def duration(self, now_wall: float) -> float:
        """Seconds from ``now_wall`` (a Unix time) to the end of the cooldown."""
        if not self.until:
            return self.seconds
        hhmm, sign, offset = self.until[:5], self.until[5], self.until[6:]
        shift = (int(offset[:2]) * 3600 + int(offset[3:5]) * 60) * (1 if sign == "+" else -1)
        target = int(hhmm[:2]) * 3600 + int(hhmm[3:5]) * 60
        local = (now_wall + shift) % 86400
        return (target - local) % 86400 or 86400.0


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of a policy table: a code (or inclusive range) and what it means."""

    category: Category
    description: str
    code: Code | None = None
    range: tuple[int, int] | None = None
    subcode: Code | None = None
    remediation: str | None = None
    note: str | None = None
    min_delay: float = 0.0
    ambiguous: bool = False
    cooldown: Cooldown | None = None
    message_pattern: re.Pattern[str] | None = None
    """A regular expression searched in the vendor's message; the rule matches only if it is found."""

    @property
    def label(self) -> str:
        """The code, range or code/subcode as text, with the message pattern if any: ``40001``,
        ``120001-130000``, ``190/463``, ``channel_not_found``, ``403 /(?i)bot was blocked/``."""
        if self.range is not None:
            return f"{self.range[0]}-{self.range[1]}"
        text = "" if self.code is None else f"{self.code}" if self.subcode is None else f"{self.code}/{self.subcode}"
        if self.message_pattern is not None:
            pattern = f"/{self.message_pattern.pattern}/"
            return f"{text} {pattern}" if text else pattern
        return text


@dataclass(frozen=True, slots=True)
class Classification:
    """What a failed response means, according to a platform's table.

    ``source`` tells where the verdict came from: ``"body"`` (an error code in the body),
    ``"http"`` (no code; the HTTP status decided) or ``"transport"`` (no response at all).

    How long the response asked to wait before the next attempt, as it said it (the
    classification reads no clock): ``wait_hint``, seconds from when the response arrived (a
    relative hint: ``Retry-After: 30``, Telegram's ``parameters.retry_after``, Feishu's
    ``x-ogw-ratelimit-reset``, cut to :data:`MAX_WAIT`), or ``wait_until``, a Unix time in seconds
    (an absolute hint: an HTTP-date ``Retry-After``, a table's ``epoch_s``/``epoch_ms`` unit). At
    most one of the two is set; :meth:`wait_seconds` turns either into seconds from now.

    ``extra`` holds the body fields the table's ``[extract] extra`` names (Telegram's
    ``migrate_to_chat_id``), by their names in the table: numbers, booleans and strings as sent,
    anything else as JSON text.
    """

    platform: str
    code: Code | None
    category: Category
    message: str
    description: str
    remediation: str | None = None
    subcode: Code | None = None
    status_code: int | None = None
    request_id: str | None = None
    details: str | None = None
    note: str | None = None
    min_delay: float = 0.0
    ambiguous: bool = False
    cooldown: Cooldown | None = None
    known: bool = True
    source: Literal["body", "http", "transport"] = "body"
    wait_hint: float | None = None
    wait_until: float | None = None
    extra: Mapping[str, object] = field(default_factory=dict, hash=False)

    def wait_seconds(self, now: float) -> float | None:
        """Seconds to wait before the next attempt as the response asked, ``now`` being the Unix
        time (wall clock); ``None`` when it asked for nothing, or for a time already past."""
        if self.wait_hint is not None:
            return self.wait_hint
        if self.wait_until is not None:
            left = self.wait_until - now
            return min(left, MAX_WAIT) if left > 0 else None
        return None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (category as its string value)."""
        return {
            "platform": self.platform,
            "code": self.code,
            "subcode": self.subcode,
            "category": self.category.value,
            "message": self.message,
            "description": self.description,
            "remediation": self.remediation,
            "status_code": self.status_code,
            "request_id": self.request_id,
            "details": self.details,
            "note": self.note,
            "min_delay": self.min_delay,
            "ambiguous": self.ambiguous,
            "cooldown": None
            if self.cooldown is None
            else {"scope": self.cooldown.scope, "seconds": self.cooldown.seconds, "until": self.cooldown.until},
            "known": self.known,
            "source": self.source,
            "wait_hint": self.wait_hint,
            "wait_until": self.wait_until,
            "extra": dict(self.extra),
        }


Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Extraction:
    """Where a platform puts its error fields in a JSON body (dotted paths, first present wins)."""

    code: tuple[Path, ...] = ()
    message: tuple[Path, ...] = ()
    details: tuple[Path, ...] = ()
    subcode: tuple[Path, ...] = ()
    request_id: tuple[Path, ...] = ()
    transient: tuple[Path, ...] = ()
    request_id_pattern: re.Pattern[str] | None = None
    failure: tuple[Path, str | bool | int] | None = None
    request_id_header: tuple[str, ...] = ()  # response headers holding the request id, lower case
    extra: tuple[tuple[str, Path], ...] = ()  # (name, path) of body fields kept in Classification.extra

    def markers(self) -> tuple[bytes, ...]:
        """Byte strings of which at least one must occur in a body that carries an error."""
        roots = {p[0] for p in self.code if p and isinstance(p[0], str)}
        if self.failure is not None and isinstance(self.failure[0][0], str):
            roots.add(self.failure[0][0])
        return tuple(sorted(f'"{r}"'.encode() for r in roots))


WaitUnit = Literal["s", "ms", "epoch_s", "epoch_ms"]


@dataclass(frozen=True, slots=True)
class WaitHint:
    """Where a platform says how long to wait before the next attempt: a response header
    (``header``, lower case) or a body path (``path``), in ``unit``: ``"s"`` or ``"ms"`` from the
    response, or ``"epoch_s"`` / ``"epoch_ms"``, a Unix time. ``Retry-After`` is read whenever the
    declared place holds nothing."""

    header: str = ""
    path: Path | None = None
    unit: WaitUnit = "s"


@dataclass(frozen=True, slots=True)
class _SuccessScan:
    """Proof, by one regular-expression search instead of decoding JSON, that a body below
    HTTP 400 is a success.

    The verdict of a full decode depends only on the values of the code keys and of the failure
    key, wherever the table's paths find them. So if no occurrence of a code key (the last
    component of a code path, quoted) is followed by anything but ``:<success code>`` and ``,``
    or ``}``, and no occurrence of the failure key by anything but a string other than the
    failure value, the body decodes to a success. The search looks at every position, inside
    strings too, so a look-alike only makes the proof fail, never succeed wrongly. A ``\\u``
    escape could spell a key or a value unseen, so a body holding one is decoded; so is one with
    NUL bytes (UTF-16/32), and one that does not end in ``}`` (cut off, perhaps inside the failure
    value: ``"ActionStatus":"FAI``), which then counts as a success only if it decodes to one. A
    body that fails the proof is decoded as before.
    """

    unproved: Callable[[bytes], re.Match[bytes] | None]  # the pattern's search: a match, no proof

    @classmethod
    def build(cls, extract: Extraction, success_codes: frozenset[Code]) -> _SuccessScan | None:
        lasts = {path[-1] for path in extract.code if path}
        if not all(isinstance(last, str) for last in lasts):
            return None  # a path ending in a list index: no key to look for
        # a success code as a body spells it: 0, or "OK" (a string code, quoted)
        spelled = sorted(str(c).encode() if isinstance(c, int) else _json_bytes(c) for c in success_codes)
        codes = b"|".join(re.escape(c) for c in spelled)
        patterns = []  # each starts with a quoted key
        for last in sorted(map(str, lasts)):  # a code key not followed by a success code
            key = re.escape(_json_bytes(last))
            patterns.append(key + (rb"(?!: ?(?:" + codes + rb")[,}])" if codes else b""))
        if extract.failure is not None:
            path, value = extract.failure
            if not (path and isinstance(path[-1], str)):
                return None
            key = re.escape(_json_bytes(path[-1]))
            if isinstance(value, str):  # not a string, or the failure value
                patterns.append(key + rb'(?:(?!: ?")|: ?' + re.escape(_json_bytes(value)) + b")")
            else:  # true/false/a number: proved only by a string, or by a literal that is not the value
                others = [lit for lit in (b"true", b"false", b"null") if lit != _json_bytes(value)]
                patterns.append(key + rb'(?!: ?(?:"|(?:' + b"|".join(others) + rb")[,}]))")
        if not patterns:
            return None
        # One search, not one per key: the engine scans in C for the quote all patterns start with
        # (for the whole key when there is one), and sets up once.
        one = b'"(?:' + b"|".join(pattern[1:] for pattern in patterns) + b")"
        return cls(re.compile(one).search)

    def proves_success(self, content: bytes) -> bool:
        return (
            self.unproved(content) is None
            and content.find(b"\\u") < 0
            and content.find(b"\x00") < 0
            and content.rstrip()[-1:] == b"}"
        )


@dataclass(frozen=True, slots=True)
class TokenPlacement:
    """Where the credential goes in a request: a query parameter, a header, or the URL path.

    In the path (``location = "path"``), the token is a segment ``prefix + token``: the first
    segment of the path (Telegram: ``/bot<token>/sendMessage``), or the one right after a path
    prefix listed in ``after`` (``("/file",)``: ``/file/bot<token>/<file_path>``).
    """

    location: Literal["query", "header", "path"] = "query"
    name: str = "access_token"
    scheme: str = ""
    prefix: str = ""
    after: tuple[str, ...] = ()

    def header_value(self, token: str) -> str:
        return f"{self.scheme} {token}" if self.scheme else token


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Backoff and limits for retryable failures. Checks itself: a value out of range is a
    :class:`~retrypolicy.ConfigurationError` naming the field (a table's ``[retry]`` section
    gets a ``PolicyError`` naming the file and field)."""

    max_attempts: int = 4
    initial_delay: float = 0.5
    max_delay: float = 20.0
    deadline: float = 60.0
    max_body_bytes: int = 65536
    min_delay: float = 0.0  # every retry waits at least this long (a rule's min_delay or a wait hint may ask more)
    attempt_timeout: float | None = None  # caps each attempt's httpx timeouts (the deadline's time left caps them too)

    def __post_init__(self) -> None:
        if not _whole(self.max_attempts) or not 1 <= self.max_attempts <= 100:
            raise ConfigurationError(f"max_attempts must be an integer from 1 to 100, got {self.max_attempts!r}")
        for name in ("initial_delay", "max_delay", "deadline", "min_delay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
                raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")
        if not _whole(self.max_body_bytes) or self.max_body_bytes < 1:
            raise ConfigurationError(f"max_body_bytes must be a positive integer, got {self.max_body_bytes!r}")
        timeout = self.attempt_timeout
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < math.inf
        ):
            raise ConfigurationError(f"attempt_timeout must be a finite number of seconds > 0 or None, got {timeout!r}")
        problem = impossible_limits(self.max_attempts, self.min_delay, self.deadline, timeout)
        if problem is not None:
            raise ConfigurationError(problem)


DEFAULT_BREAKER = CircuitBreaker()
"""A table's breaker when it has no ``[breaker]`` section."""


def impossible_limits(
    max_attempts: int, min_delay: float, deadline: float, attempt_timeout: float | None, what: str = ""
) -> str | None:
    """Why these limits cannot work together, or None. ``what`` says whose they are ("this
    request's "), for the message."""
    if attempt_timeout is not None and attempt_timeout > deadline:
        return (
            f"{what}attempt_timeout ({attempt_timeout:g} s) is longer than the deadline ({deadline:g} s): "
            "an attempt can never use it; shorten attempt_timeout or lengthen the deadline"
        )
    waits = max_attempts - 1
    if waits and min_delay > 0 and waits * min_delay >= deadline:
        return (
            f"{what}max_attempts ({max_attempts}) needs {waits} waits of at least min_delay ({min_delay:g} s), "
            f"{waits * min_delay:g} s in all, which leaves no time for the attempts within the deadline "
            f"({deadline:g} s): the last attempts could never be made; lower max_attempts or min_delay, "
            "or lengthen the deadline"
        )
    return None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_CODE_TEXT = re.compile(r"\s*-?\d{1,18}\s*")


def _charset(headers: Mapping[str, str] | None) -> str | None:
    """The charset a Content-Type header declares, lower case, or None."""
    if headers is None:
        return None
    ctype = headers.get("content-type")
    if not ctype or "charset" not in ctype.lower():
        return None
    for param in ctype.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip("\"'").lower() or None
    return None


@functools.lru_cache(maxsize=64)
def _ascii_compatible(charset: str | None) -> bool:
    """Does the charset write JSON's punctuation, digits and ASCII keys as ASCII bytes?"""
    if charset is None or charset in ("utf-8", "utf8", "us-ascii", "ascii"):
        return True
    sample = '{"errcode": -1, "ErrorCode": [0123456789], "ok": true}'
    try:
        return sample.encode(charset) == sample.encode("ascii")
    except (LookupError, UnicodeError):
        return True  # an unknown charset: read as UTF-8, like a body that declares none


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
        return int(value)
    if isinstance(value, str) and _CODE_TEXT.fullmatch(value):
        return int(value)
    return None


def _as_code(value: object, strings: bool) -> Code | None:
    """A code as the table compares it: a number (a JSON number, or a string of digits such as
    DingTalk's ``"40014"``), else, where the table has string codes, the trimmed string."""
    if isinstance(value, str):
        if _CODE_TEXT.fullmatch(value):
            return int(value)
        if strings:
            text = value.strip()
            return text[:_MAX_CODE] if text else None
        return None
    return _as_int(value)


def _json_bytes(value: object) -> bytes:
    """A value as a JSON body spells it, without escapes: ``"ok"``, ``false``."""
    return json.dumps(value, ensure_ascii=False).encode()


def _same(found: object, value: str | bool | int) -> bool:
    """Is a body value the failure value? Strictly: ``0`` is not ``false``, ``"1"`` is not ``1``."""
    if isinstance(value, bool) or isinstance(found, bool):
        return found is value
    return type(found) is type(value) and found == value


def _number(value: object) -> float | None:
    """A finite number from a JSON number or a numeric string; ``None`` otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _http_date(value: str) -> float | None:
    """A Unix time from an HTTP date (``Wed, 21 Oct 2026 07:28:00 GMT``); ``None`` if it is not one."""
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return when.timestamp()


def _wait(value: object, unit: WaitUnit, header: bool) -> tuple[float | None, float | None]:
    """(seconds, Unix time) from a wait hint's raw value; (None, None) if it is absent or unusable.
    A header value that is an HTTP date is a time, whatever the unit."""
    number = _number(value)
    if number is None:
        until = _http_date(value) if header and isinstance(value, str) else None
        return (None, until) if until is not None and until > 0 else (None, None)
    if unit in ("epoch_s", "epoch_ms"):
        until = number / 1000 if unit == "epoch_ms" else number
        return (None, until) if until > 0 else (None, None)
    seconds = number / 1000 if unit == "ms" else number
    return (min(seconds, MAX_WAIT), None) if seconds > 0 else (None, None)


def _extra_value(value: object) -> object:
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:_MAX_TEXT]
    return _text(value)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value (several joined by ", "), or ``None``; ``name`` in lower case. For
    ``httpx.Headers`` without the cost of a ``KeyError`` when it is absent, the common case."""
    if isinstance(headers, httpx.Headers):
        values = headers.get_list(name)
        return ", ".join(values) if values else None
    return headers.get(name)


def _get(obj: object, path: Path) -> object:
    for key in path:
        if isinstance(key, int):
            if not isinstance(obj, list) or not -len(obj) <= key < len(obj):
                return None
            obj = obj[key]
        elif isinstance(obj, dict):
            obj = obj.get(key)
        else:
            return None
    return obj


def _first(obj: object, paths: Sequence[Path]) -> object:
    for path in paths:
        value = _get(obj, path)
        if value is not None:
            return value
    return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):  # pragma: no cover - JSON values always dump
            value = repr(value)
    return value[:_MAX_TEXT]


def _http_key(status: int) -> tuple[str, str]:
    return str(status), f"{status // 100}xx"


@dataclass(frozen=True)
class Policy:
    """One platform's table: how to find an error in a body and what each code means.

    Immutable. Build one with :func:`retrypolicy.load_policy`; derive variants with
    :meth:`with_retry`.
    """

    platform: str
    title: str
    rules: tuple[Rule, ...]
    extract: Extraction
    token: TokenPlacement = TokenPlacement()
    retry: RetrySettings = RetrySettings()
    http: Mapping[str, Category] = field(default_factory=dict)
    success_codes: frozenset[Code] = frozenset({0})
    unknown_category: Category = Category.FATAL
    ambiguous_http: frozenset[int] = frozenset({500, 502, 504})
    recipient: tuple[Path, ...] = ()
    idempotent_paths: tuple[str, ...] = ()  # URL path globs safe to resend after an ambiguous failure
    budget: RetryBudget | bool | None = None  # a RetryBudget, or False to switch the budget off; None: the transport's
    docs: str = ""
    source: str = "<policy>"
    wait_hint: WaitHint | None = None  # where the platform says how long to wait, besides Retry-After
    breaker: CircuitBreaker | None = DEFAULT_BREAKER  # None: no circuit breaker for this platform
    _exact: dict[tuple[Code, Code | None], Rule] = field(init=False, repr=False, compare=False)
    # message-pattern rules by (code, subcode), in table order; (None, None): the pattern-only rules
    _patterns: dict[tuple[Code | None, Code | None], tuple[Rule, ...]] = field(init=False, repr=False, compare=False)
    _range_starts: list[int] = field(init=False, repr=False, compare=False)
    _ranges: list[Rule] = field(init=False, repr=False, compare=False)
    _markers: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _success_scan: _SuccessScan | None = field(init=False, repr=False, compare=False)  # the fast path's
    _proof: _SuccessScan | None = field(init=False, repr=False, compare=False)  # the same, for unparseable bodies
    _string_codes: bool = field(init=False, repr=False, compare=False)
    _string_subcodes: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = check_attempt_timeout(self.breaker, self.retry.attempt_timeout, "retry.attempt_timeout")
        if problem is not None:
            raise ConfigurationError(problem)
        exact: dict[tuple[Code, Code | None], Rule] = {}
        patterns: dict[tuple[Code | None, Code | None], tuple[Rule, ...]] = {}
        ranges: list[Rule] = []
        for rule in self.rules:
            if rule.range is not None:
                ranges.append(rule)
            elif rule.message_pattern is not None:
                key = (rule.code, rule.subcode)
                patterns[key] = (*patterns.get(key, ()), rule)
            elif rule.code is not None:
                exact[(rule.code, rule.subcode)] = rule
        ranges.sort(key=lambda r: r.range[0] if r.range else 0)
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_patterns", patterns)
        object.__setattr__(self, "_ranges", ranges)
        object.__setattr__(self, "_range_starts", [r.range[0] for r in ranges if r.range])
        object.__setattr__(self, "_markers", self.extract.markers())
        # success bodies are proved so by one regex search, not decoded (see _SuccessScan)
        object.__setattr__(self, "_success_scan", _SuccessScan.build(self.extract, self.success_codes))
        object.__setattr__(self, "_proof", self._success_scan)
        # a code in a body that is not a number is read as a string only where the table has such codes
        strings = any(isinstance(c, str) for c in self.success_codes)
        object.__setattr__(self, "_string_codes", strings or any(isinstance(r.code, str) for r in self.rules))
        object.__setattr__(self, "_string_subcodes", any(isinstance(r.subcode, str) for r in self.rules))

    def __repr__(self) -> str:
        return f"<Policy {self.platform!r}: {len(self.rules)} rules from {self.source}>"

    # -- lookups ---------------------------------------------------------------------------

    def rule_for(self, code: Code | None, subcode: Code | None = None, message: str | None = None) -> Rule | None:
        """The most specific rule for a code (a number or a string), its subcode and the vendor's
        message: code+subcode (+ a message pattern first), then code + a message pattern, then
        code, then a pattern-only rule, then a range. Message patterns count only when ``message``
        is given; among the pattern rules of one key, the first in table order that matches wins."""
        patterns = self._patterns if message is not None else None
        if subcode is not None:
            if patterns:
                rule = _search(patterns.get((code, subcode)), message)
                if rule is not None:
                    return rule
            if code is not None:
                rule = self._exact.get((code, subcode))
                if rule is not None:
                    return rule
        if patterns and code is not None:
            rule = _search(patterns.get((code, None)), message)
            if rule is not None:
                return rule
        if code is not None:
            rule = self._exact.get((code, None))
            if rule is not None:
                return rule
        if patterns:
            rule = _search(patterns.get((None, None)), message)
            if rule is not None:
                return rule
        if isinstance(code, int):
            i = bisect.bisect_right(self._range_starts, code) - 1
            if i >= 0:
                candidate = self._ranges[i]
                if candidate.range is not None and code <= candidate.range[1]:
                    return candidate
        return None

    def with_retry(self, **changes: Any) -> Policy:
        """A copy with some :class:`RetrySettings` fields changed."""
        return replace(self, retry=replace(self.retry, **changes))

    # -- classification ----------------------------------------------------------------------

    def classify(self, response: httpx.Response) -> Classification | None:
        """Classify a response; ``None`` means success. Pure: no I/O, no logging.

        Reads ``response.content`` only if the response has been read already; for an unread
        stream only the HTTP status counts. Never raises on a strange body.
        """
        try:
            content: bytes | None = response.content
        except httpx.ResponseNotRead:
            content = None
        return self.classify_parts(response.status_code, content, headers=response.headers)

    def classify_parts(
        self,
        status_code: int,
        content: bytes | None,
        *,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Classification | None:
        """Classify from a status code and body bytes (``None``: body not read).

        ``headers`` (optional; case-insensitive like ``httpx.Headers``, or with lower-case names)
        give the body's declared charset (``Content-Type: ...; charset=gbk``), the request id of a
        table's ``request_id_header`` and the wait hints (``Retry-After``, a table's
        ``[wait_hint] header``). Without a charset the body is read as UTF-8, a BOM allowed. A body
        that carries an error marker but cannot be decoded or parsed is never a success (see
        :meth:`_unreadable`).
        """
        scan = self._success_scan
        # The proof of success works on the bytes of any ASCII-compatible charset; UTF-16/32 hold
        # NUL bytes and are decoded instead.
        if (
            status_code < 400
            and content
            and scan is not None
            and len(content) <= self.retry.max_body_bytes
            and scan.unproved(content) is None  # scan.proves_success(content), inlined: the hot path
            and content.find(b"\\u") < 0
            and content.find(b"\x00") < 0
            and content.rstrip()[-1:] == b"}"  # whole: a cut-off body ("ActionStatus":"FAI) is decoded
        ):
            return None
        found = self._from_body(status_code, content, headers) if content else None
        if found is not None:
            return found if isinstance(found, Classification) else None
        if status_code < 400:
            return None
        return self._from_status(
            status_code, httpx.codes.get_reason_phrase(status_code) if reason is None else reason, headers
        )

    def explain(self, code: Code, subcode: Code | None = None, message: str | None = None) -> Classification:
        """What a code (a number or a string) means, as a classification. With ``message``, the
        rules with a message pattern are tried on it too, and it is the classification's message."""
        return self._classify_code(code, subcode, message=message or "", status_code=None, pattern=message is not None)

    def _from_body(
        self, status_code: int, content: bytes, headers: Mapping[str, str] | None = None
    ) -> Classification | Literal[True] | None:
        """A classification, ``True`` for success by code, or ``None`` when the body has no code."""
        body = self._body(status_code, content, headers)
        if not isinstance(body, dict):
            return body  # no code to read (None), or a body that names one but cannot be read
        ex = self.extract
        raw_code = _first(body, ex.code)
        failed = ex.failure is not None and _same(_get(body, ex.failure[0]), ex.failure[1])
        if raw_code is None and not failed:
            return None
        code = _as_code(raw_code, self._string_codes)
        if code is not None and code in self.success_codes and not failed:
            return True
        if code is None and raw_code is None and not failed:
            return None
        message = _text(_first(body, ex.message)) or ""
        request_id = _text(_first(body, ex.request_id))
        if request_id is None and ex.request_id_pattern is not None:
            m = ex.request_id_pattern.search(message)
            request_id = m.group(1) if m else None
        if request_id is None and ex.request_id_header and headers is not None:
            request_id = self._header_request_id(headers)
        transient = _first(body, ex.transient) is True
        wait_hint, wait_until = self._wait(body, headers)
        extra = (
            {name: _extra_value(v) for name, path in ex.extra if (v := _get(body, path)) is not None}
            if ex.extra
            else {}
        )
        if code is None or code in self.success_codes:
            # An error marker without a usable code ("FAIL" with ErrorCode 0, errcode "abc", ok:false).
            rule = self.rule_for(None, None, message) if self._patterns else None
            if rule is not None:  # a pattern-only rule knows the message
                return self._verdict(
                    rule,
                    code,
                    None,
                    message=message,
                    status_code=status_code,
                    request_id=request_id,
                    details=_text(_first(body, ex.details)),
                    wait_hint=wait_hint,
                    wait_until=wait_until,
                    extra=extra,
                )
            return Classification(
                platform=self.platform,
                code=code,
                category=Category.RETRYABLE if transient else self.unknown_category,
                message=message,
                description=f"Error reported without a usable code ({raw_code!r:.40})",
                status_code=status_code,
                request_id=request_id,
                known=False,
                wait_hint=wait_hint,
                wait_until=wait_until,
                extra=extra,
            )
        return self._classify_code(
            code,
            _as_code(_first(body, ex.subcode), self._string_subcodes),
            message=message,
            status_code=status_code,
            request_id=request_id,
            details=_text(_first(body, ex.details)),
            transient=transient,
            wait_hint=wait_hint,
            wait_until=wait_until,
            extra=extra,
        )

    def _body(
        self, status_code: int, content: bytes, headers: Mapping[str, str] | None
    ) -> dict[str, Any] | Classification | None:
        """The body as a JSON object, in its declared charset; ``None`` when it cannot hold a code
        (too large, no code key in it, not an object); a classification when it names a code key
        but cannot be decoded or parsed (see :meth:`_unreadable`)."""
        if len(content) > self.retry.max_body_bytes:
            return None
        charset = _charset(headers)
        if content.find(b"\x00") < 0 and _ascii_compatible(charset):  # the markers are visible as bytes
            if not any(marker in content for marker in self._markers):
                return None
        elif charset is None:
            charset = json.detect_encoding(content)  # UTF-16/32, told by the BOM or the NUL bytes
        try:
            try:
                text = content.decode(charset or "utf-8")
            except LookupError:  # a charset Python does not know: read as UTF-8
                text = content.decode("utf-8")
            body = _decode(text[1:] if text.startswith("\ufeff") else text)
        except (ValueError, RecursionError) as exc:  # bad JSON or bytes, absurd nesting
            return self._unreadable(status_code, exc, charset, headers, content)
        return body if isinstance(body, dict) else None

    def _header_request_id(self, headers: Mapping[str, str]) -> str | None:
        for name in self.extract.request_id_header:
            value = _header(headers, name)
            if value:
                return value[:_MAX_TEXT]
        return None

    def _wait(self, body: object, headers: Mapping[str, str] | None) -> tuple[float | None, float | None]:
        """(seconds, Unix time) the response asks to wait: the table's ``[wait_hint]``, else
        ``Retry-After``; (None, None) when neither says anything usable."""
        hint = self.wait_hint
        if hint is not None:
            if hint.path is not None:
                found = _wait(_get(body, hint.path), hint.unit, header=False) if body is not None else (None, None)
            else:
                value = _header(headers, hint.header) if headers is not None else None
                found = _wait(value, hint.unit, header=True) if value is not None else (None, None)
            if found != (None, None):
                return found
        value = _header(headers, "retry-after") if headers is not None else None
        return _wait(value, "s", header=True) if value is not None else (None, None)

    def _classify_code(
        self,
        code: Code,
        subcode: Code | None,
        *,
        message: str,
        status_code: int | None,
        request_id: str | None = None,
        details: str | None = None,
        transient: bool = False,
        wait_hint: float | None = None,
        wait_until: float | None = None,
        extra: Mapping[str, object] | None = None,
        pattern: bool = True,
    ) -> Classification:
        rule = self.rule_for(code, subcode, message if pattern else None)
        if rule is None:
            return Classification(
                platform=self.platform,
                code=code,
                subcode=subcode,
                category=Category.RETRYABLE if transient else self.unknown_category,
                message=message,
                description=f"Code {code} is not in the {self.platform} table"
                + (" (the platform marks it transient)" if transient else ""),
                status_code=status_code,
                request_id=request_id,
                details=details,
                known=False,
                wait_hint=wait_hint,
                wait_until=wait_until,
                extra=extra if extra is not None else {},
            )
        return self._verdict(
            rule,
            code,
            subcode,
            message=message,
            status_code=status_code,
            request_id=request_id,
            details=details,
            wait_hint=wait_hint,
            wait_until=wait_until,
            extra=extra,
        )

    def _verdict(
        self,
        rule: Rule,
        code: Code | None,
        subcode: Code | None,
        *,
        message: str,
        status_code: int | None,
        request_id: str | None,
        details: str | None,
        wait_hint: float | None,
        wait_until: float | None,
        extra: Mapping[str, object] | None,
    ) -> Classification:
        return Classification(
            platform=self.platform,
            code=code,
            subcode=subcode,
            category=rule.category,
            message=message,
            description=rule.description,
            remediation=rule.remediation,
            status_code=status_code,
            request_id=request_id,
            details=details,
            note=rule.note,
            min_delay=rule.min_delay,
            ambiguous=rule.ambiguous,
            cooldown=rule.cooldown,
            wait_hint=wait_hint,
            wait_until=wait_until,
            extra=extra if extra is not None else {},
        )

    def _unreadable(
        self,
        status_code: int,
        exc: BaseException,
        charset: str | None,
        headers: Mapping[str, str] | None = None,
        content: bytes = b"",
    ) -> Classification | None:
        """A body meant to be read for a code (it names a code key, or its charset hides them)
        that cannot be decoded or parsed. From 400 up its status decides (``None`` here); below,
        it is not taken for a success: retryable but ambiguous, since the request may have been
        carried out, so only an idempotent request is resent. Unless the regex proof of success
        holds (:class:`_SuccessScan`): every code key in it visibly holds a success code, it ends
        in ``}`` (not cut off), and a strict parser refused it for bytes around that (a success
        object followed by junk, a trailing comma). The fast path takes such a body for a
        success without decoding it, and a decode must not say otherwise."""
        if status_code >= 400 or (self._proof is not None and self._proof.proves_success(content)):
            return None
        what = "decoded" if isinstance(exc, UnicodeError) else "parsed"
        return Classification(
            platform=self.platform,
            code=None,
            category=Category.RETRYABLE,
            message=f"{type(exc).__name__} ({charset or 'utf-8'})",
            description=f"HTTP {status_code} with a body that could not be {what} to read its error code",
            status_code=status_code,
            request_id=self._header_request_id(headers)
            if headers is not None and self.extract.request_id_header
            else None,
            ambiguous=True,
            known=False,
        )

    def _from_status(self, status_code: int, reason: str, headers: Mapping[str, str] | None = None) -> Classification:
        exact, klass = _http_key(status_code)
        category = self.http.get(exact) or self.http.get(klass)
        if category is None:
            category = Category.RETRYABLE if status_code >= 500 else Category.FATAL
        wait_hint, wait_until = self._wait(None, headers)
        return Classification(
            platform=self.platform,
            code=None,
            category=category,
            message=reason,
            description=f"HTTP {status_code} with no error code in the body",
            status_code=status_code,
            request_id=self._header_request_id(headers)
            if headers is not None and self.extract.request_id_header
            else None,
            ambiguous=category is Category.RETRYABLE and status_code in self.ambiguous_http,
            source="http",
            wait_hint=wait_hint,
            wait_until=wait_until,
        )


def _search(rules: tuple[Rule, ...] | None, message: str | None) -> Rule | None:
    """The first rule whose message pattern is found in the message."""
    if rules is None or message is None:
        return None
    for rule in rules:
        if rule.message_pattern is not None and rule.message_pattern.search(message) is not None:
            return rule
    return None
