"""The other process of the shared circuit breaker test: a transport whose breaker lives in Redis,
driven by commands from a queue. Imports no pytest (it runs in a ``spawn``-ed process)."""

from __future__ import annotations

from typing import Any

import httpx

import retrypolicy

INFO = "/cgi-bin/user/info"  # a GET: idempotent, so a read timeout is resent
TIMEOUT = httpx.Timeout(5.0, read=0.1)


def breaker_transport(redis_url: str, namespace: str, open_for: float) -> retrypolicy.RetryTransport:
    """The transport both processes use: 2 attempts, a breaker that opens after 4 failed attempts."""
    store = retrypolicy.RedisTokenStore.from_url(redis_url, namespace=namespace, sync_interval=0.05)
    return retrypolicy.RetryTransport(
        "wechat",
        token_store=store,
        retry=retrypolicy.RetrySettings(max_attempts=2, initial_delay=0.001, max_delay=0.001),
        breaker=retrypolicy.CircuitBreaker(min_calls=4, window=60, open_for=open_for, max_open_for=8 * open_for),
    )


def outcome(client: httpx.Client) -> tuple[str, int]:
    """(what one GET ended with, attempts it sent)."""
    try:
        client.get(INFO, params={"openid": "o1"}, timeout=TIMEOUT)
    except retrypolicy.RequestFailed as exc:
        return type(exc).__name__, exc.attempts
    return "ok", -1


def circuit(transport: retrypolicy.RetryTransport) -> tuple[str, int, int]:
    """(state, times opened, probes sent) of the transport's one breaker."""
    (status,) = transport.snapshot().circuits
    return status.state, status.opened, status.probes


def breaker_worker(redis_url: str, namespace: str, base_url: str, open_for: float, commands: Any, results: Any) -> None:
    """Answer each command ("send" or "circuit") on ``results`` until "stop"."""
    transport = breaker_transport(redis_url, namespace, open_for)
    with httpx.Client(transport=transport, base_url=base_url) as client:
        while True:
            command = commands.get(timeout=120)
            try:
                if command == "stop":
                    return
                results.put(outcome(client) if command == "send" else circuit(transport))
            except BaseException as exc:  # report, or the parent waits for nothing
                results.put(("worker crashed", f"{type(exc).__name__}: {exc}"))
                raise
