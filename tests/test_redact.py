"""Redaction by rule: names that say token, secret, sig, passw, ticket or key, the fixed lists,
known values anywhere; and exception chains that hold only scrubbed stand-ins.

Unit tests of ``retrypolicy._redact``, then end-to-end runs through both transports against a
real HTTP server on 127.0.0.1 that echoes WeChat Open Platform credentials back in its errors.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy._redact import (
    REDACTED,
    SECRET_HEADERS,
    SECRET_PARAMS,
    ChainedError,
    is_secret_name,
    raise_from,
    redact_headers,
    redact_url,
    scrub,
    stand_in,
)

# -- the rule --------------------------------------------------------------------------------------

SECRET_NAMES = [
    # WeChat Open Platform (third-party platforms) and JS-SDK
    "component_access_token",
    "component_verify_ticket",
    "authorizer_access_token",
    "authorizer_refresh_token",
    "refresh_token",
    "jsapi_ticket",
    "ticket",
    "pre_auth_code",
    "authorization_code",
    "auth_code",
    # other vendors, any case
    "X-Acs-Dingtalk-Access-Token",
    "ACCESS_TOKEN",
    "usersig",
    "UserSig",
    "msg_signature",
    "sign",
    "api_key",
    "X-Api-Key",
    "apikey",
    "client_secret",
    "appsecret",
    "password",
    "passwd",
    # the fixed lists
    "Authorization",
    "proxy-authorization",
    "Cookie",
    "Set-Cookie",
]
PUBLIC_NAMES = ["appid", "component_appid", "authorizer_appid", "grant_type", "openid", "touser", "msgtype",
                "Content-Type", "errcode", "errmsg", "expires_in", "sdkappid", "identifier", "random", "type",
                "User-Agent", "code"]  # fmt: skip


@pytest.mark.parametrize(("name", "secret"), [(n, True) for n in SECRET_NAMES] + [(n, False) for n in PUBLIC_NAMES])
def test_names_that_say_token_secret_sig_password_ticket_or_key_are_secret(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret
    # the fixed lists stay public (imported by callers) and are covered by the rule, in any case
    assert {"access_token", "usersig", "secret", "appsecret"} <= SECRET_PARAMS
    assert {"authorization", "cookie", "x-api-key"} <= SECRET_HEADERS
    assert all(is_secret_name(n) and is_secret_name(n.upper()) for n in SECRET_PARAMS | SECRET_HEADERS)


def test_a_harmless_name_containing_key_is_over_redacted_as_the_readme_says() -> None:
    # README: "The rule over-redacts a harmless name that contains one of the words (`keyword`,
    # `monkey`, `design`, `Idempotency-Key`)"
    assert scrub("keyword=retry&monkey=1&design=flat") == "keyword=***&monkey=***&design=***"
    assert redact_headers([("Idempotency-Key", "k1")]) == {"Idempotency-Key": REDACTED}


# -- URLs, headers, free text ---------------------------------------------------------------------


def test_redact_url_by_rule_keeps_the_rest() -> None:
    url = (
        "https://api.weixin.qq.com/cgi-bin/component/api_authorizer_token"
        "?component_access_token=CAT-1234&component_appid=wx9&authorizer_refresh_token=ART-5678&JSAPI_TICKET=t-9"
    )
    assert redact_url(url) == (
        "https://api.weixin.qq.com/cgi-bin/component/api_authorizer_token"
        "?component_access_token=***&component_appid=wx9&authorizer_refresh_token=***&JSAPI_TICKET=***"
    )
    assert redact_url(httpx.URL(url)) == redact_url(url)


def test_redact_url_userinfo_fragment_and_bad_urls() -> None:
    assert redact_url("https://admin:hunter22@h.example/p?x=1") == "https://***@h.example/p?x=1"
    assert redact_url("https://h.example/cb#access_token=tok-123456&state=s1") == (
        "https://h.example/cb#access_token=***&state=s1"
    )
    assert redact_url("https://h.example/p?a=1&b=2") == "https://h.example/p?a=1&b=2"  # untouched
    assert "tok-123456" not in redact_url("http://[bad/?access_token=tok-123456")


def test_redact_headers_by_rule() -> None:
    headers = httpx.Headers(
        {
            "X-Acs-Dingtalk-Access-Token": "dt-1",
            "Authorization": "Bearer b-1",
            "Content-Type": "application/json",
            "Cookie": "sid=1",
            "X-Request-Id": "r-1",
        }
    )
    assert redact_headers(headers) == {
        "x-acs-dingtalk-access-token": REDACTED,
        "authorization": REDACTED,
        "content-type": "application/json",
        "cookie": REDACTED,
        "x-request-id": "r-1",
    }
    assert redact_headers([("X-Api-Key", "k"), ("Accept", "*/*")]) == {"X-Api-Key": REDACTED, "Accept": "*/*"}


PROSE = [
    "Error validating access token: Session has expired",
    "invalid credential, access_token is invalid rid: 1-2",
    "errcode=40001 openid=o1 appid=wx9",
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "POST /cgi-bin/component/api_query_auth?component_access_token=CAT-1&x=1 failed",
            "POST /cgi-bin/component/api_query_auth?component_access_token=***&x=1 failed",
        ),
        (
            '{"component_appid": "wx9", "authorizer_refresh_token": "ART-1", "jsapi_ticket":"JT-1"}',
            '{"component_appid": "wx9", "authorizer_refresh_token": "***", "jsapi_ticket":"***"}',
        ),
        ("{'client_secret': 'two words', 'grant_type': 'x'}", "{'client_secret': '***', 'grant_type': 'x'}"),
        (r'{"token": "a\"b", "next": "c"}', r'{"token": "***", "next": "c"}'),
        ('errmsg cut at 500 characters: {"jsapi_ticket":"JT-12', 'errmsg cut at 500 characters: {"jsapi_ticket":"***"'),
        ('password="two words" user=admin', 'password="***" user=admin'),
        ("login form username=admin&password=pw-1 was rejected", "login form username=admin&password=*** was rejected"),
        ("X-Acs-Dingtalk-Access-Token=dt-1; trace=2", "X-Acs-Dingtalk-Access-Token=***; trace=2"),
        ("Illegal header value b'Bearer EAAB-1 '", "Illegal header value b'Bearer *** '"),
        ("header Authorization: Basic YWRtaW46cHc=", "header Authorization: Basic ***"),
        # prose stays readable: "name: value" is not a pair, and names that are not secret stay
        *((prose, prose) for prose in PROSE),
    ],
)
def test_scrub_free_text_by_rule(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_scrub_known_values_anywhere() -> None:
    token = "tok_" + secrets.token_urlsafe(24) + "/+="  # characters that URL encoding changes
    text = f"got {token} then {httpx.QueryParams({'a': token})} then cut {token[:11]}"
    assert scrub(text, [token]) == "got *** then a=*** then cut ***"
    assert token[:8] not in scrub(f"truncated at {token[:8]}", [token])
    assert scrub("x abc y", ["abc"]) == "x abc y"  # values shorter than 4 are not searched for
    assert scrub("no secret here", ["", "unrelated-value"]) == "no secret here"


# -- exception chains --------------------------------------------------------------------------------


def chain(exc: BaseException) -> list[BaseException]:
    """Every exception reachable through __cause__ and __context__, displayed or not."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]
    return seen


