"""WeCom, Feishu/Lark and DingTalk (old and new API) end to end (issue 16): their fakes speak the
real wire shapes, their built-in token hooks get tokens from the fakes, and each platform shows,
sync and async, a retry, a single-flight renewal (32 threads, 200 tasks: one token endpoint call),
a user-action raise and a cooldown, over MockTransport and over the fake served on 127.0.0.1; a
real Redis shares the token between two transports."""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import redis
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy import Category, ConfigurationError, load_policy
from retrypolicy._store import store_key
from retrypolicy.cli import main as cli_main
from retrypolicy.hooks import DingTalkTokenHook, FeishuTenantToken, HookError, WeComTokenHook
from retrypolicy.testing import (
    Busy,
    Dropped,
    ErrorCode,
    FakeClock,
    FakeDingTalk,
    FakeFeishu,
    FakePlatform,
    FakeWeCom,
    Fatal,
    Fault,
    GatewayError,
    RateLimited,
    TokenExpired,
    UserAction,
    redis_server,
)

BOUND = 60.0  # seconds before a concurrent run counts as deadlocked
CORPID, CORPSECRET, AGENTID = "ww1234567890abcdef", "Kx9vQ2mZ7rT4pL8wN3bY6cH1dF5gJ0sAqE", 1000002
APP_ID, APP_SECRET = "cli_a1b2c3d4e5f60718", "Zq8Wm3Xn5Rb7Tc2Vd4Yf6Hg9Jk1Lp0Ms"
OTHER_SECRET = "Vb6Cn1Mx4Zl9Kj2Hg7Fd3Sa8Qw5Er0TyUi"
APPKEY, APPSECRET = "dingabcdefghijklmn01", "Pt4Nw8Qz2Kx6Mv0Bc3Hj7Lr5Fy9Gd1SeUa"


@pytest.fixture(autouse=True)
def _testing() -> Iterator[None]:
    with retrypolicy.set_testing(True):
        yield


# -- the platforms as cases ----------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """How to send one message to one platform's fake, with its built-in token hook."""

    name: str  # the policy
    make: Callable[[], FakePlatform]
    hook: Callable[..., Any]  # (fake, **hook kwargs) -> the built-in hook
    path: str
    body: Callable[[int | str], dict[str, Any]]
    codes: Callable[[], Mapping[str, int | str]]
    subcodes: Mapping[str, int] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    statuses: Mapping[str, int] = field(default_factory=dict)  # the HTTP status of each fault's answer

    def fake(self) -> FakePlatform:
        return self.make()


def _mocked(fake: FakePlatform, kwargs: dict[str, Any]) -> dict[str, Any]:
    if "base_url" not in kwargs:
        kwargs = {"transport": httpx.MockTransport(fake), "async_transport": httpx.MockTransport(fake), **kwargs}
    return kwargs


def wecom_hook(fake: FakePlatform, **kw: Any) -> WeComTokenHook:
    return WeComTokenHook(CORPID, CORPSECRET, agentid=AGENTID, **_mocked(fake, kw))


def feishu_hook(fake: FakePlatform, **kw: Any) -> FeishuTenantToken:
    return FeishuTenantToken(APP_ID, APP_SECRET, **_mocked(fake, kw))


def dingtalk_hook(fake: FakePlatform, **kw: Any) -> DingTalkTokenHook:
    return DingTalkTokenHook(APPKEY, APPSECRET, legacy=True, **_mocked(fake, kw))


def dingtalk_v1_hook(fake: FakePlatform, **kw: Any) -> DingTalkTokenHook:
    return DingTalkTokenHook(APPKEY, APPSECRET, **_mocked(fake, kw))


