"""Overload protection: a retry budget (token bucket) and table-driven cooldowns, plus counters.

Both are small, thread-safe state holders the flow consults; they never sleep or log. The budget
follows gRPC's retry throttling and botocore's retry quota: every retry spends, every success
refills, and an empty bucket turns retryable failures into immediate give-ups, so that retries
cannot multiply the load of a platform that is down.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ._errors import ConfigurationError

__all__ = ["ActiveCooldown", "Cooldowns", "RetryBudget", "Snapshot", "Stats"]


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


class _Bucket:
    __slots__ = ("level", "settings")

    def __init__(self, settings: RetryBudget) -> None:
        self.settings = settings
        self.level = settings.capacity


class Budgets:
    """One bucket per platform. Settings: the table's ``[budget]`` if it has one (``False``: off),
    else the transport's (``None``: off)."""

    def __init__(self, settings: RetryBudget | None) -> None:
        self.settings = settings
        self._buckets: dict[str, _Bucket | None] = {}
        self._lock = threading.Lock()

    def _bucket(self, platform: str, table: object = None) -> _Bucket | None:
        try:
            return self._buckets[platform]
        except KeyError:
            settings = table if isinstance(table, RetryBudget) else None if table is False else self.settings
            with self._lock:
                return self._buckets.setdefault(platform, None if settings is None else _Bucket(settings))

    def spend(self, platform: str, table: object = None) -> bool:
        """Take one retry's cost; False (and nothing taken) when the bucket cannot pay."""
        bucket = self._bucket(platform, table)
        if bucket is None:
            return True
        with self._lock:
            if bucket.level < bucket.settings.retry_cost:
                return False
            bucket.level -= bucket.settings.retry_cost
            return True

    def success(self, platform: str, table: object = None) -> None:
        bucket = self._bucket(platform, table)
        if bucket is not None and bucket.level < bucket.settings.capacity:
            with self._lock:
                bucket.level = min(bucket.settings.capacity, bucket.level + bucket.settings.refill)

    def levels(self) -> dict[str, float]:
        with self._lock:
            return {p: round(b.level, 3) for p, b in self._buckets.items() if b is not None}


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

    def __bool__(self) -> bool:
        return bool(self._until)

    def start(self, platform: str, scope: str, key: str, seconds: float, classification: object) -> None:
        until = self.clock() + seconds
        with self._lock:
            current = self._until.get((platform, scope, key))
            if current is None or current[0] < until:
                self._until[(platform, scope, key)] = (until, classification)

    def blocking(self, platform: str, recipient: str | None) -> tuple[float, object, str] | None:
        """(seconds left, the classification that started it, scope) if a cooldown blocks a request."""
        if not self._until:
            return None
        now = self.clock()
        with self._lock:
            for scope, key in (("app", ""), ("recipient", recipient)):
                if key is None:
                    continue
                entry = self._until.get((platform, scope, key))
                if entry is None:
                    continue
                if entry[0] <= now:
                    del self._until[(platform, scope, key)]
                    continue
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


@dataclass
class Stats:
    """Mutable counters behind :class:`Snapshot`, updated under a lock."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    renewals: int = 0
    succeeded: int = 0
    gave_up: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
