"""Send Feishu / Lark bot messages (im/v1) through retrypolicy.

What it does
    Sends two text messages to a user with ``POST /open-apis/im/v1/messages?receive_id_type=open_id``
    through ``httpx.Client(transport=RetryTransport(policy="feishu", token=FeishuTenantToken(...)))``.
    The transport adds ``Authorization: Bearer <tenant_access_token>``, waits the seconds Feishu's
    ``x-ogw-ratelimit-reset`` header asks for on 99991400 (rate limit, HTTP 429) before resending,
    renews the token once on 99991663 (which Feishu sends with HTTP 400 as well as 200), and raises
    :class:`retrypolicy.UserActionRequired` on codes a person must fix, such as 230013 (the user is
    outside the app's availability); the script prints ``classification.remediation`` and the
    request id (``X-Tt-Logid``). Each message carries a ``uuid``: Feishu sends at most one message
    per uuid within an hour, which makes the message safe to resend, so the script marks it
    idempotent and a send whose answer was lost is resent instead of raising ResendUnsafe.

Run offline (no credentials, no network)::

    python examples/feishu_send.py

    With none of the variables below set, the script talks to retrypolicy.testing.FakeFeishu. The
    fake answers the first message with 230013, and the second with a rate limit
    (``x-ogw-ratelimit-reset: 2``), then expires the token (99991663 with HTTP 400): the output
    shows the remediation, a retry after 2 s (not slept offline), a renewal and the message_id.

Talk to the real API::

    FEISHU_APP_ID=cli_...         the app's App ID (developer console: Credentials & Basic Info)
    FEISHU_APP_SECRET=...         its App Secret
    FEISHU_RECEIVE_ID=ou_...      the recipient's open_id under this app
    FEISHU_LARK=1                 optional: Lark (open.larksuite.com) instead of Feishu (open.feishu.cn)
    FEISHU_API_BASE=...           optional: another base URL

Exit status: 0 when a message went out, 1 when none did, 2 when only some variables are set.
"""

from __future__ import annotations

import json
import os
import uuid

import httpx
from _console import configure_logging  # examples/_console.py: event printing shared by the examples

import retrypolicy
from retrypolicy.hooks import FeishuTenantToken
from retrypolicy.testing import FakeFeishu, RateLimited, TokenExpired, UserAction

REQUIRED = ("FEISHU_APP_ID", "FEISHU_APP_SECRET", "FEISHU_RECEIVE_ID")
TEXTS = ("Your expense report #1042 was approved.", "Reminder: the quarterly review is on Friday.")

# Offline only: the app the fake plays.
OFFLINE_APP_ID = "cli_a1b2c3d4e5f60000"
OFFLINE_SECRET = "offline-feishu-app-secret"
OFFLINE_RECEIVE_ID = "ou_7d8a6e6df7621556ce0d21922b676706"


def send_text(client: httpx.Client, base: str, receive_id: str, text: str) -> str:
    """A text message to an open_id; returns the ``message_id`` Feishu assigned to it."""
    body = {
        "receive_id": receive_id,
        "msg_type": "text",
        "content": json.dumps({"text": text}, ensure_ascii=False),
        "uuid": str(uuid.uuid4()),  # Feishu sends one message per uuid within an hour
    }
    response = client.post(
        f"{base}/open-apis/im/v1/messages",
        params={"receive_id_type": "open_id"},
        json=body,
        extensions={"retrypolicy": {"idempotent": True}},  # safe to resend: the uuid de-duplicates
    )
    message_id: str = response.json()["data"]["message_id"]
    return message_id


def run(client: httpx.Client, base: str, receive_id: str) -> int:
    delivered = 0
    for text in TEXTS:
        try:
            message_id = send_text(client, base, receive_id, text)
        except retrypolicy.UserActionRequired as exc:
            c = exc.classification
            print(f"message not sent: Feishu code {c.code} needs a person ({c.description})")
            print(f"  what to do: {c.remediation}")
            print(f"  log id for Feishu support: {c.request_id}")
        else:
            print(f"message sent to {receive_id}: message_id {message_id}")
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
    fake: FakeFeishu | None = None
    if present:
        lark = os.environ.get("FEISHU_LARK") == "1"
        hook = FeishuTenantToken(
            os.environ["FEISHU_APP_ID"],
            os.environ["FEISHU_APP_SECRET"],
            lark=lark,
            base_url=os.environ.get("FEISHU_API_BASE") or None,
        )
        print(f"using the real {'Lark' if lark else 'Feishu'} API")
        base, receive_id = hook.base_url, os.environ["FEISHU_RECEIVE_ID"]
        inner = None
    else:
        print("no FEISHU_* variables: running offline against retrypolicy.testing.FakeFeishu")
        # Offline only: keeps every decision and log event but skips the backoff sleeps. Never set
        # it when talking to the real API: there the waits are what the rate limit asks for.
        retrypolicy.set_testing(True)
        fake = FakeFeishu(OFFLINE_APP_ID, OFFLINE_SECRET)
        # first message: the user is outside the app's availability (230013: a person must act);
        # second message: rate limited for 2 s (waited, then resent), then the token expires.
        fake.script(UserAction(), RateLimited(retry_after=2), TokenExpired())
        hook = FeishuTenantToken(OFFLINE_APP_ID, OFFLINE_SECRET, transport=httpx.MockTransport(fake))
        base, receive_id = FakeFeishu.BASE_URL, OFFLINE_RECEIVE_ID
        inner = httpx.MockTransport(fake)

    transport = retrypolicy.RetryTransport(policy="feishu", token=hook, transport=inner)
    with hook, httpx.Client(transport=transport, timeout=10.0) as client:
        try:
            status = run(client, base, receive_id)
        except retrypolicy.RequestFailed as exc:  # fatal codes, exhausted retries, a failed renewal...
            print(f"failed: {exc}")
            return 1
    if fake is not None:
        print(f"offline check: the fake accepted {len(fake.sent)} message(s), served {fake.token_requests} token(s)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
