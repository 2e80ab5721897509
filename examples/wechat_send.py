"""Send a WeChat Official Account customer-service message and a template message through retrypolicy.

What it does
    1. Sends a customer-service text message (``POST /cgi-bin/message/custom/send``). WeChat only
       delivers these within 48 hours of the user's last interaction; outside that window it
       answers 45015, which retrypolicy raises as :class:`retrypolicy.UserActionRequired`. The
       script catches it and prints ``classification.remediation``: what a person has to do.
    2. Sends a template message (``POST /cgi-bin/message/template/send``), the way to reach a user
       outside the window, and prints the ``msgid`` WeChat returns.
    Both go through ``httpx.Client(transport=RetryTransport(policy="wechat", token=WeChatTokenHook(...)))``:
    the transport puts the access_token in the query string, retries transient errors (-1 "system
    busy", 45011 rate limit, ...) and renews the token once on 40001/42001. Every decision is logged
    with structlog and printed.

Run offline (no credentials, no network)::

    python examples/wechat_send.py

    With none of the variables below set, the script talks to retrypolicy.testing.FakeWeChat, an
    in-process fake that serves both the API and the stable_token endpoint. The fake is scripted to
    answer "system busy" (-1) and then 45015 to the customer-service message, and to expire the
    access_token (42001) when the template message arrives: the output shows a retry, the
    remediation of 45015, a token renewal and the template message id.

Talk to the real API::

    WECHAT_APPID=wx...            the Official Account's AppID
    WECHAT_APPSECRET=...          its AppSecret (the server's IP must be on the account's whitelist)
    WECHAT_OPENID=o...            the recipient's OpenID under this account
    WECHAT_TEMPLATE_ID=...        optional: a template of the account; without it only step 1 runs.
                                  Edit TEMPLATE_DATA below to match the template's fields.

    The token comes from ``POST /cgi-bin/stable_token`` (never with force_refresh), so this script
    does not invalidate the token other processes of the same AppID are using.

Exit status: 0 when a message went out, 1 when none did, 2 when only some variables are set.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from _console import configure_logging  # examples/_console.py: event printing shared by the examples

import retrypolicy
from retrypolicy.hooks import WeChatTokenHook
from retrypolicy.testing import Busy, FakeWeChat, TokenExpired, UserAction

API = "https://api.weixin.qq.com"
SEND_URL = f"{API}/cgi-bin/message/custom/send"
TEMPLATE_URL = f"{API}/cgi-bin/message/template/send"

REQUIRED = ("WECHAT_APPID", "WECHAT_APPSECRET", "WECHAT_OPENID")

TEXT = "Your order #1042 has shipped. Reply here if you have any question."
# The keys must be the fields of your template (e.g. "thing1", "time2" for newer templates).
TEMPLATE_DATA: dict[str, dict[str, str]] = {
    "first": {"value": "Your order has shipped"},
    "keyword1": {"value": "#1042"},
    "keyword2": {"value": "2 parcels"},
    "remark": {"value": "Thank you for your order."},
}

# Offline only: the credentials the fake accepts.
OFFLINE_APPID = "wx0000000000000fake"
OFFLINE_SECRET = "offline-appsecret"
OFFLINE_OPENID = "oFakeOpenId0123456789abcdef"
OFFLINE_TEMPLATE_ID = "fake-template-order-shipped"


def send_text(client: httpx.Client, openid: str, text: str) -> None:
    """A customer-service text message. WeChat answers ``{"errcode": 0, "errmsg": "ok"}``, no id."""
    body = {"touser": openid, "msgtype": "text", "text": {"content": text}}
    client.post(SEND_URL, json=body)  # any errcode other than 0 was raised by the transport


def send_template(client: httpx.Client, openid: str, template_id: str) -> int:
    """A template message; returns the ``msgid`` WeChat assigned to it."""
    body: dict[str, Any] = {"touser": openid, "template_id": template_id, "data": TEMPLATE_DATA}
    answer = client.post(TEMPLATE_URL, json=body).json()  # WeChat may label JSON as text/plain
    msgid: int = answer["msgid"]
    return msgid


def print_user_action(what: str, exc: retrypolicy.UserActionRequired) -> None:
    c = exc.classification
    print(f"{what} not sent: WeChat code {c.code} needs a person ({c.description})")
    print(f"  what to do: {c.remediation}")


def run(client: httpx.Client, openid: str, template_id: str | None) -> int:
    delivered = False
    try:
        send_text(client, openid, TEXT)
    except retrypolicy.UserActionRequired as exc:
        print_user_action("customer-service message", exc)
    else:
        print(f"customer-service message sent to {openid} (WeChat returns no message id for these)")
        delivered = True
    if template_id is None:
        print("no WECHAT_TEMPLATE_ID: template message skipped")
    else:
        try:
            msgid = send_template(client, openid, template_id)
        except retrypolicy.UserActionRequired as exc:
            print_user_action("template message", exc)
        else:
            print(f"template message sent to {openid}: msgid {msgid}")
            delivered = True
    return 0 if delivered else 1


def main() -> int:
    configure_logging()
    present = [name for name in REQUIRED if os.environ.get(name)]
    if present and len(present) != len(REQUIRED):
        missing = ", ".join(name for name in REQUIRED if name not in present)
        print(f"set all of {', '.join(REQUIRED)} to use the real API (missing: {missing}), or none to run offline")
        return 2

    inner: httpx.BaseTransport | None  # None: httpx's own network transport
    fake: FakeWeChat | None = None
    if present:
        print("using the real WeChat API")
        hook = WeChatTokenHook(os.environ["WECHAT_APPID"], os.environ["WECHAT_APPSECRET"])
        openid, template_id = os.environ["WECHAT_OPENID"], os.environ.get("WECHAT_TEMPLATE_ID") or None
        inner = None
    else:
        print("no WECHAT_* variables: running offline against retrypolicy.testing.FakeWeChat")
        # Offline only: keeps every decision and log event but skips the backoff sleeps. Never set
        # it when talking to the real API: there the waits are what gives WeChat time to recover.
        retrypolicy.set_testing(True)
        fake = FakeWeChat(appid=OFFLINE_APPID, secret=OFFLINE_SECRET)
        # customer-service message: "system busy" (retried), then 45015 (outside the 48 h window);
        # template message: the access_token has expired (renewed through the hook, then resent).
        fake.script(Busy(), UserAction(), TokenExpired())
        hook = WeChatTokenHook(OFFLINE_APPID, OFFLINE_SECRET, transport=httpx.MockTransport(fake))
        openid, template_id = OFFLINE_OPENID, OFFLINE_TEMPLATE_ID
        inner = httpx.MockTransport(fake)

    transport = retrypolicy.RetryTransport(policy="wechat", token=hook, transport=inner)
    with hook, httpx.Client(transport=transport, timeout=10.0) as client:
        try:
            status = run(client, openid, template_id)
        except retrypolicy.RequestFailed as exc:  # fatal codes, exhausted retries, a failed renewal...
            print(f"failed: {exc}")
            return 1
    if fake is not None:
        print(f"offline check: the fake accepted {len(fake.sent)} message(s), served {fake.token_requests} token(s)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
