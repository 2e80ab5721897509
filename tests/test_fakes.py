"""Tests of the fake platforms in retrypolicy.testing: wire shapes, tokens, faults, counters."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import retrypolicy
from retrypolicy import Category
from retrypolicy.testing import (
    Busy,
    Dropped,
    ErrorCode,
    FakeClock,
    FakePlatform,
    FakeTencentIM,
    FakeWeChat,
    FakeWhatsAppCloud,
    FakeWhatsAppOnPrem,
    Fatal,
    Fault,
    GatewayError,
    RateLimited,
    Slow,
    TokenExpired,
    UserAction,
)

PLATFORMS = ["wechat", "tencent_im", "whatsapp_onprem", "whatsapp_cloud"]
APPID, SECRET = "wx1", "s3cret-appsecret"
USER, PASSWORD = "admin", "Passw0rd-onprem"


def make(platform: str, clock: FakeClock | None = None) -> FakePlatform:
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    if platform == "wechat":
        return FakeWeChat(appid=APPID, secret=SECRET, **kwargs)
    if platform == "tencent_im":
        return FakeTencentIM(sdkappid=1400000001, **kwargs)
    if platform == "whatsapp_onprem":
        return FakeWhatsAppOnPrem(username=USER, password=PASSWORD, **kwargs)
    return FakeWhatsAppCloud(phone_number_id="1065", **kwargs)


def token_request(fake: FakePlatform, base_url: str = "", *, force: bool = False) -> httpx.Request | None:
    """The request a client makes for a token, or None where the test mints it."""
    if isinstance(fake, FakeWeChat):
        body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": force}
        return httpx.Request("POST", f"{base_url or fake.BASE_URL}/cgi-bin/stable_token", json=body)
    if isinstance(fake, FakeWhatsAppOnPrem):
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
        return httpx.Request("POST", f"{base_url or fake.BASE_URL}/v1/users/login", headers=headers, json={})
    return None


def must(request: httpx.Request | None) -> httpx.Request:
    assert request is not None
    return request


def token_from(fake: FakePlatform, response: httpx.Response) -> str:
    body = response.json()
    value = body["access_token"] if isinstance(fake, FakeWeChat) else body["users"][0]["token"]
    assert isinstance(value, str)
    return value


def get_token(fake: FakePlatform, client: httpx.Client) -> str:
    request = token_request(fake, str(client.base_url).rstrip("/"))
    return fake.issue_token() if request is None else token_from(fake, client.send(request))


async def aget_token(fake: FakePlatform, client: httpx.AsyncClient) -> str:
    request = token_request(fake)
    return fake.issue_token() if request is None else token_from(fake, await client.send(request))


def send_request(fake: FakePlatform, token: str | None, n: int = 1, base_url: str = "") -> httpx.Request:
    """A real-shaped message send for the platform."""
    base = base_url or fake.BASE_URL
    bearer = {} if token is None else {"Authorization": f"Bearer {token}"}
    if isinstance(fake, FakeWeChat):
        params = {} if token is None else {"access_token": token}
        body: dict[str, Any] = {"touser": f"oOPENID{n}", "msgtype": "text", "text": {"content": f"hello {n}"}}
        return httpx.Request("POST", f"{base}/cgi-bin/message/custom/send", params=params, json=body)
    if isinstance(fake, FakeTencentIM):
        params = {"sdkappid": str(fake.sdkappid), "identifier": fake.admin, "random": str(n), "contenttype": "json"}
        if token is not None:
            params["usersig"] = token
        msg = [{"MsgType": "TIMTextElem", "MsgContent": {"Text": f"hello {n}"}}]
        body = {"SyncOtherMachine": 2, "To_Account": "user1", "MsgRandom": n, "MsgBody": msg}
        return httpx.Request("POST", f"{base}/v4/openim/sendmsg", params=params, json=body)
    if isinstance(fake, FakeWhatsAppOnPrem):
        body = {"recipient_type": "individual", "to": "15551234567", "type": "text", "text": {"body": f"hello {n}"}}
        return httpx.Request("POST", f"{base}/v1/messages", headers=bearer, json=body)
    assert isinstance(fake, FakeWhatsAppCloud)
    body = {"messaging_product": "whatsapp", "to": "+1 555 123 4567", "type": "text", "text": {"body": f"hi {n}"}}
    return httpx.Request("POST", f"{base}{fake.messages_path}", headers=bearer, json=body)


def classify(fake: FakePlatform, response: httpx.Response) -> retrypolicy.Classification | None:
    return retrypolicy.load_policy(fake.platform).classify(response)


@pytest.fixture
def mock_client() -> Iterator[Any]:
    clients: list[httpx.Client] = []

    def factory(fake: FakePlatform) -> httpx.Client:
        client = httpx.Client(transport=httpx.MockTransport(fake), base_url=fake.BASE_URL)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def fast_retries() -> Iterator[None]:
    was = retrypolicy.is_testing()
    retrypolicy.set_testing(True)
    yield
    retrypolicy.set_testing(was)


@contextlib.contextmanager
def fake_and_token(platform: str, clock: FakeClock | None = None) -> Iterator[tuple[FakePlatform, httpx.Client, str]]:
    """A fake, a client on it through MockTransport, and a valid token."""
    fake = make(platform, clock)
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=fake.BASE_URL) as client:
        yield fake, client, get_token(fake, client)


# -- every fault on every platform has the category it promises ------------------------------

FAULT_CASES: list[tuple[str, Fault]] = [
    ("busy", Busy()),
    ("rate_limited", RateLimited(1.5)),
    ("token_expired", TokenExpired()),
    ("user_action", UserAction()),
    ("fatal", Fatal()),
    ("gateway", GatewayError()),
]


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize(("kind", "fault"), FAULT_CASES, ids=[k for k, _ in FAULT_CASES])
def test_fault_has_the_intended_category(platform: str, kind: str, fault: Fault) -> None:
    with fake_and_token(platform) as (fake, client, token):
        fake.script(fault)
        response = client.send(send_request(fake, token))
        c = classify(fake, response)
    assert c is not None
    assert fake.sent == []
    assert fake.injected == [fault]
    if kind == "gateway":
        assert response.status_code == 502
        assert response.headers["content-type"] == "text/html"
        assert response.text == "<html><body><h1>502 Bad Gateway</h1></body></html>"
        assert (c.category, c.source, c.code) == (Category.RETRYABLE, "http", None)
        return
    assert c.source == "body"
    assert c.known
    assert c.code == fake.FAULT_CODES[kind]
    expected = {
        "busy": Category.RETRYABLE,
        "rate_limited": Category.RETRYABLE,
        "token_expired": Category.TOKEN_REFRESH,
        "user_action": Category.USER_ACTION,
        "fatal": Category.FATAL,
    }[kind]
    assert c.category is expected
    if kind == "busy":
        assert not c.ambiguous
    if kind == "rate_limited":
        assert response.status_code == (200 if platform == "wechat" else 429)
        assert response.headers["retry-after"] == "1.5"
    if kind == "token_expired":
        assert response.status_code == (401 if platform.startswith("whatsapp") else 200)
        if platform == "whatsapp_cloud":
            assert c.subcode == 463
    if platform == "wechat":
        assert c.request_id is not None  # "rid: ..." in errmsg
        assert re.search(r" rid: [0-9a-f-]+$", c.message)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_fault_codes_in_the_tables(platform: str) -> None:
    """The codes documented in FAULT_CODES are known codes of the platform's table."""
    fake = make(platform)
    policy = retrypolicy.load_policy(fake.platform)
    assert set(fake.FAULT_CODES) == {"busy", "rate_limited", "token_expired", "user_action", "fatal"}
    for kind, code in fake.FAULT_CODES.items():
        rule = policy.rule_for(code)
        assert rule is not None, (kind, code)
        assert rule.code == code
        if kind == "busy":
            assert (rule.category, rule.ambiguous) == (Category.RETRYABLE, False)


