"""Many workers, one token: renewals per expiry, and what RedisTokenStore costs a successful request.

1. Renewals per expiry. 1, 4 and 16 spawned processes, each an AsyncRetryTransport sending
   ``--concurrency`` concurrent requests to one FakeWeChat served on 127.0.0.1. The token is
   expired ``--expiries`` times; after each expiry every process sends a burst, and the token
   endpoint calls are counted. Without a store every process renews on its own (N per expiry;
   with the classic ``/cgi-bin/token`` endpoint each call invalidates the others' tokens); with
   RedisTokenStore the goal is 1.
2. Success-path overhead: µs and CPU instructions per request of a RetryTransport (sync and
   async) with no store, a MemoryTokenStore and a RedisTokenStore, against an in-process
   MockTransport; batches interleaved in one process, medians (see ``_measure.py``).

Starts its own redis-server (``apt-get install redis-server``) on 127.0.0.1 and a free port.

    python benchmarks/bench_redis.py [--concurrency N] [--expiries N] [--requests N] [--rounds N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import httpx
import structlog
from _measure import Batch, counter, interleaved, steady

import retrypolicy
from retrypolicy.hooks import WeChatTokenHook
from retrypolicy.testing import FakeWeChat, redis_server

APPID, SECRET = "wx0000000000bench", "bench-app-secret"
SEND = "/cgi-bin/message/custom/send"
BODY = {"touser": "oABC123", "msgtype": "text", "text": {"content": "hello"}}
OK = httpx.Response(200, json={"errcode": 0, "errmsg": "ok"})


# -- 1. renewals per expiry ----------------------------------------------------------------------


def worker(redis_url: str | None, namespace: str, base_url: str, concurrency: int, rounds: int, barrier: Any) -> None:
    """One worker process: for each round, wait for the start, send a burst, report the end."""
    retrypolicy.set_testing(True)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # quiet: errors only

    async def main() -> None:
        store = retrypolicy.RedisTokenStore.from_url(redis_url, namespace=namespace) if redis_url else None
        hook = WeChatTokenHook(APPID, SECRET, base_url=base_url)
        transport = retrypolicy.AsyncRetryTransport(policy="wechat", token=hook, token_store=store)
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, limits=limits, timeout=30) as client:

            async def send(i: int) -> None:
                with contextlib.suppress(retrypolicy.RequestFailed):
                    await client.post(SEND, json={"touser": f"u{i}", "msgtype": "text"})

            for _ in range(rounds):
                await anyio.to_thread.run_sync(barrier.wait)  # start
                async with anyio.create_task_group() as tg:
                    for i in range(concurrency):
                        tg.start_soon(send, i)
                await anyio.to_thread.run_sync(barrier.wait)  # done
        if store is not None:
            await store.aclose()
        await hook.aclose()

    anyio.run(main)


def renewals(redis_url: str | None, processes: int, concurrency: int, expiries: int) -> tuple[int, list[int]]:
    """(token endpoint calls for the first acquisition, calls after each expiry)."""
    fake = FakeWeChat(APPID, SECRET, plain_text_every=0)
    ctx = multiprocessing.get_context("spawn")
    rounds = 1 + expiries
    barrier = ctx.Barrier(processes + 1)
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    with fake.serve() as base_url:
        workers = [
            ctx.Process(target=worker, args=(redis_url, namespace, base_url, concurrency, rounds, barrier), daemon=True)
            for _ in range(processes)
        ]
        for w in workers:
            w.start()
        counts: list[int] = []
        before = 0
        for r in range(rounds):
            if r > 0:
                fake.expire_tokens()
            barrier.wait(timeout=120)  # start
            barrier.wait(timeout=120)  # done
            counts.append(fake.token_requests - before)
            before = fake.token_requests
        for w in workers:
            w.join(30)
    return counts[0], counts[1:]


# -- 2. success-path overhead --------------------------------------------------------------------


def _handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers=OK.headers, content=OK.content)


def _stores(redis_url: str) -> dict[str, Any]:
    return {
        "no store": None,
        "MemoryTokenStore": retrypolicy.MemoryTokenStore(),
        "RedisTokenStore": retrypolicy.RedisTokenStore.from_url(redis_url, namespace=f"bench{uuid.uuid4().hex[:8]}"),
    }


def _runs(redis_url: str, asynchronous: bool) -> tuple[dict[str, Batch], Callable[[], None]]:
    """A batch runner per store (RetryTransport, or AsyncRetryTransport on one event loop), and
    a function that closes them all."""
    url = "https://api.weixin.qq.com" + SEND
    stores = _stores(redis_url)
    redis_store = stores["RedisTokenStore"]
    assert isinstance(redis_store, retrypolicy.RedisTokenStore)
    kind: Any = retrypolicy.AsyncRetryTransport if asynchronous else retrypolicy.RetryTransport
    transports = {
        name: kind("wechat", token=lambda: "tok-bench", token_store=store, transport=httpx.MockTransport(_handler))
        for name, store in stores.items()
    }
    if not asynchronous:
        clients = {name: httpx.Client(transport=t) for name, t in transports.items()}

        def sender(client: httpx.Client) -> Batch:
            def batch(n: int) -> None:
                for _ in range(n):
                    client.post(url, json=BODY)

            return batch

        def close() -> None:
            for client in clients.values():
                client.close()
            redis_store.close()

        return {name: sender(client) for name, client in clients.items()}, close
    loop = asyncio.new_event_loop()
    aclients = {name: httpx.AsyncClient(transport=t) for name, t in transports.items()}

    def asender(client: httpx.AsyncClient) -> Batch:
        async def batch(n: int) -> None:
            for _ in range(n):
                await client.post(url, json=BODY)

        return lambda n: loop.run_until_complete(batch(n))

    async def aclose() -> None:
        for client in aclients.values():
            await client.aclose()
        await redis_store.aclose()

    def close_loop() -> None:
        loop.run_until_complete(aclose())
        loop.close()

    return {name: asender(client) for name, client in aclients.items()}, close_loop


def overhead(redis_url: str, requests: int, rounds: int) -> None:
    """Each store against no store, interleaved in one process (see ``_measure.py``)."""
    count = counter()
    print(f"Success-path overhead (median per request over {rounds} rounds of {requests}; in-process MockTransport)")
    print(f"{'transport':<20} {'store':<17} {'µs':>7} {'vs no store':>11} {'instructions':>13} {'vs no store':>11}")
    for label, asynchronous in (("RetryTransport", False), ("AsyncRetryTransport", True)):
        runs, close = _runs(redis_url, asynchronous)
        figures = interleaved(runs, requests, rounds, count)
        close()
        base = figures["no store"]
        for name, f in figures.items():
            line = f"{label:<20} {name:<17} {f.micros:>7.1f} {f.micros - base.micros:>+11.1f}"
            if f.instructions is not None and base.instructions is not None:
                line += f" {f.instructions:>13,.0f} {f.instructions - base.instructions:>+11,.0f}"
            print(line)
    if count is not None:
        count.close()


def run(concurrency: int, expiries: int, requests: int, rounds: int) -> None:
    with redis_server() as server:
        redis_url = server.url
        print(f"Renewals (token endpoint calls): {concurrency} concurrent requests per process, {expiries} expiries")
        print(f"{'processes':>9}  {'store':<16} {'first token':>11} {'per expiry':>10}  {'goal':>4}")
        for processes in (1, 4, 16):
            for name, url in (("none (memory)", None), ("RedisTokenStore", redis_url)):
                first, per_expiry = renewals(url, processes, concurrency, expiries)
                mean = sum(per_expiry) / len(per_expiry)
                print(f"{processes:>9}  {name:<16} {first:>11} {mean:>10.2f}  {1:>4}")
        print()
        overhead(redis_url, requests, rounds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent requests per process and burst")
    parser.add_argument("--expiries", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300, help="requests per overhead batch")
    parser.add_argument("--rounds", type=int, default=31, help="overhead batches per contender")
    args = parser.parse_args()
    steady()
    run(args.concurrency, args.expiries, args.requests, args.rounds)
