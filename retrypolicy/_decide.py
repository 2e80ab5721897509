"""The pure decision: what to do after a failed attempt, from (classification, state, limits).

:class:`RetryState` is immutable, as urllib3's ``Retry`` is: each attempt gives a new one with its
history. :func:`decide` reads no clock, logs nothing and sleeps nowhere; the flow gives it the
elapsed time and the backoff it drew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import tenacity

from ._errors import (
    RequestFailed,
    RequestRejected,
    ResendUnsafe,
    RetriesExhausted,
    TokenRefreshFailed,
    UserActionRequired,
)
from ._policy import Category, Classification

__all__ = [
    "EXTRA_HOOK_CALLS",
    "RENEWAL_CAP",
    "AttemptRecord",
    "Decision",
    "Limits",
    "RetryState",
    "backoff",
    "decide",
]


# -- the pure decision -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One failed attempt: what it was classified as and what was decided (``retry``, ``renew``
    or ``give_up``), as urllib3's ``Retry.history`` keeps them. ``RequestFailed.history`` holds
    them all, the last one included."""

    attempt: int
    code: int | str | None
    category: Category
    action: str
    delay: float
    what: str = ""  # the code, "HTTP 502", or the transport error's type: what the attempt met

    @classmethod
    def of(cls, attempt: int, c: Classification, action: str, delay: float) -> AttemptRecord:
        if c.code is not None:
            what = str(c.code) + (f"/{c.subcode}" if c.subcode is not None else "")
        elif c.source == "transport":
            what = c.description.split(":", 1)[0]
        else:
            what = f"HTTP {c.status_code}" if c.status_code is not None else "no code"
        return cls(attempt, c.code, c.category, action, delay, what)

    def __str__(self) -> str:  # no delay: a message stays the same from run to run (error grouping)
        then = {"retry": "retry", "renew": "renew the token", "give_up": "give up"}
        return f"#{self.attempt} {self.what or self.code} {self.category.value} -> {then.get(self.action, self.action)}"


EXTRA_HOOK_CALLS = 2
"""Hook calls a request may make beyond ``max_renewals`` for tokens that had worked, then expired."""
RENEWAL_CAP = 64
"""Renewals of one request in all, picking up tokens other requests renewed included."""


@dataclass(frozen=True, slots=True)
class RetryState:
    """Where one logical request stands. Immutable: :meth:`next` returns a new state."""

    attempt: int = 1
    renewals: int = 0  # every renewal of this request
    history: tuple[AttemptRecord, ...] = ()
    hook_calls: int = 0  # renewals for which this request called the hook (the others took another's token)
    refused: tuple[str | None, ...] = field(default=(), repr=False)  # the token refused at each renewal

    def next(self, classification: Classification, decision: Decision) -> RetryState:
        record = AttemptRecord.of(self.attempt, classification, decision.action, decision.delay)
        renewed = decision.action == "renew"
        return RetryState(
            attempt=self.attempt + 1,
            renewals=self.renewals + renewed,
            history=(*self.history, record),
            hook_calls=self.hook_calls + (renewed and decision.hook_called),
            refused=self.refused,
        )


_FIRST_ATTEMPT = RetryState()


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["retry", "renew", "give_up"]
    delay: float = 0.0
    error: type[RequestFailed] | None = None
    reason: str = ""
    renew: bool = False  # give up, but renew the refused token first for the requests that follow
    hook_called: bool = False  # a "renew" that called the hook (set by the flow once it knows; see RetryState)


@dataclass(frozen=True, slots=True)
class Limits:
    """The effective limits of one request (table defaults, transport and request overrides)."""

    max_attempts: int
    initial_delay: float
    max_delay: float
    deadline: float
    max_renewals: int
    resend: bool = True  # False: the request is sent exactly once (per-request ``retry: False``)
    min_delay: float = 0.0  # the shortest wait before a retry (RetrySettings.min_delay)
    attempt_timeout: float | None = None  # caps each attempt's httpx timeouts, as the deadline's time left does