@pytest.mark.parametrize("platform", PLATFORMS)
def test_rate_limited_without_retry_after(platform: str) -> None:
    with fake_and_token(platform) as (fake, client, token):
        fake.script(RateLimited())
        response = client.send(send_request(fake, token))
    assert "retry-after" not in response.headers
    c = classify(fake, response)
    assert c is not None and c.code == fake.FAULT_CODES["rate_limited"]


@pytest.mark.parametrize(
    ("platform", "user_code", "fatal_code", "other"),
    [
        ("wechat", 43004, 47001, 9001010),
        ("tencent_im", 60016, 90001, 90994),
        ("whatsapp_onprem", 1013, 1009, 1011),
        ("whatsapp_cloud", 131026, 100, 131016),
    ],
)
def test_fault_code_overrides(platform: str, user_code: int, fatal_code: int, other: int) -> None:
    with fake_and_token(platform) as (fake, client, token):
        fake.script(UserAction(user_code), Fatal(fatal_code), ErrorCode(other, status=503, message="custom text"))
        results = [classify(fake, client.send(send_request(fake, token, n))) for n in range(3)]
    assert [(c.code, c.category) for c in results if c is not None] == [
        (user_code, Category.USER_ACTION),
        (fatal_code, Category.FATAL),
        (other, Category.RETRYABLE),
    ]
    assert results[2] is not None and results[2].status_code == 503 and "custom text" in results[2].message


