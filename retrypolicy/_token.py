"""Tokens and single-flight renewal.

The bookkeeping (which token is current, whether a failed request needs a new one, how a hook's
answer is checked) lives in :class:`_TokenState`, shared by the thread-safe
:class:`TokenManager` and the task-safe :class:`AsyncTokenManager`; those two only add a lock,
a timeout and the way they call the hook.

With a :class:`~retrypolicy.TokenStore` (``_store.py``) the renewal is single-flight across
processes too: :meth:`_ManagerBase._renewal` is a sans-IO generator (claim the store's lock or
its fresh token, wait, call the hook, publish or record the failure) that both managers drive,
with :class:`_Run` doing all of the driving that is not I/O (their drivers differ only in ``await``).
The hot path never touches the store: a manager keeps its own copy of the token and asks the
store only when that copy is missing, near expiry or rejected. If the store fails, the renewal
goes on process-locally.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeAlias, TypedDict, Unpack, runtime_checkable

import anyio
import anyio.to_thread

from ._errors import ConfigurationError
from ._policy import Classification
from ._redact import scrub
from ._store import Claim, SharedError, StoredToken, StoreGuard, TokenStore

__all__ = ["AsyncTokenHook", "AsyncTokenManager", "Token", "TokenHook", "TokenHookError", "TokenManager"]


@dataclass(frozen=True, slots=True)
class Token:
    """A credential and, if known, its lifetime in seconds. ``repr`` never shows the value."""

    value: str = field(repr=False)
    expires_in: float | None = None

    def __repr__(self) -> str:
        return f"Token(value='***', expires_in={self.expires_in!r})"


TokenResult: TypeAlias = "str | Token"


@runtime_checkable
class TokenHook(Protocol):
    """Returns a fresh credential. Called once per renewal, never concurrently."""

    def __call__(self) -> str | Token: ...


@runtime_checkable
class AsyncTokenHook(Protocol):
    """An async token hook: ``async def hook() -> str | Token``."""

    def __call__(self) -> Awaitable[str | Token]: ...


AnyTokenHook: TypeAlias = Callable[[], "str | Token | Awaitable[str | Token]"]


_HOOK_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("retrypolicy_hook_deadline", default=None)
"""While a transport's token manager runs a hook: when its ``token_timeout`` ends (``time.monotonic()``)."""


def hook_deadline() -> float | None:
    """When the token hook running now must have returned (``time.monotonic()`` seconds), if a
    transport called it: the built-in hooks retry a failed token endpoint call until then. None
    when the hook was called directly."""
    return _HOOK_DEADLINE.get()


class TokenHookError(Exception):
    """Internal: the hook failed; the message is safe to show (it never holds the token).

    ``classification`` is the platform's verdict when the hook got an error code from its token
    endpoint (the built-in hooks attach it: 40164 is user-action, 40125 fatal...).
    """

    def __init__(self, message: str, classification: Classification | None = None) -> None:
        super().__init__(message)
        self.classification = classification

    def copy(self) -> TokenHookError:
        return TokenHookError(str(self), self.classification)


