"""Slack end to end: the table, FakeSlack's wire shapes, the ambiguous errors, Retry-After, and a
static token that stops working (user-action, with the extends file of examples/)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import Category, load_policy
from retrypolicy import _clock as clock
from retrypolicy.cli import main
from retrypolicy.testing import Busy, ErrorCode, FakeSlack, RateLimited, TokenExpired

SEND, UPDATE = "/api/chat.postMessage", "/api/chat.update"
STATIC_POLICY = Path(__file__).resolve().parent.parent / "examples" / "slack_static_token.toml"


@pytest.fixture(autouse=True)
def _testing() -> Iterator[None]:
    with retrypolicy.set_testing(True):
        yield


def request(mode: str, fake: FakeSlack, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request through a fresh RetryTransport or AsyncRetryTransport in front of the fake."""
    options = {k: kwargs.pop(k) for k in ("json", "data", "extensions", "headers") if k in kwargs}
    kwargs.setdefault("policy", "slack")
    if mode == "sync":
        transport = retrypolicy.RetryTransport(transport=httpx.MockTransport(fake), **kwargs)
        with httpx.Client(transport=transport, base_url=fake.BASE_URL) as client:
            return client.request(method, path, **options)

    async def run() -> httpx.Response:
        transport = retrypolicy.AsyncRetryTransport(transport=httpx.MockTransport(fake), **kwargs)
        async with httpx.AsyncClient(transport=transport, base_url=fake.BASE_URL) as client:
            return await client.request(method, path, **options)

    return anyio.run(run)


def api_calls(fake: FakeSlack) -> int:
    return fake.requests - fake.token_requests


# -- the table --------------------------------------------------------------------------------------


def test_the_policy_loads_with_string_codes() -> None:
    policy = load_policy("slack")
    assert policy.platform == "slack"
    assert [(code, policy.explain(code).category) for code in ("channel_not_found", "invalid_auth", "ratelimited")] == [
        ("channel_not_found", Category.FATAL),
        ("invalid_auth", Category.TOKEN_REFRESH),
        ("ratelimited", Category.RETRYABLE),
    ]
    for code in ("internal_error", "fatal_error"):
        explained = policy.explain(code)
        assert explained.category is Category.RETRYABLE and explained.ambiguous


def test_explain_list_and_classify_from_the_shell(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "slack", "channel_not_found"]) == 0
    out = capsys.readouterr().out
    assert "code:        channel_not_found" in out and "category:    fatal" in out
    assert main(["list", "slack", "--category", "user-action"]) == 0
    assert "not_in_channel" in capsys.readouterr().out
    assert main(["classify", "slack", '{"ok":false,"error":"not_in_channel"}']) == 1
    assert "category:    user-action" in capsys.readouterr().out
    assert main(["classify", "slack", '{"ok":true,"warning":"missing_charset"}']) == 0
    assert capsys.readouterr().out.startswith("success")


# -- the fake's wire shapes ---------------------------------------------------------------------------


