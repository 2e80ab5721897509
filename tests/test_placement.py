"""Token placement (query, header, and the URL path: Telegram's ``/bot<token>/``), and the redaction
of a bot token in a URL path in every event, exception and repr.

``token_in`` / ``with_token`` are the hot-path helpers the core calls; they are tested here on
their own, and over a real socket (a threaded HTTP server on 127.0.0.1) to show what reaches the
wire. The redaction is tested end to end through both transports against the same kind of server.
"""

from __future__ import annotations

import contextlib
import json
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

import retrypolicy
from retrypolicy._placement import token_in, with_token
from retrypolicy._policy import TokenPlacement
from retrypolicy._redact import redact_path_token, redact_url, scrub

BOT_TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"
TELEGRAM = retrypolicy.load_policy("telegram").token
QUERY = TokenPlacement(location="query", name="access_token")
HEADER = TokenPlacement(location="header", name="Authorization", scheme="Bearer")


def _request(url: str, **kwargs: Any) -> httpx.Request:
    return httpx.Request("POST", url, **kwargs)


# -- the table declares it ----------------------------------------------------------------------


def test_telegram_table_puts_the_token_in_the_path() -> None:
    assert TokenPlacement(location="path", name="", prefix="bot", after=("/file",)) == TELEGRAM


# -- token_in -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "found"),
    [
        (f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage", BOT_TOKEN),
        (f"https://api.telegram.org/bot{BOT_TOKEN}/test/getMe", BOT_TOKEN),  # the test environment
        (f"https://api.telegram.org/bot{BOT_TOKEN}", BOT_TOKEN),
        (f"https://api.telegram.org/file/bot{BOT_TOKEN}/photos/file_0.jpg", BOT_TOKEN),
        ("https://api.telegram.org/bot123456%3AABC/getMe", "123456:ABC"),  # percent-encoded colon
        ("https://api.telegram.org/sendMessage?chat_id=1", None),
        ("https://api.telegram.org/file/photos/file_0.jpg", None),
        ("https://api.telegram.org/file/photos/bot.jpg", None),  # "bot" further down is a file name
        ("https://api.telegram.org/bot/getMe", None),  # the prefix alone holds no token
        ("https://api.telegram.org/", None),
        ("https://api.telegram.org/getMe?next=/bot1:A/x", None),  # a query never holds the path token
    ],
)
def test_token_in_path(url: str, found: str | None) -> None:
    assert token_in(_request(url), TELEGRAM) == found


def test_token_in_query_and_header_as_before() -> None:
    assert token_in(_request("https://h.example/x?access_token=t-1&a=2"), QUERY) == "t-1"
    assert token_in(_request("https://h.example/x?a=2"), QUERY) is None
    assert token_in(_request("https://h.example/x", headers={"Authorization": "Bearer t-2"}), HEADER) == "t-2"
    assert token_in(_request("https://h.example/x", headers={"Authorization": "bearer  t-3 "}), HEADER) == "t-3"
    assert token_in(_request("https://h.example/x"), HEADER) is None


# -- with_token -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("https://api.telegram.org/sendMessage", f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage"),
        (
            "https://api.telegram.org/sendMessage?chat_id=-100&text=a%20b",
            f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage?chat_id=-100&text=a%20b",
        ),
        ("https://api.telegram.org/test/getMe", f"https://api.telegram.org/bot{BOT_TOKEN}/test/getMe"),
        (
            "https://api.telegram.org/file/photos/file_0.jpg",
            f"https://api.telegram.org/file/bot{BOT_TOKEN}/photos/file_0.jpg",
        ),
        ("https://api.telegram.org/file", f"https://api.telegram.org/file/bot{BOT_TOKEN}"),
        ("https://api.telegram.org/", f"https://api.telegram.org/bot{BOT_TOKEN}/"),
        ("https://api.telegram.org/filex/a", f"https://api.telegram.org/bot{BOT_TOKEN}/filex/a"),  # not "/file"
        ("http://127.0.0.1:8081/a%2Fb/c", f"http://127.0.0.1:8081/bot{BOT_TOKEN}/a%2Fb/c"),  # encoding kept
        # a path that has a token at that place gets the new one in its stead
        ("https://api.telegram.org/bot1:OLD/getMe", f"https://api.telegram.org/bot{BOT_TOKEN}/getMe"),
        ("https://api.telegram.org/file/bot1:OLD/a.pdf", f"https://api.telegram.org/file/bot{BOT_TOKEN}/a.pdf"),
    ],
)
def test_with_token_fills_in_the_path(url: str, sent: str) -> None:
    request = _request(url, headers={"X-Trace": "1"}, content=b"{}", extensions={"k": "v"})
    copy = with_token(request, TELEGRAM, BOT_TOKEN)
    assert str(copy.url) == sent
    assert token_in(copy, TELEGRAM) == BOT_TOKEN
    # the caller's request is left as it was: httpx logs its URL
    assert str(request.url) == url
    assert BOT_TOKEN not in str(request.url)
    assert copy is not request and copy.method == "POST" and copy.headers["x-trace"] == "1"
    assert copy.stream is request.stream and copy.extensions == request.extensions


