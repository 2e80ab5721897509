"""Policy.classify on real httpx responses: every wire shape, the HTTP fallbacks, and bad bodies."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import retrypolicy
from retrypolicy import Category, Classification, Policy, load_policy


@pytest.fixture
def wechat() -> Policy:
    return load_policy("wechat")


@pytest.fixture
def tencent() -> Policy:
    return load_policy("tencent_im")


@pytest.fixture
def onprem() -> Policy:
    return load_policy("whatsapp_onprem")


@pytest.fixture
def cloud() -> Policy:
    return load_policy("whatsapp_cloud")


def _response(status: int, content: bytes = b"", content_type: str = "application/json") -> httpx.Response:
    return httpx.Response(status, headers={"content-type": content_type}, content=content)


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


def _fetch(response: httpx.Response, url: str = "https://api.example.test/send") -> httpx.Response:
    """The response as a real client returns it (read, with a request attached)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return response

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        return client.post(url, json={"touser": "someone"})


def _must(c: Classification | None) -> Classification:
    assert c is not None, "expected a failure, got success"
    return c


# -- WeChat ----------------------------------------------------------------------------------


def test_wechat_error_with_rid(wechat: Policy) -> None:
    body = {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid rid: 6543-abc"}
    c = _must(wechat.classify(_json(200, body)))
    assert c.platform == "wechat"
    assert c.code == 40001
    assert c.category is Category.TOKEN_REFRESH
    assert c.request_id == "6543-abc"
    assert c.message == body["errmsg"]
    assert c.status_code == 200
    assert c.source == "body"
    assert c.known
    rule = wechat.rule_for(40001)
    assert rule is not None and c.description == rule.description


def test_wechat_through_a_real_client(wechat: Policy) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"errcode": 45015, "errmsg": "response out of time limit rid: 77aa-bb"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        response = client.post("https://api.weixin.qq.com/cgi-bin/message/custom/send", json={"touser": "u"})
    assert len(calls) == 1
    c = _must(wechat.classify(response))
    assert c.code == 45015
    assert c.category is Category.USER_ACTION
    assert c.remediation
    assert c.request_id == "77aa-bb"


def test_wechat_without_rid(wechat: Policy) -> None:
    c = _must(wechat.classify(_json(200, {"errcode": 40001, "errmsg": "invalid credential"})))
    assert c.request_id is None


@pytest.mark.parametrize("raw", [42001, "42001", 42001.0, " 42001 "])
def test_wechat_errcode_encodings(wechat: Policy, raw: object) -> None:
    c = _must(wechat.classify(_fetch(_json(200, {"errcode": raw, "errmsg": "access_token expired"}))))
    assert c.code == 42001
    assert isinstance(c.code, int)
    assert c.category is Category.TOKEN_REFRESH
    assert c.known


def test_wechat_base_resp_nesting(wechat: Policy) -> None:
    body = {"base_resp": {"errcode": 45011, "errmsg": "api minute-quota reach limit rid: 1-x"}, "data": []}
    c = _must(wechat.classify(_fetch(_json(200, body))))
    assert c.code == 45011
    assert c.category is Category.RETRYABLE
    assert c.min_delay == 60
    assert c.message.startswith("api minute-quota")
    assert c.request_id == "1-x"


def test_wechat_base_resp_success(wechat: Policy) -> None:
    assert wechat.classify(_json(200, {"base_resp": {"errcode": 0, "errmsg": "ok"}, "list": [1]})) is None


def test_wechat_errcode_zero_is_success(wechat: Policy) -> None:
    assert wechat.classify(_fetch(_json(200, {"errcode": 0, "errmsg": "ok", "msgid": 123}))) is None


def test_wechat_success_body_without_errcode(wechat: Policy) -> None:
    assert wechat.classify(_fetch(_json(200, {"access_token": "ACCESS", "expires_in": 7200}))) is None


def test_wechat_text_plain_content_type(wechat: Policy) -> None:
    content = json.dumps({"errcode": -1, "errmsg": "system error"}).encode()
    response = _fetch(_response(200, content, content_type="text/plain"))
    assert response.headers["content-type"] == "text/plain"
    c = _must(wechat.classify(response))
    assert c.code == -1
    assert c.category is Category.RETRYABLE


# -- Tencent Cloud Chat -----------------------------------------------------------------------


def test_tencent_fail_with_error_code(tencent: Policy) -> None:
    body = {"ActionStatus": "FAIL", "ErrorCode": 70001, "ErrorInfo": "usersig is expired"}
    c = _must(tencent.classify(_fetch(_json(200, body))))
    assert c.code == 70001
    assert c.category is Category.TOKEN_REFRESH
    assert c.message == "usersig is expired"
    assert c.known


def test_tencent_ok_is_success(tencent: Policy) -> None:
    body = {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}
    assert tencent.classify(_fetch(_json(200, body))) is None


@pytest.mark.parametrize(
    "body",
    [
        {"ActionStatus": "FAIL", "ErrorCode": 0, "ErrorInfo": "odd"},
        {"ActionStatus": "FAIL", "ErrorInfo": "odd"},
    ],
    ids=["code-0", "code-missing"],
)
def test_tencent_fail_without_usable_code(tencent: Policy, body: dict[str, Any]) -> None:
    c = _must(tencent.classify(_json(200, body)))
    assert not c.known
    assert c.category is tencent.unknown_category
    assert c.source == "body"
    assert c.message == "odd"
    assert c.status_code == 200


# -- WhatsApp on-premises ---------------------------------------------------------------------


def test_onprem_errors_array(onprem: Policy) -> None:
    body = {
        "errors": [{"code": 1015, "title": "Too many requests", "details": "Rate limit hit for this endpoint"}],
        "meta": {},
    }
    c = _must(onprem.classify(_fetch(_json(429, body))))
    assert c.code == 1015
    assert c.category is Category.RETRYABLE
    assert c.message == "Too many requests"
    assert c.details == "Rate limit hit for this endpoint"
    assert c.status_code == 429
    assert c.source == "body"


def test_onprem_empty_errors_falls_back(onprem: Policy) -> None:
    c = _must(onprem.classify(_json(503, {"errors": [], "meta": {}})))
    assert c.source == "http"
    assert c.code is None
    assert c.category is Category.RETRYABLE


# -- WhatsApp Cloud ---------------------------------------------------------------------------


def _graph_error(code: int, subcode: int | None = None, *, transient: bool = False) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": "Error validating access token",
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AbCdEf123",
        "is_transient": transient,
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


def test_cloud_code_with_subcode(cloud: Policy) -> None:
    c = _must(cloud.classify(_fetch(_json(401, _graph_error(190, 463)))))
    assert (c.code, c.subcode) == (190, 463)
    assert c.category is Category.TOKEN_REFRESH
    assert c.request_id == "AbCdEf123"
    assert c.message == "Error validating access token"
    assert c.status_code == 401


def test_cloud_subcode_changes_the_verdict(cloud: Policy) -> None:
    c = _must(cloud.classify(_json(401, _graph_error(190, 460))))
    assert c.category is Category.USER_ACTION
    assert c.remediation


def test_cloud_details(cloud: Policy) -> None:
    body = _graph_error(131056)
    body["error"]["error_data"] = {"messaging_product": "whatsapp", "details": "pair rate limit"}
    c = _must(cloud.classify(_json(400, body)))
    assert c.category is Category.RETRYABLE
    assert c.details == "pair rate limit"
    assert c.min_delay > 0


def test_cloud_unknown_transient_code_is_retryable(cloud: Policy) -> None:
    code = 987_654_321
    assert cloud.rule_for(code) is None
    c = _must(cloud.classify(_json(400, _graph_error(code, transient=True))))
    assert c.category is Category.RETRYABLE
    assert not c.known
    assert c.code == code


@pytest.mark.parametrize("platform", list(retrypolicy.BUILTIN_POLICIES))
def test_unknown_code_uses_unknown_category(platform: str) -> None:
    policy = load_policy(platform)
    code = 987_654_321
    assert policy.rule_for(code) is None
    bodies = {
        "wechat": {"errcode": code, "errmsg": "new"},
        "tencent_im": {"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": "new"},
        "whatsapp_onprem": {"errors": [{"code": code, "title": "new"}]},
        "whatsapp_cloud": _graph_error(code),
        "slack": {"ok": False, "error": code},
        "telegram": {"ok": False, "error_code": code, "description": "new"},
        "wecom": {"errcode": code, "errmsg": "new"},
        "feishu": {"code": code, "msg": "new"},
        "dingtalk": {"errcode": code, "errmsg": "new"},
    }
    c = _must(policy.classify(_json(400, bodies[platform])))
    assert c.code == code
    assert c.category is policy.unknown_category
    assert not c.known
    assert c.source == "body"


def test_unknown_category_follows_a_user_table(tmp_path: Any) -> None:
    path = tmp_path / "strict.toml"
    path.write_text('extends = "wechat"\nunknown_category = "retryable"\n', encoding="utf-8")
    policy = load_policy(path)
    c = _must(policy.classify(_json(200, {"errcode": 987_654_321})))
    assert c.category is Category.RETRYABLE
    assert not c.known


# -- HTTP fallbacks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "category", "ambiguous"),
    [
        (429, Category.RETRYABLE, False),
        (502, Category.RETRYABLE, True),
        (503, Category.RETRYABLE, False),
        (504, Category.RETRYABLE, True),
        (500, Category.RETRYABLE, True),
        (401, Category.TOKEN_REFRESH, False),
        (404, Category.FATAL, False),
    ],
)
@pytest.mark.parametrize("platform", list(retrypolicy.BUILTIN_POLICIES))
def test_http_fallback(platform: str, status: int, category: Category, ambiguous: bool) -> None:
    policy = load_policy(platform)
    if status == 401 and platform in _NO_401_RENEWAL:
        category = _NO_401_RENEWAL[platform]
    c = _must(policy.classify(_fetch(httpx.Response(status, json={"result": "nope"}))))
    assert c.source == "http"
    assert c.code is None
    assert c.category is category
    assert c.ambiguous is ambiguous
    assert c.status_code == status
    assert str(status) in c.description


