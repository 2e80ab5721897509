#!/usr/bin/env python3
"""Print every error code in the WhatsApp Business on-premises API seed document.

Usage: whatsapp_onprem.py [SEEDS_DIR]   (default /work/shared/seeds)

The seed is one Markdown pipe table whose rows look like
    | `470` - Re-engagement message | <p>Message failed ...</p> |
A code is the back-quoted integer at the very start of the first cell. Only
that cell is read, so numbers inside descriptions (4096 characters, 24 hours,
"> 1 day", URLs) are never picked up; the header and the "| --- |" separator
row do not match. Output: sorted, unique, one per line. Stdlib only.
"""

import re
import sys
from pathlib import Path

SEED = "004_95b5911d04b123a5.txt"
ROW = re.compile(r"^\|\s*`(\d+)`\s*-")


def parse(text: str) -> set[int]:
    codes: set[int] = set()
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            codes.add(int(m.group(1)))
    if not codes:
        raise ValueError(f"no error codes found in {SEED}")
    return codes


def main(argv: list[str]) -> None:
    seeds = Path(argv[1]) if len(argv) > 1 else Path("/work/shared/seeds")
    for c in sorted(parse((seeds / SEED).read_text(encoding="utf-8"))):
        print(c)


if __name__ == "__main__":
    main(sys.argv)
