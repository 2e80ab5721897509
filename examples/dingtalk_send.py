"""Send DingTalk messages through both of its APIs with one app token and retrypolicy.

What it does
    1. Sends a work notification through the old API,
       ``POST https://oapi.dingtalk.com/topapi/message/corpconversation/asyncsend_v2``: errors come
       with HTTP 200 and ``errcode`` (token and permission problems as errcode 88 with a
       ``sub_code``), the token goes in the ``access_token`` query parameter. Policy ``"dingtalk"``.
    2. Sends a robot message to a user through the new API,
       ``POST https://api.dingtalk.com/v1.0/robot/oToMessages/batchSend``: errors come with HTTP
       4xx/5xx and string codes (``InvalidAuthentication``,
       ``Forbidden.AccessDenied.QpsLimitForAppkeyAndApi``), the token goes in the
       ``x-acs-dingtalk-access-token`` header. Policy ``"dingtalk_v1"``.
    One client does both: ``policy={"oapi.dingtalk.com": "dingtalk", "api.dingtalk.com":
    "dingtalk_v1"}`` picks the table by host, and one ``DingTalkTokenHook(appkey, appsecret)``
    serves both (a DingTalk app token works on both APIs; each table keeps its own copy, so the
    first request to the new API calls the hook once more, and DingTalk hands back the same
    token). The transport retries -1 (system busy)
    and the per-second rate limits (at least a second apart, with the app's other requests held
    locally for that second), renews the token once on 88/40014 or InvalidAuthentication, and
    raises :class:`retrypolicy.UserActionRequired` on codes a person must fix.

Run offline (no credentials, no network)::

    python examples/dingtalk_send.py

    With none of the variables below set, the script talks to retrypolicy.testing.FakeDingTalk,
    which serves both APIs. The fake answers the work notification with "system busy" (-1), then
    expires the token (88/40014), and the robot message with a per-second rate limit (HTTP 403):
    the output shows two retries, a renewal, the task_id and the processQueryKey.

Talk to the real API::

    DINGTALK_APPKEY=ding...       the app's AppKey (Client ID)
    DINGTALK_APPSECRET=...        its AppSecret (Client Secret)
    DINGTALK_AGENT_ID=...         the app's AgentId (for the work notification)
    DINGTALK_USERID=...           the recipient's userid
    DINGTALK_ROBOT_CODE=...       optional: the app's robot code; without it only step 1 runs
    DINGTALK_OAPI_BASE=...        optional: another base URL for the old API
    DINGTALK_API_BASE=...         optional: another base URL for the new API (and the token endpoint)

Exit status: 0 when a message went out, 1 when none did, 2 when only some variables are set.
"""

from __future__ import annotations

import json
import os

import httpx
from _console import configure_logging  # examples/_console.py: event printing shared by the examples

import retrypolicy
from retrypolicy.hooks import DingTalkTokenHook
from retrypolicy.testing import Busy, FakeDingTalk, RateLimited, Slow, TokenExpired

OAPI = "https://oapi.dingtalk.com"
API = "https://api.dingtalk.com"
REQUIRED = ("DINGTALK_APPKEY", "DINGTALK_APPSECRET", "DINGTALK_AGENT_ID", "DINGTALK_USERID")
TEXT = "Your leave request #1042 was approved."

# Offline only: the app the fake plays.
OFFLINE_APPKEY = "dingofflinefake00000"
OFFLINE_SECRET = "offline-dingtalk-appsecret"
OFFLINE_AGENT_ID = 3000000001
OFFLINE_USERID = "manager1042"


def send_notification(client: httpx.Client, oapi: str, agent_id: int, userid: str) -> int:
    """A work notification through the old API; returns its ``task_id``."""
    body = {"agent_id": agent_id, "userid_list": userid, "msg": {"msgtype": "text", "text": {"content": TEXT}}}
    answer = client.post(f"{oapi}/topapi/message/corpconversation/asyncsend_v2", json=body).json()
    task_id: int = answer["task_id"]
    return task_id