def test_with_token_encodes_what_a_path_cannot_hold() -> None:
    copy = with_token(_request("https://h.example/getMe"), TELEGRAM, "1:a/b c")
    assert copy.url.raw_path == b"/bot1:a%2Fb%20c/getMe"
    assert token_in(copy, TELEGRAM) == "1:a/b c"


def test_with_token_query_and_header_as_before() -> None:
    request = _request("https://h.example/x?a=1&access_token=old", headers={"Authorization": "Bearer old"})
    by_query = with_token(request, QUERY, "new")
    assert by_query.url.params.get_list("access_token") == ["new"] and by_query.url.params["a"] == "1"
    by_header = with_token(request, HEADER, "new")
    assert by_header.headers["authorization"] == "Bearer new"
    assert request.headers["authorization"] == "Bearer old" and "old" in str(request.url)


@contextlib.contextmanager
def _server(reply: Any = None, status: int = 200) -> Iterator[tuple[str, list[str]]]:
    """A threaded HTTP server on 127.0.0.1 that records each request target and answers ``reply``."""
    seen: list[str] = []
    body = json.dumps(reply if reply is not None else {"ok": True, "result": {}}).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.path)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _serve

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_path_token_reaches_the_wire(mode: str) -> None:
    """What the server receives: the token in the path, the query as it was; and a URL that already
    carries a token, asked first with token_in (as the transport does), goes out unchanged."""
    with _server() as (base, seen):
        asked = [_request(f"{base}/sendMessage?chat_id=1"), _request(f"{base}/bot999:OWN/getMe")]
        out = [r if token_in(r, TELEGRAM) is not None else with_token(r, TELEGRAM, BOT_TOKEN) for r in asked]
        if mode == "sync":
            with httpx.HTTPTransport() as transport:
                for request in out:
                    transport.handle_request(request).read()
        else:

            async def run() -> None:
                async with httpx.AsyncHTTPTransport() as transport:
                    for request in out:
                        await (await transport.handle_async_request(request)).aread()

            anyio.run(run)
    assert seen == [f"/bot{BOT_TOKEN}/sendMessage?chat_id=1", "/bot999:OWN/getMe"]
    assert all(BOT_TOKEN not in str(r.url) for r in asked)


# -- redaction of a bot token in a URL path ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage", "https://api.telegram.org/bot***/sendMessage"),
        (f"https://api.telegram.org/file/bot{BOT_TOKEN}/a.jpg", "https://api.telegram.org/file/bot***/a.jpg"),
        ("https://api.telegram.org/bot123456%3AABC-d_e/getMe?x=1", "https://api.telegram.org/bot***/getMe?x=1"),
        (f"POST /bot{BOT_TOKEN}/getMe and /bot1:B/x", "POST /bot***/getMe and /bot***/x"),
        ("https://api.telegram.org/bot/getMe", "https://api.telegram.org/bot/getMe"),  # no token there
        ("see /robots.txt and /bottle/1:2", "see /robots.txt and /bottle/1:2"),
    ],
)
def test_redact_path_token(text: str, expected: str) -> None:
    assert redact_path_token(text) == expected


def test_redact_url_and_scrub_hide_a_path_token() -> None:
    url = f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage?chat_id=1&access_token=q-1"
    assert redact_url(url) == "https://api.telegram.org/bot***/sendMessage?chat_id=1&access_token=***"
    assert redact_url(httpx.URL(url)) == redact_url(url)
    assert scrub(f"ConnectError for POST {url}") == (
        "ConnectError for POST https://api.telegram.org/bot***/sendMessage?chat_id=1&access_token=***"
    )


BLOCKED = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_path_token_is_in_no_event_exception_or_repr(mode: str) -> None:
    """A client that builds its own URLs (python-telegram-bot) sends through the transport; the
    platform refuses: the events, the exception (text, repr, traceback) never show the token."""
    kwargs: dict[str, Any] = {"raise_on": ["user-action"]}
    with _server(BLOCKED, status=403) as (base, seen), capture_logs() as events:
        url = f"{base}/bot{BOT_TOKEN}/sendMessage"
        transport: retrypolicy.RetryTransport | retrypolicy.AsyncRetryTransport
        with pytest.raises(retrypolicy.UserActionRequired) as info:
            if mode == "sync":
                transport = retrypolicy.RetryTransport("telegram", **kwargs)
                with httpx.Client(transport=transport) as client:
                    client.post(url, json={"chat_id": 1, "text": "hi"})
            else:
                transport = retrypolicy.AsyncRetryTransport("telegram", **kwargs)

                async def run(transport: retrypolicy.AsyncRetryTransport) -> None:
                    async with httpx.AsyncClient(transport=transport) as client:
                        await client.post(url, json={"chat_id": 1, "text": "hi"})

                anyio.run(run, transport)
    assert seen == [f"/bot{BOT_TOKEN}/sendMessage"]  # sent as the client built it
    exc = info.value
    assert exc.classification.code == 403 and exc.classification.category is retrypolicy.Category.USER_ACTION
    shown = [str(exc), repr(exc), exc.url, "".join(traceback.format_exception(exc)), repr(transport)]
    shown += [json.dumps(event, default=str) for event in events]
    assert events, "the give-up is logged"
    assert any("/bot***/sendMessage" in text for text in shown)
    leaks = [text for text in shown if BOT_TOKEN in text or BOT_TOKEN.split(":")[1] in text]
    assert not leaks