_NO_401_RENEWAL = {
    "telegram": Category.USER_ACTION,  # a static bot token: a 401 needs BotFather, never a renewal
    "slack": Category.FATAL,  # Slack answers auth errors in the body (invalid_auth); a bare 401 is no Slack answer
}


@pytest.mark.parametrize("status", [200, 201, 204, 302])
def test_http_success_statuses(wechat: Policy, status: int) -> None:
    assert wechat.classify(httpx.Response(status)) is None


# -- bad bodies never raise -------------------------------------------------------------------

_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b'<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center class="error">nginx</center>\r\n'
    b"</body>\r\n</html>\r\n"
)


@pytest.mark.parametrize(
    "content",
    [
        _HTML_502,
        b"",
        b'{"errcode": 40001, "errmsg": "\xff\xfe bad utf-8"}',
        b'[{"errcode": 40001}]',
        b'"errcode"',
        b"[" * 100_000,
        b"[" * 100_000 + b'"errcode"' + b'"error"' + b'"errors"' + b'"ErrorCode"',
        b'{"errcode": 40001, "errmsg": "truncated',
        b'{"errcode": ' + b"9" * 5000 + b"}",
    ],
    ids=["html", "empty", "bad-utf8", "json-list", "json-string", "nested", "nested-marked", "truncated", "huge-int"],
)
@pytest.mark.parametrize("platform", list(retrypolicy.BUILTIN_POLICIES))
def test_bad_body_falls_back_to_status(platform: str, content: bytes) -> None:
    policy = load_policy(platform)
    c = _must(policy.classify(_response(502, content, content_type="text/html")))
    assert c.source == "http"
    assert c.code is None
    assert c.category is Category.RETRYABLE
    assert c.ambiguous
    assert c.status_code == 502
    # on a 200 the same body is a success, unless it names a code key it cannot be read for
    # (then it is never a success: retryable, and ambiguous since the request may have been done)
    on_200 = policy.classify(_response(200, content, content_type="text/html"))
    if on_200 is not None:
        assert (on_200.code, on_200.category, on_200.ambiguous) == (None, Category.RETRYABLE, True)
        assert any(f'"{path[0]}"'.encode() in content for path in policy.extract.code)


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"errcode": 40001, "errmsg": "\xff\xfe bad utf-8"}', {}),
        (b'{"errcode": 40001, "errmsg": "truncated', {}),
        (b"[" * 60_000 + b'"errcode"', {}),
        ('{"errcode":45015,"errmsg":"\u56de\u590d"}'.encode("gbk"), {"content-type": "application/json"}),
    ],
    ids=["bad-utf8", "truncated", "nested", "gbk-declared-as-utf8"],
)
def test_unreadable_body_naming_a_code_is_never_a_success(
    wechat: Policy, content: bytes, headers: dict[str, str]
) -> None:
    c = _must(wechat.classify(httpx.Response(200, content=content, headers=headers)))
    assert (c.code, c.category, c.ambiguous, c.status_code) == (None, Category.RETRYABLE, True, 200)
    assert "could not be" in c.description


