"""Loading and validating policy tables (TOML files; format in policies/SCHEMA.md)."""

from __future__ import annotations

import functools
import itertools
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ._breaker import CircuitBreaker, check_attempt_timeout
from ._errors import PolicyError
from ._overload import RetryBudget
from ._policy import (
    _CODE_TEXT,
    _MAX_CODE,
    DEFAULT_BREAKER,
    Category,
    Code,
    Cooldown,
    Extraction,
    Policy,
    RetrySettings,
    Rule,
    TokenPlacement,
    WaitHint,
)
from ._policy import Path as FieldPath
from ._redact import is_secret_name

__all__ = ["BUILTIN_POLICIES", "SHIPPED_POLICIES", "load_policy", "policy_from_mapping"]

BUILTIN_POLICIES = (
    "wechat", "tencent_im", "whatsapp_onprem", "whatsapp_cloud", "wecom", "feishu", "dingtalk", "slack", "telegram",
)  # fmt: skip
"""The platforms with everything: a table, a fake in ``retrypolicy.testing``, a demo scenario and an
example. Tests that need a fake platform run over these."""
SHIPPED_POLICIES = (*BUILTIN_POLICIES, "dingtalk_v1")
"""Every table shipped in ``policies/``: each loads by its name (``load_policy("slack")``), can be
extended (``extends = "slack"``) and is known to the CLI. The ones not (yet) in
:data:`BUILTIN_POLICIES` have no fake, demo or example, except ``dingtalk_v1``, DingTalk's new API,
which ``FakeDingTalk`` and the DingTalk example serve alongside the old one (``dingtalk``)."""

_TOP_KEYS = {
    "schema", "platform", "title", "docs", "extends", "unknown_category", "success_codes",
    "ambiguous_http", "extract", "token", "retry", "http", "rules", "recipient", "budget", "idempotent_paths",
    "wait_hint", "breaker",
}  # fmt: skip
_EXTRACT_KEYS = {
    "code", "message", "details", "subcode", "request_id", "transient", "request_id_pattern", "failure",
    "request_id_header", "extra",
}  # fmt: skip
_RULE_KEYS = {
    "code", "range", "subcode", "category", "description", "remediation", "note", "min_delay", "ambiguous",
    "cooldown", "message_pattern",
}  # fmt: skip
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_EXTRA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_WAIT_UNITS = ("s", "ms", "epoch_s", "epoch_ms")
_UNTIL = re.compile(r"([01]\d|2[0-3]):[0-5]\d[+-](0\d|1[0-4]):[0-5]\d")
_HTTP_KEY = re.compile(r"[1-5](?:\d\d|xx)")
_CATEGORIES = ", ".join(c.value for c in Category)


def _policies_dir() -> Path:
    here = Path(__file__).resolve().parent
    shipped = here / "policies"  # inside the wheel
    return shipped if shipped.is_dir() else here.parent / "policies"  # source checkout


def load_policy(name_or_path: str | os.PathLike[str] | Policy) -> Policy:
    """Load a policy: a built-in name (any of :data:`SHIPPED_POLICIES`: ``"wechat"``,
    ``"slack"``...), a path to a TOML file, or a Policy.

    A user file may say ``extends = "wechat"`` and list only what it changes; its rules
    replace the built-in rules with the same code, subcode and message pattern, or an
    overlapping range.
    Raises :class:`PolicyError` (a ``ValueError``) naming the file, rule and field at fault.
    """
    if isinstance(name_or_path, Policy):
        return name_or_path
    if isinstance(name_or_path, str) and name_or_path in SHIPPED_POLICIES:
        return _load_builtin(name_or_path)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise PolicyError(
            f"expected a built-in name ({', '.join(SHIPPED_POLICIES)}), a path or a Policy, "
            f"got {type(name_or_path).__name__}"
        )
    path = Path(name_or_path)
    if not path.suffix and os.sep not in str(name_or_path) and not path.exists():
        raise PolicyError(
            f"unknown platform {str(name_or_path)!r}; built-in: {', '.join(SHIPPED_POLICIES)}",
            source=str(name_or_path),
        )
    return _load_file(path)


