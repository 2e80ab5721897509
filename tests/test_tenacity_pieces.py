"""retrypolicy.tenacity: tenacity predicates, waits and logging driven by the policy tables, with
real SDK exception types (pywa's WhatsAppError, wechatpy's WeChatClientException)."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import tenacity
from pywa.client import WhatsApp
from pywa.errors import WhatsAppError

import retrypolicy
from retrypolicy.tenacity import (
    before_sleep_log_event,
    classify_exception,
    retry_if_category,
    stop_policy,
    wait_policy,
)
from retrypolicy.testing import Busy, FakeWhatsAppCloud, TokenExpired

GRAPH = "https://graph.facebook.com/v21.0/106540352242922/messages"


def wa_error(code: int, subcode: int | None = None, *, headers: dict[str, str] | None = None) -> WhatsAppError:
    """A WhatsAppError as pywa builds it from a Graph error response."""
    error: dict[str, Any] = {"code": code, "message": f"error {code}", "type": "OAuthException", "fbtrace_id": "AbC1"}
    if subcode is not None:
        error["error_subcode"] = subcode
    response = httpx.Response(
        400, json={"error": error}, headers=headers, request=httpx.Request("POST", GRAPH + "?access_token=EAAGsecret")
    )
    return WhatsAppError.from_dict(error, response=response)


def wechatpy_error(errcode: int) -> Exception:
    exceptions = pytest.importorskip("wechatpy.exceptions")
    error: Exception = exceptions.WeChatClientException(errcode, f"errmsg {errcode} rid: 65f0-1a2b")
    return error


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def failing(*errors: BaseException) -> Any:
    """A function raising ``errors`` one per call, then returning "sent"."""
    queue = list(errors)

    def send() -> str:
        if queue:
            raise queue.pop(0)
        return "sent"

    return send


def retrying(policy: str, sleeps: Sleeps, **extra: Any) -> tenacity.Retrying:
    return tenacity.Retrying(
        retry=retry_if_category(policy),
        wait=wait_policy(policy),
        stop=stop_policy(policy),
        sleep=sleeps,
        reraise=True,
        **extra,
    )


def test_pywa_errors_are_classified_by_the_table() -> None:
    p = "whatsapp_cloud"
    assert retry_if_category(p)(state(wa_error(131000)))  # something went wrong: retryable
    assert not retry_if_category(p)(state(wa_error(131047)))  # re-engagement: a person must act
    assert not retry_if_category(p)(state(wa_error(190, 463)))  # the token: the transport's job
    assert retry_if_category(p, "token-refresh")(state(wa_error(190, 463)))
    c = classify_exception(p, wa_error(190, 460))
    assert c is not None and c.category is retrypolicy.Category.USER_ACTION  # password changed (subcode 460)
    assert classify_exception(p, ValueError("no code")) is None
    assert not retry_if_category(p)(state(ValueError("no code")))


def test_wechatpy_errors_are_classified_by_the_table() -> None:
    assert retry_if_category("wechat")(state(wechatpy_error(-1)))  # system busy
    assert not retry_if_category("wechat")(state(wechatpy_error(45015)))
    c = classify_exception("wechat", wechatpy_error(45015))
    assert c is not None and c.request_id == "65f0-1a2b"  # read from the vendor message, as the transport does


def test_a_retryable_pywa_error_is_retried_with_the_tables_backoff() -> None:
    sleeps = Sleeps()
    send = failing(wa_error(131000), wa_error(131000))
    assert retrying("whatsapp_cloud", sleeps)(send) == "sent"
    table = retrypolicy.load_policy("whatsapp_cloud").retry
    assert len(sleeps.waits) == 2 and all(0 <= w <= table.max_delay for w in sleeps.waits)


def test_the_rules_min_delay_is_honoured() -> None:
    sleeps = Sleeps()
    send = failing(wa_error(131056))  # pair rate limit: the rule asks for 6 s at least
    assert retrying("whatsapp_cloud", sleeps)(send) == "sent"
    assert sleeps.waits[0] >= 6.0


def test_a_retry_after_header_is_honoured() -> None:
    sleeps = Sleeps()
    send = failing(wa_error(131000, headers={"Retry-After": "17"}))
    assert retrying("whatsapp_cloud", sleeps)(send) == "sent"
    assert sleeps.waits[0] >= 17.0


def test_a_wait_past_the_deadline_is_not_waited_for() -> None:
    """A Retry-After beyond the table's deadline (60 s): raised at once, no sleep, as the transport does."""
    sleeps = Sleeps()
    error = wa_error(131000, headers={"Retry-After": "3600"})
    with pytest.raises(WhatsAppError) as caught:
        retrying("whatsapp_cloud", sleeps)(failing(error))
    assert caught.value is error and sleeps.waits == []