@dataclass(slots=True)
class _TokenState:
    clock: Callable[[], float]
    value: str | None = None
    expires_at: float | None = None
    lifetime: float | None = None
    calls: int = 0  # renewals finished so far, failed or not (a generation: see begin)
    last_error: TokenHookError | None = None
    rejected: deque[str] = field(default_factory=lambda: deque(maxlen=16))  # recent tokens a platform refused
    proven: bool = False  # the current token carried a success (set once per token, read without a lock)
    worked: deque[str] = field(default_factory=lambda: deque(maxlen=64))  # earlier tokens that carried one (a request
    # renews at most RENEWAL_CAP, 64, times: it never asks about a token older than these)
    proofs: int = 0  # how many tokens have carried a first success: a hook whose tokens never work keeps it still
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=4))  # the last tokens installed, newest last

    def carried(self, token: str | None) -> bool:
        """Did ``token`` carry a success? A refused token that did expired or was replaced
        after working; one that did not may be refused the moment it is issued (a loop)."""
        if token is None:
            return False
        return self.proven if token == self.value else token in self.worked

    def hook_works(self) -> bool:
        """Has one of the last few tokens the hook gave carried a success? A hook whose every
        token the platform refuses (the loop ``max_renewals`` stops) never makes this true."""
        return any(self.carried(t) for t in self.recent)

    def succeeded(self, token: str | None) -> None:
        """A request succeeded with ``token`` (``None``: with the current one)."""
        if token is None or token == self.value:
            if not self.proven:
                self.proven = True
                self.proofs += 1
        elif token not in self.worked:
            self.worked.append(token)
            self.proofs += 1

    def _install(self, value: str) -> None:
        if value == self.value:
            return
        if self.proven and self.value is not None and self.value not in self.worked:
            self.worked.append(self.value)
        self.value = value
        self.proven = False
        self.recent.append(value)

    def is_rejected(self, token: str) -> bool:
        """Was this token refused and replaced? Requests still carrying it get the current one."""
        return token != self.value and token in self.rejected

    def _reject(self, stale: str | None) -> None:
        if stale is not None and stale not in self.rejected:
            self.rejected.append(stale)

    def fresh(self) -> str | None:
        """The current token unless missing or within its renewal margin."""
        if self.value is None:
            return None
        if self.expires_at is not None and self.lifetime is not None:
            margin = min(300.0, self.lifetime / 10)
            if self.clock() >= self.expires_at - margin:
                return None
        return self.value

    def usable(self) -> str | None:
        """The current token if it has not expired yet (it may be inside its margin)."""
        if self.value is None or (self.expires_at is not None and self.clock() >= self.expires_at):
            return None
        return self.value

    def needs_hook(self, stale: str | None) -> bool:
        """Does a request that failed with (or lacks) ``stale`` need the hook to run?"""
        current = self.fresh()
        return current is None or current == stale

    def accept(self, result: object, stale: str | None) -> str:
        if isinstance(result, Token):
            value, expires_in = result.value, result.expires_in
        else:
            value, expires_in = result, None  # type: ignore[assignment]  # checked below
        if not isinstance(value, str):
            raise TokenHookError(f"token hook returned {type(value).__name__}, expected str or retrypolicy.Token")
        value = value.strip()  # a token read from a file or an environment variable ends in "\n"
        if not value:
            raise TokenHookError("token hook returned an empty token")
        bad = _bad_character(value)
        if bad is not None:  # httpx would refuse the header or mangle the URL: say so, never the value
            raise TokenHookError(f"token hook returned a token containing {bad}; a token is one printable word")
        if stale is not None and value == stale:
            raise TokenHookError("token hook returned the same token the platform just rejected")
        if expires_in is not None and (not isinstance(expires_in, (int, float)) or expires_in <= 0):
            raise TokenHookError(f"token hook returned an invalid expires_in {expires_in!r}")
        self._reject(stale)
        self._install(value)
        self.lifetime = float(expires_in) if expires_in is not None else None
        self.expires_at = self.clock() + expires_in if expires_in is not None else None
        self.last_error = None
        self.calls += 1
        return value

    def adopt(self, token: StoredToken, stale: str | None) -> str:
        """Take a token another renewer stored (no hook call here)."""
        if stale != token.value:
            self._reject(stale)
        self._install(token.value)
        self.lifetime = token.lifetime
        self.expires_at = self.clock() + token.expires_in if token.expires_in is not None else None
        self.last_error = None
        self.calls += 1
        return token.value

    def begin(self, stale: str | None, seen: int) -> str | None:
        """Under the lock: a token if no hook call is needed, else None.

        ``seen`` is the count of finished renewals before waiting for the lock: if a renewal
        finished meanwhile (even one already running when this request came) and failed, its
        error is raised here, so waiters do not call a failing hook one by one.
        """
        if not self.needs_hook(stale):
            if stale is not None and stale != self.value:
                self._reject(stale)
            return self.value
        if self.calls != seen and self.last_error is not None:
            raise self.last_error.copy()
        return None

    def fail(self, error: TokenHookError, stale: str | None) -> str:
        """Record a failed hook call; return a still-valid token for a proactive renewal, or raise."""
        self.last_error = error
        self.calls += 1
        if stale is None or stale != self.value:
            usable = self.usable()
            if usable is not None:
                return usable
        raise error.copy()


