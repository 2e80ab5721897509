"""Token stores: where the current token lives, and who may renew it.

A :class:`TokenStore` lets several transports — in one process or in many — share one token and
renew it once. The token managers (``_token.py``) keep their own copy of the token for the hot
path (no store round trip per request) and talk to the store only when that copy is missing,
near its expiry or rejected by the platform:

1. :meth:`~TokenStore.claim`: in one atomic step, return the stored token if it is fresh and not
   the one the platform just rejected; otherwise take the renewal lock (a lease) if it is free.
   While another renewer holds the lock, the manager polls ``claim`` with a bound.
2. The lock holder calls the hook, then :meth:`~TokenStore.publish` stores the new token with
   compare-and-swap (only over the token it saw, or none) and releases the lock; or
   :meth:`~TokenStore.fail` records the failure, so that the renewers that waited on it fail too
   instead of calling a failing hook one by one, and releases the lock. A failure never touches
   the stored token.
3. Locks are leases: a holder that dies leaves a lock that expires, and the next claim takes it.

``calls`` is the store's count of renewal attempts; a failure recorded with a count above the one
a renewer saw when it started is the failure of a renewal it waited on (the same rule as the
process-local bookkeeping in ``_token._TokenState``).

:class:`MemoryTokenStore` keeps all this in a process (to share one token between several
transports); ``retrypolicy.RedisTokenStore`` in Redis, for many processes and machines. Without a
store a transport keeps its token to itself, as it always did.

If a store raises, the manager renews process-locally and :class:`StoreGuard` logs
``retrypolicy.store_unavailable`` once per outage; requests never fail because a store is down.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ._errors import ConfigurationError
from ._log import as_logger
from ._overload import Budgets, Cooldowns, SharedBudgets, SharedCooldowns
from ._policy import Category, Classification, Cooldown

__all__ = [
    "Claim",
    "MemoryTokenStore",
    "SharedError",
    "StoreGuard",
    "StoredToken",
    "TokenStore",
    "check_store",
    "share_state",
    "store_key",
    "store_keys",
]

_KEY_ATTRIBUTES = ("appid", "sdkappid", "identifier", "username", "corpid", "agent", "app_id", "appkey")
"""Non-secret attributes of a hook that tell apps apart (the built-in hooks have them; WeCom's
``corpid`` and ``agent``, the agentid or a fingerprint of the secret, tell two apps of one corp apart)."""


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token as a store keeps it. ``repr`` never shows the value.

    ``expires_in``: seconds left (``None``: unknown, never expires in the store);
    ``lifetime``: the whole lifetime it was issued with (for the renewal margin).
    """

    value: str = field(repr=False)
    expires_in: float | None = None
    lifetime: float | None = None

    def __repr__(self) -> str:
        return f"StoredToken(value='***', expires_in={self.expires_in!r}, lifetime={self.lifetime!r})"

    def fresh(self, stale: str | None) -> bool:
        """Not ``stale`` and outside its renewal margin (``min(300 s, lifetime / 10)``)."""
        if self.value == stale:
            return False
        if self.expires_in is None:
            return True
        margin = min(300.0, (self.lifetime or 0.0) / 10)
        return self.expires_in > margin


@dataclass(frozen=True, slots=True)
class SharedError:
    """A failed renewal as a store records it: safe text (never a secret) and the verdict."""

    calls: int
    message: str
    classification: Classification | None = None

    def encode(self) -> str:
        c = self.classification.as_dict() if self.classification is not None else None
        return json.dumps({"message": self.message, "classification": c}, separators=(",", ":"))

    @classmethod
    def decode(cls, calls: int, text: str) -> SharedError:
        try:
            raw = json.loads(text)
            message = str(raw["message"])
            c = raw.get("classification")
        except (ValueError, KeyError, TypeError):
            return cls(calls, "token renewal failed in another process")
        return cls(calls, message, decode_classification(c))


