"""Where retrypolicy's success-path time goes, above bare httpx: cProfile, garbage collector on.

For one case of ``bench_overhead.py``, bare httpx and retrypolicy send the same requests in
alternating batches, each contender into its own profile (so a slow spell of a shared machine falls
on both alike). Printed per request: the functions whose own time (tottime) or call count differs
most between the two, and the cumulative time of retrypolicy's own functions. cProfile's own cost
per call inflates every figure, so read them as shares and call counts, not as µs the user pays
(``bench_overhead.py`` gives those).

    python benchmarks/profile_overhead.py "token in URL + hook" [--requests N] [--top K]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
from typing import Any

from bench_overhead import BARE, CASES, _client

Key = tuple[str, int, str]


def _where(key: Key) -> str:
    path, line, name = key
    for marker in ("site-packages/", "benchmarks/", "retrypolicy/", "lib/python3"):
        if marker in path:
            path = (marker if marker != "site-packages/" else "") + path.split(marker, 1)[1]
            break
    return f"{path}:{line}({name})" if path != "~" else name


def profile(name: str, requests: int, batch: int = 50) -> dict[str, dict[Key, Any]]:
    """Each contender's pstats table (key: (file, line, function) -> call counts and times)."""
    contenders = (BARE, "retrypolicy")
    clients = {c: _client(CASES[name], c) for c in contenders}
    profiles = {c: cProfile.Profile() for c in contenders}
    for run, _, _ in clients.values():
        run(200)  # warm-up: the token fetched, caches filled, the interpreter's specialisation
    for _ in range(requests // batch):
        for c in contenders:
            profiles[c].enable()
            clients[c][0](batch)
            profiles[c].disable()
    for _, close, _ in clients.values():
        close()
    return {c: pstats.Stats(p).stats for c, p in profiles.items()}  # type: ignore[attr-defined]


def report(name: str, requests: int, top: int) -> None:
    tables = profile(name, requests)
    bare, ours = tables[BARE], tables["retrypolicy"]
    n = requests // 50 * 50
    total = {c: sum(v[2] for v in t.values()) / n * 1e6 for c, t in tables.items()}
    print(
        f"{name}: own time per request under cProfile, bare {total[BARE]:.1f} µs, retrypolicy "
        f"{total['retrypolicy']:.1f} µs ({total['retrypolicy'] / total[BARE]:.2f}x)"
    )
    rows = []
    for key in set(bare) | set(ours):
        b, o = bare.get(key, (0, 0, 0.0, 0.0)), ours.get(key, (0, 0, 0.0, 0.0))
        rows.append(((o[2] - b[2]) / n * 1e6, (o[1] - b[1]) / n, o[2] / n * 1e6, o[3] / n * 1e6, o[1] / n, key))
    print(f"\n{'Δ own µs':>9} {'Δ calls':>8} {'own µs':>7} {'cum µs':>7} {'calls':>6}  function (per request)")
    rows.sort(key=lambda r: -abs(r[0]))
    for d, dc, own, cum, calls, key in rows[:top]:
        print(f"{d:>+9.2f} {dc:>+8.2f} {own:>7.2f} {cum:>7.2f} {calls:>6.2f}  {_where(key)}")
    print("\ncalls per request that only retrypolicy makes, or makes more of (deterministic):")
    extra = sorted((r for r in rows if r[1] > 0.005), key=lambda r: (-r[1], _where(r[5])))
    for _, dc, _, cum, _, key in extra[:top]:
        print(f"{dc:>+8.2f} calls, {cum:>7.2f} µs cum  {_where(key)}")
    print("\nretrypolicy's own functions, cumulative µs per request:")
    own_rows = sorted((r for r in rows if "retrypolicy/" in _where(r[5]) and r[4] > 0), key=lambda r: -r[3])
    for _, _, own, cum, calls, key in own_rows[:top]:
        print(f"{cum:>7.2f} cum {own:>6.2f} own {calls:>5.2f} calls  {_where(key)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--requests", type=int, default=10000, help="per contender (default 10000)")
    parser.add_argument("--top", type=int, default=25, help="rows per table (default 25)")
    args = parser.parse_args()
    if args.requests < 50:
        parser.error("--requests must be at least 50")
    report(args.case, args.requests, args.top)
