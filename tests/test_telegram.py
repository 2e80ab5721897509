"""Telegram end to end with raw httpx: the table, FakeTelegram's wire shapes, the wait in the body,
the migrated group, the token in the URL path (filled in, or left as the URL has it) and its
redaction, static-token errors that are user-action, and per-chat cooldowns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import Category, load_policy
from retrypolicy import _clock as clock
from retrypolicy.cli import main
from retrypolicy.testing import Busy, ErrorCode, FakeTelegram, RateLimited, TokenExpired, UserAction

BASE = FakeTelegram.BASE_URL


@pytest.fixture(autouse=True)
def _testing() -> Iterator[None]:
    with retrypolicy.set_testing(True):
        yield


class Session:
    """One RetryTransport or AsyncRetryTransport client for several requests (async: a portal)."""

    def __init__(self, mode: str, handler: Any, **kwargs: Any) -> None:
        self.mode = mode
        kwargs.setdefault("policy", "telegram")
        inner = handler if isinstance(handler, httpx.MockTransport) else httpx.MockTransport(handler)
        if mode == "sync":
            self.transport: Any = retrypolicy.RetryTransport(transport=inner, **kwargs)
            self.client: Any = httpx.Client(transport=self.transport, base_url=BASE)
        else:
            self.transport = retrypolicy.AsyncRetryTransport(transport=inner, **kwargs)
            self.kwargs = kwargs

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        if self.mode == "sync":
            response: httpx.Response = self.client.post(path, **kwargs)
            return response

        async def run() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url=BASE) as client:
                return await client.post(path, **kwargs)

        return anyio.run(run)

    def close(self) -> None:
        if self.mode == "sync":
            self.client.close()


def message(chat_id: int | str = 42, text: str = "hello") -> dict[str, Any]:
    return {"chat_id": chat_id, "text": text}


def api_calls(fake: FakeTelegram) -> int:
    return fake.requests


# -- the table --------------------------------------------------------------------------------------


def test_the_policy_loads_with_message_patterns_wait_hint_and_path_token() -> None:
    policy = load_policy("telegram")
    assert policy.platform == "telegram"
    assert policy.token.location == "path" and policy.token.prefix == "bot"
    cases = {
        (403, "Forbidden: bot was blocked by the user"): Category.USER_ACTION,
        (401, "Unauthorized"): Category.USER_ACTION,
        (409, "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"): (
            Category.USER_ACTION
        ),
        (400, "Bad Request: chat not found"): Category.FATAL,
        (400, "Bad Request: group chat was upgraded to a supergroup chat"): Category.FATAL,
        (429, "Too Many Requests: retry after 35"): Category.RETRYABLE,
    }
    for (code, text), category in cases.items():
        assert policy.explain(code, message=text).category is category, text
    assert policy.explain(401).remediation and "BotFather" in str(policy.explain(401).remediation)


def test_explain_with_a_message_from_the_shell(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "telegram", "403", "--message", "Forbidden: bot was blocked by the user"]) == 0
    assert "category:    user-action" in capsys.readouterr().out


# -- the fake's wire shapes ---------------------------------------------------------------------------


def test_fake_telegram_speaks_telegrams_wire_shapes() -> None:
    fake = FakeTelegram()
    token = fake.token
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=f"{BASE}/bot{token}") as client:
        me = client.get("/getMe").json()
        assert me["ok"] is True and me["result"]["is_bot"] and me["result"]["id"] == fake.bot_id
        sent = client.post("/sendMessage", json=message(42, "json")).json()
        assert sent["result"]["chat"] == {"id": 42, "type": "private", "first_name": "Fake User"}
        assert client.post("/SENDMESSAGE", data={"chat_id": "-100", "text": "form"}).json()["ok"] is True
        assert client.get("/sendMessage", params={"chat_id": "@channel_name", "text": "query"}).json()["ok"] is True
        fake.migrate(-100, -1001234567890)
        fake.block(7)
        fake.script(RateLimited(retry_after=35), Busy())
        answers = [
            client.post("/sendMessage", json=message(1)),
            client.post("/sendMessage", json=message(1)),
            client.post("/sendMessage", json=message(-100)),
            client.post("/sendMessage", json=message(7)),
            client.post("/sendMessage", json={"chat_id": 1}),
            client.post("/noSuchMethod", json={}),
        ]
    expected = [
        (429, {"retry_after": 35}, "Too Many Requests: retry after 35"),
        (429, {"retry_after": 1}, "Too Many Requests: retry after 1"),
        (400, {"migrate_to_chat_id": -1001234567890}, "Bad Request: group chat was upgraded to a supergroup chat"),
        (403, None, "Forbidden: bot was blocked by the user"),
        (400, None, "Bad Request: message text is empty"),
        (404, None, "Not Found: method not found"),
    ]
    for response, (status, parameters, description) in zip(answers, expected, strict=True):
        body = response.json()
        assert (response.status_code, body["ok"], body["error_code"]) == (status, False, status)
        assert body["description"] == description and body.get("parameters") == parameters
    assert answers[0].headers["retry-after"] == "35"
    assert [m["text"] for m in fake.sent] == ["json", "form", "query"]
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=BASE) as client:
        assert client.post("/bot123:WRONG/getMe").json()["description"] == "Unauthorized"
        assert client.post("/botnot-a-token/getMe").status_code == 401
        assert client.post("/sendMessage").status_code == 404  # no /bot<token>
        fake.expire_tokens()  # BotFather /revoke
        assert client.post(f"/bot{token}/getMe").status_code == 401
        new = fake.issue_token()
        assert client.post(f"/bot{new}/getMe").json()["ok"] is True and fake.token == new


def test_error_code_faults_answer_with_their_code_as_status() -> None:
    fake = FakeTelegram()
    conflict = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
    fake.script(ErrorCode(409, message=conflict), UserAction(), TokenExpired())
    policy = load_policy("telegram")
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=f"{BASE}/bot{fake.token}") as client:
        answers = [client.post("/sendMessage", json=message()) for _ in range(3)]
    assert [r.status_code for r in answers] == [409, 403, 401]
    for response, code in zip(answers, (409, 403, 401), strict=True):
        c = policy.classify(response)
        assert c is not None and c.code == code and c.category is Category.USER_ACTION and c.remediation


# -- through the transport -----------------------------------------------------------------------------


def test_the_wait_in_the_body_is_honoured(mode: str) -> None:
    """parameters.retry_after alone (no Retry-After header): the retry waits 35 s, on the virtual clock."""
    fake = FakeTelegram()
    fake.script(RateLimited(retry_after=35))

    def no_header(request: httpx.Request) -> httpx.Response:
        response = fake(request)
        headers = {k: v for k, v in response.headers.items() if k.lower() != "retry-after"}
        return httpx.Response(response.status_code, headers=headers, content=response.content)

    session = Session(mode, no_header, token=fake.token_hook())
    before = clock.monotonic()
    with capture_logs() as logs:
        assert session.post("/sendMessage", json=message()).json()["ok"] is True
    session.close()
    [scheduled] = [e for e in logs if e["event"] == "retrypolicy.retry_scheduled"]
    assert scheduled["code"] == 429 and scheduled["delay"] == 35.0
    assert clock.monotonic() - before >= 35.0
    assert [m["text"] for m in fake.sent] == ["hello"] and api_calls(fake) == 2


def test_a_wait_past_the_deadline_gives_up_at_once(mode: str) -> None:
    fake = FakeTelegram()
    fake.script(RateLimited(retry_after=600))
    session = Session(mode, fake, token=fake.token_hook())
    before = clock.monotonic()
    with pytest.raises(retrypolicy.RetriesExhausted) as info:
        session.post("/sendMessage", json=message())
    session.close()
    assert info.value.classification.wait_hint == 600 and api_calls(fake) == 1
    assert clock.monotonic() - before < 60  # nothing was waited for


def test_a_migrated_group_raises_with_the_new_chat_id(mode: str) -> None:
    fake = FakeTelegram()
    fake.migrate(-4012345, -1009876543210)
    session = Session(mode, fake, token=fake.token_hook())
    with pytest.raises(retrypolicy.RequestRejected) as info:
        session.post("/sendMessage", json=message(-4012345))
    assert session.post("/sendMessage", json=message(-1009876543210)).json()["ok"] is True
    session.close()
    c = info.value.classification
    assert c.category is Category.FATAL and c.extra == {"migrate_to_chat_id": -1009876543210}
    assert "migrate_to_chat_id: -1009876543210" in str(info.value)
    assert api_calls(fake) == 2  # not resent as is


def test_blocked_revoked_and_conflict_are_user_action_never_a_renewal(mode: str) -> None:
    fake = FakeTelegram()
    hook_calls: list[int] = []
    hook = fake.token_hook()

    def counted() -> retrypolicy.Token:
        hook_calls.append(1)
        return hook()

    fake.block(7)
    session = Session(mode, fake, token=counted)
    with pytest.raises(retrypolicy.UserActionRequired) as blocked:
        session.post("/sendMessage", json=message(7))
    assert "unblock" in str(blocked.value.classification.remediation)
    fake.script(ErrorCode(409, message="Conflict: can't use getUpdates method while webhook is active"))
    with pytest.raises(retrypolicy.UserActionRequired):
        session.post("/sendMessage", json=message())
    fake.expire_tokens()  # the token was revoked in BotFather: 401, and no renewal loop
    with pytest.raises(retrypolicy.UserActionRequired) as revoked:
        session.post("/sendMessage", json=message())
    session.close()
    assert revoked.value.classification.code == 401 and "BotFather" in str(revoked.value.classification.remediation)
    assert hook_calls == [1] and api_calls(fake) == 3


def test_a_429_cools_down_that_chat_only(mode: str) -> None:
    """The 429 rule's cooldown is per chat (recipient = chat_id): another send to the same chat
    fails fast, unsent, while other chats go on."""
    fake = FakeTelegram()
    fake.script(RateLimited(retry_after=600))  # past the deadline: gives up at once, the cooldown runs on
    session = Session(mode, fake, token=fake.token_hook())
    with pytest.raises(retrypolicy.RetriesExhausted):
        session.post("/sendMessage", json=message(1, "a"))
    with pytest.raises(retrypolicy.CooldownActive) as info:
        session.post("/sendMessage", json=message(1, "b"))
    assert 0 < info.value.remaining <= 1
    assert session.post("/sendMessage", json=message(2, "c")).json()["ok"] is True
    assert session.post("/sendMessage", data={"chat_id": "3", "text": "d"}).json()["ok"] is True  # a form too
    session.close()
    assert [m["text"] for m in fake.sent] == ["c", "d"] and api_calls(fake) == 3


# -- the token in the path ---------------------------------------------------------------------------


def test_the_transport_fills_in_the_token_and_leaves_one_the_url_has(mode: str) -> None:
    fake = FakeTelegram()
    seen: list[str] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return fake(request)

    wrong = retrypolicy.Token("999:NOT-THE-BOTS-TOKEN")
    session = Session(mode, recording, token=fake.token_hook())
    assert session.post("/sendMessage", json=message(text="filled in")).json()["ok"] is True
    other = Session(mode, recording, token=lambda: wrong)  # a URL that carries the token: left as it is
    assert other.post(f"/bot{fake.token}/sendMessage", json=message(text="as built")).json()["ok"] is True
    session.close()
    other.close()
    assert seen == [f"/bot{fake.token}/sendMessage"] * 2
    assert [m["text"] for m in fake.sent] == ["filled in", "as built"]


def test_the_token_never_shows_in_events_exceptions_or_reprs(mode: str) -> None:
    fake = FakeTelegram()
    token = fake.token
    fake.script(Busy())
    fake.migrate(-5, -1005)
    texts: list[str] = []
    with capture_logs() as logs:
        session = Session(mode, fake, token=fake.token_hook())
        assert session.post("/sendMessage", json=message()).json()["ok"] is True  # busy, then sent
        fake.script(RateLimited(retry_after=600))
        for chat, kind in ((3, retrypolicy.RetriesExhausted), (-5, retrypolicy.RequestRejected)):
            with pytest.raises(kind) as info:
                session.post(f"/bot{token}/sendMessage", json=message(chat))  # the URL carries it
            texts += [str(info.value), repr(info.value), repr(info.value.args), str(info.value.__cause__)]
            texts.append(repr(info.value.classification))
        texts += [repr(session.transport), repr(fake), str(logs)]
        session.close()
    assert len(logs) >= 3
    assert any("/bot***/sendMessage" in str(e.get("url")) for e in logs)
    secret_part = token.partition(":")[2]
    for text in texts:
        assert token not in text and secret_part not in text