def test_error_code_with_cloud_subcode() -> None:
    with fake_and_token("whatsapp_cloud") as (fake, client, token):
        fake.script(ErrorCode(190, status=401, subcode=460))
        c = classify(fake, client.send(send_request(fake, token)))
    assert c is not None and (c.code, c.subcode, c.category) == (190, 460, Category.USER_ACTION)


# -- wire shapes of success -------------------------------------------------------------------


def test_wechat_success_shapes(mock_client: Any) -> None:
    fake = FakeWeChat(appid=APPID, secret=SECRET)
    client = mock_client(fake)
    token = get_token(fake, client)
    assert client.send(send_request(fake, token)).json() == {"errcode": 0, "errmsg": "ok"}
    template = {"touser": "o1", "template_id": "TPL", "data": {"k": {"value": "v"}}}
    body = client.post("/cgi-bin/message/template/send", params={"access_token": token}, json=template).json()
    assert body["errcode"] == 0 and body["errmsg"] == "ok" and isinstance(body["msgid"], int)
    assert [p["touser"] for p in fake.sent] == ["oOPENID1", "o1"]
    assert fake.sent[1] == template


def test_wechat_serves_json_as_text_plain_sometimes(mock_client: Any) -> None:
    fake = FakeWeChat(appid=APPID, secret=SECRET, plain_text_every=2)
    client = mock_client(fake)
    token = get_token(fake, client)
    types = {client.send(send_request(fake, token, n)).headers["content-type"] for n in range(4)}
    assert types == {"text/plain", "application/json; encoding=utf-8"}
    fake.script(Busy(), Busy())
    busy = [client.send(send_request(fake, token)) for _ in range(2)]
    assert {r.headers["content-type"] for r in busy} == types
    assert all(classify(fake, r) is not None for r in busy)  # the policy reads text/plain bodies too
    plain = FakeWeChat(plain_text_every=0)
    assert {plain(send_request(plain, None, n)).headers["content-type"] for n in range(3)} == {
        "application/json; encoding=utf-8"
    }


def test_tencent_success_shape(mock_client: Any) -> None:
    fake = FakeTencentIM()
    client = mock_client(fake)
    body = client.send(send_request(fake, fake.issue_token(), 7)).json()
    assert set(body) == {"ActionStatus", "ErrorCode", "ErrorInfo", "MsgTime", "MsgKey"}
    assert (body["ActionStatus"], body["ErrorCode"], body["ErrorInfo"]) == ("OK", 0, "")
    assert isinstance(body["MsgTime"], int) and isinstance(body["MsgKey"], str)
    assert fake.sent[0]["MsgRandom"] == 7


