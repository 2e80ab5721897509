"""Every exception of retrypolicy pickles (Celery results, multiprocessing, concurrent.futures):
built by the real transports over FakeWeChat served on 127.0.0.1, pickled, unpickled, compared;
the pickled bytes hold no token or app secret."""

from __future__ import annotations

import concurrent.futures
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

import retrypolicy
from retrypolicy.testing import Busy, FakeWeChat, Fatal, Fault, GatewayError, RateLimited, UserAction

SEND = "/cgi-bin/message/custom/send"
MESSAGE = {"touser": "o1", "msgtype": "text", "text": {"content": "hi"}}
APP_SECRET = "app-secret-Zq81xPw0"
REFUSED = "refused-token-Zq81xPw0K3"  # a token the fake never issued: always 40001


class Hook:
    def __init__(self, fake: FakeWeChat) -> None:
        self._hook = fake.token_hook()
        self.tokens: list[str] = []

    def __call__(self) -> retrypolicy.Token:
        token = self._hook()
        self.tokens.append(token.value)
        return token


@pytest.fixture
def fake() -> Iterator[tuple[FakeWeChat, str]]:
    wechat = FakeWeChat(secret=APP_SECRET)
    with wechat.serve() as base:
        yield wechat, base


def failures(
    mode: str,
    base: str,
    fake: FakeWeChat,
    scripts: list[list[Fault]],
    options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> list[retrypolicy.RequestFailed]:
    """One send per script through one client; the exception each one ended with."""
    found: list[retrypolicy.RequestFailed] = []
    extensions = {"retrypolicy": options} if options else {}
    if mode == "sync":
        with httpx.Client(transport=retrypolicy.RetryTransport(policy="wechat", **kwargs), base_url=base) as client:
            for faults in scripts:
                fake.script(*faults)
                with pytest.raises(retrypolicy.RequestFailed) as info:
                    client.post(SEND, json=MESSAGE, extensions=extensions)
                found.append(info.value)
        return found

    async def run() -> None:
        async with httpx.AsyncClient(
            transport=retrypolicy.AsyncRetryTransport(policy="wechat", **kwargs), base_url=base
        ) as client:
            for faults in scripts:
                fake.script(*faults)
                with pytest.raises(retrypolicy.RequestFailed) as info:
                    await client.post(SEND, json=MESSAGE, extensions=extensions)
                found.append(info.value)

    anyio.run(run)
    return found


# each case: the faults of each send, the per-request options, the transport's arguments, and the
# exception type of the last send
Case = tuple[list[list[Fault]], dict[str, Any], Callable[[FakeWeChat], dict[str, Any]], type[Exception]]
CASES: dict[str, Case] = {
    "UserActionRequired": ([[UserAction()]], {}, lambda f: {"token": Hook(f)}, retrypolicy.UserActionRequired),
    "RequestRejected": ([[Fatal()]], {}, lambda f: {"token": Hook(f)}, retrypolicy.RequestRejected),
    "RetriesExhausted": (
        [[Busy(), Busy()]],
        {"max_attempts": 2},
        lambda f: {"token": Hook(f)},
        retrypolicy.RetriesExhausted,
    ),
    "ResendUnsafe": ([[GatewayError(502)]], {}, lambda f: {"token": Hook(f)}, retrypolicy.ResendUnsafe),
    "TokenRefreshFailed": ([[]], {}, lambda f: {"token": lambda: REFUSED}, retrypolicy.TokenRefreshFailed),
    "RetryBudgetExhausted": (
        [[Busy()]],
        {},
        lambda f: {"token": Hook(f), "budget": retrypolicy.RetryBudget(capacity=0.5)},
        retrypolicy.RetryBudgetExhausted,
    ),
    # 45011 starts a 60 s cooldown for the app; with one attempt allowed the first send gives up
    # at once (no wait), and the second is not sent
    "CooldownActive": (
        [[RateLimited()], []],
        {"max_attempts": 1},
        lambda f: {"token": Hook(f)},
        retrypolicy.CooldownActive,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_request_failure_round_trips_through_pickle_without_secrets(
    mode: str, fake: tuple[FakeWeChat, str], name: str
) -> None:
    # production mode (real cooldowns); the one wait is RetriesExhausted's backoff, at most 0.5 s
    wechat, base = fake
    scripts, options, arguments, expected = CASES[name]
    kwargs = arguments(wechat)
    exc = failures(mode, base, wechat, scripts, options, **kwargs)[-1]
    assert type(exc) is expected
    data = pickle.dumps(exc)
    back = pickle.loads(data)
    assert type(back) is type(exc)
    assert str(back) == str(exc) and back.args == exc.args and repr(back) == repr(exc)
    assert back.classification == exc.classification
    assert back.attempts == exc.attempts and back.url == exc.url and back.url.startswith(base)
    assert back.response is None  # dropped: it holds the request, token and all
    if isinstance(exc, retrypolicy.CooldownActive):
        assert isinstance(back, retrypolicy.CooldownActive) and back.remaining == exc.remaining > 0
    secrets = [APP_SECRET, REFUSED, *getattr(kwargs["token"], "tokens", [])]
    assert all(len(s) >= 16 for s in secrets)
    for secret in secrets:
        assert secret.encode() not in data
    # the original keeps its response (the last one, closed)
    if exc.response is not None:
        assert exc.response.is_closed


def test_exceptions_cross_a_process_boundary() -> None:
    """What Celery and multiprocessing do: the exception raised in a worker process comes back."""
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_fail_in_worker)
        with pytest.raises(retrypolicy.UserActionRequired) as info:
            future.result(timeout=60)
    assert info.value.classification.code == 45015 and info.value.attempts == 1
    assert "what to do:" in str(info.value)


def _fail_in_worker() -> None:
    wechat = FakeWeChat(secret=APP_SECRET)
    wechat.script(UserAction())
    transport = retrypolicy.RetryTransport(
        policy="wechat", token=wechat.token_hook(), transport=httpx.MockTransport(wechat)
    )
    with httpx.Client(transport=transport, base_url=FakeWeChat.BASE_URL) as client:
        client.post(SEND, json=MESSAGE)


def test_policy_and_configuration_errors_pickle(tmp_path: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "wechat"\n[[rules]]\ncode = 1\ncategory = "sometimes"\n', encoding="utf-8")
    with pytest.raises(retrypolicy.PolicyError) as policy_error:
        retrypolicy.load_policy(bad)
    with pytest.raises(retrypolicy.ConfigurationError) as config_error:
        retrypolicy.RetryTransport(policy="wechat", max_renewals=-1)
    for exc in (policy_error.value, config_error.value):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and vars(back) == vars(exc)
    assert isinstance(back, ValueError)
    p = policy_error.value
    p_back = pickle.loads(pickle.dumps(p))
    assert (p_back.source, p_back.rule, p_back.field, p_back.problem) == (p.source, p.rule, p.field, p.problem)
    assert p.field is not None and p.source.endswith("bad.toml")


def test_classification_pickles_with_its_cooldown() -> None:
    c = retrypolicy.load_policy("wechat").classify_parts(200, b'{"errcode":45011,"errmsg":"quota rid: 1-2"}')
    assert c is not None and c.cooldown is not None
    assert pickle.loads(pickle.dumps(c)) == c
