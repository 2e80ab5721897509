"""Success-path overhead of RetryTransport against a bare httpx client and httpx-retries.

All clients talk to the same in-process MockTransport; rounds are interleaved (bare,
retrypolicy, httpx-retries, bare, ...) so machine noise hits every contender alike. Prints the
median µs per request of each and the overhead against bare httpx.

    python benchmarks/bench_overhead.py [--requests N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import httpx
from httpx_retries import Retry
from httpx_retries import RetryTransport as HttpxRetriesTransport

import retrypolicy

URL_NO_TOKEN = "https://api.weixin.qq.com/cgi-bin/message/custom/send"
URL = URL_NO_TOKEN + "?access_token=ACCESS_TOKEN_VALUE"
BODY = {"touser": "oABC123", "msgtype": "text", "text": {"content": "hello"}}
RESPONSES = {
    "errcode 0 body": httpx.Response(200, json={"errcode": 0, "errmsg": "ok"}),
    "body without errcode": httpx.Response(200, json={"msgid": 1234567890, "data": {"x": "y" * 200}}),
}


def _clients(response: httpx.Response, hook: bool = False) -> dict[str, httpx.Client]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(response.status_code, headers=response.headers, content=response.content)

    def mock() -> httpx.MockTransport:
        return httpx.MockTransport(handler)

    return {
        "httpx (bare)": httpx.Client(transport=mock()),
        "retrypolicy": httpx.Client(
            transport=retrypolicy.RetryTransport(
                policy="wechat", transport=mock(), token=(lambda: "ACCESS_TOKEN_VALUE") if hook else None
            )
        ),
        "httpx-retries": httpx.Client(transport=HttpxRetriesTransport(transport=mock(), retry=Retry(total=3))),
    }


def _time(send: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        send()
    return (time.perf_counter() - start) / n * 1e6


def run(requests: int, rounds: int) -> None:
    print(f"{'case':<22} {'client':<15} {'µs/request':>11} {'overhead':>9}")
    cases = [(case, response, False) for case, response in RESPONSES.items()]
    cases.append(("token filled by hook", RESPONSES["errcode 0 body"], True))
    for case, response, hook in cases:
        clients = _clients(response, hook)
        # with a hook, retrypolicy gets the URL without a token and fills it in; the others get it in the URL
        urls = {name: URL_NO_TOKEN if hook and name == "retrypolicy" else URL for name in clients}
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for name, client in clients.items():  # warm up
            for _ in range(200):
                client.post(urls[name], json=BODY)
        for _ in range(rounds):
            for name, client in clients.items():
                url = urls[name]
                samples[name].append(_time(lambda c=client, u=url: c.post(u, json=BODY), requests))  # type: ignore[misc]
        base = statistics.median(samples["httpx (bare)"])
        for name, values in samples.items():
            median = statistics.median(values)
            print(f"{case:<22} {name:<15} {median:>11.1f} {100 * (median / base - 1):>8.1f}%")
        for client in clients.values():
            client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    run(args.requests, args.rounds)
