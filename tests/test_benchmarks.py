"""The overhead benchmarks still run, and what the README says of them still holds in their
output: every kind of request in ``bench_overhead.py`` takes the fast path (figures are not
asserted: speed is measured by the benchmarks, never by tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCHMARKS,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def test_every_request_of_the_overhead_bench_takes_the_fast_path() -> None:
    lines = run("bench_overhead.py", "--rounds", "2", "--batches", "1", "--requests", "2")
    head = next(i for i, line in enumerate(lines) if line.startswith("case "))
    rows = lines[head + 1 :]
    rows = rows[: rows.index("")] if "" in rows else rows
    # name (30 columns), bare µs, ratio, [IQR], +µs, path, the other contenders
    paths = {row[:30].rstrip(): row[30:].split()[4] for row in rows}
    assert len(paths) == 19 and "hook, generator request" in paths and "quickstart: hook fills token" in paths
    assert paths == dict.fromkeys(paths, "fast")


def test_the_floor_bench_prints_its_four_contenders() -> None:
    lines = run("bench_floor.py", "--rounds", "2")
    names = [line.split("  ")[0] for line in lines[2:]]
    assert names == ["httpx (bare)", "code check", "inlined minimum", "retrypolicy"]