WECOM = Case(
    "wecom",
    lambda: FakeWeCom(CORPID, CORPSECRET, AGENTID),
    wecom_hook,
    "/cgi-bin/message/send",
    lambda i: {"touser": f"user{i}", "msgtype": "text", "agentid": AGENTID, "text": {"content": f"m{i}"}},
    lambda: FakeWeCom.FAULT_CODES,
    statuses={"busy": 200, "rate_limited": 200, "user_action": 200, "fatal": 200, "token_expired": 200},
)
FEISHU = Case(
    "feishu",
    lambda: FakeFeishu(APP_ID, APP_SECRET),
    feishu_hook,
    "/open-apis/im/v1/messages",
    lambda i: {"receive_id": f"ou_{i}", "msg_type": "text", "content": f'{{"text":"m{i}"}}'},
    lambda: FakeFeishu.FAULT_CODES,
    params={"receive_id_type": "open_id"},
    statuses={"busy": 500, "rate_limited": 429, "user_action": 400, "fatal": 400, "token_expired": 400},
)
DINGTALK = Case(
    "dingtalk",
    lambda: FakeDingTalk(APPKEY, APPSECRET),
    dingtalk_hook,
    "/topapi/message/corpconversation/asyncsend_v2",
    lambda i: {"agent_id": 3000000001, "userid_list": f"user{i}", "msg": {"msgtype": "text", "text": {"content": "m"}}},
    lambda: FakeDingTalk.FAULT_CODES,
    subcodes={"token_expired": 40014, "user_action": 60011},
    statuses={"busy": 200, "rate_limited": 200, "user_action": 200, "fatal": 200, "token_expired": 200},
)
DINGTALK_V1 = Case(
    "dingtalk_v1",
    lambda: FakeDingTalk(APPKEY, APPSECRET, robot_code="dingrobot"),
    dingtalk_v1_hook,
    "/v1.0/robot/oToMessages/batchSend",
    lambda i: {"robotCode": "dingrobot", "userIds": [f"user{i}"], "msgKey": "sampleText", "msgParam": '{"c":"m"}'},
    lambda: FakeDingTalk.FAULT_CODES_V1,
    statuses={"busy": 503, "rate_limited": 403, "user_action": 403, "fatal": 400, "token_expired": 400},
)
CASES = [WECOM, FEISHU, DINGTALK, DINGTALK_V1]
IDS = [c.name for c in CASES]

KIND_CATEGORY = {
    "busy": Category.RETRYABLE,
    "rate_limited": Category.RETRYABLE,
    "token_expired": Category.TOKEN_REFRESH,
    "user_action": Category.USER_ACTION,
    "fatal": Category.FATAL,
}
FAULTS: dict[str, Fault] = {
    "busy": Busy(),
    "rate_limited": RateLimited(1.5),
    "token_expired": TokenExpired(),
    "user_action": UserAction(),
    "fatal": Fatal(),
}


def sync_client(case: Case, transport: httpx.BaseTransport | None, hook: Any, **kw: Any) -> httpx.Client:
    rt = retrypolicy.RetryTransport(case.name, token=hook, transport=transport, **kw)
    return httpx.Client(transport=rt, base_url="https://api.example.invalid", timeout=10)


def async_client(case: Case, transport: httpx.AsyncBaseTransport | None, hook: Any, **kw: Any) -> httpx.AsyncClient:
    rt = retrypolicy.AsyncRetryTransport(case.name, token=hook, transport=transport, **kw)
    return httpx.AsyncClient(transport=rt, base_url="https://api.example.invalid", timeout=10)


def send(mode: str, case: Case, fake: FakePlatform, *messages: int | str, base_url: str = "", **kw: Any) -> list[Any]:
    """Send ``messages`` one after the other through a new client of ``mode`` with the case's
    hook: over MockTransport, or to ``base_url`` (a served fake) over real sockets. Returns each
    outcome: the response or the exception."""
    hook = case.hook(fake, base_url=base_url) if base_url else case.hook(fake)
    return send_with(mode, case, fake, hook, *messages, base_url=base_url, **kw)


def send_with(
    mode: str, case: Case, fake: FakePlatform, hook: Any, *messages: int | str, base_url: str = "", **kw: Any
) -> list[Any]:
    request_kw: dict[str, Any] = kw.pop("request", {})
    url = f"{base_url}{case.path}" if base_url else case.path
    out: list[Any] = []
    if mode == "sync":
        with hook, sync_client(case, None if base_url else httpx.MockTransport(fake), hook, **kw) as client:
            for m in messages:
                try:
                    out.append(client.post(url, params=case.params, json=case.body(m), **request_kw))
                except retrypolicy.RequestFailed as exc:
                    out.append(exc)
        return out

    async def run() -> None:
        async with hook, async_client(case, None if base_url else httpx.MockTransport(fake), hook, **kw) as client:
            for m in messages:
                try:
                    out.append(await client.post(url, params=case.params, json=case.body(m), **request_kw))
                except retrypolicy.RequestFailed as exc:
                    out.append(exc)

    anyio.run(run)
    return out


