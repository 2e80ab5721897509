"""Send a WhatsApp Cloud API text message with pywa, through retrypolicy's transport.

What it does
    Builds ``pywa.WhatsApp(phone_id=..., token=..., session=httpx.Client(transport=RetryTransport(
    policy="whatsapp_cloud", token=hook, ...)))`` and sends one text with ``wa.send_message(to=..., text=...)``,
    then prints the ``wamid`` Meta returns. pywa builds the Graph API requests and sets its own
    ``Authorization: Bearer <token>`` header from ``token=`` (it refuses a session that already has an
    Authorization header). retrypolicy, underneath, retries transient Graph errors (131000, 130429, HTTP
    5xx...) and, when Meta rejects the token (code 190, e.g. subcode 463 "session has expired"), calls the
    hook once for a new token and resends. pywa keeps sending the token it was given; the transport
    replaces a token the platform already refused with the current one, so later requests do not fail
    again. A final failure raises a retrypolicy exception (UserActionRequired, RequestRejected,
    TokenRefreshFailed, ...), which propagates through pywa unchanged: pywa only wraps the responses it
    receives (as pywa.errors.WhatsAppError), and with the default ``raise_on`` every error response is
    turned into an exception before pywa sees it. Events are printed with structlog.

    There is no built-in token hook for the Cloud API: its credential is a long-lived system-user access
    token issued in Meta Business Manager, not something an endpoint hands out for a password, so only
    your own code knows where the current token lives. The hook here reads it from the environment on
    every call; in production read it from your secret store, where an operator puts the rotated token.
    If the hook returns the token Meta has just rejected, the request fails with TokenRefreshFailed
    instead of being resent (rotate the token in the store; the next request picks it up).

Run offline (no credentials, no network)::

    python examples/whatsapp_cloud_pywa.py

    With none of the variables below set, requests go to retrypolicy.testing.FakeWhatsAppCloud (which
    ignores the host, so pywa's graph.facebook.com URLs reach it). Its tokens are minted with
    ``fake.issue_token()``, standing in for Business Manager; the offline hook mints a new one as if an
    operator had rotated it. The fake is scripted to answer 131000 once and then to expire the token
    (190/463): the output shows a retry, a renewal and the message id.

Talk to the real API (needs ``pip install pywa``)::

    WA_CLOUD_TOKEN=EAAG...        a system-user access token with whatsapp_business_messaging
    WA_CLOUD_PHONE_ID=1065...     the Phone Number ID to send from (WhatsApp Manager > API Setup)
    WA_CLOUD_TO=15551234567       the recipient's phone number; outside a 24-hour customer service
                                  window Meta refuses free-form text (131047): use a template then

Exit status: 0 when the message was sent, 1 when it was not, 2 when only some variables are set.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
from _console import configure_logging  # examples/_console.py: event printing shared by the examples
from pywa.client import WhatsApp

import retrypolicy
from retrypolicy.testing import Busy, FakeWhatsAppCloud, TokenExpired

REQUIRED = ("WA_CLOUD_TOKEN", "WA_CLOUD_PHONE_ID", "WA_CLOUD_TO")

TEXT = "Your order #1042 has shipped."

OFFLINE_TO = "15550001042"  # offline only: a recipient


def token_from_env() -> str:
    """The token hook: the current system-user token, read again on every call (no caching here)."""
    return os.environ["WA_CLOUD_TOKEN"]


def main() -> int:
    configure_logging()
    present = [name for name in REQUIRED if os.environ.get(name)]
    if present and len(present) != len(REQUIRED):
        missing = ", ".join(name for name in REQUIRED if name not in present)
        print(f"set all of {', '.join(REQUIRED)} to use the real API (missing: {missing}), or none to run offline")
        return 2

    hook: Callable[[], str]
    inner: httpx.BaseTransport | None  # None: httpx's own network transport
    fake: FakeWhatsAppCloud | None = None
    if present:
        print("using the real WhatsApp Cloud API")
        hook, phone_id, to = token_from_env, os.environ["WA_CLOUD_PHONE_ID"], os.environ["WA_CLOUD_TO"]
        inner = None
    else:
        print("no WA_CLOUD_* variables: running offline against retrypolicy.testing.FakeWhatsAppCloud")
        # Offline only: keeps every decision and log event but skips the backoff sleeps. Never set
        # it when talking to the real API: there the waits are what gives Meta time to recover.
        retrypolicy.set_testing(True)
        fake = FakeWhatsAppCloud()
        fake.script(Busy(), TokenExpired())  # 131000 (retried), then 190/463 session expired (renewed)
        hook = fake.issue_token  # each call: a new token, as if an operator had rotated it in the store
        phone_id, to = fake.phone_number_id, OFFLINE_TO
        inner = httpx.MockTransport(fake)

    transport = retrypolicy.RetryTransport(policy="whatsapp_cloud", token=hook, transport=inner)
    # No headers and no auth on this client: pywa sets "Authorization: Bearer <token>" and the base URL.
    with httpx.Client(transport=transport, timeout=15.0) as session:
        wa = WhatsApp(phone_id=phone_id, token=hook(), session=session)
        try:
            sent = wa.send_message(to=to, text=TEXT)
        except retrypolicy.RequestFailed as exc:  # raised by the transport, passed through by pywa
            print(f"failed: {exc}")
            return 1
    print(f"message sent to {sent.input}: id {sent.id}")
    if fake is not None:
        print(f"offline check: the fake accepted {len(fake.sent)} message(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
