"""Properties (hypothesis): classification, policy loading and Retry-After parsing never raise
anything but their documented errors, whatever they are fed; and the transport ends every
response, however strange, in a response or a RequestFailed.

Examples per property: 300 by default, 5,000 with RETRYPOLICY_LONG=1 (``EXAMPLES``). The
hypothesis database is off: nothing is written to the repository.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import functools
import json
import math
import re
import string
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import retrypolicy
from retrypolicy import BUILTIN_POLICIES, Category, Classification, Policy, PolicyError, load_policy
from retrypolicy._load import policy_from_mapping

from .conftest import report, size

EXAMPLES = size(300, 5_000)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
POLICIES = {name: load_policy(name) for name in BUILTIN_POLICIES}
FIELD_NAMES = [
    "errcode", "errmsg", "base_resp", "ErrorCode", "ErrorInfo", "ActionStatus", "error", "errors", "code",
    "message", "error_subcode", "error_data", "details", "fbtrace_id", "is_transient", "title", "meta",
]  # fmt: skip
_RULE_CODES = {r.code for p in POLICIES.values() for r in p.rules if r.code is not None}
KNOWN_INT_CODES = sorted(c for c in _RULE_CODES if isinstance(c, int))
KNOWN_CODES: list[int | str] = [*KNOWN_INT_CODES, *sorted(c for c in _RULE_CODES if isinstance(c, str))]  # Slack's

# -- JSON strategies ---------------------------------------------------------------------------

codes = st.sampled_from(KNOWN_CODES)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30)
    | codes
    | codes.map(str)
    | st.sampled_from(["FAIL", "OK", "", " 40001 ", "0", "-1", "1e3", "\\u0065rrcode"])
)
json_keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=10)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_keys, children, max_size=5),
    max_leaves=30,
)
json_objects = st.dictionaries(json_keys, json_values, max_size=6)


def _dump(value: Any, ascii_only: bool, bom: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    return (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8", "surrogatepass")


def _extraction_paths() -> list[tuple[str | int, ...]]:
    found: set[tuple[str | int, ...]] = set()
    for p in POLICIES.values():
        ex = p.extract
        found.update((*ex.code, *ex.message, *ex.details, *ex.subcode, *ex.request_id, *ex.transient))
        if ex.failure is not None:
            found.add(ex.failure[0])
    return sorted(found, key=repr)


def place(container: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """``container`` with ``value`` set at ``path`` (creating dicts and lists on the way)."""
    key, rest = path[0], path[1:]
    if isinstance(key, int):
        items = list(container) if isinstance(container, list) else []
        while len(items) <= key:
            items.append({})
        items[key] = place(items[key], rest, value) if rest else value
        return items
    table = dict(container) if isinstance(container, dict) else {}
    table[key] = place(table.get(key), rest, value) if rest else value
    return table


def _shaped(noise: dict[str, Any], fields: list[tuple[tuple[str | int, ...], Any]]) -> dict[str, Any]:
    body: Any = noise
    for path, value in fields:
        body = place(body, path, value)
    return dict(body)


# platform-shaped objects: random values at the real extraction paths of the four tables
shaped_objects = st.builds(
    _shaped,
    json_objects,
    st.lists(st.tuples(st.sampled_from(_extraction_paths()), scalars | json_values), min_size=1, max_size=4),
)
encoded_json = st.builds(
    _dump, json_values | json_objects | shaped_objects | shaped_objects, st.booleans(), st.booleans()
)
bodies = st.one_of(
    st.binary(max_size=400),
    encoded_json,
    encoded_json,
    st.builds(lambda b, cut: b[:cut], encoded_json, st.integers(0, 400)),  # truncated JSON
    st.builds(lambda a, b: a + b, encoded_json, st.binary(max_size=20)),  # JSON with trailing junk
)
header_names = st.sampled_from(
    ["content-type", "content-length", "retry-after", "x-request-id", "www-authenticate", "set-cookie"]
) | st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True).filter(
    lambda n: n.lower() not in ("content-encoding", "transfer-encoding")
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40) | st.sampled_from(
    ["application/json", "text/plain", "text/html", "application/json; charset=gbk", "0", "999999999", "-1", "2"]
)
headers = st.dictionaries(header_names, header_values, max_size=5)


# -- 1. classification ----------------------------------------------------------------------------


def own_bodies(policy: Policy) -> st.SearchStrategy[bytes]:
    """Bodies shaped like this platform's errors: a random value at its code path (often a code,
    a code as text, a success code), other fields at its other paths, noise around them."""
    ex = policy.extract
    own = [*ex.code, *ex.message, *ex.subcode, *ex.transient, *ex.details, *ex.request_id]
    if ex.failure is not None:
        own.append(ex.failure[0])
    code_values = codes | codes.map(str) | st.sampled_from(sorted(policy.success_codes) or [0]) | scalars
    objects = st.builds(
        _shaped,
        json_objects,
        st.tuples(st.sampled_from(ex.code), code_values).map(lambda t: [t])
        | st.lists(st.tuples(st.sampled_from(own), code_values | json_values), min_size=1, max_size=4),
    )
    return st.builds(_dump, objects, st.booleans(), st.booleans())


@pytest.mark.parametrize("name", BUILTIN_POLICIES)
def test_classify_any_response_never_raises(name: str) -> None:
    policy = POLICIES[name]
    seen: Counter[str] = Counter()

    @SETTINGS
    @given(status=st.integers(100, 599), body=bodies | own_bodies(policy), hdrs=headers)
    def prop(status: int, body: bytes, hdrs: dict[str, str]) -> None:
        seen["cases"] += 1
        response = httpx.Response(status, headers=hdrs, content=body)
        c = policy.classify(response)
        if c is None:
            seen["success"] += 1
            return
        assert isinstance(c, Classification) and isinstance(c.category, Category)
        assert c.platform == policy.platform and c.status_code == status
        assert c.code is None or isinstance(c.code, int) or (isinstance(c.code, str) and policy._string_codes)
        assert isinstance(c.message, str) and len(c.message) <= 500
        assert policy.classify(response) == c  # pure: the same answer every time
        seen[c.source] += 1

    prop()
    report(f"classify_never_raises[{name}]", cases=seen["cases"], by_body=seen["body"], by_http=seen["http"],
           success=seen["success"])  # fmt: skip
    assert seen["cases"] >= min(EXAMPLES, 100) and seen["body"] > 0 and seen["http"] > 0


def _codes_of(policy: Policy) -> st.SearchStrategy[int | str]:
    exact = sorted({r.code for r in policy.rules if r.code is not None} - policy.success_codes)
    spans = [r.range for r in policy.rules if r.range is not None]
    ranged = st.sampled_from(spans).flatmap(lambda s: st.integers(s[0], s[1])) if spans else st.nothing()
    return st.sampled_from(exact) | ranged.filter(lambda c: c not in policy.success_codes)


@pytest.mark.parametrize("name", BUILTIN_POLICIES)
def test_known_code_at_the_code_path_is_extracted(name: str) -> None:
    policy = POLICIES[name]
    path = policy.extract.code[0]
    seen: Counter[str] = Counter()

    @SETTINGS
    @given(
        status=st.integers(100, 599),
        noise=json_objects,
        code=_codes_of(policy),
        spelling=st.sampled_from(["int", "str", "float", "padded"]),
    )
    def prop(status: int, noise: dict[str, Any], code: int | str, spelling: str) -> None:
        seen["cases"] += 1
        raw: Any = code  # a string code (Slack) has one spelling
        if isinstance(code, int):
            raw = {"int": code, "str": str(code), "float": float(code), "padded": f" {code} "}[spelling]
        body = json.dumps(place(noise, path, raw)).encode()
        c = policy.classify(httpx.Response(status, content=body))
        assert c is not None and c.code == code and c.source == "body"
        rule = policy.rule_for(code, c.subcode)
        assert c.known == (rule is not None)
        if rule is not None:
            assert c.category is rule.category
            seen["known"] += 1

    prop()
    report(
        f"known_code_extracted[{name}]", cases=seen["cases"], known_rule=seen["known"], path=".".join(map(str, path))
    )
    assert seen["known"] > 0


def _without_scan(policy: Policy) -> Policy:
    """The same table, always decoding: the regex proof of success switched off."""
    slow = dataclasses.replace(policy)
    object.__setattr__(slow, "_success_scan", None)
    return slow


# bodies shaped like successes: success-ish values at the code and failure paths of every table
_SUCCESS_PATHS = sorted(
    {path for p in POLICIES.values() for path in p.extract.code}
    | {p.extract.failure[0] for p in POLICIES.values() if p.extract.failure is not None},
    key=repr,
)
_near_success: st.SearchStrategy[Any] = st.sampled_from(
    [0, -0, 0.0, 1, -1, "0", "OK", "FAIL", "FAILED", "fail", None, True, [], {}, "\\u0030"]
)
_separators = st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : "), (",", ":\t"), ("\n,", "\n:")])


def _success_shaped(
    noise: dict[str, Any], fields: list[tuple[tuple[str | int, ...], Any]], sep: tuple[str, str], ascii_only: bool
) -> bytes:
    return json.dumps(_shaped(noise, fields), separators=sep, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


success_shaped = st.builds(
    _success_shaped,
    json_objects,
    st.lists(st.tuples(st.sampled_from(_SUCCESS_PATHS), _near_success), min_size=1, max_size=4),
    _separators,
    st.booleans(),
)


@pytest.mark.parametrize("name", BUILTIN_POLICIES)
def test_success_scan_agrees_with_full_decode(name: str) -> None:
    """Counting bytes to prove a success never gives another verdict than decoding the body."""
    policy = POLICIES[name]
    slow = _without_scan(policy)
    assert policy._success_scan is not None  # every built-in table has one
    seen: Counter[str] = Counter()

    @SETTINGS
    @given(status=st.integers(100, 599) | st.just(200), body=success_shaped | bodies)
    def prop(status: int, body: bytes) -> None:
        response = httpx.Response(status, content=body)
        fast = policy.classify(response)
        assert fast == slow.classify(response) == slow.classify_parts(status, body)
        seen["cases"] += 1
        if status < 400 and policy._success_scan is not None and policy._success_scan.proves_success(body):
            seen["proved"] += 1
        seen["success" if fast is None else "failure"] += 1

    prop()
    report(f"success_scan[{name}]", **seen)


# -- 2. policy files and mappings -----------------------------------------------------------------

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else toml_str(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(data: dict[str, Any]) -> str:
    """TOML text for ``data``: scalars first, then [tables], then [[arrays of tables]]."""
    lines, tables, arrays = [], [], []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, table in tables:
        lines.append(f"\n[{toml_key(key)}]")
        lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items())
    for key, items in arrays:
        for item in items:
            lines.append(f"\n[[{toml_key(key)}]]")
            lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items())
    return "\n".join(lines) + "\n"


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, list):
        return any(map(_has_nan, value))
    if isinstance(value, dict):
        return any(map(_has_nan, value.values()))
    return False


toml_keys = st.text(max_size=8)
toml_scalars = st.text(max_size=20) | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.booleans()
toml_any = st.recursive(
    toml_scalars, lambda ch: st.lists(ch, max_size=3) | st.dictionaries(toml_keys, ch, max_size=3), max_leaves=8
)
ints = st.integers(-(2**40), 2**40) | st.sampled_from(KNOWN_INT_CODES)
dotted = st.lists(
    st.sampled_from(FIELD_NAMES) | st.sampled_from(["0", "-1", "1"]) | st.text(string.ascii_letters, max_size=4),
    min_size=1,
    max_size=3,
).map(".".join)


one_line = st.text(min_size=1, max_size=30).filter(lambda t: bool(t.strip()) and "\n" not in t.strip())
valid_cooldowns = st.fixed_dictionaries({"scope": st.sampled_from(["app", "recipient"])}).flatmap(
    lambda d: st.one_of(
        st.builds(lambda x: {**d, "seconds": x}, st.floats(0.001, 86400) | st.integers(1, 86400)),
        st.builds(
            lambda x: {**d, "until": x},
            st.from_regex(r"([01]\d|2[0-3]):[0-5]\d[+-](0\d|1[0-4]):[0-5]\d", fullmatch=True),
        ),
    )
)


rule_fields = st.fixed_dictionaries(
    {"category": st.sampled_from([c.value for c in Category]), "description": one_line, "remediation": one_line},
    optional={
        "note": st.text(max_size=20),
        "min_delay": st.floats(0, 86400) | st.integers(0, 86400),
        "ambiguous": st.booleans(),
        "cooldown": valid_cooldowns,
        "subcode": ints,
    },
)


def _rules(codes: list[int], span: tuple[int, int] | None, fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unique codes, at most one range (ranges never overlap), every rule complete."""
    out = [{"code": code, **fields[i % len(fields)]} for i, code in enumerate(codes)]
    if span is not None:
        out.append({"range": list(span), **{k: v for k, v in fields[0].items() if k != "subcode"}})
    return out


