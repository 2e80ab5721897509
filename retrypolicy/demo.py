"""``retrypolicy demo [PLATFORM]``: a scripted outage on an embedded fake platform.

A burst of concurrent message sends goes through :class:`~retrypolicy.AsyncRetryTransport` to
an in-process fake (:mod:`retrypolicy.testing`) while it answers with busy errors, a rate limit
with Retry-After, a token expiry, a gateway 502 and a user-action error. The log events stream as
they happen; a summary table follows. Waits are real but scaled down (``set_testing(scale=...)``),
so a run takes a second or two.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio
import httpx
import structlog

from ._clock import is_testing, set_testing
from ._errors import CooldownActive, RequestFailed
from ._transport import AsyncRetryTransport
from .testing import (
    Busy,
    FakeDingTalk,
    FakeFeishu,
    FakePlatform,
    FakeSlack,
    FakeTelegram,
    FakeTencentIM,
    FakeWeChat,
    FakeWeCom,
    FakeWhatsAppCloud,
    FakeWhatsAppOnPrem,
    Fault,
    GatewayError,
    RateLimited,
    TokenExpired,
    UserAction,
)

__all__ = ["PLATFORMS", "QUOTA_FAULT", "QUOTA_PROBES", "SCENARIO", "SCENARIOS", "DemoSummary", "run_demo", "scenario"]

SCENARIO: tuple[Fault, ...] = (
    Busy(),
    Busy(),
    TokenExpired(),
    GatewayError(502),
    UserAction(),
    Busy(),
)
"""Phase 1: the faults the fake applies, in order, to the first API requests of the burst."""

SCENARIOS: dict[str, tuple[Fault, ...]] = {
    "telegram": tuple(f for f in SCENARIO if not isinstance(f, TokenExpired)),
}
"""Platforms whose phase 1 differs: a Telegram bot token is static (no expiry to renew)."""


def scenario(platform: str) -> tuple[Fault, ...]:
    """Phase 1 of ``platform``: :data:`SCENARIO` unless :data:`SCENARIOS` says otherwise."""
    return SCENARIOS.get(platform, SCENARIO)


QUOTA_FAULT: Fault = RateLimited(retry_after=2.0)
"""Phase 2: one send hits the platform's rate limit; meanwhile ``QUOTA_PROBES`` more are sent."""
QUOTA_PROBES = 5

PLATFORMS: dict[str, Callable[[], FakePlatform]] = {
    "wechat": FakeWeChat,
    "tencent_im": FakeTencentIM,
    "whatsapp_onprem": FakeWhatsAppOnPrem,
    "whatsapp_cloud": FakeWhatsAppCloud,
    "slack": FakeSlack,
    "telegram": FakeTelegram,
    "wecom": FakeWeCom,
    "feishu": FakeFeishu,
    "dingtalk": FakeDingTalk,  # the old API (oapi.dingtalk.com)
}


@dataclass
class DemoSummary:
    """What happened: counted from the log events and from the fake's own counters."""

    platform: str
    requests: int
    attempts: int = 0
    retries: int = 0
    renewals: int = 0
    succeeded: int = 0
    gave_up: Counter[str] = field(default_factory=Counter)  # category -> requests given up
    failures: Counter[str] = field(default_factory=Counter)  # category -> classified failures seen
    messages_sent: int = 0  # messages the fake accepted
    failed_fast: int = 0  # requests refused locally by a cooldown, never sent
    seconds: float = 0.0


def _request(fake: FakePlatform, i: int) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any]
    if isinstance(fake, FakeWeChat):
        body = {"touser": f"oUser{i:04d}", "msgtype": "text", "text": {"content": f"order {i} shipped"}}
        return f"{fake.BASE_URL}/cgi-bin/message/custom/send", {"json": body}
    if isinstance(fake, FakeTencentIM):
        params = {"sdkappid": fake.sdkappid, "identifier": fake.admin, "random": i, "contenttype": "json"}
        body = {"To_Account": f"user{i}", "MsgRandom": i, "MsgBody": [{"MsgType": "TIMTextElem"}]}
        return f"{fake.BASE_URL}/v4/openim/sendmsg", {"json": body, "params": params}
    if isinstance(fake, FakeWhatsAppOnPrem):
        body = {"to": f"1555000{i:04d}", "type": "text", "text": {"body": f"order {i} shipped"}}
        return f"{fake.BASE_URL}/v1/messages", {"json": body}
    if isinstance(fake, FakeWeCom):
        body = {"touser": f"user{i:04d}", "msgtype": "text", "agentid": fake.agentid, "text": {"content": f"order {i}"}}
        return f"{fake.BASE_URL}/cgi-bin/message/send", {"json": body}
    if isinstance(fake, FakeFeishu):
        body = {"receive_id": f"ou_{i:032x}", "msg_type": "text", "content": json.dumps({"text": f"order {i}"})}
        return f"{fake.BASE_URL}/open-apis/im/v1/messages", {"json": body, "params": {"receive_id_type": "open_id"}}
    if isinstance(fake, FakeDingTalk):
        msg = {"msgtype": "text", "text": {"content": f"order {i} shipped"}}
        body = {"agent_id": fake.agent_id, "userid_list": f"user{i}", "msg": msg}
        return f"{fake.BASE_URL}/topapi/message/corpconversation/asyncsend_v2", {"json": body}
    if isinstance(fake, FakeSlack):
        body = {"channel": f"C{i:08d}", "text": f"order {i} shipped"}
        return f"{fake.BASE_URL}/api/chat.postMessage", {"json": body}
    if isinstance(fake, FakeTelegram):  # the transport fills in /bot<token>
        return f"{fake.BASE_URL}/sendMessage", {"json": {"chat_id": 100_000 + i, "text": f"order {i} shipped"}}
    assert isinstance(fake, FakeWhatsAppCloud)
    body = {"messaging_product": "whatsapp", "to": f"1555000{i:04d}", "type": "text", "text": {"body": "hi"}}
    return f"{fake.BASE_URL}{fake.messages_path}", {"json": body}