def test_onprem_success_shapes(mock_client: Any) -> None:
    fake = FakeWhatsAppOnPrem(username=USER, password=PASSWORD, version="2.51.2")
    client = mock_client(fake)
    login = client.post("/v1/users/login", auth=(USER, PASSWORD))
    assert login.status_code == 200
    user = login.json()["users"][0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00", user["expires_after"])
    assert login.json()["meta"] == {"api_status": "stable", "version": "2.51.2"}
    response = client.send(send_request(fake, user["token"]))
    assert response.status_code == 201
    body = response.json()
    assert body["meta"] == {"api_status": "stable", "version": "2.51.2"}
    assert body["messages"][0]["id"].startswith("gBEG")


def test_cloud_success_and_error_shapes(mock_client: Any) -> None:
    fake = FakeWhatsAppCloud(phone_number_id="1065")
    client = mock_client(fake)
    token = fake.issue_token()
    body = client.send(send_request(fake, token)).json()
    assert body["messaging_product"] == "whatsapp"
    assert body["contacts"] == [{"input": "+1 555 123 4567", "wa_id": "15551234567"}]
    assert body["messages"][0]["id"].startswith("wamid.")
    fake.script(Fatal())
    error = client.send(send_request(fake, token)).json()["error"]
    assert set(error) == {"message", "type", "code", "is_transient", "error_data", "fbtrace_id"}
    assert error["type"] == "OAuthException" and error["code"] == 131009 and error["is_transient"] is False
    assert error["error_data"]["messaging_product"] == "whatsapp" and error["fbtrace_id"].startswith("A")
    for version in ("v17.0", "v21.0", "v22"):
        path = f"/{version}/1065/messages"
        assert client.post(path, headers={"Authorization": f"Bearer {token}"}, json=fake.sent[0]).status_code == 200


# -- tokens ------------------------------------------------------------------------------------


def test_wechat_stable_token_normal_and_forced(mock_client: Any) -> None:
    clock = FakeClock(1000.0)
    fake = FakeWeChat(appid=APPID, secret=SECRET, clock=clock)
    client = mock_client(fake)
    first = client.send(must(token_request(fake))).json()
    assert first["expires_in"] == 7200
    clock.advance(100)
    again = client.send(must(token_request(fake))).json()
    assert again == {"access_token": first["access_token"], "expires_in": 7100}  # normal mode: same token
    forced = client.send(must(token_request(fake, force=True))).json()
    assert forced["access_token"] != first["access_token"] and forced["expires_in"] == 7200
    old = client.send(send_request(fake, first["access_token"])).json()
    assert old["errcode"] == 40001
    assert re.fullmatch(r"invalid credential, access_token is invalid or not latest rid: [0-9a-f-]+", old["errmsg"])
    assert client.send(send_request(fake, forced["access_token"])).json()["errcode"] == 0
    assert fake.token_requests == 3


def test_wechat_classic_token_endpoint_invalidates_the_old_token(mock_client: Any) -> None:
    fake = FakeWeChat(appid=APPID, secret=SECRET)
    client = mock_client(fake)
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    a = client.get("/cgi-bin/token", params=params).json()
    b = client.get("/cgi-bin/token", params=params).json()
    assert a["access_token"] != b["access_token"] and b["expires_in"] == 7200
    assert client.send(send_request(fake, a["access_token"])).json()["errcode"] == 40001
    assert client.send(send_request(fake, b["access_token"])).json()["errcode"] == 0
    minted = fake.issue_token()  # issue_token too makes the previous token stale
    assert client.send(send_request(fake, b["access_token"])).json()["errcode"] == 40001
    assert client.send(send_request(fake, minted)).json()["errcode"] == 0


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"grant_type": "client_credential", "appid": "wx-wrong", "secret": SECRET}, 40013),
        ({"grant_type": "client_credential", "appid": APPID, "secret": "wrong"}, 40125),
        ({"grant_type": "password", "appid": APPID, "secret": SECRET}, 40002),
    ],
)
def test_wechat_token_errors(mock_client: Any, params: dict[str, str], errcode: int) -> None:
    fake = FakeWeChat(appid=APPID, secret=SECRET)
    client = mock_client(fake)
    assert client.get("/cgi-bin/token", params=params).json()["errcode"] == errcode
    assert client.post("/cgi-bin/stable_token", json=params).json()["errcode"] == errcode
    assert client.post("/cgi-bin/stable_token", content=b"not json").json()["errcode"] == 47001
    assert fake.token_requests == 3


def test_wechat_api_token_errors(mock_client: Any) -> None:
    clock = FakeClock()
    fake = FakeWeChat(appid=APPID, secret=SECRET, clock=clock)
    client = mock_client(fake)
    assert client.send(send_request(fake, None)).json()["errcode"] == 41001
    assert client.send(send_request(fake, "made-up-token")).json()["errcode"] == 40001
    token = get_token(fake, client)
    clock.advance(7199)
    assert client.send(send_request(fake, token)).json()["errcode"] == 0
    clock.advance(1)
    expired = client.send(send_request(fake, token)).json()
    assert expired["errcode"] == 42001 and " rid: " in expired["errmsg"]
    fresh = get_token(fake, client)  # normal mode issues a new token once the old one expired
    assert fresh != token
    assert client.send(send_request(fake, fresh)).json()["errcode"] == 0


@pytest.mark.parametrize(
    ("body", "errcode"),
    [(b"", 44002), (b"{not json", 47001), (b'{"msgtype": "text"}', 40003), (b'{"touser": "o1"}', 47001)],
)
def test_wechat_body_checks(mock_client: Any, body: bytes, errcode: int) -> None:
    fake = FakeWeChat()
    client = mock_client(fake)
    token = fake.issue_token()
    r = client.post("/cgi-bin/message/custom/send", params={"access_token": token}, content=body)
    assert r.json()["errcode"] == errcode
    r = client.post("/cgi-bin/message/template/send", params={"access_token": token}, json={"touser": "o1"})
    assert r.json()["errcode"] == 40037
    assert fake.sent == []


