"""Faults a fake platform can inject, and a clock that stands still."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TypeAlias

# -- faults ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Busy:
    """The platform's "system busy" answer: retryable and not ambiguous.

    WeChat -1, Tencent -10114 (server overloaded, refuses service), on-prem 1016 (system
    overloaded, HTTP 503), Cloud 131000 (something went wrong, HTTP 500).
    """


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The platform's rate-limit answer, with a ``Retry-After`` header when ``retry_after`` is given.

    WeChat 45011 in an HTTP 200 body (as WeChat does); Tencent 60011, on-prem 1015 and Cloud
    130429 with HTTP 429.
    """

    retry_after: float | None = None

    def __post_init__(self) -> None:
        if self.retry_after is not None and not (0 <= self.retry_after < math.inf):
            raise ValueError(f"retry_after must be a finite number of seconds >= 0, got {self.retry_after!r}")


@dataclass(frozen=True, slots=True)
class TokenExpired:
    """Expire the current tokens before handling: the request gets the token-expired code.

    WeChat 42001, Tencent 70001, on-prem 1005 (HTTP 401), Cloud 190/463 (HTTP 401).
    """


@dataclass(frozen=True, slots=True)
class UserAction:
    """A code that needs a person; ``code`` overrides the platform's typical one.

    WeChat 45015, Tencent 80005, on-prem 470, Cloud 131047, Slack ``not_in_channel``, Telegram 403.
    """

    code: int | str | None = None  # a string for a platform with string codes (Slack)


@dataclass(frozen=True, slots=True)
class Fatal:
    """A code saying the request can never succeed as is; ``code`` overrides the default.

    WeChat 40003, Tencent 20003, on-prem 1008 (HTTP 400), Cloud 131009 (HTTP 400), Slack
    ``channel_not_found``, Telegram 400 (chat not found).
    """

    code: int | str | None = None  # a string for a platform with string codes (Slack)


@dataclass(frozen=True, slots=True)
class GatewayError:
    """A proxy in front of the platform fails: an HTML page with no error code (``text/html``)."""

    status: int = 502

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {self.status!r}")


@dataclass(frozen=True, slots=True)
class Slow:
    """Sleep ``seconds`` (real time, without holding the fake's lock), then answer normally."""

    seconds: float

    def __post_init__(self) -> None:
        if not (0 <= self.seconds < math.inf):
            raise ValueError(f"seconds must be a finite number >= 0, got {self.seconds!r}")


@dataclass(frozen=True, slots=True)
class Dropped:
    """Process the request (a message IS recorded in ``sent``), then lose the answer.

    Through ``MockTransport`` the call raises ``httpx.ReadTimeout``; over :meth:`FakePlatform.serve`
    the connection is closed without a response.
    """


@dataclass(frozen=True, slots=True)
class ErrorCode:
    """Any other platform code, in the platform's error body, with this HTTP status.

    ``code`` is a string on a platform with string codes (Slack: ``ErrorCode("channel_not_found")``).
    Telegram answers with its ``error_code`` as the HTTP status, whatever ``status`` says.
    """

    code: int | str
    status: int = 200
    message: str | None = None
    subcode: int | None = None
    """Graph ``error_subcode`` (WhatsApp Cloud only)."""

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status (100-599), got {self.status!r}")


Fault: TypeAlias = Busy | RateLimited | TokenExpired | UserAction | Fatal | GatewayError | Slow | Dropped | ErrorCode
_FAULT_TYPES = (Busy, RateLimited, TokenExpired, UserAction, Fatal, GatewayError, Slow, Dropped, ErrorCode)


# -- clock -------------------------------------------------------------------------------------


class FakeClock:
    """A clock for ``clock=``: stands still until :meth:`advance` moves it."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        if not seconds >= 0:
            raise ValueError(f"a clock only moves forward, got {seconds!r}")
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock({self():g})"
