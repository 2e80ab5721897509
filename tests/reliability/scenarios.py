"""Shared pieces of the reliability suite: the fake platforms as send scenarios, a wire
recorder that checks the no-resend rule on every attempt, outcome tallies and broken streams."""

from __future__ import annotations

import json
import threading
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

import retrypolicy
from retrypolicy.testing import (
    Dropped,
    FakePlatform,
    FakeSlack,
    FakeTelegram,
    FakeTencentIM,
    FakeWeChat,
    FakeWhatsAppCloud,
    FakeWhatsAppOnPrem,
    Fault,
    TokenExpired,
)

MODES = ["sync", "async"]


# -- platforms as scenarios ----------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    """How to send one uniquely identifiable message to a fake platform."""

    name: str
    make: Callable[[], FakePlatform]
    path: Callable[[FakePlatform], str]
    payload: Callable[[str], dict[str, Any]]
    ident: Callable[[dict[str, Any]], str]


def _wechat_payload(mid: str) -> dict[str, Any]:
    return {"touser": "o-reliability", "msgtype": "text", "text": {"content": mid}}


def _tencent_payload(mid: str) -> dict[str, Any]:
    body = [{"MsgType": "TIMTextElem", "MsgContent": {"Text": mid}}]
    return {"To_Account": "user-1", "MsgRandom": zlib.crc32(mid.encode()), "MsgBody": body}


def _tencent_path(fake: FakePlatform) -> str:
    assert isinstance(fake, FakeTencentIM)
    return f"/v4/openim/sendmsg?sdkappid={fake.sdkappid}&identifier={fake.admin}&random=7&contenttype=json"


def _onprem_payload(mid: str) -> dict[str, Any]:
    return {"to": "15550000001", "type": "text", "text": {"body": mid}}