def test_fake_slack_speaks_slacks_wire_shapes() -> None:
    fake = FakeSlack(channels={"C1"})
    token = fake.issue_token()
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=fake.BASE_URL) as client:
        ok = client.post(SEND, json={"channel": "C1", "text": "hi"}, headers=auth)
        assert ok.status_code == 200 and ok.headers["x-slack-req-id"]
        body = ok.json()
        assert body["ok"] is True and body["channel"] == "C1" and body["message"]["text"] == "hi"
        assert body["warning"] == "missing_charset"  # httpx's json= declares no charset, as Slack notices
        with_charset = {**auth, "Content-Type": "application/json; charset=utf-8"}
        assert "warning" not in client.post(SEND, content=b'{"channel":"C1","text":"x"}', headers=with_charset).json()
        form = client.post(SEND, data={"channel": "C1", "text": "form", "token": token})  # token as a form field
        assert form.json()["ok"] is True
        update = client.post(UPDATE, json={"channel": "C1", "ts": body["ts"], "text": "edited"}, headers=auth)
        assert update.json()["ok"] is True and fake.updates[0]["text"] == "edited"
        errors = {
            "channel_not_found": client.post(SEND, json={"channel": "C2", "text": "x"}, headers=auth),
            "no_text": client.post(SEND, json={"channel": "C1"}, headers=auth),
            "message_not_found": client.post(UPDATE, json={"channel": "C1", "ts": "1.2", "text": "x"}, headers=auth),
            "not_authed": client.post(SEND, json={"channel": "C1", "text": "x"}),
            "invalid_auth": client.post(
                SEND, json={"channel": "C1", "text": "x"}, headers={"Authorization": "Bearer x"}
            ),
            "unknown_method": client.post("/api/chat.nothing", json={}, headers=auth),
        }
        for code, response in errors.items():
            assert (response.status_code, response.json()) == (200, {"ok": False, "error": code})
        fake.script(RateLimited(retry_after=30), Busy())
        limited = client.post(SEND, json={"channel": "C1", "text": "x"}, headers=auth)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "30"
        assert limited.json() == {"ok": False, "error": "ratelimited"}
        assert (
            client.post(SEND, json={"channel": "C1", "text": "x"}, headers=auth).json()["error"]
            == "service_unavailable"
        )
    assert [m["text"] for m in fake.sent] == ["hi", "x", "form"]
    policy = load_policy("slack")
    assert policy.classify(limited) is not None and policy.classify(ok) is None  # a warning is a success
    for kind, fault_code in fake.FAULT_CODES.items():
        rule = policy.rule_for(fault_code)
        assert rule is not None and rule.code == fault_code, kind


def test_oauth_v2_access_rotates_single_use_refresh_tokens() -> None:
    fake = FakeSlack(client_id="111.222", client_secret="s3cret")
    first = fake.refresh_token
    basic = {"Authorization": "Basic " + base64.b64encode(b"111.222:s3cret").decode()}
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=fake.BASE_URL) as client:

        def renew(refresh: str, headers: dict[str, str] | None = None, **form: str) -> dict[str, Any]:
            data = {"grant_type": "refresh_token", "refresh_token": refresh, **form}
            body: dict[str, Any] = client.post(
                "/api/oauth.v2.access", data=data, headers=basic if headers is None else headers
            ).json()
            return body

        answer = renew(first)
        assert answer["ok"] is True and answer["token_type"] == "bot" and answer["expires_in"] == 43200
        assert answer["access_token"].startswith("xoxe.xoxb-1-") and answer["refresh_token"].startswith("xoxe-1-")
        assert answer["refresh_token"] == fake.refresh_token != first
        assert renew(first) == {"ok": False, "error": "invalid_refresh_token"}  # single use
        assert fake.refresh_reuses == 1
        credentials = {"client_id": "111.222", "client_secret": "s3cret"}
        assert renew(fake.refresh_token, headers={}, **credentials)["ok"] is True  # credentials as form fields
        assert renew(fake.refresh_token, headers={}, client_id="nope")["error"] == "invalid_client_id"
        assert renew(fake.refresh_token, headers={}, client_id="111.222", client_secret="x")["error"] == (
            "bad_client_secret"
        )
        wrong_grant = client.post("/api/oauth.v2.access", data={"grant_type": "authorization_code"}, headers=basic)
        assert wrong_grant.json()["error"] == "invalid_grant_type"
        access = renew(fake.refresh_token)["access_token"]
        fake.expire_tokens()
        expired = client.post(SEND, json={"channel": "C1", "text": "x"}, headers={"Authorization": f"Bearer {access}"})
        assert expired.json() == {"ok": False, "error": "token_expired"}
    assert fake.token_requests == 7


