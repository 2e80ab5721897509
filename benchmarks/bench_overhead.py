"""Success-path overhead of RetryTransport against a bare httpx client and httpx-retries.

All clients talk to an in-process MockTransport that answers a platform's usual success body.
Two measures, each printed as a table:

* wall clock: rounds interleaved in a new random order each round (bare, retrypolicy and
  httpx-retries alike suffer the machine's noise); median µs per request over the rounds.
* instructions (when ``perf stat`` can count them): user-space CPU instructions per request,
  from one process doing N requests minus one doing none. With address randomisation off
  (``setarch -R``) and a fixed hash seed, two runs agree to within ~0.01k instructions per
  request, so it shows a 0.1% difference that wall-clock noise on a shared machine hides. Branch misses are
  printed beside them: interpreted code pays for them, so instructions understate time.

    python benchmarks/bench_overhead.py [--requests N] [--rounds R] [--case NAME ...]
        [--skip-wall-clock] [--skip-instructions]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_retries import Retry
from httpx_retries import RetryTransport as HttpxRetriesTransport

import retrypolicy


@dataclass(frozen=True)
class Case:
    policy: str
    url: str  # with the token in it (query or header below), as the other clients send it
    body: bytes  # the response body
    header_token: bool = False  # the token goes in Authorization, not the URL
    hook: bool = False  # retrypolicy gets no token and fills it in from its hook
    method: str = "POST"
    asynchronous: bool = False  # httpx.AsyncClient and the async transports, one event loop


WECHAT = "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=ACCESS_TOKEN_VALUE"
TENCENT = (
    "https://console.tim.qq.com/v4/openim/sendmsg?sdkappid=1400000000&identifier=admin"
    "&usersig=USERSIG_VALUE&random=99999999&contenttype=json"
)
CASES = {
    "wechat errcode 0": Case("wechat", WECHAT, b'{"errcode":0,"errmsg":"ok"}'),
    "wechat with msgid": Case("wechat", WECHAT, b'{"errcode":0,"errmsg":"ok","msgid":200228332}'),
    "wechat no errcode": Case("wechat", WECHAT, b'{"msgid":1234567890,"data":{"x":"' + b"y" * 200 + b'"}}'),
    "wechat token by hook": Case("wechat", WECHAT, b'{"errcode":0,"errmsg":"ok"}', hook=True),
    "wechat GET user info": Case(
        "wechat",
        "https://api.weixin.qq.com/cgi-bin/user/info?access_token=ACCESS_TOKEN_VALUE&openid=oABC123&lang=zh_CN",
        b'{"subscribe":1,"openid":"oABC123","language":"zh_CN","subscribe_time":1382694957,'
        b'"unionid":"o6_bmasdasdsad6_2sgVt7hMZOPfL","remark":"","groupid":0,"tagid_list":[128,2],'
        b'"subscribe_scene":"ADD_SCENE_QR_CODE","qr_scene":98765,"qr_scene_str":""}',
        method="GET",
    ),
    "tencent sendmsg": Case(
        "tencent_im",
        TENCENT,
        b'{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0,"MsgTime":1700000000,"MsgKey":"1_2_1700000000"}',
    ),
    "wechat errcode 0 async": Case("wechat", WECHAT, b'{"errcode":0,"errmsg":"ok"}', asynchronous=True),
    "whatsapp cloud send": Case(
        "whatsapp_cloud",
        "https://graph.facebook.com/v21.0/106540352242922/messages",
        b'{"messaging_product":"whatsapp","contacts":[{"input":"+16505551234","wa_id":"16505551234"}],'
        b'"messages":[{"id":"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}',
        header_token=True,
    ),
}
# httpx-retries never retries a POST unless told to: "+POST" is it configured to, which a message
# send needs to be retried at all; on a GET both do their full work. "code check only" is the
# floor of any transport that reads the error code: see CodeCheckOnly.
CONTENDERS = ("httpx (bare)", "retrypolicy", "httpx-retries", "httpx-retries+POST", "code check only")
REQUEST_BODY = {"touser": "oABC123", "msgtype": "text", "text": {"content": "hello"}}


Batch = Callable[[int], None]  # sends that many requests, one after another


class CodeCheckOnly(httpx.BaseTransport):
    """The least a transport that reads the error code can do on a success: pass the request
    through, read the body, and ask the policy table whether it holds an error (the same
    ``Policy.classify_parts`` retrypolicy uses, with its one-regex proof of success). No retry,
    no token, no counters, no budget, no clock: nothing else. What retrypolicy costs beyond this
    line is its machinery; this line itself is the price of seeing ``{"errcode":40001}`` at all.
    """

    def __init__(self, policy: str, inner: httpx.BaseTransport) -> None:
        self._policy = retrypolicy.load_policy(policy)
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if self._policy.classify_parts(response.status_code, response.read()) is not None:
            raise AssertionError("the benchmark's success body classified as a failure")
        return response


class AsyncCodeCheckOnly(httpx.AsyncBaseTransport):
    """:class:`CodeCheckOnly` for ``httpx.AsyncClient``."""

    def __init__(self, policy: str, inner: httpx.AsyncBaseTransport) -> None:
        self._policy = retrypolicy.load_policy(policy)
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if self._policy.classify_parts(response.status_code, await response.aread()) is not None:
            raise AssertionError("the benchmark's success body classified as a failure")
        return response


def _client(case: Case, contender: str) -> tuple[Batch, Callable[[], None]]:
    """(a function sending N requests, a function closing the client) for one contender."""
    headers = {"content-type": "application/json", "content-length": str(len(case.body))}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, content=case.body)

    inner = httpx.MockTransport(handler)
    transport: Any = inner
    url = case.url
    if contender == "retrypolicy":
        hook = (lambda: "ACCESS_TOKEN_VALUE") if case.hook else None
        kind = retrypolicy.AsyncRetryTransport if case.asynchronous else retrypolicy.RetryTransport
        transport = kind(policy=case.policy, transport=inner, token=hook)
        if case.hook:  # the client sends no token; the transport fills it in
            url = url.split("?")[0]
    elif contender == "httpx-retries":
        transport = HttpxRetriesTransport(transport=inner, retry=Retry(total=3))
    elif contender == "httpx-retries+POST":
        methods = [*Retry.RETRYABLE_METHODS, "POST"]
        transport = HttpxRetriesTransport(transport=inner, retry=Retry(total=3, allowed_methods=methods))
    elif contender == "code check only":
        transport = (AsyncCodeCheckOnly if case.asynchronous else CodeCheckOnly)(case.policy, inner)
    auth = {"Authorization": "Bearer ACCESS_TOKEN_VALUE"} if case.header_token else {}
    body = None if case.method == "GET" else REQUEST_BODY
    if case.asynchronous:
        aclient = httpx.AsyncClient(transport=transport, headers=auth)
        loop = asyncio.new_event_loop()

        async def batch(n: int) -> None:
            for _ in range(n):
                await aclient.request(case.method, url, json=body)

        def aclose() -> None:
            loop.run_until_complete(aclient.aclose())
            loop.close()

        return lambda n: loop.run_until_complete(batch(n)), aclose
    client = httpx.Client(transport=transport, headers=auth)

    def run(n: int) -> None:
        for _ in range(n):
            client.request(case.method, url, json=body)

    return run, client.close


def wall_clock(names: list[str], requests: int, rounds: int) -> None:
    print(f"wall clock: median µs per request over {rounds} interleaved rounds of {requests}")
    print(f"{'case':<24} {'client':<19} {'µs/request':>11} {'overhead':>9}")
    for name in names:
        clients = {c: _client(CASES[name], c) for c in CONTENDERS}
        samples: dict[str, list[float]] = {c: [] for c in CONTENDERS}
        for run, _ in clients.values():  # warm up
            run(200)
        order = list(CONTENDERS)
        for _ in range(rounds):
            random.shuffle(order)
            for contender in order:
                run = clients[contender][0]
                start = time.perf_counter()
                run(requests)
                samples[contender].append((time.perf_counter() - start) / requests * 1e6)
        base = statistics.median(samples[CONTENDERS[0]])
        for contender in CONTENDERS:
            median = statistics.median(samples[contender])
            print(f"{name:<24} {contender:<19} {median:>11.1f} {100 * (median / base - 1):>8.1f}%")
        for _, close in clients.values():
            close()


def _no_aslr() -> list[str]:
    """``setarch -R``: the same addresses in every run, so that (with PYTHONHASHSEED fixed) two
    runs count the same instructions to within a few hundred, not a few million."""
    cmd = ["setarch", platform.machine(), "-R"]
    if shutil.which("setarch") and subprocess.run([*cmd, "true"], capture_output=True, check=False).returncode == 0:
        return cmd
    return []


_NO_ASLR: list[str] = []


def _perf_counts(name: str, contender: str, requests: int) -> tuple[int, int] | None:
    """(instructions, branch misses) in user space of a worker process, or None if perf cannot tell."""
    events = "instructions:u,branch-misses:u"
    cmd = [*_NO_ASLR, "perf", "stat", "-x,", "-e", events, sys.executable, __file__, "--worker", name, contender]
    result = subprocess.run([*cmd, str(requests)], capture_output=True, text=True, check=False)
    counts: dict[str, int] = {}
    for line in result.stderr.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            counts[fields[2].split(":")[0]] = int(fields[0])
    if "instructions" not in counts or "branch-misses" not in counts:
        return None
    return counts["instructions"], counts["branch-misses"]


def instructions(names: list[str], requests: int) -> None:
    if shutil.which("perf") is None or _perf_counts(names[0], CONTENDERS[0], 0) is None:
        print("instructions: skipped (perf stat cannot count instructions on this machine)")
        return
    _NO_ASLR[:] = _no_aslr()
    fixed = ", address randomisation off" if _NO_ASLR else ""
    print(f"instructions: user space, per request (perf stat; {requests} requests minus none{fixed})")
    print(f"{'case':<24} {'client':<19} {'instr/request':>14} {'overhead':>9} {'extra':>8} {'branch misses':>14}")
    for name in names:
        per: dict[str, tuple[float, float]] = {}
        for contender in CONTENDERS:
            idle = _perf_counts(name, contender, 0)
            busy = _perf_counts(name, contender, requests)
            if idle is None or busy is None:
                print(f"{name:<24} {contender:<19} {'failed':>14}")
                continue
            per[contender] = ((busy[0] - idle[0]) / requests, (busy[1] - idle[1]) / requests)
        base = per.get(CONTENDERS[0], (0.0, 0.0))[0]
        for contender, (value, misses) in per.items():
            overhead = f"{100 * (value / base - 1):>8.1f}%" if base else ""
            extra = f"{(value - base) / 1000:>7.1f}k" if base else ""
            print(f"{name:<24} {contender:<19} {value:>14,.0f} {overhead:>9} {extra:>8} {misses:>14,.0f}")


def worker(name: str, contender: str, requests: int) -> None:
    """Warm up, then send ``requests`` requests (run under perf stat by ``instructions``)."""
    run, close = _client(CASES[name], contender)
    run(200)
    run(requests)
    close()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=500, help="requests per round (wall clock)")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--instructions-requests", type=int, default=20000)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    parser.add_argument("--skip-wall-clock", action="store_true")
    parser.add_argument("--skip-instructions", action="store_true")
    args = parser.parse_args()
    chosen = args.case or list(CASES)
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts in every worker process
    if args.requests < 1 or args.rounds < 1 or args.instructions_requests < 1:
        parser.error("--requests, --rounds and --instructions-requests must be at least 1")
    if not args.skip_wall_clock:
        wall_clock(chosen, args.requests, args.rounds)
        print()
    if not args.skip_instructions:
        instructions(chosen, args.instructions_requests)
