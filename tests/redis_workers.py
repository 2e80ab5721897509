"""Helpers for the Redis store tests: a throwaway redis-server, and process entry points.

The entry points run in ``spawn``-ed processes, so they live here, in a module that imports no
pytest and nothing heavy beyond retrypolicy itself.
"""

from __future__ import annotations

import os
import queue
import time
from typing import Any

import anyio
import anyio.to_thread
import httpx

import retrypolicy
from retrypolicy.hooks import WeChatTokenHook
from retrypolicy.testing import RedisServer, free_port, redis_server

__all__ = ["SEND", "RedisServer", "drain", "free_port", "lock_holder_worker", "redis_server", "stampede_worker"]

SEND = "/cgi-bin/message/custom/send"


def stampede_worker(
    redis_url: str,
    namespace: str,
    base_url: str,
    appid: str,
    secret: str,
    requests: int,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One "worker process": ``requests`` concurrent sends through an AsyncRetryTransport whose
    token lives in Redis. Says ready, waits for ``go``, then reports its outcome."""
    retrypolicy.set_testing(True)

    async def main() -> dict[str, Any]:
        store = retrypolicy.RedisTokenStore.from_url(redis_url, namespace=namespace)
        hook = WeChatTokenHook(appid, secret, base_url=base_url)
        transport = retrypolicy.AsyncRetryTransport(policy="wechat", token=hook, token_store=store)
        errors: list[str] = []
        ok = 0
        limits = httpx.Limits(max_connections=10)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, limits=limits, timeout=30) as client:

            async def send(i: int) -> None:
                nonlocal ok
                try:
                    r = await client.post(SEND, json={"touser": f"u{os.getpid()}-{i}", "msgtype": "text"})
                except retrypolicy.RequestFailed as exc:
                    c = exc.classification
                    errors.append(f"{type(exc).__name__}: {c.description if c is not None else exc}")
                    return
                if r.json().get("errcode") == 0:
                    ok += 1
                else:
                    errors.append(str(r.json().get("errcode")))

            ready.put(os.getpid())
            started = await anyio.to_thread.run_sync(go.wait, 60)
            assert started
            async with anyio.create_task_group() as tg:
                for i in range(requests):
                    tg.start_soon(send, i)
        manager = transport._core.managers["wechat"]
        await hook.aclose()
        return {"ok": ok, "errors": errors, "hook_calls": manager.hook_calls}

    try:
        results.put(anyio.run(main))
    except BaseException as exc:  # report, or the parent waits for nothing
        results.put({"ok": 0, "errors": [f"worker crashed: {type(exc).__name__}: {exc}"], "hook_calls": -1})
        raise


def lock_holder_worker(redis_url: str, namespace: str, base_url: str, lease: float, holding: Any) -> None:
    """Take the renewal lock (through a normal transport) and hang in the hook until killed."""

    def hook() -> str:
        holding.put(os.getpid())
        time.sleep(120)
        return "never"

    store = retrypolicy.RedisTokenStore.from_url(redis_url, namespace=namespace, lease=lease)
    transport = retrypolicy.RetryTransport(policy="wechat", token=hook, token_store=store, token_timeout=300)
    with httpx.Client(transport=transport, base_url=base_url) as client:
        client.post(SEND, json={"touser": "u", "msgtype": "text"})


def drain(q: Any, n: int, timeout: float) -> list[Any]:
    """``n`` items from a multiprocessing queue, or fail after ``timeout`` seconds in all."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        try:
            out.append(q.get(timeout=max(0.01, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"got {len(out)} of {n} answers from the worker processes in {timeout} s") from None
    return out
