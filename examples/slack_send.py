"""Post and edit a Slack message with raw httpx, through retrypolicy's transport.

What it does
    Posts a message with ``POST https://slack.com/api/chat.postMessage`` and edits it with
    ``chat.update``, through ``httpx.Client(transport=RetryTransport(policy="slack", token=...))``. The
    transport puts ``Authorization: Bearer <token>`` on each request and reads Slack's answers: HTTP 200
    ``{"ok": false, "error": "..."}`` is a failure, ``{"ok": true, "warning": "..."}`` a success. It
    waits ``Retry-After`` on a 429 (``ratelimited``) and resends; it never resends a post after
    ``internal_error`` or ``fatal_error`` (Slack says part of it may have happened: it could appear
    twice), but does resend ``chat.update``, which is safe to repeat.

    slack_sdk cannot take an httpx transport (its WebClient uses urllib, AsyncWebClient aiohttp), so
    this is the httpx way: the Web API is plain HTTP, one POST per method.

    Tokens. With token rotation on (``SLACK_CLIENT_ID``, ``SLACK_CLIENT_SECRET``, ``SLACK_REFRESH_TOKEN``),
    ``retrypolicy.hooks.SlackRotatingToken`` renews the access token through ``oauth.v2.access`` on
    ``token_expired``/``invalid_auth`` and keeps each new single-use refresh token (pass ``store=`` and
    ``token_store=`` a RedisTokenStore to share it between processes). Without rotation
    (``SLACK_BOT_TOKEN``), the token never expires: the script loads ``examples/slack_static_token.toml``,
    which makes ``invalid_auth`` a user-action error with what to do, instead of a renewal that could
    only return the same token.

Run offline (no credentials, no network)::

    python examples/slack_send.py

    With none of the variables below set, the script talks to retrypolicy.testing.FakeSlack (token
    rotation on). The fake answers the post with ``service_unavailable`` (retried), then expires the
    access token (``token_expired``: renewed through the hook), and answers the edit with
    ``internal_error`` (resent: chat.update is safe to repeat).

Talk to the real API::

    SLACK_CHANNEL=C0123456789       the channel to post to (the app must be in it: not_in_channel)
    and either SLACK_BOT_TOKEN=xoxb-...       a bot token (no rotation)
    or SLACK_CLIENT_ID=..., SLACK_CLIENT_SECRET=..., SLACK_REFRESH_TOKEN=xoxe-1-...   (rotation on; the
       refresh token changes on every renewal: this script prints nothing of it, store it with
       on_refresh_token= or a RedisTokenStore in a real deployment)

Exit status: 0 when the message was posted, 1 when it was not, 2 when the variables do not fit.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
from _console import configure_logging  # examples/_console.py: event printing shared by the examples

import retrypolicy
from retrypolicy.hooks import SlackRotatingToken
from retrypolicy.testing import Busy, ErrorCode, FakeSlack, TokenExpired

API = "https://slack.com/api"
STATIC_POLICY = str(Path(__file__).resolve().parent / "slack_static_token.toml")
ROTATION = ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_REFRESH_TOKEN")
TEXT = "Order #1042 has shipped."
OFFLINE_CHANNEL = "C0FAKE1042"


def post_and_edit(client: httpx.Client, channel: str, before_edit: Callable[[], None] = lambda: None) -> str:
    """Post TEXT, then edit it; returns the message's ts. A failure was raised by the transport."""
    # charset declared: Slack otherwise succeeds with "warning": "missing_charset"
    headers = {"Content-Type": "application/json; charset=utf-8"}
    posted = client.post(f"{API}/chat.postMessage", json={"channel": channel, "text": TEXT}, headers=headers).json()
    ts: str = posted["ts"]
    print(f"message posted to {posted['channel']}: ts {ts}")
    before_edit()
    edit = {"channel": channel, "ts": ts, "text": TEXT + " (tracking: ZX1042)"}
    client.post(f"{API}/chat.update", json=edit, headers=headers)
    print(f"message {ts} edited")
    return ts


def main() -> int:
    configure_logging()
    rotation = [name for name in ROTATION if os.environ.get(name)]
    static, channel = os.environ.get("SLACK_BOT_TOKEN"), os.environ.get("SLACK_CHANNEL")
    anything = bool(rotation or static or channel)
    if anything and (not channel or (rotation and len(rotation) != len(ROTATION)) or bool(rotation) == bool(static)):
        needed = ["SLACK_CHANNEL", *(ROTATION if rotation else ("SLACK_BOT_TOKEN",))]
        missing = ", ".join(name for name in needed if not os.environ.get(name)) or "none"
        print(
            "set SLACK_CHANNEL and either SLACK_BOT_TOKEN or all of "
            f"{', '.join(ROTATION)} (missing: {missing}), or none to run offline"
        )
        return 2

    token: Callable[[], str | retrypolicy.Token]
    policy = "slack"
    inner: httpx.BaseTransport | None = None  # None: httpx's own network transport
    fake: FakeSlack | None = None
    if channel and rotation:
        print("using the real Slack Web API, token rotation on")
        token = SlackRotatingToken(*(os.environ[name] for name in ROTATION))
    elif channel and static:
        print("using the real Slack Web API, a bot token without rotation")
        token, policy = (lambda: static), STATIC_POLICY
    else:
        print("no SLACK_* variables: running offline against retrypolicy.testing.FakeSlack")
        # Offline only: keeps every decision and log event but skips the waits. Never set it when
        # talking to the real API: there the waits are what Slack asks for.
        retrypolicy.set_testing(True)
        fake = FakeSlack()
        fake.script(Busy(), TokenExpired())  # the post: service_unavailable (retried), token_expired (renewed)
        inner = httpx.MockTransport(fake)
        token = SlackRotatingToken(fake.client_id, "fake-slack-client-secret", fake.refresh_token, transport=inner)
        channel = OFFLINE_CHANNEL

    transport = retrypolicy.RetryTransport(policy=policy, token=token, transport=inner)
    with httpx.Client(transport=transport, timeout=10.0) as client:
        try:
            # offline, the edit gets internal_error (resent: chat.update is safe to repeat)
            post_and_edit(client, channel, (lambda: fake.script(ErrorCode("internal_error"))) if fake else lambda: None)
        except retrypolicy.UserActionRequired as exc:
            c = exc.classification
            print(f"not posted: Slack error {c.code} needs a person ({c.description})\n  what to do: {c.remediation}")
            return 1
        except retrypolicy.RequestFailed as exc:  # fatal codes, a post that must not be resent, ...
            print(f"failed: {exc}")
            return 1
    if fake is not None:
        print(f"offline check: the fake accepted {len(fake.sent)} message(s) and {len(fake.updates)} edit(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
