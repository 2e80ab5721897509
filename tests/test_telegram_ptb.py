"""python-telegram-bot through AsyncRetryTransport, against FakeTelegram served on 127.0.0.1: PTB
builds its own URLs (/bot<token>/sendMessage), the transport leaves them as they are, honours the
wait in the body, stops on a migrated group with the new chat id, and never shows the token.

PTB wraps any exception its httpx client raises that is not an httpx error in its NetworkError
(the transport's exception is its ``__cause__``); with ``raise_on=()`` the final answer goes back to
PTB instead, which raises its own typed error (ChatMigrated, Forbidden, RetryAfter...)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import _clock as clock
from retrypolicy.testing import FakeTelegram, RateLimited

telegram = pytest.importorskip("telegram")
from telegram.error import ChatMigrated, NetworkError  # noqa: E402 - after the importorskip
from telegram.request import HTTPXRequest  # noqa: E402


@pytest.fixture(autouse=True)
def _testing() -> Iterator[None]:
    with retrypolicy.set_testing(True):
        yield


def bot_for(fake: FakeTelegram, base: str, **transport_kwargs: Any) -> tuple[Any, retrypolicy.AsyncRetryTransport]:
    """PTB's Bot with our transport under its HTTPXRequest (the documented way to give PTB an httpx transport)."""
    transport = retrypolicy.AsyncRetryTransport("telegram", **transport_kwargs)
    request = HTTPXRequest(httpx_kwargs={"transport": transport})
    return telegram.Bot(fake.token, base_url=f"{base}/bot", request=request), transport


def test_send_message_through_the_transport() -> None:
    fake = FakeTelegram()
    token = fake.token
    fake.migrate(-4012345, -1009876543210)
    texts: list[str] = []
    before = 0.0
    waited = 0.0

    async def main() -> None:
        nonlocal before, waited
        with fake.serve() as base:
            bot, transport = bot_for(fake, base)
            async with bot:  # initialize(): getMe
                fake.script(RateLimited(retry_after=35))
                before = clock.monotonic()
                sent = await bot.send_message(chat_id=42, text="hello from PTB")
                waited = clock.monotonic() - before
                assert sent.text == "hello from PTB" and sent.chat.id == 42
                with pytest.raises(NetworkError) as info:  # PTB wraps what its httpx client raised
                    await bot.send_message(chat_id=-4012345, text="to the old group")
                rejected = info.value.__cause__
                assert isinstance(rejected, retrypolicy.RequestRejected)
                assert rejected.classification.extra == {"migrate_to_chat_id": -1009876543210}
                assert "migrate_to_chat_id: -1009876543210" in str(rejected)
                texts.extend([str(info.value), repr(info.value), str(rejected), repr(rejected), repr(transport)])

    with capture_logs() as logs:
        anyio.run(main)
    [scheduled] = [e for e in logs if e["event"] == "retrypolicy.retry_scheduled"]
    assert scheduled["code"] == 429 and scheduled["delay"] == 35.0 and waited >= 35.0  # the virtual clock
    assert "/bot***/sendMessage" in str(scheduled["url"])
    assert [m["text"] for m in fake.sent] == ["hello from PTB"]  # once, after the 429
    assert fake.requests == 1 + 2 + 1  # getMe, the 429 and its resend, the migrated group (not resent)
    texts.append(str(logs))
    assert all(token not in text and token.partition(":")[2] not in text for text in texts)


def test_raise_on_nothing_lets_ptb_raise_its_own_chat_migrated() -> None:
    """With raise_on=() the final answer goes back to PTB, which raises ChatMigrated(new_chat_id)."""
    fake = FakeTelegram()
    fake.migrate(-77, -1000000000077)

    async def main() -> int:
        with fake.serve() as base:
            bot, _ = bot_for(fake, base, raise_on=())
            async with bot:
                with pytest.raises(ChatMigrated) as info:
                    await bot.send_message(chat_id=-77, text="x")
                return int(info.value.new_chat_id)

    assert anyio.run(main) == -1000000000077


def test_httpx_info_log_shows_the_token_unless_quieted(caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs each request's URL at INFO (PTB's URL holds the token); setting the httpx logger
    to WARNING, as the README says, keeps every line with it out."""
    fake = FakeTelegram()
    token = fake.token

    async def main() -> None:
        with fake.serve() as base:
            bot, _ = bot_for(fake, base)
            async with bot:
                await bot.send_message(chat_id=1, text="x")

    httpx_logger = logging.getLogger("httpx")
    level, disabled, propagate = httpx_logger.level, httpx_logger.disabled, httpx_logger.propagate
    httpx_logger.disabled, httpx_logger.propagate = False, True  # as a fresh process has it (dictConfig elsewhere)
    filters = list(httpx_logger.filters)  # hooks with a secret in their URL install a redacting filter:
    for f in filters:  # without one (no such hook in this process), httpx prints the bot token
        httpx_logger.removeFilter(f)
    try:
        with caplog.at_level(logging.INFO, logger="httpx"):
            anyio.run(main)
        assert any(token in r.getMessage() for r in caplog.records if r.name == "httpx")
        caplog.clear()
        httpx_logger.setLevel(logging.WARNING)  # the README's advice
        with caplog.at_level(logging.INFO):  # the root at INFO, as an app logging at INFO has it
            httpx_logger.setLevel(logging.WARNING)
            anyio.run(main)
        assert not any(token in r.getMessage() for r in caplog.records)
    finally:
        httpx_logger.setLevel(level)
        httpx_logger.disabled, httpx_logger.propagate = disabled, propagate
        for f in filters:
            httpx_logger.addFilter(f)


def test_ptb_builds_the_url_the_transport_leaves_alone() -> None:
    """A hook with another token does not replace the one in PTB's URL."""
    fake = FakeTelegram()
    paths: list[str] = []

    class Recording(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            paths.append(request.url.path)
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def main() -> None:
        with fake.serve() as base:
            bot, _ = bot_for(fake, base, token=lambda: "999:SOME-OTHER-BOT", transport=Recording())
            async with bot:
                await bot.send_message(chat_id=1, text="x")

    anyio.run(main)
    assert paths == [f"/bot{fake.token}/getMe", f"/bot{fake.token}/sendMessage"]
