"""The built-in tables against the seed code lists, and the categorisations that matter most."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import retrypolicy
from retrypolicy import Category, load_policy
from retrypolicy.cli import main

SEEDS = Path(__file__).parent / "data" / "seed_codes"
PLATFORMS = list(retrypolicy.BUILTIN_POLICIES)
_RANGE = re.compile(r"(-?\d+)-(-?\d+)")
_NUMBER = re.compile(r"-?\d+")


def _seed_lines(platform: str) -> list[str]:
    lines = (SEEDS / f"{platform}.txt").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_builtin_names_match_seed_files() -> None:
    assert sorted(PLATFORMS) == sorted(p.stem for p in SEEDS.glob("*.txt"))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_seed_code_has_a_rule(platform: str) -> None:
    policy = load_policy(platform)
    lines = _seed_lines(platform)
    assert len(lines) > 10, "the seed list looks truncated"
    missing: list[str] = []
    checked = 0
    for line in lines:
        span = _RANGE.fullmatch(line)
        if span is not None:
            low, high = int(span[1]), int(span[2])
            if not any(rule.range == (low, high) for rule in policy.rules):
                missing.append(f"range {line}")
            # and the range rule is what a code inside it resolves to
            for inside in (low, (low + high) // 2, high):
                rule = policy.rule_for(inside)
                if rule is None:
                    missing.append(f"{inside} (inside {line})")
            checked += 1
            continue
        code: int | str = int(line) if _NUMBER.fullmatch(line) else line  # Slack's codes are strings
        if code in policy.success_codes:
            continue  # success: no rule (test_success_codes_are_not_errors)
        rule = policy.rule_for(code)
        if rule is None:
            missing.append(line)
        else:
            in_range = isinstance(code, int) and rule.range is not None and rule.range[0] <= code <= rule.range[1]
            assert rule.code == code or in_range
        checked += 1
    assert not missing, f"{platform}: seed codes with no rule: {missing}"
    assert checked > 0


@pytest.mark.parametrize("platform", PLATFORMS)
def test_success_codes_are_not_errors(platform: str) -> None:
    policy = load_policy(platform)
    for code in policy.success_codes:
        assert policy.rule_for(code) is None, f"success code {code} also has a rule"


def test_cloud_subcode_rules_listed_in_seed_header() -> None:
    header = [
        line
        for line in (SEEDS / "whatsapp_cloud.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith("#") and "subcode" in line
    ]
    pairs = [(int(a), int(b)) for line in header for a, b in re.findall(r"(\d+)/(\d+)", line)]
    assert len(pairs) >= 6
    policy = load_policy("whatsapp_cloud")
    for code, subcode in pairs:
        rule = policy.rule_for(code, subcode)
        assert rule is not None
        assert (rule.code, rule.subcode) == (code, subcode), f"{code}/{subcode} falls back to {rule.label}"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_rule_is_complete(platform: str) -> None:
    policy = load_policy(platform)
    assert policy.platform == platform
    assert policy.rules
    for rule in policy.rules:
        assert isinstance(rule.category, Category), rule.label
        assert rule.description.strip(), rule.label
        assert "\n" not in rule.description, rule.label
        assert rule.description == rule.description.strip(), rule.label
        assert (rule.code is None) != (rule.range is None), rule.label
        if rule.category is Category.USER_ACTION:
            assert rule.remediation and rule.remediation.strip(), f"{platform} {rule.label} has no remediation"
        assert 0 <= rule.min_delay <= 86400, rule.label


@pytest.mark.parametrize("platform", PLATFORMS)
def test_list_command_covers_the_whole_table(platform: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", platform, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    policy = load_policy(platform)
    assert len(listed) == len(policy.rules)
    assert sorted(row["label"] for row in listed) == sorted(rule.label for rule in policy.rules)
    by_label = {rule.label: rule for rule in policy.rules}
    for row in listed:
        assert row["category"] == by_label[row["label"]].category.value
        assert row["description"] == by_label[row["label"]].description


@pytest.mark.parametrize(
    ("platform", "code", "subcode", "category"),
    [
        ("wechat", 40001, None, Category.TOKEN_REFRESH),
        ("wechat", 42001, None, Category.TOKEN_REFRESH),
        ("wechat", -1, None, Category.RETRYABLE),
        ("wechat", 45015, None, Category.USER_ACTION),
        ("wechat", 43004, None, Category.USER_ACTION),
        ("wechat", 45011, None, Category.RETRYABLE),
        ("tencent_im", 70001, None, Category.TOKEN_REFRESH),
        ("whatsapp_cloud", 190, 463, Category.TOKEN_REFRESH),
        ("whatsapp_cloud", 190, 460, Category.USER_ACTION),
        ("whatsapp_cloud", 131056, None, Category.RETRYABLE),
        ("whatsapp_onprem", 1015, None, Category.RETRYABLE),
    ],
)
def test_key_categorisations(platform: str, code: int, subcode: int | None, category: Category) -> None:
    policy = load_policy(platform)
    rule = policy.rule_for(code, subcode)
    assert rule is not None
    assert rule.category is category
    assert rule.code == code
    assert rule.subcode == subcode
    explained = policy.explain(code, subcode)
    assert explained.category is category
    assert explained.known
    if category is Category.USER_ACTION:
        assert explained.remediation


def test_wechat_minute_quota_waits_a_minute() -> None:
    rule = load_policy("wechat").rule_for(45011)
    assert rule is not None
    assert rule.category is Category.RETRYABLE
    assert rule.min_delay == 60
    assert load_policy("wechat").explain(45011).min_delay == 60


def test_cloud_subcode_beats_plain_code() -> None:
    policy = load_policy("whatsapp_cloud")
    plain = policy.rule_for(190)
    password = policy.rule_for(190, 460)
    assert plain is not None and password is not None
    assert plain is not password
    assert password.category is Category.USER_ACTION
    # an unlisted subcode falls back to the plain code's rule
    assert policy.rule_for(190, 999_999) is plain


def test_same_number_differs_per_platform() -> None:
    wechat = load_policy("wechat").rule_for(40001)
    tencent = load_policy("tencent_im").rule_for(40001)
    assert wechat is not None and tencent is not None
    assert wechat.category is Category.TOKEN_REFRESH
    assert tencent.category is not Category.TOKEN_REFRESH
    assert wechat.description != tencent.description
