"""The ``retrypolicy`` command: explain, classify, list, lint; errors are one line, never a traceback."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import pytest

import retrypolicy
from retrypolicy import BUILTIN_POLICIES, Category, load_policy
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
    assert result.returncode == 1, result.stderr  # a failure
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
    assert code == 1  # the response is a failure
    assert "category:    token-refresh" in out
    assert "request id:  1234-ab" in out
    assert "message:     access_token expired" in out
    assert "http status: 200" in out


def test_classify_stdin(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    body = {"error": {"code": 190, "error_subcode": 463, "fbtrace_id": "Trace1", "message": "expired"}}
    _stdin(monkeypatch, json.dumps(body).encode())
    code, out, _ = _run(capsys, "classify", "whatsapp_cloud", "--status", "401", "--json")
    assert code == 1
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
    assert code == 1
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
    assert code == 1
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
    assert code == 1
    data = json.loads(out)
    assert data["code"] == -1
    assert data["category"] == "retryable"


def test_classify_unknown_code_is_reported_not_an_error(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "classify", "wechat", '{"errcode": 987654321}')
    assert code == 1
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
    assert {row["label"] for row in rows} == {rule.label for rule in load_policy("whatsapp_cloud").rules}
    assert {(row["code"], row["subcode"]) for row in rows} == {
        (rule.code, rule.subcode) for rule in load_policy("whatsapp_cloud").rules
    }
    for row in rows:  # numbers, not text: a code, or a range [low, high] with code null
        if row["range"] is None:
            assert type(row["code"]) is int, row
        else:
            assert row["code"] is None and [type(n) for n in row["range"]] == [int, int], row
    assert {"code": None, "range": [200, 299], "label": "200-299"}.items() <= next(
        row for row in rows if row["label"] == "200-299"
    ).items()
    assert {"code": 190, "subcode": 460, "range": None, "label": "190/460"}.items() <= next(
        row for row in rows if row["label"] == "190/460"
    ).items()


def test_list_category(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "list", "wechat", "--category", "token-refresh", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    expected = [rule for rule in load_policy("wechat").rules if rule.category is Category.TOKEN_REFRESH]
    assert rows
    assert len(rows) == len(expected)
    assert {row["category"] for row in rows} == {"token-refresh"}
    assert 40001 in {row["code"] for row in rows}


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
    assert code == 2  # bad input, an unknown code included


def test_bad_policy_file_is_one_line(tmp_path: Path, capsys: Capture) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("this is [not toml\n", encoding="utf-8")
    for argv in (["explain", str(path), "1"], ["list", str(path)], ["lint", str(path)]):
        code, out, err = _run(capsys, *argv)
        _assert_one_line_error(code, out, err, str(path), "malformed TOML")


# -- the README's forms, options anywhere -----------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def _shell_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split("\n## From the shell\n", 1)[1].split("\n## ", 1)[0]


def test_readme_console_examples_are_the_real_output(capsys: Capture) -> None:
    block = _shell_section().split("```console\n", 1)[1].split("\n```", 1)[0]
    examples = [chunk.strip("\n").split("\n", 1) for chunk in block.split("$ ")[1:]]
    assert len(examples) == 2
    for command, expected in examples:
        argv = shlex.split(command)
        assert argv[0] == "retrypolicy"
        code, out, err = _run(capsys, *argv[1:])
        assert err == ""
        assert out.rstrip("\n") == expected.rstrip("\n"), command
        assert code == (1 if argv[1] == "classify" else 0)  # the classify example is a failure


def _installed_command() -> Path:
    script = Path(sysconfig.get_path("scripts")) / "retrypolicy"
    assert script.is_file(), f"the entry point is not installed at {script}"
    return script


def test_readme_stdin_form_through_the_installed_command(tmp_path: Path) -> None:
    """The README's own form, redirection included, through the installed `retrypolicy` script."""
    form = re.search(r"`(retrypolicy classify PLATFORM --status 502 [^`]*< body\.html)`", _shell_section())
    assert form is not None, "the README no longer shows the stdin form"
    (tmp_path / "body.html").write_text("<html><body><h1>502 Bad Gateway</h1></body></html>\n", encoding="utf-8")
    env = {**os.environ, "PATH": f"{_installed_command().parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        form[1].replace("PLATFORM", "wechat"),
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.stderr == ""
    assert result.returncode == 1  # a failure: retryable, classified by the status
    assert "category:    retryable" in result.stdout
    assert "ambiguous:   yes" in result.stdout
    assert "http status: 502" in result.stdout
    assert "could not be parsed" in result.stdout

    with_json = subprocess.run(
        [str(_installed_command()), "classify", "wechat", "--json", "--status", "502", "-"],
        input="<html>Bad Gateway</html>",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert with_json.returncode == 1, with_json.stderr
    data = json.loads(with_json.stdout)
    assert (data["category"], data["source"], data["ambiguous"]) == ("retryable", "http", True)


BUSY = '{"errcode": -1, "errmsg": "system error"}'


@pytest.mark.parametrize(
    "argv",
    [
        ["classify", "wechat", "--json", BUSY],
        ["classify", "--json", "wechat", BUSY],
        ["classify", "wechat", BUSY, "--json"],
        ["classify", "wechat", "--status", "200", "--header", "Content-Type: application/json", BUSY, "--json"],
        ["classify", "wechat", "--json", "-"],
        ["classify", "wechat", "--json", "--status", "200"],
    ],
    ids=["json-after-platform", "json-first", "json-last", "all-options-between", "dash-last", "stdin-no-body"],
)
def test_classify_options_anywhere(monkeypatch: pytest.MonkeyPatch, capsys: Capture, argv: list[str]) -> None:
    _stdin(monkeypatch, BUSY.encode())
    code, out, err = _run(capsys, *argv)
    assert err == ""
    assert code == 1
    data = json.loads(out)
    assert (data["code"], data["category"]) == (-1, "retryable")


@pytest.mark.parametrize(
    "argv",
    [
        ["explain", "wechat", "--json", "40001"],
        ["explain", "--json", "wechat", "40001"],
        ["explain", "wechat", "40001", "--json"],
    ],
)
def test_explain_options_anywhere(capsys: Capture, argv: list[str]) -> None:
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    assert json.loads(out) == load_policy("wechat").explain(40001).as_dict()


def test_explain_negative_codes(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "explain", "wechat", "-1", "--json")
    assert code == 0
    assert json.loads(out)["category"] == "retryable"
    code, out, _ = _run(capsys, "explain", "--json", "tencent_im", "-10005")
    assert code == 0
    assert json.loads(out)["code"] == -10005


def test_list_options_anywhere(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "list", "--format", "json", "--category", "token-refresh", "wechat")
    assert code == 0
    assert 40001 in {row["code"] for row in json.loads(out)}


# -- --version, --help, exit statuses, usage errors -------------------------------------------


def test_version(capsys: Capture) -> None:
    code, out, err = _run(capsys, "--version")
    assert code == 0
    assert err == ""
    assert out == f"retrypolicy {importlib.metadata.version('retrypolicy')}\n"
    assert retrypolicy.__version__ == importlib.metadata.version("retrypolicy")


def test_version_is_read_from_the_package_metadata() -> None:
    """No second copy of the version: whatever the metadata says is what the package and the CLI say."""
    script = (
        "import importlib.metadata as m\n"
        "real = m.version\n"
        "m.version = lambda name: '9.8.7' if name == 'retrypolicy' else real(name)\n"
        "import retrypolicy, retrypolicy.cli\n"
        "print(retrypolicy.__version__)\n"
        "retrypolicy.cli.main(['--version'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["9.8.7", "retrypolicy 9.8.7"]


def test_help_says_what_each_exit_status_means(capsys: Capture) -> None:
    code, out, err = _run(capsys, "--help")
    assert code == 0
    assert err == ""
    assert "exit status:" in out
    statuses = {line.split()[0] for line in out.split("exit status:", 1)[1].splitlines() if line[:3].strip()}
    assert statuses == {"0", "1", "2"}
    assert "bad input" in out
    code, out, _ = _run(capsys, "classify", "--help")
    assert code == 0
    assert "exit status:" in out
    assert "could not be parsed" in out


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        ([], ["COMMAND", "retrypolicy --help"]),
        (["nosuchcommand"], ["nosuchcommand"]),
        (["explain", "wechat"], ["code", "retrypolicy explain --help"]),
        (["explain", "wechat", "40001", "40002"], ["unrecognized", "40002", "retrypolicy explain --help"]),
        (["classify", "wechat", "{}", "--bogus"], ["unrecognized", "--bogus", "retrypolicy classify --help"]),
        (["classify", "wechat", "{}", "--status", "abc"], ["--status", "abc"]),
        (["list", "wechat", "--format", "xml"], ["--format", "xml"]),
        (["list", "wechat", "--category", "sometimes"], ["--category", "sometimes"]),
        (["demo", "nosuchplatform"], ["nosuchplatform"]),
        (["--bogus"], ["--bogus"]),
    ],
    ids=[
        "no-command",
        "unknown-command",
        "missing-code",
        "extra-argument",
        "unknown-option",
        "status-not-a-number",
        "bad-format",
        "bad-category",
        "demo-unknown-platform",
        "unknown-top-option",
    ],
)
def test_usage_errors_are_one_line_and_exit_2(capsys: Capture, argv: list[str], fragments: list[str]) -> None:
    code, out, err = _run(capsys, *argv)
    _assert_one_line_error(code, out, err, *fragments)
    assert code == 2
    assert "usage:" not in err


def test_usage_error_through_the_installed_command() -> None:
    result = subprocess.run(
        [str(_installed_command()), "classify", "wechat", "{}", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "retrypolicy: unrecognized arguments: --bogus (see 'retrypolicy classify --help')"
    ]


# -- bodies that cannot be parsed are never a success -----------------------------------------

UNPARSABLE = {
    "truncated": '{"errcode":45015,"errmsg":"response out of time limit or subscr',
    "python-dict": "{'errcode': 45015, 'errmsg': 'response out of time limit'}",
    "html": "<html><body>Service Unavailable</body></html>",
    "empty": "",
    "array": "[1, 2]",
    "not-utf8": "\udcff\udcfe{}",  # bytes FF FE through surrogateescape
}


@pytest.mark.parametrize("body", UNPARSABLE.values(), ids=UNPARSABLE.keys())
def test_unparsable_body_is_not_a_success(capsys: Capture, body: str) -> None:
    code, out, err = _run(capsys, "classify", "wechat", body)
    assert err == ""
    assert code == 1
    assert not out.startswith("success")
    assert "could not be parsed" in out
    assert "known:       no" in out
    code, out, _ = _run(capsys, "classify", "wechat", body, "--json")
    assert code == 1
    data = json.loads(out)
    assert data is not None
    assert data["parse_error"]
    assert data["code"] is None
    assert data["known"] is False


def test_unparsable_python_dict_is_named(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "classify", "wechat", UNPARSABLE["python-dict"], "--json")
    assert code == 1
    assert "Python dict" in json.loads(out)["parse_error"]


@pytest.mark.parametrize("body", UNPARSABLE.values(), ids=UNPARSABLE.keys())
def test_unparsable_body_is_classified_by_its_status(capsys: Capture, body: str) -> None:
    code, out, _ = _run(capsys, "classify", "wechat", body, "--status", "503", "--json")
    assert code == 1
    data = json.loads(out)
    assert (data["category"], data["source"], data["status_code"]) == ("retryable", "http", 503)
    assert data["parse_error"]
    code, out, _ = _run(capsys, "classify", "wechat", body, "--status", "404")
    assert code == 1
    assert "category:    fatal" in out
    assert "body:        could not be parsed" in out


@pytest.mark.parametrize(
    ("argv", "data"),
    [
        (["classify", "wechat", '{"errcode": 0, "errmsg": "ok"}'], b""),
        (["classify", "wechat", '{"msgid": 1}'], b""),
        (["classify", "wechat", "", "--status", "204"], b""),
        (["classify", "wechat"], '{"errcode": 0}'.encode("utf-16")),
        (
            ["classify", "wechat", "--header", "Content-Type: application/json; charset=gbk"],
            '{"errcode": 0, "errmsg": "成功"}'.encode("gbk"),  # not UTF-8: read with the declared charset
        ),
    ],
    ids=["errcode-0", "no-code", "204-empty", "utf-16", "declared-charset"],
)
def test_success_exits_0(monkeypatch: pytest.MonkeyPatch, capsys: Capture, argv: list[str], data: bytes) -> None:
    _stdin(monkeypatch, data)
    code, out, err = _run(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.startswith("success: no error")


# -- notes are for users: no research provenance ----------------------------------------------

_PROVENANCE = re.compile(
    r"\bseeds?\b|\(00\d\)|\btable \(|older table|\bthe brief\b|\bdocs?\b|\bdocument(?:s|ed)?\b|link-only|\bcolumn\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("platform", BUILTIN_POLICIES)
def test_no_note_is_a_research_note(platform: str) -> None:
    notes = {rule.label: rule.note for rule in load_policy(platform).rules if rule.note}
    assert notes
    research = {label: note for label, note in notes.items() if _PROVENANCE.search(note)}
    assert not research, f"{platform}: notes citing seeds, tables or documents: {research}"


def test_explain_shows_a_note_for_users(capsys: Capture) -> None:
    code, out, _ = _run(capsys, "explain", "wechat", "45015")
    assert code == 0
    note = next(line for line in out.splitlines() if line.startswith("note:"))
    assert "48-hour window" in note
    assert not _PROVENANCE.search(note)


# -- package basics ---------------------------------------------------------------------------


def test_license_and_changelog_ship_in_the_sdist() -> None:
    root = README.parent
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    license_text = (root / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License\n")
    assert "retrypolicy developers" in license_text
    changelog = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert f"## [{importlib.metadata.version('retrypolicy')}]" in changelog
    sdist = project["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    assert {"LICENSE", "CHANGELOG.md"} <= set(sdist)
