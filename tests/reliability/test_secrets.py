"""No credential in any log event, exception message, exception chain, classification or repr.

A mix of scenarios runs under ``structlog.testing.capture_logs()`` (and stdlib logging capture):
renewals, user-action, fatal, hooks that fail with secrets in their messages, vendor messages
echoing tokens, URLs carrying ``access_token=`` / ``usersig=`` / ``secret=``, Authorization
headers, inner transports (custom, and httpx's own over a real socket) raising httpx errors that
quote the token, chained from lower-level errors that quote it too. Every kind of
``RequestFailed`` is raised. Every text produced is then scanned for every secret the scenarios
used (the values we chose and every credential seen on the wire), as a whole and as any
16-character piece. For exceptions that is their ``str``, ``repr``, ``args`` and the text of
``traceback.format_exception``, for them and for every exception reachable from them through
``__cause__`` and ``__context__``, whether a traceback would show it or not.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio.from_thread
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy.hooks import TencentUserSig, WeChatTokenHook, WhatsAppOnPremLogin
from retrypolicy.testing import (
    Busy,
    FakeTencentIM,
    FakeWeChat,
    FakeWhatsAppCloud,
    FakeWhatsAppOnPrem,
    Fatal,
    GatewayError,
    TokenExpired,
    UserAction,
)

from .conftest import report

Handler = Callable[[httpx.Request], httpx.Response]
PUBLIC_PREFIXES = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.",)  # the on-prem fake's JWT header: not secret
WINDOW = 16


def new_secret() -> str:
    return secrets.token_urlsafe(24)


@dataclass
class Evidence:
    """Secrets to look for, and every text the library produced."""

    secrets: dict[str, str] = field(default_factory=dict)  # value -> what it is
    # put in URLs or headers by the caller: httpx logs those URLs, and httpcore's DEBUG trace the
    # header it failed to send, before retrypolicy sees the request; scanned in our texts only
    url_secrets: dict[str, str] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    exceptions: int = 0
    classifications: int = 0
    kinds: set[str] = field(default_factory=set)  # RequestFailed subclasses raised
    raised: list[retrypolicy.RequestFailed] = field(default_factory=list)
    chained: list[str] = field(default_factory=list)  # types reachable through __cause__/__context__
    # repr() of every local variable of retrypolicy's frames in each traceback, as Sentry
    # (include_local_variables, on by default), structlog's dict_tracebacks (show_locals, on by
    # default) and pytest --showlocals print them; scanned for the secrets retrypolicy handled (the
    # caller's own request, with the credentials it put in its URL, sits in those frames too)
    local_texts: list[str] = field(default_factory=list)
    frames: int = 0  # retrypolicy frames whose locals were scanned

    def secret(self, what: str, value: str | None = None) -> str:
        value = value or new_secret()
        self.secrets[value] = what
        return value

    def url_secret(self, what: str) -> str:
        value = new_secret()
        self.url_secrets[value] = what
        return value

    def add(self, *texts: object) -> None:
        self.texts.extend(t if isinstance(t, str) else repr(t) for t in texts)

    def exception(self, exc: retrypolicy.RequestFailed) -> None:
        self.exceptions += 1
        self.kinds.add(type(exc).__name__)
        self.raised.append(exc)
        self.add(exc.url)
        for linked in chain(exc):  # exc itself first; then what pytest, logging or Sentry may print
            if linked is not exc:
                self.chained.append(type(linked).__name__)
            self.add(str(linked), repr(linked), repr(linked.args), "".join(traceback.format_exception(linked)))
            self.locals_of(linked)
        self.classification(exc.classification)
        if exc.response is not None:
            self.add(repr(exc.response))

    def locals_of(self, exc: BaseException) -> None:
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            if f"{os.sep}retrypolicy{os.sep}" not in frame.f_code.co_filename:
                continue
            self.frames += 1
            self.local_texts.extend(f"{name} = {value!r}" for name, value in frame.f_locals.items())

    def classification(self, c: object) -> None:
        assert isinstance(c, retrypolicy.Classification)
        self.classifications += 1
        self.add(repr(c), str(c), json.dumps(c.as_dict()))

    def harvest(self, inner: Handler) -> Handler:
        """Wrap a handler: every credential a request carries becomes a secret to look for."""

        def handler(request: httpx.Request) -> httpx.Response:
            for name in ("access_token", "usersig", "secret"):
                value = request.url.params.get(name)
                if value and value not in self.url_secrets:
                    self.secret(f"{name} on the wire", value)
            auth = request.headers.get("authorization")
            if auth:
                self.secret("authorization header on the wire", auth)
                self.secret("credential on the wire", auth.partition(" ")[2])
            return inner(request)

        return handler

    def scan(self, *, extra: list[str] | None = None) -> list[str]:
        """Every (secret, text) hit: whole values, and any WINDOW-character piece of them."""
        texts = self.texts + (extra or [])
        hits = []
        for values, where in ((self.secrets, texts + self.local_texts), (self.url_secrets, self.texts)):
            for value, what in values.items():
                body = value
                for prefix in PUBLIC_PREFIXES:
                    body = body.removeprefix(prefix)
                pieces = {body[i : i + WINDOW] for i in range(max(1, len(body) - WINDOW + 1))}
                for index, text in enumerate(where):
                    if any(piece in text for piece in pieces):
                        hits.append(f"{what} in text #{index}: {text[:300]!r}")
        return hits


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception reachable from it through ``__cause__`` and ``__context__``."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


class Driver:
    """One scenario script for both modes: async requests go through a blocking portal."""

    def __init__(self, mode: str, portal: anyio.from_thread.BlockingPortal | None) -> None:
        self.mode = mode
        self.portal = portal

    def client(self, policy: Any, handler: Handler | None, ev: Evidence, **kwargs: Any) -> Any:
        """A client over MockTransport(handler), or over ``transport=`` (sync or async, as the mode)."""
        mock = kwargs.pop("transport", None)
        if mock is None:
            assert handler is not None
            mock = httpx.MockTransport(ev.harvest(handler))
        headers = kwargs.pop("headers", None)
        if self.mode == "sync":
            transport: Any = retrypolicy.RetryTransport(policy, transport=mock, **kwargs)
            ev.add(repr(transport))
            return httpx.Client(transport=transport, headers=headers)
        atransport = retrypolicy.AsyncRetryTransport(policy, transport=mock, **kwargs)
        ev.add(repr(atransport))
        return httpx.AsyncClient(transport=atransport, headers=headers)

    def request(self, client: Any, ev: Evidence, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """The response, or None after recording the RequestFailed it raised."""
        try:
            if self.mode == "sync":
                response: httpx.Response = client.request(method, url, **kwargs)
            else:
                assert self.portal is not None
                response = self.portal.call(functools.partial(client.request, method, url, **kwargs))
        except retrypolicy.RequestFailed as exc:
            ev.exception(exc)
            return None
        if retrypolicy.EXTENSION in response.extensions:
            ev.classification(response.extensions[retrypolicy.EXTENSION])
        return response

    def close(self, client: Any) -> None:
        if self.mode == "sync":
            client.close()
        else:
            assert self.portal is not None
            self.portal.call(client.aclose)


@contextlib.contextmanager
def driver(mode: str) -> Iterator[Driver]:
    if mode == "sync":
        yield Driver(mode, None)
        return
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        yield Driver(mode, portal)


# -- the scenarios -------------------------------------------------------------------------------


def wechat_lifecycle(d: Driver, ev: Evidence) -> None:
    """Built-in stable_token hook: renewal, user-action, fatal, busy, a 502 page; raise_on too."""
    appsecret = ev.secret("WeChat AppSecret")
    fake = FakeWeChat(appid="wx5ec1e7ab1e5ecre7", secret=appsecret)
    hook = WeChatTokenHook(
        fake.appid, appsecret, transport=httpx.MockTransport(fake), async_transport=httpx.MockTransport(fake)
    )
    ev.add(repr(hook), repr(fake))
    url = f"{FakeWeChat.BASE_URL}/cgi-bin/message/custom/send"
    for raise_on in (None, ["retryable", "fatal"]):
        client = d.client("wechat", fake, ev, token=hook, raise_on=raise_on)
        fake.script(TokenExpired(), UserAction(), Fatal(), Busy(), GatewayError(502))
        for i in range(6):
            d.request(client, ev, "POST", url, json={"touser": "o1", "msgtype": "text", "text": {"content": str(i)}})
        ev.add(repr(client._transport.snapshot()))
        d.close(client)
    hook.close()


def legacy_hook_with_wrong_secret(d: Driver, ev: Evidence) -> None:
    """The legacy GET /cgi-bin/token puts the AppSecret in the URL; a wrong one gets 40125."""
    fake = FakeWeChat(appid="wx0legacy0000000", secret=ev.secret("right AppSecret"))
    wrong = ev.secret("wrong AppSecret")
    hook = WeChatTokenHook(
        fake.appid,
        wrong,
        stable=False,
        transport=httpx.MockTransport(fake),
        async_transport=httpx.MockTransport(fake),
    )
    ev.add(repr(hook))
    client = d.client("wechat", fake, ev, token=hook)
    d.request(client, ev, "POST", f"{FakeWeChat.BASE_URL}/cgi-bin/message/custom/send", json={"touser": "o1"})
    d.close(client)
    hook.close()


def hooks_failing_with_secrets_in_messages(d: Driver, ev: Evidence) -> None:
    """Custom hooks whose exceptions quote a URL, a JSON body, a header and a form with secrets."""
    s1, s2, s3, s4 = (ev.secret(f"hook secret {i}") for i in range(4))
    failures: list[BaseException] = [
        ConnectionError(
            f"GET https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=wx&secret={s1}"
        ),
        RuntimeError(f"stable_token refused {json.dumps({'grant_type': 'client_credential', 'secret': s2})}"),
        PermissionError(f"vault said no to header Authorization: Bearer {s3}"),
        ValueError(f"login form username=admin&password={s4} was rejected"),
    ]
    good = ev.secret("hook token")

    for failure in failures:
        for phase in ("fetch", "renew"):
            calls = [0]

            def hook(failure: BaseException = failure, phase: str = phase, calls: list[int] = calls) -> str:
                calls[0] += 1
                if phase == "renew" and calls[0] == 1:
                    return good
                raise failure

            def handler(request: httpx.Request) -> httpx.Response:
                return httpx.Response(200, json={"errcode": 40001, "errmsg": "invalid credential rid: 6e-1"})

            client = d.client("wechat", handler, ev, token=hook)
            d.request(client, ev, "POST", "https://api.weixin.qq.com/cgi-bin/message/custom/send", json={})
            d.close(client)


def vendors_echoing_tokens(d: Driver, ev: Evidence) -> None:
    """Vendor messages quoting the very token that was sent, on all four platforms."""
    counter = [0]

    def minted(prefix: str) -> Callable[[], str]:
        def hook() -> str:
            counter[0] += 1
            return ev.secret(f"{prefix} token", f"{prefix}{new_secret()}")

        return hook

    def wechat(request: httpx.Request) -> httpx.Response:
        token = request.url.params["access_token"]
        return httpx.Response(200, json={"errcode": 40001, "errmsg": f"invalid credential {token} rid: 6f-2"})

    client = d.client("wechat", wechat, ev, token=minted("wx"))
    d.request(client, ev, "POST", "https://api.weixin.qq.com/cgi-bin/message/custom/send", json={})
    d.close(client)

    key = ev.secret("Tencent SecretKey")
    usersig_hook = TencentUserSig(1400000001, key)
    ev.add(repr(usersig_hook))

    def tencent(request: httpx.Request) -> httpx.Response:
        sig = request.url.params["usersig"]
        body = {"ActionStatus": "FAIL", "ErrorCode": 70001, "ErrorInfo": f"UserSig {sig} expired"}
        return httpx.Response(200, json=body)

    client = d.client("tencent_im", tencent, ev, token=usersig_hook)
    d.request(client, ev, "POST", "https://console.tim.qq.com/v4/openim/sendmsg?sdkappid=1400000001", json={})
    d.close(client)

    def cloud(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].partition(" ")[2]
        error = {"message": f"Error validating access token {token}: Session has expired.", "code": 190,
                 "error_subcode": 463, "type": "OAuthException", "fbtrace_id": "Afb1"}  # fmt: skip
        return httpx.Response(401, json={"error": error})

    client = d.client("whatsapp_cloud", cloud, ev, token=minted("EAAG"))
    d.request(client, ev, "POST", "https://graph.facebook.com/v21.0/1065/messages", json={"to": "1"})
    d.close(client)

    def onprem(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].partition(" ")[2]
        errors = [{"code": 1005, "title": f"Access denied for {token}", "details": "Token expired."}]
        return httpx.Response(401, json={"errors": errors})

    client = d.client("whatsapp_onprem", onprem, ev, token=minted("eyJ"))
    d.request(client, ev, "POST", "https://localhost:9090/v1/messages", json={"to": "1"})
    d.close(client)


def urls_and_headers_with_credentials(d: Driver, ev: Evidence) -> None:
    """The caller's own URLs (access_token=, usersig=, secret=) and Authorization headers."""
    at, sig, sec = ev.url_secret("access_token in URL"), ev.url_secret("usersig in URL"), ev.url_secret("secret in URL")

    def wechat(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/token":
            return httpx.Response(200, json={"errcode": 40125, "errmsg": "invalid appsecret rid: 1-1"})
        if request.url.path.endswith("/template/send"):
            return httpx.Response(502, html="<h1>502 Bad Gateway</h1>")
        return httpx.Response(200, json={"errcode": 40003, "errmsg": "invalid openid rid: 1-2"})

    client = d.client("wechat", wechat, ev)
    base = "https://api.weixin.qq.com/cgi-bin"
    d.request(client, ev, "POST", f"{base}/message/custom/send?access_token={at}", json={"touser": "x"})
    d.request(client, ev, "POST", f"{base}/message/template/send?access_token={at}", json={"touser": "x"})
    d.request(client, ev, "GET", f"{base}/token?grant_type=client_credential&appid=wx1&secret={sec}")
    d.close(client)

    def tencent(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"ActionStatus": "FAIL", "ErrorCode": 70001, "ErrorInfo": "UserSig expired"})

    client = d.client("tencent_im", tencent, ev)
    url = f"https://console.tim.qq.com/v4/openim/sendmsg?sdkappid=1&identifier=admin&usersig={sig}&random=9"
    d.request(client, ev, "POST", url, json={})
    d.close(client)

    bearer = ev.secret("caller's bearer token")

    def cloud(request: httpx.Request) -> httpx.Response:
        error = {"message": "Invalid OAuth access token - Cannot parse access token", "code": 190}
        return httpx.Response(401, json={"error": error})

    client = d.client("whatsapp_cloud", cloud, ev, headers={"Authorization": f"Bearer {bearer}"})
    d.request(client, ev, "POST", "https://graph.facebook.com/v21.0/1065/messages", json={"to": "1"})
    d.close(client)