def ok(response: Any) -> bool:
    return isinstance(response, httpx.Response) and response.status_code == 200


def valid_token(case: Case, fake: FakePlatform) -> str:
    return fake.issue_token()


def direct(case: Case, fake: FakePlatform, token: str | None, n: int | str = 1) -> httpx.Response:
    """One request straight to the fake, the token where the platform wants it."""
    params = dict(case.params)
    headers: dict[str, str] = {}
    if token is not None:
        if case.name in ("wecom", "dingtalk"):
            params["access_token"] = token
        elif case.name == "feishu":
            headers["Authorization"] = f"Bearer {token}"
        else:
            headers["x-acs-dingtalk-access-token"] = token
    request = httpx.Request("POST", f"https://x.invalid{case.path}", params=params, headers=headers, json=case.body(n))
    return fake(request)


# -- the tables and the fakes' wire shapes ------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_policy_loads_and_every_fault_code_has_its_category(case: Case) -> None:
    policy = load_policy(case.name)
    assert policy.platform == case.name and len(policy.rules) > 200
    codes = case.codes()
    assert set(codes) == set(KIND_CATEGORY)
    for kind, code in codes.items():
        c = policy.explain(code, case.subcodes.get(kind))
        if kind == "fatal" and case.name == "dingtalk_v1":  # a parameter error: fatal as an unknown code
            assert c.category is Category.FATAL
            continue
        assert c.known, (kind, code)
        assert c.category is KIND_CATEGORY[kind], (kind, code)
        if kind == "busy":
            assert not c.ambiguous


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("kind", list(FAULTS))
def test_each_fault_is_answered_in_the_platforms_wire_shape(case: Case, kind: str) -> None:
    fake = case.fake()
    token = valid_token(case, fake)
    fake.script(FAULTS[kind])
    response = direct(case, fake, token)
    assert response.status_code == case.statuses[kind]
    assert response.headers["content-type"].startswith("application/json")
    c = load_policy(case.name).classify(response)
    assert c is not None and c.source == "body"
    assert c.code == case.codes()[kind] and c.subcode == case.subcodes.get(kind)
    assert c.category is KIND_CATEGORY[kind]
    assert c.request_id, "every error answer names its request id"
    if case.name == "wecom":  # the hint in errmsg is the request id; the code is echoed in a header
        assert f"hint: [{c.request_id}]" in c.message and response.headers["error-code"] == str(c.code)
    if case.name == "feishu":
        assert response.headers["x-tt-logid"] == c.request_id
        if kind == "rate_limited":  # Feishu's own wait hint, not Retry-After
            assert response.headers["x-ogw-ratelimit-reset"] == "1.5" and "retry-after" not in response.headers
            assert c.wait_hint == 1.5
    if case.name == "dingtalk_v1":
        assert isinstance(c.code, str) and response.json()["requestid"] == c.request_id
    assert fake.sent == []


def test_wecom_unknown_path_is_a_404_without_a_body_and_one_token_per_app() -> None:
    fake = FakeWeCom(CORPID, CORPSECRET, AGENTID)
    fake.add_app(1000003, "another-app-secret")
    response = fake(httpx.Request("GET", "https://qyapi.weixin.qq.com/cgi-bin/no_such_api"))
    assert (response.status_code, response.content) == (404, b"")
    first, second = fake.token_hook()(), fake.token_hook(1000003)()
    assert first.value != second.value
    assert fake.token_hook()().value == first.value  # asking again within the lifetime: the same token
    body = WECOM.body(1)
    wrong = fake(httpx.Request("POST", f"{FakeWeCom.BASE_URL}{WECOM.path}?access_token={second.value}", json=body))
    assert wrong.json()["errcode"] == 301002  # a token sends only for its own app


def test_wecom_duplicate_check_delivers_a_repeated_message_once() -> None:
    fake = FakeWeCom(CORPID, CORPSECRET, AGENTID)
    token = fake.issue_token()
    body = {**WECOM.body(1), "enable_duplicate_check": 1, "duplicate_check_interval": 600}
    url = f"{FakeWeCom.BASE_URL}{WECOM.path}?access_token={token}"
    answers = [fake(httpx.Request("POST", url, json=body)).json() for _ in range(2)]
    assert answers[0] == answers[1] and answers[0]["errcode"] == 0 and len(fake.sent) == 1


