"""User policy files: extending a built-in table, standalone tables, and every kind of bad file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

import retrypolicy
from retrypolicy import Category, Policy, PolicyError, load_policy
from retrypolicy._load import SHIPPED_POLICIES
from retrypolicy._policy import WaitHint


def _write(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


_STANDALONE = """\
    schema = 1
    platform = "acme_chat"
    title = "Acme Chat API"
    unknown_category = "retryable"
    success_codes = [0, 200]

    [extract]
    code = ["status.code"]
    message = ["status.text"]
    request_id = ["trace"]

    [token]
    location = "header"
    name = "X-Acme-Key"

    [retry]
    max_attempts = 2
    max_body_bytes = 1024

    [http]
    "5xx" = "fatal"

    [[rules]]
    code = 7
    category = "token-refresh"
    description = "Key expired."

    [[rules]]
    range = [100, 199]
    category = "user-action"
    description = "Account problem."
    remediation = "Ask the account owner to fix the account."

    [[rules]]
    code = 150
    category = "fatal"
    description = "A code inside the range wins over the range."
"""


def test_extends_overrides_one_code_and_adds_another(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        extends = "wechat"

        [[rules]]
        code = 45015
        category = "fatal"
        description = "Treated as fatal here: we never wait for the user to reply."

        [[rules]]
        code = 99999001
        category = "retryable"
        description = "An in-house gateway code."
        min_delay = 2.5
        """,
    )
    base = load_policy("wechat")
    policy = load_policy(path)
    assert policy.platform == "wechat"
    assert policy.source == str(path)
    assert policy.extract == base.extract
    assert policy.token == base.token
    assert dict(policy.http) == dict(base.http)

    overridden = policy.rule_for(45015)
    assert overridden is not None and overridden.category is Category.FATAL
    base_rule = base.rule_for(45015)
    assert base_rule is not None and base_rule.category is Category.USER_ACTION  # the built-in is untouched

    added = policy.rule_for(99999001)
    assert added is not None and added.category is Category.RETRYABLE and added.min_delay == 2.5
    assert base.rule_for(99999001) is None

    # every other built-in rule is kept as it was
    assert len(policy.rules) == len(base.rules) + 1
    for rule in base.rules:
        if rule.code == 45015:
            continue
        assert rule in policy.rules, rule.label
    kept = policy.rule_for(40001)
    assert kept is not None and kept.category is Category.TOKEN_REFRESH

    # and classification uses the merged table
    c = policy.classify(httpx.Response(200, json={"errcode": 45015, "errmsg": "out of time rid: 9-z"}))
    assert c is not None
    assert c.category is Category.FATAL
    assert c.request_id == "9-z"


