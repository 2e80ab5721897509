"""The exception tree of retrypolicy, documented in one place.

::

    RetryPolicyError                      base of everything the library raises
    ├── PolicyError (also ValueError)     a policy table or file is invalid
    ├── ConfigurationError (also ValueError)  bad arguments to a transport or hook
    ├── hooks.HookError                   a built-in token hook could not get a credential
    │   └── hooks.UserSigError (also ValueError)  TencentUserSig.verify() rejected a UserSig
    └── RequestFailed                     a request ended without success
        ├── UserActionRequired            a person must act (follow, reply, verify, pay, ...)
        ├── RequestRejected               the request is wrong; it can never succeed unchanged
        ├── RetriesExhausted              still failing after the last allowed attempt or the deadline
        ├── ResendUnsafe                  retryable, but resending could duplicate it (ambiguous
        │                                 failure of a non-idempotent request, or a one-shot body)
        ├── TokenRefreshFailed            the token hook failed, or a fresh token was refused too
        ├── RetryBudgetExhausted          retryable, but the transport's retry budget is empty
        ├── CooldownActive                not sent: a cooldown from an earlier code is running
        └── CircuitOpen                   not sent: the platform's circuit breaker is open

Every :class:`RequestFailed` carries ``.classification`` (what the platform said, classified
by the policy table), ``.attempts`` (how many times the request was sent), ``.history`` (each
attempt's :class:`~retrypolicy.AttemptRecord`: what it met and what was decided, shown in the
message when there were a few) and ``.response`` (the last response, closed, or ``None`` when no
response arrived). A :class:`~retrypolicy.hooks.HookError` carries the token endpoint's
classification; a hook's failure reaches the caller as ``TokenRefreshFailed`` with its summary. Messages and reprs never
contain a credential: the URL is redacted and vendor text is scrubbed of known secrets.

Every exception pickles (Celery results, ``multiprocessing``, ``concurrent.futures``): it comes
back with its type, message, classification, attempts, url, history and ``remaining``, without its
``response`` (``None``: it holds the request, token included) and without its ``__cause__``.

:meth:`RequestFailed.requeue_after` tells a task queue (Celery, RQ, Dramatiq, a cron job) whether
to run the request again later, and when: ``None`` where that would not help or could send it
twice, else the seconds to wait.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from ._decide import AttemptRecord
    from ._policy import Classification

__all__ = [
    "CircuitOpen",
    "ConfigurationError",
    "CooldownActive",
    "PolicyError",
    "RequestFailed",
    "RequestRejected",
    "ResendUnsafe",
    "RetriesExhausted",
    "RetryBudgetExhausted",
    "RetryPolicyError",
    "TokenRefreshFailed",
    "UserActionRequired",
]


class RetryPolicyError(Exception):
    """Base class of every exception retrypolicy raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default rebuilds an exception by calling its class with ``self.args``, which fails
        # for keyword-only arguments (classification, attempts, remaining, source...). Rebuild
        # it without calling __init__: same class, args and attributes.
        return (_rebuild, (type(self), self.args, self._pickled_state()))

    def _pickled_state(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _rebuild(cls: type[RetryPolicyError], args: tuple[Any, ...], state: dict[str, Any]) -> RetryPolicyError:
    """Unpickle an exception of retrypolicy (see :meth:`RetryPolicyError.__reduce__`)."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class PolicyError(RetryPolicyError, ValueError):
    """A policy table is invalid. The message names the file, the rule and the field."""

    def __init__(
        self,
        problem: str,
        *,
        source: str = "<policy>",
        rule: str | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.rule = rule
        self.field = field
        self.problem = problem
        where = source
        if rule is not None:
            where += f": {rule}"
        if field is not None:
            where += f": field {field!r}"
        super().__init__(f"{where}: {problem}")


class ConfigurationError(RetryPolicyError, ValueError):
    """An argument given to retrypolicy is invalid (a bad option, a wrong type)."""


class RequestFailed(RetryPolicyError):
    """A request did not succeed. Subclasses say why; all carry the classification."""

    def __init__(
        self,
        message: str,
        *,
        classification: Classification,
        attempts: int,
        response: httpx.Response | None = None,
        url: str = "",
        history: tuple[AttemptRecord, ...] = (),
    ) -> None:
        super().__init__(message)
        self.classification = classification
        self.attempts = attempts
        self.response = response
        self.url = url  # redacted
        self.history = history  # every attempt: what it met and what was decided (the last one included)

    def _pickled_state(self) -> dict[str, Any]:
        # The response is left behind: it holds the request, whose URL or headers carry the token.
        return {**self.__dict__, "response": None}

    def requeue_after(self, default: float = 60.0) -> float | None:
        """Seconds after which a task queue may run this request again, or ``None`` when it should
        not: a person must act (:class:`UserActionRequired`), the request is wrong
        (:class:`RequestRejected`), or it may have been carried out already
        (:class:`ResendUnsafe`: running it again could send it twice). A quota that resets by
        itself (a code with a cooldown, such as WeChat's daily 45009) is the exception: the time
        until it resets. Otherwise the time the platform or the transport asked for (a cooldown's
        or an open circuit's ``remaining``, a ``Retry-After`` or ``retry_after`` hint), or
        ``default`` when nothing was asked. In a Celery task: ``raise self.retry(exc=exc,
        countdown=delay)``.
        """
        _check_default(default)
        cooldown = self.classification.cooldown
        return cooldown.duration(time.time()) if cooldown is not None else None

    def __repr__(self) -> str:
        c = self.classification
        return (
            f"{type(self).__name__}(platform={c.platform!r}, code={c.code!r}, "
            f"category={c.category.value!r}, attempts={self.attempts})"
        )


def _check_default(default: object) -> float:
    if isinstance(default, bool) or not isinstance(default, (int, float)) or not 0 <= default < float("inf"):
        raise ConfigurationError(f"requeue_after(default=...) must be a finite number of seconds >= 0, got {default!r}")
    return float(default)


def _hinted(failure: RequestFailed, default: float) -> float:
    """What the platform asked to wait (a wait until a time counts from now), else the code's
    cooldown, else ``default``."""
    default = _check_default(default)
    c = failure.classification
    now = time.time()
    wait = c.wait_seconds(now)
    if wait is None and c.cooldown is not None:
        wait = c.cooldown.duration(now)
    return wait if wait is not None else default


class UserActionRequired(RequestFailed):
    """The platform needs a person to act; ``classification.remediation`` says who and what."""


class RequestRejected(RequestFailed):
    """The platform rejected the request itself (category ``fatal``); resending cannot help."""


class RetriesExhausted(RequestFailed):
    """A retryable failure persisted through every allowed attempt, or the deadline passed."""

    def requeue_after(self, default: float = 60.0) -> float | None:
        return _hinted(self, default)


class ResendUnsafe(RequestFailed):
    """A retryable failure that was not resent because the request may already have been
    carried out (a POST after a read timeout or a 502) or its body cannot be sent twice.
    Mark the request idempotent (``extensions={"retrypolicy": {"idempotent": True}}``) to allow it.
    """

    def requeue_after(self, default: float = 60.0) -> float | None:
        _check_default(default)
        return None  # it may have been carried out: running it again could send it twice


class TokenRefreshFailed(RequestFailed):
    """The token hook raised, timed out or returned nothing, or a fresh token was refused."""

    def requeue_after(self, default: float = 60.0) -> float | None:
        # the token endpoint was down or slow: later may work; a wrong secret or an IP not on the
        # whitelist (fatal, user-action) will not fix itself
        return _hinted(self, default) if self.classification.category == "retryable" else super().requeue_after(default)


class RetryBudgetExhausted(RequestFailed):
    """A retryable failure given up at once: the transport's retry budget for this platform is
    empty (many recent retries, few successes), so retrying would add load to a struggling platform.
    """

    def requeue_after(self, default: float = 60.0) -> float | None:
        return _hinted(self, default)


class CooldownActive(RequestFailed):
    """The request was not sent: an earlier response started a cooldown (a quota or rate limit
    for the whole app or for this recipient). ``remaining`` is the time left in seconds;
    ``classification`` is the code that started it; ``attempts`` is how many were sent before.
    """

    def __init__(self, message: str, *, remaining: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.remaining = remaining

    def requeue_after(self, default: float = 60.0) -> float | None:
        _check_default(default)
        return self.remaining


class CircuitOpen(RequestFailed):
    """The request was not sent: the circuit breaker of its platform (or host) is open, because
    too many recent attempts failed (see :class:`~retrypolicy.CircuitBreaker`). ``remaining`` is
    the time in seconds until the breaker lets a probe through (0 while probes are in flight);
    ``classification`` is the failure that opened it; ``attempts`` is how many were sent before.
    """

    def __init__(self, message: str, *, remaining: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.remaining = remaining

    def requeue_after(self, default: float = 60.0) -> float | None:
        _check_default(default)
        return max(self.remaining, 1.0)  # probes out (0 left): try again in a moment
