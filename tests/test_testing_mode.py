"""Testing mode: waits pass on a virtual clock, so deadlines and cooldowns bind as in production."""

from __future__ import annotations

import time

import httpx
import pytest

import retrypolicy
from retrypolicy import ConfigurationError, RetriesExhausted, RetrySettings, _clock

from .support import Recorder, ok, send, wechat
from .test_overload import Session

SEND = "https://api.weixin.qq.com/cgi-bin/message/custom/send"


@pytest.fixture(autouse=True)
def _restore() -> object:
    with retrypolicy.set_testing(False):
        yield None


def _retry_after(seconds: str) -> httpx.Response:
    return httpx.Response(503, headers={"Retry-After": seconds}, text="busy")


def test_retry_after_binds_the_deadline_as_in_production(mode: str) -> None:
    """Retry-After 0.6 s with a 1 s deadline: production gives up after 2 attempts (0.6 + 0.6 > 1)."""
    retrypolicy.set_testing(True)
    rec = Recorder([_retry_after("0.6")] * 4, default=lambda r: ok())
    started = time.monotonic()
    with pytest.raises(RetriesExhausted, match="would pass the 1 s deadline") as info:
        send(mode, rec, url=SEND, policy="wechat", retry=RetrySettings(deadline=1.0, initial_delay=0.01), budget=None)
    assert info.value.attempts == 2
    assert len(rec.requests) == 2
    assert time.monotonic() - started < 0.6  # nothing was slept (not a timing assertion: a bound on the sleep)


def test_two_rate_limits_in_a_row_bind_the_deadline_and_the_cooldown(mode: str) -> None:
    """45011 asks for 60 s: with a 100 s deadline the second one gives up (60 + 60 > 100), and the
    cooldown it started blocks the next request, as in production."""
    retrypolicy.set_testing(True)
    rec = Recorder([wechat(45011)] * 4, default=lambda r: ok())
    with pytest.raises(RetriesExhausted, match="deadline") as info:
        send(mode, rec, url=SEND, policy="wechat", retry=RetrySettings(deadline=100.0), budget=None)
    assert info.value.attempts == 2


def test_cooldown_runs_on_the_virtual_clock(mode: str) -> None:
    """A 45011 starts a 60 s cooldown: in testing mode, as in production, the next request fails
    fast until 60 s have passed on the clock, which waits move ahead."""
    retrypolicy.set_testing(True)
    rec = Recorder([wechat(45011)], default=lambda r: ok())
    once = {"retrypolicy": {"retry": False}}
    s = Session(mode, rec, policy="wechat", budget=None)
    with pytest.raises(RetriesExhausted):
        s.post(SEND, json={}, extensions=once)
    with pytest.raises(retrypolicy.CooldownActive) as info:
        s.post(SEND, json={})
    assert 59 < info.value.remaining <= 60
    _clock.waited(60.0)  # what a request's 60 s backoff does to the clock
    assert s.post(SEND, json={}).json()["errcode"] == 0
    assert len(rec.requests) == 2


def test_set_testing_is_a_context_manager_that_restores() -> None:
    assert not retrypolicy.is_testing()
    with retrypolicy.set_testing(True):
        assert retrypolicy.is_testing()
        with retrypolicy.set_testing(False):
            assert not retrypolicy.is_testing()
        assert retrypolicy.is_testing()
    assert not retrypolicy.is_testing()


@pytest.mark.parametrize(("testing", "scale"), [("yes", 0.0), (True, 2.0), (True, -1), (True, "0"), (True, True)])
def test_bad_testing_arguments_are_configuration_errors(testing: object, scale: object) -> None:
    with pytest.raises(ConfigurationError):
        retrypolicy.set_testing(testing, scale=scale)  # type: ignore[arg-type]
    assert not retrypolicy.is_testing()


def test_waits_move_the_virtual_clock_not_the_real_one() -> None:
    with retrypolicy.set_testing(True, scale=0.0):
        before = _clock.monotonic()
        assert _clock.sleep_for(30.0) == 0.0
        _clock.waited(30.0)
        assert _clock.monotonic() - before >= 30.0
    with retrypolicy.set_testing(True, scale=0.5):
        assert _clock.sleep_for(30.0) == 15.0
    assert _clock.sleep_for(0.25) == 0.25  # production: the whole wait is slept
    before = _clock.monotonic()
    _clock.waited(1000.0)
    assert _clock.monotonic() - before < 1000.0  # and the clock is the real one