valid_rules = st.builds(
    _rules,
    st.lists(ints, unique=True, max_size=5),
    st.none() | st.tuples(st.integers(10**6, 2 * 10**6), st.integers(2 * 10**6, 3 * 10**6)),
    st.lists(rule_fields, min_size=1, max_size=3),
)
valid_extracts = st.fixed_dictionaries(
    {"code": st.lists(dotted, min_size=1, max_size=3)},
    optional={
        "message": st.lists(dotted, max_size=2),
        "details": st.lists(dotted, max_size=2),
        "subcode": st.lists(dotted, max_size=2),
        "request_id": st.lists(dotted, max_size=2),
        "transient": st.lists(dotted, max_size=2),
        "request_id_pattern": st.sampled_from([r"rid:\s*(\S+)", r"(a)|b", "", r"id=(\d+)"]),
        "failure": st.fixed_dictionaries({"path": dotted, "value": st.text(max_size=5)}),
    },
)
valid_documents = st.fixed_dictionaries(
    {"platform": st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True), "extract": valid_extracts},
    optional={
        "schema": st.just(1),
        "title": st.text(max_size=20),
        "docs": st.text(max_size=20),
        "extends": st.sampled_from(BUILTIN_POLICIES),
        "unknown_category": st.sampled_from([c.value for c in Category]),
        "success_codes": st.lists(ints, max_size=3),
        "ambiguous_http": st.lists(st.integers(100, 599), max_size=3),
        "token": st.fixed_dictionaries(
            {},
            optional={
                "location": st.sampled_from(["query", "header"]),
                "name": st.text(min_size=1, max_size=10),
                "scheme": st.sampled_from(["", "Bearer"]),
            },
        ),
        "retry": st.fixed_dictionaries(
            {},
            optional={
                "max_attempts": st.integers(1, 100),
                "initial_delay": st.floats(0, 1e6),
                "max_delay": st.floats(0, 1e6),
                "deadline": st.floats(0, 1e6),
                "max_body_bytes": st.integers(1, 2**40),
            },
        ),
        "http": st.dictionaries(
            st.sampled_from(["401", "429", "5xx", "4xx", "200", "503"]), st.sampled_from([c.value for c in Category])
        ),
        "rules": valid_rules,
        "recipient": st.lists(dotted, max_size=2),
        "budget": st.just({"enabled": False})
        | st.fixed_dictionaries(
            {},
            optional={
                "capacity": st.floats(0, 1e6),
                "retry_cost": st.floats(0.001, 10),
                "refill": st.floats(0, 10),
            },
        ),
    },
)