def quoting(token: str) -> httpx.LocalProtocolError:
    try:
        try:
            raise ValueError(f"h11 refused {token}")
        except ValueError as inner:
            raise httpx.LocalProtocolError(f"Illegal header value b'Bearer {token} '") from inner
    except httpx.LocalProtocolError as exc:
        return exc


def test_stand_in_keeps_type_and_scrubbed_message_and_nothing_else() -> None:
    token = secrets.token_urlsafe(24)
    original = quoting(token)
    copy = stand_in(original, [token])
    assert type(copy) is httpx.LocalProtocolError
    assert str(copy) == "Illegal header value b'Bearer *** '"
    assert copy.args == ("Illegal header value b'Bearer *** '",)
    assert copy.__cause__ is None and copy.__context__ is None and copy.__traceback__ is None
    with pytest.raises(RuntimeError):  # no request (its URL and headers hold the token)
        _ = copy.request


def test_stand_in_for_types_that_cannot_be_copied() -> None:
    class Picky(Exception):
        def __init__(self, message: str, *, code: int) -> None:
            super().__init__(message, code)

    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    picky = stand_in(Picky("secret=s3cr3t-value refused", code=5))
    assert isinstance(picky, ChainedError)
    assert str(picky).endswith("Picky: ('secret=*** refused', 5)") and "s3cr3t" not in str(picky)
    assert str(stand_in(Broken("x"))).endswith("Broken")


@pytest.mark.parametrize("with_cause", [True, False])
def test_raise_from_drops_the_implicit_context(with_cause: bool) -> None:
    token = secrets.token_urlsafe(24)
    out = RuntimeError("what we raise")
    with pytest.raises(RuntimeError) as info:
        try:
            raise quoting(token)  # being handled where we raise: Python would chain it as __context__
        except httpx.LocalProtocolError as handled:
            raise_from(out, handled if with_cause else None, [token])
    assert info.value is out and out.__context__ is None and out.__suppress_context__
    reachable = chain(out)
    assert all(token not in str(e) and token not in repr(e.args) for e in reachable)
    if with_cause:
        assert [type(e) for e in reachable] == [RuntimeError, httpx.LocalProtocolError]
        assert "LocalProtocolError: Illegal header value b'Bearer *** '" in "".join(traceback.format_exception(out))
    else:
        assert reachable == [out]


# -- end to end: WeChat Open Platform credentials, over a real socket, sync and async ----------------


