"""Where the events go: a stdlib ``logging.Logger`` / ``LoggerAdapter``, a structlog logger, or
structlog's configuration (the README's "Where the events go"), through real clients over
FakeWeChat served on 127.0.0.1, sync and async."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
import structlog

import retrypolicy
from retrypolicy.testing import Busy, FakeWeChat, Fault, TokenExpired, UserAction

SEND = "/cgi-bin/message/custom/send"
MESSAGE = {"touser": "o1", "msgtype": "text", "text": {"content": "hi"}}
APP_SECRET = "app-secret-Zq81xPw0"

pytestmark = pytest.mark.usefixtures("testing")  # zero waits (tests/conftest.py)


class Hook:
    """The fake's token hook, remembering every token it handed out (to look for them in logs)."""

    def __init__(self, fake: FakeWeChat) -> None:
        self._hook = fake.token_hook()
        self.tokens: list[str] = []

    def __call__(self) -> retrypolicy.Token:
        token = self._hook()
        self.tokens.append(token.value)
        return token


@pytest.fixture
def fake() -> Iterator[tuple[FakeWeChat, str]]:
    wechat = FakeWeChat(secret=APP_SECRET)
    with wechat.serve() as base:
        yield wechat, base


def post_all(
    mode: str, base: str, fake: FakeWeChat, scripts: list[list[Fault]], **kwargs: Any
) -> list[httpx.Response | Exception]:
    """One send per script (its faults queued just before it) through one client of the given
    mode; each response or RequestFailed."""
    outcomes: list[httpx.Response | Exception] = []
    if mode == "sync":
        with httpx.Client(transport=retrypolicy.RetryTransport(policy="wechat", **kwargs), base_url=base) as client:
            for faults in scripts:
                fake.script(*faults)
                try:
                    outcomes.append(client.post(SEND, json=MESSAGE))
                except retrypolicy.RequestFailed as exc:
                    outcomes.append(exc)
        return outcomes

    async def run() -> None:
        transport = retrypolicy.AsyncRetryTransport(policy="wechat", **kwargs)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            for faults in scripts:
                fake.script(*faults)
                try:
                    outcomes.append(await client.post(SEND, json=MESSAGE))
                except retrypolicy.RequestFailed as exc:
                    outcomes.append(exc)

    anyio.run(run)
    return outcomes


def ours(caplog: pytest.LogCaptureFixture, name: str = "app") -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name]


def assert_no_secret(records: list[logging.LogRecord], secrets: list[str]) -> None:
    assert secrets and all(len(s) >= 8 for s in secrets)
    for record in records:
        texts = [record.getMessage(), str(record.msg), repr(record.args), repr(vars(record))]
        for secret in secrets:
            assert not any(secret in text for text in texts), f"a secret in {record.getMessage()!r}"


# -- a stdlib logging.Logger -------------------------------------------------------------------


def test_stdlib_logger_gets_retry_renewal_and_give_up_at_their_levels(
    mode: str, fake: tuple[FakeWeChat, str], caplog: pytest.LogCaptureFixture
) -> None:
    wechat, base = fake
    caplog.set_level(logging.DEBUG, logger="app")
    hook = Hook(wechat)
    scripts: list[list[Fault]] = [[Busy(), TokenExpired()], [UserAction()]]
    outcomes = post_all(mode, base, wechat, scripts, token=hook, logger=logging.getLogger("app"))
    # the first send: busy (retry), token expired (renewal), then sent; the second: user action
    assert isinstance(outcomes[0], httpx.Response) and outcomes[0].json()["errcode"] == 0
    assert isinstance(outcomes[1], retrypolicy.UserActionRequired)
    records = ours(caplog)
    assert [(r.levelname, r.retrypolicy["event"]) for r in records] == [  # type: ignore[attr-defined]
        ("WARNING", "retrypolicy.retry_scheduled"),
        ("WARNING", "retrypolicy.token_renewed"),
        ("ERROR", "retrypolicy.gave_up"),
    ]
    retry, renewal, gave_up = (r.retrypolicy for r in records)  # type: ignore[attr-defined]
    assert retry["platform"] == "wechat" and retry["code"] == -1 and retry["category"] == "retryable"
    assert retry["attempt"] == 1 and retry["method"] == "POST" and retry["status_code"] == 200
    assert retry["url"] == f"{base}{SEND}?access_token=***" and 0 <= retry["delay"] <= 0.5
    assert renewal["code"] == 42001 and renewal["category"] == "token-refresh"
    assert gave_up["code"] == 45015 and gave_up["error"] == "UserActionRequired" and gave_up["remediation"]
    # the message: the event name, then the fields as key=value (logfmt: a value with a space or
    # an "=" in double quotes)
    message = records[0].getMessage()
    assert message.startswith("retrypolicy.retry_scheduled platform=wechat code=-1 category=retryable ")
    assert f'message="{retry["message"]}"' in message and f'url="{base}{SEND}?access_token=***"' in message
    assert records[0].args == () or records[0].args is None
    assert_no_secret(records, [*hook.tokens, APP_SECRET])
    assert len(hook.tokens) == 2  # the first token, then the renewal


