"""Send a Telegram message with python-telegram-bot, through retrypolicy's transport.

What it does
    Builds ``telegram.Bot(token, request=HTTPXRequest(httpx_kwargs={"transport": AsyncRetryTransport(
    policy="telegram", raise_on=())}))`` and sends one text with ``bot.send_message(chat_id=..., text=...)``,
    then prints the message id. PTB builds its own URLs with the bot token in the path
    (``/bot<token>/sendMessage``); the transport leaves such a URL as it is. Underneath, it waits the
    ``parameters.retry_after`` Telegram names on a 429 (flood control) and resends, and resends after a
    5xx where that cannot duplicate the message. Every decision is printed with the URL shown as
    ``/bot***/sendMessage``.

    ``raise_on=()``: a final answer (a migrated group, a blocked bot, a 429 whose wait is too long) goes
    back to PTB, which raises its own typed errors: ``ChatMigrated`` with ``new_chat_id``, ``Forbidden``,
    ``RetryAfter``... (With the default ``raise_on``, the transport raises ``RequestRejected`` and the
    like, and PTB wraps them in its ``NetworkError``, the transport's exception as ``__cause__``.) The
    bot token is static, so there is no token hook: a 401 means the token was revoked in @BotFather.

    httpx logs every request's URL at INFO, and PTB's URLs hold the token: the script sets the
    ``httpx`` logger to WARNING.

Run offline (no credentials, no network)::

    python examples/telegram_ptb.py

    With none of the variables below set, PTB talks to retrypolicy.testing.FakeTelegram served on
    127.0.0.1. The fake answers the first send with a 429 "retry after 3" and turns the group the
    second send goes to into a supergroup: the output shows the wait, the message id, and PTB's
    ChatMigrated with the new chat id, to which the script then sends.

Talk to the real API (needs ``pip install python-telegram-bot``)::

    TELEGRAM_BOT_TOKEN=123456:AA...   the bot's token from @BotFather
    TELEGRAM_CHAT_ID=123456789        a chat that has talked to the bot (or a group it is in)

Exit status: 0 when the message was sent, 1 when it was not, 2 when only some variables are set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator

from _console import configure_logging  # examples/_console.py: event printing shared by the examples
from telegram import Bot
from telegram.error import ChatMigrated, TelegramError
from telegram.request import HTTPXRequest

import retrypolicy
from retrypolicy.testing import FakeTelegram, RateLimited

REQUIRED = ("TELEGRAM_BOT_TOKEN", "TELEGRAM_CHAT_ID")
TEXT = "Your order #1042 has shipped."
OFFLINE_CHAT, OFFLINE_GROUP, OFFLINE_SUPERGROUP = 1042, -4001042, -1001234561042


def make_bot(token: str, base_url: str = "https://api.telegram.org/bot") -> Bot:
    transport = retrypolicy.AsyncRetryTransport(policy="telegram", raise_on=())
    return Bot(token, base_url=base_url, request=HTTPXRequest(httpx_kwargs={"transport": transport}))


async def send(bot: Bot, chat_id: int | str) -> int:
    """Send TEXT; a group that became a supergroup is sent to again under its new id."""
    try:
        sent = await bot.send_message(chat_id=chat_id, text=TEXT)
    except ChatMigrated as exc:  # PTB's own error: raise_on=() hands the answer back to PTB
        print(f"chat {chat_id} is now the supergroup {exc.new_chat_id}: sending there (store the new id)")
        sent = await bot.send_message(chat_id=exc.new_chat_id, text=TEXT)
    print(f"message sent to chat {sent.chat.id}: message_id {sent.message_id}")
    return sent.message_id


@contextlib.contextmanager
def offline() -> Iterator[tuple[FakeTelegram, str]]:
    fake = FakeTelegram()
    fake.migrate(OFFLINE_GROUP, OFFLINE_SUPERGROUP)
    with fake.serve() as base:
        yield fake, base


async def run(bot: Bot, chats: list[int | str], fake: FakeTelegram | None = None) -> int:
    try:
        async with bot:  # initialize(): PTB asks getMe
            if fake is not None:
                fake.script(RateLimited(retry_after=3))  # offline: flood control on the first send
            for chat in chats:
                await send(bot, chat)
    except (TelegramError, retrypolicy.RequestFailed) as exc:
        print(f"failed: {type(exc).__name__}: {exc}")
        return 1
    return 0


def main() -> int:
    configure_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines print URLs, the bot token included
    present = [name for name in REQUIRED if os.environ.get(name)]
    if present and len(present) != len(REQUIRED):
        missing = ", ".join(name for name in REQUIRED if name not in present)
        print(f"set all of {', '.join(REQUIRED)} to use the real API (missing: {missing}), or none to run offline")
        return 2
    if present:
        print("using the real Telegram Bot API")
        return asyncio.run(run(make_bot(os.environ["TELEGRAM_BOT_TOKEN"]), [os.environ["TELEGRAM_CHAT_ID"]]))
    print("no TELEGRAM_* variables: running offline against retrypolicy.testing.FakeTelegram on 127.0.0.1")
    # Offline only: keeps every decision and log event but skips the waits. Never set it when
    # talking to the real API: there the wait is what Telegram's flood control asks for.
    retrypolicy.set_testing(True)
    with offline() as (fake, base):
        bot = make_bot(fake.token, base_url=f"{base}/bot")
        status = asyncio.run(run(bot, [OFFLINE_CHAT, OFFLINE_GROUP], fake))
    print(f"offline check: the fake accepted {len(fake.sent)} message(s)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