def test_feishu_token_endpoint_keeps_a_token_until_its_last_30_minutes() -> None:
    clock = FakeClock()
    fake = FakeFeishu(APP_ID, APP_SECRET, clock=clock)
    hook = FeishuTenantToken(APP_ID, APP_SECRET, transport=httpx.MockTransport(fake))
    first = hook()
    assert first.value.startswith("t-") and first.expires_in == 7200
    clock.advance(3600)
    again = hook()
    assert (again.value, again.expires_in) == (first.value, 3600)  # the same token, with what it has left
    clock.advance(1900)  # 1700 s left: less than 30 minutes
    renewed = hook()
    assert renewed.value != first.value and renewed.expires_in == 7200
    assert ok(direct(FEISHU, fake, first.value))  # the old token stays valid until it expires
    clock.advance(1700)
    assert direct(FEISHU, fake, first.value).json()["code"] == 99991663
    assert ok(direct(FEISHU, fake, renewed.value))
    assert fake.token_requests == 3


def test_feishu_uuid_sends_one_message_per_hour_and_a_lost_answer_is_resent_safely() -> None:
    fake = FakeFeishu(APP_ID, APP_SECRET)
    fake.script(Dropped())  # processed, then the answer is lost
    body = {**FEISHU.body(1), "uuid": "order-1042"}
    hook = feishu_hook(fake)
    with sync_client(FEISHU, httpx.MockTransport(fake), hook) as client:
        idempotent = {"retrypolicy": {"idempotent": True}}
        response = client.post(FEISHU.path, params=FEISHU.params, json=body, extensions=idempotent)
        with pytest.raises(retrypolicy.ResendUnsafe):  # without the mark, a lost answer is never resent
            fake.script(Dropped())
            client.post(FEISHU.path, params=FEISHU.params, json={**body, "uuid": "order-1043"})
    assert ok(response) and response.json()["code"] == 0
    assert [m["uuid"] for m in fake.sent] == ["order-1042", "order-1043"]  # each delivered once


def test_dingtalk_fake_answers_each_api_in_its_own_shape() -> None:
    fake = FakeDingTalk(APPKEY, APPSECRET, robot_code="dingrobot")
    fake.script(ErrorCode(88, subcode=60011, message="没有调用该接口的权限"), ErrorCode("system.busy", status=429))
    token = fake.issue_token()
    old = direct(DINGTALK, fake, token).json()
    assert old["errcode"] == 88 and old["sub_code"] == "60011" and "subcode=60011" in old["errmsg"]
    new = direct(DINGTALK_V1, fake, token)
    assert new.status_code == 429 and new.json()["code"] == "system.busy" and "requestid" in new.json()
    assert direct(DINGTALK, fake, None).json()["sub_code"] == "40000"  # no token: "access_token is blank"
    missing = direct(DINGTALK_V1, fake, None)
    assert (missing.status_code, missing.json()["code"]) == (400, "AuthenticationFailed.MissingParameter")
    # one app token serves both APIs, and asking again returns it (and extends it)
    legacy = fake.token_hook(legacy=True)()
    assert fake.token_hook()().value == legacy.value
    assert ok(direct(DINGTALK, fake, legacy.value)) and ok(direct(DINGTALK_V1, fake, legacy.value))