@pytest.mark.parametrize("platform", PLATFORMS)
def test_expire_tokens_gives_the_token_expired_code(platform: str) -> None:
    with fake_and_token(platform) as (fake, client, token):
        assert classify(fake, client.send(send_request(fake, token))) is None
        fake.expire_tokens()
        c = classify(fake, client.send(send_request(fake, token)))
        assert c is not None and c.category is Category.TOKEN_REFRESH
        assert c.code == fake.FAULT_CODES["token_expired"]
        fresh = get_token(fake, client)
        assert fresh != token
        assert classify(fake, client.send(send_request(fake, fresh))) is None
    assert len(fake.sent) == 2


@pytest.mark.parametrize("platform", PLATFORMS)
def test_tokens_expire_on_the_fake_clock(platform: str) -> None:
    clock = FakeClock()
    with fake_and_token(platform, clock) as (fake, client, token):
        short = fake.issue_token(expires_in=60) if platform in ("tencent_im", "whatsapp_cloud") else token
        lifetime = 60.0 if short != token else fake._lifetime
        clock.advance(lifetime - 1)
        assert classify(fake, client.send(send_request(fake, short))) is None
        clock.advance(1)
        c = classify(fake, client.send(send_request(fake, short)))
    assert c is not None and c.category is Category.TOKEN_REFRESH and c.code == fake.FAULT_CODES["token_expired"]


def test_tencent_usersig_rules(mock_client: Any) -> None:
    refused: set[str] = {"forged-sig"}
    seen: list[tuple[str, str]] = []

    def validator(identifier: str, usersig: str) -> bool:
        seen.append((identifier, usersig))
        return usersig not in refused

    fake = FakeTencentIM(sdkappid=1400000001, admin="root", usersig_validator=validator)
    client = mock_client(fake)

    def code(usersig: str | None, **changes: str) -> int:
        request = send_request(fake, usersig)
        url = request.url.copy_merge_params(changes)
        response = client.post(url, content=request.content)
        value = response.json()["ErrorCode"]
        assert isinstance(value, int)
        return value

    assert code(None) == 70002
    assert code("forged-sig") == 70003
    assert code("my-own-sig") == 0  # any usersig the validator accepts
    assert seen == [("root", "forged-sig"), ("root", "my-own-sig")]
    assert code("my-own-sig", sdkappid="1400000999") == 60006
    assert code("my-own-sig", identifier="someone") == 90009
    fake.expire_tokens()  # expires the usersigs seen so far
    assert code("my-own-sig") == 70001
    assert code("another-sig") == 0
    assert classify(fake, client.post(send_request(fake, "x").url, content=b"{}")) is not None
    fail = client.post(send_request(fake, "x").url, content=b"{}").json()
    assert fail == {"ActionStatus": "FAIL", "ErrorInfo": fail["ErrorInfo"], "ErrorCode": 90003}


@pytest.mark.parametrize(
    ("body", "error_code"),
    [
        (b"nope", 90001),
        (b'{"MsgRandom": 1, "MsgBody": [{}]}', 90003),
        (b'{"To_Account": "u", "MsgBody": [{}]}', 90005),
        (b'{"To_Account": "u", "MsgRandom": 1, "MsgBody": {}}', 90007),
    ],
)
def test_tencent_body_checks(mock_client: Any, body: bytes, error_code: int) -> None:
    fake = FakeTencentIM()
    client = mock_client(fake)
    response = client.post(send_request(fake, fake.issue_token()).url, content=body)
    assert response.json()["ErrorCode"] == error_code
    c = classify(fake, response)
    assert c is not None and c.category is Category.FATAL


def test_onprem_auth_errors(mock_client: Any) -> None:
    fake = FakeWhatsAppOnPrem(username=USER, password=PASSWORD)
    client = mock_client(fake)
    for auth in [(USER, "wrong"), ("other", PASSWORD)]:
        r = client.post("/v1/users/login", auth=auth)
        assert r.status_code == 401
        assert r.json()["errors"] == [{"code": 1005, "title": "Access denied", "details": "Invalid credentials."}]
    assert client.post("/v1/users/login").status_code == 401
    assert client.post("/v1/users/login", headers={"Authorization": "Basic %%%"}).status_code == 401
    for token in (None, "not-issued"):
        r = client.send(send_request(fake, token))
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == 1005
    token = get_token(fake, client)
    r = client.post("/v1/messages", headers={"Authorization": f"Bearer {token}"}, json={"type": "text"})
    assert (r.status_code, r.json()["errors"][0]["code"]) == (400, 1008)
    r = client.post("/v1/messages", headers={"Authorization": f"Bearer {token}"}, content=b"<xml/>")
    assert (r.status_code, r.json()["errors"][0]["code"]) == (400, 1009)
    assert fake.token_requests == 5 and fake.sent == []


