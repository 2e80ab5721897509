"""Tokens that keep expiring: what share of messages is delivered, and how many renewals it costs.

A FakeWeChat invalidates the current token on a share of sends (``fault_rate(rate,
[TokenExpired()])``, as another deployment renewing it would). 2,000 messages are sent through
one transport by 200 concurrent async tasks (``AsyncRetryTransport``) or by 32 threads
(``RetryTransport``), for expiry rates of 0.2%, 0.5% and 2%, twice: against the fake in the
process (``httpx.MockTransport``, the stable_token hook of the fake) and over 127.0.0.1
(``FakeWeChat.serve()``, ``WeChatTokenHook``). Prints, per run: messages delivered (accepted by
the fake exactly once), the failures by exception, the token hook calls, the expiries (a live
current token invalidated), hook calls per expiry (the first token not counted), and sends per
message.

    python benchmarks/bench_token_storm.py [--messages N] [--seed N] [--transport mock|socket|both]
"""

from __future__ import annotations

import argparse
import collections
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import structlog

import retrypolicy
from retrypolicy.hooks import WeChatTokenHook
from retrypolicy.testing import FakeWeChat, TokenExpired

APPID, SECRET = "wx00000000000storm", "storm-app-secret"
SEND = "/cgi-bin/message/custom/send"
RATES = (0.002, 0.005, 0.02)
RUNNERS = (("async", 200), ("threads", 32))


def run(kind: str, workers: int, rate: float, messages: int, seed: int, served: bool) -> dict[str, Any]:
    fake = FakeWeChat(APPID, SECRET, plain_text_every=0)
    fake.fault_rate(rate, [TokenExpired()], seed=seed)
    failures: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    def failed(exc: retrypolicy.RequestFailed) -> None:
        with lock:
            failures[type(exc).__name__] += 1

    def body(i: int) -> dict[str, Any]:
        return {"touser": f"o{i}", "msgtype": "text", "text": {"content": "hello"}}

    def go(base_url: str, hook: Callable[[], Any], inner: Any) -> None:
        if kind == "async":
            transport: Any = retrypolicy.AsyncRetryTransport("wechat", token=hook, transport=inner)

            async def main() -> None:
                limits = httpx.Limits(max_connections=workers)
                async with httpx.AsyncClient(transport=transport, base_url=base_url, limits=limits) as client:
                    gate = anyio.Semaphore(workers)

                    async def one(i: int) -> None:
                        async with gate:
                            try:
                                await client.post(SEND, json=body(i))
                            except retrypolicy.RequestFailed as exc:
                                failed(exc)

                    async with anyio.create_task_group() as tg:
                        for i in range(messages):
                            tg.start_soon(one, i)

            anyio.run(main)
        else:
            transport = retrypolicy.RetryTransport("wechat", token=hook, transport=inner)
            limits = httpx.Limits(max_connections=workers)
            with httpx.Client(transport=transport, base_url=base_url, limits=limits) as client:

                def one(i: int) -> None:
                    try:
                        client.post(SEND, json=body(i))
                    except retrypolicy.RequestFailed as exc:
                        failed(exc)

                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(one, range(messages)))

    if served:
        with fake.serve() as base_url:
            hook = WeChatTokenHook(APPID, SECRET, base_url=base_url)
            inner = httpx.AsyncHTTPTransport() if kind == "async" else httpx.HTTPTransport()
            go(base_url, hook, inner)
            hook.close()
    else:
        go(FakeWeChat.BASE_URL, fake.token_hook(), httpx.MockTransport(fake))
    sent = len(fake.sent)
    api_requests = fake.requests - fake.token_requests
    return {
        "delivered": sent,
        "failures": dict(failures),
        "hook_calls": fake.token_requests,
        "expiries": fake.expiries,
        "sends_per_message": api_requests / messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--transport", choices=("mock", "socket", "both"), default="both")
    args = parser.parse_args()
    retrypolicy.set_testing(True)  # no backoff sleeps; token renewals never sleep anyway
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))  # quiet
    where = {"mock": (False,), "socket": (True,), "both": (False, True)}[args.transport]
    print(
        "| transport | runner | expiry rate | delivered | failures | hook calls | expiries "
        "| hook calls per expiry | sends per message |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for served in where:
        for kind, workers in RUNNERS:
            for rate in RATES:
                r = run(kind, workers, rate, args.messages, args.seed, served)
                failures = ", ".join(f"{n:,} {name}" for name, n in sorted(r["failures"].items())) or "0"
                per_expiry = (r["hook_calls"] - 1) / r["expiries"] if r["expiries"] else float("nan")
                print(
                    f"| {'127.0.0.1' if served else 'in-process'} | {kind} ({workers}) | {rate:.1%} "
                    f"| {r['delivered'] / args.messages:.2%} ({r['delivered']:,}) | {failures} "
                    f"| {r['hook_calls']} | {r['expiries']} | {per_expiry:.2f} | {r['sends_per_message']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