def onprem_login(d: Driver, ev: Evidence) -> None:
    """Built-in basic-auth login hook: a renewal that works, then a login with a wrong password."""
    password = ev.secret("on-prem password")
    fake = FakeWhatsAppOnPrem(username="admin", password=password)
    for pw in (password, ev.secret("wrong on-prem password")):
        hook = WhatsAppOnPremLogin(
            fake.BASE_URL, "admin", pw, transport=httpx.MockTransport(fake), async_transport=httpx.MockTransport(fake)
        )
        ev.add(repr(hook))
        client = d.client("whatsapp_onprem", fake, ev, token=hook)
        fake.script(TokenExpired(), UserAction())
        for _ in range(3):
            d.request(client, ev, "POST", f"{fake.BASE_URL}/v1/messages", json={"to": "15550001", "type": "text"})
        d.close(client)
        hook.close()


def cloud_and_tencent_fakes(d: Driver, ev: Evidence) -> None:
    """The Cloud and Tencent fakes with their own hooks: renewals and faults."""
    for fake, path, body in (
        (FakeWhatsAppCloud(), "/v21.0/106540352242922/messages", {"messaging_product": "whatsapp", "to": "1"}),
        (
            FakeTencentIM(),
            "/v4/openim/sendmsg?sdkappid=1400000000&identifier=administrator&random=3",
            {"To_Account": "u1", "MsgRandom": 1, "MsgBody": [{"MsgType": "TIMTextElem"}]},
        ),
    ):
        client = d.client(fake.platform, fake, ev, token=fake.token_hook())
        fake.script(TokenExpired(), Busy(), Fatal(), UserAction())
        for _ in range(4):
            d.request(client, ev, "POST", f"{fake.BASE_URL}{path}", json=body)
        ev.add(repr(fake))
        d.close(client)