def test_cloud_token_and_request_errors(mock_client: Any) -> None:
    fake = FakeWhatsAppCloud(phone_number_id="1065")
    client = mock_client(fake)
    unknown = client.send(send_request(fake, "EAAGforged"))
    assert unknown.status_code == 401
    c = classify(fake, unknown)
    assert c is not None and (c.code, c.subcode, c.category) == (190, None, Category.TOKEN_REFRESH)
    token = fake.issue_token()
    auth = {"Authorization": f"Bearer {token}"}
    wrong_id = client.post("/v21.0/999/messages", headers=auth, json={"messaging_product": "whatsapp", "to": "1"})
    assert wrong_id.status_code == 400
    assert (wrong_id.json()["error"]["code"], wrong_id.json()["error"]["error_subcode"]) == (100, 33)
    no_product = client.post(fake.messages_path, headers=auth, json={"to": "1"})
    assert no_product.json()["error"]["code"] == 100
    no_to = client.post(fake.messages_path, headers=auth, json={"messaging_product": "whatsapp"})
    assert no_to.json()["error"]["code"] == 131008
    assert fake.sent == [] and fake.token_requests == 0


# -- scripting, rates, counters ----------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_script_applies_in_order_to_api_requests_only(platform: str) -> None:
    fake = make(platform)
    fake.script(Busy(), Fatal(), RateLimited())
    with httpx.Client(transport=httpx.MockTransport(fake), base_url=fake.BASE_URL) as client:
        token = get_token(fake, client)  # a token endpoint request does not take a fault
        codes = []
        for n in range(5):
            c = classify(fake, client.send(send_request(fake, token, n)))
            codes.append(None if c is None else c.code)
    expected = [fake.FAULT_CODES["busy"], fake.FAULT_CODES["fatal"], fake.FAULT_CODES["rate_limited"], None, None]
    assert codes == expected
    assert fake.injected == [Busy(), Fatal(), RateLimited()]
    assert len(fake.sent) == 2
    assert fake.requests == 5 + (platform in ("wechat", "whatsapp_onprem"))


def test_clear_faults_and_unknown_paths(mock_client: Any) -> None:
    fake = FakeWhatsAppCloud()
    client = mock_client(fake)
    token = fake.issue_token()
    fake.script(Busy(), Busy())
    fake.fault_rate(1.0)
    fake.clear_faults()
    assert client.send(send_request(fake, token)).status_code == 200
    assert client.get("/v21.0/me").status_code == 404
    assert client.get(fake.messages_path).status_code == 404  # wrong method
    assert fake.requests == 3 and fake.injected == []


def run_rate(seed: int, rate: float = 0.3, n: int = 200) -> list[Fault]:
    fake = FakeWhatsAppOnPrem()
    token = fake.issue_token()
    fake.fault_rate(rate, faults=[Busy(), RateLimited(2), GatewayError(503)], seed=seed)
    for i in range(n):
        fake(send_request(fake, token, i))
    assert len(fake.sent) == n - len(fake.injected)
    return fake.injected


def test_fault_rate_is_deterministic_with_a_seed() -> None:
    a, b, c = run_rate(7), run_rate(7), run_rate(8)
    assert a == b
    assert a != c
    assert 40 <= len(a) <= 80  # about 30 % of 200
    assert {type(f) for f in a} == {Busy, RateLimited, GatewayError}
    assert run_rate(7, rate=0.0) == []
    assert len(run_rate(7, rate=1.0, n=20)) == 20


def test_script_takes_precedence_over_the_rate(mock_client: Any) -> None:
    fake = FakeWeChat()
    client = mock_client(fake)
    token = fake.issue_token()
    fake.fault_rate(1.0, faults=[Busy()], seed=1)
    fake.script(Fatal())
    codes = [client.send(send_request(fake, token, n)).json()["errcode"] for n in range(3)]
    assert codes == [40003, -1, -1]


