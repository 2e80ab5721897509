"""examples/wechatpy_send.py and examples/whatsapp_cloud_pywa_tenacity.py run offline and tell their story."""

from __future__ import annotations

import re

import pytest

from tests.test_examples import events, offline_env, run


def test_wechatpy_send() -> None:
    pytest.importorskip("wechatpy")
    proc = run("wechatpy_send.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # no traceback, no warning
    out = proc.stdout
    assert "running offline" in out
    [retry] = events(out, "retry_scheduled")
    assert "code=-1" in retry and "/cgi-bin/message/custom/send?access_token=***" in retry
    [renewed] = events(out, "token_renewed")
    assert "code=42001" in renewed and "hook_called=True" in renewed
    [gave_up] = events(out, "gave_up")
    assert "code=45015" in gave_up
    assert "not sent: WeChat code 45015 needs a person" in out and "what to do: The user has not messaged" in out
    assert "offline check: the fake accepted 2 message(s), served 2 token(s)" in out  # each sent once
    assert "offline-appsecret" not in out


def test_wechatpy_send_refuses_some_credentials_only() -> None:
    proc = run("wechatpy_send.py", offline_env(WECHAT_APPID="wx1"))
    assert proc.returncode == 2 and "missing: WECHAT_APPSECRET, WECHAT_OPENID" in proc.stdout


def test_whatsapp_cloud_pywa_tenacity() -> None:
    proc = run("whatsapp_cloud_pywa_tenacity.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    [renewed] = events(out, "token_renewed")  # the transport's job
    assert "code=190" in renewed and "subcode=463" in renewed
    [retry] = events(out, "retry_scheduled")  # tenacity's, logged by before_sleep_log_event
    assert "code=131000" in retry and "attempt=1" in retry
    assert re.search(r"message sent to 15550001042: id wamid\.\S+", out)
    assert "offline check: the fake accepted 1 message(s)" in out
    assert "EAAG" not in out
