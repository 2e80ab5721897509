#!/usr/bin/env python3
"""Print every error code of a WeCom, Feishu or DingTalk vendor code list, one per line.

Usage: python tools/seeds/enterprise.py {wecom,feishu,dingtalk} FILE

Stdlib only. Output: sorted, unique codes (negative codes included). Only the code column is
read, so numbers inside descriptions (sizes, limits, dates) are never taken for codes.

The files (each a copy of the vendor's global code list, as the research notes cite it):
  wecom     errcodes/mod.go of github.com/xen0n/go-workwx at commit 3887053b: its generator's
            scrape of https://developer.work.weixin.qq.com/document/path/90313 on 2024-04-08;
            one ``const ErrCode... ErrCode = <code>`` per code.
  feishu    feishu/003-服务端API/API-调用指南/通用错误码.md of github.com/wxkingstar/doc-hub-mcp at
            commit 9617d88a: https://open.feishu.cn/document/server-docs/api-call-guide/generic-error-code
            (2025-08-20) as markdown; a row is ``<code> | <msg> | <advice>``.
  dingtalk  docs/01-应用开发/02-4a8AMF6u2A-服务端API/0013-server-api-error-codes-1.md of
            github.com/apolloyyu/kb-dingtalk-open-platform (snapshot 2026-08-22):
            https://open.dingtalk.com/document/development/server-api-error-codes-1 (2026-05-06);
            the old API's numeric codes, the table that starts with the ``| -1 |`` row (the rows
            before it are the new API's string codes, under an HTTP status column).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

GO_CONST = re.compile(r"^const ErrCode\w* ErrCode = (-?\d+)$", re.MULTILINE)
FEISHU_ROW = re.compile(r"^(\d{3,})\s*\|", re.MULTILINE)
DINGTALK_ROW = re.compile(r"^\|\s*(-?\d+)\s*\|")


def wecom(text: str) -> set[int]:
    return {int(m) for m in GO_CONST.findall(text)}


def feishu(text: str) -> set[int]:
    return {int(m) for m in FEISHU_ROW.findall(text)}


def dingtalk(text: str) -> set[int]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| -1 |"))
    return {int(m[1]) for line in lines[start:] if (m := DINGTALK_ROW.match(line))}


def main(argv: list[str]) -> int:
    readers = {"wecom": wecom, "feishu": feishu, "dingtalk": dingtalk}
    if len(argv) != 2 or argv[0] not in readers:
        print(__doc__, file=sys.stderr)
        return 2
    codes = readers[argv[0]](Path(argv[1]).read_text(encoding="utf-8"))
    for code in sorted(codes):
        print(code)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
