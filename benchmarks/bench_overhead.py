"""Success-path overhead of RetryTransport against a bare httpx client and httpx-retries.

The main figure is wall clock per request with the garbage collector ON, as users' processes
run: every contender of a case runs in this one process; a round is a few small batches per
contender, interleaved in a new random order each time; the figure is the median over the rounds,
and the ratio to bare httpx is the median of the ratios taken round by round, with its
interquartile range as the spread (see ``_measure.py``). The clients talk to an in-process
MockTransport that answers the platform's usual success body as an unread stream, so what is
measured is the clients' own work. ``path`` tells whether retrypolicy's requests took its fast
path or ran the whole flow.

``--instructions`` adds a second pass with the garbage collector paused, counting user-space CPU
instructions (``perf_event_open``): a figure that repeats to within a few hundred per request, but
leaves out the collections users pay for. ``--socket`` adds the same requests to a local HTTP
server in another process (127.0.0.1, keep-alive), to show what share of a real round trip the
overhead is; ``--socket-only`` runs only that. ``profile_overhead.py`` profiles one case.

    python benchmarks/bench_overhead.py [--requests N] [--batches B] [--rounds R] [--case NAME ...]
        [--instructions] [--socket | --socket-only] [--otel]

``--otel`` adds a contender: retrypolicy with ``telemetry=retrypolicy.otel.Telemetry()``, with
opentelemetry-api installed and no SDK configured.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import os
import statistics
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from _measure import Batch, as_users_run, counter, interleaved, paired, steady
from httpx_retries import Retry
from httpx_retries import RetryTransport as HttpxRetriesTransport

import retrypolicy


@dataclass(frozen=True)
class Case:
    platform: str  # the policy, and the code check's table
    url: str  # as the other clients send it: with the token, if the platform wants it in the URL
    body: bytes  # the response body
    header_token: bool = False  # the token goes in Authorization, not the URL
    hook: bool = False  # retrypolicy has a token hook and, unless sends_token, fills the token in
    sends_token: bool = False  # with a hook: the request carries the token anyway (pywa; a URL built with it)
    method: str = "POST"
    asynchronous: bool = False  # httpx.AsyncClient and the async transports, one event loop
    upload: bool = False  # a multipart file upload (a seekable file object) instead of JSON
    generator: bool = False  # the JSON request body comes from a generator: no Content-Length
    options: bool = False  # extensions={"retrypolicy": {...}} on each request
    hosts: bool = False  # policy= maps hosts to platforms (one client for several platforms)
    content_type: str = "application/json"  # of the response
    gzip: bool = False  # the response body comes gzip-compressed
    chunked: bool = False  # the response has no Content-Length


WECHAT = "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=ACCESS_TOKEN_VALUE"
WECHAT_OK = b'{"errcode":0,"errmsg":"ok"}'
TENCENT = (
    "https://console.tim.qq.com/v4/openim/sendmsg?sdkappid=1400000000&identifier=admin"
    "&usersig=USERSIG_VALUE&random=99999999&contenttype=json"
)
WHATSAPP = "https://graph.facebook.com/v21.0/106540352242922/messages"
WHATSAPP_OK = (
    b'{"messaging_product":"whatsapp","contacts":[{"input":"+16505551234","wa_id":"16505551234"}],'
    b'"messages":[{"id":"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"}]}'
)
CASES = {
    "wechat errcode 0": Case("wechat", WECHAT, WECHAT_OK),
    "wechat with msgid": Case("wechat", WECHAT, b'{"errcode":0,"errmsg":"ok","msgid":200228332}'),
    "wechat no errcode": Case("wechat", WECHAT, b'{"msgid":1234567890,"data":{"x":"' + b"y" * 200 + b'"}}'),
    # the README's Quickstart: the URL has no access_token, the hook's token is filled in
    "quickstart: hook fills token": Case("wechat", WECHAT, WECHAT_OK, hook=True),
    "quickstart, async": Case("wechat", WECHAT, WECHAT_OK, hook=True, asynchronous=True),
    # a hook configured, and the URL built with the token anyway (params={"access_token": ...})
    "token in URL + hook": Case("wechat", WECHAT, WECHAT_OK, hook=True, sends_token=True),
    "hook + per-request options": Case("wechat", WECHAT, WECHAT_OK, hook=True, options=True),
    "hook, host map": Case("wechat", WECHAT, WECHAT_OK, hook=True, hosts=True),
    "hook, text/plain body": Case("wechat", WECHAT, WECHAT_OK, hook=True, content_type="text/plain"),
    "hook, gzip body": Case("wechat", WECHAT, WECHAT_OK, hook=True, gzip=True),
    "hook, chunked body": Case("wechat", WECHAT, WECHAT_OK, hook=True, chunked=True),
    "hook, generator request": Case("wechat", WECHAT, WECHAT_OK, hook=True, generator=True),
    "hook, media upload": Case(
        "wechat",
        "https://api.weixin.qq.com/cgi-bin/media/upload?access_token=ACCESS_TOKEN_VALUE&type=image",
        b'{"type":"image","media_id":"MEDIA_ID_1234567890","created_at":1700000000}',
        hook=True,
        upload=True,
    ),
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
    "wechat errcode 0 async": Case("wechat", WECHAT, WECHAT_OK, asynchronous=True),
    "whatsapp cloud send": Case("whatsapp_cloud", WHATSAPP, WHATSAPP_OK, header_token=True),
    "whatsapp cloud, hook": Case("whatsapp_cloud", WHATSAPP, WHATSAPP_OK, header_token=True, hook=True),
    # pywa sets its own Authorization header; the README's pywa example also gives the transport a hook
    "whatsapp via pywa + hook": Case(
        "whatsapp_cloud", WHATSAPP, WHATSAPP_OK, header_token=True, hook=True, sends_token=True
    ),
}
# the cases sent to a local HTTP server too (--socket): the plain send and the two of the goal
SOCKET_CASES = ("wechat errcode 0", "quickstart: hook fills token", "quickstart, async", "token in URL + hook")
# httpx-retries never retries a POST unless told to: "+POST" is it configured to, which a message
# send needs to be retried at all; on a GET both do their full work. "code check only" is the
# floor of any transport that reads the error code: see CodeCheckOnly.
BARE = "httpx (bare)"
CONTENDERS = (BARE, "retrypolicy", "code check only", "httpx-retries", "httpx-retries+POST")
SOCKET_CONTENDERS = (BARE, "retrypolicy", "httpx-retries+POST")
# --otel: retrypolicy with telemetry=retrypolicy.otel.Telemetry(), opentelemetry-api installed and
# no SDK configured (the global no-op providers), as an app that ships the extra but exports nothing
OTEL = "retrypolicy+otel"
WITH_OTEL = False


def _telemetry() -> Any:
    from retrypolicy.otel import Telemetry  # noqa: PLC0415 - only with --otel: needs opentelemetry-api

    return Telemetry()


REQUEST_BODY = {"touser": "oABC123", "msgtype": "text", "text": {"content": "hello"}}
REQUEST_BYTES = b'{"touser":"oABC123","msgtype":"text","text":{"content":"hello"}}'
PHOTO = bytes(range(256)) * 40  # a 10 KB "image/jpeg"


def _decoded(response: httpx.Response, body: bytes) -> bytes:
    if "content-encoding" not in response.headers:
        return body
    return zlib.decompress(body, zlib.MAX_WBITS | 16)  # the bench's only coding: gzip


class CodeCheckOnly(httpx.BaseTransport):
    """The least a transport that reads the error code can do on a success: pass the request
    through, read the body off the network stream, ask the policy table whether it holds an
    error (the same ``Policy.classify_parts`` retrypolicy uses, with its one-regex proof of
    success), and hand the body back as a stream not yet read, as httpx would have it (a
    response handed back read is never read, closed or timed by the client: ``elapsed`` raises).
    No retry, no token, no counters, no budget, no clock: nothing else. What retrypolicy costs
    beyond this line is its machinery; this line itself is the price of seeing
    ``{"errcode":40001}`` at all.
    """

    def __init__(self, policy: str, inner: httpx.BaseTransport) -> None:
        self._policy = retrypolicy.load_policy(policy)
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)
        body = b"".join(stream)
        stream.close()
        response.stream = httpx.ByteStream(body)
        if self._policy.classify_parts(response.status_code, _decoded(response, body)) is not None:
            raise AssertionError("the benchmark's success body classified as a failure")
        return response


class AsyncCodeCheckOnly(httpx.AsyncBaseTransport):
    """:class:`CodeCheckOnly` for ``httpx.AsyncClient``."""

    def __init__(self, policy: str, inner: httpx.AsyncBaseTransport) -> None:
        self._policy = retrypolicy.load_policy(policy)
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        body = b"".join([chunk async for chunk in stream])
        await stream.aclose()
        response.stream = httpx.ByteStream(body)
        if self._policy.classify_parts(response.status_code, _decoded(response, body)) is not None:
            raise AssertionError("the benchmark's success body classified as a failure")
        return response


def _answer(case: Case) -> Callable[[httpx.Request], httpx.Response]:
    """MockTransport's handler: the case's success response, its body a stream not yet read, as a
    network transport returns it (``httpx.Response(content=...)`` would arrive read already)."""
    body = gzip.compress(case.body) if case.gzip else case.body
    headers = {"content-type": case.content_type}
    if case.gzip:
        headers["content-encoding"] = "gzip"
    if not case.chunked:
        headers["content-length"] = str(len(body))

    def handler(request: httpx.Request) -> httpx.Response:
        if case.chunked:
            return httpx.Response(200, headers=headers, content=iter([body]))
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))

    return handler


def _arguments(case: Case) -> Callable[[], dict[str, Any]]:
    """The keyword arguments of one ``client.request()``: a new file object or generator each time."""
    extensions = {"retrypolicy": {"max_attempts": 2}} if case.options else None
    if case.method == "GET":
        return lambda: {"extensions": extensions}
    if case.upload:
        return lambda: {"files": {"media": ("photo.jpg", io.BytesIO(PHOTO), "image/jpeg")}, "extensions": extensions}
    if case.generator:
        return lambda: {"content": iter([REQUEST_BYTES]), "extensions": extensions}
    return lambda: {"json": REQUEST_BODY, "extensions": extensions}


def _transport(case: Case, contender: str, inner: Any) -> Any:
    if contender in ("retrypolicy", OTEL):
        hook: Any = None
        if case.hook:
            token = "ACCESS_TOKEN_VALUE"  # WeChatTokenHook's tokens come with their lifetime
            hook = (lambda: token) if case.header_token else (lambda: retrypolicy.Token(token, expires_in=7200))
        policy: Any = case.platform
        if case.hosts:
            policy = {"api.weixin.qq.com": "wechat", "graph.facebook.com": "whatsapp_cloud"}
            hook = {case.platform: hook} if hook is not None else None
        kind = retrypolicy.AsyncRetryTransport if case.asynchronous else retrypolicy.RetryTransport
        telemetry = _telemetry() if contender == OTEL else None
        return kind(policy=policy, transport=inner, token=hook, telemetry=telemetry)
    if contender == "httpx-retries":
        return HttpxRetriesTransport(transport=inner, retry=Retry(total=3))
    if contender == "httpx-retries+POST":
        methods = [*Retry.RETRYABLE_METHODS, "POST"]
        return HttpxRetriesTransport(transport=inner, retry=Retry(total=3, allowed_methods=methods))
    if contender == "code check only":
        return (AsyncCodeCheckOnly if case.asynchronous else CodeCheckOnly)(case.platform, inner)
    return inner


def _client(case: Case, contender: str, server: str | None = None) -> tuple[Batch, Callable[[], None], Any]:
    """(a function sending N requests, a function closing the client, the transport) for one
    contender; to ``server`` (``http://127.0.0.1:port``) over a socket, else over MockTransport."""
    inner: Any
    if server is None:
        inner = httpx.MockTransport(_answer(case))
    else:
        inner = httpx.AsyncHTTPTransport() if case.asynchronous else httpx.HTTPTransport()
    transport = _transport(case, contender, inner)
    url = case.url
    if server is not None:
        url = server + url[url.index("/", len("https://")) :]
    filled_in = contender in ("retrypolicy", OTEL) and case.hook and not case.sends_token
    if filled_in and not case.header_token:
        url = str(httpx.URL(url).copy_remove_param("access_token"))
    auth = {"Authorization": "Bearer ACCESS_TOKEN_VALUE"} if case.header_token and not filled_in else {}
    arguments, method = _arguments(case), case.method
    if case.asynchronous:
        aclient = httpx.AsyncClient(transport=transport, headers=auth)
        loop = asyncio.new_event_loop()

        async def batch(n: int) -> None:
            for _ in range(n):
                await aclient.request(method, url, **arguments())

        def aclose() -> None:
            loop.run_until_complete(aclient.aclose())
            loop.close()

        return lambda n: loop.run_until_complete(batch(n)), aclose, transport
    client = httpx.Client(transport=transport, headers=auth)

    def run(n: int) -> None:
        for _ in range(n):
            client.request(method, url, **arguments())

    return run, client.close, transport


def _path(transport: Any) -> str:
    """How many of retrypolicy's requests ran the whole flow rather than the fast path (read from
    its counters; the first request of a transport with a hook runs the flow to fetch the token)."""
    flows = getattr(getattr(getattr(transport, "_core", None), "stats", None), "requests", None)
    if flows is None:
        return "?"
    share = flows / transport.snapshot().requests
    return "fast" if share < 0.01 else "flow" if share > 0.99 else f"{share:.0%}"


def measure(
    names: list[str], shape: tuple[int, int, int], instructions: bool = False, server: str | None = None
) -> None:
    """Each case's contenders in this one process, interleaved (see ``_measure.py``); ``shape``:
    (requests per batch, batches per round, rounds)."""
    requests, batches, rounds = shape
    contenders = SOCKET_CONTENDERS if server is not None else CONTENDERS
    if WITH_OTEL:
        contenders = (*contenders, OTEL)
    count = counter() if instructions else None
    where = f"a local HTTP server in another process ({server})" if server is not None else "MockTransport"
    print(f"\nGarbage collector on; requests to {where}.")
    print(f"µs per request: median of {rounds} rounds; a round is {batches} batches of {requests} requests per")
    print("contender, interleaved in a new order each time. x: median of the per-round ratios to bare httpx")
    print("[interquartile range]. +µs: retrypolicy over bare. path: whether retrypolicy's requests took its")
    print("fast path or ran the flow.")
    if count is not None:
        print("instr: instructions per request with the GC paused, retrypolicy over bare (median of 9 rounds of 300)")
    head = f"{'case':<30} {'bare µs':>8} {'retrypolicy':>22} {'+µs':>6} {'path':>4}"
    for contender in contenders[2:]:
        head += f" {contender:>{max(len(contender), 10)}}"
    if WITH_OTEL:  # the telemetry's own cost: retrypolicy+otel over retrypolicy, paired round by round
        head += f" {'otel/retrypolicy':>24}"
    print(head + (f" {'instr':>16}" if count is not None else ""))
    for name in names:
        case = CASES[name]
        clients = {c: _client(case, c, server) for c in contenders}
        runs = {c: run for c, (run, _, _) in clients.items()}
        samples = as_users_run(runs, requests, rounds, batches)
        base = samples[BARE]
        ours = paired(samples["retrypolicy"], base)
        line = f"{name:<30} {statistics.median(base):>8.1f} {f'{ours.ratio:.2f}x':>8} "
        line += f"[{ours.low:.2f}-{ours.high:.2f}]".rjust(13)
        line += f" {ours.extra:>+6.1f} {_path(clients['retrypolicy'][2]):>4}"
        for contender in contenders[2:]:
            other = paired(samples[contender], base)
            line += f" {f'{other.ratio:.2f}x':>{max(len(contender), 10)}}"
        if WITH_OTEL:
            own = paired(samples[OTEL], samples["retrypolicy"])
            line += f" {f'{own.ratio:.3f}x [{own.low:.2f}-{own.high:.2f}]':>24}"
        if count is not None:
            figures = interleaved(runs, 300, 9, count)
            b, r = figures[BARE].instructions, figures["retrypolicy"].instructions
            if b is not None and r is not None:
                line += f" {(r - b) / 1000:>+6.1f}k ({100 * (r / b - 1):+.1f}%)"
        print(line, flush=True)
        for _, close, _ in clients.values():
            close()
    if count is not None:
        count.close()


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: httpx reuses the connection, as with a real API
    disable_nagle_algorithm = True  # else the body, a write after the headers', waits for a delayed ACK (40 ms)

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(WECHAT_OK)))
        self.end_headers()
        self.wfile.write(WECHAT_OK)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve() -> None:
    """``--serve``: answer WeChat's success body on 127.0.0.1 until stdin closes (the port is
    printed first). Runs in its own process, so its work is not on the measured clients' clock."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()
    server.shutdown()


@contextmanager
def local_server() -> Iterator[str]:
    """A ``--serve`` process, as ``http://127.0.0.1:port``."""
    env = {**os.environ, "RETRYPOLICY_BENCH_STEADY": "1"}
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{process.stdout.readline().strip()}"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=10, help="requests per batch (default 10)")
    parser.add_argument("--batches", type=int, default=5, help="batches per contender in a round (default 5)")
    parser.add_argument("--rounds", type=int, default=120, help="rounds (default 120)")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: all")
    parser.add_argument("--instructions", action="store_true", help="add the GC-paused instruction count")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--socket", action="store_true", help="add a local HTTP server's round trip")
    group.add_argument("--socket-only", action="store_true", help="only the local HTTP server's round trip")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--otel", action="store_true", help="add retrypolicy with telemetry= (OTel API, no SDK)")
    args = parser.parse_args()
    WITH_OTEL = args.otel
    if args.serve:
        serve()
        sys.exit(0)
    if args.requests < 1 or args.batches < 1 or args.rounds < 2:
        parser.error("--requests and --batches must be at least 1, --rounds at least 2")
    shape = (args.requests, args.batches, args.rounds)
    steady()
    if not args.socket_only:
        measure(args.case or list(CASES), shape, args.instructions)
    if args.socket or args.socket_only:
        with local_server() as server:  # it answers WeChat's success body: the WeChat cases only
            names = [n for n in args.case or SOCKET_CASES if n in SOCKET_CASES] or list(SOCKET_CASES)
            measure(names, shape, server=server)
