"""The ``retrypolicy`` command: explain, classify, list and lint from the shell.

Every failure prints one line to stderr and exits non-zero (2 for usage or bad input); never a
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import httpx

from ._errors import PolicyError, RetryPolicyError
from ._load import BUILTIN_POLICIES, load_policy
from ._policy import Category, Classification, Policy, Rule

__all__ = ["main"]


class _Usage(Exception):
    """A bad argument: one line for the user, exit 2."""


def _int(text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _Usage(f"{what} must be an integer, got {text!r}") from None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _policy(name: str) -> Policy:
    return load_policy(name)


def _show(c: Classification) -> str:
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
    if c.status_code is not None:
        lines.append(f"http status: {c.status_code}")
    if not c.known:
        lines.append("known:       no (not in the table; the table's unknown_category applies)")
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    policy = _policy(args.platform)
    code = _int(args.code, "CODE")
    subcode = _int(args.subcode, "--subcode") if args.subcode is not None else None
    if policy.rule_for(code, subcode) is None:
        print(
            f"retrypolicy: code {code} is not in the {policy.platform} table "
            f"(an unknown code is treated as {policy.unknown_category.value})",
            file=sys.stderr,
        )
        return 1
    c = policy.explain(code, subcode)
    print(json.dumps(c.as_dict(), ensure_ascii=False) if args.json else _show(c))
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    policy = _policy(args.platform)
    stdin = args.body in (None, "-")
    body = sys.stdin.buffer.read() if stdin else args.body.encode("utf-8", "surrogateescape")
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
    if args.json:
        print(json.dumps(None if c is None else c.as_dict(), ensure_ascii=False))
    elif c is None:
        print(f"success: no error in this {policy.platform} response (HTTP {args.status})")
    else:
        print(_show(c))
    return 0


def _rows(policy: Policy, category: Category | None) -> list[Rule]:
    rules = [r for r in policy.rules if category is None or r.category is category]
    return sorted(rules, key=lambda r: (r.range[0] if r.range else r.code or 0, r.subcode or -1))


def cmd_list(args: argparse.Namespace) -> int:
    policy = _policy(args.platform)
    category = Category(args.category) if args.category else None
    rules = _rows(policy, category)
    if args.format == "json":
        print(
            json.dumps(
                [
                    {
                        "code": r.label,
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
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    policy = load_policy(args.file if ("/" in args.file or args.file.endswith(".toml")) else "./" + args.file)
    counts = {c: sum(r.category is c for r in policy.rules) for c in Category}
    summary = ", ".join(f"{n} {c.value}" for c, n in counts.items())
    print(f"{args.file}: ok: platform {policy.platform}, {len(policy.rules)} rules ({summary})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415 - the demo pulls in the fakes; keep other commands light

    if not 1 <= args.requests <= 10000:
        raise _Usage(f"--requests must be from 1 to 10000, got {args.requests}")
    for platform in BUILTIN_POLICIES if args.platform == "all" else (args.platform,):
        run_demo(platform, requests=args.requests)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retrypolicy", description="Messaging-platform error codes, classified.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    platforms = f"one of {', '.join(BUILTIN_POLICIES)}, or a policy file"

    e = sub.add_parser("explain", help="what a code means and what to do")
    e.add_argument("platform", help=platforms)
    e.add_argument("code")
    e.add_argument("--subcode")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_explain)

    c = sub.add_parser("classify", help="classify a response body seen in a log")
    c.add_argument("platform", help=platforms)
    c.add_argument("body", nargs="?", help="the body, or - (default) to read stdin")
    c.add_argument("--status", type=int, default=200)
    c.add_argument("--header", action="append", metavar="'Name: value'")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_classify)

    ls = sub.add_parser("list", help="the rules of a table")
    ls.add_argument("platform", help=platforms)
    ls.add_argument("--category", choices=[c.value for c in Category])
    ls.add_argument("--format", choices=["table", "markdown", "json"], default="table")
    ls.set_defaults(func=cmd_list)

    d = sub.add_parser("demo", help="a scripted outage on an embedded fake platform")
    d.add_argument("platform", nargs="?", default="wechat", choices=[*BUILTIN_POLICIES, "all"])
    d.add_argument("--requests", type=int, default=40, help="concurrent sends (default 40)")
    d.set_defaults(func=cmd_demo)

    lint = sub.add_parser("lint", help="validate a policy file")
    lint.add_argument("file")
    lint.set_defaults(func=cmd_lint)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except PolicyError as exc:
        print(f"retrypolicy: {exc}", file=sys.stderr)
        return 2
    except (_Usage, RetryPolicyError) as exc:
        print(f"retrypolicy: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `retrypolicy list wechat | head`
        sys.stderr.close()
        return 0
