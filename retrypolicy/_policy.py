"""Policy tables: the data model, and classification of a response.

A :class:`Policy` is immutable and its :meth:`Policy.classify` is a pure function of the
response: no I/O, no logging, no clock. Loading and validating TOML lives in ``_load.py``.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

import httpx

__all__ = ["Category", "Classification", "Cooldown", "Extraction", "Policy", "RetrySettings", "Rule", "TokenPlacement"]

_decode = json.JSONDecoder().decode  # str in: skips json.loads' encoding sniffing (bodies are UTF-8)
_MAX_TEXT = 500  # longest vendor message kept in a classification


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
    code: int | None = None
    range: tuple[int, int] | None = None
    subcode: int | None = None
    remediation: str | None = None
    note: str | None = None
    min_delay: float = 0.0
    ambiguous: bool = False
    cooldown: Cooldown | None = None

    @property
    def label(self) -> str:
        """The code, range or code/subcode as text: ``40001``, ``120001-130000``, ``190/463``."""
        if self.range is not None:
            return f"{self.range[0]}-{self.range[1]}"
        return f"{self.code}" if self.subcode is None else f"{self.code}/{self.subcode}"


@dataclass(frozen=True, slots=True)
class Classification:
    """What a failed response means, according to a platform's table.

    ``source`` tells where the verdict came from: ``"body"`` (an error code in the body),
    ``"http"`` (no code; the HTTP status decided) or ``"transport"`` (no response at all).
    """

    platform: str
    code: int | None
    category: Category
    message: str
    description: str
    remediation: str | None = None
    subcode: int | None = None
    status_code: int | None = None
    request_id: str | None = None
    details: str | None = None
    note: str | None = None
    min_delay: float = 0.0
    ambiguous: bool = False
    cooldown: Cooldown | None = None
    known: bool = True
    source: Literal["body", "http", "transport"] = "body"

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
    failure: tuple[Path, str] | None = None

    def markers(self) -> tuple[bytes, ...]:
        """Byte strings of which at least one must occur in a body that carries an error."""
        roots = {p[0] for p in self.code if p and isinstance(p[0], str)}
        if self.failure is not None and isinstance(self.failure[0][0], str):
            roots.add(self.failure[0][0])
        return tuple(sorted(f'"{r}"'.encode() for r in roots))


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
    def build(cls, extract: Extraction, success_codes: frozenset[int]) -> _SuccessScan | None:
        lasts = {path[-1] for path in extract.code if path}
        if not all(isinstance(last, str) for last in lasts):
            return None  # a path ending in a list index: no key to look for
        codes = b"|".join(re.escape(str(c).encode()) for c in sorted(success_codes))
        patterns = []  # each starts with a quoted key
        for last in sorted(map(str, lasts)):  # a code key not followed by a success code
            key = re.escape(json.dumps(last, ensure_ascii=False).encode())
            patterns.append(key + (rb"(?!: ?(?:" + codes + rb")[,}])" if codes else b""))
        if extract.failure is not None:
            path, value = extract.failure
            if not (path and isinstance(path[-1], str) and isinstance(value, str)):
                return None
            key, text = (re.escape(json.dumps(t, ensure_ascii=False).encode()) for t in (path[-1], value))
            patterns.append(key + rb'(?:(?!: ?")|: ?' + text + b")")  # not a string, or the failure value
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
    """Where the credential goes in a request: a query parameter or a header."""

    location: Literal["query", "header"] = "query"
    name: str = "access_token"
    scheme: str = ""

    def header_value(self, token: str) -> str:
        return f"{self.scheme} {token}" if self.scheme else token


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Backoff and limits for retryable failures."""

    max_attempts: int = 4
    initial_delay: float = 0.5
    max_delay: float = 20.0
    deadline: float = 60.0
    max_body_bytes: int = 65536


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
    success_codes: frozenset[int] = frozenset({0})
    unknown_category: Category = Category.FATAL
    ambiguous_http: frozenset[int] = frozenset({500, 502, 504})
    recipient: tuple[Path, ...] = ()
    idempotent_paths: tuple[str, ...] = ()  # URL path globs safe to resend after an ambiguous failure
    budget: Any = None  # a RetryBudget, or False to switch the budget off; None: the transport's
    docs: str = ""
    source: str = "<policy>"
    _exact: dict[tuple[int, int | None], Rule] = field(init=False, repr=False, compare=False)
    _range_starts: list[int] = field(init=False, repr=False, compare=False)
    _ranges: list[Rule] = field(init=False, repr=False, compare=False)
    _markers: tuple[bytes, ...] = field(init=False, repr=False, compare=False)
    _success_scan: _SuccessScan | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        exact: dict[tuple[int, int | None], Rule] = {}
        ranges: list[Rule] = []
        for rule in self.rules:
            if rule.range is not None:
                ranges.append(rule)
            elif rule.code is not None:
                exact[(rule.code, rule.subcode)] = rule
        ranges.sort(key=lambda r: r.range[0] if r.range else 0)
        object.__setattr__(self, "_exact", exact)
        object.__setattr__(self, "_ranges", ranges)
        object.__setattr__(self, "_range_starts", [r.range[0] for r in ranges if r.range])
        object.__setattr__(self, "_markers", self.extract.markers())
        # success bodies are proved so by one regex search, not decoded (see _SuccessScan)
        object.__setattr__(self, "_success_scan", _SuccessScan.build(self.extract, self.success_codes))

    def __repr__(self) -> str:
        return f"<Policy {self.platform!r}: {len(self.rules)} rules from {self.source}>"

    # -- lookups ---------------------------------------------------------------------------

    def rule_for(self, code: int, subcode: int | None = None) -> Rule | None:
        """The most specific rule for a code: code+subcode, then code, then a range."""
        if subcode is not None:
            rule = self._exact.get((code, subcode))
            if rule is not None:
                return rule
        rule = self._exact.get((code, None))
        if rule is not None:
            return rule
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

        ``headers`` (optional) give the body's declared charset (``Content-Type: ...;
        charset=gbk``); without one the body is read as UTF-8, a BOM allowed. A body that carries
        an error marker but cannot be decoded or parsed is never a success (see :meth:`_unreadable`).
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
        return self._from_status(status_code, httpx.codes.get_reason_phrase(status_code) if reason is None else reason)

    def explain(self, code: int, subcode: int | None = None) -> Classification:
        """What a code means, as a classification with no vendor message."""
        return self._classify_code(code, subcode, message="", status_code=None)

    def _from_body(
        self, status_code: int, content: bytes, headers: Mapping[str, str] | None = None
    ) -> Classification | Literal[True] | None:
        """A classification, ``True`` for success by code, or ``None`` when the body has no code."""
        if len(content) > self.retry.max_body_bytes:
            return None
        charset = _charset(headers)
        if content.find(b"\x00") < 0 and _ascii_compatible(charset):  # the markers are visible as bytes
            for marker in self._markers:
                if marker in content:
                    break
            else:
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
            return self._unreadable(status_code, exc, charset)
        if not isinstance(body, dict):
            return None
        ex = self.extract
        raw_code = _first(body, ex.code)
        failed = ex.failure is not None and _get(body, ex.failure[0]) == ex.failure[1]
        if raw_code is None and not failed:
            return None
        code = _as_int(raw_code)
        if code is not None and code in self.success_codes and not failed:
            return True
        if code is None and raw_code is None and not failed:
            return None
        message = _text(_first(body, ex.message)) or ""
        request_id = _text(_first(body, ex.request_id))
        if request_id is None and ex.request_id_pattern is not None:
            m = ex.request_id_pattern.search(message)
            request_id = m.group(1) if m else None
        transient = _first(body, ex.transient) is True
        if code is None or code in self.success_codes:
            # An error marker without a usable code ("FAIL" with ErrorCode 0, errcode "abc").
            return Classification(
                platform=self.platform,
                code=code,
                category=Category.RETRYABLE if transient else self.unknown_category,
                message=message,
                description=f"Error reported without a usable code ({raw_code!r:.40})",
                status_code=status_code,
                request_id=request_id,
                known=False,
            )
        return self._classify_code(
            code,
            _as_int(_first(body, ex.subcode)),
            message=message,
            status_code=status_code,
            request_id=request_id,
            details=_text(_first(body, ex.details)),
            transient=transient,
        )

    def _classify_code(
        self,
        code: int,
        subcode: int | None,
        *,
        message: str,
        status_code: int | None,
        request_id: str | None = None,
        details: str | None = None,
        transient: bool = False,
    ) -> Classification:
        rule = self.rule_for(code, subcode)
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
            )
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
        )

    def _unreadable(self, status_code: int, exc: BaseException, charset: str | None) -> Classification | None:
        """A body meant to be read for a code (it names a code key, or its charset hides them)
        that cannot be decoded or parsed. From 400 up its status decides (``None`` here); below,
        it is never taken for a success: retryable but ambiguous, since the request may have been
        carried out, so only an idempotent request is resent."""
        if status_code >= 400:
            return None
        what = "decoded" if isinstance(exc, UnicodeError) else "parsed"
        return Classification(
            platform=self.platform,
            code=None,
            category=Category.RETRYABLE,
            message=f"{type(exc).__name__} ({charset or 'utf-8'})",
            description=f"HTTP {status_code} with a body that could not be {what} to read its error code",
            status_code=status_code,
            ambiguous=True,
            known=False,
        )

    def _from_status(self, status_code: int, reason: str) -> Classification:
        exact, klass = _http_key(status_code)
        category = self.http.get(exact) or self.http.get(klass)
        if category is None:
            category = Category.RETRYABLE if status_code >= 500 else Category.FATAL
        return Classification(
            platform=self.platform,
            code=None,
            category=category,
            message=reason,
            description=f"HTTP {status_code} with no error code in the body",
            status_code=status_code,
            ambiguous=category is Category.RETRYABLE and status_code in self.ambiguous_http,
            source="http",
        )
