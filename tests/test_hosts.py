"""Keys of a ``policy={host: ...}`` mapping: hosts compare case-insensitively, ``host:port`` keys
match that port only and win over a host-only key, ``"*"`` matches any host, and a key that can
never match is refused. Real clients over FakeWeChat served on 127.0.0.1:<port>, sync and async."""

from __future__ import annotations

import dataclasses
from typing import Any

import anyio
import httpx
import pytest

import retrypolicy
from retrypolicy.testing import Busy, FakeWeChat

SEND = "/cgi-bin/message/custom/send"
MESSAGE = {"touser": "o1", "msgtype": "text", "text": {"content": "hi"}}

pytestmark = pytest.mark.usefixtures("testing")  # zero waits (tests/conftest.py)


def post_each(mode: str, urls: list[str], **kwargs: Any) -> list[httpx.Response]:
    """One POST per URL through one client of the given mode."""
    if mode == "sync":
        with httpx.Client(transport=retrypolicy.RetryTransport(**kwargs)) as client:
            return [client.post(url, json=MESSAGE) for url in urls]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=retrypolicy.AsyncRetryTransport(**kwargs)) as client:
            return [await client.post(url, json=MESSAGE) for url in urls]

    return anyio.run(run)


def api_requests(fake: FakeWeChat) -> int:
    return fake.requests - fake.token_requests


def port_of(base: str) -> int:
    port = httpx.URL(base).port
    assert port is not None
    return port


def test_host_keys_match_case_insensitively(mode: str) -> None:
    fake = FakeWeChat()
    fake.script(Busy(), Busy())
    with fake.serve() as base:
        port = port_of(base)
        urls = [f"http://localhost:{port}{SEND}", f"http://LOCALHOST:{port}{SEND}"]
        responses = post_each(mode, urls, policy={"LocalHost": "wechat"}, token=fake.token_hook())
    # both got the token and were retried after the busy answer
    assert [r.json()["errcode"] for r in responses] == [0, 0]
    assert len(fake.sent) == 2 and api_requests(fake) == 4


def test_a_host_port_key_matches_that_port_only(mode: str) -> None:
    covered, other = FakeWeChat(), FakeWeChat()
    covered.script(Busy())
    other.script(Busy())
    with covered.serve() as base, other.serve() as other_base:
        key = f"127.0.0.1:{port_of(base)}"
        responses = post_each(
            mode, [f"{base}{SEND}", f"{other_base}{SEND}"], policy={key: "wechat"}, token=covered.token_hook()
        )
    assert responses[0].json()["errcode"] == 0 and api_requests(covered) == 2  # token, retry
    # the other port is not covered: passed through untouched, busy answer and all, no token added
    assert responses[1].json()["errcode"] == -1 and api_requests(other) == 1
    assert "retrypolicy" not in responses[1].extensions


def test_a_host_port_key_wins_over_a_host_only_key_and_star(mode: str) -> None:
    """Two fakes on two ports of 127.0.0.1, two platforms each with the hook of its own fake: a
    request gets a token its server accepts only if it was matched to the right key."""
    first, second, third = FakeWeChat(), FakeWeChat(), FakeWeChat()
    wechat = retrypolicy.load_policy("wechat")
    second_policy = dataclasses.replace(wechat, platform="wechat_second")
    third_policy = dataclasses.replace(wechat, platform="wechat_third")
    for fake in (first, second, third):
        fake.script(Busy())
    with first.serve() as one, second.serve() as two, third.serve() as three:
        policy = {
            "127.0.0.1": second_policy,
            f"127.0.0.1:{port_of(one)}": "wechat",
            "*": third_policy,
        }
        hooks = {"wechat": first.token_hook(), "wechat_second": second.token_hook(), "wechat_third": third.token_hook()}
        urls = [f"{one}{SEND}", f"{two}{SEND}", f"http://localhost:{port_of(three)}{SEND}"]
        responses = post_each(mode, urls, policy=policy, token=hooks)
    assert [r.json()["errcode"] for r in responses] == [0, 0, 0]
    for fake in (first, second, third):
        assert len(fake.sent) == 1 and api_requests(fake) == 2 and fake.token_requests == 1


@pytest.mark.parametrize(
    ("key", "url", "matches"),
    [
        ("api.example.com:443", "https://api.example.com/x", True),  # the default port of https
        ("api.example.com:443", "http://api.example.com/x", False),  # port 80
        ("api.example.com:80", "http://API.EXAMPLE.COM/x", True),
        ("api.example.com:8443", "https://api.example.com:8443/x", True),
        ("api.example.com", "https://api.example.com:8443/x", True),  # a host-only key: any port
        ("API.Weixin.QQ.com", "https://api.weixin.qq.com/x", True),
        ("xn--fiqs8s.cn", "https://中国.cn/x", True),  # IDNA: compared as httpx gives the host
        ("中国.CN", "https://xn--fiqs8s.cn/x", True),
        ("[::1]:8080", "http://[::1]:8080/x", True),
        ("[::1]", "http://[::1]:9/x", True),
        ("[::1]:8080", "http://[::1]:8081/x", False),
        ("api.example.com", "https://other.example.com/x", False),
    ],
)
def test_which_request_a_key_matches(key: str, url: str, matches: bool) -> None:
    core = retrypolicy.RetryTransport(policy={key: "wechat"})._core
    assert (core.lane_for(httpx.Request("POST", url)) is not None) is matches


@pytest.mark.parametrize(
    "key",
    [
        "https://api.weixin.qq.com",
        "https://api.weixin.qq.com/cgi-bin/message/custom/send",
        "api.weixin.qq.com/cgi-bin",
        "api.weixin.qq.com?x=1",
        "user@api.weixin.qq.com",
        "",
        " ",
        "api.weixin.qq.com ",
        "api weixin",
        "api.weixin.qq.com:",
        "api.weixin.qq.com:0",
        "api.weixin.qq.com:65536",
        "api.weixin.qq.com:http",
        "*.weixin.qq.com",
        "*:443",
        "::1",
    ],
)
def test_a_key_that_can_never_match_is_refused_naming_it(mode: str, key: str) -> None:
    cls = retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport
    with pytest.raises(retrypolicy.ConfigurationError, match="can never match a request") as info:
        cls(policy={"api.example.com": "wechat", key: "wechat"})
    assert f"policy mapping key {key!r}" in str(info.value)


def test_a_key_that_is_not_a_str_is_refused(mode: str) -> None:
    cls = retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport
    with pytest.raises(retrypolicy.ConfigurationError, match=r"policy mapping keys are hosts \(str\), got int 443"):
        cls(policy={443: "wechat"})  # type: ignore[dict-item]


def test_two_keys_for_the_same_host_are_refused(mode: str) -> None:
    cls = retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport
    with pytest.raises(
        retrypolicy.ConfigurationError, match=r"'API\.weixin\.qq\.com' and 'api\.weixin\.qq\.com' name the same"
    ):
        cls(policy={"API.weixin.qq.com": "wechat", "api.weixin.qq.com": "tencent_im"})