@contextlib.contextmanager
def echoing_server() -> Iterator[str]:
    """A WeChat-like API on 127.0.0.1 that refuses every call with 40003 and, like a debugging
    gateway, quotes the request target, its body and its custom (``X-``) headers in ``errmsg``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            headers = json.dumps({k.lower(): v for k, v in self.headers.items() if k.lower().startswith("x-")})
            echo = f"invalid openid: {self.command} {self.path} body {body} headers {headers} rid: 6601-ee"
            data = json.dumps({"errcode": 40003, "errmsg": echo}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def open_platform_call(mode: str, base: str, creds: dict[str, str]) -> retrypolicy.RequestFailed:
    url = f"{base}/cgi-bin/component/api_authorizer_token?component_access_token={creds['component']}"
    body = {"component_appid": "wx0c0mp0nent", "authorizer_appid": "wx0auth0rizer",
            "authorizer_refresh_token": creds["refresh"], "authorization_code": creds["code"]}  # fmt: skip
    headers = {"X-Acs-Dingtalk-Access-Token": creds["dingtalk"]}

    def check(exc: retrypolicy.RequestFailed | None) -> retrypolicy.RequestFailed:
        assert isinstance(exc, retrypolicy.RequestRejected)
        return exc

    if mode == "sync":
        with httpx.Client(transport=retrypolicy.RetryTransport("wechat"), headers=headers) as client:
            try:
                client.post(url, json=body)
            except retrypolicy.RequestFailed as exc:
                return check(exc)
        return check(None)

    async def run() -> retrypolicy.RequestFailed:
        async with httpx.AsyncClient(transport=retrypolicy.AsyncRetryTransport("wechat"), headers=headers) as client:
            try:
                await client.post(url, json=body)
            except retrypolicy.RequestFailed as exc:
                return check(exc)
        return check(None)

    return anyio.run(run)


def test_open_platform_credentials_never_reach_events_or_exceptions(mode: str) -> None:
    creds = {k: f"{k}-{secrets.token_urlsafe(24)}" for k in ("component", "refresh", "code", "dingtalk")}
    with echoing_server() as base, capture_logs() as events:
        exc = open_platform_call(mode, base, creds)
    gave_up = [e for e in events if e["event"] == "retrypolicy.gave_up"]
    assert len(gave_up) == 1 and gave_up[0]["error"] == "RequestRejected" and gave_up[0]["code"] == 40003
    texts = [repr(events), str(exc), repr(exc), repr(exc.args), exc.url, repr(exc.classification)]
    texts += ["".join(traceback.format_exception(e)) for e in chain(exc)]
    for what, value in creds.items():
        leaks = [text for text in texts if value in text or value[-16:] in text]
        assert leaks == [], f"{what} leaked"
    # what stays: the URL without its token, the echo with its public fields, the vendor's code
    assert exc.url.endswith("/cgi-bin/component/api_authorizer_token?component_access_token=***")
    assert gave_up[0]["url"] == exc.url
    message = gave_up[0]["message"]
    assert "component_access_token=***" in message and '"authorizer_refresh_token":"***"' in message
    assert '"x-acs-dingtalk-access-token": "***"' in message and '"authorization_code":"***"' in message
    assert '"component_appid":"wx0c0mp0nent"' in message and "rid: 6601-ee" in message
    assert str(exc) == exc.args[0] and "vendor message: invalid openid" in str(exc)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_failure_leaves_no_frame_of_ours_holding_the_token(mode: str) -> None:
    """What a failed request raises keeps none of the frames it came through: their locals held the
    copies sent with the token filled in, which Sentry (include_local_variables), structlog's
    dict_tracebacks (show_locals) and pytest --showlocals print. The copies' repr hides it too."""
    token = "tok-" + "S3CRET" * 6
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(repr(request))
        if request.extensions.get("ok"):
            return httpx.Response(200, json={"errcode": 0})
        return httpx.Response(200, json={"errcode": 40003, "errmsg": "invalid openid"})

    url = "https://api.weixin.qq.com/cgi-bin/message/custom/send"
    kind = retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport
    transport: Any = kind("wechat", transport=httpx.MockTransport(handler), token=lambda: token)

    async def run() -> BaseException:
        client: Any = (httpx.Client if mode == "sync" else httpx.AsyncClient)(transport=transport)
        for ok in (True, False):  # the token's first success (the flow), then a failure on the fast path
            try:
                response = client.post(url, json={"touser": "o1"}, extensions={"ok": ok})
                if mode == "async":
                    await response
            except retrypolicy.RequestFailed as exc:
                return exc
        raise AssertionError("no failure")

    exc = anyio.run(run)
    assert isinstance(exc, retrypolicy.RequestRejected)
    text = "".join(traceback.TracebackException.from_exception(exc, capture_locals=True).format())
    ours = [f for f, _ in traceback.walk_tb(exc.__traceback__) if "retrypolicy" in f.f_code.co_filename]
    assert [f.f_code.co_name for f in ours] == ["handle_request" if mode == "sync" else "handle_async_request"]
    assert token not in text and "S3CRET" not in text
    assert seen == [f"<Request('POST', '{url}?access_token=***')>"] * 2  # what an inner transport's repr shows
