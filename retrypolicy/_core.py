"""The decision core shared by RetryTransport and AsyncRetryTransport.

Two layers, both free of I/O:

* :func:`decide` is a pure function: (classification, state, limits) -> :class:`Decision`.
  :class:`RetryState` is immutable; each attempt gives a new one with its history (urllib3 style).
* :meth:`RetryCore.flow` is a sans-IO generator, like httpx's ``auth_flow``: it yields actions
  (the ``httpx.Request`` to send, as ``auth_flow`` does, or a :class:`Read`, :class:`Close`,
  :class:`Sleep`, :class:`FetchToken`, :class:`RenewToken` or :class:`StoreCall`) and receives
  their results. The sync and async transports drive it with a loop of a dozen lines each; they
  own every socket, sleep, lock and store call.
"""

from __future__ import annotations

import email.utils
import fnmatch
import functools
import json
import math
import random
import time
from collections.abc import Callable, Collection, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

import httpx
import tenacity
from httpx._multipart import MultipartStream

from ._config import host_key
from ._errors import (
    ConfigurationError,
    CooldownActive,
    RequestFailed,
    RequestRejected,
    ResendUnsafe,
    RetriesExhausted,
    RetryBudgetExhausted,
    TokenRefreshFailed,
    UserActionRequired,
)
from ._log import as_logger
from ._overload import Bucket, Budgets, Cooldowns, RetryBudget, Snapshot, Stats
from ._policy import Category, Classification, Policy, RetrySettings, TokenPlacement
from ._redact import raise_from, redact_url, scrub
from ._token import AsyncTokenManager, TokenHookError, TokenManager

__all__ = ["EXTENSION", "Decision", "RetryCore", "RetryState", "decide", "parse_retry_after"]

EXTENSION = "retrypolicy"
"""Key of per-request options in ``request.extensions`` and of the classification in
``response.extensions``."""

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_REPLAYABLE = (httpx.ByteStream, MultipartStream)  # bytes, and multipart whose files are rewound
_REQUEST_OPTIONS = frozenset({"retry", "max_attempts", "deadline", "idempotent"})

_testing_scale: float | None = None


def set_testing(testing: bool, *, scale: float = 0.0) -> None:
    """Testing mode: every backoff wait is multiplied by ``scale`` (zero by default).

    Decisions, attempts and log events stay exactly as in production; only the sleeping goes.
    """
    global _testing_scale
    if not (isinstance(scale, (int, float)) and 0 <= scale <= 1):
        raise ConfigurationError(f"scale must be a number from 0 to 1, got {scale!r}")
    _testing_scale = float(scale) if testing else None


def is_testing() -> bool:
    """Whether :func:`set_testing` is on."""
    return _testing_scale is not None


# -- actions the flow yields -----------------------------------------------------------------


@dataclass(slots=True)  # actions: created per request, so not frozen (a frozen __init__ costs more)
class Read:
    response: httpx.Response


@dataclass(slots=True)
class Close:
    response: httpx.Response


@dataclass(slots=True)
class StoreCall:
    """A blocking call to a shared store (Redis): the sync driver makes it, the async driver
    makes it in a worker thread, so the event loop never waits on the store."""

    call: Callable[[], Any]


@dataclass(slots=True)
class Sleep:
    seconds: float


@dataclass(slots=True)
class FetchToken:
    manager: TokenManager | AsyncTokenManager


@dataclass(slots=True)
class RenewToken:
    manager: TokenManager | AsyncTokenManager
    stale: str | None


@dataclass(frozen=True, slots=True)
class First:
    """A first attempt the driver made on its own (see :meth:`RetryCore.ready`) that did not
    succeed: :meth:`RetryCore.flow` takes over from it as if it had made it itself."""

    sent: httpx.Request
    started: float
    response: httpx.Response | None
    error: Exception | None


Action: TypeAlias = httpx.Request | Read | Close | Sleep | FetchToken | RenewToken | StoreCall
Flow: TypeAlias = Generator[Action, Any, httpx.Response]


# -- the pure decision -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One failed attempt: what it was classified as and what was decided."""

    attempt: int
    code: int | None
    category: Category
    action: str
    delay: float