MALFORMED: list[tuple[str, bytes, bool]] = [
    # (table, a body a strict JSON parser refuses, taken for a success)
    ("whatsapp_onprem", b'"errors"}', True),  # no code in it at all (found by the success-scan property)
    ("wechat", b'{"errcode":0}}', True),  # a success object, then a stray brace
    ("wechat", b'{"errcode":0,"errmsg":"ok",}', True),  # a trailing comma
    ("wechat", b'{"errcode":0}{}', True),
    ("wechat", b'{"errcode":40001}}', False),  # a failure code stays a failure: unreadable, retryable
    ("wechat", b'{"errcode":0,"errmsg":"ok"', False),  # cut off: not proved, never a success
    ("tencent_im", b'{"ActionStatus":"FAIL","ErrorCode":70001}}', False),
]


@pytest.mark.parametrize(("name", "content", "success"), MALFORMED, ids=[repr(c) for _, c, _ in MALFORMED])
def test_a_malformed_body_gets_the_same_verdict_with_and_without_the_regex_proof(
    name: str, content: bytes, success: bool
) -> None:
    """The fast path proves a success by a regex and never decodes it; a strict decode of the same
    body must not say otherwise (Policy._unreadable asks the same proof): a body whose code keys
    all visibly hold success codes and which ends in ``}`` is a success even if a parser refuses
    the bytes around them; any other unparseable body naming a code key is retryable-ambiguous."""
    fast = retrypolicy.load_policy(name)
    slow = dataclasses.replace(fast)
    object.__setattr__(slow, "_success_scan", None)  # always decode
    verdicts = [p.classify(httpx.Response(200, content=content)) for p in (fast, slow)]
    assert verdicts[0] == verdicts[1]
    assert (verdicts[0] is None) is success
    if not success:
        assert verdicts[0] is not None and verdicts[0].ambiguous and verdicts[0].category is Category.RETRYABLE


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        ('{"errcode":45015,"errmsg":"\u56de\u590d\u65f6\u95f4"}'.encode("gbk"), "application/json; charset=gbk"),
        ('{"errcode":45015,"errmsg":"\u56de\u590d"}'.encode("gb18030"), 'application/json; charset="GB18030"'),
        ('{"errcode":45015,"errmsg":"\u56de\u590d"}'.encode("utf-16"), "application/json"),
        ('{"errcode":45015,"errmsg":"\u56de\u590d"}'.encode("utf-16-be"), "application/json; charset=utf-16-be"),
        ('{"errcode":45015,"errmsg":"\u56de\u590d"}'.encode("utf-32"), "application/json"),
        ('{"errcode":45015,"errmsg":"\u56de\u590d"}'.encode("utf-16-le"), "application/json"),
        (b"\xef\xbb\xbf" + '{"errcode":45015,"errmsg":"\u56de\u590d"}'.encode(), "application/json; charset=utf-8"),
        (b'{"errcode":45015,"errmsg":"ok"}', "application/json; charset=x-unknown-charset"),
    ],
    ids=[
        "gbk",
        "gb18030-quoted",
        "utf16-bom",
        "utf16be-declared",
        "utf32-bom",
        "utf16le-sniffed",
        "utf8-bom-declared",
        "unknown-charset",
    ],
)
def test_body_in_its_declared_charset_is_read_for_its_code(wechat: Policy, content: bytes, ctype: str) -> None:
    c = _must(wechat.classify(httpx.Response(200, content=content, headers={"content-type": ctype})))
    assert (c.code, c.category) == (45015, Category.USER_ACTION)