def test_stdlib_logger_level_filters_as_usual(
    mode: str, fake: tuple[FakeWeChat, str], caplog: pytest.LogCaptureFixture
) -> None:
    wechat, base = fake
    caplog.set_level(logging.ERROR, logger="app")
    post_all(mode, base, wechat, [[Busy()], [UserAction()]], token=Hook(wechat), logger=logging.getLogger("app"))
    assert [r.retrypolicy["event"] for r in ours(caplog)] == ["retrypolicy.gave_up"]  # type: ignore[attr-defined]


def test_logger_adapter_keeps_its_own_extra_and_gets_the_fields(
    mode: str, fake: tuple[FakeWeChat, str], caplog: pytest.LogCaptureFixture
) -> None:
    wechat, base = fake
    caplog.set_level(logging.DEBUG, logger="app")
    adapter = logging.LoggerAdapter(logging.getLogger("app"), {"tenant": "t-42"})
    hook = Hook(wechat)
    post_all(mode, base, wechat, [[Busy()]], token=hook, logger=adapter)
    [record] = ours(caplog)
    assert record.tenant == "t-42"  # type: ignore[attr-defined]
    assert record.retrypolicy["event"] == "retrypolicy.retry_scheduled"  # type: ignore[attr-defined]
    assert record.levelno == logging.WARNING
    assert_no_secret([record], [*hook.tokens, APP_SECRET])


def test_a_stdlib_logger_gets_the_store_events_too(caplog: pytest.LogCaptureFixture) -> None:
    """StoreGuard logs through the same adapter: store_unavailable at warning."""

    class DownStore(retrypolicy.MemoryTokenStore):
        def claim(self, key: str, owner: str, lease: float, stale: str | None) -> Any:
            raise ConnectionError("store down")

    caplog.set_level(logging.DEBUG, logger="app")
    wechat = FakeWeChat(secret=APP_SECRET)
    with wechat.serve() as base:
        app = logging.getLogger("app")
        outcomes = post_all("sync", base, wechat, [[]], token=Hook(wechat), logger=app, token_store=DownStore())
    assert isinstance(outcomes[0], httpx.Response) and outcomes[0].json()["errcode"] == 0
    [record] = ours(caplog)
    assert record.levelname == "WARNING" and record.retrypolicy["event"] == "retrypolicy.store_unavailable"  # type: ignore[attr-defined]
    assert "error=ConnectionError" in record.getMessage()


@pytest.mark.parametrize(
    "logger",
    [print, object(), "app", logging.Handler(), structlog.PrintLogger(io.StringIO())],
    ids=["print", "object", "a logger's name", "a Handler", "structlog.PrintLogger (no bind, no fields)"],
)
def test_any_other_logger_is_refused_at_construction(mode: str, logger: object) -> None:
    cls = retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport
    with pytest.raises(retrypolicy.ConfigurationError, match=rf"^logger must be .*got {type(logger).__name__}$"):
        cls(policy="wechat", logger=logger)


# -- structlog: the README's configurations ----------------------------------------------------


def json_processors() -> list[Any]:
    return [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        structlog.processors.JSONRenderer(),
    ]


@pytest.fixture
def structlog_config() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def busy_once(mode: str, **kwargs: Any) -> Callable[[], list[str]]:
    wechat = FakeWeChat(secret=APP_SECRET)
    hook = Hook(wechat)
    with wechat.serve() as base:
        post_all(mode, base, wechat, [[Busy()]], token=hook, **kwargs)
    return lambda: hook.tokens


def test_a_structlog_logger_rendering_json_to_stderr(mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    logger = structlog.wrap_logger(structlog.PrintLogger(sys.stderr), processors=json_processors())
    tokens = busy_once(mode, logger=logger)()
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    event = json.loads(line)
    assert event["event"] == "retrypolicy.retry_scheduled" and event["level"] == "warning" and event["code"] == -1
    assert all(token not in err for token in tokens)


def test_structlog_configured_for_json_on_stderr(
    mode: str, capsys: pytest.CaptureFixture[str], structlog_config: None
) -> None:
    structlog.configure(processors=json_processors(), logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    busy_once(mode)  # the default logger, structlog.get_logger("retrypolicy"), follows the configuration
    out, err = capsys.readouterr()
    assert out == ""
    assert json.loads(err)["event"] == "retrypolicy.retry_scheduled"


def test_structlog_configured_into_stdlib_logging(
    mode: str, caplog: pytest.LogCaptureFixture, structlog_config: None
) -> None:
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.stdlib.LoggerFactory(),
    )
    caplog.set_level(logging.INFO, logger="retrypolicy")
    tokens = busy_once(mode)()
    [record] = ours(caplog, "retrypolicy")
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith("event='retrypolicy.retry_scheduled' ")
    assert "code=-1" in record.getMessage() and all(token not in record.getMessage() for token in tokens)


def test_render_to_log_kwargs_does_not_fit_as_the_readme_says(structlog_config: None) -> None:
    """The README warns against structlog's usual stdlib recipe: an event's ``message`` field
    collides with the record's own attribute."""
    structlog.configure(
        processors=[structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    with pytest.raises(KeyError, match="Attempt to overwrite 'message' in LogRecord"):
        structlog.get_logger("retrypolicy").warning("retrypolicy.retry_scheduled", code=-1, message="system error")
