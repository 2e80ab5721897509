"""Helpers for the Redis store tests: a throwaway redis-server, and process entry points.

The entry points run in ``spawn``-ed processes, so they live here, in a module that imports no
pytest and nothing heavy beyond retrypolicy itself.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import httpx

import retrypolicy
from retrypolicy.hooks import WeChatTokenHook

SEND = "/cgi-bin/message/custom/send"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int
    password: str | None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def redis_server(password: str | None = None) -> Iterator[RedisServer]:
    """A redis-server on 127.0.0.1 and a free port, no persistence; killed at the end."""
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if password:
        args += ["--requirepass", password]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(process, port, password)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64):
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield server
    finally:
        server.kill()


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