def test_extends_can_override_settings(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        extends = "whatsapp_cloud"
        platform = "whatsapp_cloud_staging"

        [retry]
        max_attempts = 7

        [http]
        "404" = "retryable"
        """,
    )
    base = load_policy("whatsapp_cloud")
    policy = load_policy(str(path))
    assert policy.platform == "whatsapp_cloud_staging"
    assert policy.retry.max_attempts == 7
    assert policy.retry.initial_delay == base.retry.initial_delay
    assert policy.http["404"] is Category.RETRYABLE
    assert policy.http["401"] is base.http["401"]
    assert policy.rules == base.rules


def test_standalone_table(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, _STANDALONE))
    assert isinstance(policy, Policy)
    assert policy.platform == "acme_chat"
    assert policy.title == "Acme Chat API"
    assert policy.success_codes == frozenset({0, 200})
    assert policy.unknown_category is Category.RETRYABLE
    assert policy.token.location == "header" and policy.token.name == "X-Acme-Key"
    assert policy.retry.max_attempts == 2 and policy.retry.max_body_bytes == 1024
    assert len(policy.rules) == 3

    in_range = policy.rule_for(120)
    assert in_range is not None and in_range.range == (100, 199) and in_range.category is Category.USER_ACTION
    single = policy.rule_for(150)
    assert single is not None and single.code == 150 and single.category is Category.FATAL
    assert policy.rule_for(200) is None

    def classify(status: int, body: object) -> retrypolicy.Classification | None:
        return policy.classify(httpx.Response(status, json=body))

    c = classify(400, {"status": {"code": 7, "text": "key expired"}, "trace": "t-1"})
    assert c is not None and c.category is Category.TOKEN_REFRESH and c.request_id == "t-1"
    assert classify(200, {"status": {"code": 200}}) is None
    unknown = classify(400, {"status": {"code": 3}})
    assert unknown is not None and unknown.category is Category.RETRYABLE and not unknown.known
    fallback = classify(503, {"other": 1})
    assert fallback is not None and fallback.source == "http" and fallback.category is Category.FATAL


def test_load_policy_accepts_a_policy_and_caches_builtins() -> None:
    policy = load_policy("tencent_im")
    assert load_policy(policy) is policy
    assert load_policy("tencent_im") is policy


# -- bad files --------------------------------------------------------------------------------

_HEAD = """\
    platform = "acme"

    [extract]
    code = ["code"]

"""

_OK_RULE = """\
    [[rules]]
    code = 1
    category = "fatal"
    description = "One."

"""


def _expect_error(path: Path | str, *fragments: str) -> PolicyError:
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, retrypolicy.RetryPolicyError)
    message = str(err)
    assert "\n" not in message.strip()
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return err


@pytest.mark.parametrize(
    ("rule", "fragments", "field"),
    [
        (
            'code = 2\ncategory = "sometimes"\ndescription = "Two."',
            ["rules[1]", "'category'", "sometimes", "retryable"],
            "category",
        ),
        (
            'code = 1\ncategory = "fatal"\ndescription = "Again."',
            ["rules[1]", "'code'", "duplicate", "rules[0]"],
            "code",
        ),
        ('code = 2\ncategory = "fatal"', ["rules[1]", "'description'"], "description"),
        ('code = 2\ncategory = "fatal"\ndescription = "   "', ["rules[1]", "'description'"], "description"),
        (
            'code = 2\ncategory = "fatal"\ndescription = """First line.\nSecond line."""',
            ["rules[1]", "'description'", "one line"],
            "description",
        ),
        (
            'code = 2\ncategory = "user-action"\ndescription = "Two."',
            ["rules[1]", "'remediation'", "user-action"],
            "remediation",
        ),
        ('code = 2\ncatgory = "fatal"\ndescription = "Two."', ["rules[1]", "'catgory'", "unknown key"], "catgory"),
        (
            'code = 2\nrange = [2, 3]\ncategory = "fatal"\ndescription = "Two."',
            ["rules[1]", "'code'", "exactly one"],
            "code",
        ),
        ('category = "fatal"\ndescription = "Two."', ["rules[1]", "exactly one"], "code"),
        ('range = [9, 3]\ncategory = "fatal"\ndescription = "Two."', ["rules[1]", "'range'", "low <= high"], "range"),
        ('range = [3]\ncategory = "fatal"\ndescription = "Two."', ["rules[1]", "'range'"], "range"),
        ('code = "2"\ncategory = "fatal"\ndescription = "Two."', ["rules[1]", "'code'", "integer"], "code"),
        ('code = true\ncategory = "fatal"\ndescription = "Two."', ["rules[1]", "'code'", "integer"], "code"),
        (
            'code = 2\ncategory = "fatal"\ndescription = "Two."\nmin_delay = -1',
            ["rules[1]", "'min_delay'"],
            "min_delay",
        ),
        (
            'code = 2\ncategory = "fatal"\ndescription = "Two."\nmin_delay = "60"',
            ["rules[1]", "'min_delay'"],
            "min_delay",
        ),
        (
            'code = 2\ncategory = "fatal"\ndescription = "Two."\nmin_delay = 100000',
            ["rules[1]", "'min_delay'"],
            "min_delay",
        ),
        (
            'code = 2\ncategory = "fatal"\ndescription = "Two."\nmin_delay = nan',
            ["rules[1]", "'min_delay'"],
            "min_delay",
        ),
        (
            'code = 2\ncategory = "fatal"\ndescription = "Two."\nambiguous = "yes"',
            ["rules[1]", "'ambiguous'"],
            "ambiguous",
        ),
        (
            'range = [1, 5]\nsubcode = 3\ncategory = "fatal"\ndescription = "Two."',
            ["rules[1]", "'subcode'"],
            "subcode",
        ),
        (
            'code = 2\ncategory = "fatal"\ndescription = "Two."\nremediation = ""',
            ["rules[1]", "'remediation'"],
            "remediation",
        ),
    ],
    ids=[
        "unknown-category",
        "duplicate-code",
        "missing-description",
        "blank-description",
        "multi-line-description",
        "user-action-without-remediation",
        "unknown-key",
        "code-and-range",
        "neither-code-nor-range",
        "range-low-above-high",
        "range-one-bound",
        "code-string",
        "code-bool",
        "min-delay-negative",
        "min-delay-string",
        "min-delay-too-large",
        "min-delay-nan",
        "ambiguous-not-bool",
        "subcode-on-range",
        "empty-remediation",
    ],
)
def test_bad_rule(tmp_path: Path, rule: str, fragments: list[str], field: str) -> None:
    body = textwrap.indent(rule, "    ")
    path = _write(tmp_path, _HEAD + _OK_RULE + "    [[rules]]\n" + body + "\n")
    err = _expect_error(path, str(path), *fragments)
    assert err.source == str(path)
    assert err.field == field
    assert err.rule is not None and err.rule.startswith("rules[1]")


def test_overlapping_ranges(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        _HEAD
        + """\
    [[rules]]
    range = [100, 200]
    category = "fatal"
    description = "Block A."

    [[rules]]
    code = 5
    category = "fatal"
    description = "Five."

    [[rules]]
    range = [150, 300]
    category = "retryable"
    description = "Block B."
""",
    )
    err = _expect_error(path, str(path), "rules[2]", "'range'", "overlaps", "rules[0]", "150-300", "100-200")
    assert err.field == "range"


def test_adjacent_ranges_and_code_inside_range_are_fine(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        _HEAD
        + """\
    [[rules]]
    range = [100, 199]
    category = "fatal"
    description = "Block A."

    [[rules]]
    range = [200, 299]
    category = "retryable"
    description = "Block B."

    [[rules]]
    code = 250
    category = "token-refresh"
    description = "Inside B."
""",
    )
    policy = load_policy(path)
    found = {code: policy.rule_for(code) for code in (99, 100, 199, 200, 250, 299, 300)}
    assert {code: rule.category if rule else None for code, rule in found.items()} == {
        99: None,
        100: Category.FATAL,
        199: Category.FATAL,
        200: Category.RETRYABLE,
        250: Category.TOKEN_REFRESH,
        299: Category.RETRYABLE,
        300: None,
    }


def test_same_code_with_different_subcodes_is_not_a_duplicate(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        _HEAD
        + """\
    [[rules]]
    code = 190
    category = "token-refresh"
    description = "Plain."

    [[rules]]
    code = 190
    subcode = 460
    category = "fatal"
    description = "With subcode."

    [[rules]]
    code = 190
    subcode = 460
    category = "retryable"
    description = "Duplicate."
""",
    )
    _expect_error(path, "rules[2]", "190/460", "duplicate", "rules[1]")


def test_malformed_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, 'platform = "acme"\n[[rules]\ncode = 1\n')
    err = _expect_error(path, str(path), "malformed TOML")
    assert err.rule is None


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'platform = "caf\xe9"\n')
    _expect_error(path, str(path), "cannot read")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    _expect_error(path, str(path), "not found")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    _expect_error(tmp_path, str(tmp_path), "cannot read")


def test_unknown_platform_name() -> None:
    err = _expect_error("wechaat", "wechaat", "unknown platform", "wechat", "whatsapp_cloud")
    assert err.source == "wechaat"


def test_wrong_argument_type() -> None:
    with pytest.raises(PolicyError, match="built-in name"):
        load_policy(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "fragments", "field"),
    [
        ('extends = "wechatt"\n', ["'extends'", "wechatt", "built-in"], "extends"),
        ('extends = "wechat"\nschema = 2\n', ["'schema'", "unsupported"], "schema"),
        ('extends = "wechat"\nplatform = "we chat!"\n', ["'platform'"], "platform"),
        ('extends = "wechat"\nunknown_category = "maybe"\n', ["'unknown_category'", "maybe"], "unknown_category"),
        ('extends = "wechat"\nsuccess_codes = [0, "1"]\n', ["'success_codes'"], "success_codes"),
        ('extends = "wechat"\nplatfrom = "x"\n', ["'platfrom'", "unknown key"], "platfrom"),
        ('platform = "a"\n[extract]\nmessage = ["m"]\n', ["'extract.code'"], "extract.code"),
        (
            'extends = "wechat"\n[extract]\nrequest_id_pattern = "rid: ("\n',
            ["'extract.request_id_pattern'"],
            "extract.request_id_pattern",
        ),
        (
            'extends = "wechat"\n[extract]\nrequest_id_pattern = "rid: \\\\S+"\n',
            ["capturing group"],
            "extract.request_id_pattern",
        ),
        ('extends = "wechat"\n[extract]\ncodes = ["x"]\n', ["'extract.codes'", "unknown key"], "extract.codes"),
        ('extends = "wechat"\n[extract]\nfailure = "FAIL"\n', ["'extract.failure'"], "extract.failure"),
        ('extends = "wechat"\n[http]\n"4xxx" = "fatal"\n', ["'http.4xxx'", "HTTP statuses"], "http.4xxx"),
        ('extends = "wechat"\n[http]\n"600" = "fatal"\n', ["'http.600'"], "http.600"),
        ('extends = "wechat"\n[http]\n"429" = "later"\n', ["'http.429'", "later"], "http.429"),
        ('extends = "wechat"\nhttp = 5\n', ["'http'", "table"], "http"),
        ('extends = "wechat"\n[retry]\nmax_attempts = 0\n', ["'retry.max_attempts'"], "retry.max_attempts"),
        ('extends = "wechat"\n[retry]\nmax_attempts = 1000\n', ["'retry'", "max_attempts"], "retry"),
        ('extends = "wechat"\n[retry]\ninitial_delay = -1.0\n', ["'retry.initial_delay'"], "retry.initial_delay"),
        ('extends = "wechat"\n[retry]\ndeadline = inf\n', ["'retry'", "deadline"], "retry"),
        ('extends = "wechat"\n[retry]\nattempts = 3\n', ["'retry.attempts'", "unknown key"], "retry.attempts"),
        ('extends = "wechat"\n[token]\nlocation = "cookie"\n', ["'token.location'", "cookie"], "token.location"),
        ('extends = "wechat"\nrules = 3\n', ["'rules'", "array"], "rules"),
    ],
    ids=[
        "unknown-extends",
        "schema",
        "platform-name",
        "unknown-category",
        "success-codes",
        "unknown-top-key",
        "no-code-path",
        "bad-regex",
        "regex-without-group",
        "extract-key",
        "failure-shape",
        "http-key",
        "http-status-600",
        "http-category",
        "http-not-a-table",
        "retry-zero-attempts",
        "retry-too-many-attempts",
        "retry-negative-delay",
        "retry-infinite-deadline",
        "retry-key",
        "token-location",
        "rules-not-array",
    ],
)
def test_bad_table_setting(tmp_path: Path, text: str, fragments: list[str], field: str) -> None:
    path = _write(tmp_path, text)
    err = _expect_error(path, str(path), f"field {field!r}", *fragments)
    assert err.rule is None
    assert err.field == field


def test_fixed_file_loads_after_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, _HEAD + _OK_RULE + '    [[rules]]\n    code = 2\n    category = "nope"\n')
    with pytest.raises(ValueError, match=r"rules\[1\]"):
        load_policy(path)
    # a fixed file loads
    path.write_text(textwrap.dedent(_HEAD + _OK_RULE), encoding="utf-8")
    assert len(load_policy(path).rules) == 1


# -- general table features: string codes, message patterns, wait hints, header ids, extra, path tokens


def test_every_shipped_table_loads_by_name_and_is_a_file() -> None:
    policies_dir = Path(__file__).resolve().parent.parent / "policies"
    assert sorted(SHIPPED_POLICIES) == sorted(p.stem for p in policies_dir.glob("*.toml"))
    assert set(retrypolicy.BUILTIN_POLICIES) <= set(SHIPPED_POLICIES)
    for name in SHIPPED_POLICIES:
        policy = load_policy(name)
        assert policy.platform == name
        assert load_policy(name) is policy  # cached


def test_unknown_platform_name_lists_every_shipped_table() -> None:
    _expect_error("slak", "unknown platform", "slack", "telegram", "dingtalk_v1", "wecom", "feishu")


def test_string_codes_subcodes_and_success_codes(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        platform = "strings"
        success_codes = ["OK", 0]

        [extract]
        code = ["code"]
        subcode = ["sub"]

        [[rules]]
        code = "Forbidden.AccessDenied.AccessTokenInvalid"
        category = "token-refresh"
        description = "A string code."

        [[rules]]
        code = 15
        subcode = "isp.-1"
        category = "retryable"
        description = "A string subcode."
        """,
    )
    policy = load_policy(path)
    assert policy.success_codes == frozenset({"OK", 0})
    rule = policy.rule_for("Forbidden.AccessDenied.AccessTokenInvalid")
    assert rule is not None and rule.code == "Forbidden.AccessDenied.AccessTokenInvalid"
    assert rule.label == "Forbidden.AccessDenied.AccessTokenInvalid"
    sub = policy.rule_for(15, "isp.-1")
    assert sub is not None and sub.label == "15/isp.-1"
    assert policy.rule_for("forbidden.accessdenied.accesstokeninvalid") is None  # case matters