def decode_classification(raw: object) -> Classification | None:
    """A :class:`Classification` back from ``Classification.as_dict()`` (``None`` if unreadable)."""
    if not isinstance(raw, Mapping):
        return None
    try:
        fields = dict(raw)
        fields["category"] = Category(fields["category"])
        cd = fields.get("cooldown")
        fields["cooldown"] = Cooldown(**cd) if isinstance(cd, Mapping) else None
        return Classification(**fields)
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer of :meth:`TokenStore.claim`.

    ``status``: ``"fresh"`` (use ``token``), ``"acquired"`` (the caller holds the renewal lock
    and should call the hook; ``token`` is what the store had), ``"busy"`` (another renewer holds
    it: poll again). ``calls``: renewal attempts so far (after this one, when acquired).
    ``error``: the last failure, if it is still recorded.
    """

    status: Literal["fresh", "acquired", "busy"]
    calls: int
    token: StoredToken | None = None
    error: SharedError | None = None


@runtime_checkable
class TokenStore(Protocol):
    """Where the current token of an app lives and who may renew it (see the module docs).

    ``key`` names one app of one platform (see :func:`store_key`); ``owner`` is a random id per
    renewal. The ``a``-prefixed twins are used by :class:`~retrypolicy.AsyncRetryTransport`.
    Any exception makes the transport fall back to process-local renewal.
    """

    def claim(self, key: str, owner: str, lease: float, stale: str | None) -> Claim: ...

    def publish(self, key: str, owner: str, expected: str | None, token: StoredToken) -> StoredToken | None:
        """Store ``token`` if the stored one is still ``expected`` (or gone) and release the lock.

        Returns ``None`` when stored, else the fresher token someone else stored meanwhile.
        """
        ...

    def fail(self, key: str, owner: str, error: SharedError) -> None: ...

    def release(self, key: str, owner: str) -> None: ...

    async def aclaim(self, key: str, owner: str, lease: float, stale: str | None) -> Claim: ...

    async def apublish(self, key: str, owner: str, expected: str | None, token: StoredToken) -> StoredToken | None: ...

    async def afail(self, key: str, owner: str, error: SharedError) -> None: ...

    async def arelease(self, key: str, owner: str) -> None: ...


def store_key(platform: str, hook: object, explicit: str | None = None) -> str:
    """The name of one app's token in a store: ``<platform>:<app>``, never a secret.

    ``<app>`` is ``explicit`` if given, else the hook's non-secret ``appid`` / ``sdkappid`` /
    ``identifier`` / ``username`` / ``corpid`` / ``agent`` / ``app_id`` / ``appkey`` attributes
    (the built-in hooks have them), else nothing: a plain function hook is keyed by its
    platform alone.
    """
    if explicit is not None:
        return f"{platform}:{explicit}"
    parts = []
    for name in _KEY_ATTRIBUTES:
        value = getattr(hook, name, None)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            parts.append(str(value))
    return ":".join([platform, *parts])


def check_key(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ConfigurationError(f"{what} must be a non-empty str without spaces, got {value!r}")
    return value


# -- the in-process store ----------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    token: tuple[str, float | None, float | None] | None = None  # value, lifetime, expires_at
    lock: tuple[str, float] | None = None  # owner, lease end
    calls: int = 0
    error: tuple[SharedError, float] | None = None  # failure, forgotten at


class MemoryTokenStore:
    """A token store in this process: several transports (sync and async) share one token.

    Thread-safe; its async methods never block. Without ``token_store=`` a transport keeps its
    token to itself, which behaves the same for one transport.
    """

    ERROR_TTL = 60.0

    def __init__(self, *, key: str | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.key = check_key(key, "key")
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryTokenStore(keys={len(self._entries)})"

    def _entry(self, key: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        return entry

    def _stored(self, entry: _Entry, now: float) -> StoredToken | None:
        if entry.token is None:
            return None
        value, lifetime, expires_at = entry.token
        if expires_at is not None and now >= expires_at:
            entry.token = None
            return None
        return StoredToken(value, None if expires_at is None else expires_at - now, lifetime)

    def claim(self, key: str, owner: str, lease: float, stale: str | None) -> Claim:
        with self._lock:
            now = self._clock()
            entry = self._entry(key)
            token = self._stored(entry, now)
            if entry.error is not None and entry.error[1] <= now:
                entry.error = None
            error = entry.error[0] if entry.error is not None else None
            if token is not None and token.fresh(stale):
                return Claim("fresh", entry.calls, token, error)
            if entry.lock is not None and entry.lock[1] > now:
                return Claim("busy", entry.calls, token, error)
            entry.lock = (owner, now + lease)
            entry.calls += 1
            return Claim("acquired", entry.calls, token, error)

    def publish(self, key: str, owner: str, expected: str | None, token: StoredToken) -> StoredToken | None:
        with self._lock:
            now = self._clock()
            entry = self._entry(key)
            current = self._stored(entry, now)
            self._release(entry, owner)
            if current is not None and current.value != expected:
                return current
            expires_at = None if token.expires_in is None else now + token.expires_in
            entry.token = (token.value, token.lifetime, expires_at)
            entry.error = None
            return None

    def fail(self, key: str, owner: str, error: SharedError) -> None:
        with self._lock:
            entry = self._entry(key)
            entry.error = (error, self._clock() + self.ERROR_TTL)
            self._release(entry, owner)

    def release(self, key: str, owner: str) -> None:
        with self._lock:
            self._release(self._entry(key), owner)

    @staticmethod
    def _release(entry: _Entry, owner: str) -> None:
        if entry.lock is not None and entry.lock[0] == owner:
            entry.lock = None

    async def aclaim(self, key: str, owner: str, lease: float, stale: str | None) -> Claim:
        return self.claim(key, owner, lease, stale)

    async def apublish(self, key: str, owner: str, expected: str | None, token: StoredToken) -> StoredToken | None:
        return self.publish(key, owner, expected, token)

    async def afail(self, key: str, owner: str, error: SharedError) -> None:
        self.fail(key, owner, error)

    async def arelease(self, key: str, owner: str) -> None:
        self.release(key, owner)


# -- availability ------------------------------------------------------------------------------


def describe_store(store: object) -> str:
    """A safe description of a store (its own ``describe()``, which redacts, or its type)."""
    describe = getattr(store, "describe", None)
    if callable(describe):
        try:
            return str(describe())
        except Exception:  # noqa: BLE001 - a description must never fail a request
            pass
    return type(store).__name__


def _cause(exc: BaseException) -> str | None:
    """What lies under ``exc``, by name: the innermost exception of its chain (redis-py wraps
    socket and TLS errors in its own ConnectionError), with OpenSSL's reason for a TLS error, as
    in ``SSLCertVerificationError: CERTIFICATE_VERIFY_FAILED``. Only a type name and OpenSSL's
    constant, never an exception's text, which may hold a URL. None when nothing lies under."""
    inner = exc
    for _ in range(8):  # a chain is short; a cycle or a long one stops here
        under = inner.__cause__ or inner.__context__
        if under is None:
            break
        inner = under
    if inner is exc:
        return None
    reason = inner.reason if isinstance(inner, ssl.SSLError) else None
    return f"{type(inner).__name__}: {reason}" if isinstance(reason, str) and reason else type(inner).__name__


