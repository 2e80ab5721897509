"""Overload protection: a retry budget (token bucket) and table-driven cooldowns, plus counters.

Both are small, thread-safe state holders the flow consults; they never sleep. The budget
follows gRPC's retry throttling and botocore's retry quota: every retry spends, every success
refills, and an empty bucket turns retryable failures into immediate give-ups, so that retries
cannot multiply the load of a platform that is down.

Both can be shared between processes through a store (:class:`SharedCooldowns`,
:class:`SharedBudgets`, e.g. ``RedisTokenStore``) with :meth:`Cooldowns.share` and
:meth:`Budgets.share`; the in-memory state stays the default and the fallback. The hot path
stays local: shared cooldowns are pulled at most every ``interval`` seconds, refills are pushed
at most every ``interval`` seconds, and only a retry (a spend) asks the store at once. A store
that fails is skipped (see ``_store.StoreGuard``) and the local state goes on alone.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._breaker import CircuitStatus

__all__ = [
    "ActiveCooldown",
    "Bucket",
    "Budgets",
    "Cooldowns",
    "RetryBudget",
    "SharedBudgets",
    "SharedCooldowns",
    "Snapshot",
    "Stats",
]


class _Guard(Protocol):  # _store.StoreGuard
    def available(self) -> bool: ...

    def failed(self, exc: BaseException, operation: str) -> None: ...

    def succeeded(self) -> None: ...


@runtime_checkable
class SharedCooldowns(Protocol):
    """Cooldowns shared between processes. ``name`` is a store key (platform and app).

    ``cooldown_pull`` returns the store's clock (an opaque number to pass back as ``since``) and
    the cooldowns started at or after ``since`` (all running ones when ``None``) that still run:
    ``(scope, key, seconds left, classification)``.
    """

    def cooldown_start(self, name: str, scope: str, key: str, seconds: float, classification: object) -> None: ...

    def cooldown_pull(self, name: str, since: float | None) -> tuple[float, list[tuple[str, str, float, object]]]: ...


@runtime_checkable
class SharedBudgets(Protocol):
    """A retry budget shared between processes: ``budget_take`` adds ``refill`` (up to
    ``capacity``), then takes ``cost`` if the level allows (``cost`` 0: refill only); returns
    (taken, the level after)."""

    def budget_take(self, name: str, capacity: float, cost: float, refill: float) -> tuple[bool, float]: ...


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """Settings of the retry budget: a bucket of ``capacity`` tokens per platform.

    A retry spends ``retry_cost``; a success adds ``refill`` (up to ``capacity``). With the
    defaults a total outage allows ``capacity`` retries in all, and a healthy platform earns one
    retry per ten successes.
    """

    capacity: float = 100.0
    retry_cost: float = 1.0
    refill: float = 0.1

    def __post_init__(self) -> None:
        for name in ("capacity", "retry_cost", "refill"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < float("inf"):
                raise ConfigurationError(f"RetryBudget.{name} must be a finite number >= 0, got {value!r}")
        if self.retry_cost <= 0:
            raise ConfigurationError("RetryBudget.retry_cost must be > 0")


def count_of(counter: itertools.count[int]) -> int:
    """The next value of an ``itertools.count()`` (how many ``next()`` calls it has had), read
    without taking it: its repr, ``count(N)``, is the one way to read a count unchanged."""
    return int(repr(counter)[6:-1])


class _Gate:
    """Lets one caller through per interval: store syncs happen once per ``seconds``, not per request."""

    __slots__ = ("_lock", "clock", "next_at", "seconds")

    def __init__(self, seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.next_at = 0.0  # when the next caller may pass; the first call passes
        self._lock = threading.Lock()

    def due(self) -> bool:
        return self.clock() >= self.next_at

    def claim(self) -> bool:
        """True for exactly one caller once the interval has passed (then the next one starts)."""
        with self._lock:
            now = self.clock()
            if now < self.next_at:
                return False
            self.next_at = now + self.seconds
            return True


class Bucket:
    """One platform's retry budget: its level, changed under :class:`Budgets`' lock.

    A success only counts itself (``next(successes)``: one call in C, no lock); the refills it
    earns are added to the level (and to ``pending``, for a shared budget) the next time the
    level is read or spent, in :meth:`Budgets._refill`.
    """

    __slots__ = ("counted", "level", "pending", "settings", "successes")

    def __init__(self, settings: RetryBudget) -> None:
        self.settings = settings
        self.level = settings.capacity
        self.pending = 0.0  # refills not yet pushed to a shared budget
        self.successes = itertools.count()
        self.counted = 0  # successes already added to the level


class Budgets:
    """One bucket per platform. Settings: the table's ``[budget]`` if it has one (``False``: off),
    else the transport's (``None``: off)."""

    def __init__(self, settings: RetryBudget | None) -> None:
        self.settings = settings
        self._buckets: dict[str, Bucket | None] = {}
        self._lock = threading.Lock()
        self.store: SharedBudgets | None = None  # set by share(): spend() and push() then do store I/O
        self._names: Mapping[str, str] = {}
        self._guard: _Guard | None = None
        self.push_gate = _Gate()

    def share(
        self,
        shared: SharedBudgets,
        names: Mapping[str, str],
        guard: _Guard,
        *,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Keep the buckets of ``names`` (platform -> store key) in ``shared`` from now on."""
        self._names = dict(names)
        self._guard = guard
        self.push_gate = _Gate(interval, clock)
        self.store = shared

    def _take(self, platform: str, bucket: Bucket, cost: float) -> bool | None:
        """Ask the shared budget (pushing the pending refills); None if it cannot answer."""
        shared, guard, name = self.store, self._guard, self._names.get(platform)
        if shared is None or guard is None or name is None or not guard.available():
            return None
        with self._lock:
            self._refill(bucket)
            pending, bucket.pending = bucket.pending, 0.0
        settings = bucket.settings
        try:
            taken, level = shared.budget_take(name, settings.capacity, cost, pending)
        except Exception as exc:  # noqa: BLE001 - a store that fails never fails a request
            guard.failed(exc, "budget")
            with self._lock:
                bucket.pending += pending
            return None
        guard.succeeded()
        with self._lock:
            bucket.level = level
        return taken

    def bucket(self, platform: str, table: object = None) -> Bucket | None:
        """The platform's bucket (created on first use); None when its budget is off."""
        try:
            return self._buckets[platform]
        except KeyError:
            settings = table if isinstance(table, RetryBudget) else None if table is False else self.settings
            with self._lock:
                return self._buckets.setdefault(platform, None if settings is None else Bucket(settings))

    def spend(self, platform: str, table: object = None) -> bool:
        """Take one retry's cost; False (and nothing taken) when the bucket cannot pay."""
        bucket = self.bucket(platform, table)
        if bucket is None:
            return True
        if self.store is not None:
            taken = self._take(platform, bucket, bucket.settings.retry_cost)
            if taken is not None:
                return taken
        with self._lock:
            self._refill(bucket)
            if bucket.level < bucket.settings.retry_cost:
                return False
            bucket.level -= bucket.settings.retry_cost
            return True

    def success(self, platform: str, table: object = None) -> None:
        """Count a success; its refill reaches the level when next read, a shared budget at the
        next :meth:`push`."""
        bucket = self.bucket(platform, table)
        if bucket is not None:
            next(bucket.successes)

    def _refill(self, bucket: Bucket) -> None:
        """Under the lock: add the refills of the successes counted since the last call."""
        total = count_of(bucket.successes)
        new, bucket.counted = total - bucket.counted, total
        if new:
            refill = new * bucket.settings.refill
            bucket.level = min(bucket.settings.capacity, bucket.level + refill)
            if self.store is not None:
                bucket.pending += refill

    def claim_push(self) -> bool:
        """True, for one caller per interval, when the refills are due to be pushed (:meth:`push`)."""
        return self.store is not None and self.push_gate.claim()

    def push(self) -> None:
        """Push the pending refills of every bucket to the shared budget now."""
        for platform, bucket in list(self._buckets.items()):
            if bucket is not None and (bucket.pending > 0 or count_of(bucket.successes) > bucket.counted):
                self._take(platform, bucket, 0.0)

    def levels(self) -> dict[str, float]:
        with self._lock:
            buckets = [(p, b) for p, b in self._buckets.items() if b is not None]
            for _, bucket in buckets:
                self._refill(bucket)
            return {p: round(b.level, 3) for p, b in buckets}


@dataclass(frozen=True, slots=True)
class ActiveCooldown:
    """A running cooldown: requests in its scope fail fast until it ends."""

    platform: str
    scope: str  # "app" or "recipient"
    key: str  # "" for the app, else the recipient id
    code: int | None
    remaining: float


class Cooldowns:
    """Cooldowns started by table rules, keyed by (platform, scope, key)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._until: dict[tuple[str, str, str], tuple[float, object]] = {}
        self._lock = threading.Lock()
        self.clock = clock
        self.store: SharedCooldowns | None = None  # set by share(): pull() and publish() then do store I/O
        self._names: Mapping[str, str] = {}
        self._guard: _Guard | None = None
        self.pull_gate = _Gate(1.0, clock)
        self._since: dict[str, float] = {}
        # No cooldown recorded here: read without the lock by RetryCore.ready, which then skips
        # the cooldown checks (unless shared ones are due to be pulled). Changed under the lock.
        self.quiet = True
        self._soonest = math.inf  # when the first of the recorded cooldowns ends

    def share(self, shared: SharedCooldowns, names: Mapping[str, str], guard: _Guard, *, interval: float = 1.0) -> None:
        """Share the cooldowns of ``names`` (platform -> store key) through ``shared`` from now on:
        starts are written at once, others' starts are read at most every ``interval`` seconds."""
        self._names = dict(names)
        self._guard = guard
        self.pull_gate = _Gate(interval, self.clock)
        self.store = shared

    @property
    def running(self) -> bool:
        """Whether a cooldown may be running here, or the shared ones are due to be pulled.
        No I/O: the flow has the driver call :meth:`pull`."""
        return not self.quiet or self.pull_due()

    def pull_due(self) -> bool:
        """Are the shared cooldowns due to be pulled? (No I/O; :meth:`claim_pull` claims it.)"""
        return self.store is not None and self.pull_gate.due()

    def claim_pull(self) -> bool:
        """True, for one caller per interval, when the shared cooldowns are due to be pulled."""
        return self.store is not None and self.pull_gate.claim()

    def pull(self) -> None:
        """Read the cooldowns other processes started (the flow does it once per interval,
        after :meth:`claim_pull`)."""
        shared, guard = self.store, self._guard
        if shared is None or guard is None or not guard.available():
            return
        for platform, name in self._names.items():
            try:
                now, entries = shared.cooldown_pull(name, self._since.get(name))
            except Exception as exc:  # noqa: BLE001 - a store that fails never fails a request
                guard.failed(exc, "cooldown_pull")
                return
            guard.succeeded()
            self._since[name] = now
            for scope, key, left, classification in entries:
                self._start(platform, scope, key, left, classification)

    def start(self, platform: str, scope: str, key: str, seconds: float, classification: object) -> bool:
        """Start a cooldown here. True when it should also be published to the shared store:
        the caller then calls :meth:`publish` with the same arguments."""
        self._start(platform, scope, key, seconds, classification)
        return self.store is not None and platform in self._names

    def publish(self, platform: str, scope: str, key: str, seconds: float, classification: object) -> None:
        """Tell the other processes about a cooldown (store I/O; a failing store is skipped)."""
        shared, guard, name = self.store, self._guard, self._names.get(platform)
        if shared is not None and guard is not None and name is not None and guard.available():
            try:
                shared.cooldown_start(name, scope, key, seconds, classification)
            except Exception as exc:  # noqa: BLE001 - a store that fails never fails a request
                guard.failed(exc, "cooldown_start")
            else:
                guard.succeeded()

    def _start(self, platform: str, scope: str, key: str, seconds: float, classification: object) -> None:
        until = self.clock() + seconds
        with self._lock:
            current = self._until.get((platform, scope, key))
            if current is None or current[0] < until:
                self._until[(platform, scope, key)] = (until, classification)
                self._soonest = min(self._soonest, until)
            self.quiet = False

    def blocking(self, platform: str, recipient: str | None) -> tuple[float, object, str] | None:
        """(seconds left, the classification that started it, scope) if a cooldown blocks a request."""
        if not self._until:
            return None
        now = self.clock()
        with self._lock:
            if now >= self._soonest:  # one has ended: drop every ended one (so quiet can come back)
                self._until = {k: v for k, v in self._until.items() if v[0] > now}
                self._soonest = min((v[0] for v in self._until.values()), default=math.inf)
                self.quiet = not self._until
            for scope, key in (("app", ""), ("recipient", recipient)):
                if key is None:
                    continue
                entry = self._until.get((platform, scope, key))
                if entry is not None:
                    return entry[0] - now, entry[1], scope
        return None

    def active(self) -> list[ActiveCooldown]:
        now = self.clock()
        with self._lock:
            items = [(k, v) for k, v in self._until.items() if v[0] > now]
        return [
            ActiveCooldown(p, scope, key, getattr(c, "code", None), round(until - now, 3))
            for (p, scope, key), (until, c) in items
        ]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counters of one transport since it was created (see :meth:`RetryTransport.snapshot`)."""

    requests: int
    attempts: int
    retries: int
    renewals: int
    succeeded: int
    gave_up: dict[str, int]
    budget: dict[str, float]
    cooldowns: list[ActiveCooldown]
    circuits: list[CircuitStatus] = field(default_factory=list)  # each circuit breaker: state and counters


@dataclass
class Stats:
    """Mutable counters behind :class:`Snapshot`, updated under a lock.

    Requests that succeed at their first attempt without the flow (the drivers' fast path) are
    counted by ``first_try`` instead: ``next()`` on an ``itertools.count`` is one call in C that
    the GIL never interrupts, so the success path takes no lock. They count once in
    ``requests``, ``attempts`` and ``succeeded`` each.
    """

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    renewals: int = 0
    succeeded: int = 0
    gave_up: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    first_try: itertools.count[int] = field(default_factory=itertools.count)

    def first_tries(self) -> int:
        """How many requests ``first_try`` has counted, without counting one more."""
        return count_of(self.first_try)
