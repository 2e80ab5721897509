"""Tokens and single-flight renewal.

The bookkeeping (which token is current, whether a failed request needs a new one, how a hook's
answer is checked) lives in :class:`_TokenState`, shared by the thread-safe
:class:`TokenManager` and the task-safe :class:`AsyncTokenManager`; those two only add a lock,
a timeout and the way they call the hook.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeAlias, runtime_checkable

import anyio
import anyio.to_thread

from ._errors import ConfigurationError
from ._policy import Classification
from ._redact import scrub

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
    calls: int = 0  # hook calls so far (a failed call counts)
    last_error: TokenHookError | None = None
    rejected: deque[str] = field(default_factory=lambda: deque(maxlen=16))  # recent tokens a platform refused

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
        if not value.strip():
            raise TokenHookError("token hook returned an empty token")
        if stale is not None and value == stale:
            raise TokenHookError("token hook returned the same token the platform just rejected")
        if expires_in is not None and (not isinstance(expires_in, (int, float)) or expires_in <= 0):
            raise TokenHookError(f"token hook returned an invalid expires_in {expires_in!r}")
        self._reject(stale)
        self.value = value
        self.lifetime = float(expires_in) if expires_in is not None else None
        self.expires_at = self.clock() + expires_in if expires_in is not None else None
        self.last_error = None
        return value

    def begin(self, stale: str | None, seen: int) -> str | None:
        """Under the lock: a token if no hook call is needed, else None (and count the call).

        ``seen`` is the call count before waiting for the lock: if a renewal ran meanwhile and
        failed, its error is raised here, so waiters do not call a failing hook one by one.
        """
        if not self.needs_hook(stale):
            if stale is not None and stale != self.value:
                self._reject(stale)
            return self.value
        if self.calls != seen and self.last_error is not None:
            raise self.last_error.copy()
        self.calls += 1
        return None

    def finish(self, result: object, stale: str | None) -> str:
        try:
            return self.accept(result, stale)
        except TokenHookError as exc:
            return self.fail(exc, stale)

    def fail(self, error: TokenHookError, stale: str | None) -> str:
        """Record a failed hook call; return a still-valid token for a proactive renewal, or raise."""
        self.last_error = error
        if stale is None or stale != self.value:
            usable = self.usable()
            if usable is not None:
                return usable
        raise error.copy()


def _is_async(hook: object) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(type(hook).__call__)


def _describe(exc: BaseException) -> TokenHookError:
    text = scrub(str(exc))[:1000]
    classification = getattr(exc, "classification", None)
    return TokenHookError(
        f"token hook raised {type(exc).__name__}" + (f": {text}" if text else ""),
        classification if isinstance(classification, Classification) else None,
    )


class _ManagerBase:
    def __init__(self, hook: AnyTokenHook, *, timeout: float, clock: Callable[[], float]) -> None:
        if not callable(hook):
            raise ConfigurationError(f"token hook must be callable, got {type(hook).__name__}")
        if not timeout > 0:
            raise ConfigurationError(f"token_timeout must be > 0, got {timeout!r}")
        self.hook = hook
        self.timeout = timeout
        self._state = _TokenState(clock)

    @property
    def hook_calls(self) -> int:
        """How many times the hook has been called."""
        return self._state.calls

    def current(self) -> str | None:
        """The token in use now, if any (no renewal)."""
        return self._state.value

    def is_rejected(self, token: str) -> bool:
        """Did the platform refuse this token, which has since been replaced?"""
        return self._state.is_rejected(token)

    def __repr__(self) -> str:
        name = getattr(self.hook, "__qualname__", type(self.hook).__name__)
        return f"<{type(self).__name__} hook={name} calls={self._state.calls}>"


class Renewal(NamedTuple):
    """The outcome of :meth:`TokenManager.renew`: the token, and whether this call ran the hook."""

    token: str
    hook_called: bool


class TokenManager(_ManagerBase):
    """Thread-safe single-flight renewal around a synchronous hook."""

    def __init__(
        self,
        hook: TokenHook | Callable[[], str | Token],
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if _is_async(hook):
            raise ConfigurationError(
                "an async token hook needs AsyncRetryTransport; RetryTransport calls hooks synchronously"
            )
        super().__init__(hook, timeout=timeout, clock=clock)
        self._lock = threading.Lock()

    def get(self) -> str:
        """A token to send: the current one, or a new one if none or near expiry."""
        current = self._state.fresh()
        return current if current is not None else self.renew(None).token

    def renew(self, stale: str | None) -> Renewal:
        """A token newer than ``stale``; runs the hook only if nobody renewed meanwhile."""
        seen = self._state.calls
        with self._lock:
            state = self._state
            current = state.begin(stale, seen)
            if current is not None:
                return Renewal(current, False)
            try:
                result = self._call()
            except TokenHookError as exc:
                return Renewal(state.fail(exc, stale), True)
            return Renewal(state.finish(result, stale), True)

    def _call(self) -> object:
        box: list[object] = []
        error: list[BaseException] = []

        def run() -> None:
            try:
                box.append(self.hook())
            except BaseException as exc:  # noqa: BLE001 - reported to the caller
                error.append(exc)

        worker = threading.Thread(target=run, name="retrypolicy-token-hook", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise TokenHookError(f"token hook did not return within {self.timeout:g} s")
        if error:
            raise _describe(error[0])
        return box[0]


class AsyncTokenManager(_ManagerBase):
    """Task-safe single-flight renewal; the hook may be ``async def`` or a plain function.

    A plain function runs in a worker thread. An object with an ``acall`` coroutine method
    (the built-in hooks) is awaited through it. Cancelling a waiting or renewing task
    releases the lock.
    """

    def __init__(
        self, hook: AnyTokenHook, *, timeout: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(hook, timeout=timeout, clock=clock)
        self._lock = anyio.Lock()

    async def get(self) -> str:
        current = self._state.fresh()
        return current if current is not None else (await self.renew(None)).token

    async def renew(self, stale: str | None) -> Renewal:
        seen = self._state.calls
        async with self._lock:
            state = self._state
            current = state.begin(stale, seen)
            if current is not None:
                return Renewal(current, False)
            try:
                with anyio.fail_after(self.timeout):
                    result = await self._call()
            except TimeoutError:
                timeout = TokenHookError(f"token hook did not return within {self.timeout:g} s")
                return Renewal(state.fail(timeout, stale), True)
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                return Renewal(state.fail(_describe(exc), stale), True)
            return Renewal(state.finish(result, stale), True)

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