def test_the_backoff_never_runs_past_the_deadline() -> None:
    wait = wait_policy("whatsapp_cloud")
    retry_state = state(wa_error(131000), attempt=10)
    retry_state.outcome_timestamp = retry_state.start_time + 59.5  # 0.5 s left of the 60 s deadline
    assert wait(retry_state) <= 0.5


def test_stop_policy_stops_at_max_attempts() -> None:
    sleeps = Sleeps()
    errors = [wa_error(131000) for _ in range(10)]
    with pytest.raises(WhatsAppError):
        retrying("whatsapp_cloud", sleeps)(failing(*errors))
    assert len(sleeps.waits) == retrypolicy.load_policy("whatsapp_cloud").retry.max_attempts - 1


def test_before_sleep_logs_the_transports_event(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.tenacity")
    sleeps = Sleeps()
    r = retrying("whatsapp_cloud", sleeps, before_sleep=before_sleep_log_event("whatsapp_cloud", logger=logger))
    with caplog.at_level(logging.WARNING, logger="test.tenacity"):
        r(failing(wa_error(131000)))
    [record] = [r for r in caplog.records if r.name == "test.tenacity"]
    fields = record.retrypolicy  # type: ignore[attr-defined]
    assert fields["event"] == "retrypolicy.retry_scheduled"
    assert fields["code"] == 131000 and fields["category"] == "retryable" and fields["platform"] == "whatsapp_cloud"
    assert fields["delay"] == round(sleeps.waits[0], 3) and fields["attempt"] == 1
    assert fields["method"] == "POST" and "access_token=***" in fields["url"]
    assert "EAAGsecret" not in record.getMessage()


def test_before_sleep_has_the_fields_of_the_transports_event() -> None:
    """The same field names as the transport's retrypolicy.retry_scheduled event (plus via=tenacity)."""
    seen: list[dict[str, Any]] = []

    class Keep:
        def bind(self, **kw: Any) -> Keep:
            return self

        def _log(self, event: str, **fields: Any) -> None:
            seen.append({"event": event, **fields})

        debug = info = warning = error = _log

    with retrypolicy.set_testing(True):
        answers = iter([httpx.Response(200, json={"errcode": -1, "errmsg": "busy"}), httpx.Response(200, json={})])
        transport = retrypolicy.RetryTransport(
            "wechat", transport=httpx.MockTransport(lambda r: next(answers)), logger=Keep()
        )
        httpx.Client(transport=transport).post("https://api.weixin.qq.com/cgi-bin/message/custom/send", json={})
    log = before_sleep_log_event("wechat", logger=Keep())
    retry_state = state(wechatpy_error(-1))
    retry_state.next_action = tenacity.RetryAction(0.5)
    log(retry_state)
    transport_event, tenacity_event = seen
    assert set(tenacity_event) - {"via"} <= set(transport_event)
    assert set(transport_event) - set(tenacity_event) <= {"method", "url"}  # wechatpy's exception has no request


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(retrypolicy.ConfigurationError) as info:
        retry_if_category("wechat", "retriable")
    assert str(info.value) == (
        "retry_if_category takes categories (retryable, token-refresh, user-action, fatal), got ['retriable']"
    )
    with pytest.raises(retrypolicy.ConfigurationError, match="code must be a function"):
        retry_if_category("wechat", code=42)  # type: ignore[arg-type]
    with pytest.raises(retrypolicy.ConfigurationError, match="policy must be"):
        wait_policy(3)  # type: ignore[arg-type]


def test_pywa_with_tenacity_at_the_call_site_and_the_transport_renewing_tokens() -> None:
    """The README's set-up: the transport only renews tokens (max_attempts=1, raise_on=[] so pywa
    raises its own errors); tenacity retries pywa's WhatsAppError by the table."""
    fake = FakeWhatsAppCloud()
    fake.script(TokenExpired(), Busy())  # 190/463: renewed by the transport; 131000: retried by tenacity
    renewals: list[str] = []

    def hook() -> str:
        renewals.append("called")
        return fake.issue_token()

    transport = retrypolicy.RetryTransport(
        policy="whatsapp_cloud",
        token=hook,
        transport=httpx.MockTransport(fake),
        retry=retrypolicy.RetrySettings(max_attempts=1),
        raise_on=[],
    )
    sleeps = Sleeps()
    with retrypolicy.set_testing(True), httpx.Client(transport=transport) as session:
        wa = WhatsApp(phone_id=fake.phone_number_id, token=fake.issue_token(), session=session)
        sent = retrying("whatsapp_cloud", sleeps)(lambda: wa.send_message(to="15550001042", text="hi"))
    assert sent.id.startswith("wamid.")
    assert len(renewals) == 1 and len(sleeps.waits) == 1 and len(fake.sent) == 1


def state(error: BaseException, attempt: int = 1) -> tenacity.RetryCallState:
    """A RetryCallState whose last attempt raised ``error``."""
    retry_state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    retry_state.attempt_number = attempt
    retry_state.set_exception((type(error), error, error.__traceback__))
    return retry_state
