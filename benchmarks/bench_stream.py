"""Memory of a streamed download through RetryTransport: the body must pass through unbuffered.

Streams a 100 MB ``application/octet-stream`` body (no Content-Length, 64 KiB chunks) through a
bare httpx client and through RetryTransport and AsyncRetryTransport, and prints the peak memory
that tracemalloc saw while the body was streamed.

    python benchmarks/bench_stream.py [--megabytes N]
"""

from __future__ import annotations

import argparse
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import anyio
import httpx

import retrypolicy

CHUNK = b"\0" * 65536


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, chunks: int) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        for _ in range(self.chunks):
            yield CHUNK

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            yield CHUNK


def handler_for(chunks: int) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "application/octet-stream"}, stream=Body(chunks))
    )


URL = "https://api.weixin.qq.com/cgi-bin/media/get?access_token=T&media_id=M"


def measure_sync(transport: httpx.BaseTransport) -> tuple[int, int]:
    tracemalloc.start()
    total = 0
    with httpx.Client(transport=transport) as client, client.stream("GET", URL) as response:
        for chunk in response.iter_raw():
            total += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return total, peak


def measure_async(transport: httpx.AsyncBaseTransport) -> tuple[int, int]:
    async def run() -> int:
        total = 0
        async with httpx.AsyncClient(transport=transport) as client, client.stream("GET", URL) as response:
            async for chunk in response.aiter_raw():
                total += len(chunk)
        return total

    tracemalloc.start()
    total = anyio.run(run)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return total, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    chunks = args.megabytes * 1024 * 1024 // len(CHUNK)
    rows = [
        ("httpx (bare), sync", measure_sync(handler_for(chunks))),
        ("RetryTransport", measure_sync(retrypolicy.RetryTransport(policy="wechat", transport=handler_for(chunks)))),
        (
            "AsyncRetryTransport",
            measure_async(retrypolicy.AsyncRetryTransport(policy="wechat", transport=handler_for(chunks))),
        ),
    ]
    print(f"{'client':<22} {'streamed MB':>12} {'peak traced MB':>15}")
    for name, (total, peak) in rows:
        print(f"{name:<22} {total / 2**20:>12.0f} {peak / 2**20:>15.2f}")


if __name__ == "__main__":
    main()
