"""The scripts in examples/ run offline, show the retry and the token renewal, and print the message id."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from retrypolicy.testing import FakeDingTalk, FakeFeishu, FakeWeCom, FakeWhatsAppOnPrem

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CREDENTIAL_PREFIXES = ("WECHAT_", "TENCENT_IM_", "WA_ONPREM_", "WA_CLOUD_", "WECOM_", "FEISHU_", "DINGTALK_")
SCRIPTS = ("wechat_send.py", "tencent_im_send.py", "whatsapp_onprem_send.py", "whatsapp_cloud_pywa.py")


def offline_env(**extra: str) -> dict[str, str]:
    """This environment without any credential variable (so the scripts use the fakes), warnings as errors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CREDENTIAL_PREFIXES)}
    env["PYTHONWARNINGS"] = "error"  # like filterwarnings = error in pyproject
    env.update(extra)
    return env


def run(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=offline_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_ok(script: str) -> str:
    proc = run(script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""  # no traceback, no warning
    assert "running offline" in proc.stdout
    assert "offline check: the fake accepted 1 message(s)" in proc.stdout  # sent exactly once
    return proc.stdout


def events(out: str, name: str) -> list[str]:
    return [line for line in out.splitlines() if f"retrypolicy.{name}" in line]


def test_wechat() -> None:
    out = run_ok("wechat_send.py")
    [retry] = events(out, "retry_scheduled")
    assert "code=-1" in retry and "/cgi-bin/message/custom/send?access_token=***" in retry
    [gave_up] = events(out, "gave_up")
    assert "code=45015" in gave_up and "category=user-action" in gave_up
    # the UserActionRequired is caught and its remediation printed
    assert "customer-service message not sent: WeChat code 45015 needs a person" in out
    assert re.search(r"what to do: The user has not messaged the account in the last 48 hours", out)
    [renewed] = events(out, "token_renewed")
    assert "code=42001" in renewed and "hook_called=True" in renewed and "/template/send" in renewed
    assert re.search(r"template message sent to \S+: msgid \d+", out)
    assert "served 2 token(s)" in out  # the first token and the renewal
    assert "offline-appsecret" not in out


def test_tencent_im() -> None:
    out = run_ok("tencent_im_send.py")
    [retry] = events(out, "retry_scheduled")
    assert "code=-10114" in retry and "usersig=***" in retry
    [renewed] = events(out, "token_renewed")
    assert "code=70001" in renewed and "hook_called=True" in renewed
    assert not events(out, "gave_up")
    assert re.search(r"message sent to user1042: MsgKey \d+_\d+_\d+ \(MsgTime \d+\)", out)
    assert "usersig=eJ" not in out  # a UserSig never shows


def test_whatsapp_onprem() -> None:
    out = run_ok("whatsapp_onprem_send.py")
    [retry] = events(out, "retry_scheduled")
    assert "code=1016" in retry
    [renewed] = events(out, "token_renewed")
    assert "code=1005" in renewed and "hook_called=True" in renewed
    assert re.search(r"message sent to 15550001042: id gBEG\w+", out)
    assert "served 2 login(s)" in out
    assert "offline-Passw0rd!" not in out


def test_whatsapp_cloud_pywa() -> None:
    pytest.importorskip("pywa")
    out = run_ok("whatsapp_cloud_pywa.py")
    [retry] = events(out, "retry_scheduled")
    assert "code=131000" in retry and "graph.facebook.com/v" in retry  # pywa built the URL
    [renewed] = events(out, "token_renewed")
    assert "code=190" in renewed and "subcode=463" in renewed and "hook_called=True" in renewed
    assert re.search(r"message sent to 15550001042: id wamid\.\S+", out)
    assert "EAAG" not in out  # a Cloud token never shows


@pytest.mark.parametrize(
    ("script", "variable"),
    [
        ("wechat_send.py", "WECHAT_APPID"),
        ("tencent_im_send.py", "TENCENT_IM_SDKAPPID"),
        ("whatsapp_onprem_send.py", "WA_ONPREM_URL"),
        ("whatsapp_cloud_pywa.py", "WA_CLOUD_TOKEN"),
        ("wecom_send.py", "WECOM_CORPID"),
        ("feishu_send.py", "FEISHU_APP_SECRET"),
        ("dingtalk_send.py", "DINGTALK_APPKEY"),
    ],
)
def test_some_credentials_only_is_refused(script: str, variable: str) -> None:
    """One variable set and the others missing: exit 2 before any request, naming what is missing."""
    proc = run(script, offline_env(**{variable: "1400000000" if "SDKAPPID" in variable else "x"}))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "missing:" in proc.stdout and variable not in proc.stdout.split("missing:")[1]
    assert not events(proc.stdout, "retry_scheduled")


def test_whatsapp_onprem_real_api_mode() -> None:
    """With the WA_ONPREM_* variables the script takes its real-API path: here, a fake served on 127.0.0.1."""
    fake = FakeWhatsAppOnPrem("ops", "s3cret-Passw0rd")
    with fake.serve() as base_url:
        env = offline_env(
            WA_ONPREM_URL=base_url,
            WA_ONPREM_USER="ops",
            WA_ONPREM_PASSWORD="s3cret-Passw0rd",
            WA_ONPREM_TO="15550009",
            NO_PROXY="127.0.0.1",  # a proxy from the environment must not take the loopback requests
            no_proxy="127.0.0.1",
        )
        proc = run("whatsapp_onprem_send.py", env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "using the on-premises client" in proc.stdout and "offline" not in proc.stdout
    assert re.search(r"message sent to 15550009: id gBEG\w+", proc.stdout)
    assert fake.token_requests == 1 and len(fake.sent) == 1
    assert "s3cret-Passw0rd" not in proc.stdout


# -- WeCom, Feishu, DingTalk (issue 16) ------------------------------------------------------------

LOOPBACK = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}


def test_wecom() -> None:
    out = run_ok("wecom_send.py")
    [gave_up] = events(out, "gave_up")
    assert "code=60020" in gave_up and "category=user-action" in gave_up
    assert "message not sent: WeCom code 60020 needs a person" in out and "what to do: An admin must add" in out
    assert re.search(r"request id for WeCom support: \d{20,}", out)  # the hint: [...] of errmsg
    [retry] = events(out, "retry_scheduled")
    assert "code=-1" in retry and "/cgi-bin/message/send?access_token=***" in retry
    [renewed] = events(out, "token_renewed")
    assert "code=42001" in renewed and "hook_called=True" in renewed
    assert re.search(r"message sent to zhangsan\|lisi: msgid \S+", out) and "served 2 token(s)" in out
    assert "offline-wecom-corpsecret" not in out


def test_feishu() -> None:
    out = run_ok("feishu_send.py")
    [gave_up] = events(out, "gave_up")
    assert "code=230013" in gave_up and "message not sent: Feishu code 230013 needs a person" in out
    [retry] = events(out, "retry_scheduled")
    assert "code=99991400" in retry and "delay=2.0" in retry  # x-ogw-ratelimit-reset: 2
    [renewed] = events(out, "token_renewed")
    assert "code=99991663" in renewed and "hook_called=True" in renewed
    assert re.search(r"message sent to ou_\w+: message_id om_\w+", out) and "served 2 token(s)" in out
    assert "offline-feishu-app-secret" not in out and not re.search(r"t-[0-9a-f]{40}", out)  # no token shows


def test_dingtalk() -> None:
    proc = run("dingtalk_send.py")
    out = proc.stdout
    assert proc.returncode == 0 and proc.stderr == "", out + proc.stderr
    assert "running offline" in out and "the fake accepted 2 message(s)" in out  # each exactly once
    retries = events(out, "retry_scheduled")
    assert "code=-1" in retries[0] and "access_token=***" in retries[0]
    assert "code=Forbidden.AccessDenied.QpsLimitForAppkeyAndApi" in retries[1] and "delay=1.0" in retries[1]
    [renewed] = events(out, "token_renewed")
    assert "code=88" in renewed and "subcode=40014" in renewed and "hook_called=True" in renewed
    assert re.search(r"work notification sent to manager1042: task_id \d+", out)
    assert re.search(r"robot message sent to manager1042: processQueryKey \S+", out)
    assert "offline-dingtalk-appsecret" not in out


def test_wecom_real_api_mode() -> None:
    fake = FakeWeCom("wwreal", "real-corp-secret-0123", 1000005)
    with fake.serve() as base_url:
        env = offline_env(
            WECOM_CORPID="wwreal",
            WECOM_CORPSECRET="real-corp-secret-0123",
            WECOM_AGENTID="1000005",
            WECOM_TOUSER="u1",
            WECOM_API_BASE=base_url,
            **LOOPBACK,
        )
        proc = run("wecom_send.py", env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "using the real WeCom API" in proc.stdout and proc.stdout.count("message sent to u1: msgid") == 2
    assert fake.token_requests == 1 and len(fake.sent) == 2 and "real-corp-secret" not in proc.stdout


def test_feishu_real_api_mode() -> None:
    fake = FakeFeishu("cli_real", "real-app-secret-0123")
    with fake.serve() as base_url:
        env = offline_env(
            FEISHU_APP_ID="cli_real",
            FEISHU_APP_SECRET="real-app-secret-0123",
            FEISHU_RECEIVE_ID="ou_real",
            FEISHU_LARK="1",
            FEISHU_API_BASE=base_url,
            **LOOPBACK,
        )
        proc = run("feishu_send.py", env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "using the real Lark API" in proc.stdout and proc.stdout.count("message sent to ou_real") == 2
    assert fake.token_requests == 1 and len(fake.sent) == 2 and "real-app-secret" not in proc.stdout


def test_dingtalk_real_api_mode() -> None:
    fake = FakeDingTalk("dingreal", "real-app-secret-0123", agent_id=77, robot_code="dingrobot")
    with fake.serve() as oapi, fake.serve() as api:  # two ports: the policy map tells the APIs apart
        env = offline_env(
            DINGTALK_APPKEY="dingreal",
            DINGTALK_APPSECRET="real-app-secret-0123",
            DINGTALK_AGENT_ID="77",
            DINGTALK_USERID="u1",
            DINGTALK_ROBOT_CODE="dingrobot",
            DINGTALK_OAPI_BASE=oapi,
            DINGTALK_API_BASE=api,
            **LOOPBACK,
        )
        proc = run("dingtalk_send.py", env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "work notification sent to u1: task_id" in proc.stdout and "robot message sent to u1" in proc.stdout
    assert len(fake.sent) == 2 and "real-app-secret" not in proc.stdout