# -- inner transports whose errors quote the token ------------------------------------------------


def quoting_error(kind: str, request: httpx.Request, token: str) -> httpx.TransportError:
    """An httpx error whose text quotes the request's token, raised ``from`` a lower-level error
    that quotes it too (as httpx raises its errors from httpcore's, and httpcore from h11's)."""
    try:
        try:
            raise OSError(f"h11 refused to send {request.method} {request.url} with {token}")
        except OSError as low:
            if kind == "local":  # the brief's example: httpx refuses a header carrying the token
                raise httpx.LocalProtocolError(f"Illegal header value b'Bearer {token} '") from low
            if kind == "remote":
                raise httpx.RemoteProtocolError(f"Server disconnected while sending {request.url} ({token})") from low
            if kind == "connect":
                raise httpx.ConnectError(f"connect to {request.url} failed; credential {token}") from low
            # a long message whose token straddles the 200 characters a classification keeps
            raise httpx.ReadError("connection reset by peer; " + "." * (180 - 26) + f" {token} was in flight") from low
    except httpx.TransportError as exc:
        return exc
    raise AssertionError("unreachable")


class QuotingTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An inner transport (sync and async) that plays ``steps``, one per attempt: an answer of the
    platform (``ok``, ``user_action``, ``fatal``, ``token``, ``cooldown``), an error from
    :func:`quoting_error` (``local``, ``remote``, ``connect``, ``cut``), or ``nested``: first a
    request of its own through ``client`` (which plays the next step), then a ``remote`` error."""

    def __init__(self, platform: str, ev: Evidence) -> None:
        self.platform = platform
        self.ev = ev
        self.steps: deque[str] = deque()
        self.client: Any = None

    def token_of(self, request: httpx.Request) -> str:
        if self.platform == "wechat":
            return request.url.params["access_token"]
        return request.headers["authorization"].partition(" ")[2]

    def answer(self, kind: str) -> httpx.Response:
        if self.platform == "wechat":
            code = {"ok": 0, "user_action": 45015, "fatal": 40003, "token": 40001, "cooldown": 45011}[kind]
            return httpx.Response(200, json={"errcode": code, "errmsg": f"errcode {code} rid: 77-{kind}"})
        if kind == "ok":
            return httpx.Response(200, json={"messages": [{"id": "wamid.1"}]})
        code, status = {"user_action": (131048, 400), "fatal": (100, 400), "token": (190, 401)}[kind]
        return httpx.Response(status, json={"error": {"code": code, "message": f"error {code}", "fbtrace_id": "Af"}})

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        step = self.steps.popleft() if self.steps else "ok"
        if step == "nested":
            try:
                self.client.get(str(request.url.copy_remove_param("access_token")))
            except retrypolicy.RequestFailed as exc:
                self.ev.exception(exc)
            step = "remote"
        if step in ("local", "remote", "connect", "cut"):
            raise quoting_error(step, request, self.token_of(request))
        return self.answer(step)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        step = self.steps.popleft() if self.steps else "ok"
        if step == "nested":
            try:
                await self.client.get(str(request.url.copy_remove_param("access_token")))
            except retrypolicy.RequestFailed as exc:
                self.ev.exception(exc)
            step = "remote"
        if step in ("local", "remote", "connect", "cut"):
            raise quoting_error(step, request, self.token_of(request))
        return self.answer(step)


def transports_raising_errors_that_quote_the_token(d: Driver, ev: Evidence) -> None:
    """Every kind of RequestFailed, each after an httpx error quoting the token. After the first
    request, first attempts take the transport's fast path, whose error the flow takes over."""
    counter = [0]

    def minted() -> str:
        counter[0] += 1
        return ev.secret("token of a quoting transport", f"tq{counter[0]}{new_secret()}")

    plans: list[tuple[str, list[str]]] = [
        ("POST", ["ok"]),  # the flow fetches the first token
        ("POST", ["remote"]),  # ambiguous POST: ResendUnsafe
        ("POST", ["local"]),  # a request httpx refuses to send: never sent, or maybe sent (ResendUnsafe)
        ("GET", ["cut", "remote", "cut", "connect", "connect", "connect"]),  # RetriesExhausted
        ("GET", ["remote", "user_action"]),  # UserActionRequired
        ("GET", ["connect", "fatal"]),  # RequestRejected
        ("GET", ["remote", "token", "token"]),  # TokenRefreshFailed: the fresh token is refused too
    ]
    urls = {"wechat": "https://api.weixin.qq.com/cgi-bin/message/custom/send",
            "whatsapp_cloud": "https://graph.facebook.com/v21.0/1065/messages"}  # fmt: skip
    for platform, url in urls.items():
        inner = QuotingTransport(platform, ev)
        client = d.client(platform, None, ev, token=minted, transport=inner)
        for method, steps in plans:
            inner.steps = deque(steps)
            d.request(client, ev, method, url, **({"json": {"to": "1"}} if method == "POST" else {}))
        d.close(client)
        # RetryBudgetExhausted: a budget of one retry
        inner = QuotingTransport(platform, ev)
        client = d.client(platform, None, ev, token=minted, transport=inner, budget=retrypolicy.RetryBudget(capacity=1))
        for method, steps in (("POST", ["ok"]), ("GET", ["remote", "cut", "connect"])):
            inner.steps = deque(steps)
            d.request(client, ev, method, url, **({"json": {"to": "1"}} if method == "POST" else {}))
        d.close(client)
        # CircuitOpen: a failed attempt opens a breaker of min_calls 2 (1 of 2 failed), its retry is
        # refused, and so is the next request, carrying the classification that opened it
        inner = QuotingTransport(platform, ev)
        breaker = retrypolicy.CircuitBreaker(min_calls=2, open_for=60)
        client = d.client(platform, None, ev, token=minted, transport=inner, breaker=breaker)
        for method, steps in (("POST", ["ok"]), ("GET", ["cut", "connect"]), ("GET", [])):
            inner.steps = deque(steps)
            d.request(client, ev, method, url, **({"json": {"to": "1"}} if method == "POST" else {}))
        d.close(client)

    # CooldownActive: while a request's first attempt fails, another one meets 45011 (a 60 s app
    # cooldown; real time, so that the retry meets it), and the retry is not sent
    retrypolicy.set_testing(False)
    try:
        inner = QuotingTransport("wechat", ev)
        quick = retrypolicy.RetrySettings(initial_delay=0.001, max_delay=0.001, deadline=30)
        client = d.client("wechat", None, ev, token=minted, transport=inner, retry=quick)
        inner.client = client
        for steps in (["ok"], ["nested", "cooldown"]):
            inner.steps = deque(steps)
            d.request(client, ev, "GET", urls["wechat"])
        d.close(client)
    finally:
        retrypolicy.set_testing(True)


