"""Retries under overload: attempts per logical request and goodput, three libraries side by side.

Workloads (10,000 sequential logical requests each, against an in-process fake WeChat API):

* ``outage (errcode -1)``: every answer is WeChat's "system busy" in an HTTP 200 body;
* ``outage (HTTP 503)``: every answer is a 503 (so status-based retries see it too);
* ``5% transient (errcode -1)``: 5 % of answers are "system busy", independently per attempt.

Contenders, each allowed 5 attempts with no waits (waits do not change these counts):

* ``retrypolicy``: RetryTransport with its default retry budget;
* ``tenacity``: a plain ``@retry`` on the call, retrying when the body's errcode is not 0 or the
  status is 5xx — what a user writes by hand;
* ``httpx-retries``: its RetryTransport, status-based (429/5xx).

    python benchmarks/bench_overload.py [--requests N]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
from collections.abc import Callable

import httpx
import structlog
import tenacity
from httpx_retries import Retry
from httpx_retries import RetryTransport as HttpxRetriesTransport

import retrypolicy

URL = "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=T"
BUSY = b'{"errcode":-1,"errmsg":"system error"}'
OK = b'{"errcode":0,"errmsg":"ok"}'
HEADERS = {"content-type": "application/json"}


class Fake:
    """Answers by workload; counts attempts."""

    def __init__(self, workload: str, seed: int = 7) -> None:
        self.workload = workload
        self.attempts = 0
        self.rng = random.Random(seed)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.workload == "outage (HTTP 503)":
            return httpx.Response(503, headers=HEADERS, content=b"<html>503</html>")
        if self.workload == "outage (errcode -1)" or self.rng.random() < 0.05:
            return httpx.Response(200, headers=HEADERS, content=BUSY)
        return httpx.Response(200, headers=HEADERS, content=OK)


def good(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.json().get("errcode", 0) == 0


def run_retrypolicy(fake: Fake, n: int) -> int:
    settings = retrypolicy.RetrySettings(max_attempts=5, initial_delay=0, max_delay=0, deadline=60)
    transport = retrypolicy.RetryTransport(policy="wechat", retry=settings, transport=httpx.MockTransport(fake))
    ok = 0
    with httpx.Client(transport=transport) as client:
        for _ in range(n):
            with contextlib.suppress(retrypolicy.RequestFailed):  # a give-up counts as not good
                ok += good(client.post(URL, json={}))
    return ok


def run_tenacity(fake: Fake, n: int) -> int:
    ok = 0
    with httpx.Client(transport=httpx.MockTransport(fake)) as client:

        @tenacity.retry(
            stop=tenacity.stop_after_attempt(5),
            retry=tenacity.retry_if_result(lambda r: not good(r)),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        def send() -> httpx.Response:
            return client.post(URL, json={})

        for _ in range(n):
            response = send()
            ok += response is not None and good(response)
    return ok


def run_httpx_retries(fake: Fake, n: int) -> int:
    retry = Retry(total=4, backoff_factor=0, allowed_methods=["POST"], status_forcelist=[429, 502, 503, 504])
    ok = 0
    transport = HttpxRetriesTransport(transport=httpx.MockTransport(fake), retry=retry)
    with httpx.Client(transport=transport) as client:
        for _ in range(n):
            ok += good(client.post(URL, json={}))
    return ok


CONTENDERS: dict[str, Callable[[Fake, int], int]] = {
    "retrypolicy": run_retrypolicy,
    "tenacity": run_tenacity,
    "httpx-retries": run_httpx_retries,
}
WORKLOADS = ("outage (errcode -1)", "outage (HTTP 503)", "5% transient (errcode -1)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    retrypolicy.set_testing(True)  # no sleeping: the counts are what matter here
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))  # no event output
    print(f"{'workload':<27} {'library':<14} {'attempts/request':>16} {'goodput':>9}")
    for workload in WORKLOADS:
        for name, run in CONTENDERS.items():
            fake = Fake(workload)
            ok = run(fake, args.requests)
            print(f"{workload:<27} {name:<14} {fake.attempts / args.requests:>16.3f} {ok / args.requests:>8.2%}")


if __name__ == "__main__":
    main()
