"""``RequestFailed.requeue_after()``: whether, and when, a task queue runs a failed request again.
A table over the exception kinds, and a real Celery worker (in-memory broker, ``solo`` pool) whose
task sends through the transport to FakeWeChat over a socket and requeues as the README shows."""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import retrypolicy
from retrypolicy import Category, Classification, Cooldown
from retrypolicy.testing import Busy, ErrorCode, FakeWeChat, GatewayError

pytestmark = pytest.mark.usefixtures("testing")


def classified(category: Category, **kwargs: Any) -> Classification:
    return Classification("wechat", 1, category, "vendor text", "what it means", **kwargs)


RETRYABLE = classified(Category.RETRYABLE)
HINTED = classified(Category.RETRYABLE, wait_hint=7.5)
QUOTA = classified(Category.USER_ACTION, cooldown=Cooldown("app", seconds=3600))
RATE = classified(Category.RETRYABLE, cooldown=Cooldown("app", seconds=20))
FATAL = classified(Category.FATAL)
USER = classified(Category.USER_ACTION)

CASES: list[tuple[type[retrypolicy.RequestFailed], Classification, dict[str, Any], float | None]] = [
    (retrypolicy.RetriesExhausted, RETRYABLE, {}, 60.0),  # nothing asked: the default
    (retrypolicy.RetriesExhausted, HINTED, {}, 7.5),  # Retry-After / retry_after
    (retrypolicy.RetriesExhausted, RATE, {}, 20.0),  # the code's cooldown
    (retrypolicy.RetryBudgetExhausted, RETRYABLE, {}, 60.0),
    (retrypolicy.RetryBudgetExhausted, HINTED, {}, 7.5),
    (retrypolicy.TokenRefreshFailed, RETRYABLE, {}, 60.0),  # the token endpoint was down
    (retrypolicy.TokenRefreshFailed, FATAL, {}, None),  # a wrong secret does not fix itself
    (retrypolicy.CooldownActive, QUOTA, {"remaining": 1234.5}, 1234.5),
    (retrypolicy.CircuitOpen, RETRYABLE, {"remaining": 12.0}, 12.0),
    (retrypolicy.CircuitOpen, RETRYABLE, {"remaining": 0.0}, 1.0),  # probes out: in a moment
    (retrypolicy.ResendUnsafe, HINTED, {}, None),  # it may have been carried out
    (retrypolicy.UserActionRequired, USER, {}, None),
    (retrypolicy.UserActionRequired, QUOTA, {}, 3600.0),  # a quota that resets by itself
    (retrypolicy.RequestRejected, FATAL, {}, None),
]


@pytest.mark.parametrize(("kind", "c", "extra", "expected"), CASES, ids=[f"{k.__name__}-{e}" for k, _, _, e in CASES])
def test_requeue_after_by_kind(
    kind: type[retrypolicy.RequestFailed], c: Classification, extra: dict[str, Any], expected: float | None
) -> None:
    exc = kind("failed", classification=c, attempts=1, **extra)
    assert exc.requeue_after() == expected
    # the same after a trip through pickle (a Celery result, a process pool)
    assert pickle.loads(pickle.dumps(exc)).requeue_after() == expected


def test_requeue_after_counts_a_wait_until_a_time_from_now_and_takes_its_default() -> None:
    until = classified(Category.RETRYABLE, wait_until=time.time() + 30)  # a Unix time: made now, not at import
    exc = retrypolicy.RetriesExhausted("failed", classification=until, attempts=3)
    assert 28 < (exc.requeue_after() or 0) <= 30
    plain = retrypolicy.RetriesExhausted("failed", classification=RETRYABLE, attempts=3)
    assert plain.requeue_after(default=5) == 5.0
    for bad in (-1, float("inf"), "60", True, None):
        with pytest.raises(retrypolicy.ConfigurationError, match=r"requeue_after\(default=...\) must be a finite"):
            plain.requeue_after(default=bad)  # type: ignore[arg-type]


# -- a real Celery worker ------------------------------------------------------------------------

celery = pytest.importorskip("celery")
celery_worker = pytest.importorskip("celery.contrib.testing.worker")


class Worker:
    """One Celery app and worker for this module's tests, with the README's task: send through
    RetryTransport to one FakeWeChat, requeue what may succeed later (here after 0.1 s when nothing
    was asked), fail the rest. ``runs`` lists each run of the task."""

    def __init__(self, fake: FakeWeChat, base: str) -> None:
        self.fake = fake
        self.runs: list[str] = []
        app = celery.Celery("retrypolicy-test", broker="memory://", backend="cache+memory://")
        app.conf.update(
            worker_hijack_root_logger=False,
            broker_connection_retry_on_startup=True,
            broker_transport_options={"polling_interval": 0.05},
            result_serializer="pickle",  # the task's exceptions come back typed (json: a generic Exception)
            accept_content=["json", "pickle"],
        )
        retry = retrypolicy.RetrySettings(max_attempts=2, initial_delay=0.01)
        client = httpx.Client(transport=retrypolicy.RetryTransport("wechat", token=fake.token_hook(), retry=retry))
        runs: list[str] = self.runs

        @app.task(bind=True, max_retries=3)  # type: ignore[untyped-decorator]
        def send(self: Any, openid: str) -> dict[str, Any]:
            runs.append(openid)
            try:
                response = client.post(
                    f"{base}/cgi-bin/message/custom/send", json={"touser": openid, "msgtype": "text"}
                )
            except retrypolicy.RequestFailed as exc:
                delay = exc.requeue_after(default=0.1)
                if delay is None:
                    raise  # a person must act, the request is wrong, or it may have gone through
                raise self.retry(exc=exc, countdown=delay) from None
            return dict(response.json())

        self.app, self.send, self.client = app, send, client

    def run(self, openid: str) -> Any:
        self.runs.clear()
        return self.send.delay(openid).get(timeout=20, propagate=False)


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    fake = FakeWeChat()
    with fake.serve() as base:
        w = Worker(fake, base)
        with celery_worker.start_worker(w.app, pool="solo", perform_ping_check=False, loglevel="ERROR"):
            yield w
        w.client.close()


def test_a_celery_task_requeues_a_transient_failure_and_succeeds_later(worker: Worker) -> None:
    delivered = len(worker.fake.sent)
    worker.fake.script(Busy(), Busy())  # both attempts of the first run: RetriesExhausted
    result = worker.run("o1")
    assert result["errcode"] == 0
    assert worker.runs == ["o1", "o1"]  # requeued once
    assert [m["touser"] for m in worker.fake.sent[delivered:]] == ["o1"]  # delivered once


@pytest.mark.parametrize(
    ("fault", "kind"),
    [(ErrorCode(45015), retrypolicy.UserActionRequired), (GatewayError(), retrypolicy.ResendUnsafe)],
    ids=["user-action", "resend-unsafe"],
)
def test_a_celery_task_never_requeues_what_a_person_must_fix_or_what_may_have_gone_through(
    worker: Worker, fault: Any, kind: type[retrypolicy.RequestFailed]
) -> None:
    fake = worker.fake
    before = fake.requests - fake.token_requests
    fake.script(fault)
    result = worker.run("o2")
    assert type(result) is kind and result.requeue_after() is None  # typed, through the result backend
    assert worker.runs == ["o2"] and fake.requests - fake.token_requests == before + 1  # sent once, never again