@pytest.mark.parametrize(
    "content",
    [b'{"errcode": 0, "errmsg": "ok', b'{"errcode":0,"data":[[[', b'{"errcode": 0} trailing garbage'],
    ids=["truncated", "unclosed", "trailing"],
)
def test_malformed_success_looking_body_falls_back_to_status(wechat: Policy, content: bytes) -> None:
    """A body that only starts like ``{"errcode": 0`` but is not valid JSON is a bad body: from 400
    up the status decides; below, it is never a success (what was cut off may hold the failure)."""
    c = _must(wechat.classify(_response(502, content)))
    assert c.source == "http"
    assert c.category is Category.RETRYABLE
    assert c.ambiguous
    c = _must(wechat.classify(_response(200, content)))
    assert (c.code, c.category, c.ambiguous, c.source) == (None, Category.RETRYABLE, True, "body")


def test_well_formed_success_body_is_success_whatever_the_padding(wechat: Policy) -> None:
    assert wechat.classify(_response(200, b' \r\n{ "errcode" : 0 , "errmsg" : "ok" }\n')) is None
    assert wechat.classify(_response(200, b'\xef\xbb\xbf{"errcode": 0, "errmsg": "ok"}')) is None
    # the code appears twice (top level and nested): the first path wins, and it is an error
    c = _must(wechat.classify(_response(200, b'{"errcode": 40001, "base_resp": {"errcode": 0}}')))
    assert c.code == 40001
    # a \\u escape may spell the key: still read correctly
    c = _must(wechat.classify(_response(200, b'{"errcode": 0, "\\u0065rrcode": 40001}')))
    assert c.code == 40001


def test_html_502_through_a_client(wechat: Policy) -> None:
    c = _must(wechat.classify(_fetch(_response(502, _HTML_502, content_type="text/html"))))
    assert c.source == "http"
    assert c.message == "Bad Gateway"


def test_body_over_max_body_bytes_is_ignored(wechat: Policy) -> None:
    body = {"errcode": 40001, "errmsg": "invalid credential", "pad": "x" * 200}
    content = json.dumps(body).encode()
    small = wechat.with_retry(max_body_bytes=len(content) - 1)
    assert small.retry.max_body_bytes < len(content)
    # within the limit the code is read ...
    assert _must(wechat.classify(_response(200, content))).code == 40001
    # ... over it the body is ignored: success on 200, the status decides otherwise
    assert small.classify(_response(200, content)) is None
    c = _must(small.classify(_response(503, content)))
    assert c.source == "http"
    assert c.code is None


def test_default_body_limit(wechat: Policy) -> None:
    limit = wechat.retry.max_body_bytes
    content = b'{"errcode": 40001, "pad": "' + b"x" * limit + b'"}'
    assert len(content) > limit
    assert wechat.classify(_response(200, content)) is None


@pytest.mark.parametrize("raw", [True, False])
def test_bool_errcode_is_not_a_code(wechat: Policy, raw: bool) -> None:
    c = _must(wechat.classify(_json(200, {"errcode": raw, "errmsg": "weird"})))
    assert c.code is None  # True == 1 and False == 0 in Python; neither may pass for a code
    assert not c.known
    assert c.category is wechat.unknown_category
    assert c.source == "body"


@pytest.mark.parametrize("raw", ["abc", "", [40001], {"v": 1}, 1.5, "4e4", "99999999999999999999999"])
def test_unusable_errcode_is_an_error_without_code(wechat: Policy, raw: object) -> None:
    c = _must(wechat.classify(_json(200, {"errcode": raw, "errmsg": "weird"})))
    assert c.code is None
    assert not c.known
    assert c.category is wechat.unknown_category
    assert c.message == "weird"
    assert "usable code" in c.description


def test_long_vendor_message_is_truncated(wechat: Policy) -> None:
    c = _must(wechat.classify(_json(200, {"errcode": 40001, "errmsg": "m" * 10_000})))
    assert 0 < len(c.message) <= 1000


# -- streams ----------------------------------------------------------------------------------


def test_unread_stream_only_status_counts(wechat: Policy) -> None:
    content = json.dumps({"errcode": 40001, "errmsg": "invalid credential"}).encode()
    ok = httpx.Response(200, stream=httpx.ByteStream(content))
    assert wechat.classify(ok) is None  # the body is not read, so a 200 is success
    with pytest.raises(httpx.ResponseNotRead):
        _ = ok.content  # classify did not read it behind the caller's back

    bad = httpx.Response(502, stream=httpx.ByteStream(content))
    c = _must(wechat.classify(bad))
    assert c.source == "http"
    assert c.code is None
    assert c.category is Category.RETRYABLE

    # once read, the code in the body counts
    ok.read()
    assert _must(wechat.classify(ok)).code == 40001


