"""Arguments of the wrong type: every transport argument and per-request option is checked, and
a bad one is a ConfigurationError naming it, raised before anything is sent. Sync and async alike."""

from __future__ import annotations

import math
import sys
from typing import Any

import anyio
import httpx
import pytest

import retrypolicy
from retrypolicy.testing import FakeWeChat

SEND = "/cgi-bin/message/custom/send"
MESSAGE = {"touser": "o1", "msgtype": "text", "text": {"content": "hi"}}
FIXED_TOKEN = "fixed-token-value-Zq81xPw0"

pytestmark = pytest.mark.usefixtures("testing")  # zero waits (tests/conftest.py)


def transport_class(mode: str) -> Any:
    return retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport


class Hook:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return "a-token"


# -- transport arguments -----------------------------------------------------------------------

# (argument name as the message names it, keyword arguments, a piece of the message)
BAD_ARGUMENTS: list[tuple[str, dict[str, Any], str]] = [
    ("policy", {"policy": 123}, "policy must be a built-in name"),
    ("policy", {"policy": None}, "policy must be a built-in name"),
    ("policy[...]", {"policy": {"api.weixin.qq.com": 5}}, "policy['api.weixin.qq.com'] must be a built-in name"),
    ("token", {"token": 5}, "token must be a token hook"),
    ("token", {"token": FIXED_TOKEN}, "token must be a token hook (a callable returning a str or a retrypolicy.Token)"),
    ("token[...]", {"token": {"wechat": "not callable"}}, "token['wechat'] must be a token hook"),
    ("transport", {"transport": object()}, "transport must be an httpx."),
    ("transport", {"transport": "http://127.0.0.1"}, "transport must be an httpx."),
    ("retry", {"retry": {"max_attempts": 3}}, "retry must be a retrypolicy.RetrySettings"),
    ("max_renewals", {"max_renewals": "1"}, "max_renewals must be an integer"),
    ("max_renewals", {"max_renewals": 1.0}, "max_renewals must be an integer"),
    ("raise_on", {"raise_on": "fatal"}, "raise_on takes a list of categories"),
    ("raise_on", {"raise_on": 5}, "raise_on takes a list of categories"),
    ("raise_on", {"raise_on": ["sometimes"]}, "raise_on takes categories"),
    ("raise_on", {"raise_on": [["fatal"]]}, "raise_on takes categories"),
    ("token_timeout", {"token_timeout": "30"}, "token_timeout must be a number of seconds > 0, got '30'"),
    ("token_timeout", {"token_timeout": True}, "token_timeout must be a number"),
    ("token_timeout", {"token_timeout": 0}, "token_timeout must be a number"),
    ("token_timeout", {"token_timeout": math.nan}, "token_timeout must be a number"),
    ("token_timeout", {"token_timeout": math.inf}, "token_timeout must be a number"),
    ("budget", {"budget": 100}, "budget must be a retrypolicy.RetryBudget"),
    ("logger", {"logger": "app"}, "logger must be a logging.Logger"),
    ("token_store", {"token_store": "redis://127.0.0.1:6379/0"}, "token_store must be a retrypolicy.TokenStore"),
    ("verify", {"verify": 1}, "verify must be True, False, an ssl.SSLContext or the path of a CA bundle"),
    ("verify", {"verify": "/no/such/ca.pem"}, "verify: no CA file or directory at '/no/such/ca.pem'"),
    ("cert", {"cert": 5}, "cert must be a certificate file"),
    ("cert", {"cert": ("/no/such/cert.pem",)}, "cert must be a certificate file"),
    ("cert", {"cert": ("/no/such/cert.pem", "/no/such/key.pem")}, "cert: cannot load the client certificate"),
    ("proxy", {"proxy": 3128}, "proxy must be a URL"),
    ("proxy", {"proxy": "ftp://proxy.internal:21"}, "proxy must be an http://, https://, socks5:// or socks5h:// URL"),
    ("proxy", {"proxy": "http://"}, "proxy"),
    ("http2", {"http2": "yes"}, "http2 must be True or False"),
    ("limits", {"limits": 10}, "limits must be an httpx.Limits"),
    ("trust_env", {"trust_env": "no"}, "trust_env must be True or False"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), BAD_ARGUMENTS, ids=[f"{n}={k}" for n, k, _ in BAD_ARGUMENTS])
def test_a_bad_argument_is_a_configuration_error_naming_it(
    mode: str, name: str, kwargs: dict[str, Any], message: str
) -> None:
    kwargs = {"policy": "wechat", **kwargs}
    with pytest.raises(retrypolicy.ConfigurationError) as info:
        transport_class(mode)(**kwargs)
    assert message in str(info.value)
    assert FIXED_TOKEN not in str(info.value)  # a token given by mistake is never echoed


def test_a_transport_of_the_other_kind_is_refused(mode: str) -> None:
    other = httpx.AsyncHTTPTransport() if mode == "sync" else httpx.HTTPTransport()
    expected = "httpx.BaseTransport" if mode == "sync" else "httpx.AsyncBaseTransport"
    with pytest.raises(retrypolicy.ConfigurationError, match=f"transport must be an {expected}"):
        transport_class(mode)(policy="wechat", transport=other)


