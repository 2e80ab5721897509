"""A platform that hangs: what the caller waits and what the platform gets, with and without the
circuit breaker (issue 19).

A local HTTP server accepts connections and reads each request, then never answers, for
``--outage`` seconds (30); then it recovers and answers WeChat's ``{"errcode":0}``. One caller
sends ``--requests`` idempotent GETs (60) through ``RetryTransport`` with a ``--read-timeout``
(0.1 s) and ``--attempts`` (2) attempts each (backoff 10 ms), back to back as in the issue's test
(``--pace S`` spaces their starts S seconds apart instead, a steady load across the outage).
After them it keeps sending one request every ``--every`` seconds (0.5) until one succeeds.

Printed per contender (the default breaker, and ``breaker=None``):

* attempts per request: attempts the server saw during the 60 requests, divided by 60;
* the time the caller waited per request (median, mean, max) and in all;
* requests that failed fast (in under 50 ms, unsent);
* the time from the recovery to the first success.

Goal (issue 19, the 60-request case): at most 40 attempts, most requests failing in under 50 ms,
the first success within 35 s of the recovery.

    python benchmarks/bench_outage.py [--outage 30] [--requests 60] [--pace 0] [--every 0.5]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

import retrypolicy

FAST = 0.050  # a request that ended in under this failed fast
OK = json.dumps({"errcode": 0, "errmsg": "ok"}).encode()


class Outage:
    """The server's state: down (hang) until ``recovered_at``; counts the requests that arrive."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.closing = threading.Event()
        self.attempts = 0
        self.lock = threading.Lock()
        self.recovered_at = 0.0
        self.attempts_at_recovery = 0

    def recover(self) -> None:
        with self.lock:
            self.recovered_at = time.monotonic()
            self.attempts_at_recovery = self.attempts
            self.up.set()


def _handler(outage: Outage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with outage.lock:
                outage.attempts += 1
            if not outage.up.is_set():
                while not outage.closing.is_set() and not outage.up.wait(0.05):
                    pass  # hang: the client times out and closes its end
                self.close_connection = True
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(OK)))
            self.end_headers()
            self.wfile.write(OK)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@dataclass
class Result:
    name: str
    attempts: int  # during the requests
    waits: list[float]  # per request
    fast: int
    failed: int
    probes_outage: int  # attempts the server saw after the requests, before the recovery (the breaker's probes)
    first_success: float  # seconds after the recovery
    opened: int


def run(name: str, breaker: retrypolicy.CircuitBreaker | str | None, args: argparse.Namespace) -> Result:
    outage = Outage()
    httpd = _Server(("127.0.0.1", 0), _handler(outage))
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    retry = retrypolicy.RetrySettings(max_attempts=args.attempts, initial_delay=0.01, max_delay=0.01)
    quiet = logging.getLogger("bench_outage")  # the events of 120 failures would drown the table
    quiet.disabled = True
    transport = retrypolicy.RetryTransport(
        "wechat",
        retry=retry,
        breaker=breaker,  # type: ignore[arg-type]
        logger=quiet,
    )
    timeout = httpx.Timeout(5.0, read=args.read_timeout)
    waits: list[float] = []
    fast = failed = 0
    try:
        with httpx.Client(transport=transport, base_url=url, timeout=timeout) as client:
            start = time.monotonic()
            timer = threading.Timer(args.outage, outage.recover)
            timer.start()

            def send() -> bool:
                try:
                    client.get("/cgi-bin/user/info", params={"openid": "o1"})
                except retrypolicy.RequestFailed:
                    return False
                return True

            for i in range(args.requests):
                if args.pace:
                    time.sleep(max(0.0, start + i * args.pace - time.monotonic()))
                began = time.monotonic()
                ok = send()
                waited = time.monotonic() - began
                waits.append(waited)
                if not ok:
                    failed += 1
                    fast += waited < FAST
            during = outage.attempts
            while not send():  # keep trying until the platform answers
                time.sleep(args.every)
            first = time.monotonic() - outage.recovered_at
            probes = max(0, outage.attempts_at_recovery - during)
            timer.cancel()
            opened = sum(c.opened for c in transport.snapshot().circuits)
    finally:
        outage.closing.set()
        httpd.shutdown()
        httpd.server_close()
    return Result(name, during, waits, fast, failed, probes, first, opened)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outage", type=float, default=30.0, help="seconds the server hangs (default 30)")
    p.add_argument("--requests", type=int, default=60)
    p.add_argument("--read-timeout", type=float, default=0.1)
    p.add_argument("--attempts", type=int, default=2)
    p.add_argument("--pace", type=float, default=0.0, help="seconds between request starts (0: back to back)")
    p.add_argument("--every", type=float, default=0.5, help="seconds between tries after the requests")
    args = p.parse_args()
    contenders: list[tuple[str, retrypolicy.CircuitBreaker | str | None]] = [
        ("breaker (defaults)", "table"),
        ("no breaker", None),
    ]
    load = "back to back" if not args.pace else f"one every {args.pace:g} s"
    print(
        f"{args.requests} GETs ({load}), read timeout {args.read_timeout:g} s, {args.attempts} attempts each; "
        f"the server hangs for {args.outage:g} s, then recovers"
    )
    results = [run(name, breaker, args) for name, breaker in contenders]
    print()
    print(
        "| contender | attempts (per request) | caller waited per request: median / mean / max | waited in all "
        "| failed fast (< 50 ms) | attempts after them, until the recovery | first success after the recovery |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        med, mean, top = statistics.median(r.waits), statistics.fmean(r.waits), max(r.waits)
        print(
            f"| {r.name} | {r.attempts} ({r.attempts / args.requests:.2f}) "
            f"| {med * 1000:.1f} / {mean * 1000:.0f} / {top * 1000:.0f} ms | {sum(r.waits):.1f} s "
            f"| {r.fast} of {r.failed} failed | {r.probes_outage} | {r.first_success:.1f} s |"
        )
    b = results[0]
    goals = [
        (f"the server sees at most 40 attempts ({b.attempts})", b.attempts <= 40),
        (f"most requests fail in under 50 ms ({b.fast} of {args.requests})", b.fast * 2 > args.requests),
        (f"first success within 35 s of the recovery ({b.first_success:.1f} s)", b.first_success <= 35),
    ]
    print()
    for text, met in goals:
        print(f"goal: {text}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