def corrupt(doc: dict[str, Any], ops: list[tuple[str, int, Any]]) -> dict[str, Any]:
    """Apply a few damaging edits to a valid document: delete, replace or add a key, or replace
    one field of one rule, with arbitrary TOML values."""
    out = dict(doc)
    for op, pick, value in ops:
        keys = sorted(out)
        if op == "add":
            out[f"x{pick % 7}"] = value
        elif not keys:
            continue
        elif op == "delete":
            del out[keys[pick % len(keys)]]
        elif op == "replace":
            out[keys[pick % len(keys)]] = value
        elif op == "rule" and isinstance(out.get("rules"), list) and out["rules"]:
            rules = [dict(r) if isinstance(r, dict) else r for r in out["rules"]]
            target = rules[pick % len(rules)]
            if isinstance(target, dict) and target:
                target[sorted(target)[pick % len(target)]] = value
            out["rules"] = rules
        elif op == "nested" and isinstance(out.get("extract"), dict) and out["extract"]:
            section = dict(out["extract"])
            section[sorted(section)[pick % len(section)]] = value
            out["extract"] = section
    return out


documents = st.builds(
    corrupt,
    valid_documents,
    st.lists(
        st.tuples(st.sampled_from(["add", "delete", "replace", "rule", "nested"]), st.integers(0, 100), toml_any),
        max_size=2,
    ),
)