@pytest.mark.parametrize(
    "settings",
    [{"verify": False}, {"proxy": "http://127.0.0.1:3128"}, {"limits": httpx.Limits(), "trust_env": False}],
    ids=["verify", "proxy", "limits+trust_env"],
)
def test_inner_transport_settings_with_transport_are_refused(mode: str, settings: dict[str, Any]) -> None:
    """They configure the default inner transport, which ``transport=`` replaces: they would be ignored."""
    inner = httpx.MockTransport(lambda request: httpx.Response(200))
    with pytest.raises(retrypolicy.ConfigurationError) as info:
        transport_class(mode)(policy="wechat", transport=inner, **settings)
    names = ", ".join(f"{name}=" for name in settings)
    assert str(info.value).startswith(f"{names} configure the default inner transport, which transport= replaces")


def test_a_socks_proxy_without_socksio_is_a_configuration_error(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "socksio", None)
    with pytest.raises(retrypolicy.ConfigurationError, match=r"socksio.*pip install httpx\[socks\]"):
        transport_class(mode)(policy="wechat", proxy="socks5://127.0.0.1:1080")


def test_a_proxy_password_is_never_in_the_message(mode: str) -> None:
    with pytest.raises(retrypolicy.ConfigurationError) as info:
        transport_class(mode)(policy="wechat", proxy="ftp://user:pr0xy-passw0rd@proxy.internal:21")
    assert "pr0xy-passw0rd" not in str(info.value)


# -- per-request options -----------------------------------------------------------------------

BAD_OPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"retry": "false"}, "retry must be True or False, got 'false'"),
    ({"retry": "no"}, "retry must be True or False, got 'no'"),
    ({"retry": 0}, "retry must be True or False, got 0"),
    ({"retry": 1}, "retry must be True or False, got 1"),
    ({"retry": None}, "retry must be True or False, got None"),
    ({"max_attempts": "3"}, "max_attempts must be an integer"),
    ({"max_attempts": 2.0}, "max_attempts must be an integer"),
    ({"max_attempts": True}, "max_attempts must be an integer"),
    ({"deadline": "10"}, "deadline must be a finite number"),
    ({"deadline": True}, "deadline must be a finite number"),
    ({"deadline": math.inf}, "deadline must be a finite number"),
    ({"idempotent": "yes"}, "idempotent must be True or False"),
    ({"idempotent": 1}, "idempotent must be True or False"),
]


def post(mode: str, base: str, options: Any, hook: Hook) -> httpx.Response:
    transport = transport_class(mode)(policy="wechat", token=hook)
    extensions = {"retrypolicy": options}
    if mode == "sync":
        with httpx.Client(transport=transport, base_url=base) as client:
            return client.post(SEND, json=MESSAGE, extensions=extensions)

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            return await client.post(SEND, json=MESSAGE, extensions=extensions)

    return anyio.run(run)


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=[repr(o) for o, _ in BAD_OPTIONS])
def test_a_bad_request_option_is_refused_before_anything_is_sent(
    mode: str, options: dict[str, Any], message: str
) -> None:
    fake = FakeWeChat()
    hook = Hook()
    with fake.serve() as base, pytest.raises(retrypolicy.ConfigurationError) as info:
        post(mode, base, options, hook)
    assert str(info.value) == message or str(info.value).startswith(message)
    assert fake.requests == 0 and hook.calls == 0  # nothing sent, no token fetched


@pytest.mark.parametrize("options", [{"retry": True}, {"max_attempts": 2, "deadline": 5, "idempotent": False}])
def test_good_request_options_are_accepted(mode: str, options: dict[str, Any]) -> None:
    fake = FakeWeChat()
    with fake.serve() as base:
        response = post(mode, base, options, fake.token_hook())  # type: ignore[arg-type]
    assert response.json()["errcode"] == 0 and len(fake.sent) == 1


def test_request_options_checked_once_are_still_told_apart_by_type(mode: str) -> None:
    """The core keeps each option dict it has checked, keyed by its items and their types: a good
    dict sent again is not checked again, and a bad one equal to it (True == 1, 2.0 == 2) is
    still refused, unsent, however often the good one went before."""
    fake = FakeWeChat()
    transport = transport_class(mode)(policy="wechat", token=fake.token_hook())
    good: list[dict[str, Any]] = [{"max_attempts": 1}, {"max_attempts": 2, "deadline": 5}, {"retry": True}]
    bad: list[dict[str, Any]] = [{"max_attempts": True}, {"max_attempts": 2.0, "deadline": 5}, {"retry": 1}]

    async def send(client: Any, options: dict[str, Any]) -> httpx.Response:
        response = client.post(SEND, json=MESSAGE, extensions={"retrypolicy": options})
        return await response if mode == "async" else response  # type: ignore[no-any-return]

    async def run(base: str) -> list[str]:
        client: Any = (httpx.AsyncClient if mode == "async" else httpx.Client)(transport=transport, base_url=base)
        refused = []
        for options in good * 2 + bad + good + bad:
            try:
                assert (await send(client, options)).json()["errcode"] == 0
            except retrypolicy.ConfigurationError as exc:
                refused.append(str(exc).split(",")[0])
        return refused

    with fake.serve() as base:
        refused = anyio.run(run, base)
    attempts = "max_attempts must be an integer from 1 to 100"
    assert refused == [attempts, attempts, "retry must be True or False"] * 2
    assert len(fake.sent) == 9
    assert len(transport._core._request_options) == 3
