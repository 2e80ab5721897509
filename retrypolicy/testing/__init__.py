"""In-process fake messaging platforms: see the library work without credentials or network.

These fakes speak the real wire shapes of the platforms that retrypolicy knows:

============================  =================================================================
:class:`FakeWeChat`           ``POST /cgi-bin/stable_token``, ``GET /cgi-bin/token``,
                              ``POST /cgi-bin/message/custom/send``, ``.../template/send``
:class:`FakeTencentIM`        ``POST /v4/openim/sendmsg?sdkappid=&identifier=&usersig=&random=``
:class:`FakeWhatsAppOnPrem`   ``POST /v1/users/login`` (basic auth), ``POST /v1/messages``
:class:`FakeWhatsAppCloud`    ``POST /v{N}/{phone_number_id}/messages`` (Bearer)
:class:`FakeSlack`            ``POST /api/chat.postMessage``, ``/api/chat.update``, ``/api/oauth.v2.access``
                              (token rotation, single-use refresh tokens)
:class:`FakeTelegram`         ``/bot<token>/sendMessage``, ``/bot<token>/getMe`` (static bot token)
:class:`FakeWeCom`            ``GET /cgi-bin/gettoken``, ``POST /cgi-bin/message/send`` (one token per app)
:class:`FakeFeishu`           ``POST /open-apis/auth/v3/tenant_access_token/internal``,
                              ``POST /open-apis/im/v1/messages`` (Bearer; Feishu and Lark hosts)
:class:`FakeDingTalk`         old API ``GET /gettoken``, ``POST /topapi/message/corpconversation/asyncsend_v2``;
                              new API ``POST /v1.0/oauth2/accessToken``, ``/v1.0/robot/oToMessages/batchSend``
============================  =================================================================

A fake is a plain, thread-safe ``handler(request) -> httpx.Response``, so it plugs into
``httpx.MockTransport`` for sync and async clients alike (the host of the URL is ignored)::

    wechat = FakeWeChat(appid="wx1", secret="s3cret")
    client = httpx.Client(transport=httpx.MockTransport(wechat), base_url=FakeWeChat.BASE_URL)

or is served over real HTTP on 127.0.0.1 for code that builds its own client::

    with wechat.serve() as base_url:            # "http://127.0.0.1:54321"
        httpx.post(f"{base_url}/cgi-bin/stable_token", json={...})

Tokens. Each fake issues tokens with an expiry read from ``clock`` (``time.monotonic`` by
default; pass a :class:`FakeClock` to move time by hand). WeChat and on-prem issue them from their
token endpoints (a new WeChat token invalidates the previous one: 40001); Tencent UserSigs and
Cloud tokens are minted by the test with :meth:`FakePlatform.issue_token`, as your own code (UserSig
generation) or Business Manager would. :meth:`FakePlatform.expire_tokens` expires every current
token: the next call gets the platform's token-expired code. :meth:`FakePlatform.token_hook` returns
a ready token hook for ``RetryTransport(token=...)`` that fetches or mints a token from the fake.

Faults. :meth:`FakePlatform.script` queues faults for the next API (non-token) requests in order;
:meth:`FakePlatform.fault_rate` applies a random one of a list to a fraction of API requests,
deterministically for a given seed. The faults are :class:`Busy`, :class:`RateLimited`,
:class:`TokenExpired`, :class:`UserAction`, :class:`Fatal`, :class:`GatewayError`, :class:`Slow`,
:class:`Dropped` and :class:`ErrorCode`; each platform answers them with its own code, listed in
its ``FAULT_CODES``. Token endpoints never get faults.

Counters. ``fake.requests`` (every request), ``fake.token_requests`` (token endpoint hits, or
tokens minted through :meth:`~FakePlatform.token_hook` where the platform has no endpoint),
``fake.sent`` (accepted message payloads, to prove a message went out exactly once) and
``fake.injected`` (the faults applied so far).

A pytest fixture, with the fake as the inner transport of :class:`retrypolicy.RetryTransport`::

    import httpx
    import pytest

    import retrypolicy
    from retrypolicy.testing import Busy, FakeWeChat, TokenExpired


    @pytest.fixture
    def wechat() -> FakeWeChat:
        return FakeWeChat(appid="wx1", secret="s3cret")


    def test_send_survives_busy_and_expiry(wechat: FakeWeChat) -> None:
        retrypolicy.set_testing(True)  # keep the decisions, skip the backoff sleeps (a global switch)
        wechat.script(Busy(), TokenExpired())
        transport = retrypolicy.RetryTransport(
            policy="wechat", token=wechat.token_hook(), transport=httpx.MockTransport(wechat)
        )
        with httpx.Client(transport=transport, base_url=FakeWeChat.BASE_URL) as client:
            r = client.post("/cgi-bin/message/custom/send", json={"touser": "OPENID", "msgtype": "text"})
        assert r.json()["errcode"] == 0
        assert len(wechat.sent) == 1  # sent exactly once, after a retry and a token renewal
        assert wechat.token_requests == 2  # the first token, then the renewal

Notes: a fake's handler is synchronous, so :class:`Slow` blocks the event loop of an
``AsyncClient`` using ``MockTransport``; use :meth:`~FakePlatform.serve` to test client timeouts.
WeChat's rate-limit code 45011 asks for a 60 s wait (``min_delay``): ``set_testing`` skips the
sleep, but the wait still passes on its virtual clock and counts against the 60 s default
deadline, as in production, so pass ``retry=RetrySettings(deadline=600)`` to see a retry after
it. No repr of a fake shows a secret or a token.
"""

from __future__ import annotations

from ._dingtalk import FakeDingTalk
from ._fakes import FakeTencentIM, FakeWeChat, FakeWhatsAppCloud, FakeWhatsAppOnPrem
from ._faults import (
    Busy,
    Dropped,
    ErrorCode,
    FakeClock,
    Fatal,
    Fault,
    GatewayError,
    RateLimited,
    Slow,
    TokenExpired,
    UserAction,
)
from ._feishu import FakeFeishu
from ._platform import FakePlatform
from ._servers import RedisServer, redis_server
from ._servers import free_port as free_port  # used by tests of the Redis store
from ._slack import FakeSlack
from ._telegram import FakeTelegram
from ._wecom import FakeWeCom

__all__ = [
    "Busy",
    "Dropped",
    "ErrorCode",
    "FakeClock",
    "FakeDingTalk",
    "FakeFeishu",
    "FakePlatform",
    "FakeSlack",
    "FakeTelegram",
    "FakeTencentIM",
    "FakeWeChat",
    "FakeWeCom",
    "FakeWhatsAppCloud",
    "FakeWhatsAppOnPrem",
    "Fatal",
    "Fault",
    "GatewayError",
    "RateLimited",
    "RedisServer",
    "Slow",
    "TokenExpired",
    "UserAction",
    "redis_server",
]