def _mutate(text: str, at: int, cut: int, junk: str) -> str:
    at = at % (len(text) + 1)
    return text[:at] + junk + text[at + cut :]


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return tmp_path / "policy.toml"


def test_policy_files_load_or_raise_policy_error(policy_file: Path) -> None:
    seen: Counter[str] = Counter()

    def load(text: str | bytes) -> None:
        if isinstance(text, bytes):
            policy_file.write_bytes(text)
        else:
            policy_file.write_text(text, encoding="utf-8")
        try:
            policy = load_policy(policy_file)
        except PolicyError as exc:
            assert str(policy_file) in str(exc)  # the message names the file
            seen["policy_error"] += 1
        else:
            assert isinstance(policy, Policy)
            seen["valid"] += 1
            # a loaded table is usable: it classifies a body carrying its own first code
            sample = next((r.code for r in policy.rules if r.code is not None), None)
            where = policy.extract.code[0]
            if sample is not None and not any(isinstance(k, int) and k < 0 for k in where):
                policy.classify(httpx.Response(200, json=place({}, where, sample)))

    @SETTINGS
    @given(
        data=documents, mutation=st.none() | st.tuples(st.integers(0, 10**6), st.integers(0, 8), st.text(max_size=4))
    )
    def from_documents(data: dict[str, Any], mutation: tuple[int, int, str] | None) -> None:
        seen["cases"] += 1
        text = toml_document(data)
        if mutation is None:
            if not _has_nan(data):
                assert tomllib.loads(text) == data  # the writer is right: the loader's checks are under test
        else:
            text = _mutate(text, *mutation)
            seen["mutated"] += 1
        load(text)

    @SETTINGS
    @given(raw=st.text(max_size=200) | st.binary(max_size=200))
    def from_noise(raw: str | bytes) -> None:
        seen["cases"] += 1
        load(raw)

    from_documents()
    from_noise()
    report("policy_files", cases=seen["cases"], valid=seen["valid"], policy_error=seen["policy_error"],
           mutated=seen["mutated"])  # fmt: skip
    assert seen["valid"] >= 5 and seen["policy_error"] > seen["cases"] // 4  # both sides were reached