def test_extends_keys_on_code_subcode_and_pattern(tmp_path: Path) -> None:
    """An override replaces only the rule with its code, subcode and pattern; the other patterns
    of that code stay, and the user's own patterns are tried before the built-in ones."""
    base = load_policy("telegram")
    before = [r for r in base.rules if r.code == 403]
    path = _write(
        tmp_path,
        """\
        extends = "telegram"

        [[rules]]
        code = 403
        message_pattern = '(?i)bot was blocked by the user|USER_IS_BLOCKED'
        category = "fatal"
        description = "We drop users who blocked us."

        [[rules]]
        code = 403
        message_pattern = '(?i)kicked'
        category = "fatal"
        description = "Our own wording for a kick, tried first."
        """,
    )
    policy = load_policy(path)
    after = [r for r in policy.rules if r.code == 403]
    assert len(after) == len(before) + 1  # one replaced, one added
    blocked = policy.rule_for(403, None, "Forbidden: bot was blocked by the user")
    assert blocked is not None and blocked.description == "We drop users who blocked us."
    kicked = policy.rule_for(403, None, "Forbidden: bot was kicked from the supergroup chat")
    assert kicked is not None and kicked.description == "Our own wording for a kick, tried first."
    deactivated = policy.rule_for(403, None, "Forbidden: user is deactivated")
    assert deactivated is not None and deactivated == base.rule_for(403, None, "Forbidden: user is deactivated")
    plain = policy.rule_for(403)
    assert plain is not None and plain == base.rule_for(403)
    # and the built-in table is untouched
    assert base.rule_for(403, None, "Forbidden: bot was blocked by the user") != blocked