def caller_header_refused_by_h11_over_a_real_socket(d: Driver, ev: Evidence) -> None:
    """httpx's own transport over a real socket: h11 refuses the caller's Authorization header
    ending in a newline, and httpx raises LocalProtocolError quoting it, from httpcore's, from h11's."""
    bearer = ev.url_secret("caller's bearer token with a newline")
    fake = FakeWhatsAppCloud()
    with fake.serve() as base:
        inner: Any = httpx.HTTPTransport() if d.mode == "sync" else httpx.AsyncHTTPTransport()
        client = d.client("whatsapp_cloud", None, ev, transport=inner, headers={"Authorization": f"Bearer {bearer}\n"})
        for _ in range(2):
            d.request(client, ev, "POST", f"{base}/v21.0/1065/messages", json={"to": "1"})
        d.close(client)


SCENARIOS = [
    wechat_lifecycle,
    legacy_hook_with_wrong_secret,
    hooks_failing_with_secrets_in_messages,
    vendors_echoing_tokens,
    urls_and_headers_with_credentials,
    onprem_login,
    cloud_and_tencent_fakes,
    transports_raising_errors_that_quote_the_token,
    caller_header_refused_by_h11_over_a_real_socket,
]


def test_no_secret_in_logs_exceptions_or_reprs(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ev = Evidence()
    ev.add(repr(retrypolicy.Token(ev.secret("a Token value"), expires_in=60)))
    with capture_logs() as events, driver(mode) as d:
        for scenario in SCENARIOS:
            scenario(d, ev)
    ev.add(*events)
    # stdlib records (httpx's own request log lines included); the caller's URLs are excluded,
    # since httpx logs the URL it was given before retrypolicy sees the request
    records = [f"{r.name}: {r.getMessage()}" for r in caplog.records]
    hits = ev.scan(extra=records)
    chars = sum(map(len, ev.texts)) + sum(map(len, records))
    report(
        f"secrets[{mode}]",
        scenarios=len(SCENARIOS),
        log_events=len(events),
        stdlib_records=len(records),
        exceptions=ev.exceptions,
        classifications=ev.classifications,
        texts=len(ev.texts) + len(records),
        chars=chars,
        secrets=len(ev.secrets) + len(ev.url_secrets),
        kinds=len(ev.kinds),
        chained=len(ev.chained),
        frames=ev.frames,
        leaks=len(hits),
    )
    assert hits == []
    # the scan was not vacuous: many events and errors, credentials really used and redacted
    assert len(events) > 40 and ev.exceptions > 30 and ev.classifications > 30 and chars > 50_000
    assert ev.frames >= ev.exceptions  # each exception's traceback ran through a frame of ours
    assert len(ev.secrets) > 20 and len(ev.url_secrets) == 4
    text = "\n".join(ev.texts)
    for redacted in ("access_token=***", "usersig=***", "secret=***", "Bearer ***", "password=***"):
        assert redacted in text
    for kind in ("token_renewed", "retry_scheduled"):
        assert kind in text
    # every kind of RequestFailed was raised and scanned, chain and traceback included
    assert ev.kinds == {kind.__name__ for kind in retrypolicy.RequestFailed.__subclasses__()}
    # each chained cause kept its type and its scrubbed message
    assert {"LocalProtocolError", "RemoteProtocolError", "ConnectError", "ReadError"} <= set(ev.chained)
    assert "httpx.LocalProtocolError: Illegal header value b'Bearer *** '" in text


# -- known leaks -------------------------------------------------------------------------------


def _run_one(mode: str, policy: str, handler: Handler, hook: Any, method: str, url: str) -> retrypolicy.RequestFailed:
    ev = Evidence()
    with driver(mode) as d:
        client = d.client(policy, handler, ev, token=hook)
        try:
            if mode == "sync":
                client.request(method, url, json={"to": "1"})
            else:
                assert d.portal is not None
                d.portal.call(functools.partial(client.request, method, url, json={"to": "1"}))
        except retrypolicy.RequestFailed as exc:
            return exc
        finally:
            d.close(client)
    raise AssertionError("the request should have failed")


@pytest.mark.parametrize("platform", ["whatsapp_onprem", "whatsapp_cloud"])
def test_token_echoed_in_vendor_details_is_scrubbed(mode: str, platform: str) -> None:
    tokens: list[str] = []

    def hook() -> str:
        tokens.append(new_secret())
        return tokens[-1]

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.headers["authorization"].partition(" ")[2]
        if platform == "whatsapp_onprem":
            body: dict[str, Any] = {"errors": [{"code": 1005, "title": "Access denied", "details": f"{token} expired"}]}
        else:
            body = {"error": {"code": 190, "message": "expired", "error_data": {"details": f"{token} expired"}}}
        return httpx.Response(401, json=body)

    url = (
        "https://localhost:9090/v1/messages"
        if platform == "whatsapp_onprem"
        else "https://graph.facebook.com/v21.0/1/messages"
    )
    exc = _run_one(mode, platform, handler, hook, "POST", url)
    assert isinstance(exc, retrypolicy.TokenRefreshFailed) and len(tokens) == 2
    for token in tokens:
        assert token not in repr(exc.classification)


def test_current_token_quoted_by_a_failing_hook_is_scrubbed(mode: str) -> None:
    current = new_secret()
    calls = [0]

    def hook() -> str:
        calls[0] += 1
        if calls[0] == 1:
            return current
        raise RuntimeError(f"refresh endpoint rejected refresh of {current}")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"errcode": 42001, "errmsg": "access_token expired"})

    with capture_logs() as events:
        exc = _run_one(mode, "wechat", handler, hook, "POST", "https://api.weixin.qq.com/cgi-bin/message/custom/send")
    assert isinstance(exc, retrypolicy.TokenRefreshFailed)
    assert current not in str(exc)
    assert current not in repr(events)


