"""Retry pywa's WhatsAppError at the call site with tenacity, classified by retrypolicy's tables.

What it does
    Some code handles a platform's errors where an SDK raises them: pywa raises
    ``pywa.errors.WhatsAppError`` with ``.code`` / ``.subcode``. ``retrypolicy.tenacity`` gives
    tenacity pieces driven by the ``whatsapp_cloud`` table: ``retry_if_category`` (retry the
    table's retryable codes only: 131000, 130429, 131056, ...), ``wait_policy`` (the table's
    backoff, a rule's ``min_delay``, ``Retry-After``), ``stop_policy`` (its ``max_attempts`` and
    deadline) and ``before_sleep_log_event`` (a ``retrypolicy.retry_scheduled`` event per wait).

    The token renewal stays the transport's job: pywa's session carries
    ``RetryTransport(policy="whatsapp_cloud", token=hook, retry=RetrySettings(max_attempts=1),
    raise_on=[])``. It renews a token Meta refuses (190) once, single-flight, and resends; it
    resends nothing else (``max_attempts=1``), and hands every other failure back to pywa
    (``raise_on=[]``), which raises its own WhatsAppError for tenacity to judge.

Run offline (no credentials, no network)::

    python examples/whatsapp_cloud_pywa_tenacity.py

    With none of the variables below set, requests go to retrypolicy.testing.FakeWhatsAppCloud
    (it ignores the host, so pywa's graph.facebook.com URLs reach it). The fake expires the token
    (190/463) on the first attempt and answers 131000 ("something went wrong") on the second:
    the output shows the transport's renewal, its ``gave_up`` for 131000 (with no resend of its
    own it hands the answer back to pywa), then tenacity's retry of pywa's WhatsAppError.

Talk to the real API::

    WA_CLOUD_TOKEN=EAAG...        a system-user access token with whatsapp_business_messaging
    WA_CLOUD_PHONE_ID=1065...     the Phone Number ID to send from
    WA_CLOUD_TO=15551234567       the recipient's phone number

Exit status: 0 when the message was sent, 1 when it was not, 2 when only some variables are set.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import tenacity
from _console import configure_logging  # examples/_console.py: event printing shared by the examples
from pywa.client import WhatsApp
from pywa.errors import WhatsAppError

import retrypolicy
from retrypolicy.tenacity import before_sleep_log_event, retry_if_category, stop_policy, wait_policy
from retrypolicy.testing import Busy, FakeWhatsAppCloud, TokenExpired

REQUIRED = ("WA_CLOUD_TOKEN", "WA_CLOUD_PHONE_ID", "WA_CLOUD_TO")
TEXT = "Your order #1042 has shipped."
OFFLINE_TO = "15550001042"

POLICY = "whatsapp_cloud"
retry_sends = tenacity.retry(
    retry=retry_if_category(POLICY),  # codes the table calls retryable; a token error is the transport's
    wait=wait_policy(POLICY),
    stop=stop_policy(POLICY),
    before_sleep=before_sleep_log_event(POLICY),
    reraise=True,  # the last WhatsAppError itself, not tenacity.RetryError
)


def token_from_env() -> str:
    return os.environ["WA_CLOUD_TOKEN"]


def main() -> int:
    configure_logging()
    present = [name for name in REQUIRED if os.environ.get(name)]
    if present and len(present) != len(REQUIRED):
        missing = ", ".join(name for name in REQUIRED if name not in present)
        print(f"set all of {', '.join(REQUIRED)} to use the real API (missing: {missing}), or none to run offline")
        return 2

    hook: Callable[[], str]
    inner: httpx.BaseTransport | None = None
    fake: FakeWhatsAppCloud | None = None
    if present:
        print("using the real WhatsApp Cloud API")
        hook, phone_id, to = token_from_env, os.environ["WA_CLOUD_PHONE_ID"], os.environ["WA_CLOUD_TO"]
    else:
        print("no WA_CLOUD_* variables: running offline against retrypolicy.testing.FakeWhatsAppCloud")
        # Offline only: the transport's decisions as in production, without its sleeps (tenacity's
        # own waits are short here: 131000 has no min_delay). Never set it against the real API.
        retrypolicy.set_testing(True)
        fake = FakeWhatsAppCloud()
        fake.script(TokenExpired(), Busy())  # 190/463 (the transport renews), then 131000 (tenacity retries)
        hook, phone_id, to = fake.issue_token, fake.phone_number_id, OFFLINE_TO
        inner = httpx.MockTransport(fake)

    transport = retrypolicy.RetryTransport(
        policy=POLICY,
        token=hook,
        transport=inner,
        retry=retrypolicy.RetrySettings(max_attempts=1),  # no resends here: tenacity decides them
        raise_on=[],  # every final failure goes back to pywa, which raises WhatsAppError
    )
    with httpx.Client(transport=transport, timeout=15.0) as session:
        wa = WhatsApp(phone_id=phone_id, token=hook(), session=session)

        @retry_sends
        def send() -> str:
            return wa.send_message(to=to, text=TEXT).id

        try:
            message_id = send()
        except WhatsAppError as exc:
            print(f"not sent: WhatsApp code {exc.code}: {exc.message}")
            return 1
        except retrypolicy.RequestFailed as exc:  # e.g. TokenRefreshFailed from the transport
            print(f"failed: {exc}")
            return 1
    print(f"message sent to {to}: id {message_id}")
    if fake is not None:
        print(f"offline check: the fake accepted {len(fake.sent)} message(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