def _bad_character(value: str) -> str | None:
    """What makes a token unsendable (whitespace or a control character inside it), or None."""
    if value.isprintable() and not any(ch.isspace() for ch in value):
        return None
    return "whitespace" if any(ch.isspace() for ch in value) else "a control character"


def _is_async(hook: object) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)


def _describe(exc: BaseException) -> TokenHookError:
    text = scrub(str(exc))[:1000]
    classification = getattr(exc, "classification", None)
    return TokenHookError(
        f"token hook raised {type(exc).__name__}" + (f": {text}" if text else ""),
        classification if isinstance(classification, Classification) else None,
    )


# -- renewal as a sans-IO generator: what to do, never how ------------------------------------
#
# ``_ManagerBase._renewal`` yields these; the sync and async managers perform them (the same split
# as ``_core.RetryCore.flow`` and the transports). A store operation that raises is thrown back in
# as ``_StoreFailed`` and the renewal goes on process-locally.


@dataclass(slots=True)
class _ClaimOp:
    stale: str | None


@dataclass(slots=True)
class _PublishOp:
    expected: str | None
    token: StoredToken


@dataclass(slots=True)
class _FailOp:
    error: SharedError


@dataclass(slots=True)
class _WaitOp:
    seconds: float


class _HookOp:
    __slots__ = ()


_HOOK = _HookOp()
_StoreOp: TypeAlias = _ClaimOp | _PublishOp | _FailOp
_Op: TypeAlias = _StoreOp | _WaitOp | _HookOp
_Renewing: TypeAlias = Generator[_Op, Any, "Renewal"]

_FIRST_POLL = 0.005  # seconds between claims while another renewer holds the lock: doubling...
_MAX_POLL = 0.1  # ...up to this
_LEASE_SLACK = 5.0  # the renewal lock outlives the hook timeout by this much
_WORKED_SPACING = 1.0  # store down: seconds between renewals of tokens that worked (see _local)


class _StoreFailed(Exception):
    """Internal: a store operation raised (already logged by the guard)."""


class _Run:
    """One renewal as a manager drives it: everything of ``_drive`` that is not I/O, shared by the
    sync and async managers (their drivers only perform the ops, as the transports do the flow's).

    ``next()`` gives the op to perform (None once the renewal has its outcome); the driver performs
    it inside ``performing(op)``, which sends the result or the error back in on the next ``next()``
    and notes whether this renewal holds the store's lock, which ``close()`` says to release.
    """

    __slots__ = ("_error", "_manager", "_renewal", "_renewing", "holding", "owner", "result")

    def __init__(self, manager: _ManagerBase, renewing: _Renewing) -> None:
        self._manager = manager
        self._renewing = renewing
        self.owner = uuid.uuid4().hex
        self.holding = False  # may this renewal hold the store's lock?
        self.result: Any = None
        self._error: BaseException | None = None
        self._renewal: Renewal | None = None

    def next(self) -> _Op | None:
        result, error = self.result, self._error
        self.result, self._error = None, None
        try:
            return self._renewing.throw(error) if error is not None else self._renewing.send(result)
        except StopIteration as stop:
            self._renewal = stop.value
            return None

    def outcome(self) -> Renewal:
        assert self._renewal is not None
        return self._renewal

    @contextlib.contextmanager
    def performing(self, op: _Op) -> Iterator[None]:
        """Around the driver performing ``op``: a hook call is counted and its TokenHookError sent
        back in; a store call that raises is logged by the guard and sent back in as
        ``_StoreFailed`` (a store that fails never fails a request). A cancellation, a
        ``BaseException``, passes through."""
        manager = self._manager
        if isinstance(op, _WaitOp):
            yield
        elif isinstance(op, _HookOp):
            manager._hook_calls += 1
            try:
                yield
            except TokenHookError as exc:
                self._error = exc
        else:
            guard = manager._guarded()
            self.holding = isinstance(op, _ClaimOp)
            try:
                yield
            except Exception as exc:  # noqa: BLE001 - a store that fails never fails a request
                guard.failed(exc, _op_name(op))
                self._error = _StoreFailed()
            else:
                guard.succeeded()
                self.holding = isinstance(self.result, Claim) and self.result.status == "acquired"

    def close(self) -> bool:
        """Close the renewal; should the driver release the store's lock?"""
        self._renewing.close()
        guard = self._manager.guard
        return self.holding and self._manager.store is not None and guard is not None and guard.available()


