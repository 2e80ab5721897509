"""Success-path overhead of RetryTransport against a bare httpx client and httpx-retries.

All clients talk to an in-process MockTransport that answers a platform's usual success body.
All contenders of a case run in one process, in batches interleaved in a new random order each
round (so all suffer the machine's noise alike), with the garbage collector paused during each
batch. Two figures per request, each the median over the rounds:

* wall clock, in µs: on a shared machine it moves by ±5-10% from run to run;
* user-space CPU instructions (``perf_event_open``, see ``_measure.py``), which repeat to within
  a few hundred per request and so show a 0.1% difference that the wall clock hides. Measured
  in one process, every contender runs on the same heap and the same interpreter state.

    python benchmarks/bench_overhead.py [--requests N] [--rounds R] [--case NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from _measure import Batch, counter, interleaved, steady
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


def measure(names: list[str], requests: int, rounds: int) -> None:
    """All contenders of a case in this one process, interleaved (see ``_measure.py``)."""
    count = counter()
    print(f"median per request over {rounds} rounds of {requests} requests, contenders interleaved")
    print(f"{'case':<24} {'client':<19} {'µs':>7} {'overhead':>9} {'instructions':>13} {'overhead':>9} {'extra':>8}")
    for name in names:
        clients = {c: _client(CASES[name], c) for c in CONTENDERS}
        figures = interleaved({c: run for c, (run, _) in clients.items()}, requests, rounds, count)
        base = figures[CONTENDERS[0]]
        for contender, f in figures.items():
            line = f"{name:<24} {contender:<19} {f.micros:>7.1f} {100 * (f.micros / base.micros - 1):>8.1f}%"
            if f.instructions is not None and base.instructions:
                extra = f.instructions - base.instructions
                line += f" {f.instructions:>13,.0f} {100 * extra / base.instructions:>8.1f}% {extra / 1000:>7.1f}k"
            print(line)
        for _, close in clients.values():
            close()
    if count is not None:
        count.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=31, help="batches per contender")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    args = parser.parse_args()
    steady()
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    measure(args.case or list(CASES), args.requests, args.rounds)
