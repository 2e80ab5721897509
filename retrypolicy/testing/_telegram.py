"""The fake Telegram Bot API: the bot token in the URL path, HTTP status = ``error_code``, the
wait in ``parameters.retry_after``, and groups that migrate to supergroups."""

from __future__ import annotations

import math
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Unpack

import httpx

from .._token import Token
from ._faults import Busy, Fault, RateLimited
from ._platform import ErrorMore, FakePlatform, Route, _call_params, _fault_codes, _Issued, _json_response, _Spec

__all__ = ["FakeTelegram"]

_PATH = re.compile(r"/bot([^/]*)/(?:test/)?([A-Za-z]+)")
_TOKEN = re.compile(r"[1-9]\d{0,19}:[A-Za-z0-9_-]{1,70}")
_FOREVER = 100 * 365 * 86400.0  # a bot token does not expire


def _params(request: httpx.Request) -> dict[str, Any] | None:
    """A method's parameters: the query string, then a JSON or form body over it. ``None`` for a
    body it cannot read."""
    return _call_params(request, untyped_form=False, strict=False)


def _chat_id(value: object) -> int | str | None:
    """A chat id as the Bot API reads it: an integer (also as a string), or ``@username``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d{1,20}", text):
            return int(text)
        if re.fullmatch(r"@\w{4,32}", text):
            return text
    return None


class FakeTelegram(FakePlatform):
    """Telegram Bot API: ``/bot<token>/getMe`` and ``/bot<token>/sendMessage`` (GET or POST;
    parameters in the query, a JSON body or a form; method names case-insensitive).

    The bot token is static, as BotFather issues it: :meth:`token_hook` returns a hook that always
    answers the current one (``fake.token``). :meth:`expire_tokens` (or :class:`TokenExpired`)
    revokes it, as ``/revoke`` in BotFather does: every call then gets ``401 Unauthorized`` until
    :meth:`issue_token` makes a new one. An unknown token gets 401 too; a path without ``/bot``
    gets 404.

    Errors come as HTTP status = ``error_code`` with ``{"ok": false, "error_code": N,
    "description": "..."}`` (and ``parameters`` where Telegram sends them): a 429 carries
    ``parameters.retry_after`` and a ``Retry-After`` header; a message to a group that
    :meth:`migrate` upgraded gets 400 "group chat was upgraded to a supergroup chat" with
    ``parameters.migrate_to_chat_id``; one to a chat that :meth:`block` blocked the bot gets 403
    "bot was blocked by the user"; an unknown method 404. ``sendMessage`` needs ``chat_id`` (an
    integer or ``@username``) and ``text``.

    Faults: busy is 429 "retry after 1"; :class:`RateLimited` 429 with ``retry_after`` its
    seconds rounded up (5 when not given); user-action 403 "bot was blocked by the user"; fatal
    400 "chat not found". An :class:`ErrorCode` is answered with its code as the HTTP status.
    """

    platform: ClassVar[str] = "telegram"
    BASE_URL: ClassVar[str] = "https://api.telegram.org"
    _SPECS: ClassVar[Mapping[str, _Spec]] = {
        "busy": _Spec(429, 429, "Too Many Requests: retry after 1"),
        "rate_limited": _Spec(429, 429, "Too Many Requests: retry after 5"),
        "user_action": _Spec(403, 403, "Forbidden: bot was blocked by the user"),
        "fatal": _Spec(400, 400, "Bad Request: chat not found"),
    }
    FAULT_CODES: ClassVar[Mapping[str, int | str]] = _fault_codes(_SPECS, token_expired=401)
    _SINGLE_TOKEN: ClassVar[bool] = True  # a new token (BotFather /revoke) ends the old one

    def __init__(
        self,
        token: str | None = None,
        *,
        username: str = "fake_retrypolicy_bot",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(token_lifetime=_FOREVER, clock=clock)
        if token is not None and not (isinstance(token, str) and _TOKEN.fullmatch(token)):
            raise ValueError("token must look like a bot token, '<bot id>:<secret>'")  # never echo it
        self.username = username
        self._bot_id = 7_000_000_000 + secrets.randbelow(10**9)
        with self._lock:
            if token is None:
                self._mint(_FOREVER)
            else:
                self._install(token)
        self._migrated: dict[int | str, int] = {}
        self._blocked: set[int | str] = set()
        self._message_id = 0

    # -- tokens and chats

    @property
    def bot_id(self) -> int:
        """The bot's user id: the part of the token before the colon."""
        return self._bot_id

    @property
    def token(self) -> str:
        """The bot token that works now (a secret: tests only)."""
        with self._lock:
            assert self._latest is not None
            return self._latest

    def _install(self, token: str) -> None:
        self._bot_id = int(token.partition(":")[0])
        self._tokens[token] = _Issued(self._clock() + _FOREVER)
        self._latest = token

    def _new_token_value(self) -> str:
        return f"{self._bot_id}:AA{secrets.token_urlsafe(25)[:33]}"

    def token_hook(self) -> Callable[[], Token]:
        """A hook returning the current bot token (static: no endpoint, no expiry), counted in
        ``token_requests``."""

        def hook() -> Token:
            with self._lock:
                self._token_requests += 1
                assert self._latest is not None
                return Token(self._latest)

        return hook

    def migrate(self, chat_id: int | str, new_chat_id: int) -> None:
        """The group ``chat_id`` became the supergroup ``new_chat_id``: sends to it get 400 with
        ``parameters.migrate_to_chat_id``."""
        with self._lock:
            self._migrated[chat_id] = new_chat_id

    def block(self, chat_id: int | str) -> None:
        """The user of ``chat_id`` blocked the bot: sends to it get 403 "bot was blocked by the user"."""
        with self._lock:
            self._blocked.add(chat_id)

    # -- the wire

    def _error(self, code: int | str, status: int, message: str, **more: Unpack[ErrorMore]) -> httpx.Response:
        if isinstance(code, int) and not isinstance(code, bool) and 100 <= code <= 599:
            status = code  # Telegram's error_code is its HTTP status
        body: dict[str, Any] = {"ok": False, "error_code": code, "description": message}
        retry_after = re.fullmatch(r"Too Many Requests: retry after (\d+)", message) if code == 429 else None
        headers = dict(more.get("headers") or {})
        if retry_after is not None:
            body["parameters"] = {"retry_after": int(retry_after[1])}
            headers["Retry-After"] = retry_after[1]
        return self._json(status, body, headers)

    def _json(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> httpx.Response:
        return _json_response(status, body, {"content-type": "application/json", **(headers or {})})

    def _fault_response(self, fault: Fault) -> httpx.Response:
        if isinstance(fault, RateLimited) and fault.retry_after is not None:
            seconds = max(1, math.ceil(fault.retry_after))
            return self._error(429, 429, f"Too Many Requests: retry after {seconds}")
        if isinstance(fault, Busy):
            return self._spec_error("busy")
        return super()._fault_response(fault)

    def _route(self, request: httpx.Request) -> Route:
        return "api" if _PATH.fullmatch(request.url.path) else None

    def _handle_api(self, request: httpx.Request) -> httpx.Response:
        match = _PATH.fullmatch(request.url.path)
        assert match is not None
        token, method = urllib.parse.unquote(match[1]), match[2].lower()
        if not _TOKEN.fullmatch(token):
            return self._error(401, 401, "Unauthorized: invalid token specified")
        if self._token_status(token) != "valid":
            return self._error(401, 401, "Unauthorized")
        params = _params(request)
        if params is None:
            return self._error(400, 400, "Bad Request: can't parse request body")
        bot = {"id": self._bot_id, "is_bot": True, "first_name": "Fake Bot", "username": self.username}
        if method == "getme":
            more = {"can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}
            return self._json(200, {"ok": True, "result": {**bot, **more}})
        if method != "sendmessage":
            return self._error(404, 404, "Not Found: method not found")
        chat_id = _chat_id(params.get("chat_id"))
        if chat_id is None:
            return self._error(
                400,
                400,
                "Bad Request: chat_id is empty" if not params.get("chat_id") else "Bad Request: chat not found",
            )
        text = params.get("text")
        if not isinstance(text, str) or not text.strip():
            return self._error(400, 400, "Bad Request: message text is empty")
        if chat_id in self._migrated:
            return self._json(
                400,
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: group chat was upgraded to a supergroup chat",
                    "parameters": {"migrate_to_chat_id": self._migrated[chat_id]},
                },
            )
        if chat_id in self._blocked:
            return self._error(403, 403, "Forbidden: bot was blocked by the user")
        self._sent.append(params)
        self._message_id += 1
        if isinstance(chat_id, str) or chat_id < 0:
            chat = {
                "id": chat_id if isinstance(chat_id, int) else -1_001_000_000_000 - self._message_id,
                "type": "supergroup" if isinstance(chat_id, str) or chat_id < -1_000_000_000_000 else "group",
                "title": "Fake group",
            }
        else:
            chat = {"id": chat_id, "type": "private", "first_name": "Fake User"}
        message = {"message_id": self._message_id, "from": bot, "chat": chat, "date": int(time.time()), "text": text}
        return self._json(200, {"ok": True, "result": message})