@dataclass(frozen=True, slots=True)
class RetryState:
    """Where one logical request stands. Immutable: :meth:`next` returns a new state."""

    attempt: int = 1
    renewals: int = 0
    history: tuple[AttemptRecord, ...] = ()

    def next(self, classification: Classification, decision: Decision) -> RetryState:
        record = AttemptRecord(
            self.attempt, classification.code, classification.category, decision.action, decision.delay
        )
        return RetryState(
            attempt=self.attempt + 1,
            renewals=self.renewals + (decision.action == "renew"),
            history=(*self.history, record),
        )


_FIRST_ATTEMPT = RetryState()


@dataclass(frozen=True, slots=True)
class Decision:
    action: Literal["retry", "renew", "give_up"]
    delay: float = 0.0
    error: type[RequestFailed] | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Limits:
    """The effective limits of one request (table defaults, transport and request overrides)."""

    max_attempts: int
    initial_delay: float
    max_delay: float
    deadline: float
    max_renewals: int


def backoff(limits: Limits, attempt: int, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff after ``attempt`` (1-based), computed by tenacity."""
    wait = tenacity.wait_random_exponential(multiplier=limits.initial_delay, max=limits.max_delay)
    state = tenacity.RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    if rng is None:
        return float(wait(state))
    high = min(limits.max_delay, limits.initial_delay * 2 ** (attempt - 1))
    return rng.uniform(0, high)


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
) -> Decision:
    """What to do after a failed attempt. A pure function of its arguments.

    ``wait`` is the backoff for this attempt (from :func:`backoff`); the delay is the largest of
    it, the rule's ``min_delay`` and ``retry_after``.
    """
    category = classification.category
    if category is Category.USER_ACTION:
        return Decision("give_up", error=UserActionRequired, reason="a person must act")
    if category is Category.FATAL:
        return Decision("give_up", error=RequestRejected, reason="the request cannot succeed unchanged")
    if not resend_safe:
        return Decision("give_up", error=ResendUnsafe, reason=unsafe_reason)
    if category is Category.TOKEN_REFRESH:
        if not can_renew:
            return Decision("give_up", error=TokenRefreshFailed, reason="no token hook is configured")
        if state.renewals >= limits.max_renewals:
            return Decision(
                "give_up",
                error=TokenRefreshFailed,
                reason=f"the platform rejected the token after {state.renewals} renewal(s)",
            )
        return Decision("renew")
    if state.attempt >= limits.max_attempts:
        return Decision("give_up", error=RetriesExhausted, reason=f"no attempts left ({limits.max_attempts} allowed)")
    delay = max(wait if wait is not None else 0.0, classification.min_delay, retry_after or 0.0)
    if elapsed + delay > limits.deadline:
        return Decision(
            "give_up",
            error=RetriesExhausted,
            reason=f"a {delay:.3g} s wait would pass the {limits.deadline:g} s deadline",
        )
    return Decision("retry", delay=delay)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or HTTP date); None if absent, bad or past."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return min(seconds, 86400.0)


# -- request helpers -------------------------------------------------------------------------


def token_in(request: httpx.Request, placement: TokenPlacement) -> str | None:
    if placement.location == "query":
        if placement.name.encode() + b"=" not in request.url.query:  # cheap test before parsing the query
            return None
        return request.url.params.get(placement.name) or None
    value = request.headers.get(placement.name)
    if not value:
        return None
    if placement.scheme and value[: len(placement.scheme) + 1].lower() == placement.scheme.lower() + " ":
        value = value[len(placement.scheme) + 1 :]
    return value.strip() or None


def with_token(request: httpx.Request, placement: TokenPlacement, token: str) -> httpx.Request:
    """A copy of the request with the token where the platform expects it.

    Never in place: httpx logs the client's own request URL at INFO, so a token written into it
    would reach the logs; and the inner transport keeps what it was sent.
    """
    url, headers = request.url, request.headers
    if placement.location == "query":
        url = _url_with_param(str(url), placement.name, token)
    else:
        headers = headers.copy()
        headers[placement.name] = placement.header_value(token)
    return httpx.Request(request.method, url, headers=headers, stream=request.stream, extensions=request.extensions)


@functools.lru_cache(maxsize=256)
def _url_with_param(url: str, name: str, value: str) -> httpx.URL:
    # httpx parses and validates a URL in ~15 us; most apps call a few endpoints with one token at a
    # time, so the rewritten URLs are cached (in memory only; the key holds the token).
    return httpx.URL(url).copy_set_param(name, value)


def recipient_of(request: httpx.Request, policy: Policy) -> str | None:
    """The recipient named in a JSON request body (the table's ``recipient`` paths), if any."""
    if not isinstance(request.stream, httpx.ByteStream):
        return None
    try:
        body = json.loads(b"".join(request.stream))  # a ByteStream yields its bytes, again and again
    except (ValueError, RecursionError):
        return None
    for path in policy.recipient:
        value: object = body
        for key in path:
            if isinstance(key, int):
                value = value[key] if isinstance(value, list) and -len(value) <= key < len(value) else None
            else:
                value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return None


def readable(response: httpx.Response, max_bytes: int) -> bool:
    """Should the body be read for an error code? Only small JSON or text bodies with a length."""
    length = response.headers.get("content-length")
    if length is None or not (length.isascii() and length.isdigit()) or int(length) > max_bytes:
        return False
    ctype = response.headers.get("content-type", "").lower()
    return not ctype or "json" in ctype or ctype.startswith("text/")


# -- the flow --------------------------------------------------------------------------------

Logger: TypeAlias = Any  # a structlog BoundLogger


@dataclass(frozen=True, slots=True)
class _Options:
    limits: Limits
    idempotent: bool | None


@dataclass(frozen=True, slots=True)
class Lane:
    """What the first attempt of a request under one policy needs, looked up once per transport."""

    policy: Policy
    manager: TokenManager | AsyncTokenManager | None
    bucket: Bucket | None  # the platform's retry budget, refilled by each success


class RetryCore:
    """Everything both transports share: policies, token managers, options and the flow."""

    def __init__(
        self,
        policies: Mapping[str, Policy] | Policy,
        managers: Mapping[str, TokenManager | AsyncTokenManager],
        *,
        retry: RetrySettings | None,
        max_renewals: int,
        raise_on: Collection[Category],
        logger: Logger | None,
        budget: RetryBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.policies = policies
        self.managers = dict(managers)
        self.retry = retry
        self.max_renewals = max_renewals
        self.raise_on = frozenset(raise_on)
        self.log = as_logger(logger)  # structlog, or stdlib logging behind an adapter: chosen once, here
        self.clock = clock
        self.wall_clock = wall_clock
        self._default_options: dict[str, _Options] = {}
        self.budgets = Budgets(budget)
        self.cooldowns = Cooldowns(clock)
        self.stats = Stats()
        by_host: Mapping[str, Policy] = {"*": policies} if isinstance(policies, Policy) else policies
        self._lanes: dict[str, Lane] = {}  # host-only keys and "*": one dict lookup per request
        self._ports: dict[tuple[str, int], Lane] | None = None  # "host:port" keys, asked first if any
        for key, p in by_host.items():
            host, port = host_key(key)
            if port is None:
                self._lanes[host] = self._lane_of(p)
            else:
                if self._ports is None:
                    self._ports = {}
                self._ports[host, port] = self._lane_of(p)
        self._lane = self._lanes["*"] if isinstance(policies, Policy) else None  # no lookup per request

    def _lane_of(self, policy: Policy) -> Lane:
        manager = self.managers.get(policy.platform)
        return Lane(policy, manager, self.budgets.bucket(policy.platform, policy.budget))

    def lane_for(self, request: httpx.Request) -> Lane | None:
        """The lane of the request's host and port (a ``host:port`` key), else of its host (a
        host-only key, any port), else ``"*"``; None: no policy covers it."""
        if self._lane is not None:
            return self._lane
        url = request.url
        if self._ports is not None:
            lane = self._ports.get((url.host, url.port or (443 if url.scheme == "https" else 80)))
            if lane is not None:
                return lane
        return self._lanes.get(url.host) or self._lanes.get("*")

    def options(self, policy: Policy, request: httpx.Request) -> _Options:
        raw = request.extensions.get(EXTENSION)
        if raw is None:  # the common case: table (or transport) defaults, computed once
            cached = self._default_options.get(policy.platform)
            if cached is None:
                base = self.retry or policy.retry
                limits = Limits(base.max_attempts, base.initial_delay, base.max_delay, base.deadline, self.max_renewals)
                cached = self._default_options[policy.platform] = _Options(limits, None)
            return cached
        base = self.retry or policy.retry
        opts: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigurationError(f"request.extensions[{EXTENSION!r}] must be a dict, got {type(raw).__name__}")
        unknown = set(opts) - _REQUEST_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"unknown option {sorted(unknown)[0]!r} in request.extensions[{EXTENSION!r}]; "
                f"known: {', '.join(sorted(_REQUEST_OPTIONS))}"
            )
        if "retry" in opts and not isinstance(opts["retry"], bool):
            raise ConfigurationError(f"retry must be True or False, got {opts['retry']!r}")
        attempts = opts.get("max_attempts", base.max_attempts)
        if opts.get("retry", True) is False:
            attempts = 1
        deadline = opts.get("deadline", base.deadline)
        idempotent = opts.get("idempotent")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 100:
            raise ConfigurationError(f"max_attempts must be an integer from 1 to 100, got {attempts!r}")
        if not isinstance(deadline, (int, float)) or isinstance(deadline, bool) or not 0 <= deadline < math.inf:
            raise ConfigurationError(f"deadline must be a finite number of seconds >= 0, got {deadline!r}")
        if idempotent is not None and not isinstance(idempotent, bool):
            raise ConfigurationError(f"idempotent must be True or False, got {idempotent!r}")
        limits = Limits(attempts, base.initial_delay, base.max_delay, float(deadline), self.max_renewals)
        return _Options(limits, idempotent)

    def secrets(self, *extra: str | None) -> list[str]:
        values = [m.current() for m in self.managers.values()]
        return [v for v in (*values, *extra) if v]

    # -- the fast path: a first attempt that succeeds never starts the flow

    def ready(self, request: httpx.Request) -> tuple[httpx.Request, Lane] | None:
        """The request to send at once, and its policy's :class:`Lane`, when nothing before the
        first attempt needs the flow: no per-request options, no cooldown running, no shared
        cooldowns due to be pulled or refills due to be pushed, a body that can be sent again,
        and, with a token hook, a fresh token in memory and none in the request. ``None``: drive
        :meth:`flow` instead. No I/O, nothing to undo.

        The driver sends it and asks :meth:`settle` (reading the body first if told to); if that
        says no (or sending raised), it drives ``flow(request, First(...))``, which takes over.
        """
        lane = self._lane if self._lane is not None else self.lane_for(request)  # no call with one policy
        if lane is None:
            return None  # a host no policy covers: the flow passes it through
        cooldowns, budgets = self.cooldowns, self.budgets
        if (
            EXTENSION in request.extensions
            or not cooldowns.quiet
            or ((cooldowns.store is not None or budgets.store is not None) and self._sync_due())
            or not isinstance(request.stream, _REPLAYABLE)
        ):
            return None
        manager = lane.manager
        if manager is None:
            return request, lane
        token = manager.fresh()
        placement = lane.policy.token
        if token is None or token_in(request, placement) is not None:
            return None  # a renewal is due, or the request brings its own token: the flow decides
        return with_token(request, placement, token), lane

    def _sync_due(self) -> bool:
        """Are shared cooldowns due to be pulled, or refills to be pushed (both by the flow)?
        Both gates asked with one clock read: they run on the core's clock (``share_state`` gives
        the budgets' gate this clock)."""
        now, cooldowns, budgets = self.clock(), self.cooldowns, self.budgets
        return (cooldowns.store is not None and now >= cooldowns.pull_gate.next_at) or (
            budgets.store is not None and now >= budgets.push_gate.next_at
        )

    def settle(self, lane: Lane, response: httpx.Response) -> bool | None:
        """True, and counted, when the fast path's response is a success to return as it is;
        False when it is not (the flow takes over); None when the driver must read the body
        first (small JSON or text, see :func:`readable`) and ask again."""
        policy = lane.policy
        if hasattr(response, "_content"):
            content: bytes | None = response._content  # read: what response.content returns, without the call
        elif readable(response, policy.retry.max_body_bytes):
            return None
        else:
            content = None  # a download, or a body without a length: its status decides, its stream stays
        if policy.classify_parts(response.status_code, content) is not None:
            return False
        next(self.stats.first_try)
        if lane.bucket is not None:
            next(lane.bucket.successes)  # Budgets.success(), inlined: the refill is added when read
        return True

    def interrupted(self) -> None:
        """Count a fast-path attempt cut short by a ``BaseException`` (the flow counts its own)."""
        with self.stats.lock:
            self.stats.requests += 1
            self.stats.attempts += 1

    # -- the flow

    def flow(self, request: httpx.Request, first: First | None = None) -> Flow:
        """The life of one logical request, as a sans-IO generator of actions.

        Sending is yielded as the request itself, as in httpx's ``auth_flow``; every other action
        is one of the small classes above. With ``first``, the flow takes over after a first
        attempt the driver made through :meth:`ready`, and goes on exactly as if it had made it.
        """
        lane = self.lane_for(request)
        if lane is None:
            passed: httpx.Response = yield request
            return passed
        policy, manager = lane.policy, lane.manager
        stats = self.stats
        attempts = succeeded = 0
        try:
            platform = policy.platform
            # the table's defaults, computed once, unless the request brings its own options
            opts = self._default_options.get(platform) if EXTENSION not in request.extensions else None
            if opts is None:
                opts = self.options(policy, request)
            placement = policy.token
            if first is not None:
                request = first.sent  # ready() filled in a fresh token, if the transport has a hook
            token = token_in(request, placement) if manager is not None else None
            # Fill in a token when the request has none, or replace one the platform already refused
            # (a client with a default Authorization header keeps sending the old one).
            if first is None and manager is not None and (token is None or manager.is_rejected(token)):
                try:
                    token = yield FetchToken(manager)
                except TokenHookError as exc:
                    c = exc.classification or _token_classification(policy)
                    reason = scrub(str(exc), self.secrets(token))  # a hook's error may quote a token
                    raise_from(self._give_up(TokenRefreshFailed, c, request, 0, 0.0, reason), None)
                request = with_token(request, placement, token)
            # can the body be sent again? Bytes and multipart (files are rewound) can, generators can't.
            # Asked before sending: a transport may swap the stream once read.
            can_replay = first is not None or isinstance(request.stream, _REPLAYABLE)
            recipient: str | None = None
            recipient_read = not policy.recipient  # read the request body for it at most once, and only if needed
            exempt = False  # the request that started a cooldown resends after its own wait, not blocked by it
            state = _FIRST_ATTEMPT
            started = self.clock() if first is None else first.started
            cooldowns, budgets = self.cooldowns, self.budgets
            max_body = policy.retry.max_body_bytes
            if budgets.store is not None and budgets.claim_push():  # before sending: nothing to clean up if cancelled
                yield StoreCall(budgets.push)
            while True:
                if first is None and cooldowns.running and not exempt:  # nothing to check on the hot path
                    if cooldowns.store is not None and cooldowns.claim_pull():
                        yield StoreCall(cooldowns.pull)
                    if not recipient_read:
                        recipient, recipient_read = recipient_of(request, policy), True
                    blocked = cooldowns.blocking(platform, recipient)
                    if blocked is not None:
                        left, cause, scope = blocked
                        assert isinstance(cause, Classification)
                        reason = f"an {scope} cooldown started by code {cause.code} has {left:.3g} s left"
                        gave_up = self._give_up(
                            CooldownActive,
                            cause,
                            request,
                            state.attempt - 1,
                            self.clock() - started,
                            reason,
                            remaining=left,
                        )
                        raise_from(gave_up, None)  # not chained to a failed first attempt either
                exempt = False
                response: httpx.Response | None = None
                sent = True
                attempts += 1
                try:
                    if first is None:
                        response = yield request
                        if not hasattr(response, "_content") and readable(response, max_body):
                            yield Read(response)
                    else:  # the driver made this attempt (see ready()): take over from its outcome
                        response, failure, first = first.response, first.error, None
                        if failure is not None:
                            raise failure
                except httpx.TransportError as exc:
                    if response is not None:
                        yield Close(response)
                        response = None
                    sent = not isinstance(exc, _NEVER_SENT)
                    c = _transport_classification(policy, exc, sent)
                    error: BaseException | None = exc
                else:
                    assert response is not None
                    c = policy.classify(response)  # type: ignore[assignment]
                    if c is None:
                        budgets.success(platform, policy.budget)
                        succeeded = 1
                        return response
                    error = None
                # failure path from here on: nothing below runs for a successful response
                if token is None:
                    token = token_in(request, placement)
                secrets = self.secrets(token)
                c = replace(
                    c,
                    message=scrub(c.message, secrets),
                    details=scrub(c.details, secrets) if c.details else c.details,
                )
                elapsed = self.clock() - started
                if c.cooldown is not None:
                    if c.cooldown.scope == "recipient" and not recipient_read:
                        recipient, recipient_read = recipient_of(request, policy), True
                    if c.cooldown.scope == "app" or recipient is not None:
                        seconds = _scaled(c.cooldown.duration(self.wall_clock()))
                        key = "" if c.cooldown.scope == "app" else recipient or ""
                        if cooldowns.start(platform, c.cooldown.scope, key, seconds, c):
                            yield StoreCall(
                                functools.partial(cooldowns.publish, platform, c.cooldown.scope, key, seconds, c)
                            )
                        exempt = True
                        self._emit(
                            "cooldown_started",
                            c,
                            request,
                            state.attempt,
                            elapsed,
                            scope=c.cooldown.scope,
                            seconds=round(seconds, 3),
                        )
                idempotent = opts.idempotent
                if idempotent is None:
                    path = request.url.path
                    idempotent = request.method in IDEMPOTENT_METHODS or any(
                        fnmatch.fnmatchcase(path, glob) for glob in policy.idempotent_paths
                    )
                if c.ambiguous and not idempotent:
                    why = f"{request.method} may have been carried out; resending could duplicate it"
                    resend_safe = False
                elif sent and not can_replay:
                    resend_safe, why = False, "the request body is a stream that cannot be sent again"
                else:
                    resend_safe, why = True, ""
                retry_after = None
                if response is not None:
                    retry_after = parse_retry_after(response.headers.get("retry-after"), self.wall_clock())
                wait = backoff(opts.limits, state.attempt) if c.category is Category.RETRYABLE else None
                decision = decide(
                    c,
                    state,
                    opts.limits,
                    elapsed=elapsed,
                    resend_safe=resend_safe,
                    unsafe_reason=why,
                    can_renew=manager is not None,
                    retry_after=retry_after,
                    wait=wait,
                )
                if decision.action == "retry":
                    spend = functools.partial(budgets.spend, platform, policy.budget)
                    if not ((yield StoreCall(spend)) if budgets.store is not None else spend()):
                        decision = Decision("give_up", error=RetryBudgetExhausted, reason="the retry budget is empty")
                if decision.action == "give_up":
                    assert decision.error is not None
                    if response is not None and c.category not in self.raise_on:
                        self._give_up(decision.error, c, request, state.attempt, elapsed, decision.reason)
                        response.extensions = {**response.extensions, EXTENSION: c}
                        return response
                    if response is not None:
                        yield Close(response)
                    exc_out = self._give_up(
                        decision.error, c, request, state.attempt, elapsed, decision.reason, response=response
                    )
                    raise_from(exc_out, error, secrets)  # a stand-in of the cause: type, scrubbed text, no chain
                if response is not None:
                    yield Close(response)
                if decision.action == "renew":
                    assert manager is not None
                    try:
                        fresh, hook_called = yield RenewToken(manager, token)
                    except TokenHookError as exc:
                        c = exc.classification or c
                        reason = scrub(str(exc), self.secrets(token))
                        raise_from(self._give_up(TokenRefreshFailed, c, request, state.attempt, elapsed, reason), None)
                    # hook_called: False when another request had renewed already and this one reuses that token
                    if hook_called:
                        with stats.lock:
                            stats.renewals += 1
                    self._emit("token_renewed", c, request, state.attempt, elapsed, hook_called=hook_called)
                    token = fresh
                    request = with_token(request, placement, fresh)
                else:
                    with stats.lock:
                        stats.retries += 1
                    self._emit("retry_scheduled", c, request, state.attempt, elapsed, delay=round(decision.delay, 3))
                    yield Sleep(_scaled(decision.delay))
                state = state.next(c, decision)
        finally:  # the counters take one lock per request, however it ends (cancellation included)
            with stats.lock:
                stats.requests += 1
                stats.attempts += attempts
                stats.succeeded += succeeded

    def _give_up(
        self,
        error: type[RequestFailed],
        c: Classification,
        request: httpx.Request,
        attempts: int,
        elapsed: float,
        reason: str,
        *,
        response: httpx.Response | None = None,
        **extra: Any,
    ) -> RequestFailed:
        """Log the give-up, count it, and build the exception (the caller raises it)."""
        with self.stats.lock:
            self.stats.gave_up[c.category.value] += 1
        self._emit("gave_up", c, request, attempts, elapsed, reason=reason, error=error.__name__)
        return error(
            self._message(c, reason, attempts, request),
            classification=c,
            attempts=attempts,
            response=response,
            url=redact_url(request.url),
            **extra,
        )

    def snapshot(self) -> Snapshot:
        """Counters since the transport was created, the budget levels and the running cooldowns."""
        st = self.stats
        with st.lock:
            quick = st.first_tries()
            counts = (st.requests + quick, st.attempts + quick, st.retries, st.renewals, st.succeeded + quick)
            gave_up = dict(st.gave_up)
        return Snapshot(*counts, gave_up, budget=self.budgets.levels(), cooldowns=self.cooldowns.active())

    def _emit(
        self, event: str, c: Classification, request: httpx.Request, attempt: int, elapsed: float, **extra: Any
    ) -> None:
        fields: dict[str, Any] = {
            "platform": c.platform,
            "code": c.code,
            "category": c.category.value,
            "message": c.message,
            "description": c.description,
            "attempt": attempt,
            "method": request.method,
            "url": redact_url(request.url),
            "request_id": c.request_id,
            "status_code": c.status_code,
            "elapsed": round(elapsed, 3),
        }
        if c.subcode is not None:
            fields["subcode"] = c.subcode
        if c.remediation and event == "gave_up":
            fields["remediation"] = c.remediation
        fields.update(extra)
        level = "error" if event == "gave_up" else "warning"
        getattr(self.log, level)(f"retrypolicy.{event}", **fields)

    @staticmethod
    def _message(c: Classification, reason: str, attempts: int, request: httpx.Request) -> str:
        code = "no code" if c.code is None else f"code {c.code}" + (f"/{c.subcode}" if c.subcode is not None else "")
        text = f"{c.platform} {code} [{c.category.value}]: {c.description}"
        if c.message:
            text += f" | vendor message: {c.message}"
        if c.remediation:
            text += f" | what to do: {c.remediation}"
        text += f" | gave up: {reason}; {attempts} attempt(s); {request.method} {redact_url(request.url)}"
        return text


def _scaled(delay: float) -> float:
    return delay if _testing_scale is None else delay * _testing_scale


def _transport_classification(policy: Policy, exc: httpx.TransportError, sent: bool) -> Classification:
    name = type(exc).__name__
    return Classification(
        platform=policy.platform,
        code=None,
        category=Category.RETRYABLE,
        message=scrub(str(exc))[:200] or name,
        description=f"{name}: " + ("the request may have reached the server" if sent else "the request was never sent"),
        ambiguous=sent,
        source="transport",
    )


def _token_classification(policy: Policy) -> Classification:
    return Classification(
        platform=policy.platform,
        code=None,
        category=Category.TOKEN_REFRESH,
        message="",
        description="Could not obtain a token before sending",
        source="transport",
    )