def test_extends_a_new_table_keeps_its_wire_format(tmp_path: Path) -> None:
    path = _write(tmp_path, 'extends = "telegram"\n[retry]\nmax_attempts = 2\n')
    policy = load_policy(path)
    base = load_policy("telegram")
    assert (policy.token, policy.wait_hint, policy.extract) == (base.token, base.wait_hint, base.extract)
    assert policy.retry.max_attempts == 2


_PATTERN_RULE = 'code = 2\ncategory = "fatal"\ndescription = "Two."\nmessage_pattern = '


@pytest.mark.parametrize(
    ("rule", "fragments", "field"),
    [
        ('code = "40014"\ncategory = "fatal"\ndescription = "Two."', ["'code'", "40014 as an integer"], "code"),
        ('code = " x"\ncategory = "fatal"\ndescription = "Two."', ["'code'", "surrounding spaces"], "code"),
        ('code = ""\ncategory = "fatal"\ndescription = "Two."', ["'code'", "printable"], "code"),
        ('code = "a\\nb"\ncategory = "fatal"\ndescription = "Two."', ["'code'", "printable"], "code"),
        ('code = 1.5\ncategory = "fatal"\ndescription = "Two."', ["'code'", "integer or a string"], "code"),
        ('code = 2\nsubcode = "7"\ncategory = "fatal"\ndescription = "Two."', ["'subcode'", "integer"], "subcode"),
        ('code = 2\nsubcode = [1]\ncategory = "fatal"\ndescription = "Two."', ["'subcode'"], "subcode"),
        (
            _PATTERN_RULE + "'(unclosed'",
            ["rules[1] (code 2 /(unclosed/)", "invalid regular expression"],
            "message_pattern",
        ),
        (_PATTERN_RULE + "'a*|b'", ["rules[1]", "empty message"], "message_pattern"),
        (_PATTERN_RULE + "''", ["rules[1]", "non-empty regular expression"], "message_pattern"),
        (_PATTERN_RULE + "5", ["rules[1]", "regular expression"], "message_pattern"),
        (
            'range = [5, 9]\ncategory = "fatal"\ndescription = "Two."\nmessage_pattern = "x"',
            ["rules[1]", "not with a range"],
            "message_pattern",
        ),
        (
            'message_pattern = "x"\nsubcode = 3\ncategory = "fatal"\ndescription = "Two."',
            ["rules[1] (message_pattern /x/)", "single code"],
            "subcode",
        ),
    ],
    ids=[
        "code-digits-as-string",
        "code-padded",
        "code-empty",
        "code-two-lines",
        "code-float",
        "subcode-digits-as-string",
        "subcode-list",
        "pattern-bad-regex",
        "pattern-matches-empty",
        "pattern-empty",
        "pattern-not-text",
        "pattern-with-range",
        "pattern-only-with-subcode",
    ],
)
def test_bad_general_rule(tmp_path: Path, rule: str, fragments: list[str], field: str) -> None:
    body = textwrap.indent(rule, "    ")
    path = _write(tmp_path, _HEAD + _OK_RULE + "    [[rules]]\n" + body + "\n")
    err = _expect_error(path, str(path), f"field {field!r}", *fragments)
    assert err.field == field
    assert err.rule is not None and err.rule.startswith("rules[1]")


