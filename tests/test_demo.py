"""The demo's summary must agree with its scenario and with the fake's own counters."""

from __future__ import annotations

import io

import pytest

from retrypolicy import BUILTIN_POLICIES, cli, is_testing, load_policy
from retrypolicy.demo import PLATFORMS, QUOTA_PROBES, run_demo, scenario
from retrypolicy.testing import Busy, GatewayError, RateLimited, TokenExpired, UserAction


@pytest.mark.parametrize("platform", BUILTIN_POLICIES)
def test_summary_matches_the_scenario(platform: str) -> None:
    out = io.StringIO()
    s = run_demo(platform, requests=30, out=out, colors=False)
    faults = scenario(platform)
    retried = sum(isinstance(f, (Busy, RateLimited)) for f in faults) + 1  # + the phase-2 rate limit
    unrecoverable = sum(isinstance(f, (GatewayError, UserAction)) for f in faults)
    expiries = sum(isinstance(f, TokenExpired) for f in faults)
    assert expiries == (0 if platform == "telegram" else 1)  # a Telegram bot token is static: nothing expires
    # does this platform's rate-limit code start an app-wide cooldown? (then the phase-2 probes fail
    # fast; a per-recipient one, Telegram's per chat, spares the probes: each goes to another recipient)
    rate_code = PLATFORMS[platform]().FAULT_CODES["rate_limited"]
    rule = load_policy(platform).rule_for(rate_code)
    assert rule is not None
    blocked = QUOTA_PROBES if rule.cooldown is not None and rule.cooldown.scope == "app" else 0
    assert s.requests == 30 + 1 + QUOTA_PROBES
    assert s.retries == retried
    assert s.renewals == expiries  # one expiry, one hook call, however many requests saw it
    assert s.failed_fast == blocked
    assert s.succeeded == s.requests - unrecoverable - blocked
    assert s.messages_sent == s.succeeded  # the platform accepted each message exactly once
    assert dict(s.gave_up) == {"retryable": 1, "user-action": 1}  # the POST 502 and the user-action code
    assert s.failures["retryable"] == retried + 1 and s.failures["user-action"] == 1
    # every token failure was resent once, every retry once; requests refused by a cooldown never sent
    assert s.attempts == s.requests - blocked + s.retries + s.failures["token-refresh"]
    text = out.getvalue()
    assert "retrypolicy.retry_scheduled" in text and "retrypolicy.gave_up" in text
    assert f"summary: {platform}" in text and "\033[" not in text  # plain text when not a terminal
    assert not is_testing()  # the demo restores testing mode


def test_cli_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "tencent_im", "--requests", "12"]) == 0
    out = capsys.readouterr().out
    assert "summary: tencent_im" in out and "succeeded" in out


def test_cli_demo_rejects_bad_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "wechat", "--requests", "0"]) == 2
    assert "--requests" in capsys.readouterr().err