@functools.cache
def _load_builtin(name: str) -> Policy:
    return _load_file(_policies_dir() / f"{name}.toml")


def _load_file(path: Path) -> Policy:
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError("file not found", source=source) from None
    except tomllib.TOMLDecodeError as exc:  # before ValueError, its base class
        raise PolicyError(f"malformed TOML: {exc}", source=source) from None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError; a NUL in the path
        raise PolicyError(f"cannot read: {exc}", source=source) from None
    except RecursionError:
        raise PolicyError("malformed TOML: nested too deeply", source=source) from None
    return policy_from_mapping(data, source=source)


def policy_from_mapping(data: Mapping[str, Any], *, source: str = "<policy>") -> Policy:
    """Build a policy from parsed TOML (a mapping); validates everything."""
    v = _Validator(source)
    v.keys(data, _TOP_KEYS, None)
    base: Policy | None = None
    extends = data.get("extends")
    if extends is not None:
        if extends not in SHIPPED_POLICIES:
            raise v.error(
                f"must name a built-in table ({', '.join(SHIPPED_POLICIES)}), got {extends!r}",
                field="extends",
            )
        base = _load_builtin(extends)
    schema = data.get("schema", 1)
    if schema != 1:
        raise v.error(f"unsupported schema {schema!r}; this version reads schema 1", field="schema")

    platform = v.string(data, "platform", base.platform if base else None)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", platform):
        raise v.error(f"must be 1-64 letters, digits, '_', '.' or '-', got {platform!r}", field="platform")
    title = v.string(data, "title", base.title if base else platform)
    docs = v.string(data, "docs", base.docs if base else "")
    unknown = v.category(
        data.get("unknown_category", base.unknown_category if base else "fatal"), None, "unknown_category"
    )
    success = v.code_set(data, "success_codes", base.success_codes if base else frozenset({0}))
    ambiguous_http = v.int_set(data, "ambiguous_http", base.ambiguous_http if base else frozenset({500, 502, 504}))

    extract = v.extraction(data.get("extract"), base.extract if base else None)
    token = v.token(data.get("token"), base.token if base else TokenPlacement())
    retry = v.retry(data.get("retry"), base.retry if base else RetrySettings())
    wait_hint = v.wait_hint(data["wait_hint"]) if "wait_hint" in data else base.wait_hint if base else None
    http = dict(base.http) if base else {}
    http.update(v.http(data.get("http")))

    recipient: tuple[FieldPath, ...] = base.recipient if base else ()
    if "recipient" in data:
        recipient = v.paths({"recipient": data["recipient"]}, "recipient", (), where="")
    budget = v.budget(data.get("budget"), base.budget if base else None)
    breaker = v.breaker(data.get("breaker"), base.breaker if base else DEFAULT_BREAKER)
    problem = check_attempt_timeout(breaker, retry.attempt_timeout, "retry.attempt_timeout")
    if problem is not None:
        raise v.error(problem, field="breaker.window")
    idempotent_paths = base.idempotent_paths if base else ()
    if "idempotent_paths" in data:
        globs = data["idempotent_paths"]
        if not isinstance(globs, list) or not all(isinstance(g, str) and g.startswith("/") for g in globs):
            raise v.error("must be a list of URL path globs starting with '/'", field="idempotent_paths")
        idempotent_paths = tuple(globs)
    rules = v.rules(data.get("rules", []))
    if base is not None:
        rules = _merge(base.rules, rules)
    return Policy(
        platform=platform,
        title=title,
        rules=tuple(rules),
        extract=extract,
        token=token,
        retry=retry,
        http=http,
        success_codes=success,
        unknown_category=unknown,
        ambiguous_http=ambiguous_http,
        recipient=recipient,
        budget=budget,
        breaker=breaker,
        idempotent_paths=idempotent_paths,
        docs=docs,
        source=source,
        wait_hint=wait_hint,
    )


def _key(rule: Rule) -> tuple[Code | None, Code | None, str | None]:
    """What makes a rule unique in a table, and what an ``extends`` file's rule replaces:
    its code, subcode and message pattern."""
    return rule.code, rule.subcode, rule.message_pattern.pattern if rule.message_pattern is not None else None


