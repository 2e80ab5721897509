"""Success-path overhead of retrypolicy.requests.RetryAdapter against requests' own HTTPAdapter.

Both sessions POST a WeChat send to a local HTTP server in another process (127.0.0.1,
keep-alive; the server of ``bench_overhead.py --serve``), which answers WeChat's success body.
Wall clock per request with the garbage collector on, contenders interleaved in a new random
order each round (see ``_measure.py``); the ratio is the median of the per-round ratios to bare
requests, with its interquartile range.

    python benchmarks/bench_requests.py [--requests N] [--batches B] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import requests
from _measure import Batch, as_users_run, paired, steady
from bench_overhead import REQUEST_BODY, local_server

import retrypolicy
from retrypolicy.requests import RetryAdapter

PATH = "/cgi-bin/message/custom/send"
BODY: dict[str, Any] = dict(REQUEST_BODY)


def _session(adapter: requests.adapters.HTTPAdapter) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", adapter)
    return session


def main(requests_per_batch: int, batches: int, rounds: int) -> None:
    steady()
    with local_server() as server:
        token = retrypolicy.Token("ACCESS_TOKEN_VALUE", expires_in=7200)
        sessions: dict[str, tuple[requests.Session, str]] = {
            "requests (bare)": (
                _session(requests.adapters.HTTPAdapter()),
                f"{server}{PATH}?access_token=ACCESS_TOKEN_VALUE",
            ),
            "RetryAdapter, hook fills token": (
                _session(RetryAdapter(policy="wechat", token=lambda: token)),
                f"{server}{PATH}",
            ),
            "RetryAdapter, token in URL": (
                _session(RetryAdapter(policy="wechat")),
                f"{server}{PATH}?access_token=ACCESS_TOKEN_VALUE",
            ),
        }

        def batch(session: requests.Session, url: str) -> Batch:
            def run(n: int) -> None:
                for _ in range(n):
                    session.post(url, json=BODY).raise_for_status()

            return run

        runs = {name: batch(session, url) for name, (session, url) in sessions.items()}
        samples = as_users_run(runs, requests_per_batch, rounds, batches)
        base = samples["requests (bare)"]
        print(f"\nGarbage collector on; a local HTTP server in another process ({server}).")
        print(f"µs per request: median of {rounds} rounds of {batches} batches of {requests_per_batch} requests;")
        print("x: median of the per-round ratios to bare requests [interquartile range]; +µs over bare.")
        print(f"{'contender':<32} {'µs':>8} {'x':>7} {'IQR':>13} {'+µs':>7}")
        for name, values in samples.items():
            p: Any = paired(values, base)
            line = f"{name:<32} {statistics.median(values):>8.1f} {p.ratio:>6.2f}x"
            print(line + f" {f'[{p.low:.2f}-{p.high:.2f}]':>13} {p.extra:>+7.1f}", flush=True)
        for session, _ in sessions.values():
            session.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10, help="requests per batch (default 10)")
    parser.add_argument("--batches", type=int, default=5, help="batches per contender in a round (default 5)")
    parser.add_argument("--rounds", type=int, default=60, help="rounds (default 60)")
    args = parser.parse_args()
    if args.requests < 1 or args.batches < 1 or args.rounds < 2:
        parser.error("--requests and --batches must be at least 1, --rounds at least 2")
    main(args.requests, args.batches, args.rounds)
