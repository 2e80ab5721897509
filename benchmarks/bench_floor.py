"""How low can a code-reading transport's success path go? The floor under ``bench_overhead.py``.

Four contenders send the same WeChat message through an httpx client over an in-process
MockTransport that answers ``{"errcode":0,"errmsg":"ok"}`` as an unread stream (no hook, the token
in the URL), measured as ``bench_overhead.py`` measures (wall clock, garbage collector on,
interleaved batches; see ``_measure.py``):

* bare httpx;
* **code check**: read the body off the network stream, classify it with the policy table, hand it
  back unread (``bench_overhead.CodeCheckOnly``): what seeing ``{"errcode":40001}`` costs at all;
* **inlined minimum**: the fast path's checks written inline in one method, with nothing else: the
  cooldown and circuit-breaker flags, the redirect mark, the body's type, one pass over the
  response headers (``readable``), the read, the classification and the three success counters
  (no token, no per-request options, no timeout cap, no clock);
* retrypolicy's ``RetryTransport`` as it is.

The gap between the code check and the inlined minimum is what those checks cost however they are
written; the gap between the inlined minimum and retrypolicy is the cost of its structure (calls,
the token and option branches, the clock read for the flow's deadline).

    python benchmarks/bench_floor.py [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import httpx
from _measure import Batch, as_users_run, paired, steady
from bench_overhead import WECHAT, WECHAT_OK, CodeCheckOnly

import retrypolicy
from retrypolicy._bodies import ORIGIN, Unread, readable

BODY = {"touser": "oABC123", "msgtype": "text", "text": {"content": "hello"}}


def _answer(request: httpx.Request) -> httpx.Response:
    headers = {"content-type": "application/json", "content-length": str(len(WECHAT_OK))}
    return httpx.Response(200, headers=headers, stream=httpx.ByteStream(WECHAT_OK))


class InlinedMinimum(retrypolicy.RetryTransport):
    """The fast path's checks for a request without a hook, inline (see the module docstring)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        lane = core._lane
        assert lane is not None
        if (
            ORIGIN in request.extensions
            or not core.cooldowns.quiet
            or not core.breakers.quiet
            or type(request.stream) is not httpx.ByteStream
        ):
            raise AssertionError("the benchmark's request needs the flow")
        response = self._transport.handle_request(request)
        if not readable(response, lane.policy.retry.max_body_bytes):
            raise AssertionError("the benchmark's body is not read")
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)
        raw = b"".join(stream)
        stream.close()
        response.stream = Unread(raw)
        if lane.policy.classify_parts(response.status_code, raw, headers=response.headers) is not None:
            raise AssertionError("the benchmark's success body classified as a failure")
        next(core.stats.first_try)
        if lane.bucket is not None:
            next(lane.bucket.successes)
        breaker = lane.breaker
        if breaker is not None and not next(breaker.successes) & 63:
            core.breakers.tally(breaker)
        return response


def _clients() -> dict[str, tuple[Batch, Any]]:
    inner = {name: httpx.MockTransport(_answer) for name in ("bare", "check", "inline", "ours")}
    transports: dict[str, Any] = {
        "httpx (bare)": inner["bare"],
        "code check": CodeCheckOnly("wechat", inner["check"]),
        "inlined minimum": InlinedMinimum("wechat", transport=inner["inline"]),
        "retrypolicy": retrypolicy.RetryTransport("wechat", transport=inner["ours"]),
    }
    clients = {name: httpx.Client(transport=t) for name, t in transports.items()}

    def batch(client: httpx.Client) -> Batch:
        def run(n: int) -> None:
            for _ in range(n):
                client.post(WECHAT, json=BODY)

        return run

    return {name: (batch(c), c) for name, c in clients.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200, help="rounds (default 200)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    steady()
    clients = _clients()
    samples = as_users_run({name: run for name, (run, _) in clients.items()}, 10, args.rounds, 5)
    base = samples["httpx (bare)"]
    print(f"WeChat send over MockTransport; garbage collector on; median of {args.rounds} rounds of 5 x 10 requests")
    print(f"{'contender':<18} {'µs':>7} {'x bare [IQR]':>22} {'+µs':>6}")
    for name, values in samples.items():
        p = paired(values, base)
        ratio = f"{p.ratio:.3f}x [{p.low:.2f}-{p.high:.2f}]"
        print(f"{name:<18} {statistics.median(values):>7.1f} {ratio:>22} {p.extra:>+6.1f}")
    for _, client in clients.values():
        client.close()


if __name__ == "__main__":
    main()