def _cloud_payload(mid: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": "15550000001", "type": "text", "text": {"body": mid}}


def _slack_payload(mid: str) -> dict[str, Any]:
    return {"channel": "C0RELIABLE", "text": mid}


def _telegram_payload(mid: str) -> dict[str, Any]:
    # one chat per message: a 429 (Telegram's busy answer) cools down that chat only
    return {"chat_id": 100_000 + zlib.crc32(mid.encode()) % 10**9, "text": mid}


def _cloud_path(fake: FakePlatform) -> str:
    assert isinstance(fake, FakeWhatsAppCloud)
    return fake.messages_path


PLATFORMS: dict[str, Platform] = {
    p.name: p
    for p in (
        Platform(
            "wechat",
            FakeWeChat,
            lambda fake: "/cgi-bin/message/custom/send",
            _wechat_payload,
            lambda body: str(body["text"]["content"]),
        ),
        Platform(
            "tencent_im",
            FakeTencentIM,
            _tencent_path,
            _tencent_payload,
            lambda body: str(body["MsgBody"][0]["MsgContent"]["Text"]),
        ),
        Platform(
            "whatsapp_onprem",
            FakeWhatsAppOnPrem,
            lambda fake: "/v1/messages",
            _onprem_payload,
            lambda body: str(body["text"]["body"]),
        ),
        Platform(
            "whatsapp_cloud",
            FakeWhatsAppCloud,
            _cloud_path,
            _cloud_payload,
            lambda body: str(body["text"]["body"]),
        ),
        Platform("slack", FakeSlack, lambda fake: "/api/chat.postMessage", _slack_payload, lambda b: str(b["text"])),
        # The transport fills in /bot<token>. The bot token is static: a TokenExpired fault revokes it
        # (BotFather), every later send gets 401 (user-action), and the hook is never called again.
        Platform("telegram", FakeTelegram, lambda fake: "/sendMessage", _telegram_payload, lambda b: str(b["text"])),
    )
}


def duplicates(fake: FakePlatform, platform: Platform) -> int:
    """Messages the platform accepted more than once (0 means every message went out at most once)."""
    counts = Counter(platform.ident(body) for body in fake.sent)
    return sum(n - 1 for n in counts.values() if n > 1)


def count_faults(fake: FakePlatform, kind: type[Fault]) -> int:
    return sum(1 for fault in fake.injected if isinstance(fault, kind))


def injected_summary(fake: FakePlatform) -> str:
    counts = Counter(type(f).__name__ for f in fake.injected)
    return ",".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "none"


# -- the wire: every attempt, checked -----------------------------------------------------------


class Wire:
    """A MockTransport handler in front of a fake: counts attempts per message and records a
    violation whenever a message is sent again after an ambiguous failure (the no-resend rule)."""

    def __init__(self, fake: FakePlatform, platform: Platform) -> None:
        self.fake = fake
        self.platform = platform
        self.policy = retrypolicy.load_policy(platform.name)
        self.attempts: Counter[str] = Counter()
        self.ambiguous: set[str] = set()
        self.resent_after_ambiguous: list[str] = []
        self._lock = threading.Lock()

    def _ident(self, request: httpx.Request) -> str:
        return self.platform.ident(json.loads(request.content))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        mid = self._ident(request)
        with self._lock:
            if mid in self.ambiguous:
                self.resent_after_ambiguous.append(mid)
            self.attempts[mid] += 1
        try:
            response = self.fake(request)
        except httpx.TransportError:
            with self._lock:
                self.ambiguous.add(mid)
            raise
        verdict = self.policy.classify(response)
        if verdict is not None and verdict.ambiguous:
            with self._lock:
                self.ambiguous.add(mid)
        return response


# -- outcomes ---------------------------------------------------------------------------------


@dataclass
class Tally:
    """How every logical request ended: a success, a typed RequestFailed, or something else (a bug)."""

    ok: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # message id -> exception class name
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def success(self, mid: str, response: httpx.Response) -> None:
        good = response.status_code < 300 and retrypolicy.EXTENSION not in response.extensions
        with self.lock:
            if good:
                self.ok.append(mid)
            else:
                self.unexpected.append(f"{mid}: failure returned as a response {response!r}")

    def failure(self, mid: str, exc: BaseException) -> None:
        with self.lock:
            if isinstance(exc, retrypolicy.RequestFailed):
                self.failed[mid] = type(exc).__name__
            else:
                self.unexpected.append(f"{mid}: {exc!r}")

    @property
    def requests(self) -> int:
        return len(self.ok) + len(self.failed) + len(self.unexpected)

    def kinds(self) -> str:
        counts = Counter(self.failed.values())
        return ",".join(f"{k}:{v}" for k, v in sorted(counts.items())) or "none"


def send_sync(client: httpx.Client, platform: Platform, fake: FakePlatform, mid: str, tally: Tally) -> None:
    try:
        response = client.post(platform.path(fake), json=platform.payload(mid))
    except Exception as exc:  # noqa: BLE001 - every outcome is tallied; the test asserts on them
        tally.failure(mid, exc)
    else:
        tally.success(mid, response)


async def send_async(client: httpx.AsyncClient, platform: Platform, fake: FakePlatform, mid: str, tally: Tally) -> None:
    try:
        response = await client.post(platform.path(fake), json=platform.payload(mid))
    except Exception as exc:  # noqa: BLE001 - every outcome is tallied; the test asserts on them
        tally.failure(mid, exc)
    else:
        tally.success(mid, response)


def sync_client(platform: Platform, handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> httpx.Client:
    transport = retrypolicy.RetryTransport(platform.name, transport=httpx.MockTransport(handler), **kwargs)
    return httpx.Client(transport=transport, base_url="https://api.example.invalid")


def async_client(
    platform: Platform, handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any
) -> httpx.AsyncClient:
    transport = retrypolicy.AsyncRetryTransport(platform.name, transport=httpx.MockTransport(handler), **kwargs)
    return httpx.AsyncClient(transport=transport, base_url="https://api.example.invalid")


def check_run(tally: Tally, wire: Wire, fake: FakePlatform, platform: Platform, requests: int) -> dict[str, int]:
    """The invariants every faulty run must keep; returns the figures to report."""
    assert tally.unexpected == [], tally.unexpected[:5]
    assert tally.requests == requests  # no lost request: each one ended in a response or a RequestFailed
    assert not set(tally.ok) & set(tally.failed)
    accepted = [platform.ident(body) for body in fake.sent]
    dups = duplicates(fake, platform)
    assert dups == 0
    assert wire.resent_after_ambiguous == []  # never resent after an ambiguous failure
    ok = set(tally.ok)
    assert ok <= set(accepted)  # every success was really accepted, exactly once
    lost_answers = set(accepted) - ok  # accepted by the platform, answer lost: must be ResendUnsafe
    assert all(tally.failed.get(mid) == "ResendUnsafe" for mid in lost_answers), sorted(lost_answers)[:5]
    assert len(lost_answers) <= count_faults(fake, Dropped)
    return {
        "requests": requests,
        "attempts": sum(wire.attempts.values()),
        "ok": len(ok),
        "failed": len(tally.failed),
        "faults": len(fake.injected),
        "dropped": count_faults(fake, Dropped),
        "token_expired": count_faults(fake, TokenExpired),
        "accepted": len(accepted),
        "duplicates": dups,
        "resent_after_ambiguous": len(wire.resent_after_ambiguous),
    }


# -- broken response bodies ----------------------------------------------------------------------


class BrokenStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that delivers ``after`` bytes, then fails like a reset connection."""

    def __init__(self, data: bytes, after: int, error: Callable[[], Exception]) -> None:
        self.data = data
        self.after = after
        self.error = error
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        if self.after:
            yield self.data[: self.after]
        raise self.error()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await anyio.sleep(0)
        if self.after:
            yield self.data[: self.after]
        raise self.error()

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class ClosingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A complete response body that records whether the transport closed it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield self.data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def json_response(status: int, body: bytes, *, ctype: str = "application/json", **headers: str) -> httpx.Response:
    """A streamed (unread) response with a Content-Length, as a real transport returns it."""
    all_headers = {"content-type": ctype, "content-length": str(len(body)), **headers}
    return httpx.Response(status, headers=all_headers, stream=ClosingStream(body))
