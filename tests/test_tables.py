"""The tables of issues 16 and 17 (WeCom, Feishu/Lark, DingTalk old and new API, Slack, Telegram):
each loads and lints, and classifies the platform's real wire shapes (HTTP status, body, headers)
into code, category, request id, wait hint and extra fields; and the CLI shows them.

The bodies and headers are the ones quoted in the research notes (tools/research/<name>.md).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrypolicy import Category, Classification, load_policy
from retrypolicy._load import BUILTIN_POLICIES, SHIPPED_POLICIES
from retrypolicy.cli import main
from tests.test_cli import _PROVENANCE

FIRST = ("wechat", "tencent_im", "whatsapp_onprem", "whatsapp_cloud")
NEW = [name for name in SHIPPED_POLICIES if name not in FIRST]  # the tables of issues 16 and 17
POLICIES = Path(__file__).resolve().parent.parent / "policies"


def _classify(platform: str, status: int, body: Any, headers: dict[str, str] | None = None) -> Classification | None:
    content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return load_policy(platform).classify(httpx.Response(status, content=content, headers=headers))


def _must(c: Classification | None) -> Classification:
    assert c is not None, "expected a failure, got success"
    return c


# -- every table -------------------------------------------------------------------------------


def test_the_new_tables() -> None:
    assert sorted(NEW) == sorted(["wecom", "feishu", "dingtalk", "dingtalk_v1", "slack", "telegram"])
    assert set(FIRST) <= set(BUILTIN_POLICIES)  # a new table joins BUILTIN_POLICIES once it has a fake


@pytest.mark.parametrize("platform", NEW)
def test_table_loads_lints_and_cites_its_sources(platform: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = POLICIES / f"{platform}.toml"
    assert main(["lint", str(path)]) == 0
    assert f"ok: platform {platform}" in capsys.readouterr().out
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#") and "https://" in text.split("\nschema = 1", 1)[0]  # the citations header
    assert "# ext" not in text  # every extension the drafts proposed exists now
    policy = load_policy(platform)
    assert policy.platform == platform and len(policy.rules) > 50
    assert all(r.remediation for r in policy.rules if r.category is Category.USER_ACTION)


@pytest.mark.parametrize("platform", SHIPPED_POLICIES)
def test_no_note_is_a_research_note(platform: str) -> None:
    notes = {rule.label: rule.note for rule in load_policy(platform).rules if rule.note}
    assert notes
    research = {label: note for label, note in notes.items() if _PROVENANCE.search(note)}
    assert not research, f"{platform}: notes citing seeds, tables or documents: {research}"


# -- WeCom -------------------------------------------------------------------------------------

_WECOM_HINT = "hint: [1576065934_28_e0fae07666aa64636023c1fa7e8f49a4], from ip: 9.30.0.138"


def test_wecom_errcode_in_http_200_with_the_hint_as_request_id() -> None:
    body = {"errcode": 42001, "errmsg": f"access_token expired, {_WECOM_HINT}, more info at https://x?e=42001"}
    c = _must(_classify("wecom", 200, body))
    assert (c.code, c.category, c.request_id) == (
        42001,
        Category.TOKEN_REFRESH,
        "1576065934_28_e0fae07666aa64636023c1fa7e8f49a4",
    )
    c = _must(_classify("wecom", 200, {"errcode": 40014, "errmsg": "invalid access_token"}))
    assert (c.category, c.request_id) == (Category.TOKEN_REFRESH, None)  # some errors carry no hint


def test_wecom_rate_limit_cools_down_and_secret_error_is_user_action() -> None:
    c = _must(
        _classify(
            "wecom", 200, {"errcode": 45009, "errmsg": "api freq out of limit, hint: [1653710540075724015410106]"}
        )
    )
    assert c.category is Category.RETRYABLE and c.cooldown is not None and c.request_id == "1653710540075724015410106"
    # 40001 is a wrong secret on WeCom: renewing with the same secret cannot help
    assert (
        _must(_classify("wecom", 200, {"errcode": 40001, "errmsg": "invalid credential"})).category
        is Category.USER_ACTION
    )
    assert _classify("wecom", 200, {"errcode": 0, "errmsg": "ok", "invaliduser": ""}) is None
    assert load_policy("wecom").token.location == "query"


# -- Feishu / Lark -------------------------------------------------------------------------------

_LOGID = "202502271443593BB72D35D902E18D1343"


@pytest.mark.parametrize("status", [400, 200])
def test_feishu_99991663_on_http_400_and_200(status: int) -> None:
    body = {
        "code": 99991663,
        "msg": "Invalid access token for authorization. Please make a request with token attached.",
        "error": {"log_id": "202408271038458450E8497E60835abcef", "message": "Refer to the documentation"},
    }
    c = _must(_classify("feishu", status, body, {"X-Tt-Logid": "202408271038458450E8497E60835abcef"}))
    assert (c.code, c.category, c.source, c.status_code) == (99991663, Category.TOKEN_REFRESH, "body", status)
    assert c.request_id == "202408271038458450E8497E60835abcef"


def test_feishu_rate_limit_wait_hint_from_its_header_and_request_id_from_x_tt_logid() -> None:
    headers = {"x-ogw-ratelimit-limit": "100", "x-ogw-ratelimit-reset": "52", "X-Tt-Logid": _LOGID}
    c = _must(_classify("feishu", 429, {"code": 99991400, "msg": "request trigger frequency limit"}, headers))
    assert (c.code, c.category, c.wait_hint, c.wait_until, c.request_id) == (
        99991400,
        Category.RETRYABLE,
        52.0,
        None,
        _LOGID,
    )
    # without its header, no hint (Feishu sends no Retry-After)
    c = _must(_classify("feishu", 400, {"code": 99991400, "msg": "request trigger frequency limit"}))
    assert (c.wait_hint, c.request_id) == (None, None)


def test_feishu_second_meanings_by_message_and_a_status_only_answer_keeps_its_logid() -> None:
    c = _must(_classify("feishu", 400, {"code": 99991663, "msg": "tenant access token not support"}))
    assert c.category is Category.FATAL  # renewing cannot help an API that takes user tokens only
    c = _must(_classify("feishu", 400, {"code": 11246, "msg": "Service Internal Error"}))
    assert c.category is Category.RETRYABLE
    assert _must(_classify("feishu", 400, {"code": 11246, "msg": "bad card"})).category is Category.FATAL
    c = _must(_classify("feishu", 502, b"<html>502 Bad Gateway</html>", {"X-Tt-Logid": _LOGID}))
    assert (c.source, c.request_id, c.category) == ("http", _LOGID, Category.RETRYABLE)
    assert _classify("feishu", 200, {"code": 0, "msg": "success", "data": {"message_id": "om_1"}}) is None
    assert load_policy("feishu").token.location == "header"


# -- DingTalk, old API (oapi.dingtalk.com) --------------------------------------------------------


def test_dingtalk_gateway_subcodes_numeric_and_string() -> None:
    body = {
        "errcode": 88,
        "sub_code": "40014",
        "sub_msg": "不合法的access_token",
        "errmsg": "ding talk error[subcode=40014]",
        "request_id": "5imjny7u9xwa",
    }
    c = _must(_classify("dingtalk", 200, body))
    assert (c.code, c.subcode, c.category, c.request_id) == (88, 40014, Category.TOKEN_REFRESH, "5imjny7u9xwa")
    body = {
        "errcode": 15,
        "sub_msg": "服务不可用",
        "sub_code": "isp.-1",
        "errmsg": "Remote service error[subcode=isp.-1,submsg=服务不可用]",
    }
    c = _must(_classify("dingtalk", 200, body))
    assert (c.code, c.subcode, c.category, c.ambiguous, c.known) == (15, "isp.-1", Category.RETRYABLE, True, True)
    assert c.description.startswith("Remote service error (sub_code isp.-1)")
    # a sub_code with no rule of its own falls back to the rule for its code
    c = _must(_classify("dingtalk", 200, {"errcode": 15, "sub_code": "isp.other", "errmsg": "x"}))
    assert (c.subcode, c.known, c.description) == ("isp.other", True, load_policy("dingtalk").explain(15).description)


def test_dingtalk_success_with_a_string_zero_and_the_ip_ban() -> None:
    assert _classify("dingtalk", 200, {"errcode": "0", "errmsg": "ok", "access_token": "x", "expires_in": 7200}) is None
    c = _must(_classify("dingtalk", 200, {"status": 1111, "wait": 5, "source": "x5", "punish": "deny", "uuid": "u"}))
    assert (c.code, c.known, c.category) == (None, False, Category.FATAL)


# -- DingTalk, new API (api.dingtalk.com) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "category"),
    [
        (400, "InvalidAuthentication", Category.TOKEN_REFRESH),
        (403, "Forbidden.AccessDenied.AccessTokenPermissionDenied", Category.USER_ACTION),
        (403, "Forbidden.AccessDenied.IpNotInWhiteList", Category.USER_ACTION),
        (403, "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", Category.RETRYABLE),
        (429, "system.busy", Category.RETRYABLE),
    ],
)
def test_dingtalk_v1_string_codes_on_4xx(status: int, code: str, category: Category) -> None:
    body = {"code": code, "requestid": "30EE8654-1AA2-7D88-8248-9518547248AA", "message": "不合法的access_token"}
    c = _must(_classify("dingtalk_v1", status, body))
    assert (c.code, c.category, c.known, c.status_code) == (code, category, True, status)
    assert c.request_id == "30EE8654-1AA2-7D88-8248-9518547248AA"


def test_dingtalk_v1_unknown_string_code_and_successes() -> None:
    c = _must(_classify("dingtalk_v1", 400, {"code": "AuthenticationFailed.MissingParameter", "message": "缺少参数"}))
    assert (c.code, c.known, c.category) == ("AuthenticationFailed.MissingParameter", False, Category.FATAL)
    assert _classify("dingtalk_v1", 200, {"result": {"code": "inner", "name": "x"}}) is None
    assert _classify("dingtalk_v1", 200, {"code": 0, "message": "成功", "data": {}}) is None
    assert _must(_classify("dingtalk_v1", 403, b"")).source == "http"
    token = load_policy("dingtalk_v1").token
    assert (token.location, token.name, token.scheme) == ("header", "x-acs-dingtalk-access-token", "")


# -- Slack --------------------------------------------------------------------------------------


def test_slack_ok_false_with_a_string_code_and_the_request_id_header() -> None:
    c = _must(
        _classify(
            "slack", 200, {"ok": False, "error": "channel_not_found"}, {"x-slack-req-id": "9rj4io2i10iawjdasdfas"}
        )
    )
    assert (c.code, c.category, c.request_id, c.status_code) == (
        "channel_not_found",
        Category.FATAL,
        "9rj4io2i10iawjdasdfas",
        200,
    )
    body = {
        "ok": False,
        "error": "invalid_arguments",
        "response_metadata": {"messages": ["[ERROR] missing required field: channel"]},
    }
    c = _must(_classify("slack", 200, body))
    assert c.details == "[ERROR] missing required field: channel"
    c = _must(_classify("slack", 200, {"ok": False, "error": "missing_scope", "needed": "channels:read"}))
    assert (c.category, c.details) == (Category.USER_ACTION, "channels:read")


def test_slack_ok_true_with_a_warning_is_a_success() -> None:
    body = {"ok": True, "warning": "missing_charset", "response_metadata": {"warnings": ["missing_charset"]}}
    assert _classify("slack", 200, body) is None
    assert _classify("slack", 200, {"ok": True, "channel": "C123ABC456", "ts": "1503435956.000247"}) is None


def test_slack_rate_limit_retry_after_and_ambiguous_errors() -> None:
    c = _must(_classify("slack", 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "30"}))
    assert (c.code, c.category, c.wait_hint) == ("ratelimited", Category.RETRYABLE, 30.0)
    for code in ("internal_error", "fatal_error"):
        c = _must(_classify("slack", 200, {"ok": False, "error": code}))
        assert (c.category, c.ambiguous) == (Category.RETRYABLE, True)
    c = _must(_classify("slack", 200, {"ok": False, "error": "token_expired"}))
    assert c.category is Category.TOKEN_REFRESH
    c = _must(_classify("slack", 200, {"ok": False}))  # a failure, even without its code
    assert (c.code, c.known) == (None, False)


# -- Telegram -----------------------------------------------------------------------------------


@pytest.mark.parametrize("retry_after_header", [True, False])
def test_telegram_429_wait_hint_from_the_body(retry_after_header: bool) -> None:
    body = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 35",
        "parameters": {"retry_after": 35},
    }
    c = _must(_classify("telegram", 429, body, {"Retry-After": "35"} if retry_after_header else {}))
    assert (c.code, c.category, c.wait_hint, c.wait_until) == (429, Category.RETRYABLE, 35.0, None)
    assert c.cooldown is not None and c.cooldown.scope == "recipient"


def test_telegram_400_migrate_to_chat_id_reaches_the_classification() -> None:
    body = {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": -1001234567890},
    }
    c = _must(_classify("telegram", 400, body))
    assert (c.code, c.category) == (400, Category.FATAL)
    assert c.extra == {"migrate_to_chat_id": -1001234567890}
    assert "supergroup" in c.description
    assert c.as_dict()["extra"] == {"migrate_to_chat_id": -1001234567890}


@pytest.mark.parametrize(
    ("status", "description", "category"),
    [
        (403, "Forbidden: bot was blocked by the user", Category.USER_ACTION),
        (403, "Forbidden: bot can't send messages to bots", Category.FATAL),
        (401, "Unauthorized", Category.USER_ACTION),  # a static token: BotFather, never a renewal loop
        (
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
            Category.USER_ACTION,
        ),
        (400, "Bad Request: chat not found", Category.FATAL),
        (400, "Bad Request: not enough rights to send text messages to the chat", Category.USER_ACTION),
        (400, "Bad Request: something new", Category.FATAL),
        (500, "Internal Server Error: restart", Category.RETRYABLE),
    ],
)
def test_telegram_rules_by_description(status: int, description: str, category: Category) -> None:
    c = _must(_classify("telegram", status, {"ok": False, "error_code": status, "description": description}))
    assert (c.code, c.category, c.message, c.known) == (status, category, description, True)
    assert c.category is not Category.TOKEN_REFRESH


def test_telegram_success_and_a_bare_502() -> None:
    assert _classify("telegram", 200, {"ok": True, "result": {"message_id": 1, "chat": {"id": 5}}}) is None
    c = _must(_classify("telegram", 502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}))
    assert (c.source, c.category, c.ambiguous) == ("http", Category.RETRYABLE, True)


# -- the proof of success stays sound on the new tables ---------------------------------------------

_VALUES: st.SearchStrategy[Any] = st.sampled_from(
    [0, 1, -1, "0", "OK", "ok", True, False, None, "false", "channel_not_found", "isp.-1", [], {}, "\\u0030"]
)
_KEYS = st.sampled_from(["ok", "error", "error_code", "code", "errcode", "punish", "result", "warning", "data"])
_objects = st.recursive(
    st.dictionaries(_KEYS, _VALUES, max_size=4),
    lambda inner: st.dictionaries(_KEYS, inner | _VALUES, max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("platform", NEW)
def test_success_scan_agrees_with_full_decode(platform: str) -> None:
    policy = load_policy(platform)
    assert policy._success_scan is not None
    slow = dataclasses.replace(policy)
    object.__setattr__(slow, "_success_scan", None)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=_objects, status=st.sampled_from([200, 201, 302, 400, 429]), spaced=st.booleans())
    def prop(body: dict[str, Any], status: int, spaced: bool) -> None:
        content = json.dumps(body, separators=(", ", ": ") if spaced else (",", ":")).encode()
        response = httpx.Response(status, content=content)
        assert policy.classify(response) == slow.classify(response)

    prop()


# -- the CLI -------------------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_explain_a_string_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "explain", "slack", "channel_not_found")
    assert (code, err) == (0, "")
    assert "code:        channel_not_found" in out and "category:    fatal" in out
    code, out, _ = _run(
        capsys, "explain", "dingtalk_v1", "Forbidden.AccessDenied.AccessTokenPermissionDenied", "--json"
    )
    assert code == 0 and json.loads(out)["code"] == "Forbidden.AccessDenied.AccessTokenPermissionDenied"
    code, out, _ = _run(capsys, "explain", "dingtalk", "15", "--subcode", "isp.-1")
    assert code == 0 and "code:        15 (subcode isp.-1)" in out
    code, _, err = _run(capsys, "explain", "slack", "no_such_error")
    assert code == 2 and "code no_such_error is not in the slack table" in err


def test_explain_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "explain", "telegram", "403", "--message", "Forbidden: bot was blocked by the user")
    assert code == 0 and "category:    user-action" in out and "what to do:" in out
    code, out, _ = _run(capsys, "explain", "telegram", "403")
    assert code == 0 and "description:" in out


def test_classify_shows_wait_hint_request_id_and_extra(capsys: pytest.CaptureFixture[str]) -> None:
    body = json.dumps(
        {
            "ok": False,
            "error_code": 400,
            "description": "Bad Request: group chat was upgraded to a supergroup chat",
            "parameters": {"migrate_to_chat_id": -1001234567890},
        }
    )
    code, out, _ = _run(capsys, "classify", "telegram", "--status", "400", body)
    assert code == 1 and "migrate_to_chat_id: -1001234567890" in out
    retry = json.dumps(
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 35",
            "parameters": {"retry_after": 35},
        }
    )
    code, out, _ = _run(capsys, "classify", "telegram", "--status", "429", retry)
    assert code == 1 and "wait hint:   35 s" in out
    headers = ["--header", "x-ogw-ratelimit-reset: 52", "--header", f"X-Tt-Logid: {_LOGID}"]
    limited = '{"code":99991400,"msg":"request trigger frequency limit"}'
    code, out, _ = _run(capsys, "classify", "feishu", "--status", "429", *headers, limited)
    assert code == 1 and "wait hint:   52 s" in out and f"request id:  {_LOGID}" in out
    code, out, _ = _run(capsys, "classify", "wechat", "--header", "Retry-After: Wed, 21 Oct 2026 07:28:00 GMT",
                        '{"errcode":45009}')  # fmt: skip
    assert code == 1 and "wait until:  2026-10-21T07:28:00+00:00" in out
    code, out, _ = _run(capsys, "classify", "slack", '{"ok":true,"warning":"missing_charset"}')
    assert code == 0 and out.startswith("success")
    code, out, _ = _run(capsys, "classify", "slack", "--json", '{"ok":false,"error":"not_in_channel"}')
    data = json.loads(out)
    assert code == 1 and data["code"] == "not_in_channel" and data["extra"] == {} and data["wait_hint"] is None


def test_list_shows_string_codes_and_patterns(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list", "slack", "--format", "json")
    rows = json.loads(out)
    assert (
        code == 0
        and {"code": "channel_not_found", "message_pattern": None}.items()
        <= next(r for r in rows if r["code"] == "channel_not_found").items()
    )
    code, out, _ = _run(capsys, "list", "telegram")
    lines = out.splitlines()
    assert code == 0 and any(
        re.match(r"403 /\(\?i\)bot was blocked by the user\|USER_IS_BLOCKED/ +user-action", line) for line in lines
    )
    # numbers first, in order (within one code, its pattern rules first, in the order they are tried)
    codes = [int(line.split()[0].split("-")[0]) for line in lines]
    assert codes == sorted(codes)
    code, out, _ = _run(capsys, "list", "dingtalk_v1", "--category", "token-refresh")
    assert code == 0 and "InvalidAuthentication" in out
    code, out, _ = _run(capsys, "list", "telegram", "--format", "markdown")
    assert code == 0 and "| 403 /(?i)bot was blocked by the user\\|USER_IS_BLOCKED/ | user-action |" in out


def test_every_shipped_table_is_known_to_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "explain", "nope", "1")
    assert code == 2 and all(name in err for name in SHIPPED_POLICIES)
    for name in SHIPPED_POLICIES:
        assert _run(capsys, "list", name)[0] == 0


def test_explain_names_the_patterns_of_a_code_without_a_plain_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "teapot.toml"
    path.write_text(
        'extends = "telegram"\n[[rules]]\ncode = 418\nmessage_pattern = "(?i)teapot"\n'
        'category = "fatal"\ndescription = "A teapot."\n',
        encoding="utf-8",
    )
    code, _, err = _run(capsys, "explain", str(path), "418")
    assert code == 2 and "give it with --message (418 /(?i)teapot/)" in err
    code, out, _ = _run(capsys, "explain", str(path), "418", "--message", "I'm a TEAPOT")
    assert code == 0 and "description: A teapot." in out and "message:     I'm a TEAPOT" in out
    code, _, err = _run(capsys, "explain", "wechat", "channel_not_found")
    assert code == 2 and "CODE must be an integer (this table's codes are numbers)" in err
