"""Send a Tencent Cloud Chat (IM) text message through the REST API with a locally generated UserSig.

What it does
    Sends one text message from the app admin account to a user with
    ``POST https://console.tim.qq.com/v4/openim/sendmsg?sdkappid=..&identifier=administrator&random=..&contenttype=json``
    and prints the ``MsgKey`` (the message's id, usable to recall it) and ``MsgTime`` Tencent returns.
    The UserSig is not in the URL the script builds: ``TencentUserSig(sdkappid, key)`` is the token hook
    of ``RetryTransport(policy="tencent_im", ...)``, which signs one for the admin identifier (TLSSigAPIv2,
    no HTTP) and adds it as the ``usersig`` query parameter. On 70001 (UserSig expired) the transport
    signs a new one and resends; on -10114 (server overloaded) and other transient codes it backs off and
    retries; the same ``MsgRandom`` lets Tencent drop a duplicate. Events are printed with structlog;
    URLs in them show ``usersig=***``.

Run offline (no credentials, no network)::

    python examples/tencent_im_send.py

    With none of the variables below set, the script sends to retrypolicy.testing.FakeTencentIM, which
    checks every UserSig for real with ``TencentUserSig.verify`` (the HMAC under the SecretKey, the
    SDKAppID, the identifier, the expiry). The fake is scripted to answer -10114 once, then to expire the
    UserSig (70001): the output shows a retry, a renewal and the MsgKey.

Talk to the real API::

    TENCENT_IM_SDKAPPID=1400...   the application's SDKAppID
    TENCENT_IM_KEY=...            its secret key (console: Application configuration > Basic info)
    TENCENT_IM_TO=user1           the recipient's UserID (the account must exist)
    TENCENT_IM_ADMIN=...          optional: the app admin account (default "administrator")

    Requests go to console.tim.qq.com; for an app in another region, change API below (e.g.
    adminapisgp.im.qcloud.com for Singapore).

Exit status: 0 when the message was sent, 1 when it was not, 2 when only some variables are set.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Any

import httpx
from _console import configure_logging  # examples/_console.py: event printing shared by the examples

import retrypolicy
from retrypolicy.hooks import TencentUserSig, UserSigError
from retrypolicy.testing import Busy, FakeTencentIM, TokenExpired

API = "https://console.tim.qq.com"
SEND_URL = f"{API}/v4/openim/sendmsg"

REQUIRED = ("TENCENT_IM_SDKAPPID", "TENCENT_IM_KEY", "TENCENT_IM_TO")

TEXT = "Your order #1042 has shipped."

# Offline only: the application the fake plays.
OFFLINE_SDKAPPID = 1400000000
OFFLINE_KEY = "offline-tencent-im-secret-key-0123456789abcdef"
OFFLINE_TO = "user1042"


class SteppingClock:
    """Offline only: wall-clock seconds, each reading at least one second after the previous one.

    A UserSig is a function of the key, the identifier and the current *second*, so two signed in the
    same second are identical. For real, 70001 arrives months after a UserSig was signed (180 days by
    default), so the renewed one differs. The fake expires the UserSig it has just seen, milliseconds
    after signing, and the transport refuses a "renewal" that returns the rejected UserSig again
    (TokenRefreshFailed). Stepping the signer's clock keeps the offline renewal realistic.
    """

    def __init__(self) -> None:
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self._last = max(time.time(), self._last + 1.0)
            return self._last


def send_text(client: httpx.Client, sdkappid: int, admin: str, to: str, text: str) -> dict[str, Any]:
    """One C2C text message from ``admin`` to ``to``; returns Tencent's answer (MsgKey, MsgTime)."""
    msg_random = secrets.randbits(32)  # the same value on every retry: Tencent de-duplicates on it
    params: dict[str, str | int] = {
        "sdkappid": sdkappid,
        "identifier": admin,
        "random": secrets.randbits(32),
        "contenttype": "json",
    }
    body = {
        "SyncOtherMachine": 2,  # do not show the message on the admin account's other devices
        "To_Account": to,
        "MsgRandom": msg_random,
        "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}],
    }
    answer: dict[str, Any] = client.post(SEND_URL, params=params, json=body).json()
    return answer  # ActionStatus "OK": anything else was raised by the transport


def main() -> int:
    configure_logging()
    present = [name for name in REQUIRED if os.environ.get(name)]
    if present and len(present) != len(REQUIRED):
        missing = ", ".join(name for name in REQUIRED if name not in present)
        print(f"set all of {', '.join(REQUIRED)} to use the real API (missing: {missing}), or none to run offline")
        return 2

    inner: httpx.BaseTransport | None  # None: httpx's own network transport
    fake: FakeTencentIM | None = None
    if present:
        print("using the real Tencent Cloud Chat REST API")
        try:
            sdkappid = int(os.environ["TENCENT_IM_SDKAPPID"])
        except ValueError:
            print("TENCENT_IM_SDKAPPID must be a number")
            return 2
        admin = os.environ.get("TENCENT_IM_ADMIN") or "administrator"
        hook = TencentUserSig(sdkappid, os.environ["TENCENT_IM_KEY"], admin)
        to = os.environ["TENCENT_IM_TO"]
        inner = None
    else:
        print("no TENCENT_IM_* variables: running offline against retrypolicy.testing.FakeTencentIM")
        # Offline only: keeps every decision and log event but skips the backoff sleeps. Never set
        # it when talking to the real API: there the waits are what gives the server time to recover.
        retrypolicy.set_testing(True)
        sdkappid, admin, to = OFFLINE_SDKAPPID, "administrator", OFFLINE_TO
        hook = TencentUserSig(sdkappid, OFFLINE_KEY, admin, clock=SteppingClock())
        server_side = TencentUserSig(sdkappid, OFFLINE_KEY)  # what Tencent knows: the same key

        def validate(identifier: str, usersig: str) -> bool:
            try:
                server_side.verify(usersig, identifier=identifier)
            except UserSigError:
                return False
            return True

        fake = FakeTencentIM(sdkappid, admin, usersig_validator=validate)
        fake.script(Busy(), TokenExpired())  # -10114 server overloaded (retried), then 70001 (renewed)
        inner = httpx.MockTransport(fake)

    transport = retrypolicy.RetryTransport(policy="tencent_im", token=hook, transport=inner)
    with httpx.Client(transport=transport, timeout=10.0) as client:
        try:
            answer = send_text(client, sdkappid, admin, to, TEXT)
        except retrypolicy.RequestFailed as exc:  # fatal codes, user action, exhausted retries...
            print(f"failed: {exc}")
            return 1
    print(f"message sent to {to}: MsgKey {answer['MsgKey']} (MsgTime {answer['MsgTime']})")
    if fake is not None:
        print(f"offline check: the fake accepted {len(fake.sent)} message(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
