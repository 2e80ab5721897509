"""Circuit breakers: when a platform stops answering, requests fail at once instead of waiting.

One breaker per platform, and per host where a ``policy={host: ...}`` mapping gives one platform
several hosts (one per key of the mapping). Each counts the outcomes of the attempts sent to its
platform over a sliding ``window`` (ten buckets) and **opens** when at least ``failure_ratio`` of
at least ``min_calls`` attempts failed. Only retryable failures count as failures (timeouts,
connection errors, 5xx, "system busy" codes); an answer that says the request is wrong or needs
a person (fatal, user-action, token-refresh) shows the platform is up, so it counts as an answer;
a request that could not even be built (an illegal header) counts as nothing.

While a breaker is **open**, requests fail at once with :class:`~retrypolicy.CircuitOpen`, unsent.
After ``open_for`` seconds it is **half-open**: ``probes`` attempts go through. A probe that gets
an answer closes it; a probe that fails opens it again for twice as long, at most
``max_open_for``. Polly's and resilience4j's breakers work alike.

The success path stays cheap: while every breaker is closed, :attr:`Breakers.quiet` is the one
check ``RetryCore.ready`` makes, and a success only counts itself (``next(successes)``, one call
in C, no lock). Every 64th success, and every failure, moves the successes counted since into
the window with a timestamp (:meth:`Breaker.tally`).

A store that can (``RedisTokenStore``) shares each breaker's state between processes, as it
shares cooldowns: a breaker opened or closed in one process is pulled by the others at most
``sync_interval`` seconds later, and while one is half-open the store hands out its probes, so
a recovering platform gets ``probes`` attempts from all processes together, not from each.
Each process keeps counting its own window.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._errors import ConfigurationError
from ._overload import _Gate, count_of

if TYPE_CHECKING:
    from ._overload import _Guard

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "Breaker",
    "Breakers",
    "CircuitBreaker",
    "CircuitStatus",
    "Opened",
    "SharedBreakers",
    "check_attempt_timeout",
    "check_breaker",
    "share_breakers",
]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
_BUCKETS = 10  # the sliding window is ten buckets of window / 10 seconds
_TALLY_EVERY = 63  # a mask: every 64th success is moved into the window with a timestamp


@dataclass(frozen=True, slots=True)
class CircuitBreaker:
    """Settings of a circuit breaker (see the module). Checks itself: a value out of range is a
    :class:`~retrypolicy.ConfigurationError` naming the field.

    * ``failure_ratio``: opens when at least this share of the attempts in the window failed;
    * ``min_calls``: ... and the window holds at least this many attempts;
    * ``window``: seconds of the sliding window;
    * ``open_for``: seconds it stays open before letting probes through;
    * ``max_open_for``: cap of the wait, which doubles each time a probe fails (default: six
      times ``open_for``, 30 s with the defaults);
    * ``probes``: attempts let through while half-open (in all processes, with a shared store).
    """

    failure_ratio: float = 0.5
    min_calls: int = 20
    window: float = 30.0
    open_for: float = 5.0
    max_open_for: float | None = None
    probes: int = 1

    def __post_init__(self) -> None:
        ratio = self.failure_ratio
        if not _number(ratio) or not 0 < ratio <= 1:
            raise ConfigurationError(f"CircuitBreaker.failure_ratio must be a number > 0 and <= 1, got {ratio!r}")
        for name, low, high in (("min_calls", 1, 100_000), ("probes", 1, 100)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigurationError(
                    f"CircuitBreaker.{name} must be an integer from {low} to {high}, got {value!r}"
                )
        for name in ("window", "open_for", "max_open_for"):
            value = getattr(self, name)
            if name == "max_open_for" and value is None:
                continue
            if not _number(value) or not 0 < value <= 86400:
                raise ConfigurationError(
                    f"CircuitBreaker.{name} must be a number of seconds > 0 and at most 86400, got {value!r}"
                )
        if self.max_open_for is not None and self.max_open_for < self.open_for:
            raise ConfigurationError(
                f"CircuitBreaker.max_open_for ({self.max_open_for:g} s) must be at least open_for "
                f"({self.open_for:g} s): it caps the wait, which starts at open_for and doubles"
            )

    @property
    def longest(self) -> float:
        """The longest open period: ``max_open_for``, or six times ``open_for``."""
        return self.max_open_for if self.max_open_for is not None else 6 * self.open_for


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_attempt_timeout(breaker: CircuitBreaker | None, attempt_timeout: float | None, what: str) -> str | None:
    """Why ``attempt_timeout`` and ``breaker`` cannot work together, or None: a window shorter
    than two attempt timeouts cannot hold the outcome of a failed attempt and of its retry."""
    if breaker is None or attempt_timeout is None or breaker.window >= 2 * attempt_timeout:
        return None
    return (
        f"breaker.window ({breaker.window:g} s) is shorter than twice {what} ({attempt_timeout:g} s): "
        "the window could not hold the outcomes of an attempt that timed out and of its retry; "
        f"make the window at least {2 * attempt_timeout:g} s or the attempt timeout shorter"
    )


@dataclass(frozen=True, slots=True)
class CircuitStatus:
    """One circuit breaker in :meth:`RetryTransport.snapshot`: its state (``"closed"``, ``"open"``
    or ``"half-open"``), the seconds until it lets probes through (0 unless open), and counters
    since the transport was created: times it opened (from here or, shared, from another
    process), requests it failed fast, probes it let through; and the attempts and failures in
    its window now."""

    platform: str
    host: str | None  # None: the platform's one breaker; else the policy mapping's key
    state: str
    remaining: float
    opened: int
    rejected: int
    probes: int
    calls: float
    failures: int


@dataclass(frozen=True, slots=True)
class Opened:
    """A breaker just opened (or opened again, after a failed probe): what to log and publish."""

    breaker: Breaker
    seconds: float
    failures: int
    calls: float
    reopened: bool


class Breaker:
    """The state of one circuit breaker, changed under :class:`Breakers`' lock (except the
    success counter, see the module)."""

    __slots__ = (
        "_bad",
        "_ok",
        "_slots",
        "calls_now",
        "cause",
        "counted",
        "drained_at",
        "failures_now",
        "key",
        "opened",
        "platform",
        "probed",
        "probes_out",
        "rejected",
        "settings",
        "state",
        "successes",
        "until",
        "version",
        "wait",
        "width",
    )

    def __init__(self, platform: str, key: str, settings: CircuitBreaker, now: float) -> None:
        self.platform, self.key, self.settings = platform, key, settings
        self.successes = itertools.count()  # next() per success: no lock (see RetryCore.settle)
        self.counted = 0  # successes already moved into the window
        self.drained_at = now
        self.width = settings.window / _BUCKETS
        self._slots = [-1] * _BUCKETS  # which time slot each bucket holds
        self._ok = [0.0] * _BUCKETS
        self._bad = [0] * _BUCKETS
        self.state = CLOSED
        self.until = 0.0  # open until (the breakers' clock)
        self.wait = settings.open_for  # the next open period
        self.probes_out = 0
        self.cause: object = None  # the classification of the failure that opened it
        self.version = 0  # the shared record's version this state reflects
        self.opened = self.rejected = self.probed = 0
        self.calls_now, self.failures_now = 0.0, 0  # the window's totals at the last count

    @property
    def host(self) -> str | None:
        return None if self.key == "*" else self.key

    def _bucket(self, now: float) -> int:
        slot = int(now // self.width)
        i = slot % _BUCKETS
        if self._slots[i] != slot:
            self._slots[i], self._ok[i], self._bad[i] = slot, 0.0, 0
        return i

    def tally(self, now: float) -> None:
        """Under the lock: move the successes counted since the last tally into the window. They
        are taken as spread evenly since then, so after a quiet spell longer than the window
        only the window's share of them counts."""
        total = count_of(self.successes)
        new = total - self.counted
        if new:
            self.counted = total
            span = now - self.drained_at
            share = new if span <= self.settings.window else new * self.settings.window / span
            self._ok[self._bucket(now)] += share
        self.drained_at = now

    def fail(self, now: float) -> None:
        self.tally(now)
        self._bad[self._bucket(now)] += 1

    def totals(self, now: float) -> tuple[float, int]:
        """(attempts, failures) in the window now."""
        oldest = int(now // self.width) - _BUCKETS
        ok = sum(n for s, n in zip(self._slots, self._ok, strict=True) if s > oldest)
        bad = sum(n for s, n in zip(self._slots, self._bad, strict=True) if s > oldest)
        self.calls_now, self.failures_now = ok + bad, bad
        return ok + bad, bad

    def reset(self, now: float) -> None:
        """An empty window (closing starts afresh)."""
        self._slots = [-1] * _BUCKETS
        self._ok = [0.0] * _BUCKETS
        self._bad = [0] * _BUCKETS
        self.counted = count_of(self.successes)
        self.drained_at = now
        self.calls_now, self.failures_now = 0.0, 0


@runtime_checkable
class SharedBreakers(Protocol):
    """Circuit breakers shared between processes (``RedisTokenStore``). ``name`` is a store key
    (platform and app), ``key`` the breaker's (``"*"`` or a host). A record is ``(version,
    state, seconds left, open_for, classification)``; ``state`` is ``"open"`` or ``"closed"``.

    * ``breaker_open`` opens it for ``seconds`` unless it is open for longer already, and returns
      the record now stored;
    * ``breaker_close`` closes it and returns the new version;
    * ``breaker_probe`` asks to send one of ``probes`` probes once the open period is over:
      ``("probe" | "busy" | "open" | "closed", the record or None)``; a probe's claim lasts
      ``lease`` seconds;
    * ``breaker_pull`` returns every breaker of ``name``: ``{key: record}``.
    """

    def breaker_open(
        self, name: str, key: str, seconds: float, classification: object
    ) -> tuple[int, str, float, float, object]: ...

    def breaker_close(self, name: str, key: str) -> int: ...

    def breaker_probe(
        self, name: str, key: str, probes: int, lease: float
    ) -> tuple[str, tuple[int, str, float, float, object] | None]: ...

    def breaker_pull(self, name: str) -> dict[str, tuple[int, str, float, float, object]]: ...


Event = tuple[str, "Breaker", dict[str, Any]]  # ("circuit_opened" | "circuit_closed", breaker, fields)


class Breakers:
    """Every circuit breaker of one transport, keyed by (platform, key)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._all: dict[tuple[str, str], Breaker] = {}
        self._lock = threading.Lock()
        self._not_closed = 0
        # Every breaker closed: read without the lock by RetryCore.ready, which then skips the
        # breakers altogether (unless shared states are due to be pulled). Changed under the lock.
        self.quiet = True
        self.store: SharedBreakers | None = None  # set by share(): pull, publish and probe claims do store I/O
        self._names: Mapping[str, str] = {}
        self._guard: _Guard | None = None
        self.pull_gate = _Gate(1.0, clock)

    def add(self, platform: str, key: str, settings: CircuitBreaker | None) -> Breaker | None:
        """The breaker of (platform, key), made on first use; None when it is turned off."""
        if settings is None:
            return None
        with self._lock:
            breaker = self._all.get((platform, key))
            if breaker is None:
                breaker = self._all[platform, key] = Breaker(platform, key, settings, self.clock())
            return breaker

    def _state(self, b: Breaker, state: str) -> None:
        """Under the lock."""
        if (b.state == CLOSED) != (state == CLOSED):
            self._not_closed += 1 if state != CLOSED else -1
        b.state = state
        self.quiet = self._not_closed == 0

    # -- outcomes

    def admit(self, b: Breaker) -> tuple[str, float]:
        """May an attempt go? ``("pass", 0)`` (closed), ``("probe", 0)`` (half-open: this attempt
        is a probe), ``("open", seconds left)`` or ``("busy", 0)`` (half-open, its probes out)."""
        if b.state == CLOSED:
            return "pass", 0.0
        now = self.clock()
        with self._lock:
            if b.state == OPEN:
                if now < b.until:
                    b.rejected += 1
                    return "open", b.until - now
                self._state(b, HALF_OPEN)
                b.probes_out = 0
            if b.state == HALF_OPEN:
                if b.probes_out < b.settings.probes:
                    b.probes_out += 1
                    b.probed += 1
                    return "probe", 0.0
                b.rejected += 1
                return "busy", 0.0
            return "pass", 0.0

    def rejected(self, b: Breaker) -> None:
        with self._lock:
            b.rejected += 1

    def failure(self, b: Breaker, cause: object, probe: bool) -> Opened | None:
        """Record a failed attempt; an :class:`Opened` if it opened the breaker."""
        now = self.clock()
        with self._lock:
            b.fail(now)
            calls, bad = b.totals(now)
            if probe:
                b.probes_out = max(0, b.probes_out - 1)
                if b.state == HALF_OPEN:  # the probe failed: open again, for longer
                    b.wait = min(b.wait * 2, b.settings.longest)
                    return self._open(b, now, cause, bad, calls, reopened=True)
            if b.state == CLOSED and calls >= b.settings.min_calls and bad >= b.settings.failure_ratio * calls:
                b.wait = b.settings.open_for
                return self._open(b, now, cause, bad, calls, reopened=False)
        return None

    def _open(self, b: Breaker, now: float, cause: object, bad: int, calls: float, *, reopened: bool) -> Opened:
        self._state(b, OPEN)
        b.until = now + b.wait
        b.cause = cause
        b.opened += 1
        return Opened(b, b.wait, bad, calls, reopened)

    def answered(self, b: Breaker, probe: bool) -> bool:
        """Record an attempt the platform answered (a success, or an answer that is no failure
        of the platform's); True if that closed the breaker (the attempt was a probe)."""
        if not probe:
            if not next(b.successes) & _TALLY_EVERY:
                self.tally(b)
            return False
        with self._lock:
            b.probes_out = max(0, b.probes_out - 1)
            if b.state == CLOSED:
                return False
            self._close(b, self.clock())
            return True

    def _close(self, b: Breaker, now: float) -> None:
        self._state(b, CLOSED)
        b.wait = b.settings.open_for
        b.until = 0.0
        b.reset(now)

    def release(self, b: Breaker) -> None:
        """A probe ended without telling anything (cancelled, or never sent): free its place."""
        with self._lock:
            b.probes_out = max(0, b.probes_out - 1)

    def tally(self, b: Breaker) -> None:
        now = self.clock()
        with self._lock:
            b.tally(now)

    # -- sharing through a store

    def share(self, shared: SharedBreakers, names: Mapping[str, str], guard: _Guard, *, interval: float = 1.0) -> None:
        """Share the breakers of ``names`` (platform -> store key) through ``shared`` from now on."""
        self._names = dict(names)
        self._guard = guard
        self.pull_gate = _Gate(interval, self.clock)
        self.store = shared

    def shared(self, b: Breaker) -> bool:
        """Is this breaker's state shared (a store that answers)?"""
        guard = self._guard
        return self.store is not None and b.platform in self._names and guard is not None and guard.available()

    def claim_pull(self) -> bool:
        """True, for one caller per interval, when the shared states are due to be pulled."""
        return self.store is not None and self.pull_gate.claim()

    def _call(self, operation: str, call: Callable[[], Any]) -> Any:
        """A store call; None if the store failed (it is then skipped for a while)."""
        guard = self._guard
        assert guard is not None
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - a store that fails never fails a request
            guard.failed(exc, operation)
            return None
        guard.succeeded()
        return result

    def pull(self) -> list[Event]:
        """Take the states other processes published (the flow does it once per interval);
        the changes, to log."""
        shared, guard = self.store, self._guard
        events: list[Event] = []
        if shared is None or guard is None or not guard.available():
            return events
        for platform, name in self._names.items():
            records = self._call("breaker_pull", functools.partial(shared.breaker_pull, name))
            if records is None:
                return events
            for key, record in records.items():
                b = self._all.get((platform, key))
                if b is not None:
                    event = self._apply(b, record)
                    if event is not None:
                        events.append(event)
        return events

    def _apply(self, b: Breaker, record: tuple[int, str, float, float, object]) -> Event | None:
        """Take a shared record newer than what this breaker reflects."""
        version, state, left, open_for, cause = record
        now = self.clock()
        with self._lock:
            if version <= b.version:
                return None
            b.version = version
            if state == "open":
                was = b.state
                self._state(b, OPEN)
                b.until, b.wait, b.cause = now + max(0.0, left), open_for, cause if cause is not None else b.cause
                if was == CLOSED:
                    b.opened += 1
                    return "circuit_opened", b, {"seconds": round(left, 3), "shared": True}
                return None
            if b.state != CLOSED:
                self._close(b, now)
                return "circuit_closed", b, {"shared": True}
        return None

    def publish_open(self, b: Breaker, seconds: float, cause: object) -> None:
        """Tell the other processes (store I/O). The store keeps the longer of two open periods,
        so this breaker takes the record it answers with."""
        shared, name = self.store, self._names.get(b.platform)
        if shared is None or name is None or not self.shared(b):
            return
        record = self._call("breaker_open", functools.partial(shared.breaker_open, name, b.key, seconds, cause))
        if record is not None:
            self._apply(b, record)

    def publish_close(self, b: Breaker) -> None:
        shared, name = self.store, self._names.get(b.platform)
        if shared is None or name is None or not self.shared(b):
            return
        version = self._call("breaker_close", functools.partial(shared.breaker_close, name, b.key))
        if version is not None:
            with self._lock:
                b.version = max(b.version, int(version))

    def claim_probe(self, b: Breaker) -> tuple[str, float]:
        """A local probe asks the store whether it is this cluster's probe: ``("probe", 0)`` yes
        (or the store cannot say), ``("pass", 0)`` another process closed the breaker,
        ``("open", left)`` / ``("busy", left)`` no: its local place is freed and the breaker
        stays open here for ``left`` seconds before asking again."""
        shared, name = self.store, self._names.get(b.platform)
        if shared is None or name is None or not self.shared(b):
            return "probe", 0.0
        lease = b.settings.open_for
        ask = functools.partial(shared.breaker_probe, name, b.key, b.settings.probes, lease)
        reply = self._call("breaker_probe", ask)
        if reply is None:
            return "probe", 0.0
        verdict, record = reply
        if verdict == "probe":
            return "probe", 0.0
        now = self.clock()
        with self._lock:
            b.probes_out = max(0, b.probes_out - 1)
            b.probed = max(0, b.probed - 1)
            if verdict == "closed":
                if record is not None:
                    b.version = max(b.version, record[0])
                if b.state != CLOSED:
                    self._close(b, now)
                return "pass", 0.0
            b.rejected += 1
            left = record[2] if verdict == "open" and record is not None else 0.0
            hold = max(left, min(self.pull_gate.seconds, b.settings.open_for))  # ask again after this
            self._state(b, OPEN)
            b.until = now + hold
            return verdict, hold

    # -- reporting

    def status(self) -> list[CircuitStatus]:
        now = self.clock()
        with self._lock:
            out = []
            for b in self._all.values():
                b.tally(now)
                calls, bad = b.totals(now)
                remaining = round(max(0.0, b.until - now), 3) if b.state == OPEN else 0.0
                out.append(
                    CircuitStatus(
                        b.platform, b.host, b.state, remaining, b.opened, b.rejected, b.probed, round(calls, 3), bad
                    )
                )
            return out


def share_breakers(store: object, names: Mapping[str, str], guard: _Guard, breakers: Breakers) -> None:
    """Share a transport's circuit breakers through ``store`` if it can and wants to."""
    if isinstance(store, SharedBreakers) and getattr(store, "share_breakers", True):
        breakers.share(store, names, guard, interval=getattr(store, "sync_interval", 1.0))


def check_breaker(value: object) -> CircuitBreaker | str | None:
    """A transport's ``breaker=`` argument, checked."""
    if value is None or value == "table" or isinstance(value, CircuitBreaker):
        return value
    raise ConfigurationError(
        "breaker must be a retrypolicy.CircuitBreaker, None (no circuit breaker) or 'table' (each policy "
        f"table's [breaker] settings, the default), got {type(value).__name__}"
    )