class _Options(TypedDict, total=False):
    """The managers' keyword arguments (defaults in ``_ManagerBase.__init__``); the two managers
    add only their lock, and the sync one its refusal of async hooks."""

    timeout: float
    clock: Callable[[], float]
    store: TokenStore | None
    key: str | None
    guard: StoreGuard | None


class _ManagerBase:
    def __init__(
        self,
        hook: AnyTokenHook,
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        store: TokenStore | None = None,
        key: str | None = None,
        guard: StoreGuard | None = None,
    ) -> None:
        if not callable(hook):
            raise ConfigurationError(f"token hook must be callable, got {type(hook).__name__}")
        if not timeout > 0:
            raise ConfigurationError(f"token_timeout must be > 0, got {timeout!r}")
        self.hook = hook
        self.timeout = timeout
        self._state = _TokenState(clock)
        self._hook_calls = 0
        self.store = store
        self.key = key if key is not None else "default"
        self.guard = guard if guard is not None or store is None else StoreGuard(store)
        lease = getattr(store, "lease", None)
        self.lease: float = float(lease) if isinstance(lease, (int, float)) and lease > 0 else timeout + _LEASE_SLACK
        self._fallback_at: float | None = None  # the last hook call while the store was down (time.monotonic)

    @property
    def hook_calls(self) -> int:
        """How many times this manager has called the hook (tokens taken from a store not counted)."""
        return self._hook_calls

    def current(self) -> str | None:
        """The token in use now, if any (no renewal)."""
        return self._state.value

    def fresh(self) -> str | None:
        """The token to send now if no renewal is due (none yet, or near expiry: ``None``). No I/O."""
        return self._state.fresh()

    def is_rejected(self, token: str) -> bool:
        """Did the platform refuse this token, which has since been replaced?"""
        return self._state.is_rejected(token)

    def succeeded(self, token: str | None) -> None:
        """Record that a request succeeded with ``token`` (``None``: the current token). The flow
        calls it with the token each success was sent with; ``RetryCore.ready`` sends a request
        without the flow only once the current token has worked (``_state.proven``), so the
        success path reads one flag and takes no lock."""
        self._state.succeeded(token)

    def worked(self, token: str | None) -> bool:
        """Had ``token`` carried a success before the platform refused it? (See ``decide``.)"""
        return self._state.carried(token)

    def __repr__(self) -> str:
        name = getattr(self.hook, "__qualname__", type(self.hook).__name__)
        return f"<{type(self).__name__} hook={name} calls={self._hook_calls}>"

    def _shared(self) -> TokenStore:
        assert self.store is not None  # only a renewal with a store yields store ops
        return self.store

    def _guarded(self) -> StoreGuard:
        assert self.guard is not None  # a manager with a store always has a guard
        return self.guard

    # -- the renewal, once the local bookkeeping said the hook is needed

    def _renewal(self, stale: str | None) -> _Renewing:
        """Run under the manager's lock after :meth:`_TokenState.begin` returned None."""
        if self.store is None or self.guard is None or not self.guard.available():
            return (yield from self._local(stale))
        state = self._state
        deadline = time.monotonic() + self.lease + self.timeout
        delay = _FIRST_POLL
        seen: int | None = None
        claim_stale = stale
        while True:
            try:
                claim: Claim = yield _ClaimOp(claim_stale)
            except _StoreFailed:
                return (yield from self._local(stale))
            if seen is None:
                # attempts before the one in progress (ours if acquired, else the holder's we wait
                # on): a failure recorded by a later attempt is one we waited on
                seen = claim.calls - 1
            if claim.status == "fresh" and claim.token is not None:
                if claim.token.value in state.rejected:  # stored, but we know the platform refused it
                    claim_stale = claim.token.value
                else:
                    return Renewal(state.adopt(claim.token, stale), False)
            elif claim.error is not None and claim.error.calls > seen:
                # the renewal we waited on failed: share its failure instead of calling the hook again
                error = TokenHookError(claim.error.message, claim.error.classification)
                if claim.status == "acquired":
                    with contextlib.suppress(_StoreFailed):
                        yield _FailOp(claim.error)  # releases the lock, keeps the failure recorded
                return Renewal(state.fail(error, stale), False)
            elif claim.status == "acquired":
                break
            if time.monotonic() >= deadline:
                waited = TokenHookError(
                    f"another process held the token renewal lock for more than {self.lease + self.timeout:g} s"
                )
                return Renewal(state.fail(waited, stale), False)
            if claim.status == "busy":
                yield _WaitOp(delay)
                delay = min(delay * 2, _MAX_POLL)
        # we hold the lock; re-read under it: claim.token is what the store has now
        expected = claim.token.value if claim.token is not None else None
        try:
            result = yield _HOOK
            value = state.accept(result, stale)
        except TokenHookError as exc:
            with contextlib.suppress(_StoreFailed):
                yield _FailOp(SharedError(claim.calls, str(exc), exc.classification))
            return Renewal(state.fail(exc, stale), True)
        try:
            newer = yield _PublishOp(expected, StoredToken(value, state.lifetime, state.lifetime))
        except _StoreFailed:
            return Renewal(value, True)
        if newer is not None and newer.fresh(None):  # our lease ran out and someone stored theirs: converge
            return Renewal(state.adopt(newer, None), True)
        return Renewal(value, True)

    def _local(self, stale: str | None) -> _Renewing:
        state = self._state
        if self.guard is not None:
            # The store is down and this process renews on its own. With a hook that issues a new
            # token on every call, processes renewing apart knock out each other's tokens, each
            # renewal making the next: renew at most once per floor; sooner (but at most once per
            # _WORKED_SPACING) only when the current token worked since, i.e. it expired in use.
            floor, last = self.guard.renewal_floor, self._fallback_at
            if last is not None:
                spacing = min(floor, _WORKED_SPACING) if state.proven else floor
                wait = last + spacing - time.monotonic()
                if wait > self.timeout:
                    why = TokenHookError(
                        f"the token store is down and this process renewed {spacing - wait:.3g} s ago with no success"
                        f" since; it renews at most once per {floor:g} s until the store is back"
                    )
                    return Renewal(state.fail(why, stale), False)
                if wait > 0:
                    yield _WaitOp(wait)
            self._fallback_at = time.monotonic()
        try:
            result = yield _HOOK
            value = state.accept(result, stale)
        except TokenHookError as exc:
            return Renewal(state.fail(exc, stale), True)
        return Renewal(value, True)


