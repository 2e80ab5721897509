"""The ``retrypolicy`` command: explain, classify, list, lint and demo from the shell.

Options may come anywhere after the command (``classify wechat --status 502 -``). Exit status:
0 ok (``classify``: the response carries no error), 1 ``classify`` only: the response is a failure
or its body could not be parsed, 2 bad input: one line on stderr, never a traceback or the usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import httpx

from . import __version__
from ._errors import RetryPolicyError
from ._load import BUILTIN_POLICIES, SHIPPED_POLICIES, load_policy
from ._policy import _CODE_TEXT, Category, Classification, Code, Policy, Rule

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
"""The command did its job; for ``classify``, the response carries no error."""
EXIT_FAILURE = 1
"""``classify`` only: the response is a failure, or its body could not be parsed."""
EXIT_USAGE = 2
"""Bad input: an unknown option, platform or code, a bad value or policy file."""

_EXIT_HELP = """\
exit status:
  0  ok; for classify: the response carries no error (a success)
  1  classify only: the response is a failure (any category), or its body
     could not be parsed (then it is classified by its HTTP status)
  2  bad input: an unknown option, platform or code, a bad value or policy
     file; one line on stderr"""

_NO_BODY = frozenset({204, 205, 304})  # statuses whose empty body is the norm


class _Usage(Exception):
    """A bad argument: one line for the user, exit 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (raised as :class:`_Usage`), without the usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise _Usage(f"{message} (see '{self.prog} --help')")


