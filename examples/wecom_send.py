"""Send WeCom (企业微信) application messages through retrypolicy.

What it does
    Sends two text messages from an app to members (``POST /cgi-bin/message/send``) through
    ``httpx.Client(transport=RetryTransport(policy="wecom", token=WeComTokenHook(...)))``. The
    transport puts the access_token in the query string, retries -1 (system busy) with backoff,
    renews the token once on 42001/40014 (expired, invalid) and raises
    :class:`retrypolicy.UserActionRequired` on codes a person must fix, such as 60020 (the
    server's IP is not a trusted IP of the app); the script prints ``classification.remediation``
    and the request id (the ``hint: [...]`` WeCom puts in errmsg, which its support asks for).
    WeCom answers 45009 (rate limit) with a 60 s wait, and the app's other requests fail fast
    locally (CooldownActive) for those 60 s instead of adding to the block.

Run offline (no credentials, no network)::

    python examples/wecom_send.py

    With none of the variables below set, the script talks to retrypolicy.testing.FakeWeCom, which
    serves both the gettoken endpoint and the message API. The fake answers the first message with
    60020, and the second with "system busy" (-1), then expires the token (42001): the output shows
    the remediation of 60020, a retry, a token renewal and the msgid.

Talk to the real API::

    WECOM_CORPID=ww...            the corp's CorpID (admin console: My Company)
    WECOM_CORPSECRET=...          the app's Secret (admin console: App Management > the app)
    WECOM_AGENTID=1000002         the app's AgentId
    WECOM_TOUSER=UserID1|UserID2  the recipients' UserIDs
    WECOM_API_BASE=...            optional: another base URL than https://qyapi.weixin.qq.com

    WeCom issues one token per app secret; the hook is keyed by corpid and agentid in a token
    store, so several apps of one corp never share (and knock out) each other's tokens.

Exit status: 0 when a message went out, 1 when none did, 2 when only some variables are set.
"""

from __future__ import annotations

import os

import httpx
from _console import configure_logging  # examples/_console.py: event printing shared by the examples

import retrypolicy
from retrypolicy.hooks import WeComTokenHook
from retrypolicy.testing import Busy, FakeWeCom, TokenExpired, UserAction

API = "https://qyapi.weixin.qq.com"
REQUIRED = ("WECOM_CORPID", "WECOM_CORPSECRET", "WECOM_AGENTID", "WECOM_TOUSER")

TEXTS = ("Your leave request #1042 was approved.", "Reminder: the quarterly review is on Friday.")

# Offline only: the app the fake plays.
OFFLINE_CORPID = "ww0000000000fake"
OFFLINE_SECRET = "offline-wecom-corpsecret"
OFFLINE_AGENTID = 1000002
OFFLINE_TOUSER = "zhangsan|lisi"


def send_text(client: httpx.Client, base: str, agentid: int, touser: str, text: str) -> str:
    """An application text message; returns the ``msgid`` WeCom assigned to it."""
    body = {"touser": touser, "msgtype": "text", "agentid": agentid, "text": {"content": text}}
    answer = client.post(f"{base}/cgi-bin/message/send", json=body).json()  # a non-zero errcode was raised
    if answer.get("invaliduser"):
        print(f"  not delivered to: {answer['invaliduser']} (unknown or outside the app's visible range)")
    msgid: str = answer["msgid"]
    return msgid


def run(client: httpx.Client, base: str, agentid: int, touser: str) -> int:
    delivered = 0
    for text in TEXTS:
        try:
            msgid = send_text(client, base, agentid, touser, text)
        except retrypolicy.UserActionRequired as exc:
            c = exc.classification
            print(f"message not sent: WeCom code {c.code} needs a person ({c.description})")
            print(f"  what to do: {c.remediation}")
            print(f"  request id for WeCom support: {c.request_id}")
        else:
            print(f"message sent to {touser}: msgid {msgid}")
            delivered += 1
    return 0 if delivered else 1


def main() -> int:
    configure_logging()
    present = [name for name in REQUIRED if os.environ.get(name)]
    if present and len(present) != len(REQUIRED):
        missing = ", ".join(name for name in REQUIRED if name not in present)
        print(f"set all of {', '.join(REQUIRED)} to use the real API (missing: {missing}), or none to run offline")
        return 2

    inner: httpx.BaseTransport | None  # None: httpx's own network transport
    fake: FakeWeCom | None = None
    if present:
        print("using the real WeCom API")
        base = os.environ.get("WECOM_API_BASE") or API
        try:
            agentid = int(os.environ["WECOM_AGENTID"])
        except ValueError:
            print("WECOM_AGENTID must be the app's AgentId, a number")
            return 2
        hook = WeComTokenHook(
            os.environ["WECOM_CORPID"], os.environ["WECOM_CORPSECRET"], agentid=agentid, base_url=base
        )
        touser = os.environ["WECOM_TOUSER"]
        inner = None
    else:
        print("no WECOM_* variables: running offline against retrypolicy.testing.FakeWeCom")
        # Offline only: keeps every decision and log event but skips the backoff sleeps. Never set
        # it when talking to the real API: there the waits are what gives WeCom time to recover.
        retrypolicy.set_testing(True)
        fake = FakeWeCom(OFFLINE_CORPID, OFFLINE_SECRET, OFFLINE_AGENTID)
        # first message: the server's IP is not a trusted IP of the app (60020: a person must act);
        # second message: "system busy" (retried), then the token expires (renewed, then resent).
        fake.script(UserAction(), Busy(), TokenExpired())
        hook = WeComTokenHook(
            OFFLINE_CORPID, OFFLINE_SECRET, agentid=OFFLINE_AGENTID, transport=httpx.MockTransport(fake)
        )
        base, agentid, touser = API, OFFLINE_AGENTID, OFFLINE_TOUSER
        inner = httpx.MockTransport(fake)

    transport = retrypolicy.RetryTransport(policy="wecom", token=hook, transport=inner)
    with hook, httpx.Client(transport=transport, timeout=10.0) as client:
        try:
            status = run(client, base, agentid, touser)
        except retrypolicy.RequestFailed as exc:  # fatal codes, exhausted retries, a failed renewal...
            print(f"failed: {exc}")
            return 1
    if fake is not None:
        print(f"offline check: the fake accepted {len(fake.sent)} message(s), served {fake.token_requests} token(s)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
