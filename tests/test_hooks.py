"""Built-in token hooks (retrypolicy.hooks) against httpx.MockTransport endpoints, sync and async."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import zlib
from typing import Any

import httpx
import pytest

import retrypolicy
from retrypolicy import Category, ConfigurationError, Token, TokenRefreshFailed
from retrypolicy.hooks import HookError, TencentUserSig, UserSigError, WeChatTokenHook, WhatsAppOnPremLogin

from .support import Recorder

APPID = "wx0123456789abcdef"
APPSECRET = "appsecret-5f2d9c8e7b6a41d0"
WECHAT = "https://api.weixin.qq.com"
SEND_URL = f"{WECHAT}/cgi-bin/message/custom/send"
WA_BASE = "https://wa.example.com:9090"
WA_USER = "admin"
WA_PASSWORD = "wa-password-Zq81!x"
SDKAPPID = 1400000000
IM_KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
NOW = 1_760_000_000.0

Hook = WeChatTokenHook | WhatsAppOnPremLogin | TencentUserSig


async def obtain(mode: str, hook: Hook) -> Token:
    """One hook call, through ``__call__`` (sync) or ``acall`` (async)."""
    if mode == "sync":
        return hook()
    return await hook.acall()


async def failure(mode: str, hook: Hook) -> HookError:
    with pytest.raises(HookError) as info:
        await obtain(mode, hook)
    return info.value


def wechat_hook(rec: Recorder, **kwargs: Any) -> WeChatTokenHook:
    mock = httpx.MockTransport(rec)
    return WeChatTokenHook(APPID, APPSECRET, transport=mock, async_transport=mock, **kwargs)


def token_body(value: str = "ACCESS-TOKEN-1", expires_in: int = 7200) -> httpx.Response:
    return httpx.Response(200, json={"access_token": value, "expires_in": expires_in})


def wechat_error(code: int, errmsg: str) -> httpx.Response:
    return httpx.Response(200, json={"errcode": code, "errmsg": errmsg})


def assert_no_secret(exc: BaseException, hook: object, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in str(exc)
        assert secret not in repr(exc)
        assert secret not in repr(hook)
    assert exc.__cause__ is None and exc.__context__ is None  # nothing chained that could hold one


def refuse_connection(request: httpx.Request) -> httpx.Response:
    # The text includes the URL, which for GET /cgi-bin/token holds the AppSecret.
    raise httpx.ConnectError(f"[Errno 111] Connection refused: {request.url}", request=request)


# -- WeChat ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wechat_stable_token_never_sends_force_refresh(mode: str) -> None:
    rec = Recorder([token_body("ACCESS-TOKEN-1", 7200)])
    async with wechat_hook(rec) as hook:
        token = await obtain(mode, hook)
    assert token == Token("ACCESS-TOKEN-1", expires_in=7200)
    [request] = rec.requests
    assert request.method == "POST"
    assert request.url == httpx.URL(f"{WECHAT}/cgi-bin/stable_token")
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.content)
    assert body == {"grant_type": "client_credential", "appid": APPID, "secret": APPSECRET}
    assert "force_refresh" not in body


@pytest.mark.anyio
async def test_wechat_force_refresh_only_when_asked(mode: str) -> None:
    rec = Recorder([token_body()])
    async with wechat_hook(rec, force_refresh=True) as hook:
        await obtain(mode, hook)
        assert "force_refresh=True" in repr(hook)
    assert json.loads(rec.requests[0].content)["force_refresh"] is True


@pytest.mark.anyio
async def test_wechat_legacy_token_endpoint(mode: str) -> None:
    rec = Recorder([token_body("LEGACY-TOKEN", 7000)])
    async with wechat_hook(rec, stable=False, base_url="https://proxy.example.com/wx/") as hook:
        token = await obtain(mode, hook)
    assert token.value == "LEGACY-TOKEN" and token.expires_in == 7000
    [request] = rec.requests
    assert request.method == "GET"
    assert request.url.path == "/wx/cgi-bin/token"
    assert dict(request.url.params) == {"grant_type": "client_credential", "appid": APPID, "secret": APPSECRET}
    assert request.content == b""


@pytest.mark.anyio
@pytest.mark.parametrize("stable", [True, False])
@pytest.mark.parametrize(
    ("code", "category", "errmsg"),
    [
        (40013, "fatal", "invalid appid rid: 6601-aa"),
        (40125, "fatal", f"invalid appsecret {APPSECRET} rid: 6601-bb"),  # a vendor echo is scrubbed
        (40164, "user-action", "invalid ip 203.0.113.7 ipv6 ::ffff:203.0.113.7, not in whitelist rid: 6601-cc"),
    ],
)
async def test_wechat_token_endpoint_errors_name_code_and_category(
    mode: str, stable: bool, code: int, category: str, errmsg: str
) -> None:
    rec = Recorder([wechat_error(code, errmsg)])
    async with wechat_hook(rec, stable=stable) as hook:
        exc = await failure(mode, hook)
    assert len(rec.requests) == 1
    assert exc.platform == "wechat" and exc.code == code and exc.category == Category(category)
    assert str(exc).startswith(f"wechat code {code} [{category}] from the ")
    assert APPID in str(exc)
    assert "rid: 6601-" in str(exc)
    assert_no_secret(exc, hook, APPSECRET)
    if code == 40164:
        assert "what to do: " in str(exc) and "whitelist" in str(exc)
    assert repr(exc) == f"HookError(platform='wechat', code={code}, category='{category}')"


@pytest.mark.anyio
async def test_wechat_html_502(mode: str) -> None:
    html = httpx.Response(502, headers={"content-type": "text/html"}, text="<html><h1>502 Bad Gateway</h1></html>")
    async with wechat_hook(Recorder([html])) as hook:
        exc = await failure(mode, hook)
    assert exc.code is None and exc.status_code == 502 and exc.category is Category.RETRYABLE
    assert str(exc).startswith("wechat HTTP 502, no error code [retryable] from the stable_token endpoint")
    assert_no_secret(exc, hook, APPSECRET)


@pytest.mark.anyio
@pytest.mark.parametrize("stable", [True, False])
async def test_wechat_connection_error(mode: str, stable: bool) -> None:
    async with wechat_hook(Recorder(default=refuse_connection), stable=stable) as hook:
        exc = await failure(mode, hook)
    assert exc.category is Category.RETRYABLE and exc.code is None
    assert "ConnectError [retryable]" in str(exc) and "Connection refused" in str(exc)
    assert_no_secret(exc, hook, APPSECRET)
    if not stable:
        assert "secret=***" in str(exc)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ({"text": "<html>maintenance</html>"}, "the body is not a JSON object (text/plain"),
        ({"json": ["not", "an", "object"]}, "the body is not a JSON object (application/json)"),
        ({"json": {"expires_in": 7200}}, "no access_token in the response"),
        ({"json": {"errcode": 0, "errmsg": "ok"}}, "no access_token in the response"),
        ({"json": {"access_token": "", "expires_in": 7200}}, "access_token is not a non-empty string"),
    ],
)
async def test_wechat_unexpected_success_bodies(mode: str, content: dict[str, Any], problem: str) -> None:
    async with wechat_hook(Recorder([httpx.Response(200, **content)])) as hook:
        exc = await failure(mode, hook)
    assert exc.classification is None and exc.code is None
    assert str(exc).startswith("wechat unexpected response from the stable_token endpoint")
    assert problem in str(exc)
    assert_no_secret(exc, hook, APPSECRET)


@pytest.mark.anyio
async def test_wechat_missing_or_bad_expires_in_is_unknown(mode: str) -> None:
    rec = Recorder([httpx.Response(200, json={"access_token": "T1"}), token_body("T2", expires_in=0)])
    async with wechat_hook(rec) as hook:
        assert await obtain(mode, hook) == Token("T1", expires_in=None)
        assert await obtain(mode, hook) == Token("T2", expires_in=None)


def test_wechat_repr_shows_only_public_fields() -> None:
    hook = WeChatTokenHook(APPID, APPSECRET, stable=False)
    assert repr(hook) == f"WeChatTokenHook(appid='{APPID}', base_url='{WECHAT}', stable=False)"
    assert hook.base_url == WECHAT
    hook.close()


def test_wechat_legacy_url_is_redacted_in_httpx_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    with wechat_hook(Recorder([token_body()]), stable=False) as hook:
        hook()
    assert "HTTP Request: GET" in caplog.text
    assert "secret=***" in caplog.text
    assert APPSECRET not in caplog.text


def test_hook_clients_reopen_after_close() -> None:
    rec = Recorder([token_body("T1"), token_body("T2")])
    hook = wechat_hook(rec)
    assert hook().value == "T1"
    hook.close()
    assert hook().value == "T2"
    hook.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"appsecret": ""}, "appsecret must be a non-empty str"),
        ({"appid": ""}, "appid must be a non-empty str"),
        ({"stable": False, "force_refresh": True}, "force_refresh applies to the stable_token endpoint only"),
        ({"base_url": "ftp://api.weixin.qq.com"}, "base_url must be an http\\(s\\) URL"),
        ({"base_url": f"{WECHAT}?secret={APPSECRET}"}, "base_url must be an http\\(s\\) URL"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"transport": retrypolicy.RetryTransport("wechat")}, "must not go through a retrying transport"),
        ({"async_transport": retrypolicy.AsyncRetryTransport("wechat")}, "must not go through a retrying transport"),
    ],
)
def test_wechat_bad_configuration(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"appid": APPID, "appsecret": APPSECRET, **kwargs}
    with pytest.raises(ConfigurationError, match=message) as info:
        WeChatTokenHook(**args)
    assert APPSECRET not in str(info.value)


# -- end to end: the hook inside the transports ----------------------------------------------


class WeChatAPI:
    """Rejects the first token with 42001 (expired), accepts any other."""

    def __init__(self) -> None:
        self.tokens: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("access_token")
        self.tokens.append(token)
        if token == "ACCESS-TOKEN-1":
            return wechat_error(42001, "access_token expired rid: 6601-dd")
        return httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})


def token_endpoint() -> Recorder:
    return Recorder([token_body("ACCESS-TOKEN-1"), token_body("ACCESS-TOKEN-2")])


def test_end_to_end_sync_renews_once() -> None:
    endpoint, api = token_endpoint(), WeChatAPI()
    with WeChatTokenHook(APPID, APPSECRET, transport=httpx.MockTransport(endpoint)) as hook:
        transport = retrypolicy.RetryTransport(policy="wechat", token=hook, transport=httpx.MockTransport(api))
        with httpx.Client(transport=transport) as client:
            response = client.post(SEND_URL, json={"touser": "o1", "msgtype": "text"})
    assert response.status_code == 200 and response.json()["errcode"] == 0
    assert len(endpoint.requests) == 2  # initial fill + one renewal
    assert api.tokens == ["ACCESS-TOKEN-1", "ACCESS-TOKEN-2"]


@pytest.mark.anyio
async def test_end_to_end_async_renews_once() -> None:
    endpoint, api = token_endpoint(), WeChatAPI()
    async with WeChatTokenHook(APPID, APPSECRET, async_transport=httpx.MockTransport(endpoint)) as hook:
        transport = retrypolicy.AsyncRetryTransport(policy="wechat", token=hook, transport=httpx.MockTransport(api))
        async with httpx.AsyncClient(transport=transport) as client:
            response = await client.post(SEND_URL, json={"touser": "o1", "msgtype": "text"})
    assert response.status_code == 200 and response.json()["errcode"] == 0
    assert len(endpoint.requests) == 2
    assert api.tokens == ["ACCESS-TOKEN-1", "ACCESS-TOKEN-2"]


@pytest.mark.anyio
async def test_end_to_end_bad_secret_stops_without_a_loop(mode: str) -> None:
    endpoint = Recorder(default=lambda r: wechat_error(40125, "invalid appsecret rid: 6601-ee"))
    api = WeChatAPI()
    mock = httpx.MockTransport(endpoint)
    async with WeChatTokenHook(APPID, APPSECRET, transport=mock, async_transport=mock) as hook:
        with pytest.raises(TokenRefreshFailed) as info:
            if mode == "sync":
                sync = retrypolicy.RetryTransport("wechat", token=hook, transport=httpx.MockTransport(api))
                with httpx.Client(transport=sync) as client:
                    client.post(SEND_URL, json={})
            else:
                transport = retrypolicy.AsyncRetryTransport("wechat", token=hook, transport=httpx.MockTransport(api))
                async with httpx.AsyncClient(transport=transport) as aclient:
                    await aclient.post(SEND_URL, json={})
    assert len(endpoint.requests) == 1 and api.tokens == []
    text = str(info.value)
    assert "wechat code 40125 [fatal]" in text
    assert APPSECRET not in text and APPSECRET not in repr(info.value)
    # the exception carries the token endpoint's own verdict, not a generic one
    assert info.value.classification.code == 40125
    assert info.value.classification.category is Category.FATAL


# -- Tencent Cloud Chat UserSig ----------------------------------------------------------------


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def usersig(clock: Clock | None = None, **kwargs: Any) -> TencentUserSig:
    return TencentUserSig(SDKAPPID, IM_KEY, clock=clock or Clock(), **kwargs)


def decode_sig(sig: str) -> dict[str, Any]:
    raw = base64.b64decode(sig.replace("*", "+").replace("-", "/").replace("_", "="))
    doc: dict[str, Any] = json.loads(zlib.decompress(raw))
    return doc


def encode_sig(doc: dict[str, Any]) -> str:
    data = base64.b64encode(zlib.compress(json.dumps(doc).encode())).decode()
    return data.replace("+", "*").replace("/", "-").replace("=", "_")


@pytest.mark.anyio
async def test_usersig_round_trip(mode: str) -> None:
    clock = Clock()
    hook = usersig(clock, identifier="admin_1", expire=86400)
    token = await obtain(mode, hook)
    assert token.expires_in == 86400
    doc = hook.verify(token.value, identifier="admin_1")
    assert doc["TLS.identifier"] == "admin_1" and doc["TLS.time"] == int(NOW)
    clock.now += 1
    assert (await obtain(mode, hook)).value != token.value  # a new TLS.time gives a new sig
    await hook.aclose()


def test_usersig_known_structure() -> None:
    hook = usersig(identifier="administrator")
    sig = hook().value
    assert not set(sig) & set("+/=")  # Tencent's URL-safe alphabet: * - _
    doc = decode_sig(sig)
    assert set(doc) == {"TLS.ver", "TLS.identifier", "TLS.sdkappid", "TLS.expire", "TLS.time", "TLS.sig"}
    assert doc["TLS.ver"] == "2.0"
    assert doc["TLS.identifier"] == "administrator"
    assert doc["TLS.sdkappid"] == SDKAPPID
    assert doc["TLS.expire"] == 86400 * 180
    assert doc["TLS.time"] == int(NOW)
    signed = f"TLS.identifier:administrator\nTLS.sdkappid:{SDKAPPID}\nTLS.time:{int(NOW)}\nTLS.expire:{86400 * 180}\n"
    mac = hmac.new(IM_KEY.encode(), signed.encode(), hashlib.sha256).digest()
    assert doc["TLS.sig"] == base64.b64encode(mac).decode()


def test_usersig_verify_accepts_userbuf() -> None:
    hook = usersig()
    doc = decode_sig(hook.generate())
    doc["TLS.userbuf"] = base64.b64encode(b"\x00\x01privmap").decode()
    signed = (
        f"TLS.identifier:{doc['TLS.identifier']}\nTLS.sdkappid:{SDKAPPID}\nTLS.time:{doc['TLS.time']}\n"
        f"TLS.expire:{doc['TLS.expire']}\nTLS.userbuf:{doc['TLS.userbuf']}\n"
    )
    doc["TLS.sig"] = base64.b64encode(hmac.new(IM_KEY.encode(), signed.encode(), hashlib.sha256).digest()).decode()
    assert hook.verify(encode_sig(doc))["TLS.userbuf"] == doc["TLS.userbuf"]


def tampered_expire(sig: str) -> str:
    doc = decode_sig(sig)
    doc["TLS.expire"] += 86400  # not re-signed
    return encode_sig(doc)


@pytest.mark.parametrize(
    ("make", "code", "category"),
    [
        (lambda h: tampered_expire(h.generate()), 70009, "fatal"),
        (lambda h: TencentUserSig(SDKAPPID, "another-key-0000", clock=Clock()).generate(), 70009, "fatal"),
        (lambda h: TencentUserSig(1400000001, IM_KEY, clock=Clock()).generate(), 70014, "fatal"),
        (lambda h: h.generate("someone_else"), 70013, "fatal"),
        (lambda h: h.generate(expire=60), 70001, "token-refresh"),
        (lambda h: "", 70002, "token-refresh"),
        (lambda h: "not*a*sig", 70003, "token-refresh"),
        (lambda h: h.generate()[:-12], 70003, "token-refresh"),
        (lambda h: encode_sig({**decode_sig(h.generate()), "TLS.ver": "1.0"}), 70003, "token-refresh"),
    ],
)
def test_usersig_verify_rejects(make: Any, code: int, category: str) -> None:
    clock = Clock()
    hook = usersig(clock)
    sig: str = make(hook)
    clock.now += 61  # only the 60-second sig has expired
    with pytest.raises(UserSigError) as info:
        hook.verify(sig, identifier="administrator")
    exc = info.value
    assert isinstance(exc, ValueError) and isinstance(exc, HookError)
    assert exc.platform == "tencent_im" and exc.code == code and exc.category == Category(category)
    assert str(exc).startswith(f"tencent_im code {code} [{category}] from UserSig verification: ")
    assert IM_KEY not in str(exc) and IM_KEY not in repr(hook)
    if sig:
        assert sig not in str(exc)


def test_usersig_expiry_check_can_be_skipped() -> None:
    clock = Clock()
    hook = usersig(clock, expire=60)
    sig = hook().value
    clock.now += 3600
    with pytest.raises(UserSigError):
        hook.verify(sig)
    assert hook.verify(sig, check_expiry=False)["TLS.expire"] == 60


def test_usersig_repr_and_configuration() -> None:
    hook = usersig(identifier="admin")
    assert repr(hook) == f"TencentUserSig(sdkappid={SDKAPPID}, identifier='admin', expire={86400 * 180})"
    hook.close()
    with pytest.raises(ConfigurationError, match="key must be a non-empty str") as info:
        TencentUserSig(SDKAPPID, "")
    with pytest.raises(ConfigurationError, match="sdkappid must be a positive int"):
        TencentUserSig(0, IM_KEY)
    with pytest.raises(ConfigurationError, match="expire must be a positive"):
        TencentUserSig(SDKAPPID, IM_KEY, expire=0)
    assert IM_KEY not in str(info.value)


def test_usersig_end_to_end_with_a_verifying_fake() -> None:
    """A fake Tencent API that checks the UserSig with verify(), as a test double would."""
    hook = usersig()
    seen: list[dict[str, Any]] = []

    def api(request: httpx.Request) -> httpx.Response:
        try:
            seen.append(hook.verify(request.url.params["usersig"], identifier=request.url.params["identifier"]))
        except UserSigError as exc:
            return httpx.Response(200, json={"ActionStatus": "FAIL", "ErrorCode": exc.code, "ErrorInfo": str(exc)})
        return httpx.Response(200, json={"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""})

    transport = retrypolicy.RetryTransport("tencent_im", token=hook, transport=httpx.MockTransport(api))
    with httpx.Client(transport=transport) as client:
        url = f"https://console.tim.qq.com/v4/im_open_login_svc/account_import?sdkappid={SDKAPPID}&identifier=administrator"
        response = client.post(url, json={"UserID": "u1"})
    assert response.json()["ActionStatus"] == "OK"
    assert len(seen) == 1


# -- WhatsApp on-premises login ----------------------------------------------------------------


def wa_hook(rec: Recorder, clock: Clock | None = None) -> WhatsAppOnPremLogin:
    mock = httpx.MockTransport(rec)
    return WhatsAppOnPremLogin(
        WA_BASE, WA_USER, WA_PASSWORD, transport=mock, async_transport=mock, clock=clock or Clock()
    )


def login_body(token: str = "WA-BEARER-TOKEN-1", expires_after: Any = "2025-10-16 09:06:40+00:00") -> httpx.Response:
    body = {"meta": {"api_status": "stable", "version": "2.53.1"}, "users": [{"token": token}]}
    if expires_after is not None:
        body["users"][0]["expires_after"] = expires_after  # type: ignore[index]
    return httpx.Response(200, json=body)


@pytest.mark.anyio
async def test_whatsapp_login_request_and_token(mode: str) -> None:
    rec = Recorder([login_body("WA-BEARER-TOKEN-1", "2025-10-16 09:06:40+00:00")])
    async with wa_hook(rec) as hook:
        token = await obtain(mode, hook)
    # NOW is 2025-10-09 08:53:20 UTC; the token expires 7 days, 13 min 20 s later.
    assert token == Token("WA-BEARER-TOKEN-1", expires_in=7 * 86400 + 800)
    [request] = rec.requests
    assert request.method == "POST"
    assert request.url == httpx.URL(f"{WA_BASE}/v1/users/login")
    expected = base64.b64encode(f"{WA_USER}:{WA_PASSWORD}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.content == b""


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("stamp", "expires_in"),
    [
        ("2025-10-09T09:53:20Z", 3600.0),
        ("2025-10-09 09:53:20", 3600.0),  # no offset: UTC
        ("2025-10-09 10:53:20+01:00", 3600.0),
        ("next tuesday", None),
        (1760003600, None),
        ("2025-10-09 07:53:20+00:00", None),  # already past by our clock (skew): unknown
        (None, None),
    ],
)
async def test_whatsapp_expires_after_parsing(mode: str, stamp: Any, expires_in: float | None) -> None:
    async with wa_hook(Recorder([login_body(expires_after=stamp)])) as hook:
        token = await obtain(mode, hook)
    assert token.expires_in == expires_in


@pytest.mark.anyio
async def test_whatsapp_login_error_is_classified(mode: str) -> None:
    body = {"errors": [{"code": 1005, "title": "Access denied", "details": f"Invalid credentials {WA_PASSWORD}"}]}
    async with wa_hook(Recorder([httpx.Response(401, json=body)])) as hook:
        exc = await failure(mode, hook)
    assert exc.platform == "whatsapp_onprem" and exc.code == 1005 and exc.category is Category.TOKEN_REFRESH
    assert exc.status_code == 401
    assert str(exc).startswith("whatsapp_onprem code 1005 [token-refresh] from the login endpoint for user admin")
    assert "vendor message: Access denied" in str(exc) and "details: Invalid credentials ***" in str(exc)
    assert_no_secret(exc, hook, WA_PASSWORD)


@pytest.mark.anyio
async def test_whatsapp_html_502_and_connection_error(mode: str) -> None:
    html = httpx.Response(502, headers={"content-type": "text/html"}, text="<html>Bad Gateway</html>")
    async with wa_hook(Recorder([html, refuse_connection])) as hook:
        bad_gateway = await failure(mode, hook)
        refused = await failure(mode, hook)
    assert bad_gateway.status_code == 502 and bad_gateway.category is Category.RETRYABLE
    assert str(bad_gateway).startswith("whatsapp_onprem HTTP 502, no error code [retryable]")
    assert "ConnectError [retryable]" in str(refused) and refused.category is Category.RETRYABLE
    for exc in (bad_gateway, refused):
        assert_no_secret(exc, hook, WA_PASSWORD)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [{"users": []}, {"users": [{"expires_after": "2025-10-16 09:06:40+00:00"}]}, {"meta": {}}],
)
async def test_whatsapp_unexpected_success_bodies(mode: str, body: dict[str, Any]) -> None:
    async with wa_hook(Recorder([httpx.Response(200, json=body)])) as hook:
        exc = await failure(mode, hook)
    assert exc.classification is None
    assert str(exc).startswith("whatsapp_onprem unexpected response from the login endpoint")
    assert_no_secret(exc, hook, WA_PASSWORD)


def test_whatsapp_repr_and_configuration() -> None:
    hook = WhatsAppOnPremLogin(WA_BASE, WA_USER, WA_PASSWORD)
    assert repr(hook) == f"WhatsAppOnPremLogin(base_url='{WA_BASE}', username='admin')"
    hook.close()
    with pytest.raises(ConfigurationError, match="password must be a non-empty str"):
        WhatsAppOnPremLogin(WA_BASE, WA_USER, "")


def test_whatsapp_end_to_end_relogin_after_401() -> None:
    login = Recorder([login_body("WA-1"), login_body("WA-2")])
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer WA-1":
            return httpx.Response(401, json={"errors": [{"code": 1005, "title": "Access denied"}]})
        return httpx.Response(201, json={"messages": [{"id": "gBEGkYiEB1VXAglK1ZEqA1YKPrU"}]})

    with wa_hook(login) as hook:
        transport = retrypolicy.RetryTransport("whatsapp_onprem", token=hook, transport=httpx.MockTransport(api))
        with httpx.Client(transport=transport) as client:
            response = client.post(f"{WA_BASE}/v1/messages", json={"to": "15551234567", "type": "text"})
    assert response.status_code == 201
    assert seen == ["Bearer WA-1", "Bearer WA-2"] and len(login.requests) == 2