class _CommandParser(_Parser):
    """A command's parser: options anywhere, before or after the positional arguments.

    Plain argparse gives a positional with ``nargs="?"`` its default as soon as an option
    follows the one before it, so ``classify wechat --status 502 -`` failed with "unrecognized
    arguments: -". Intermixed parsing reads the options first and the positionals after.
    """

    _intermixing = False

    def parse_known_args(  # type: ignore[override]  # typeshed overloads it on the namespace type
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:  # parse_known_intermixed_args calls back here, twice
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _code(text: str, what: str, strings: bool) -> Code:
    """A code as typed: a number (``40001``, ``-1``), else, for a table with string codes, the
    vendor's string (``channel_not_found``)."""
    if _CODE_TEXT.fullmatch(text):
        return int(text)
    code = text.strip()
    if not strings:
        raise _Usage(f"{what} must be an integer (this table's codes are numbers), got {text!r}")
    if not code:
        raise _Usage(f"{what} must be a number or a vendor's code, got {text!r}")
    return code


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _show(c: Classification, unparsable: str | None = None) -> str:
    lines = [
        f"platform:    {c.platform}",
        f"code:        {c.code if c.code is not None else '-'}"
        + (f" (subcode {c.subcode})" if c.subcode is not None else ""),
        f"category:    {c.category.value}",
        f"description: {c.description}",
    ]
    if c.message:
        lines.append(f"message:     {c.message}")
    if c.remediation:
        lines.append(f"what to do:  {c.remediation}")
    if c.min_delay:
        lines.append(f"min delay:   {c.min_delay:g} s")
    if c.ambiguous:
        lines.append("ambiguous:   yes (may have been carried out; resent only if idempotent)")
    if c.note:
        lines.append(f"note:        {c.note}")
    if c.request_id:
        lines.append(f"request id:  {c.request_id}")
    if c.wait_hint is not None:
        lines.append(f"wait hint:   {c.wait_hint:g} s (as the response asked)")
    if c.wait_until is not None:
        lines.append(f"wait until:  {_time(c.wait_until)} (as the response asked)")
    for name, value in c.extra.items():
        lines.append(f"{name + ':':<12} {json.dumps(value, ensure_ascii=False)}")
    if c.status_code is not None:
        lines.append(f"http status: {c.status_code}")
    if unparsable is not None:
        lines.append(f"body:        could not be parsed ({unparsable}); classified by its HTTP status")
    if not c.known:
        lines.append(
            "known:       no (not in the table; the table's unknown_category applies)"
            if c.code is not None
            else "known:       no (no usable error code in the body)"
        )
    return "\n".join(lines)


def _time(unix: float) -> str:
    """A Unix time as ISO 8601 UTC (the number itself if it is out of the calendar's range)."""
    try:
        return datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{unix:.0f} (Unix time)"


def cmd_explain(args: argparse.Namespace) -> int:
    policy = load_policy(args.platform)
    strings = any(isinstance(r.code, str) for r in policy.rules)
    code = _code(args.code, "CODE", strings)
    sub_strings = any(isinstance(r.subcode, str) for r in policy.rules)
    subcode = _code(args.subcode, "--subcode", sub_strings) if args.subcode is not None else None
    if policy.rule_for(code, subcode, args.message) is None:
        patterns = [r.label for r in policy.rules if r.code == code and r.message_pattern is not None]
        more = ", ..." if len(patterns) > 3 else ""
        hint = f"; its rules match the message: give it with --message ({', '.join(patterns[:3])}{more})"
        raise _Usage(
            f"code {code} is not in the {policy.platform} table"
            + (hint if patterns and args.message is None else "")
            + f" (an unknown code is treated as {policy.unknown_category.value})"
        )
    c = policy.explain(code, subcode, args.message)
    print(json.dumps(c.as_dict(), ensure_ascii=False) if args.json else _show(c))
    return EXIT_OK


def _unparsable(response: httpx.Response) -> str | None:
    """Why a body cannot be read for an error code, or ``None`` when it can: a JSON object.

    Every platform answers in JSON, its successes too, so a body that is not a JSON object (an
    error cut off in a log, a Python dict printed by a script, an HTML page) says nothing of
    success; only the HTTP status is left. Decoded as the library does: the declared charset,
    else UTF-8 (UTF-16/32 told by their bytes), a BOM allowed.
    """
    body = response.content
    if not body.strip():
        return None if response.status_code in _NO_BODY else "the body is empty"
    charset = response.charset_encoding
    text: str | bytes = body  # bytes: json.loads tells UTF-8 from UTF-16/32 itself
    if charset:
        try:
            text = body.decode(charset).removeprefix("\ufeff")
        except LookupError:  # a charset Python does not know: read as UTF-8, like the library
            pass
        except UnicodeDecodeError as exc:
            return f"not {charset}: {exc.reason} at byte {exc.start}"
    try:
        value = json.loads(text)
    except UnicodeDecodeError as exc:
        return f"not UTF-8: {exc.reason} at byte {exc.start}"
    except ValueError as exc:  # json.JSONDecodeError
        looks_like_repr = (text if isinstance(text, str) else text.decode("latin-1")).lstrip().startswith("{'")
        return ("not JSON but a Python dict, it seems: " if looks_like_repr else "not valid JSON: ") + str(exc)
    except RecursionError:
        return "not valid JSON: nested too deeply"
    if not isinstance(value, dict):
        kind = "an array" if isinstance(value, list) else "a string" if isinstance(value, str) else "a bare value"
        return f"JSON, but {kind}, not an object"
    return None


def _unreadable(policy: Policy, status: int) -> Classification:
    """A body below HTTP 400 that could not be parsed: never a success. As the transport treats
    such a body when it is meant to hold a code: retryable but ambiguous (the request may have
    been carried out), code unknown."""
    return Classification(
        platform=policy.platform,
        code=None,
        category=Category.RETRYABLE,
        message="",
        description=f"HTTP {status} with a body that could not be parsed to read its error code",
        status_code=status,
        ambiguous=True,
        known=False,
    )


def cmd_classify(args: argparse.Namespace) -> int:
    policy = load_policy(args.platform)
    stdin = args.body in (None, "-")
    body = sys.stdin.buffer.read() if stdin else _utf8(args.body)
    headers: list[tuple[bytes, bytes]] = []  # bytes: a non-ASCII value from a log must not crash
    for h in args.header or []:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise _Usage(f"--header must look like 'Name: value', got {h!r}")
        headers.append((_utf8(name.strip()), _utf8(value.strip())))
    if not 100 <= args.status <= 599:
        raise _Usage(f"--status must be an HTTP status from 100 to 599, got {args.status}")
    try:
        response = httpx.Response(args.status, headers=headers, content=body)
    except httpx.DecodingError as exc:  # e.g. --header 'Content-Encoding: gzip' with a plain body
        raise _Usage(f"the body does not match its Content-Encoding header: {exc}") from None
    c = policy.classify(response)
    unparsable = _unparsable(response)
    if unparsable is not None and c is None:  # below 400: not a success all the same
        c = _unreadable(policy, args.status)
    if args.json:
        data = None if c is None else c.as_dict()
        if data is not None and unparsable is not None:
            data["parse_error"] = unparsable
        print(json.dumps(data, ensure_ascii=False))
    elif c is None:
        print(f"success: no error in this {policy.platform} response (HTTP {args.status})")
    else:
        print(_show(c, unparsable))
    return EXIT_OK if c is None else EXIT_FAILURE


def _rows(policy: Policy, category: Category | None) -> list[Rule]:
    """The rules in code order: numbers first, then string codes, then pattern-only rules; in table
    order within one code (the order its message patterns are tried in)."""

    def order(code: Code | None) -> tuple[int, int, str]:
        if isinstance(code, int):
            return 0, code, ""
        return (1, 0, code) if code is not None else (2, 0, "")

    rules = [r for r in policy.rules if category is None or r.category is category]
    return sorted(
        rules,
        key=lambda r: (
            order(r.range[0] if r.range else r.code),
            order(r.subcode) if r.subcode is not None else (-1, 0, ""),
            r.message_pattern is None,
        ),
    )


def cmd_list(args: argparse.Namespace) -> int:
    policy = load_policy(args.platform)
    category = Category(args.category) if args.category else None
    rules = _rows(policy, category)
    if args.format == "json":
        print(
            json.dumps(
                [
                    {
                        "code": r.code,  # a number or a string; None for a range or a pattern-only rule
                        "subcode": r.subcode,
                        "range": list(r.range) if r.range is not None else None,
                        "message_pattern": r.message_pattern.pattern if r.message_pattern is not None else None,
                        "label": r.label,  # as in the table view: 40001, 190/460, 120001-130000, 403 /(?i).../
                        "category": r.category.value,
                        "description": r.description,
                        "remediation": r.remediation,
                        "note": r.note,
                        "min_delay": r.min_delay,
                        "ambiguous": r.ambiguous,
                    }
                    for r in rules
                ],
                ensure_ascii=False,
                indent=1,
            )
        )
    elif args.format == "markdown":
        print(f"# {policy.title} ({policy.platform})\n")
        print("| code | category | description | what to do |\n|---|---|---|---|")
        for r in rules:
            cells = [r.label, r.category.value, r.description, r.remediation or ""]
            print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    else:
        width = max((len(r.label) for r in rules), default=4)
        for r in rules:
            print(f"{r.label:<{width}}  {r.category.value:<13}  {r.description}")
        print(f"-- {len(rules)} rules in {policy.platform}", file=sys.stderr)
    return EXIT_OK


def cmd_lint(args: argparse.Namespace) -> int:
    policy = load_policy(args.file if ("/" in args.file or args.file.endswith(".toml")) else "./" + args.file)
    counts = {c: sum(r.category is c for r in policy.rules) for c in Category}
    summary = ", ".join(f"{n} {c.value}" for c, n in counts.items())
    print(f"{args.file}: ok: platform {policy.platform}, {len(policy.rules)} rules ({summary})")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415 - the demo pulls in the fakes; keep other commands light

    if not 1 <= args.requests <= 10000:
        raise _Usage(f"--requests must be from 1 to 10000, got {args.requests}")
    for platform in BUILTIN_POLICIES if args.platform == "all" else (args.platform,):
        run_demo(platform, requests=args.requests)
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="retrypolicy",
        description="Messaging-platform error codes, classified.\n"
        "A command's options may come before or after its arguments.",
        epilog=_EXIT_HELP,
    )
    p.add_argument("--version", action="version", version=f"retrypolicy {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    platforms = f"one of {', '.join(SHIPPED_POLICIES)}, or a policy file"

    e = sub.add_parser(
        "explain",
        help="what a code means and what to do",
        description="What a code means and what to do.",
        epilog="exit status: 0 ok; 2 bad input, including a code that is not in the table",
    )
    e.add_argument("platform", help=platforms)
    e.add_argument("code", help="a number (40001) or a vendor's string code (channel_not_found)")
    e.add_argument("--subcode", help="a number or a string (88 --subcode 60011, 15 --subcode isp.-1)")
    e.add_argument("--message", help="the vendor's message, for the rules that match it (telegram 403 ...)")
    e.add_argument("--json", action="store_true", help="print the classification as JSON")
    e.set_defaults(func=cmd_explain)

    c = sub.add_parser(
        "classify",
        help="classify a response body seen in a log",
        description="Classify a response as the transport would. A body that is not a JSON object\n"
        "(cut off, a Python dict, an HTML page) could not be parsed: it is classified by\n"
        "its HTTP status, and is never a success.",
        epilog="exit status:\n  0  the response carries no error (a success)\n"
        "  1  the response is a failure, or its body could not be parsed\n  2  bad input",
    )
    c.add_argument("platform", help=platforms)
    c.add_argument("body", nargs="?", help="the body, or - (default) to read stdin")
    c.add_argument("--status", type=int, default=200, help="the HTTP status (default 200)")
    c.add_argument("--header", action="append", metavar="'Name: value'", help="a response header (repeatable)")
    c.add_argument("--json", action="store_true", help="print the classification as JSON (null: a success)")
    c.set_defaults(func=cmd_classify)

    ls = sub.add_parser("list", help="the rules of a table", description="The rules of a table.")
    ls.add_argument("platform", help=platforms)
    ls.add_argument("--category", choices=[c.value for c in Category])
    ls.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    ls.set_defaults(func=cmd_list)

    d = sub.add_parser(
        "demo",
        help="a scripted outage on an embedded fake platform",
        description="A scripted outage on an embedded fake platform (no credentials, no network).",
    )
    d.add_argument("platform", nargs="?", default="wechat", choices=[*BUILTIN_POLICIES, "all"])
    d.add_argument("--requests", type=int, default=40, help="concurrent sends (default 40)")
    d.set_defaults(func=cmd_demo)

    lint = sub.add_parser("lint", help="validate a policy file", description="Validate a policy file.")
    lint.add_argument("file")
    lint.set_defaults(func=cmd_lint)
    return p


def _error(message: str) -> int:
    """One line on stderr, exit 2."""
    line = message.replace("\r", "\\r").replace("\n", "\\n")
    print(f"retrypolicy: {line}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit status (see ``retrypolicy --help``)."""
    try:
        args, extra = _parser().parse_known_args(argv)
        unknown = f"unrecognized arguments: {' '.join(extra)}" if extra else ""
        if args.command is None:
            raise _Usage(f"{unknown + '; ' if unknown else ''}a COMMAND is required (see 'retrypolicy --help')")
        if unknown:  # named here, not by the top parser, so that the hint names the command's help
            raise _Usage(f"{unknown} (see 'retrypolicy {args.command} --help')")
    except _Usage as exc:
        return _error(str(exc))
    except SystemExit as exc:  # --help and --version print, then exit 0
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    try:
        result: int = args.func(args)
        return result
    except (_Usage, RetryPolicyError) as exc:  # PolicyError is one: it names the file, rule and field
        return _error(str(exc))
    except BrokenPipeError:  # `retrypolicy list wechat | head`
        sys.stderr.close()
        return EXIT_OK