def backoff(limits: Limits, attempt: int) -> float:
    """Full-jitter exponential backoff after ``attempt`` (1-based), computed by tenacity."""
    wait = tenacity.wait_random_exponential(multiplier=limits.initial_delay, max=limits.max_delay)
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return float(wait(state))


def decide(
    classification: Classification,
    state: RetryState,
    limits: Limits,
    *,
    elapsed: float,
    resend_safe: bool,
    unsafe_reason: str = "",
    can_renew: bool,
    retry_after: float | None = None,
    wait: float | None = None,
    token_worked: bool = False,
    token_current: bool = True,
    charged: int | None = None,
) -> Decision:
    """What to do after a failed attempt. A pure function of its arguments.

    ``wait`` is the backoff for this attempt (from :func:`backoff`); the delay is the largest of
    it, the limits' and the rule's ``min_delay`` and ``retry_after`` (a wait hint: Retry-After or
    the table's ``[wait_hint]``). A delay that would pass the deadline gives up at once: the
    request never sleeps past its deadline.

    A refused token is renewed unless one of these bounds is reached:

    * ``max_renewals`` counts only renewals of tokens refused before they ever carried a success
      (``token_worked`` False for the token refused now; ``charged``: how many of this request's
      earlier renewals were of such tokens, as known now, since a success sent before a refusal
      may be read after it; default: all of them). The platform refusing each token the moment
      it is issued is the loop it stops. A token that worked, then expired (or was replaced by
      another deployment), is renewed without counting: that is no loop;
    * the hook calls of this request: at most ``max_renewals + EXTRA_HOOK_CALLS`` (a request whose
      refused token is not the current one any more, ``token_current`` False, takes the token
      another request renewed and calls no hook), so that a request the platform refuses with
      every token, while others succeed, cannot have the hook called on and on;
    * ``RENEWAL_CAP`` renewals in all, and the request's deadline.
    """
    category = classification.category
    if category is Category.USER_ACTION:
        return Decision("give_up", error=UserActionRequired, reason="a person must act")
    if category is Category.FATAL:
        return Decision("give_up", error=RequestRejected, reason="the request cannot succeed unchanged")
    refused = category is Category.TOKEN_REFRESH and can_renew  # renew for later requests, resent or not
    if not resend_safe:
        return Decision("give_up", error=ResendUnsafe, reason=unsafe_reason, renew=refused)
    if not limits.resend:
        reason = "retry is off for this request"
        if refused:
            reason += "; the token is renewed for the requests that follow"
        return Decision("give_up", error=RetriesExhausted, reason=reason, renew=refused)
    if category is Category.TOKEN_REFRESH:
        if not can_renew:
            return Decision("give_up", error=TokenRefreshFailed, reason="no token hook is configured")
        charged = state.renewals if charged is None else charged
        if not token_worked and charged >= limits.max_renewals:
            reason = f"the platform rejected the token after {state.renewals} renewal(s)"
            if state.renewals > charged:
                reason += f", {charged} of them of a token refused before it ever worked"
        elif token_current and state.hook_calls >= limits.max_renewals + EXTRA_HOOK_CALLS:
            reason = f"the platform rejected the token after {state.hook_calls} renewals by this request"
        elif state.renewals >= RENEWAL_CAP:
            reason = f"the platform rejected the token after {state.renewals} renewals"
        elif elapsed >= limits.deadline:
            reason = f"tokens kept expiring until the {limits.deadline:g} s deadline passed"
        else:
            return Decision("renew")
        return Decision("give_up", error=TokenRefreshFailed, reason=reason)
    if state.attempt >= limits.max_attempts:
        return Decision("give_up", error=RetriesExhausted, reason=f"no attempts left ({limits.max_attempts} allowed)")
    delay = max(wait if wait is not None else 0.0, limits.min_delay, classification.min_delay, retry_after or 0.0)
    if elapsed + delay > limits.deadline:
        return Decision(
            "give_up",
            error=RetriesExhausted,
            reason=f"a {delay:.3g} s wait would pass the {limits.deadline:g} s deadline",
        )
    return Decision("retry", delay=delay)