# -- through the transport -----------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["internal_error", "fatal_error"])
def test_ambiguous_errors_are_never_resent_on_a_post(mode: str, code: str) -> None:
    """Slack says part of the operation may have succeeded: a chat.postMessage is sent once and
    raises ResendUnsafe; chat.update (idempotent) and a post marked idempotent are resent."""
    fake = FakeSlack()
    hook = fake.token_hook()
    fake.script(ErrorCode(code))
    with pytest.raises(retrypolicy.ResendUnsafe) as info:
        request(mode, fake, "POST", SEND, json={"channel": "C1", "text": "once"}, token=hook)
    assert info.value.classification.code == code and info.value.attempts == 1
    assert api_calls(fake) == 1 and fake.sent == []
    posted = request(mode, fake, "POST", SEND, json={"channel": "C1", "text": "first"}, token=hook).json()
    fake.script(ErrorCode(code))
    edit = {"channel": "C1", "ts": posted["ts"], "text": "edited"}
    assert request(mode, fake, "POST", UPDATE, json=edit, token=hook).json()["ok"] is True
    assert api_calls(fake) == 4  # the refused post, the post, the update and its resend
    fake.script(ErrorCode(code))
    marked = {"retrypolicy": {"idempotent": True}}
    response = request(mode, fake, "POST", SEND, json={"channel": "C1", "text": "x"}, token=hook, extensions=marked)
    assert response.json()["ok"] is True and api_calls(fake) == 6


def test_rate_limit_waits_retry_after_on_the_virtual_clock(mode: str) -> None:
    fake = FakeSlack()
    fake.script(RateLimited(retry_after=7))
    before = clock.monotonic()
    with capture_logs() as logs:
        response = request(mode, fake, "POST", SEND, json={"channel": "C1", "text": "hi"}, token=fake.token_hook())
    assert response.json()["ok"] is True and api_calls(fake) == 2
    [scheduled] = [e for e in logs if e["event"] == "retrypolicy.retry_scheduled"]
    assert scheduled["code"] == "ratelimited" and scheduled["delay"] == 7.0
    assert clock.monotonic() - before >= 7.0  # the wait passed on the virtual clock, not in real time


def test_busy_and_expiry_are_retried_and_renewed(mode: str) -> None:
    fake = FakeSlack()
    fake.script(Busy(), TokenExpired())
    response = request(mode, fake, "POST", SEND, json={"channel": "C1", "text": "hi"}, token=fake.token_hook())
    assert response.json()["ok"] is True
    assert [m["text"] for m in fake.sent] == ["hi"] and fake.token_requests == 2 and fake.refresh_reuses == 0


# -- without token rotation -----------------------------------------------------------------------------


def test_a_revoked_static_token_is_user_action(mode: str) -> None:
    fake = FakeSlack(rotation=False)
    token = fake.issue_token()
    fake.expire_tokens()  # the app was uninstalled: token_revoked
    with pytest.raises(retrypolicy.UserActionRequired) as info:
        request(mode, fake, "POST", SEND, json={"channel": "C1", "text": "x"}, token=lambda: token)
    c = info.value.classification
    assert c.code == "token_revoked" and c.remediation and "reinstall" in c.remediation
    assert api_calls(fake) == 1


def test_without_rotation_the_extends_file_makes_token_errors_user_action(mode: str) -> None:
    """examples/slack_static_token.toml: invalid_auth and token_expired are user-action, with what
    to do, instead of a renewal that can only return the same static token."""
    fake = FakeSlack(rotation=False)
    calls: list[int] = []

    def static() -> str:
        calls.append(1)
        return "xoxb-0-mistyped"

    with pytest.raises(retrypolicy.TokenRefreshFailed):  # the built-in table: renew, and get the same token
        request(mode, fake, "POST", SEND, json={"channel": "C1", "text": "x"}, token=static)
    calls.clear()
    with pytest.raises(retrypolicy.UserActionRequired) as info:
        request(mode, fake, "POST", SEND, json={"channel": "C1", "text": "x"}, token=static, policy=str(STATIC_POLICY))
    c = info.value.classification
    assert c.code == "invalid_auth" and c.category is Category.USER_ACTION
    assert c.remediation and "token" in c.remediation and "IP" in c.remediation
    assert calls == [1]  # the first token only: no renewal
    policy = load_policy(STATIC_POLICY)
    assert policy.explain("token_expired").category is Category.USER_ACTION
    assert policy.explain("channel_not_found").category is Category.FATAL  # the rest is the built-in table
