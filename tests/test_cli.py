"""The ``retrypolicy`` command: explain, classify, list, lint; errors are one line, never a traceback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from retrypolicy import Category, load_policy
from retrypolicy.cli import main

Capture = pytest.CaptureFixture[str]


def _run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def _assert_one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code != 0
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("retrypolicy: ")
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


# -- the module entry point -------------------------------------------------------------------


def test_module_entry_point() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "retrypolicy", "explain", "wechat", "40001", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == load_policy("wechat").explain(40001).as_dict()

    bad = subprocess.run(
        [sys.executable, "-m", "retrypolicy", "explain", "nosuchplatform", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "unknown platform" in bad.stderr


def test_module_entry_point_reads_stdin() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "retrypolicy", "classify", "tencent_im", "--json"],
        input=json.dumps({"ActionStatus": "FAIL", "ErrorCode": 70001, "ErrorInfo": "sig expired"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["code"] == 70001
    assert data["category"] == "token-refresh"


# -- explain ----------------------------------------------------------------------------------


def test_explain_text(capsys: Capture) -> None:
    code, out, err = _run(capsys, "explain", "wechat", "45015")
    assert code == 0
    assert err == ""
    rule = load_policy("wechat").rule_for(45015)
    assert rule is not None and rule.remediation
    assert "category:    user-action" in out
    assert rule.description in out
    assert rule.remediation in out
    assert "45015" in out


def test_explain_min_delay(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "explain", "wechat", "45011")
    assert code == 0
    assert "min delay:   60 s" in out


def test_explain_json(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "explain", "whatsapp_onprem", "1015", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["platform"] == "whatsapp_onprem"
    assert data["code"] == 1015
    assert data["category"] == Category.RETRYABLE.value
    assert data["known"] is True


def test_explain_subcode(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "explain", "whatsapp_cloud", "190", "--subcode", "460", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["code"], data["subcode"]) == (190, 460)
    assert data["category"] == "user-action"
    assert data["remediation"]

    code, out, _ = _run(capsys, "explain", "whatsapp_cloud", "190", "--subcode", "463")
    assert code == 0
    assert "190 (subcode 463)" in out
    assert "category:    token-refresh" in out


def test_explain_a_user_file(tmp_path: Path, capsys: Capture) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'extends = "wechat"\n[[rules]]\ncode = 40001\ncategory = "fatal"\ndescription = "Ours."\n',
        encoding="utf-8",
    )
    code, out, _ = _run(capsys, "explain", str(path), "40001", "--json")
    assert code == 0
    assert json.loads(out)["category"] == "fatal"


# -- classify ---------------------------------------------------------------------------------


def test_classify_body_argument(capsys: Capture) -> None:
    body = json.dumps({"errcode": 42001, "errmsg": "access_token expired rid: 1234-ab"})
    code, out, _ = _run(capsys, "classify", "wechat", body)
    assert code == 0
    assert "category:    token-refresh" in out
    assert "request id:  1234-ab" in out
    assert "message:     access_token expired" in out
    assert "http status: 200" in out


def test_classify_stdin(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    body = {"error": {"code": 190, "error_subcode": 463, "fbtrace_id": "Trace1", "message": "expired"}}
    _stdin(monkeypatch, json.dumps(body).encode())
    code, out, _ = _run(capsys, "classify", "whatsapp_cloud", "--status", "401", "--json")
    assert code == 0
    data = json.loads(out)
    direct = load_policy("whatsapp_cloud").classify_parts(401, json.dumps(body).encode())
    assert direct is not None
    assert data == direct.as_dict()
    assert data["category"] == "token-refresh"
    assert data["request_id"] == "Trace1"
    assert data["status_code"] == 401


def test_classify_stdin_dash(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    _stdin(monkeypatch, b'{"errors":[{"code":1015,"title":"Too many","details":"slow down"}],"meta":{}}')
    code, out, _ = _run(capsys, "classify", "whatsapp_onprem", "-")
    assert code == 0
    assert "category:    retryable" in out
    assert "1015" in out


def test_classify_success(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "classify", "wechat", '{"errcode": 0, "errmsg": "ok"}')
    assert code == 0
    assert out.startswith("success:")
    code, out, _ = _run(capsys, "classify", "wechat", '{"errcode": 0}', "--json")
    assert code == 0
    assert json.loads(out) is None


@pytest.mark.parametrize(
    ("status", "category", "ambiguous"),
    [("502", "retryable", True), ("503", "retryable", False), ("401", "token-refresh", False), ("404", "fatal", False)],
)
def test_classify_status(capsys: Capture, status: str, category: str, ambiguous: bool) -> None:
    code, out, _ = _run(capsys, "classify", "wechat", "<html>Bad Gateway</html>", "--status", status, "--json")
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    assert data["source"] == "http"
    assert data["status_code"] == int(status)
    assert data["category"] == category
    assert data["ambiguous"] is ambiguous


def test_classify_header(capsys: Capture) -> None:
    body = '{"errcode": -1, "errmsg": "system error"}'
    code, out, _ = _run(
        capsys, "classify", "wechat", body, "--header", "Content-Type: text/plain", "--header", "X-Note: café", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["code"] == -1
    assert data["category"] == "retryable"


def test_classify_unknown_code_is_reported_not_an_error(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "classify", "wechat", '{"errcode": 987654321}')
    assert code == 0
    assert "known:       no" in out
    assert "category:    fatal" in out


# -- list -------------------------------------------------------------------------------------


def test_list_table(capsys: Capture) -> None:
    code, out, err = _run(capsys, "list", "whatsapp_onprem")
    policy = load_policy("whatsapp_onprem")
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == len(policy.rules)
    assert any(line.split()[:2] == ["1015", "retryable"] for line in lines)
    assert f"{len(policy.rules)} rules" in err


def test_list_markdown(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "list", "tencent_im", "--format", "markdown")
    policy = load_policy("tencent_im")
    assert code == 0
    assert out.startswith(f"# {policy.title} (tencent_im)")
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| code ")]
    assert len(rows) == len(policy.rules)
    assert any(row.startswith("| 120001-130000 |") for row in rows)
    assert all(row.endswith(" |") for row in rows)


def test_list_json(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "list", "whatsapp_cloud", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert {row["code"] for row in rows} == {rule.label for rule in load_policy("whatsapp_cloud").rules}
    assert "190/460" in {row["code"] for row in rows}


def test_list_category(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "list", "wechat", "--category", "token-refresh", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    expected = [rule for rule in load_policy("wechat").rules if rule.category is Category.TOKEN_REFRESH]
    assert rows
    assert len(rows) == len(expected)
    assert {row["category"] for row in rows} == {"token-refresh"}
    assert "40001" in {row["code"] for row in rows}


# -- lint -------------------------------------------------------------------------------------


def test_lint_ok(tmp_path: Path, capsys: Capture) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'extends = "wechat"\n[[rules]]\ncode = 99999001\ncategory = "retryable"\ndescription = "Ours."\n',
        encoding="utf-8",
    )
    code, out, err = _run(capsys, "lint", str(path))
    assert code == 0
    assert err == ""
    assert out.startswith(f"{path}: ok: platform wechat")
    assert f"{len(load_policy('wechat').rules) + 1} rules" in out


def test_lint_relative_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    (tmp_path / "mine.toml").write_text('extends = "tencent_im"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    code, out, _ = _run(capsys, "lint", "mine.toml")
    assert code == 0
    assert "ok: platform tencent_im" in out


def test_lint_bad_file(tmp_path: Path, capsys: Capture) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'extends = "wechat"\n[[rules]]\ncode = 1\ncatgory = "fatal"\ndescription = "Typo."\n', encoding="utf-8"
    )
    code, out, err = _run(capsys, "lint", str(path))
    _assert_one_line_error(code, out, err, str(path), "rules[0]", "'catgory'")
    assert code == 2


# -- errors: one line, non-zero, no traceback -------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["explain", "nosuchplatform", "40001"], ["unknown platform", "nosuchplatform"]),
        (["list", "nosuchplatform"], ["unknown platform"]),
        (["classify", "nosuchplatform", "{}"], ["unknown platform"]),
        (["explain", "wechat", "987654321"], ["987654321", "not in the wechat table", "fatal"]),
        (["explain", "wechat", "forty"], ["CODE", "integer", "forty"]),
        (["explain", "wechat", "40001", "--subcode", "x"], ["--subcode", "integer"]),
        (["explain", "/nonexistent/dir/policy.toml", "1"], ["/nonexistent/dir/policy.toml", "not found"]),
        (["classify", "wechat", "{}", "--header", "NoColon"], ["--header", "NoColon"]),
        (["classify", "wechat", "{}", "--header", ": empty name"], ["--header"]),
        (["classify", "wechat", "{}", "--status", "99"], ["--status"]),
        (["classify", "wechat", '{"errcode": 1}', "--header", "Content-Encoding: gzip"], ["Content-Encoding"]),
        (["lint", "/nonexistent/dir/policy.toml"], ["not found"]),
    ],
    ids=[
        "explain-unknown-platform",
        "list-unknown-platform",
        "classify-unknown-platform",
        "unknown-code",
        "non-integer-code",
        "non-integer-subcode",
        "missing-file",
        "header-without-colon",
        "header-without-name",
        "bad-status",
        "body-not-gzip",
        "lint-missing-file",
    ],
)
def test_errors_are_one_line(capsys: Capture, argv: list[str], fragments: list[str]) -> None:
    code, out, err = _run(capsys, *argv)
    _assert_one_line_error(code, out, err, *fragments)


def test_bad_policy_file_is_one_line(tmp_path: Path, capsys: Capture) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("this is [not toml\n", encoding="utf-8")
    for argv in (["explain", str(path), "1"], ["list", str(path)], ["lint", str(path)]):
        code, out, err = _run(capsys, *argv)
        _assert_one_line_error(code, out, err, str(path), "malformed TOML")