def test_streamed_client_response(wechat: Policy) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        content = json.dumps({"errcode": 42001, "errmsg": "access_token expired"}).encode()
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=httpx.ByteStream(content))

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        client.stream("GET", "https://api.weixin.qq.com/cgi-bin/user/get") as response,
    ):
        assert response.is_stream_consumed is False
        assert wechat.classify(response) is None
        response.read()
        c = _must(wechat.classify(response))
    assert c.code == 42001
    assert c.category is Category.TOKEN_REFRESH


# -- the classification object ----------------------------------------------------------------


def test_classification_is_frozen(wechat: Policy) -> None:
    c = _must(wechat.classify(_json(200, {"errcode": 40001})))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.category = Category.FATAL  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.code = 1  # type: ignore[misc]
    assert c.category is Category.TOKEN_REFRESH


def test_rule_is_frozen(wechat: Policy) -> None:
    rule = wechat.rule_for(40001)
    assert rule is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.category = Category.FATAL  # type: ignore[misc]


@pytest.mark.parametrize(
    ("platform", "response"),
    [
        ("wechat", _json(200, {"errcode": 40001, "errmsg": "invalid credential rid: 1-a"})),
        ("whatsapp_cloud", _json(400, _graph_error(190, 463))),
        ("wechat", _response(502, _HTML_502)),
    ],
    ids=["wechat", "cloud", "http"],
)
def test_as_dict_is_json(platform: str, response: httpx.Response) -> None:
    c = _must(load_policy(platform).classify(response))
    d = c.as_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["category"] == c.category.value
    assert isinstance(d["category"], str)
    assert d["code"] == c.code
    assert d["source"] == c.source
    assert set(d) == {f.name for f in dataclasses.fields(c)}


def test_explain_has_no_vendor_message(wechat: Policy) -> None:
    c = wechat.explain(40001)
    assert c.message == ""
    assert c.status_code is None
    assert c.category is Category.TOKEN_REFRESH
    unknown = wechat.explain(987_654_321)
    assert not unknown.known
    assert unknown.category is wechat.unknown_category


def test_category_values() -> None:
    assert sorted(c.value for c in Category) == sorted(["retryable", "token-refresh", "user-action", "fatal"])
    assert Category("token-refresh") is Category.TOKEN_REFRESH
    assert all(isinstance(c, str) and str(c) == c.value for c in Category)  # StrEnum: usable as plain text


def test_public_api() -> None:
    expected = [
        "BUILTIN_POLICIES",
        "EXTENSION",
        "SHIPPED_POLICIES",
        "AttemptRecord",
        "TestingMode",
        "AsyncRetryTransport",
        "AsyncTokenHook",
        "Category",
        "CircuitBreaker",
        "CircuitOpen",
        "CircuitStatus",
        "Classification",
        "ConfigurationError",
        "Policy",
        "PolicyError",
        "RequestFailed",
        "RequestRejected",
        "ResendUnsafe",
        "RetriesExhausted",
        "RetryPolicyError",
        "RetrySettings",
        "RetryTransport",
        "Rule",
        "Token",
        "TokenHook",
        "TokenPlacement",
        "TokenRefreshFailed",
        "UserActionRequired",
        "__version__",
        "is_testing",
        "load_policy",
        "redact_url",
        "set_testing",
        "ActiveCooldown",
        "Cooldown",
        "CooldownActive",
        "RetryBudget",
        "RetryBudgetExhausted",
        "Snapshot",
        "MemoryTokenStore",
        "RedisTokenStore",
        "TokenStore",
    ]
    assert sorted(retrypolicy.__all__) == sorted(expected)
    # in the order ruff's RUF022 keeps: constants, then classes, then functions, each sorted
    kinds = [(0 if n.isupper() else 1 if n[0].isupper() else 2, n) for n in retrypolicy.__all__]
    assert kinds == sorted(kinds)
    assert len(retrypolicy.__all__) == len(set(retrypolicy.__all__))
    for name in retrypolicy.__all__:
        assert hasattr(retrypolicy, name), name
    namespace: dict[str, Any] = {}
    exec("from retrypolicy import *", namespace)
    assert set(expected) <= set(namespace)


def test_every_module_can_be_imported_first() -> None:
    """Each module of the package, imported first in a fresh interpreter, imports: no cycle that
    only a lucky import order hides (``retrypolicy._chat_hooks`` used to need ``retrypolicy.hooks``
    imported before it)."""
    import pkgutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    modules = pkgutil.walk_packages(retrypolicy.__path__, "retrypolicy.")
    names = sorted(m.name for m in modules if m.name != "retrypolicy.__main__")  # that one runs the CLI
    assert {"retrypolicy._chat_hooks", "retrypolicy._enterprise_hooks", "retrypolicy.hooks"} <= set(names)
    script = "import sys, importlib; [importlib.import_module(n) for n in sys.argv[1:]]"
    failed = {}
    for name in names:
        command = [sys.executable, "-c", script, name]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            failed[name] = done.stderr.strip().splitlines()[-1]
    assert failed == {}


# -- the regex proof of success (Policy._success_scan) ----------------------------------------