def test_exception_chain_holds_a_scrubbed_stand_in_of_the_cause(mode: str) -> None:
    """What a traceback still tells: the cause's type and scrubbed message, and nothing below it."""
    ev = Evidence()
    token = ev.secret("the token")
    inner = QuotingTransport("wechat", ev)
    url = "https://api.weixin.qq.com/cgi-bin/message/custom/send"
    with driver(mode) as d:
        client = d.client("wechat", None, ev, token=lambda: token, transport=inner)
        for steps in (["ok"], ["remote"]):  # the second request's first attempt is the fast path's
            inner.steps = deque(steps)
            d.request(client, ev, "POST", url, json={"touser": "o1"})
        d.close(client)
        bearer = ev.secret("caller's bearer token")
        with FakeWhatsAppCloud().serve() as base:
            real: Any = httpx.HTTPTransport() if mode == "sync" else httpx.AsyncHTTPTransport()
            client = d.client(
                "whatsapp_cloud", None, ev, transport=real, headers={"Authorization": f"Bearer {bearer}\n"}
            )
            d.request(client, ev, "POST", f"{base}/v21.0/1065/messages", json={"to": "1"})
            d.close(client)
    assert ev.exceptions == 2 and ev.scan() == []
    remote, refused = ev.raised
    for exc, cause_type in ((remote, httpx.RemoteProtocolError), (refused, httpx.LocalProtocolError)):
        cause = exc.__cause__
        assert type(cause) is cause_type and exc.__suppress_context__ and exc.__context__ is None
        assert cause.__cause__ is None and cause.__context__ is None and cause.__traceback__ is None
        assert chain(exc) == [exc, cause]  # the raw httpx, httpcore and h11 errors are gone
        text = "".join(traceback.format_exception(exc))
        assert "The above exception was the direct cause of the following exception" in text
        assert f"{cause_type.__module__}.{cause_type.__name__}: {cause}" in text
    assert str(remote.__cause__) == (f"Server disconnected while sending {url}?access_token=*** (***)")
    assert str(refused.__cause__) == "Illegal header value b'Bearer ***\\n'"
