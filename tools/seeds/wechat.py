#!/usr/bin/env python3
"""Print every WeChat Official Account error code found in the seed documents.

Usage: python tools/seeds/wechat.py [SEEDS_DIR]   (default: /work/shared/seeds)

Stdlib only. Output: sorted, unique codes, one per line (negative codes included).
Only the code column of each seed is read, so numbers that appear inside
descriptions (sizes, limits, dates, years) are never taken for codes.

Seeds (see SEEDS_DIR/README.md):
  000_2279e1b59c6d0640.txt  pipe table "code | description | cause and solution |"
  001_4035a1a28ad1ff6e.txt  FAQ; each code sits alone on its own line
  002_959ce08de27a1e58.txt  HTML table; the code is the first <td> of a <tr>
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DEFAULT_SEEDS = Path("/work/shared/seeds")

SEED_FILES = (
    "000_2279e1b59c6d0640.txt",
    "001_4035a1a28ad1ff6e.txt",
    "002_959ce08de27a1e58.txt",
)

# 000: a table row starts with the code followed by the first column separator.
PIPE_ROW = re.compile(r"^\s*(-?\d+)\s*\|", re.MULTILINE)
# 001: the FAQ comparison table puts each code on a line of its own; WeChat
# codes have at least 5 digits, so list numbering ("1.", "2.") never matches.
LONE_CODE = re.compile(r"^[ \t]*(-?\d{5,})[ \t]*$", re.MULTILINE)
# 002: <tr> <td> CODE </td> ... ; only the first cell of a row is the code.
HTML_ROW = re.compile(r"<tr>\s*<td>\s*(-?\d+)\s*</td>", re.IGNORECASE)


def codes_in(text: str) -> set[int]:
    """Codes in one seed, recognising its layout from its content."""
    if "<td" in text.lower():
        pattern = HTML_ROW
    elif PIPE_ROW.search(text):
        pattern = PIPE_ROW
    else:
        pattern = LONE_CODE
    return {int(m) for m in pattern.findall(text)}


def main(argv: list[str]) -> int:
    seeds = Path(argv[1]) if len(argv) > 1 else DEFAULT_SEEDS
    found: set[int] = set()
    for name in SEED_FILES:
        path = seeds / name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot read seed {path}: {exc}", file=sys.stderr)
            return 1
        codes = codes_in(text)
        if not codes:
            print(f"error: no codes found in {path}", file=sys.stderr)
            return 1
        found |= codes
    for code in sorted(found):
        print(code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