SCAN_CASES = [
    # (table, body, proved without decoding, code of the failure or None for success)
    ("wechat", b'{"errcode":0,"errmsg":"ok"}', True, None),
    ("wechat", b'{"errmsg": "ok", "errcode": 0}', True, None),  # the code need not come first
    ("wechat", b'{"errcode":0,"errmsg":"ok","errcode":40001}', False, 40001),  # duplicate key: the last wins
    ("wechat", b'{"errcode":0,"err\\u0063ode":40001}', False, 40001),  # a key spelled with an escape
    ("wechat", b'{"base_resp":{"errcode":0},"msgid":1}', True, None),
    ("wechat", b'{"base_resp":{"errcode":200011}}', False, 200011),
    ("wechat", b'{"errmsg":"\\"errcode\\":5,"}', True, None),  # escaped quotes: no key "errcode" at all
    ("wechat", b'{"field":"errcode"}', False, None),  # the key's spelling as a value: not proved, decoded
    ("tencent_im", b'{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"MsgTime":1,"MsgKey":"a_b"}', True, None),
    ("tencent_im", b'{"ActionStatus":"FAIL","ErrorInfo":"x","ErrorCode":0}', False, 0),
    ("tencent_im", b'{"ActionStatus":"F\\u0041IL","ErrorCode":70001}', False, 70001),
    ("tencent_im", b'{"ActionStatus":"OK","ErrorCode":70001}', False, 70001),
    ("whatsapp_cloud", b'{"messaging_product":"whatsapp","messages":[{"id":"wamid.X"}]}', True, None),
    ("whatsapp_cloud", b'{"error":{"code":131026,"message":"undeliverable"}}', False, 131026),
    ("whatsapp_onprem", b'{"messages":[{"id":"gBEGkY"}],"meta":{"api_status":"stable"}}', True, None),
]


def test_success_scan_finds_keys_and_values_spelled_in_utf8(tmp_path: Path) -> None:
    """Keys and failure values outside ASCII are looked for as a body spells them raw (UTF-8);
    spelled with escapes they hold a ``\\u``, so the body is decoded."""
    table = tmp_path / "mine.toml"
    table.write_text(
        'extends = "tencent_im"\n[extract]\ncode = ["código"]\nfailure = { path = "estado", value = "FALLÓ" }\n',
        encoding="utf-8",
    )
    policy = load_policy(table)
    assert policy._success_scan is not None
    cases = [
        ('{"código":0,"estado":"OK"}', True),
        ('{"código":70001}', False),
        ('{"código":0,"estado":"FALLÓ"}', False),
        ('{"c\\u00f3digo":70001}', False),
    ]
    for body, proved in cases:
        assert policy._success_scan.proves_success(body.encode()) is proved, body
        slow = dataclasses.replace(policy)
        object.__setattr__(slow, "_success_scan", None)
        assert policy.classify(_response(200, body.encode())) == slow.classify(_response(200, body.encode()))
    assert policy.classify(_response(200, '{"código":70001}'.encode())) is not None


@pytest.mark.parametrize(("name", "body", "proved", "code"), SCAN_CASES)
def test_success_scan_proves_only_successes(name: str, body: bytes, proved: bool, code: int | None) -> None:
    policy = load_policy(name)
    assert policy._success_scan is not None
    assert policy._success_scan.proves_success(body) is proved
    c = policy.classify(_response(200, body))
    assert (c.code if c is not None else None) == code
    if code is None and name != "tencent_im":
        assert c is None
    # and the verdict is the one a full decode gives
    slow = dataclasses.replace(policy)
    object.__setattr__(slow, "_success_scan", None)
    assert slow.classify(_response(200, body)) == c


# -- general table features: string codes, message patterns, wait hints, header ids, extra -----

_GENERAL = """\
schema = 1
platform = "general"
unknown_category = "fatal"
success_codes = [0, "OK"]

[extract]
code = ["code"]
message = ["msg"]
subcode = ["sub"]
request_id = ["rid"]
request_id_pattern = 'hint: \\[(\\w+)\\]'
request_id_header = ["X-Log-Id", "X-Request-Id"]
failure = { path = "ok", value = false }
extra = { new_id = "params.new_id", blob = "params.blob", flag = "params.flag" }

[wait_hint]
path = "params.retry_after"
unit = "s"

[[rules]]
code = 7
category = "fatal"
description = "Code 7."

[[rules]]
code = 7
subcode = "isp.-1"
category = "retryable"
description = "Code 7 with the string subcode isp.-1."

[[rules]]
code = 7
subcode = 5
category = "token-refresh"
description = "Code 7 with subcode 5."

[[rules]]
code = 7
message_pattern = '(?i)busy'
category = "retryable"
description = "Code 7 saying busy."

[[rules]]
code = 7
message_pattern = '(?i)busy|blocked'
category = "user-action"
description = "Never reached for 'busy': the first pattern of a code wins."
remediation = "Unblock."

[[rules]]
code = "channel_not_found"
category = "fatal"
description = "A string code."

[[rules]]
message_pattern = '(?i)quota'
category = "user-action"
description = "Any error whose message speaks of a quota."
remediation = "Raise the quota."

[[rules]]
range = [100, 199]
category = "retryable"
description = "A range."
"""


@pytest.fixture
def general(tmp_path: Path) -> Policy:
    path = tmp_path / "general.toml"
    path.write_text(_GENERAL, encoding="utf-8")
    return load_policy(path)


