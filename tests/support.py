"""Shared helpers: run one scenario through the sync or the async transport alike."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

import retrypolicy

MODES = ["sync", "async"]
Handler = Callable[[httpx.Request], httpx.Response]


def wechat(errcode: int, errmsg: str = "", **extra: Any) -> httpx.Response:
    body = {"errcode": errcode, "errmsg": errmsg or f"err {errcode} rid: 65f0-1a2b", **extra}
    return httpx.Response(200, json=body)


def ok(**extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"errcode": 0, "errmsg": "ok", **extra})


@dataclass
class Recorder:
    """A handler that answers from a script (then ``default``) and records every request."""

    script: list[httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]] = field(default_factory=list)
    default: Handler | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
            item = self.script.pop(0) if self.script else None
        if item is None:
            assert self.default is not None, f"unexpected request {request.method} {request.url}"
            return self.default(request)
        if isinstance(item, Exception):
            raise item
        if isinstance(item, httpx.Response):
            return item
        return item(request)


class CountingHook:
    """A token hook returning tok1, tok2, ... and counting calls (sync and async)."""

    def __init__(self, prefix: str = "tok", delay: float = 0.0) -> None:
        self.prefix = prefix
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def _next(self) -> retrypolicy.Token:
        with self._lock:
            self.calls += 1
            return retrypolicy.Token(f"{self.prefix}{self.calls}-secretvalue", expires_in=7200)

    def __call__(self) -> retrypolicy.Token:
        if self.delay:
            threading.Event().wait(self.delay)
        return self._next()

    async def acall(self) -> retrypolicy.Token:
        if self.delay:
            await anyio.sleep(self.delay)
        return self._next()


def make_client(mode: str, handler: Handler, **kwargs: Any) -> Any:
    if mode == "sync":
        return httpx.Client(transport=retrypolicy.RetryTransport(transport=httpx.MockTransport(handler), **kwargs))
    return httpx.AsyncClient(
        transport=retrypolicy.AsyncRetryTransport(transport=httpx.MockTransport(handler), **kwargs)
    )


def send(mode: str, handler: Handler, method: str = "POST", url: str = "", **kwargs: Any) -> httpx.Response:
    """Send one request through a fresh client of the given mode; returns the response or raises."""
    request_kwargs = kwargs.pop("request", {})
    url = url or "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=given-token-abc"
    client = make_client(mode, handler, **kwargs)
    if mode == "sync":
        with client:
            response: httpx.Response = client.request(method, url, **request_kwargs)
            return response

    async def run() -> httpx.Response:
        async with client:
            response: httpx.Response = await client.request(method, url, **request_kwargs)
            return response

    return anyio.run(run)


def request_with(mode: str, client: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One request through a client of the given mode that stays open for the next ones."""
    if mode == "sync":
        response: httpx.Response = client.request(method, url, **kwargs)
        return response

    async def run() -> httpx.Response:
        response: httpx.Response = await client.request(method, url, **kwargs)
        return response

    return anyio.run(run)


class TrackedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that records whether it was read and closed."""

    def __init__(self, data: bytes, chunks: int = 1) -> None:
        self.data = data
        self.chunks = chunks
        self.yielded = 0
        self.closed = False

    def _parts(self) -> Iterator[bytes]:
        size = max(1, len(self.data) // self.chunks)
        for i in range(0, len(self.data), size):
            self.yielded += 1
            yield self.data[i : i + size]

    def __iter__(self) -> Iterator[bytes]:
        yield from self._parts()

    async def __aiter__(self) -> Any:
        for part in self._parts():
            yield part

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


def tracked_json(body: dict[str, Any], status: int = 200) -> tuple[httpx.Response, TrackedStream]:
    data = json.dumps(body).encode()
    stream = TrackedStream(data)
    headers = {"content-type": "application/json", "content-length": str(len(data))}
    return httpx.Response(status, headers=headers, stream=stream), stream
