"""What the flow tells an optional observer (``retrypolicy.otel.Telemetry``) about attempts.

The core imports nothing of OpenTelemetry: it calls :meth:`Observer.attempted` with an
:class:`Attempt`, for each attempt of a request that did not succeed at its first attempt (a
request that succeeds at once, the common case, costs the observer nothing). An observer that
raises never fails the request it reports on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._policy import Classification

__all__ = ["Attempt", "Binds", "Observer"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a request, as the flow saw it. ``started``/``ended`` are on the core's
    (monotonic) clock; ``classification`` and ``action`` are ``None`` for the attempt that
    succeeded; ``action`` is what was decided after a failure (``retry``, ``renew``, ``give_up``)."""

    platform: str
    method: str
    url: str  # redacted
    scheme: str
    host: str
    port: int | None
    number: int  # 1 for the first attempt, 2 for the first resend, ...
    started: float
    ended: float
    status_code: int | None
    classification: Classification | None
    action: str | None
    delay: float  # the wait before the resend, for a retry
    error: str | None  # the transport error's qualified type name ("httpx.ReadTimeout"), if sending failed


class Observer(Protocol):
    def attempted(self, attempt: Attempt) -> None: ...


class Binds(Protocol):
    """What ``telemetry=`` takes (``retrypolicy.otel.Telemetry``): given a transport's core, the
    observer of its attempts. ``core`` is a ``RetryCore``; its ``snapshot()`` feeds the counters."""

    def bind(self, core: Any) -> Observer: ...