def _logger(out: TextIO, colors: bool, summary: DemoSummary) -> Any:
    def count(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        name = str(event.get("event", ""))
        if name.endswith("cooldown_started") or event.get("error") == "CooldownActive":
            return event  # not a response from the platform: counted as failed fast
        summary.failures[str(event.get("category"))] += 1
        if name.endswith("retry_scheduled"):
            summary.retries += 1
        elif name.endswith("gave_up"):
            summary.gave_up[str(event.get("category"))] += 1
        return event

    keep = ("code", "category", "attempt", "delay", "hook_called", "url", "request_id", "reason", "remediation")

    def trim(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return {k: v for k, v in event.items() if (k in keep and v is not None) or k in ("event", "level", "timestamp")}

    return structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            count,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f"),
            trim,
            structlog.dev.ConsoleRenderer(colors=colors, pad_event_to=28),
        ],
    )


async def _scenario(fake: FakePlatform, n: int, logger: Any, summary: DemoSummary, out: TextIO) -> None:
    def counted(request: httpx.Request) -> httpx.Response:
        summary.attempts += 1  # every request the retry transport sends (token hooks bypass it)
        return fake(request)

    inner = httpx.MockTransport(counted)
    transport = AsyncRetryTransport(policy=fake.platform, token=fake.token_hook(), transport=inner, logger=logger)
    async with httpx.AsyncClient(transport=transport, timeout=10) as client:

        async def send(i: int) -> None:
            url, kwargs = _request(fake, i)
            try:
                response = await client.post(url, **kwargs)
            except CooldownActive:
                summary.failed_fast += 1
                return
            except RequestFailed:
                return
            if response.is_success:
                summary.succeeded += 1

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(send, i)

        print(f"\n== phase 2: one send hits the rate limit; {QUOTA_PROBES} more are sent meanwhile\n", file=out)
        retries_before = transport.snapshot().retries
        fake.script(QUOTA_FAULT)
        async with anyio.create_task_group() as tg:
            tg.start_soon(send, n)
            with anyio.fail_after(5):
                while transport.snapshot().retries == retries_before:  # until the rate limit was answered
                    await anyio.sleep(0.001)
            for i in range(n + 1, n + 1 + QUOTA_PROBES):
                tg.start_soon(send, i)
        summary.requests += 1 + QUOTA_PROBES
        summary.renewals = transport.snapshot().renewals


def run_demo(
    platform: str = "wechat", *, requests: int = 40, out: TextIO | None = None, colors: bool | None = None
) -> DemoSummary:
    """Run the scenario on one fake platform; print events and the summary to ``out``."""
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    out = out if out is not None else sys.stdout
    colors = out.isatty() if colors is None else colors
    fake = PLATFORMS[platform]()
    fake.script(*scenario(platform))
    summary = DemoSummary(platform=platform, requests=requests)
    was_testing = is_testing()
    set_testing(True, scale=0.02)  # real waits, scaled down 50x
    started = time.monotonic()
    try:
        print(f"== {platform}: {requests} concurrent sends; the fake injects: {_faults(platform)}\n", file=out)
        anyio.run(_scenario, fake, requests, _logger(out, colors, summary), summary, out)
    finally:
        set_testing(was_testing)
    summary.seconds = time.monotonic() - started
    summary.messages_sent = len(fake.sent)
    _print_summary(summary, out, colors)
    return summary


def _faults(platform: str) -> str:
    return ", ".join(type(f).__name__ for f in scenario(platform)) + f"; then {type(QUOTA_FAULT).__name__}"


def _print_summary(s: DemoSummary, out: TextIO, colors: bool) -> None:
    bold, reset = ("\033[1m", "\033[0m") if colors else ("", "")
    print(f"\n{bold}summary: {s.platform}{reset} ({s.seconds:.1f} s)", file=out)
    rows = [
        ("logical requests", s.requests),
        ("attempts sent", s.attempts),
        ("retries after backoff", s.retries),
        ("token renewals (hook calls)", s.renewals),
        ("succeeded", s.succeeded),
        ("messages the platform accepted", s.messages_sent),
        ("failed fast during a cooldown", s.failed_fast),
    ]
    for label, value in rows:
        print(f"  {label:<34} {value:>5}", file=out)
    print(f"  {'outcome by category':<34} {'failures seen':>13} {'gave up':>8}", file=out)
    for category in ("retryable", "token-refresh", "user-action", "fatal"):
        print(f"    {category:<32} {s.failures[category]:>13} {s.gave_up[category]:>8}", file=out)
    print(
        "\nNothing was sent twice: the 502 answered a POST, which may have gone through, so it was not "
        "resent (ResendUnsafe); the user-action error needs a person (UserActionRequired). Requests "
        "refused during a rate-limit cooldown never reached the platform (CooldownActive).",
        file=out,
    )
