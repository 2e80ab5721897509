"""Process entry points for tests/test_token_storm.py (spawned processes import this module, so
it imports no pytest)."""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
import anyio.to_thread
import httpx
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy.hooks import WeChatTokenHook

SEND = "/cgi-bin/message/custom/send"


def renewal_war_worker(
    redis_url: str,
    namespace: str,
    base_url: str,
    appid: str,
    secret: str,
    stable: bool,
    tasks: int,
    ready: Any,
    go: Any,
    outage: Any,
    stop: Any,
    results: Any,
) -> None:
    """One worker process: ``tasks`` concurrent tasks send through an AsyncRetryTransport whose
    token lives in Redis, from ``go`` until ``stop``. Outcomes are tallied apart once ``outage``
    is set (the parent killed Redis and expired the token). ``stable``: the stable_token hook,
    else the legacy /cgi-bin/token one, which issues a new token on every call. The report holds
    the ``retrypolicy.store_unavailable`` warnings of this process."""
    retrypolicy.set_testing(True)

    async def main() -> dict[str, Any]:
        store = retrypolicy.RedisTokenStore.from_url(redis_url, namespace=namespace, socket_timeout=1)
        hook = WeChatTokenHook(appid, secret, base_url=base_url, stable=stable)
        transport = retrypolicy.AsyncRetryTransport(policy="wechat", token=hook, token_store=store)
        tally = {"ok": 0, "failed": 0, "outage_ok": 0, "outage_failed": 0}
        errors: list[str] = []
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30) as client:

            async def sender(n: int) -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    during = outage.is_set()
                    try:
                        r = await client.post(SEND, json={"touser": f"u{os.getpid()}-{n}-{i}", "msgtype": "text"})
                        good = r.json().get("errcode") == 0
                    except retrypolicy.RequestFailed as exc:
                        good = False
                        if len(errors) < 5:
                            errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                    key = ("outage_" if during else "") + ("ok" if good else "failed")
                    tally[key] += 1
                    await anyio.sleep(0.005)  # a steady flow of messages, not a busy loop

            ready.put(os.getpid())
            assert await anyio.to_thread.run_sync(go.wait, 60)
            async with anyio.create_task_group() as tg:
                for n in range(tasks):
                    tg.start_soon(sender, n)
        manager = transport._core.managers["wechat"]
        await hook.aclose()
        return {**tally, "errors": errors, "hook_calls": manager.hook_calls}

    try:
        with capture_logs() as logs:
            report = anyio.run(main)
        warnings = [e for e in logs if e["event"] == "retrypolicy.store_unavailable"]
        results.put({**report, "store_warnings": warnings})
    except BaseException as exc:  # report, or the parent waits for nothing
        results.put({"crashed": f"{type(exc).__name__}: {exc}"})
        raise


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