def test_fault_validation() -> None:
    fake = FakeWeChat()
    with pytest.raises(ValueError, match="rate"):
        fake.fault_rate(1.5)
    with pytest.raises(ValueError, match="empty"):
        fake.fault_rate(0.5, faults=[])
    with pytest.raises(TypeError, match="not a fault"):
        fake.script("busy")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a fault"):
        fake.fault_rate(0.5, faults=[Busy, Fatal()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="retry_after"):
        RateLimited(-1)
    with pytest.raises(ValueError, match="status"):
        GatewayError(200)
    with pytest.raises(ValueError, match="seconds"):
        Slow(float("inf"))
    with pytest.raises(ValueError, match="status"):
        ErrorCode(1, status=42)
    with pytest.raises(ValueError, match="lifetime"):
        fake.issue_token(expires_in=0)
    with pytest.raises(ValueError, match="lifetime"):
        FakeWhatsAppCloud(token_lifetime=float("inf"))
    with pytest.raises(TypeError, match="clock"):
        FakeTencentIM(clock=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="forward"):
        FakeClock().advance(-1)
    assert Busy() == Busy() and hash(RateLimited(1)) == hash(RateLimited(1))


@pytest.mark.parametrize("platform", PLATFORMS)
def test_thread_safety(platform: str) -> None:
    fake = make(platform)
    fake.fault_rate(0.25, faults=[Busy(), Dropped()], seed=42)
    token = fake.issue_token(expires_in=3600)
    errors: list[BaseException] = []
    dropped = [0] * 16
    barrier = threading.Barrier(16)

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for n in range(20):
                try:
                    fake(send_request(fake, token, index * 100 + n))
                except httpx.ReadTimeout:
                    dropped[index] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fake.requests == 320
    injected = fake.injected
    busy = sum(isinstance(f, Busy) for f in injected)
    assert sum(dropped) == sum(isinstance(f, Dropped) for f in injected)
    assert len(fake.sent) == 320 - busy  # a dropped message was still processed
    assert len({json.dumps(p, sort_keys=True) for p in fake.sent}) == len(fake.sent)  # each accepted once
    # the same seed gives the same number of faults however the threads interleave
    serial = make(platform)
    serial.fault_rate(0.25, faults=[Busy(), Dropped()], seed=42)
    serial_token = serial.issue_token()
    for n in range(320):
        with contextlib.suppress(httpx.ReadTimeout):
            serial(send_request(serial, serial_token, n))
    assert serial.injected == injected


def test_counters(mock_client: Any) -> None:
    fake = FakeWhatsAppOnPrem(username=USER, password=PASSWORD)
    client = mock_client(fake)
    token = get_token(fake, client)
    get_token(fake, client)
    fake.script(Busy())
    for n in range(3):
        client.send(send_request(fake, token, n))
    assert (fake.requests, fake.token_requests, len(fake.sent)) == (5, 2, 2)
    sent = fake.sent
    sent.clear()  # a copy
    assert len(fake.sent) == 2


# -- Slow and Dropped --------------------------------------------------------------------------


def test_slow_answers_normally_and_does_not_block_others(mock_client: Any) -> None:
    fake = FakeTencentIM()
    client = mock_client(fake)
    token = fake.issue_token()
    fake.script(Slow(0.3))
    result: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: result.append(fake(send_request(fake, token, 1))))
    started = time.monotonic()
    thread.start()
    time.sleep(0.05)
    assert client.send(send_request(fake, token, 2)).json()["ErrorCode"] == 0
    fast = time.monotonic() - started
    thread.join()
    assert fast < 0.25  # the slow request does not hold the lock while it sleeps
    assert time.monotonic() - started >= 0.3
    assert result[0].json()["ErrorCode"] == 0
    assert [p["MsgRandom"] for p in fake.sent] == [2, 1]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_dropped_records_the_message_then_times_out(platform: str) -> None:
    with fake_and_token(platform) as (fake, client, token):
        fake.script(Dropped())
        with pytest.raises(httpx.ReadTimeout, match="Dropped"):
            client.send(send_request(fake, token))
    assert len(fake.sent) == 1


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("platform", PLATFORMS)
def test_retry_transport_does_not_resend_a_dropped_post(platform: str) -> None:
    fake = make(platform)
    fake.script(Dropped())
    transport = retrypolicy.RetryTransport(
        policy=fake.platform, token=fake.token_hook(), transport=httpx.MockTransport(fake)
    )
    with httpx.Client(transport=transport) as client, pytest.raises(retrypolicy.ResendUnsafe):
        client.send(send_request(fake, None))
    assert len(fake.sent) == 1  # processed once, never duplicated