def _merge(base: tuple[Rule, ...], override: list[Rule]) -> list[Rule]:
    """The base rules that no override replaces, and the overrides. An override's pattern rules
    come first, so that they are tried before the base's pattern rules for the same code."""
    keys = {_key(r) for r in override if r.range is None}
    ranges = [r.range for r in override if r.range is not None]

    def replaced(rule: Rule) -> bool:
        if rule.range is None:
            return _key(rule) in keys
        lo, hi = rule.range
        return any(lo <= o_hi and o_lo <= hi for o_lo, o_hi in ranges)

    patterns = [r for r in override if r.message_pattern is not None]
    others = [r for r in override if r.message_pattern is None]
    return patterns + [r for r in base if not replaced(r)] + others


class _Validator:
    """Checks one file's parsed data; every error names the file, the rule and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, problem: str, *, rule: str | None = None, field: str | None = None) -> PolicyError:
        return PolicyError(problem, source=self.source, rule=rule, field=field)

    def keys(self, table: Mapping[str, Any], allowed: set[str], section: str | None, rule: str | None = None) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            where = f"{section}.{unknown[0]}" if section else unknown[0]
            raise self.error(f"unknown key; allowed: {', '.join(sorted(allowed))}", rule=rule, field=where)

    def table(self, value: object, section: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(f"must be a table, got {type(value).__name__}", field=section)
        return value

    def string(self, data: Mapping[str, Any], key: str, default: str | None) -> str:
        value = data.get(key, default)
        if value is None:
            raise self.error("missing", field=key)
        if not isinstance(value, str):
            raise self.error(f"must be a string, got {type(value).__name__}", field=key)
        return value

    def category(self, value: object, rule: str | None, field: str) -> Category:
        try:
            return Category(value)  # type: ignore[arg-type]  # ValueError on anything else
        except ValueError:
            raise self.error(
                f"unknown category {value!r}; expected one of {_CATEGORIES}", rule=rule, field=field
            ) from None

    def int_set(self, data: Mapping[str, Any], key: str, default: frozenset[int]) -> frozenset[int]:
        if key not in data:
            return default
        value = data[key]
        if not isinstance(value, list) or not all(_is_int(x) for x in value):
            raise self.error("must be a list of integers", field=key)
        return frozenset(value)

    def code_set(self, data: Mapping[str, Any], key: str, default: frozenset[Code]) -> frozenset[Code]:
        if key not in data:
            return default
        value = data[key]
        if not isinstance(value, list):
            raise self.error("must be a list of codes (integers or strings)", field=key)
        return frozenset(self.code(x, None, key) for x in value)

    def code(self, value: object, rule: str | None, field: str) -> Code:
        """A code or subcode: an integer, or a string that is not a number."""
        if _is_int(value):
            assert isinstance(value, int)
            return value
        if not isinstance(value, str):
            raise self.error(f"must be an integer or a string, got {value!r}", rule=rule, field=field)
        if _CODE_TEXT.fullmatch(value):
            raise self.error(
                f"write the number {value.strip()} as an integer, not a string "
                "(a code of digits in a body is read as a number)",
                rule=rule,
                field=field,
            )
        if not value or value != value.strip() or len(value) > _MAX_CODE or not value.isprintable():
            raise self.error(
                f"a string code must be 1-{_MAX_CODE} printable characters without surrounding spaces, got {value!r}",
                rule=rule,
                field=field,
            )
        return value

    def pattern(self, raw: object, rule: str | None, field: str) -> re.Pattern[str]:
        """A regular expression over vendor text; one that matches an empty text would match anything."""
        if not isinstance(raw, str) or not raw:
            raise self.error("must be a non-empty regular expression (a string)", rule=rule, field=field)
        try:
            pattern = re.compile(raw)
        except (re.error, OverflowError, RecursionError, ValueError) as exc:
            raise self.error(f"invalid regular expression: {exc}", rule=rule, field=field) from None
        if pattern.search("") is not None:
            raise self.error("matches an empty message, so it would match every message", rule=rule, field=field)
        return pattern

    def paths(
        self, section: Mapping[str, Any], key: str, default: tuple[FieldPath, ...], where: str = "extract."
    ) -> tuple[FieldPath, ...]:
        if key not in section:
            return default
        value = section[key]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
            raise self.error("must be a list of dotted paths (strings)", field=f"{where}{key}")
        for p in value:
            if any(re.fullmatch(r"-?\d{10,}", segment) for segment in p.split(".")):
                raise self.error(f"list index out of range in path {p[:60]!r}", field=f"{where}{key}")
        return tuple(_parse_path(p) for p in value)

    def extraction(self, value: object, base: Extraction | None) -> Extraction:
        section = self.table(value, "extract")
        self.keys(section, _EXTRACT_KEYS, "extract")
        b = base or Extraction()
        pattern = b.request_id_pattern
        if "request_id_pattern" in section:
            raw = section["request_id_pattern"]
            try:
                pattern = re.compile(raw) if raw else None
                if pattern is not None and pattern.groups < 1:
                    raise re.error("needs one capturing group")
            except (re.error, TypeError, ValueError, OverflowError, RecursionError) as exc:
                raise self.error(f"invalid regular expression: {exc}", field="extract.request_id_pattern") from None
        failure = b.failure
        if "failure" in section:
            raw_failure = section["failure"]
            if not (
                isinstance(raw_failure, Mapping)
                and set(raw_failure) == {"path", "value"}
                and isinstance(raw_failure["path"], str)
                and raw_failure["path"]
                and isinstance(raw_failure["value"], (str, bool, int))
            ):
                raise self.error(
                    'must be { path = "...", value = "..." } (the value a string, true/false or an integer)',
                    field="extract.failure",
                )
            failure = (_parse_path(raw_failure["path"]), raw_failure["value"])
        request_id_header = b.request_id_header
        if "request_id_header" in section:
            raw_headers = section["request_id_header"]
            names = [raw_headers] if isinstance(raw_headers, str) else raw_headers
            if not isinstance(names, list) or not all(isinstance(n, str) and _HEADER_NAME.fullmatch(n) for n in names):
                raise self.error("must be a header name or a list of header names", field="extract.request_id_header")
            secret = [n for n in names if is_secret_name(n)]
            if secret:
                raise self.error(
                    f"{secret[0]!r} names a secret; its value would be logged as the request id",
                    field="extract.request_id_header",
                )
            request_id_header = tuple(n.lower() for n in names)
        extra = b.extra
        if "extra" in section:
            raw_extra = section["extra"]
            if not isinstance(raw_extra, Mapping):
                raise self.error('must be a table of name = "dotted.path"', field="extract.extra")
            pairs = []
            for name, raw_path in raw_extra.items():
                where = f"extract.extra.{name}"
                if not _EXTRA_NAME.fullmatch(name):
                    raise self.error("names are letters, digits and '_' (not first), up to 64", field=where)
                if is_secret_name(name):
                    raise self.error("names a secret: its value would be shown and logged", field=where)
                pairs.append((name, self.paths({name: raw_path}, name, (), where="extract.extra.")))
            for name, paths in pairs:
                if len(paths) != 1:
                    raise self.error("must be one dotted path", field=f"extract.extra.{name}")
            extra = tuple((name, paths[0]) for name, paths in pairs)
        extraction = Extraction(
            code=self.paths(section, "code", b.code),
            message=self.paths(section, "message", b.message),
            details=self.paths(section, "details", b.details),
            subcode=self.paths(section, "subcode", b.subcode),
            request_id=self.paths(section, "request_id", b.request_id),
            transient=self.paths(section, "transient", b.transient),
            request_id_pattern=pattern,
            failure=failure,
            request_id_header=request_id_header,
            extra=extra,
        )
        if not extraction.code:
            raise self.error("at least one path is required", field="extract.code")
        return extraction

    def token(self, value: object, base: TokenPlacement) -> TokenPlacement:
        section = self.table(value, "token")
        self.keys(section, {"location", "name", "scheme", "prefix", "after"}, "token")
        location = section.get("location", base.location)
        if location not in ("query", "header", "path"):
            raise self.error(f"must be 'query', 'header' or 'path', got {location!r}", field="token.location")
        name = section.get("name", base.name)
        scheme = section.get("scheme", base.scheme)
        if location != "path" and (not isinstance(name, str) or not name):
            raise self.error("must be a non-empty string (the query parameter or header)", field="token.name")
        if not isinstance(name, str) or not isinstance(scheme, str):
            raise self.error("name and scheme must be strings", field="token.name")
        prefix = section.get("prefix", base.prefix)
        after = section.get("after", list(base.after))
        if location == "path":
            if not isinstance(prefix, str) or not re.fullmatch(r"[A-Za-z0-9_.~-]{1,32}", prefix):
                raise self.error(
                    'a path token needs a prefix (the start of its path segment, e.g. "bot"): '
                    f"1-32 letters, digits, '_', '.', '~' or '-', got {prefix!r}",
                    field="token.prefix",
                )
            if not isinstance(after, list) or not all(
                isinstance(a, str) and re.fullmatch(r"(/[A-Za-z0-9_.~-]+)+", a) for a in after
            ):
                raise self.error(
                    'must be a list of path prefixes such as "/file" (the token segment follows them)',
                    field="token.after",
                )
        elif "prefix" in section or "after" in section:
            field_name = "prefix" if "prefix" in section else "after"
            raise self.error('only for location = "path"', field=f"token.{field_name}")
        else:
            prefix, after = "", []
        return TokenPlacement(
            location=location,
            name=name if location != "path" else "",
            scheme=scheme,
            prefix=prefix,
            after=tuple(sorted(after, key=len, reverse=True)),  # the longest prefix first
        )

    def wait_hint(self, value: object) -> WaitHint | None:
        section = self.table(value, "wait_hint")
        self.keys(section, {"header", "path", "unit"}, "wait_hint")
        if ("header" in section) == ("path" in section):
            raise self.error("give exactly one of 'header' or 'path'", field="wait_hint")
        unit = section.get("unit", "s")
        if unit not in _WAIT_UNITS:
            raise self.error(f"must be one of {', '.join(_WAIT_UNITS)}, got {unit!r}", field="wait_hint.unit")
        if "header" in section:
            header = section["header"]
            if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
                raise self.error(f"must be a header name, got {header!r}", field="wait_hint.header")
            return WaitHint(header=header.lower(), unit=unit)
        paths = self.paths(section, "path", (), where="wait_hint.")
        if len(paths) != 1:
            raise self.error("must be one dotted path", field="wait_hint.path")
        return WaitHint(path=paths[0], unit=unit)

    def retry(self, value: object, base: RetrySettings) -> RetrySettings:
        section = self.table(value, "retry")
        allowed = {
            "max_attempts", "initial_delay", "max_delay", "deadline", "max_body_bytes", "min_delay", "attempt_timeout",
        }  # fmt: skip
        self.keys(section, allowed, "retry")
        out: dict[str, Any] = {}
        for key in sorted(allowed):
            if key not in section:
                continue
            raw = section[key]
            integral = key in ("max_attempts", "max_body_bytes")
            ok = _is_int(raw) if integral else _is_number(raw)
            if key == "attempt_timeout" and ok and raw <= 0:
                raise self.error(f"must be a number of seconds > 0, got {raw!r}", field="retry.attempt_timeout")
            if not ok or raw < (1 if integral else 0):
                kind = "a positive integer" if integral else "a number >= 0"
                raise self.error(f"must be {kind}, got {raw!r}", field=f"retry.{key}")
            out[key] = raw if integral else float(raw)
        try:
            return replace(base, **out)  # RetrySettings checks itself
        except ValueError as exc:
            raise self.error(str(exc), field="retry") from None

    def breaker(self, value: object, base: CircuitBreaker | None) -> CircuitBreaker | None:
        """The ``[breaker]`` section: changes to the base table's breaker (or the default one);
        ``enabled = false`` turns it off for this platform."""
        if value is None:
            return base
        section = self.table(value, "breaker")
        fields = {"failure_ratio", "min_calls", "window", "open_for", "max_open_for", "probes"}
        self.keys(section, {"enabled", *fields}, "breaker")
        enabled = section.get("enabled", True)
        if not isinstance(enabled, bool):
            raise self.error(f"must be true or false, got {enabled!r}", field="breaker.enabled")
        if not enabled:
            if set(section) - {"enabled"}:
                raise self.error("settings of a breaker that enabled = false turns off", field="breaker.enabled")
            return None
        out: dict[str, Any] = {}
        for key in sorted(fields & set(section)):
            raw = section[key]
            integral = key in ("min_calls", "probes")
            if not (_is_int(raw) if integral else _is_number(raw)):
                kind = "an integer" if integral else "a number"
                raise self.error(f"must be {kind}, got {raw!r}", field=f"breaker.{key}")
            out[key] = raw if integral else float(raw)
        try:
            return replace(base or CircuitBreaker(), **out)  # CircuitBreaker checks itself
        except ValueError as exc:
            field = next((f"breaker.{k}" for k in sorted(out, key=len, reverse=True) if k in str(exc)), "breaker")
            raise self.error(str(exc), field=field) from None

    def http(self, value: object) -> dict[str, Category]:
        section = self.table(value, "http")
        out = {}
        for key, raw in section.items():
            if not _HTTP_KEY.fullmatch(key):
                raise self.error("keys are HTTP statuses ('429') or classes ('5xx')", field=f"http.{key}")
            out[key] = self.category(raw, None, f"http.{key}")
        return out

    def cooldown(self, raw: object, rule: str) -> Cooldown | None:
        if raw is None:
            return None
        ok = (
            isinstance(raw, Mapping)
            and raw.get("scope") in ("app", "recipient")
            and set(raw) <= {"scope", "seconds", "until"}
        )
        if ok and isinstance(raw, Mapping):
            seconds, until = raw.get("seconds"), raw.get("until")
            if (seconds is None) == (until is None):
                ok = False
            elif seconds is not None:
                ok = _is_number(seconds) and 0 < seconds <= 86400
            else:
                ok = isinstance(until, str) and _UNTIL.fullmatch(until) is not None
        if not ok or not isinstance(raw, Mapping):
            raise self.error(
                'must be { scope = "app" | "recipient", seconds = N } or { scope = ..., until = "HH:MM+08:00" }',
                rule=rule,
                field="cooldown",
            )
        return Cooldown(scope=raw["scope"], seconds=float(raw.get("seconds") or 0), until=raw.get("until") or "")

    def budget(self, value: object, base: RetryBudget | bool | None) -> RetryBudget | bool | None:
        if value is None:
            return base
        section = self.table(value, "budget")
        self.keys(section, {"enabled", "capacity", "retry_cost", "refill"}, "budget")
        if section.get("enabled", True) is False:
            return False
        try:
            return RetryBudget(**{k: v for k, v in section.items() if k != "enabled"})
        except (ValueError, TypeError) as exc:
            raise self.error(str(exc), field="budget") from None

    def rules(self, value: object) -> list[Rule]:
        if not isinstance(value, list):
            raise self.error("must be an array of tables ([[rules]])", field="rules")
        rules: list[Rule] = []
        seen: dict[tuple[Code | None, Code | None, str | None], str] = {}
        for index, raw in enumerate(value):
            rule = self.rule(index, raw)
            name = _rule_name(index, raw)
            if rule.range is None:
                key = _key(rule)
                if key in seen:
                    what = "message pattern" if rule.code is None else "code"
                    raise self.error(
                        f"duplicate {what} {rule.label}, first defined at {seen[key]}",
                        rule=name,
                        field="message_pattern" if rule.message_pattern is not None else "code",
                    )
                seen[key] = name
            rules.append(rule)
        spans = sorted(((r.range, i) for i, r in enumerate(rules) if r.range is not None))
        for (a, ia), (b, ib) in itertools.pairwise(spans):
            if b[0] <= a[1]:
                raise self.error(
                    f"range {b[0]}-{b[1]} overlaps range {a[0]}-{a[1]} of {_rule_name(ia, value[ia])}",
                    rule=_rule_name(ib, value[ib]),
                    field="range",
                )
        return rules

    def rule(self, index: int, raw: object) -> Rule:
        name = _rule_name(index, raw)
        if not isinstance(raw, Mapping):
            raise self.error("must be a table", rule=name)
        self.keys(raw, _RULE_KEYS, None, rule=name)
        has_code, has_range, has_pattern = "code" in raw, "range" in raw, "message_pattern" in raw
        if has_code == has_range and not (has_pattern and not has_code):
            raise self.error(
                "give exactly one of 'code' or 'range' (or a 'message_pattern' alone)", rule=name, field="code"
            )
        if has_range and has_pattern:
            raise self.error("goes with a code, or alone; not with a range", rule=name, field="message_pattern")
        code = self.code(raw["code"], name, "code") if has_code else None
        span: tuple[int, int] | None = None
        if has_range:
            r = raw["range"]
            if not (isinstance(r, list) and len(r) == 2 and all(_is_int(x) for x in r) and r[0] <= r[1]):
                raise self.error("must be [low, high] integers with low <= high", rule=name, field="range")
            span = (r[0], r[1])
        subcode: Code | None = None
        if "subcode" in raw:
            if not has_code:
                raise self.error("goes only on a rule with a single code", rule=name, field="subcode")
            subcode = self.code(raw["subcode"], name, "subcode")
        message_pattern = self.pattern(raw["message_pattern"], name, "message_pattern") if has_pattern else None
        category = self.category(raw.get("category"), name, "category")
        description = raw.get("description")
        if not isinstance(description, str) or not description.strip():
            raise self.error("missing or empty", rule=name, field="description")
        if "\n" in description.strip():
            raise self.error("must be one line", rule=name, field="description")
        remediation = raw.get("remediation")
        if remediation is not None and (not isinstance(remediation, str) or not remediation.strip()):
            raise self.error("must be a non-empty string", rule=name, field="remediation")
        if category is Category.USER_ACTION and remediation is None:
            raise self.error("user-action rules must say what the person must do", rule=name, field="remediation")
        note = raw.get("note")
        if note is not None and not isinstance(note, str):
            raise self.error("must be a string", rule=name, field="note")
        min_delay = raw.get("min_delay", 0)
        if not _is_number(min_delay) or not 0 <= min_delay <= 86400:
            raise self.error("must be a number of seconds between 0 and 86400", rule=name, field="min_delay")
        ambiguous = raw.get("ambiguous", False)
        if not isinstance(ambiguous, bool):
            raise self.error("must be true or false", rule=name, field="ambiguous")
        cooldown = self.cooldown(raw.get("cooldown"), name)
        return Rule(
            category=category,
            description=description.strip(),
            code=code,
            range=span,
            subcode=subcode,
            remediation=remediation.strip() if remediation else None,
            note=note.strip() if note else None,
            min_delay=float(min_delay),
            ambiguous=ambiguous,
            cooldown=cooldown,
            message_pattern=message_pattern,
        )


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parse_path(text: str) -> FieldPath:
    # a segment of up to 9 digits indexes a list ("errors.0.code"); anything else is a key
    return tuple(int(p) if re.fullmatch(r"-?\d{1,9}", p) else p for p in text.split("."))


def _rule_name(index: int, raw: object) -> str:
    if isinstance(raw, Mapping):
        pattern = raw.get("message_pattern")
        shown = f"/{pattern}/" if isinstance(pattern, str) and len(pattern) <= 60 else "/.../"
        if "code" in raw:
            sub = f"/{raw['subcode']!r}" if "subcode" in raw else ""
            return f"rules[{index}] (code {raw['code']!r}{sub}{' ' + shown if pattern is not None else ''})"
        if "range" in raw:
            return f"rules[{index}] (range {raw['range']!r})"
        if pattern is not None:
            return f"rules[{index}] (message_pattern {shown})"
    return f"rules[{index}]"
