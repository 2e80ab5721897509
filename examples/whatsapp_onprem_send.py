"""Send a text message through a WhatsApp Business API on-premises client, logging in for the token.

What it does
    Sends one text message with ``POST {base_url}/v1/messages`` and prints the message id the client
    returns (``messages[0].id``). The bearer token comes from ``WhatsAppOnPremLogin(base_url, username,
    password)``, the token hook of ``RetryTransport(policy="whatsapp_onprem", ...)``: it logs in with
    ``POST /v1/users/login`` (HTTP basic auth) on the first request and again whenever the client
    answers 1005 / HTTP 401 (token expired; tokens last 7 days). Transient errors such as 1016 "system
    overloaded" (HTTP 503) are retried after a backoff. Events are printed with structlog.

Run offline (no credentials, no network)::

    python examples/whatsapp_onprem_send.py

    With none of the variables below set, both the login and the send go to
    retrypolicy.testing.FakeWhatsAppOnPrem. The fake is scripted to answer 1016 once and then to expire
    the token (1005): the output shows a retry, a second login (token renewal) and the message id.

Talk to a real on-premises client::

    WA_ONPREM_URL=https://wa.example.internal:9090   the client's base URL
    WA_ONPREM_USER=admin                              a user of the client
    WA_ONPREM_PASSWORD=...                            its password
    WA_ONPREM_TO=15551234567                          the recipient's WhatsApp ID (phone number)

    A client behind a self-signed certificate needs ``verify=`` with its CA bundle on both HTTP
    clients: ``httpx.HTTPTransport(verify=ctx)`` as ``transport=`` of the RetryTransport and of the hook.

Exit status: 0 when the message was sent, 1 when it was not, 2 when only some variables are set.
"""

from __future__ import annotations

import os

import httpx
from _console import configure_logging  # examples/_console.py: event printing shared by the examples

import retrypolicy
from retrypolicy.hooks import WhatsAppOnPremLogin
from retrypolicy.testing import Busy, FakeWhatsAppOnPrem, TokenExpired

REQUIRED = ("WA_ONPREM_URL", "WA_ONPREM_USER", "WA_ONPREM_PASSWORD", "WA_ONPREM_TO")

TEXT = "Your order #1042 has shipped."

# Offline only: the user the fake accepts, and a recipient.
OFFLINE_USER = "admin"
OFFLINE_PASSWORD = "offline-Passw0rd!"
OFFLINE_TO = "15550001042"


def send_text(client: httpx.Client, base_url: str, to: str, text: str) -> str:
    """One text message; returns the id the client assigned (HTTP 201 ``{"messages": [{"id": ...}]}``)."""
    body = {"recipient_type": "individual", "to": to, "type": "text", "text": {"body": text}}
    answer = client.post(f"{base_url}/v1/messages", json=body).json()  # errors were raised by the transport
    message_id: str = answer["messages"][0]["id"]
    return message_id


def main() -> int:
    configure_logging()
    present = [name for name in REQUIRED if os.environ.get(name)]
    if present and len(present) != len(REQUIRED):
        missing = ", ".join(name for name in REQUIRED if name not in present)
        print(f"set all of {', '.join(REQUIRED)} to use a real client (missing: {missing}), or none to run offline")
        return 2

    inner: httpx.BaseTransport | None  # None: httpx's own network transport
    fake: FakeWhatsAppOnPrem | None = None
    if present:
        print("using the on-premises client at WA_ONPREM_URL")
        try:
            hook = WhatsAppOnPremLogin(
                os.environ["WA_ONPREM_URL"], os.environ["WA_ONPREM_USER"], os.environ["WA_ONPREM_PASSWORD"]
            )
        except retrypolicy.ConfigurationError as exc:  # e.g. WA_ONPREM_URL is not an http(s) URL
            print(f"bad configuration: {exc}")
            return 2
        to = os.environ["WA_ONPREM_TO"]
        inner = None
    else:
        print("no WA_ONPREM_* variables: running offline against retrypolicy.testing.FakeWhatsAppOnPrem")
        # Offline only: keeps every decision and log event but skips the backoff sleeps. Never set
        # it when talking to a real client: there the waits are what gives it time to recover.
        retrypolicy.set_testing(True)
        fake = FakeWhatsAppOnPrem(OFFLINE_USER, OFFLINE_PASSWORD)
        fake.script(Busy(), TokenExpired())  # 1016 system overloaded (retried), then 1005 (log in again)
        # the login goes to the fake too: the hook's own HTTP client gets the fake as its transport
        hook = WhatsAppOnPremLogin(
            FakeWhatsAppOnPrem.BASE_URL, OFFLINE_USER, OFFLINE_PASSWORD, transport=httpx.MockTransport(fake)
        )
        to = OFFLINE_TO
        inner = httpx.MockTransport(fake)

    transport = retrypolicy.RetryTransport(policy="whatsapp_onprem", token=hook, transport=inner)
    with hook, httpx.Client(transport=transport, timeout=10.0) as client:
        try:
            message_id = send_text(client, hook.base_url, to, TEXT)
        except retrypolicy.RequestFailed as exc:  # fatal codes, user action, a failed login...
            print(f"failed: {exc}")
            return 1
    print(f"message sent to {to}: id {message_id}")
    if fake is not None:
        print(f"offline check: the fake accepted {len(fake.sent)} message(s), served {fake.token_requests} login(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