RENEWAL_FLOOR = 5.0
"""While the store is down, a token manager calls its hook at most once per this many seconds,
unless its current token has carried a success since (see ``_token._ManagerBase._local``)."""


def _fight(floor: float) -> str:
    return (
        "without the store each process renews its token on its own: token hooks that issue a new token on "
        "every call (WeChat /cgi-bin/token: WeChatTokenHook(stable=False) or force_refresh=True) invalidate "
        "the other processes' tokens, which renew in turn and fight each other; so until the store is back "
        f"each process renews at most once per {floor:g} s unless its token worked since. "
        "WeChatTokenHook(stable=True) returns the current token and does not fight"
    )


class StoreGuard:
    """Tracks whether a store answers: after a failure it is skipped for ``retry_after`` seconds.

    Logs ``retrypolicy.store_unavailable`` (warning: the store, the operation, the error type —
    never its text, which may hold a URL — and, as ``cause``, the type of the error under it,
    with OpenSSL's reason for a TLS error; ``renewal_floor`` and a ``hint`` that hooks issuing a
    new token on every call fight each other without the store) when a store stops answering, and
    ``retrypolicy.store_recovered`` (info) when it answers again. Thread-safe enough: its state
    is two plain fields, and a lost race only repeats a check.
    """

    def __init__(
        self,
        store: object,
        *,
        logger: Any = None,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        renewal_floor: float = RENEWAL_FLOOR,
    ) -> None:
        self.store = store
        self.renewal_floor = renewal_floor
        self.log = as_logger(logger)
        self.retry_after = retry_after
        self.clock = clock
        self.down_until: float | None = None  # None: up
        self.failures = 0

    def available(self) -> bool:
        until = self.down_until
        return until is None or self.clock() >= until

    def failed(self, exc: BaseException, operation: str) -> None:
        self.failures += 1
        first = self.down_until is None
        self.down_until = self.clock() + self.retry_after
        if first:
            cause = _cause(exc)
            self.log.warning(
                "retrypolicy.store_unavailable",
                store=describe_store(self.store),
                operation=operation,
                error=type(exc).__name__,
                fallback="process-local",
                renewal_floor=self.renewal_floor,
                hint=_fight(self.renewal_floor),
                retry_in=self.retry_after,
                **({"cause": cause} if cause is not None else {}),
            )

    def succeeded(self) -> None:
        if self.down_until is not None:
            self.down_until = None
            self.log.info("retrypolicy.store_recovered", store=describe_store(self.store))


def store_keys(store: object, platforms: Collection[str], hooks: Mapping[str, object]) -> dict[str, str]:
    """The store key of each platform of a transport (see :func:`store_key`)."""
    explicit = getattr(store, "key", None)
    return {p: store_key(p, hooks.get(p), explicit if isinstance(explicit, str) else None) for p in platforms}


def check_store(store: object) -> TokenStore | None:
    if store is not None and not isinstance(store, TokenStore):
        raise ConfigurationError(
            "token_store must be a retrypolicy.TokenStore (MemoryTokenStore, RedisTokenStore), "
            f"got {type(store).__name__}"
        )
    return store


def share_state(
    store: object, names: Mapping[str, str], guard: StoreGuard, budgets: Budgets, cooldowns: Cooldowns
) -> None:
    """Share a transport's retry budget and cooldowns through ``store`` if it can and wants to."""
    interval = getattr(store, "sync_interval", 1.0)
    if isinstance(store, SharedCooldowns) and getattr(store, "share_cooldowns", True):
        cooldowns.share(store, names, guard, interval=interval)
    if isinstance(store, SharedBudgets) and getattr(store, "share_budget", True):
        budgets.share(store, names, guard, interval=interval, clock=cooldowns.clock)  # one clock: see RetryCore.ready