# -- retry, user action, cooldown: sync and async --------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_busy_answer_is_retried(case: Case, mode: str) -> None:
    fake = case.fake()
    fake.script(Busy())
    with capture_logs() as logs:
        [response] = send(mode, case, fake, 1)
    assert ok(response) and load_policy(case.name).classify(response) is None
    assert len(fake.sent) == 1 and fake.injected == [Busy()] and fake.token_requests == 1
    [retry] = [e for e in logs if e["event"] == "retrypolicy.retry_scheduled"]
    assert retry["code"] == case.codes()["busy"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_user_action_code_raises_with_its_remediation_and_is_not_resent(case: Case, mode: str) -> None:
    fake = case.fake()
    fake.script(UserAction())
    [failure] = send(mode, case, fake, 1)
    assert isinstance(failure, retrypolicy.UserActionRequired)
    c = failure.classification
    assert (c.code, c.subcode) == (case.codes()["user_action"], case.subcodes.get("user_action"))
    assert c.remediation and c.request_id
    assert fake.requests == 2 and fake.sent == []  # the token, one send: never resent


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_rate_limit_starts_a_cooldown_that_fails_the_next_requests_fast(case: Case, mode: str) -> None:
    fake = case.fake()
    if case.name == "feishu":  # im/v1's per-chat limit: a cooldown for that recipient only
        fake.script(ErrorCode(230020, status=400, message="This operation triggers the frequency limit."))
    else:  # WeCom 45009 (60 s, the app), DingTalk 90018 / QpsLimitForAppkeyAndApi (1 s, the app)
        fake.script(RateLimited())
    once: dict[str, Any] = {"extensions": {"retrypolicy": {"retry": False}}}  # each sent once
    with capture_logs() as logs:
        first, second, other = send(mode, case, fake, 1, 1, 2, request=once)
    assert isinstance(first, retrypolicy.RetriesExhausted)
    assert isinstance(second, retrypolicy.CooldownActive) and second.remaining is not None and second.remaining > 0
    assert second.classification.code == first.classification.code
    [started] = [e for e in logs if e["event"] == "retrypolicy.cooldown_started"]
    if case.name == "feishu":
        assert started["scope"] == "recipient" and ok(other)  # another chat goes on
    else:
        assert started["scope"] == "app" and isinstance(other, retrypolicy.CooldownActive)
    # the token, the first send (and on Feishu the other chat's); the refused ones never left
    assert fake.requests == (3 if case.name == "feishu" else 2)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_feishu_waits_what_x_ogw_ratelimit_reset_asks(mode: str) -> None:
    fake = FEISHU.fake()
    fake.script(RateLimited(retry_after=7))
    with capture_logs() as logs:
        [response] = send(mode, FEISHU, fake, 1)
    assert ok(response)
    [retry] = [e for e in logs if e["event"] == "retrypolicy.retry_scheduled"]
    assert retry["code"] == 99991400 and retry["delay"] >= 7


@pytest.mark.parametrize("status", [400, 200])
def test_feishu_renews_on_99991663_with_either_status(status: int, mode: str) -> None:
    fake = FakeFeishu(APP_ID, APP_SECRET, token_error_status=status)
    fake.script(TokenExpired())
    [response] = send(mode, FEISHU, fake, 1)
    assert ok(response) and fake.token_requests == 2 and len(fake.sent) == 1


# -- single-flight renewal: 32 threads, 200 tasks --------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_32_threads_share_one_renewal(case: Case) -> None:
    fake = case.fake()
    hook = case.hook(fake)
    with hook, sync_client(case, httpx.MockTransport(fake), hook) as client, ThreadPoolExecutor(32) as pool:
        assert ok(client.post(case.path, params=case.params, json=case.body("first")))
        fake.expire_tokens()
        barrier = threading.Barrier(32)

        def post(i: int) -> bool:
            barrier.wait(BOUND)
            return ok(client.post(case.path, params=case.params, json=case.body(i)))

        assert all(pool.map(post, range(32), timeout=BOUND))
    assert fake.token_requests == 2  # the first token, then one renewal for all 32
    assert len(fake.sent) == 33


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_200_tasks_share_one_renewal(case: Case) -> None:
    fake = case.fake()
    results: list[bool] = []

    async def main() -> None:
        hook = case.hook(fake)
        async with hook, async_client(case, httpx.MockTransport(fake), hook) as client:
            results.append(ok(await client.post(case.path, params=case.params, json=case.body("first"))))
            fake.expire_tokens()

            async def post(i: int) -> None:
                results.append(ok(await client.post(case.path, params=case.params, json=case.body(i))))

            with anyio.fail_after(BOUND):
                async with anyio.create_task_group() as tg:
                    for i in range(200):
                        tg.start_soon(post, i)

    anyio.run(main)
    assert results == [True] * 201
    assert fake.token_requests == 2 and len(fake.sent) == 201


# -- over real sockets ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_over_the_served_fake_on_127_0_0_1(case: Case, mode: str) -> None:
    """The hook's token endpoint and the API over real HTTP: a retry, a renewal, a user action."""
    fake = case.fake()
    fake.script(UserAction(), Busy(), TokenExpired(), GatewayError(503))  # in order, to the API requests
    with fake.serve() as base_url:
        refused, delivered = send(mode, case, fake, 1, 2, base_url=base_url)
    assert ok(delivered)
    assert isinstance(refused, retrypolicy.UserActionRequired)
    assert refused.classification.status_code == case.statuses["user_action"]
    assert fake.token_requests == 2 and len(fake.sent) == 1


def test_one_dingtalk_hook_serves_both_apis_by_host() -> None:
    """Two served copies (two host:port keys) as oapi.dingtalk.com and api.dingtalk.com: each
    request gets its table, and its token where that API wants it."""
    fake = FakeDingTalk(APPKEY, APPSECRET, robot_code="dingrobot")
    with fake.serve() as oapi, fake.serve() as api:
        hook = DingTalkTokenHook(APPKEY, APPSECRET, base_url=api)
        policy = {httpx.URL(oapi).netloc.decode(): "dingtalk", httpx.URL(api).netloc.decode(): "dingtalk_v1"}
        transport = retrypolicy.RetryTransport(policy, token={"dingtalk": hook, "dingtalk_v1": hook})
        with hook, httpx.Client(transport=transport, timeout=10) as client:
            fake.script(TokenExpired())
            old = client.post(f"{oapi}{DINGTALK.path}", json=DINGTALK.body(1))
            fake.script(ErrorCode("Forbidden.AccessDenied.AccessTokenPermissionDenied", status=403))
            with pytest.raises(retrypolicy.UserActionRequired) as info:
                client.post(f"{api}{DINGTALK_V1.path}", json=DINGTALK_V1.body(2))
            new = client.post(f"{api}{DINGTALK_V1.path}", json=DINGTALK_V1.body(3))
    assert old.json()["errcode"] == 0 and "processQueryKey" in new.json()
    assert info.value.classification.platform == "dingtalk_v1" and info.value.classification.status_code == 403
    assert len(fake.sent) == 2


# -- a token store: two transports, one renewal ------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("the redis-server binary is not installed (apt-get install redis-server); CI installs it")
    with redis_server() as server:
        yield server.url


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_redis_store_shares_the_token_between_a_sync_and_an_async_transport(case: Case, redis_url: str) -> None:
    fake = case.fake()
    namespace = f"t{uuid.uuid4().hex[:12]}"
    store = retrypolicy.RedisTokenStore.from_url(redis_url, namespace=namespace, sync_interval=0.05)
    hook_a, hook_b = case.hook(fake), case.hook(fake)  # two processes: two hooks with the same app
    a = sync_client(case, httpx.MockTransport(fake), hook_a, token_store=store)
    seen: list[int] = []

    async def main() -> None:
        try:
            async with async_client(case, httpx.MockTransport(fake), hook_b, token_store=store) as b:

                async def post_b(i: int) -> bool:
                    return ok(await b.post(case.path, params=case.params, json=case.body(i)))

                assert ok(a.post(case.path, params=case.params, json=case.body(1)))
                assert await post_b(2)  # B takes A's token from Redis
                seen.append(fake.token_requests)
                fake.expire_tokens()
                assert ok(a.post(case.path, params=case.params, json=case.body(3)))  # A renews...
                assert await post_b(4)  # ...B's stale token is refused; it takes A's new one from Redis
        finally:
            await store.aclose()  # the async connections belong to this event loop

    try:
        anyio.run(main)
    finally:
        a.close()
        store.close()
    assert seen == [1] and fake.token_requests == 2 and len(fake.sent) == 4
    keys = redis.Redis.from_url(redis_url, decode_responses=True).keys(f"{namespace}:*")
    assert f"{namespace}:{{{store_key(case.name, hook_a)}}}:token" in keys
    secret = {"wecom": CORPSECRET, "feishu": APP_SECRET}.get(case.name, APPSECRET)
    assert all(secret not in k and secret[:8] not in k for k in keys)


# -- WeCom: one token per app secret -----------------------------------------------------------------


def test_wecom_store_keys_tell_two_apps_of_one_corp_apart_never_by_the_secret() -> None:
    named = WeComTokenHook(CORPID, CORPSECRET, agentid=AGENTID)
    assert store_key("wecom", named) == f"wecom:{CORPID}:{AGENTID}"
    a, b = WeComTokenHook(CORPID, CORPSECRET), WeComTokenHook(CORPID, OTHER_SECRET)
    key_a, key_b = store_key("wecom", a), store_key("wecom", b)
    assert key_a != key_b and key_a.startswith(f"wecom:{CORPID}:secret-")
    assert store_key("wecom", WeComTokenHook(CORPID, CORPSECRET)) == key_a  # stable for one secret
    for key, secret in ((key_a, CORPSECRET), (key_b, OTHER_SECRET)):
        assert not any(secret[i : i + 6] in key for i in range(len(secret) - 5))
    for hook in (named, a, b):
        assert CORPSECRET not in repr(hook) and OTHER_SECRET not in repr(hook)


@pytest.mark.parametrize("agentids", [(AGENTID, 1000003), (None, None)], ids=["agentid", "fingerprint"])
def test_wecom_two_apps_sharing_a_store_keep_their_own_tokens(agentids: tuple[int | None, int | None]) -> None:
    fake = FakeWeCom(CORPID, CORPSECRET, AGENTID)
    fake.add_app(1000003, OTHER_SECRET)
    store = retrypolicy.MemoryTokenStore()
    mock = httpx.MockTransport(fake)
    hooks = [
        WeComTokenHook(CORPID, CORPSECRET, agentid=agentids[0], transport=mock),
        WeComTokenHook(CORPID, OTHER_SECRET, agentid=agentids[1], transport=mock),
    ]
    answers = []
    for hook, agentid in zip(hooks, (AGENTID, 1000003), strict=True):
        with sync_client(WECOM, mock, hook, token_store=store) as client:
            body = {**WECOM.body(1), "agentid": agentid}
            answers.append(client.post(WECOM.path, json=body).json()["errcode"])
    assert answers == [0, 0]  # with one key for the corp, the second app would send with the first's token
    assert fake.token_requests == 2 and len(fake.sent) == 2


# -- the hooks: token endpoint errors are classified by the platform's table -----------------------------


def mode_call(mode: str, hook: Any) -> Any:
    return hook() if mode == "sync" else anyio.run(hook.acall)


WRONG = "wrong-secret-abcdef"
FAKES: dict[str, Callable[[], FakePlatform]] = {
    "wecom": lambda: FakeWeCom(CORPID, CORPSECRET),
    "feishu": lambda: FakeFeishu(APP_ID, APP_SECRET),
    "dingtalk": lambda: FakeDingTalk(APPKEY, APPSECRET),
    "dingtalk_v1": lambda: FakeDingTalk(APPKEY, APPSECRET),
}
TOKEN_ERRORS: list[tuple[Case, Callable[[httpx.MockTransport], Any], int | str, Category]] = [
    (WECOM, lambda t: WeComTokenHook(CORPID, WRONG, transport=t, async_transport=t), 40001, Category.USER_ACTION),
    (WECOM, lambda t: WeComTokenHook("ww0ther", CORPSECRET, transport=t, async_transport=t), 40013, Category.FATAL),
    (FEISHU, lambda t: FeishuTenantToken(APP_ID, WRONG, transport=t, async_transport=t), 10014, Category.USER_ACTION),
    (
        FEISHU,
        lambda t: FeishuTenantToken("cli_0ther", APP_SECRET, transport=t, async_transport=t),
        10003,
        Category.FATAL,
    ),
    (
        DINGTALK_V1,
        lambda t: DingTalkTokenHook(APPKEY, WRONG, transport=t, async_transport=t),
        "invalidClientIdOrSecret",
        Category.USER_ACTION,
    ),
    (
        DINGTALK,
        lambda t: DingTalkTokenHook(APPKEY, WRONG, legacy=True, transport=t, async_transport=t),
        40089,
        Category.USER_ACTION,
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "code", "category"),
    TOKEN_ERRORS,
    ids=["wecom-secret", "wecom-corpid", "feishu-secret", "feishu-app-id", "dingtalk-v1", "dingtalk-legacy"],
)
def test_token_endpoint_errors_are_classified_and_stop_the_request(
    case: Case, make: Callable[[httpx.MockTransport], Any], code: int | str, category: Category, mode: str
) -> None:
    fake = FAKES[case.name]()
    hook = make(httpx.MockTransport(fake))
    with pytest.raises(HookError) as info:
        mode_call(mode, hook)
    assert info.value.code == code and info.value.category is category
    assert f"code {code} [{category.value}]" in str(info.value)
    text = str(info.value) + repr(info.value) + repr(hook)
    assert WRONG not in text and CORPSECRET not in text and APP_SECRET not in text and APPSECRET not in text
    # through a transport: TokenRefreshFailed with the endpoint's verdict, one endpoint call, no loop
    calls = fake.token_requests
    [failure] = send_with(mode, case, fake, hook, 1)
    assert isinstance(failure, retrypolicy.TokenRefreshFailed)
    assert failure.classification is not None and failure.classification.code == code
    assert fake.token_requests == calls + 1 and fake.sent == []


def test_feishu_hook_uses_the_lark_host_when_asked() -> None:
    hosts: list[str] = []
    fake = FakeFeishu(APP_ID, APP_SECRET)

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        return fake(request)

    for lark, host in ((True, "open.larksuite.com"), (False, "open.feishu.cn")):
        hook = FeishuTenantToken(APP_ID, APP_SECRET, lark=lark, transport=httpx.MockTransport(handler))
        assert hook().value.startswith("t-") and hook.base_url == f"https://{host}" and hosts[-1] == host
    assert (
        FeishuTenantToken(APP_ID, APP_SECRET, base_url="https://feishu.internal").base_url == "https://feishu.internal"
    )


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (
            lambda: WeComTokenHook(CORPID, CORPSECRET, transport=httpx.MockTransport(FakeWeCom(CORPID, CORPSECRET))),
            "corpsecret",
        ),
        (
            lambda: DingTalkTokenHook(
                APPKEY, APPSECRET, legacy=True, transport=httpx.MockTransport(FakeDingTalk(APPKEY, APPSECRET))
            ),
            "appsecret",
        ),
    ],
    ids=["wecom", "dingtalk-legacy"],
)
def test_a_secret_in_the_token_url_is_redacted_in_httpx_logs(
    make: Callable[[], Any], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    hook = make()
    with caplog.at_level(logging.INFO, logger="httpx"):
        assert hook().value
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert lines and all(f"{name}=***" in line for line in lines)
    assert not any(CORPSECRET in line or APPSECRET in line for line in lines)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WeComTokenHook("", CORPSECRET), "corpid"),
        (lambda: WeComTokenHook("ww 1", CORPSECRET), "corpid"),
        (lambda: WeComTokenHook(CORPID, ""), "corpsecret"),
        (lambda: WeComTokenHook(CORPID, CORPSECRET, agentid=True), "agentid"),
        (lambda: WeComTokenHook(CORPID, CORPSECRET, agentid="1000002"), "agentid"),  # type: ignore[arg-type]
        (lambda: FeishuTenantToken(APP_ID, "  "), "app_secret"),
        (lambda: FeishuTenantToken(APP_ID, APP_SECRET, lark="yes"), "lark"),  # type: ignore[arg-type]
        (lambda: FeishuTenantToken(APP_ID, APP_SECRET, base_url="ftp://x"), "base_url"),
        (lambda: DingTalkTokenHook(None, APPSECRET), "appkey"),  # type: ignore[arg-type]
        (lambda: DingTalkTokenHook(APPKEY, APPSECRET, legacy=1), "legacy"),  # type: ignore[arg-type]
        (lambda: DingTalkTokenHook(APPKEY, APPSECRET, timeout=0), "timeout"),
    ],
)
def test_bad_hook_arguments_are_configuration_errors(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        make()
    assert CORPSECRET not in str(info.value) and APPSECRET not in str(info.value)


# -- the CLI knows them --------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["wecom", "feishu", "dingtalk"])
def test_cli_demo_runs_each_new_platform(platform: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo", platform, "--requests", "8"]) == 0
    out = capsys.readouterr().out
    assert f"summary: {platform}" in out and "token renewals (hook calls)" in out


def test_cli_classifies_the_fakes_answers(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeDingTalk(APPKEY, APPSECRET, robot_code="dingrobot")
    fake.script(TokenExpired())
    response = direct(DINGTALK_V1, fake, fake.issue_token())
    assert cli_main(["classify", "dingtalk_v1", "--status", str(response.status_code), response.text]) == 1
    out = capsys.readouterr().out
    assert "code:        InvalidAuthentication" in out and "token-refresh" in out
    assert cli_main(["explain", "wecom", "45009"]) == 0 and "min delay:   60 s" in capsys.readouterr().out
    assert cli_main(["list", "feishu", "--category", "token-refresh"]) == 0
    assert "99991663" in capsys.readouterr().out