@pytest.mark.usefixtures("fast_retries")
@pytest.mark.parametrize("platform", PLATFORMS)
def test_retry_transport_recovers_from_busy_rate_gateway_and_expiry(platform: str) -> None:
    fake = make(platform)
    fake.script(Busy(), RateLimited(0.01), GatewayError(503), TokenExpired())
    transport = retrypolicy.RetryTransport(
        policy=fake.platform,
        token=fake.token_hook(),
        transport=httpx.MockTransport(fake),
        # WeChat's 45011 asks for 60 s (scaled away by set_testing, but counted against the deadline)
        retry=retrypolicy.RetrySettings(max_attempts=5, deadline=600),
    )
    with httpx.Client(transport=transport) as client:
        response = client.send(send_request(fake, None))
    assert classify(fake, response) is None
    assert len(fake.sent) == 1
    assert fake.token_requests == 2  # first token, then one renewal
    assert len(fake.injected) == 4


@pytest.mark.usefixtures("fast_retries")
def test_docstring_fixture_example() -> None:
    wechat = FakeWeChat(appid="wx1", secret="s3cret")
    wechat.script(Busy(), TokenExpired())
    transport = retrypolicy.RetryTransport(
        policy="wechat", token=wechat.token_hook(), transport=httpx.MockTransport(wechat)
    )
    with httpx.Client(transport=transport, base_url=FakeWeChat.BASE_URL) as client:
        r = client.post("/cgi-bin/message/custom/send", json={"touser": "OPENID", "msgtype": "text"})
    assert r.json()["errcode"] == 0
    assert len(wechat.sent) == 1
    assert wechat.token_requests == 2


# -- async -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("platform", PLATFORMS)
async def test_async_client_with_mock_transport(platform: str) -> None:
    fake = make(platform)
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake), base_url=fake.BASE_URL) as client:
        token = await aget_token(fake, client)
        fake.script(Busy(), Dropped())
        busy = await client.send(send_request(fake, token, 1))
        with pytest.raises(httpx.ReadTimeout):
            await client.send(send_request(fake, token, 2))
        ok = await client.send(send_request(fake, token, 3))
    c = classify(fake, busy)
    assert c is not None and c.code == fake.FAULT_CODES["busy"]
    assert classify(fake, ok) is None
    assert len(fake.sent) == 2


@pytest.mark.anyio
@pytest.mark.usefixtures("fast_retries")
async def test_async_retry_transport() -> None:
    fake = FakeWhatsAppCloud()
    fake.script(RateLimited(), TokenExpired())
    transport = retrypolicy.AsyncRetryTransport(
        policy="whatsapp_cloud", token=fake.token_hook(), transport=httpx.MockTransport(fake)
    )
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.send(send_request(fake, None))
    assert response.status_code == 200
    assert len(fake.sent) == 1 and fake.token_requests == 2


# -- real HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_serve_over_real_http(platform: str) -> None:
    fake = make(platform)
    with fake.serve() as base_url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base_url)
        with httpx.Client(base_url=base_url, timeout=5) as client:
            token = get_token(fake, client)
            ok = client.send(send_request(fake, token, 1, base_url))
            assert ok.is_success and classify(fake, ok) is None
            fake.script(RateLimited(3), GatewayError(), Dropped())
            limited = client.send(send_request(fake, token, 2, base_url))
            c = classify(fake, limited)
            assert c is not None and c.code == fake.FAULT_CODES["rate_limited"]
            assert limited.headers["retry-after"] == "3"
            gateway = client.send(send_request(fake, token, 3, base_url))
            assert gateway.status_code == 502 and gateway.headers["content-type"] == "text/html"
            with pytest.raises(httpx.RemoteProtocolError):
                client.send(send_request(fake, token, 4, base_url))
            fake.expire_tokens()
            expired = classify(fake, client.send(send_request(fake, token, 5, base_url)))
            assert expired is not None and expired.category is Category.TOKEN_REFRESH
    assert len(fake.sent) == 2  # the first message and the dropped one
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{base_url}/anything", timeout=1)


def test_serve_slow_triggers_a_real_client_timeout() -> None:
    fake = FakeWhatsAppCloud()
    token = fake.issue_token()
    fake.script(Slow(0.5))
    with fake.serve() as base_url, httpx.Client(timeout=0.1) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.send(send_request(fake, token, 1, base_url))
        assert client.get(f"{base_url}/nowhere").status_code == 404


# -- reprs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_repr_shows_no_secret(platform: str) -> None:
    with fake_and_token(platform) as (fake, client, token):
        client.send(send_request(fake, token))
    minted = fake.issue_token()
    text = repr(fake) + str(fake)
    for secret in (SECRET, PASSWORD, token, minted):
        assert secret not in text
    assert text.startswith(f"<{type(fake).__name__} requests=")
    hooked = fake.token_hook()()
    assert hooked.value not in repr(hooked) + repr(fake)
