"""examples/slack_send.py and examples/telegram_ptb.py run offline, show the retries, and never
print a token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PREFIXES = ("SLACK_", "TELEGRAM_")


def run(script: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    env["PYTHONWARNINGS"] = "error"  # like filterwarnings = error in pyproject
    env.update(extra)
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def events(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if f"retrypolicy.{name}" in line]


def test_slack_send_offline() -> None:
    proc = run("slack_send.py")
    assert proc.returncode == 0 and proc.stderr == "", proc.stdout + proc.stderr
    out = proc.stdout
    assert "running offline" in out
    [busy, edit] = events(out, "retry_scheduled")
    assert "code=service_unavailable" in busy and "/api/chat.postMessage" in busy
    assert "code=internal_error" in edit and "/api/chat.update" in edit  # resent: chat.update is idempotent
    [renewed] = events(out, "token_renewed")
    assert "code=token_expired" in renewed and "hook_called=True" in renewed
    assert re.search(r"message posted to C0FAKE1042: ts \d+\.\d+", out) and "edited" in out
    assert "offline check: the fake accepted 1 message(s) and 1 edit(s)" in out
    assert "xox" not in out  # no access or refresh token


def test_telegram_ptb_offline() -> None:
    pytest.importorskip("telegram")
    proc = run("telegram_ptb.py")
    assert proc.returncode == 0 and proc.stderr == "", proc.stdout + proc.stderr
    out = proc.stdout
    [flood] = events(out, "retry_scheduled")
    assert "code=429" in flood and "delay=3.0" in flood and "/bot***/sendMessage" in flood
    [migrated] = events(out, "gave_up")
    assert "code=400" in migrated and "category=fatal" in migrated
    assert "chat -4001042 is now the supergroup -1001234561042" in out
    assert "message sent to chat -1001234561042: message_id 2" in out
    assert "offline check: the fake accepted 2 message(s)" in out
    assert not re.search(r"/bot\d+:", out)  # the token never shows, in our events or httpx's log


@pytest.mark.parametrize(
    ("script", "variables"),
    [
        ("slack_send.py", {"SLACK_CHANNEL": "C1"}),
        ("slack_send.py", {"SLACK_CLIENT_ID": "1.2", "SLACK_CHANNEL": "C1"}),
        (
            "slack_send.py",
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_CLIENT_ID": "1.2",
                "SLACK_CLIENT_SECRET": "s",
                "SLACK_REFRESH_TOKEN": "xoxe-1-x",
                "SLACK_CHANNEL": "C1",
            },
        ),
        ("telegram_ptb.py", {"TELEGRAM_CHAT_ID": "1"}),
    ],
)
def test_variables_that_do_not_fit_are_refused(script: str, variables: dict[str, str]) -> None:
    if script == "telegram_ptb.py":
        pytest.importorskip("telegram")
    proc = run(script, **variables)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "missing:" in proc.stdout and not events(proc.stdout, "retry_scheduled")
