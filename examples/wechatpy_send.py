"""Send a WeChat customer-service message with wechatpy, through retrypolicy's requests adapter.

What it does
    Builds wechatpy's ``WeChatClient`` (which is built on requests) and mounts
    ``retrypolicy.requests.RetryAdapter(policy="wechat", token=WeChatTokenHook(...))`` on the
    requests session it sends with. The adapter owns the token: wechatpy gets it from a
    ``WeChatTokenStorage(adapter)`` (its ``session=`` argument) and never fetches one itself
    (``auto_retry=False`` keeps its own refresh-and-recurse off). The adapter retries transient
    errors (-1 "system busy", ...), and when WeChat refuses the token (40001/42001) it renews it
    once through the hook and resends with the new token swapped into the URL wechatpy built.
    A code that needs a person (45015: outside the 48-hour window) raises
    ``retrypolicy.UserActionRequired`` through wechatpy, with the remediation.

Run offline (no credentials, no network)::

    python examples/wechatpy_send.py

    With none of the variables below set, the script serves retrypolicy.testing.FakeWeChat on
    127.0.0.1 (requests cannot use an in-process transport) and points wechatpy and the token hook
    at it. The fake answers "system busy" (-1) to the first message, then expires the token (42001)
    on the second, then 45015 on the third: the output shows a retry, a renewal and a remediation.

Talk to the real API::

    WECHAT_APPID=wx...            the Official Account's AppID
    WECHAT_APPSECRET=...          its AppSecret (the server's IP must be on the account's whitelist)
    WECHAT_OPENID=o...            the recipient's OpenID under this account

    The token comes from ``POST /cgi-bin/stable_token`` (never with force_refresh), so this script
    does not invalidate the token other processes of the same AppID are using.

Exit status: 0 when a message went out, 1 when none did, 2 when only some variables are set.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from _console import configure_logging  # examples/_console.py: event printing shared by the examples
from wechatpy import WeChatClient

import retrypolicy
from retrypolicy.hooks import WeChatTokenHook
from retrypolicy.requests import RetryAdapter, WeChatTokenStorage
from retrypolicy.testing import Busy, FakeWeChat, TokenExpired, UserAction

REQUIRED = ("WECHAT_APPID", "WECHAT_APPSECRET", "WECHAT_OPENID")
TEXTS = (
    "Your order #1042 has shipped.",
    "It will arrive on Friday.",
    "Reply here if you have any question.",
)

OFFLINE_APPID = "wx0000000000000fake"  # offline only: the credentials the fake accepts
OFFLINE_SECRET = "offline-appsecret"
OFFLINE_OPENID = "oFakeOpenId0123456789abcdef"


def wechat_client(appid: str, adapter: RetryAdapter, api_base: str | None = None) -> WeChatClient:
    """wechatpy on retrypolicy's adapter, set up so that the two never both renew the token."""
    client = WeChatClient(
        appid,
        None,  # no AppSecret for wechatpy: it never fetches a token itself (the adapter's hook does)
        session=WeChatTokenStorage(adapter),  # wechatpy reads the adapter's current token from here
        auto_retry=False,  # no refresh-and-recurse of its own on 40001/42001: the adapter renews
        timeout=10,  # wechatpy's default is None: wait for ever
    )
    client._http.mount("https://", adapter)  # wechatpy builds its requests.Session itself
    client._http.mount("http://", adapter)
    if api_base is not None:
        client.API_BASE_URL = api_base + "/cgi-bin/"
    return client


@contextlib.contextmanager
def offline() -> Iterator[tuple[FakeWeChat, str]]:
    fake = FakeWeChat(appid=OFFLINE_APPID, secret=OFFLINE_SECRET)
    with retrypolicy.set_testing(True), fake.serve() as base:
        # set_testing: every decision and event as in production, without the backoff sleeps.
        # Never set it against the real API: there the waits give WeChat time to recover.
        yield fake, base


def run(client: WeChatClient, openid: str, before: Callable[[int], None] | None = None) -> int:
    delivered = 0
    for i, text in enumerate(TEXTS):
        if before is not None:
            before(i)
        try:
            client.message.send_text(openid, text)
        except retrypolicy.UserActionRequired as exc:
            c = exc.classification
            print(f"not sent: WeChat code {c.code} needs a person ({c.description})")
            print(f"  what to do: {c.remediation}")
        else:
            print(f"sent to {openid}: {text!r}")
            delivered += 1
    return 0 if delivered else 1


def main() -> int:
    configure_logging()
    present = [name for name in REQUIRED if os.environ.get(name)]
    if present and len(present) != len(REQUIRED):
        missing = ", ".join(name for name in REQUIRED if name not in present)
        print(f"set all of {', '.join(REQUIRED)} to use the real API (missing: {missing}), or none to run offline")
        return 2
    if present:
        print("using the real WeChat API")
        appid = os.environ["WECHAT_APPID"]
        with WeChatTokenHook(appid, os.environ["WECHAT_APPSECRET"]) as hook:
            adapter = RetryAdapter(policy="wechat", token=hook)
            try:
                return run(wechat_client(appid, adapter), os.environ["WECHAT_OPENID"])
            except retrypolicy.RequestFailed as exc:
                print(f"failed: {exc}")
                return 1
    print("no WECHAT_* variables: running offline against retrypolicy.testing.FakeWeChat on 127.0.0.1")
    with offline() as (fake, base), WeChatTokenHook(OFFLINE_APPID, OFFLINE_SECRET, base_url=base) as hook:
        adapter = RetryAdapter(policy="wechat", token=hook)
        client = wechat_client(OFFLINE_APPID, adapter, api_base=base)
        client._http.trust_env = False  # a proxy from the environment must not take the loopback requests
        faults = (Busy(), TokenExpired(), UserAction())  # one for the first attempt of each message
        status = run(client, OFFLINE_OPENID, before=lambda i: fake.script(faults[i]))
        print(f"offline check: the fake accepted {len(fake.sent)} message(s), served {fake.token_requests} token(s)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