def test_policy_mappings_build_or_raise_policy_error() -> None:
    seen: Counter[str] = Counter()
    anything = st.recursive(
        toml_scalars | st.none(),
        lambda ch: st.lists(ch, max_size=3) | st.tuples(ch, ch) | st.dictionaries(toml_keys, ch, max_size=3),
        max_leaves=8,
    )

    @SETTINGS
    @given(
        data=documents | st.dictionaries(st.sampled_from(sorted(documents_keys())) | toml_keys, anything, max_size=6)
    )
    def prop(data: dict[str, Any]) -> None:
        seen["cases"] += 1
        try:
            policy = policy_from_mapping(data, source="<hypothesis>")
        except PolicyError as exc:
            assert exc.source == "<hypothesis>"
            seen["policy_error"] += 1
        else:
            assert isinstance(policy, Policy)
            seen["valid"] += 1

    prop()
    report("policy_mappings", cases=seen["cases"], valid=seen["valid"], policy_error=seen["policy_error"])
    assert seen["valid"] > 0 and seen["policy_error"] > 0


def documents_keys() -> set[str]:
    return {"schema", "platform", "title", "docs", "extends", "unknown_category", "success_codes", "ambiguous_http",
            "extract", "token", "retry", "http", "rules", "recipient", "budget"}  # fmt: skip


@pytest.mark.parametrize("case", ["deep-arrays", "long-digit-path", "regex-repeat", "regex-nesting", "nul-in-path"])
def test_hostile_policy_input_raises_policy_error(case: str, policy_file: Path) -> None:
    target: str | Path = policy_file
    if case == "deep-arrays":
        policy_file.write_text("platform = " + "[" * 2000 + "]" * 2000 + "\n")
    elif case == "long-digit-path":
        policy_file.write_text(f'platform = "p"\n[extract]\ncode = ["errors.{"7" * 5000}.code"]\n')
    elif case == "regex-repeat":
        policy_file.write_text('platform = "p"\n[extract]\ncode = ["c"]\nrequest_id_pattern = "(a{4294967296})"\n')
    elif case == "regex-nesting":
        pattern = "(" * 2000 + "a" + ")" * 2000
        policy_file.write_text(f'platform = "p"\n[extract]\ncode = ["c"]\nrequest_id_pattern = "{pattern}"\n')
    else:
        target = str(policy_file) + "\x00.toml"
    with pytest.raises(PolicyError):
        load_policy(target)


# -- 3. Retry-After ---------------------------------------------------------------------------