def send_robot_message(client: httpx.Client, api: str, robot_code: str, userid: str) -> str:
    """A robot message to one user through the new API; returns its ``processQueryKey``."""
    body = {
        "robotCode": robot_code,
        "userIds": [userid],
        "msgKey": "sampleText",
        "msgParam": json.dumps({"content": TEXT}, ensure_ascii=False),
    }
    key: str = client.post(f"{api}/v1.0/robot/oToMessages/batchSend", json=body).json()["processQueryKey"]
    return key


def run(client: httpx.Client, oapi: str, api: str, agent_id: int, userid: str, robot_code: str | None) -> int:
    delivered = 0
    try:
        task_id = send_notification(client, oapi, agent_id, userid)
    except retrypolicy.UserActionRequired as exc:
        c = exc.classification
        print(f"work notification not sent: DingTalk code {c.code} needs a person ({c.description})")
        print(f"  what to do: {c.remediation}")
    else:
        print(f"work notification sent to {userid}: task_id {task_id}")
        delivered += 1
    if robot_code is None:
        print("no DINGTALK_ROBOT_CODE: robot message skipped")
    else:
        try:
            key = send_robot_message(client, api, robot_code, userid)
        except retrypolicy.UserActionRequired as exc:
            c = exc.classification
            print(f"robot message not sent: DingTalk code {c.code} needs a person ({c.description})")
            print(f"  what to do: {c.remediation}")
        else:
            print(f"robot message sent to {userid}: processQueryKey {key}")
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
    fake: FakeDingTalk | None = None
    if present:
        print("using the real DingTalk API")
        oapi = os.environ.get("DINGTALK_OAPI_BASE") or OAPI
        api = os.environ.get("DINGTALK_API_BASE") or API
        try:
            agent_id = int(os.environ["DINGTALK_AGENT_ID"])
        except ValueError:
            print("DINGTALK_AGENT_ID must be the app's AgentId, a number")
            return 2
        hook = DingTalkTokenHook(os.environ["DINGTALK_APPKEY"], os.environ["DINGTALK_APPSECRET"], base_url=api)
        userid, robot_code = os.environ["DINGTALK_USERID"], os.environ.get("DINGTALK_ROBOT_CODE") or None
        inner = None
    else:
        print("no DINGTALK_* variables: running offline against retrypolicy.testing.FakeDingTalk")
        # Offline only: keeps every decision and log event but skips the backoff sleeps. Never set
        # it when talking to the real API: there the waits are what gives DingTalk time to recover.
        retrypolicy.set_testing(True)
        fake = FakeDingTalk(OFFLINE_APPKEY, OFFLINE_SECRET, agent_id=OFFLINE_AGENT_ID, robot_code=OFFLINE_APPKEY)
        # Faults apply to the next API requests in order. Work notification: "system busy"
        # (retried), then the token expires (renewed), then the resend goes through (Slow(0): an
        # answer after 0 s); robot message: the app's per-second limit (retried a second later).
        fake.script(Busy(), TokenExpired(), Slow(0), RateLimited())
        hook = DingTalkTokenHook(OFFLINE_APPKEY, OFFLINE_SECRET, transport=httpx.MockTransport(fake))
        oapi, api, agent_id, userid, robot_code = OAPI, API, OFFLINE_AGENT_ID, OFFLINE_USERID, OFFLINE_APPKEY
        inner = httpx.MockTransport(fake)

    policy = {httpx.URL(oapi).netloc.decode(): "dingtalk", httpx.URL(api).netloc.decode(): "dingtalk_v1"}
    transport = retrypolicy.RetryTransport(
        policy=policy, token={"dingtalk": hook, "dingtalk_v1": hook}, transport=inner
    )
    with hook, httpx.Client(transport=transport, timeout=10.0) as client:
        try:
            status = run(client, oapi, api, agent_id, userid, robot_code)
        except retrypolicy.RequestFailed as exc:  # fatal codes, exhausted retries, a failed renewal...
            print(f"failed: {exc}")
            return 1
    if fake is not None:
        print(
            f"offline check: the fake accepted {len(fake.sent)} message(s), "
            f"answered {fake.token_requests} token request(s)"
        )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