class Renewal(NamedTuple):
    """The outcome of :meth:`TokenManager.renew`: the token, and whether this call ran the hook."""

    token: str
    hook_called: bool


class TokenManager(_ManagerBase):
    """Thread-safe single-flight renewal around a synchronous hook.

    With a ``store``, renewal is single-flight across everything sharing the store too.
    """

    def __init__(self, hook: TokenHook | Callable[[], str | Token], **options: Unpack[_Options]) -> None:
        if _is_async(hook):
            raise ConfigurationError(
                "an async token hook needs AsyncRetryTransport; RetryTransport calls hooks synchronously"
            )
        super().__init__(hook, **options)
        self._lock = threading.Lock()

    def get(self) -> str:
        """A token to send: the current one, or a new one if none or near expiry."""
        current = self._state.fresh()
        return current if current is not None else self.renew(None).token

    def renew(self, stale: str | None) -> Renewal:
        """A token newer than ``stale``; runs the hook only if nobody renewed meanwhile."""
        seen = self._state.calls
        with self._lock:
            current = self._state.begin(stale, seen)
            if current is not None:
                return Renewal(current, False)
            return self._drive(self._renewal(stale))

    def _drive(self, renewing: _Renewing) -> Renewal:
        run = _Run(self, renewing)
        try:
            while (op := run.next()) is not None:
                with run.performing(op):
                    run.result = self._do(op, run.owner)
            return run.outcome()
        finally:
            if run.close():
                self._release(run.owner)

    def _do(self, op: _Op, owner: str) -> object:
        if isinstance(op, _WaitOp):
            time.sleep(op.seconds)
            return None
        if isinstance(op, _HookOp):
            return self._call()
        return _perform(self._shared(), self.key, owner, op, self.lease)

    def _release(self, owner: str) -> None:
        try:
            self._shared().release(self.key, owner)
        except Exception as exc:  # noqa: BLE001
            self._guarded().failed(exc, "release")

    def _call(self) -> object:
        box: list[object] = []
        error: list[BaseException] = []

        def run() -> None:
            try:
                box.append(self.hook())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                error.append(exc)

        context = contextvars.copy_context()  # the caller's contextvars, as anyio gives the async transport's threads
        context.run(_HOOK_DEADLINE.set, time.monotonic() + self.timeout)
        worker = threading.Thread(target=context.run, args=(run,), name="retrypolicy-token-hook", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise TokenHookError(f"token hook did not return within {self.timeout:g} s")
        if error:
            raise _describe(error[0])
        return box[0]


def _op_name(op: _StoreOp) -> str:
    return {_ClaimOp: "claim", _PublishOp: "publish", _FailOp: "fail"}[type(op)]


def _perform(store: TokenStore, key: str, owner: str, op: _StoreOp, lease: float) -> Claim | StoredToken | None:
    if isinstance(op, _ClaimOp):
        return store.claim(key, owner, lease, op.stale)
    if isinstance(op, _PublishOp):
        return store.publish(key, owner, op.expected, op.token)
    store.fail(key, owner, op.error)
    return None


async def _aperform(store: TokenStore, key: str, owner: str, op: _StoreOp, lease: float) -> Claim | StoredToken | None:
    if isinstance(op, _ClaimOp):
        return await store.aclaim(key, owner, lease, op.stale)
    if isinstance(op, _PublishOp):
        return await store.apublish(key, owner, op.expected, op.token)
    await store.afail(key, owner, op.error)
    return None


class AsyncTokenManager(_ManagerBase):
    """Task-safe single-flight renewal; the hook may be ``async def`` or a plain function.

    A plain function runs in a worker thread. An object with an ``acall`` coroutine method
    (the built-in hooks) is awaited through it. Cancelling a waiting or renewing task
    releases the lock (the store's too).
    """

    def __init__(self, hook: AnyTokenHook, **options: Unpack[_Options]) -> None:
        super().__init__(hook, **options)
        self._lock = anyio.Lock()

    async def get(self) -> str:
        current = self._state.fresh()
        return current if current is not None else (await self.renew(None)).token

    async def renew(self, stale: str | None) -> Renewal:
        seen = self._state.calls
        async with self._lock:
            current = self._state.begin(stale, seen)
            if current is not None:
                return Renewal(current, False)
            return await self._drive(self._renewal(stale))

    async def _drive(self, renewing: _Renewing) -> Renewal:
        run = _Run(self, renewing)
        try:
            while (op := run.next()) is not None:
                with run.performing(op):
                    run.result = await self._do(op, run.owner)
            return run.outcome()
        finally:
            if run.close():
                await self._release(run.owner)

    async def _do(self, op: _Op, owner: str) -> object:
        if isinstance(op, _WaitOp):
            await anyio.sleep(op.seconds)
            return None
        if isinstance(op, _HookOp):
            return await self._timed_call()
        return await _aperform(self._shared(), self.key, owner, op, self.lease)

    async def _release(self, owner: str) -> None:
        with anyio.CancelScope(shield=True):
            try:
                with anyio.fail_after(5):
                    await self._shared().arelease(self.key, owner)
            except Exception as exc:  # noqa: BLE001
                self._guarded().failed(exc, "release")

    async def _timed_call(self) -> object:
        reset = _HOOK_DEADLINE.set(time.monotonic() + self.timeout)
        try:
            with anyio.fail_after(self.timeout):
                return await self._call()
        except TimeoutError:
            raise TokenHookError(f"token hook did not return within {self.timeout:g} s") from None
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            raise _describe(exc) from None
        finally:
            _HOOK_DEADLINE.reset(reset)

    async def _call(self) -> object:
        acall = getattr(self.hook, "acall", None)
        if callable(acall):
            return await acall()
        if _is_async(self.hook):
            return await self.hook()  # type: ignore[misc]
        result: object = await anyio.to_thread.run_sync(self.hook, abandon_on_cancel=True)
        if inspect.isawaitable(result):
            result = await result
        return result