@pytest.mark.parametrize(
    ("body", "code", "subcode", "description"),
    [
        ({"code": 7, "sub": "isp.-1", "msg": "busy"}, 7, "isp.-1", "Code 7 with the string subcode isp.-1."),
        ({"code": 7, "sub": "5", "msg": "busy"}, 7, 5, "Code 7 with subcode 5."),  # digits: a number
        ({"code": 7, "sub": "isv.other", "msg": "Server BUSY"}, 7, "isv.other", "Code 7 saying busy."),
        ({"code": 7, "msg": "you are blocked"}, 7, None, "Never reached for 'busy': the first pattern of a code wins."),
        ({"code": 7, "msg": "no quota left"}, 7, None, "Code 7."),  # code beats a pattern-only rule
        ({"code": 150, "msg": "quota"}, 150, None, "Any error whose message speaks of a quota."),  # ... beats a range
        ({"code": 150, "msg": "x"}, 150, None, "A range."),
        ({"code": "150", "msg": "x"}, 150, None, "A range."),  # a string of digits is a number
        ({"code": "channel_not_found"}, "channel_not_found", None, "A string code."),
        ({"code": " channel_not_found "}, "channel_not_found", None, "A string code."),
        ({"ok": False, "msg": "daily quota exceeded"}, None, None, "Any error whose message speaks of a quota."),
    ],
)
def test_the_most_specific_rule_wins(
    general: Policy, body: dict[str, Any], code: object, subcode: object, description: str
) -> None:
    c = _must(general.classify(_json(200, body)))
    assert (c.code, c.subcode, c.description, c.known) == (code, subcode, description, True)
    rule = general.rule_for(c.code, c.subcode, c.message)
    assert rule is not None and rule.description == description


def test_string_codes_unknown_and_success(general: Policy, wechat: Policy) -> None:
    c = _must(general.classify(_json(400, {"code": "Forbidden.New"})))
    assert (c.code, c.known, c.category) == ("Forbidden.New", False, Category.FATAL)
    assert "Forbidden.New" in c.description
    assert general.classify(_json(200, {"code": "OK", "data": 1})) is None  # a string success code
    assert general.classify(_json(200, {"code": "0"})) is None  # "0" is the number 0
    # a table without string codes reads a non-numeric string as no usable code, as it always did
    c = _must(wechat.classify(_json(200, {"errcode": "abc", "errmsg": "x"})))
    assert (c.code, c.known) == (None, False)
    assert "without a usable code" in c.description


def test_failure_marker_is_compared_strictly(general: Policy) -> None:
    assert general.classify(_json(200, {"ok": True})) is None
    assert general.classify(_json(200, {"ok": 0})) is None  # 0 is not false
    assert general.classify(_json(200, {"ok": "false"})) is None  # nor is the string "false"
    c = _must(general.classify(_json(200, {"ok": False})))
    assert (c.code, c.known) == (None, False)


def test_explain_and_rule_for_take_string_codes_and_messages(general: Policy) -> None:
    assert general.explain("channel_not_found").description == "A string code."
    assert general.explain(7, "isp.-1").category is Category.RETRYABLE
    assert general.explain(7).description == "Code 7."  # without a message, patterns are not tried
    c = general.explain(7, message="server busy")
    assert (c.description, c.message) == ("Code 7 saying busy.", "server busy")
    assert general.rule_for("nope") is None
    assert general.rule_for(None, message="quota") is not None
    assert general.rule_for("150") is None  # a string is not a number: no range matches it


@pytest.mark.parametrize(
    ("table", "status", "headers", "body", "hint", "until"),
    [
        # the table's body path, in seconds
        ("", 429, {}, {"code": 150, "params": {"retry_after": 35}}, 35.0, None),
        ("", 429, {}, {"code": 150, "params": {"retry_after": "2.5"}}, 2.5, None),
        # nothing there (or nothing usable): Retry-After
        ("", 429, {"Retry-After": "30"}, {"code": 150}, 30.0, None),
        ("", 429, {"Retry-After": "30"}, {"code": 150, "params": {"retry_after": "soon"}}, 30.0, None),
        ("", 429, {"Retry-After": "30"}, {"code": 150, "params": {"retry_after": 0}}, 30.0, None),
        ("", 429, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, {"code": 150}, None, 1792567680.0),
        # the declared place first
        ("", 429, {"Retry-After": "30"}, {"code": 150, "params": {"retry_after": 5}}, 5.0, None),
        ("", 429, {}, {"code": 150, "params": {"retry_after": 10**9}}, 86400.0, None),  # a day at most
        ("", 429, {"Retry-After": "-5"}, {"code": 150, "params": {"retry_after": -1}}, None, None),
        ("", 429, {"Retry-After": "nan"}, {"code": 150, "params": {"retry_after": True}}, None, None),
        ("", 503, {"Retry-After": "7"}, {"no": "code"}, 7.0, None),  # classified by its status
        # a header hint, each unit
        ('header = "X-Reset"\nunit = "s"', 429, {"x-reset": "52"}, {"code": 150}, 52.0, None),
        ('header = "X-Reset"\nunit = "ms"', 429, {"X-Reset": "1500"}, {"code": 150}, 1.5, None),
        ('header = "X-Reset"\nunit = "epoch_s"', 429, {"X-Reset": "1792567680"}, {"code": 150}, None, 1792567680.0),
        ('header = "X-Reset"\nunit = "epoch_ms"', 429, {"X-Reset": "1792567680500"}, {"code": 150}, None, 1792567680.5),
        ('header = "X-Reset"\nunit = "s"', 429, {"X-Reset": "Wed, 21 Oct 2026 07:28:00 GMT"}, {}, None, 1792567680.0),
        ('header = "X-Reset"\nunit = "s"', 429, {"Retry-After": "3"}, {"code": 150}, 3.0, None),
        ('header = "X-Reset"\nunit = "s"', 502, {"X-Reset": "4"}, {}, 4.0, None),
        ('path = "wait_ms"\nunit = "ms"', 200, {}, {"code": 150, "wait_ms": 250}, 0.25, None),
    ],
)
def test_wait_hints(
    tmp_path: Path, table: str, status: int, headers: dict[str, str], body: Any, hint: float | None, until: float | None
) -> None:
    text = _GENERAL if not table else _GENERAL.replace('path = "params.retry_after"\nunit = "s"', table)
    path = tmp_path / "hints.toml"
    path.write_text(text, encoding="utf-8")
    policy = load_policy(path)
    c = _must(policy.classify(httpx.Response(status, json=body, headers=headers)))
    assert (c.wait_hint, c.wait_until) == (hint, until)
    assert c.as_dict()["wait_hint"] == hint and c.as_dict()["wait_until"] == until