day_names = st.sampled_from(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "Xyz", ""])
months = st.sampled_from(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Foo"])
zones = st.sampled_from(
    ["GMT", "UTC", "+0000", "-0000", "-2359", "+2359", "+2400", "EST", "Z", "+99999", ""]
) | st.text(max_size=5)
http_dates = st.builds(
    "{}, {:02d} {} {} {:02d}:{:02d}:{:02d} {}".format,
    day_names,
    st.integers(-5, 40),
    months,
    st.integers(-10, 20000),
    st.integers(-1, 99),
    st.integers(-1, 99),
    st.integers(-1, 99),
    zones,
)
retry_after_values = st.one_of(
    st.text(max_size=40),
    st.floats().map(repr),
    st.floats().map(str),
    st.integers(-(10**30), 10**30).map(str),
    http_dates,
    st.floats(0, 2.5e11).map(lambda t: email.utils.formatdate(t, usegmt=True)),
    st.floats(0, 2.5e11).map(lambda t: email.utils.formatdate(t, localtime=False)),
)


def test_parse_retry_after_never_raises() -> None:
    """Any Retry-After value: the classification's wait is None or a finite delay up to a day."""
    seen: Counter[str] = Counter()
    policy = POLICIES["wechat"]

    @SETTINGS
    @given(value=retry_after_values, now=st.floats(0, 4e9) | st.floats(-1e12, 1e12))
    def prop(value: str, now: float) -> None:
        seen["cases"] += 1
        c = policy.classify_parts(503, b"", headers={"retry-after": value})
        assert c is not None
        result = c.wait_seconds(now)
        if result is None:
            seen["none"] += 1
            return
        assert isinstance(result, float) and math.isfinite(result) and 0 < result <= 86400
        seen["seconds"] += 1

    prop()
    report("parse_retry_after", cases=seen["cases"], parsed=seen["seconds"], ignored=seen["none"])
    assert seen["seconds"] > 0 and seen["none"] > 0


# -- 4. through the transport ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spec:
    status: int
    body: bytes
    headers: dict[str, str]
    declare_length: bool

    def response(self) -> httpx.Response:
        hdrs = dict(self.headers)
        if self.declare_length:
            hdrs["content-length"] = str(len(self.body))
        return httpx.Response(self.status, headers=hdrs, stream=httpx.ByteStream(self.body))


encodings = st.sampled_from(["gzip", "deflate", "identity", "x-unknown"])
specs = st.builds(
    Spec,
    status=st.integers(100, 599),
    body=bodies,
    headers=headers
    | st.builds(lambda h, e: {**h, "content-encoding": e}, headers, encodings)
    | st.builds(
        lambda h, r: {**h, "retry-after": r}, headers, retry_after_values.filter(str.isascii).filter(str.isprintable)
    ),
    declare_length=st.booleans(),
)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_transport_ends_any_response_in_a_response_or_request_failed(mode: str) -> None:
    """Any status, body and (ASCII) headers, for GET and POST, raising or not: the transport
    returns a response or raises RequestFailed, sends at most max_attempts times, and never
    resends a POST it reported as ResendUnsafe. A body whose Content-Encoding cannot be decoded
    raises httpx.DecodingError, as it would without the transport."""
    seen: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio")) if mode == "async" else None

        @SETTINGS
        @given(
            spec=specs,
            name=st.sampled_from(BUILTIN_POLICIES),
            method=st.sampled_from(["GET", "POST"]),
            raising=st.booleans(),
        )
        def prop(spec: Spec, name: str, method: str, raising: bool) -> None:
            seen["cases"] += 1
            calls = [0]

            def handler(request: httpx.Request) -> httpx.Response:
                calls[0] += 1
                return spec.response()

            kwargs: dict[str, Any] = {"raise_on": None if raising else []}
            url = "https://api.example.invalid/v1/send?access_token=t0k"
            outcome: Any
            try:
                if mode == "sync":
                    t = retrypolicy.RetryTransport(name, transport=httpx.MockTransport(handler), **kwargs)
                    with httpx.Client(transport=t) as client:
                        outcome = client.request(method, url, content=b"{}")
                else:
                    assert portal is not None
                    at = retrypolicy.AsyncRetryTransport(name, transport=httpx.MockTransport(handler), **kwargs)
                    outcome = portal.call(functools.partial(_async_request, at, method, url))
            except retrypolicy.RequestFailed as exc:
                outcome = exc
                seen[type(exc).__name__] += 1
                if isinstance(exc, retrypolicy.ResendUnsafe):
                    assert calls[0] == 1 and method == "POST"
            except httpx.DecodingError:
                assert "content-encoding" in spec.headers
                seen["DecodingError"] += 1
                return
            else:
                assert isinstance(outcome, httpx.Response) and outcome.status_code == spec.status
                extension = outcome.extensions.get(retrypolicy.EXTENSION)
                assert extension is None or isinstance(extension, Classification)
                seen["failure response" if extension is not None else "response"] += 1
                if raising:
                    assert extension is None  # with raise_on=all a failure never comes back as a response
            assert 1 <= calls[0] <= POLICIES[name].retry.max_attempts

        prop()
    report(f"transport_any_response[{mode}]", **dict(sorted(seen.items())))
    assert seen["response"] > 0 and seen["cases"] >= min(EXAMPLES, 100)


async def _async_request(
    transport: retrypolicy.AsyncRetryTransport, method: str, url: str, extensions: dict[str, Any] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.request(method, url, content=b"{}", extensions=extensions)
        await response.aread()
        return response


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_first_attempt_without_the_flow_agrees_with_the_flow(mode: str) -> None:
    """The drivers make a first attempt on their own when nothing needs the flow
    (``RetryCore.ready``) and hand any failure to it. For any script of responses, with or
    without a token hook, the outcome is the one the flow gives alone (a per-request options
    dict makes the request take the flow from the start): the same response or exception, the
    same requests sent with the same tokens, the same counters."""
    seen: Counter[str] = Counter()
    with contextlib.ExitStack() as stack:
        portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio")) if mode == "async" else None

        def run(script: list[Spec], name: str, method: str, raising: bool, hook: bool, flow: bool) -> tuple[Any, ...]:
            sent: list[str] = []
            tokens = iter(f"tok{i}-secret" for i in range(1, 100))

            def handler(request: httpx.Request) -> httpx.Response:
                sent.append(f"{request.url} {request.headers.get('authorization')}")
                return script[min(len(sent), len(script)) - 1].response()

            kwargs: dict[str, Any] = {"raise_on": None if raising else []}
            if hook:
                kwargs["token"] = lambda: next(tokens)
            url = "https://api.example.invalid/v1/send" + ("" if hook else "?access_token=t0k")
            extensions: dict[str, Any] = {retrypolicy.EXTENSION: {}} if flow else {}
            outcome: tuple[Any, ...]
            if mode == "sync":
                t: Any = retrypolicy.RetryTransport(name, transport=httpx.MockTransport(handler), **kwargs)
            else:
                t = retrypolicy.AsyncRetryTransport(name, transport=httpx.MockTransport(handler), **kwargs)
            try:
                if mode == "sync":
                    with httpx.Client(transport=t) as client:
                        response = client.request(method, url, content=b"{}", extensions=extensions)
                else:
                    assert portal is not None
                    response = portal.call(functools.partial(_async_request, t, method, url, extensions))
                outcome = ("response", response.status_code, response.content, response.extensions.get("retrypolicy"))
            except retrypolicy.RequestFailed as exc:
                outcome = (type(exc).__name__, str(exc), exc.attempts, exc.classification)
            except httpx.DecodingError as exc:
                outcome = ("DecodingError", str(exc))
            snap = t.snapshot()
            counters = (snap.requests, snap.attempts, snap.retries, snap.renewals, snap.succeeded, snap.gave_up)
            return outcome, sent, counters, snap.budget

        @SETTINGS
        @given(
            script=st.lists(specs, min_size=1, max_size=4),
            name=st.sampled_from(BUILTIN_POLICIES),
            method=st.sampled_from(["GET", "POST"]),
            raising=st.booleans(),
            hook=st.booleans(),
        )
        def prop(script: list[Spec], name: str, method: str, raising: bool, hook: bool) -> None:
            fast = run(script, name, method, raising, hook, flow=False)
            assert fast == run(script, name, method, raising, hook, flow=True)
            seen["cases"] += 1
            seen[f"attempts={len(fast[1])}"] += 1
            seen[fast[0][0]] += 1

        prop()
    report(f"first_attempt_agrees_with_flow[{mode}]", **dict(sorted(seen.items())))
    assert seen["response"] > 0 and seen["attempts=1"] > 0 and seen["cases"] >= min(EXAMPLES, 100)
