"""wechatpy's WeChatClient on a requests session carrying retrypolicy's adapter, against FakeWeChat over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("requests")
wechatpy = pytest.importorskip("wechatpy")

from wechatpy.exceptions import WeChatClientException  # noqa: E402

import retrypolicy  # noqa: E402
from retrypolicy.hooks import WeChatTokenHook  # noqa: E402
from retrypolicy.requests import RetryAdapter, WeChatTokenStorage  # noqa: E402
from retrypolicy.testing import Busy, FakeWeChat, TokenExpired, UserAction  # noqa: E402

APPID, SECRET = "wx1234567890abcdef", "fake-appsecret-0123456789"


class Client:
    """A wechatpy client set up as the README says, and a spy on wechatpy's own token fetch."""

    def __init__(self, base: str, **adapter_options: Any) -> None:
        self.hook = WeChatTokenHook(APPID, SECRET, base_url=base)
        self.adapter = RetryAdapter(policy="wechat", token=self.hook, **adapter_options)
        self.wechatpy = wechatpy.WeChatClient(
            APPID, SECRET, session=WeChatTokenStorage(self.adapter), auto_retry=False, timeout=10
        )
        self.wechatpy._http.trust_env = False  # no proxy from the environment for 127.0.0.1
        self.wechatpy._http.mount("http://", self.adapter)
        self.wechatpy.API_BASE_URL = base + "/cgi-bin/"  # the fake instead of api.weixin.qq.com
        self.own_fetches = 0
        self.wechatpy.fetch_access_token = self._own_fetch  # wechatpy's refresh: must never run

    def _own_fetch(self) -> None:
        self.own_fetches += 1
        raise AssertionError("wechatpy fetched a token itself")

    def close(self) -> None:
        self.wechatpy._http.close()
        self.hook.close()


@pytest.fixture
def wechat() -> Iterator[FakeWeChat]:
    with retrypolicy.set_testing(True):
        yield FakeWeChat(APPID, SECRET)


@pytest.fixture
def client(wechat: FakeWeChat) -> Iterator[Client]:
    with wechat.serve() as base:
        c = Client(base)
        yield c
        c.close()


def test_wechatpy_sends_through_the_adapter_with_a_retry_and_a_renewal(wechat: FakeWeChat, client: Client) -> None:
    wechat.script(Busy(), TokenExpired())
    assert client.wechatpy.message.send_text("oUser1", "first") == {"errcode": 0, "errmsg": "ok"}
    assert client.wechatpy.message.send_text("oUser1", "second") == {"errcode": 0, "errmsg": "ok"}
    assert [m["text"]["content"] for m in wechat.sent] == ["first", "second"]
    assert wechat.token_requests == 2  # our hook: the first token and one renewal
    assert client.own_fetches == 0  # wechatpy never refreshed on its own
    snap = client.adapter.snapshot()
    assert (snap.retries, snap.renewals, snap.succeeded) == (1, 1, 2)


def test_after_a_renewal_wechatpy_sends_the_new_token(wechat: FakeWeChat, client: Client) -> None:
    client.wechatpy.message.send_text("oUser1", "warm up")
    wechat.expire_tokens()
    client.wechatpy.message.send_text("oUser1", "renews")
    requests_before = wechat.requests
    client.wechatpy.message.send_text("oUser1", "fresh token, sent once")
    assert wechat.requests == requests_before + 1  # wechatpy put the renewed token in the URL: no refusal
    assert wechat.token_requests == 2 and client.own_fetches == 0


def test_a_user_action_code_reaches_the_caller_through_wechatpy(wechat: FakeWeChat, client: Client) -> None:
    wechat.script(UserAction())
    with pytest.raises(retrypolicy.UserActionRequired) as caught:
        client.wechatpy.message.send_text("oUser1", "outside the window")
    assert caught.value.classification.code == 45015
    assert wechat.sent == []


def test_with_raise_on_empty_wechatpy_raises_its_own_exceptions(wechat: FakeWeChat) -> None:
    """raise_on=[]: retries and renewals stay the adapter's; wechatpy raises WeChatClientException
    for a final failure, so existing ``except WeChatClientException`` code keeps working."""
    wechat.script(Busy(), UserAction())
    with wechat.serve() as base:
        c = Client(base, raise_on=[])
        try:
            with pytest.raises(WeChatClientException) as caught:
                c.wechatpy.message.send_text("oUser1", "outside the window")
        finally:
            c.close()
    assert caught.value.errcode == 45015
    assert c.adapter.snapshot().retries == 1 and c.own_fetches == 0


def test_other_keys_stay_in_the_storage(client: Client) -> None:
    storage = client.wechatpy.session
    storage.set(f"{APPID}_jsapi_ticket", "ticket-value", 7200)
    assert storage.get(f"{APPID}_jsapi_ticket") == "ticket-value"
    storage.set(f"{APPID}_access_token", "not ours", 7200)  # wechatpy may try: the adapter owns it
    assert storage.get(f"{APPID}_access_token") != "not ours"
    storage.delete(f"{APPID}_jsapi_ticket")
    assert storage.get(f"{APPID}_jsapi_ticket") is None
    assert "ticket-value" not in repr(storage) and "access" not in repr(storage)


def test_a_storage_without_a_hook_is_refused() -> None:
    with pytest.raises(retrypolicy.ConfigurationError, match="no token hook for 'wechat'"):
        WeChatTokenStorage(RetryAdapter(policy="wechat"))
    with pytest.raises(retrypolicy.ConfigurationError, match="RetryAdapter"):
        WeChatTokenStorage("adapter")  # type: ignore[arg-type]


def test_a_failing_hook_is_a_token_refresh_failure() -> None:
    def broken() -> str:
        raise RuntimeError("token endpoint down")

    storage = WeChatTokenStorage(RetryAdapter(policy="wechat", token=broken))
    with pytest.raises(retrypolicy.TokenRefreshFailed, match="token endpoint down"):
        storage.get(f"{APPID}_access_token")