def test_duplicate_pattern_rules(tmp_path: Path) -> None:
    rule = (
        '    [[rules]]\n    code = 1\n    message_pattern = "busy"\n    category = "fatal"\n    description = "B."\n\n'
    )
    path = _write(tmp_path, _HEAD + _OK_RULE + rule + rule)
    _expect_error(path, "rules[2] (code 1 /busy/)", "field 'message_pattern'", "duplicate code 1 /busy/", "rules[1]")
    alone = '    [[rules]]\n    message_pattern = "busy"\n    category = "fatal"\n    description = "B."\n\n'
    path = _write(tmp_path, _HEAD + alone + alone, name="alone.toml")
    _expect_error(path, "rules[1] (message_pattern /busy/)", "duplicate message pattern /busy/", "rules[0]")
    # the same pattern on two codes, and the same code with and without it, are fine
    other = rule.replace("code = 1", "code = 2")
    assert len(load_policy(_write(tmp_path, _HEAD + _OK_RULE + rule + other, name="ok.toml")).rules) == 3


@pytest.mark.parametrize(
    ("text", "fragments", "field"),
    [
        ('extends = "wechat"\nsuccess_codes = ["1"]\n', ["'success_codes'", "as an integer"], "success_codes"),
        ('extends = "wechat"\nsuccess_codes = [true]\n', ["'success_codes'", "integer or a string"], "success_codes"),
        ('extends = "wechat"\n[wait_hint]\nunit = "s"\n', ["exactly one of 'header' or 'path'"], "wait_hint"),
        ('extends = "wechat"\n[wait_hint]\nheader = "a"\npath = "b"\n', ["exactly one"], "wait_hint"),
        ('extends = "wechat"\n[wait_hint]\nheader = "X-Reset"\nunit = "min"\n', ["min", "epoch_ms"], "wait_hint.unit"),
        ('extends = "wechat"\n[wait_hint]\nheader = "X Reset"\n', ["header name"], "wait_hint.header"),
        ('extends = "wechat"\n[wait_hint]\npath = ["a", "b"]\n', ["one dotted path"], "wait_hint.path"),
        ('extends = "wechat"\n[wait_hint]\npath = 5\n', ["dotted paths"], "wait_hint.path"),
        ('extends = "wechat"\n[wait_hint]\nheadr = "x"\n', ["unknown key"], "wait_hint.headr"),
        ('extends = "wechat"\nwait_hint = 5\n', ["table"], "wait_hint"),
        (
            'extends = "wechat"\n[extract]\nrequest_id_header = "Authorization"\n',
            ["names a secret"],
            "extract.request_id_header",
        ),
        (
            'extends = "wechat"\n[extract]\nrequest_id_header = ["X-Log-Id", 5]\n',
            ["header names"],
            "extract.request_id_header",
        ),
        ('extends = "wechat"\n[extract]\nextra = ["a"]\n', ["table of name"], "extract.extra"),
        ('extends = "wechat"\n[extract]\nextra = { refresh_token = "t" }\n', ["secret"], "extract.extra.refresh_token"),
        ('extends = "wechat"\n[extract]\nextra = { "new-id" = "a.b" }\n', ["letters"], "extract.extra.new-id"),
        (
            'extends = "wechat"\n[extract]\nextra = { new_id = ["a", "b"] }\n',
            ["one dotted path"],
            "extract.extra.new_id",
        ),
        ('extends = "wechat"\n[extract]\nextra = { new_id = 5 }\n', ["dotted paths"], "extract.extra.new_id"),
        ('extends = "wechat"\n[extract]\nfailure = { path = "ok", value = 1.5 }\n', ["true/false"], "extract.failure"),
        ('extends = "wechat"\n[token]\nlocation = "path"\n', ["needs a prefix"], "token.prefix"),
        ('extends = "wechat"\n[token]\nlocation = "path"\nprefix = "b/t"\n', ["prefix"], "token.prefix"),
        ('extends = "telegram"\n[token]\nafter = ["file"]\n', ["path prefixes"], "token.after"),
        ('extends = "wechat"\n[token]\nprefix = "bot"\n', ['only for location = "path"'], "token.prefix"),
        ('extends = "wechat"\n[token]\nlocation = "header"\nname = ""\n', ["non-empty"], "token.name"),
    ],
    ids=[
        "success-code-digits-string",
        "success-code-bool",
        "wait-hint-neither",
        "wait-hint-both",
        "wait-hint-unit",
        "wait-hint-header-name",
        "wait-hint-two-paths",
        "wait-hint-path-type",
        "wait-hint-key",
        "wait-hint-not-table",
        "request-id-header-secret",
        "request-id-header-type",
        "extra-not-table",
        "extra-secret-name",
        "extra-bad-name",
        "extra-two-paths",
        "extra-path-type",
        "failure-float",
        "path-token-no-prefix",
        "path-token-bad-prefix",
        "path-token-bad-after",
        "prefix-on-query",
        "header-without-name",
    ],
)
def test_bad_general_setting(tmp_path: Path, text: str, fragments: list[str], field: str) -> None:
    path = _write(tmp_path, text)
    err = _expect_error(path, str(path), f"field {field!r}", *fragments)
    assert err.rule is None
    assert err.field == field


def test_general_settings_load(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        extends = "wechat"

        [extract]
        request_id_header = "X-Tt-Logid"
        failure = { path = "ok", value = false }
        extra = { new_id = "parameters.migrate_to_chat_id" }

        [wait_hint]
        header = "X-Ogw-Ratelimit-Reset"
        unit = "epoch_ms"

        [token]
        location = "path"
        prefix = "bot"
        after = ["/file", "/a/file"]
        """,
    )
    policy = load_policy(path)
    assert policy.extract.request_id_header == ("x-tt-logid",)
    assert policy.extract.failure == (("ok",), False)
    assert policy.extract.extra == (("new_id", ("parameters", "migrate_to_chat_id")),)
    assert policy.wait_hint == WaitHint(header="x-ogw-ratelimit-reset", unit="epoch_ms")
    assert policy.token.location == "path" and policy.token.prefix == "bot"
    assert policy.token.after == ("/a/file", "/file")  # the longest prefix is tried first