def test_wait_seconds_reads_no_clock_but_the_one_given() -> None:
    relative = Classification("p", None, Category.RETRYABLE, "", "", wait_hint=30.0)
    absolute = Classification("p", None, Category.RETRYABLE, "", "", wait_until=1_000_100.0)
    assert relative.wait_seconds(now=5.0) == relative.wait_seconds(now=9e9) == 30.0
    assert absolute.wait_seconds(now=1_000_000.0) == 100.0
    assert absolute.wait_seconds(now=1_000_100.0) is None  # already past
    assert Classification("p", None, Category.RETRYABLE, "", "", wait_until=9e12).wait_seconds(0.0) == 86400.0
    assert Classification("p", None, Category.RETRYABLE, "", "").wait_seconds(0.0) is None


def test_every_table_reads_retry_after(wechat: Policy) -> None:
    c = _must(wechat.classify(httpx.Response(200, json={"errcode": 45009}, headers={"Retry-After": "12"})))
    assert c.wait_hint == 12.0
    assert _must(wechat.classify(httpx.Response(429, headers={"Retry-After": "3"}))).wait_hint == 3.0
    assert _must(wechat.classify(_json(200, {"errcode": 45009}))).wait_hint is None
    assert wechat.explain(45009).wait_hint is None


@pytest.mark.parametrize(
    ("status", "body", "headers", "request_id"),
    [
        (200, {"code": 7, "rid": "from-body", "msg": "hint: [fromtext]"}, {"X-Log-Id": "from-header"}, "from-body"),
        (200, {"code": 7, "msg": "hint: [fromtext]"}, {"X-Log-Id": "from-header"}, "fromtext"),
        (200, {"code": 7, "msg": "no hint"}, {"X-Log-Id": "from-header", "X-Request-Id": "second"}, "from-header"),
        (200, {"code": 7}, {"X-Request-Id": "second"}, "second"),
        (200, {"code": 7}, {}, None),
        (502, b"<html>bad gateway</html>", {"X-Log-Id": "gw-1"}, "gw-1"),  # classified by its status
    ],
)
def test_request_id_from_body_message_or_header(
    general: Policy, status: int, body: Any, headers: dict[str, str], request_id: str | None
) -> None:
    response = (
        httpx.Response(status, content=body, headers=headers)
        if isinstance(body, bytes)
        else httpx.Response(status, json=body, headers=headers)
    )
    assert _must(general.classify(response)).request_id == request_id


def test_extra_fields_reach_the_classification(general: Policy) -> None:
    body = {"code": 7, "params": {"new_id": -1001234567890, "blob": {"a": [1]}, "flag": False}}
    c = _must(general.classify(_json(400, body)))
    assert c.extra == {"new_id": -1001234567890, "blob": '{"a": [1]}', "flag": False}
    assert c.as_dict()["extra"] == c.extra
    assert Classification(**c.as_dict()) == c  # as_dict() round-trips (a shared store sends it as JSON)
    long = _must(general.classify(_json(400, {"code": 7, "params": {"new_id": "x" * 900}})))
    assert long.extra == {"new_id": "x" * 500}
    assert _must(general.classify(_json(400, {"code": 7}))).extra == {}
    assert _must(general.classify(_json(400, {"ok": False, "params": {"flag": True}}))).extra == {"flag": True}


def test_success_scan_with_string_codes_and_a_boolean_failure(general: Policy) -> None:
    """The regex proof of success holds for string success codes and a boolean failure value:
    it proves only what a full decode would call a success."""
    scan = general._success_scan
    assert scan is not None
    slow = dataclasses.replace(general)
    object.__setattr__(slow, "_success_scan", None)
    cases = [
        (b'{"ok":true,"data":{"x":1}}', True),
        (b'{"ok": true, "code": 0}', True),
        (b'{"code":"OK","ok":true}', True),
        (b'{"ok":false}', False),
        (b'{"ok":0}', False),  # not proved (a number), but decoded: a success (0 is not false)
        (b'{"ok":null}', True),
        (b'{"ok":"false"}', True),
        (b'{"code":"channel_not_found","ok":true}', False),
        (b'{"code":"OKAY"}', False),
        (b'{"ok":true,"ok":false}', False),
        (b'{"ok":true,"x":"\\u0022ok\\u0022:false"}', False),  # an escape: decoded
    ]
    for body, proved in cases:
        assert scan.proves_success(body) is proved, body
        assert general.classify(_response(200, body)) == slow.classify(_response(200, body)), body
