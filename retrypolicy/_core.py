"""The core shared by RetryTransport and AsyncRetryTransport: the fast path and the flow.

* :func:`~retrypolicy._decide.decide` is pure: (classification, state, limits) -> decision.
* :meth:`RetryCore.flow` is a sans-IO generator, like httpx's ``auth_flow``: it yields actions
  (the ``httpx.Request`` to send, as ``auth_flow`` does, or a :class:`Read`, :class:`Close`,
  :class:`Sleep`, :class:`FetchToken`, :class:`RenewToken` or :class:`StoreCall`) and receives
  their results. One :class:`_Exchange` per request holds what the flow works out once (lane,
  limits, token, body replay, retry state, counters, redacted URL); its steps are named
  sub-generators: prepare, gate, attempt, judge, act, give up.
* :meth:`RetryCore.ready` and :meth:`RetryCore.settle` make the first attempt without the flow;
  only a failure starts it, handing over what :meth:`settle` classified.

The drivers (``_transport.py``) own every socket, sleep, lock and store call, and no logic.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import math
import time
from collections.abc import Callable, Collection, Generator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import httpx

from ._bodies import ORIGIN, keep, mark_redirect, no_rewind, origin, readable, recipient_of, redirected, replayer
from ._breaker import Breaker, Breakers, CircuitBreaker, check_attempt_timeout
from ._clock import monotonic
from ._config import host_key
from ._decide import _FIRST_ATTEMPT, AttemptRecord, Decision, Limits, backoff, decide
from ._errors import (
    CircuitOpen,
    ConfigurationError,
    CooldownActive,
    RequestFailed,
    ResendUnsafe,
    RetriesExhausted,
    RetryBudgetExhausted,
    TokenRefreshFailed,
)
from ._log import as_logger
from ._observe import Attempt, Observer
from ._overload import Bucket, Budgets, Cooldowns, RetryBudget, Snapshot, Stats
from ._placement import copy_of, token_in, with_token
from ._policy import Category, Classification, Policy, RetrySettings, impossible_limits
from ._redact import raise_from, redact_url, scrub
from ._token import AsyncTokenManager, TokenHookError, TokenManager

__all__ = [
    "EXTENSION",
    "Action",
    "Close",
    "FetchToken",
    "First",
    "Flow",
    "Lane",
    "Read",
    "RenewToken",
    "RetryCore",
    "Sleep",
    "StoreCall",
]

EXTENSION = "retrypolicy"
"""Key of per-request options in ``request.extensions`` and of the classification in
``response.extensions``."""

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# raised while the request is being built or its headers written: never sent, and sending it again
# would fail the same way (an illegal header value, a URL scheme no transport speaks)
_UNSENDABLE = (httpx.LocalProtocolError, httpx.UnsupportedProtocol)
_REQUEST_OPTIONS = frozenset({"retry", "max_attempts", "deadline", "idempotent", "attempt_timeout"})
_LEVELS = {"gave_up": "error", "token_reused": "debug", "circuit_closed": "info"}  # every other event is a warning
_UNSENT = (CooldownActive, CircuitOpen)  # raised before an attempt: no attempt of theirs in the history
_SHORT_HISTORY = 6  # attempts a message lists in full


# -- actions the flow yields -----------------------------------------------------------------


@dataclass(slots=True)  # actions: created per request, so not frozen (a frozen __init__ costs more)
class Read:
    response: httpx.Response
    limit: int  # max_body_bytes: how much of a body without a Content-Length to read
    plan: int  # what readable() said of the body: _bodies.LENGTH or BOUNDED, | ENCODED


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
    stale: str | None = field(repr=False)  # the refused token: never in a repr (a frame's locals are printed)


@dataclass(frozen=True, slots=True)
class First:
    """A first attempt the driver made on its own (see :meth:`RetryCore.ready`) that did not
    succeed: :meth:`RetryCore.flow` takes over from it as if it had made it itself, with the
    classification :meth:`RetryCore.settle` gave it (``None`` when sending raised ``error``)."""

    sent: httpx.Request
    started: float
    response: httpx.Response | None
    error: Exception | None = field(repr=False)  # its text may quote the URL it was sent to, token and all
    classification: Classification | None = field(default=None, repr=False)  # not scrubbed yet
    rewind: Callable[[], object] | None = no_rewind  # how to send the body again (see replayer), asked before sending


Action: TypeAlias = httpx.Request | Read | Close | Sleep | FetchToken | RenewToken | StoreCall
Flow: TypeAlias = Generator[Action, Any, httpx.Response]
Step: TypeAlias = Generator[Action, Any, None]


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
    breaker: Breaker | None = None  # the circuit breaker of the platform (or of this host), fed by each attempt
    cap: float | None = None  # a first attempt's httpx timeouts are capped to this (attempt_timeout, deadline)


class RetryCore:
    """Everything both transports share: policies, token managers, options and the flow."""

    observer: Observer | None = None  # retrypolicy.otel: told of each attempt of a request that failed once

    def __init__(
        self,
        policies: Mapping[str, Policy] | Policy,
        managers: Mapping[str, TokenManager | AsyncTokenManager],
        *,
        retry: RetrySettings | None,
        max_renewals: int,
        raise_on: Collection[Category],
        logger: Any,
        budget: RetryBudget | None = None,
        clock: Callable[[], float] = monotonic,
        wall_clock: Callable[[], float] = time.time,
        breaker: CircuitBreaker | str | None = "table",
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
        self._request_options: dict[tuple[object, ...], _Options] = {}  # per-request options, checked once
        self.budgets = Budgets(budget)
        self.cooldowns = Cooldowns(clock)
        self.breaker = breaker  # "table": each policy's own [breaker] settings
        self.breakers = Breakers(clock)
        self.stats = Stats()
        by_host: Mapping[str, Policy] = {"*": policies} if isinstance(policies, Policy) else policies
        self._lanes: dict[str, Lane] = {}  # host-only keys and "*": one dict lookup per request
        self._ports: dict[tuple[str, int], Lane] | None = None  # "host:port" keys, asked first if any
        for key, p in by_host.items():
            host, port = host_key(key)
            if port is None:
                self._lanes[host] = self._lane_of(p, key)
            else:
                if self._ports is None:
                    self._ports = {}
                self._ports[host, port] = self._lane_of(p, key)
        self._lane = self._lanes["*"] if isinstance(policies, Policy) else None  # no lookup per request

    def _lane_of(self, policy: Policy, key: str = "*") -> Lane:
        manager = self.managers.get(policy.platform)
        settings = policy.breaker if self.breaker == "table" else self.breaker
        assert settings is None or isinstance(settings, CircuitBreaker)
        base = self.retry or policy.retry
        problem = check_attempt_timeout(settings, base.attempt_timeout, "retry.attempt_timeout")
        if problem is not None:
            raise ConfigurationError(f"{policy.platform}: {problem}")
        # one breaker per platform, or per key where a policy mapping gives the platform several
        several = sum(p.platform == policy.platform for p in self._by_host().values()) > 1
        breaker = self.breakers.add(policy.platform, key if several else "*", settings)
        cap = min(base.attempt_timeout or math.inf, base.deadline or math.inf)  # a deadline of 0 caps nothing
        bucket = self.budgets.bucket(policy.platform, policy.budget)
        return Lane(policy, manager, bucket, breaker, None if cap == math.inf else cap)

    def _by_host(self) -> Mapping[str, Policy]:
        return {"*": self.policies} if isinstance(self.policies, Policy) else self.policies

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
        """The request's limits: the table's (or the transport's), and its own options if any."""
        raw = request.extensions.get(EXTENSION)
        base = self.retry or policy.retry
        if raw is None:  # the common case: table (or transport) defaults, computed once
            cached = self._default_options.get(policy.platform)
            if cached is None:
                limits = Limits(
                    base.max_attempts,
                    base.initial_delay,
                    base.max_delay,
                    base.deadline,
                    self.max_renewals,
                    min_delay=base.min_delay,
                    attempt_timeout=base.attempt_timeout,
                )
                cached = self._default_options[policy.platform] = _Options(limits, None)
            return cached
        if not isinstance(raw, Mapping):
            raise ConfigurationError(f"request.extensions[{EXTENSION!r}] must be a dict, got {type(raw).__name__}")
        # Apps send the same few option dicts again and again: each is checked once, then looked up
        # by its items with their types (True == 1, yet max_attempts=True is refused).
        key = (id(policy), *[(name, type(value), value) for name, value in raw.items()])
        try:
            found = self._request_options.get(key)
            hashable = True
        except TypeError:  # an unhashable value: checked below, and refused
            found, hashable = None, False
        if found is not None:
            return found
        found = self._checked_options(policy, request, raw, base)
        if hashable:
            if len(self._request_options) >= 256:
                self._request_options.clear()
            self._request_options[key] = found
        return found

    def _checked_options(
        self, policy: Policy, request: httpx.Request, raw: Mapping[str, Any], base: RetrySettings
    ) -> _Options:
        """The request's own options, checked, as limits (see :meth:`options`)."""
        unknown = set(raw) - _REQUEST_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"unknown option {sorted(unknown, key=str)[0]!r} in request.extensions[{EXTENSION!r}]; "
                f"known: {', '.join(sorted(_REQUEST_OPTIONS))}"
            )
        resend, idempotent = raw.get("retry", True), raw.get("idempotent")
        attempts = 1 if resend is False else raw.get("max_attempts", base.max_attempts)
        deadline = raw.get("deadline", base.deadline)
        if not isinstance(resend, bool):
            raise ConfigurationError(f"retry must be True or False, got {resend!r}")
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 100:
            raise ConfigurationError(f"max_attempts must be an integer from 1 to 100, got {attempts!r}")
        if not isinstance(deadline, (int, float)) or isinstance(deadline, bool) or not 0 <= deadline < math.inf:
            raise ConfigurationError(f"deadline must be a finite number of seconds >= 0, got {deadline!r}")
        if idempotent is not None and not isinstance(idempotent, bool):
            raise ConfigurationError(f"idempotent must be True or False, got {idempotent!r}")
        timeout = raw.get("attempt_timeout", base.attempt_timeout)
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 < timeout < math.inf
        ):
            raise ConfigurationError(f"attempt_timeout must be a finite number of seconds > 0, got {timeout!r}")
        problem = impossible_limits(attempts, base.min_delay, deadline, timeout, "with this request's options, ")
        if problem is None and "attempt_timeout" in raw:
            lane = self.lane_for(request)
            breaker = lane.breaker.settings if lane is not None and lane.breaker is not None else None
            problem = check_attempt_timeout(breaker, timeout, "this request's attempt_timeout")
        if problem is not None:
            raise ConfigurationError(problem)
        limits = Limits(
            attempts,
            base.initial_delay,
            base.max_delay,
            float(deadline),
            self.max_renewals,
            resend,
            min_delay=base.min_delay,
            attempt_timeout=None if timeout is None else float(timeout),
        )
        return _Options(limits, idempotent)

    def secrets(self, *extra: str | None) -> list[str]:
        values = [m.current() for m in self.managers.values()]
        return [v for v in (*values, *extra) if v]

    # -- the fast path: a first attempt that succeeds never starts the flow

    def ready(self, request: httpx.Request) -> tuple[httpx.Request, Lane, Callable[[], object] | None] | None:
        """The request to send at once, its policy's :class:`Lane` and how to send its body again
        (:func:`replayer`, asked before sending: ``None`` if it cannot be), when nothing before the
        first attempt needs the flow: no cooldown running, no circuit breaker open, no shared
        cooldowns due to be pulled or refills due to be pushed, not a hop of a redirect chain,
        and, with a token hook, a fresh token that has worked, which the request either lacks or
        already carries. ``None``: drive :meth:`flow` instead. No I/O, nothing to undo.

        The driver sends it and asks :meth:`settle` (reading the body first if told to); if that
        says no (or sending raised), it drives ``flow(request, First(...))``, which takes over.
        """
        lane = self._lane if self._lane is not None else self.lane_for(request)  # no call with one policy
        if lane is None:
            return None  # a host no policy covers: the flow passes it through
        cooldowns, budgets, breakers = self.cooldowns, self.budgets, self.breakers
        cap = lane.cap
        if EXTENSION in request.extensions:  # validated before sending; only the timeout cap is the first attempt's
            cap = _first_cap(self.options(lane.policy, request).limits)
        if (
            ORIGIN in request.extensions  # a hop of a redirect chain: the flow checks its origin
            or not cooldowns.quiet
            or not breakers.quiet  # a circuit breaker is open or half-open: the flow's gate decides
            or (
                (cooldowns.store is not None or budgets.store is not None or breakers.store is not None)
                and self._sync_due()
            )
        ):
            return None
        rewind = no_rewind if type(request.stream) is httpx.ByteStream else replayer(request.stream)
        manager = lane.manager
        if manager is not None:
            placement = lane.policy.token
            carried = token_in(request, placement)
            if carried is not None:  # the request brings a token (an SDK that builds its own URLs)
                if not manager.worked(carried) or manager.is_rejected(carried):
                    return None  # the flow records its first success, or replaces a refused one
                # else sent as it is
            else:
                token = manager.fresh()
                if token is None or not manager._state.proven:  # one flag, no lock (see TokenManager.succeeded)
                    return None  # a renewal is due, or the token has not worked yet: the flow records its first success
                request = with_token(request, placement, token)
        timeout = request.extensions.get("timeout")
        if timeout is not None and cap is not None:  # the attempt timeout, or the deadline, caps each one
            for value in timeout.values():  # inlined _within(): one loop over httpx's four timeouts
                if value is None or value > cap:
                    request = _timed(request, _capped(timeout, cap))
                    break
        return request, lane, rewind

    def _sync_due(self) -> bool:
        """Are shared cooldowns due to be pulled, or refills to be pushed (both by the flow)?
        Both gates asked with one clock read: they run on the core's clock (``share_state`` gives
        the budgets' gate this clock)."""
        now, cooldowns, budgets, breakers = self.clock(), self.cooldowns, self.budgets, self.breakers
        return (
            (cooldowns.store is not None and now >= cooldowns.pull_gate.next_at)
            or (budgets.store is not None and now >= budgets.push_gate.next_at)
            or (breakers.store is not None and now >= breakers.pull_gate.next_at)
        )

    def settle(self, lane: Lane, response: httpx.Response, request: httpx.Request) -> Classification | Read | None:
        """``None``, and counted, when the fast path's response is a success to return as it is;
        its :class:`Classification` when it is not (the driver hands it to the flow in
        :class:`First`, so nothing is classified twice); a :class:`Read` when the driver must read
        the body first (small JSON or text, see :func:`readable`) and hand it to :meth:`settled`."""
        if hasattr(response, "_content"):
            return self.settled(lane, response, request, response._content)  # what response.content returns
        limit = lane.policy.retry.max_body_bytes
        plan = readable(response, limit)
        if plan:
            return Read(response, limit, plan)
        return self.settled(lane, response, request, None)  # a download, or a long body: its status decides

    def settled(
        self, lane: Lane, response: httpx.Response, request: httpx.Request, content: bytes | None
    ) -> Classification | None:
        """:meth:`settle` with the body (``None``: not read)."""
        failed = lane.policy.classify_parts(response.status_code, content, headers=response.headers)
        if failed is not None:
            keep(response, content)  # the flow and its exceptions read the body as response.content
            return failed
        if 300 <= response.status_code < 400:
            mark_redirect(request, response)
        next(self.stats.first_try)
        if lane.bucket is not None:
            next(lane.bucket.successes)  # Budgets.success(), inlined: the refill is added when read
        breaker = lane.breaker
        if breaker is not None and not next(breaker.successes) & 63:  # Breakers.answered(), inlined
            self.breakers.tally(breaker)  # every 64th success enters the window with a timestamp
        return None

    def interrupted(self) -> None:
        """Count a fast-path attempt cut short by a ``BaseException`` (the flow counts its own)."""
        with self.stats.lock:
            self.stats.requests += 1
            self.stats.attempts += 1

    # -- the flow

    def flow(self, request: httpx.Request, first: First | None = None) -> Flow:
        """The life of one logical request, as a sans-IO generator of actions (see the module).

        With ``first``, the flow takes over after a first attempt the driver made through
        :meth:`ready`, and goes on exactly as if it had made it.
        """
        lane = self._following(request)
        if lane is None:
            return (yield from _pass_through(request))
        ex = _Exchange(self, lane, request, first)
        observer = self.observer
        try:
            yield from ex.prepare()
            while True:
                yield from ex.gate()
                failed = yield from ex.attempt()
                if failed is None:
                    if observer is not None and ex.attempts > 1:
                        ex.observe(observer, None, None)
                    yield from ex.heard(None)  # the circuit breaker counts it (a probe's success closes it)
                    return ex.succeed()
                c, decision = yield from ex.judge(failed)
                if observer is not None:
                    ex.observe(observer, c, decision)
                if decision.action == "give_up":
                    return (yield from ex.give_up(c, decision))
                yield from ex.act(c, decision)
        finally:  # the counters take one lock per request, however it ends (cancellation included)
            ex.count()
            if ex.probe:  # a probe that ended without an outcome (cancelled): its place is free again
                self.breakers.release(ex.probe)

    def _following(self, request: httpx.Request) -> Lane | None:
        """The request's lane, unless it follows a redirect to another origin than the one the
        chain started at: that hop gets no token of ours and no classification by our table."""
        lane = self.lane_for(request)
        chain = request.extensions.get(ORIGIN)
        if chain is None or lane is None:
            return lane
        if chain != origin(request.url):
            return None
        del request.extensions[ORIGIN]  # back at the origin: a request like any other
        return lane

    def snapshot(self) -> Snapshot:
        """Counters since the transport was created, the budget levels and the running cooldowns."""
        st = self.stats
        with st.lock:
            quick = st.first_tries()
            counts = (st.requests + quick, st.attempts + quick, st.retries, st.renewals, st.succeeded + quick)
            gave_up = dict(st.gave_up)
        return Snapshot(
            *counts,
            gave_up,
            budget=self.budgets.levels(),
            cooldowns=self.cooldowns.active(),
            circuits=self.breakers.status(),
        )

    def circuit_event(self, event: str, breaker: Breaker, **fields: Any) -> None:
        """Log a circuit breaker's change (``circuit_opened``: warning; ``circuit_closed``: info)."""
        cause = breaker.cause
        base: dict[str, Any] = {"platform": breaker.platform, "host": breaker.host, "state": breaker.state}
        if event == "circuit_opened" and isinstance(cause, Classification):
            base.update(code=cause.code, category=cause.category.value, description=cause.description)
        base.update(fields)
        with contextlib.suppress(Exception):  # logging must not fail the request
            getattr(self.log, _LEVELS.get(event, "warning"))(f"retrypolicy.{event}", **base)

    def emit(
        self, event: str, c: Classification, method: str, url: str, attempt: int, elapsed: float, **extra: Any
    ) -> None:
        """Log one event. A logger that raises never fails the request it reports on."""
        fields: dict[str, Any] = {
            "platform": c.platform,
            "code": c.code,
            "category": c.category.value,
            "message": c.message,
            "description": c.description,
            "attempt": attempt,
            "method": method,
            "url": url,
            "request_id": c.request_id,
            "status_code": c.status_code,
            "elapsed": round(elapsed, 3),
        }
        if c.subcode is not None:
            fields["subcode"] = c.subcode
        if c.extra:
            fields["extra"] = dict(c.extra)
        if c.remediation and event == "gave_up":
            fields["remediation"] = c.remediation
        fields.update(extra)
        if event == "token_renewed" and extra.get("hook_called") is False:
            event = "token_reused"  # took the token another request renewed: one warning per hook call
        with contextlib.suppress(Exception):  # logging must not turn a retry into a failure
            getattr(self.log, _LEVELS.get(event, "warning"))(f"retrypolicy.{event}", **fields)


def _pass_through(request: httpx.Request) -> Flow:
    """A request no policy of ours covers (another host, or a redirect to another origin)."""
    passed: httpx.Response = yield request
    if ORIGIN in request.extensions and not redirected(passed):
        request.extensions.pop(ORIGIN, None)  # the redirect chain ends here
    return passed


class _Exchange:
    """One logical request in the flow: what is worked out once and carried from attempt to
    attempt. Its methods are the flow's steps; each yields the actions it needs."""

    def __init__(self, core: RetryCore, lane: Lane, asked: httpx.Request, first: First | None) -> None:
        self.core, self.lane, self.asked, self.first = core, lane, asked, first
        self.policy, self.manager = lane.policy, lane.manager
        opts = core.options(lane.policy, asked)  # the table's defaults come from its cache
        self.limits, self.idempotent = opts.limits, opts.idempotent
        self.request = first.sent if first is not None else asked  # ready() filled in a fresh token
        self.started = first.started if first is not None else core.clock()
        self.sent_at = self.started  # when the current attempt started (kept only for an observer)
        self.token: str | None = None
        self.proofs = lane.manager._state.proofs if lane.manager is not None else 0  # see hook_works()
        self.rewind: Callable[[], object] | None = no_rewind
        self.state = _FIRST_ATTEMPT
        self.attempts = self.succeeded = 0
        self.recipient: str | None = None
        self.recipient_read = not lane.policy.recipient  # read the body for it at most once, if needed
        self.exempt = False  # the request that started a cooldown resends after its own wait
        self.response: httpx.Response | None = None
        self.error: Exception | None = None
        self.sent = True
        self._url: str | None = None
        self.probe: Breaker | None = None  # the circuit breaker the attempt under way probes
        self.timeout = asked.extensions.get("timeout")  # the client's httpx timeouts, before any cap
        self.cause: Classification | None = None  # what the latest attempt failed with

    # -- the steps

    def prepare(self) -> Step:
        """Fill in the token (or replace one the platform refused), learn whether the body can
        be sent again (asked before sending: a transport may swap the stream once read), and
        push this process's retry-budget refills to a shared store when due."""
        manager, placement = self.manager, self.policy.token
        if manager is not None:
            self.token = token_in(self.request, placement)
            if self.first is None and (self.token is None or manager.is_rejected(self.token)):
                try:
                    self.token = yield FetchToken(manager)
                except TokenHookError as exc:
                    c = exc.classification or _token_classification(self.policy)
                    raise_from(self.failed(TokenRefreshFailed, c, self.hook_trouble(exc)), None)
                self.request = with_token(self.request, placement, self.token)
        self.rewind = replayer(self.request.stream) if self.first is None else self.first.rewind
        budgets = self.core.budgets
        if budgets.store is not None and budgets.claim_push():  # before sending: nothing to clean up
            yield StoreCall(budgets.push)

    def gate(self) -> Step:
        """Fail fast, unsent, while a cooldown covers the request (``CooldownActive``), when its
        deadline has passed, or while its circuit breaker is open (``CircuitOpen``)."""
        if self.first is not None:  # the driver made the first attempt: nothing to check before it
            return
        if self.attempts and self.limits.deadline > 0 and self.core.clock() - self.started >= self.limits.deadline:
            assert self.cause is not None  # a retry: judge() saw the attempt before
            reason = f"the {self.limits.deadline:g} s deadline passed before attempt {self.attempts + 1} could be sent"
            raise_from(self.failed(RetriesExhausted, self.cause, reason, unsent=True), None)
        yield from self.cooling()
        if self.lane.breaker is not None:
            yield from self.circuit(self.lane.breaker)

    def cooling(self) -> Step:
        """Fail fast, unsent, while a cooldown covers the request (``CooldownActive``)."""
        cooldowns, exempt = self.core.cooldowns, self.exempt
        self.exempt = False
        if exempt or not cooldowns.running:  # nothing to check on the hot path
            return
        if cooldowns.store is not None and cooldowns.claim_pull():
            yield StoreCall(cooldowns.pull)
        blocked = cooldowns.blocking(self.policy.platform, self.recipient_of())
        if blocked is not None:
            left, cause, scope = blocked
            assert isinstance(cause, Classification)
            reason = f"an {scope} cooldown started by code {cause.code} has {left:.3g} s left"
            raise_from(self.failed(CooldownActive, cause, reason, remaining=left), None)

    def circuit(self, breaker: Breaker) -> Step:
        """Fail fast, unsent, while the circuit breaker is open or its probes are out
        (``CircuitOpen``); once it is half-open, the attempt may be a probe (asked of the shared
        store, if any, so that all processes together send ``probes`` of them)."""
        core, breakers = self.core, self.core.breakers
        if breakers.store is not None and breakers.claim_pull():
            for event, b, fields in (yield StoreCall(breakers.pull)) or ():
                core.circuit_event(event, b, **fields)
        if breakers.quiet:  # every breaker closed: nothing to check
            return
        verdict, left = breakers.admit(breaker)
        if verdict == "probe" and breakers.shared(breaker):
            verdict, left = yield StoreCall(functools.partial(breakers.claim_probe, breaker))
        if verdict == "probe":
            self.probe = breaker
            return
        if verdict == "pass":
            return
        where = breaker.platform if breaker.host is None else f"{breaker.platform} at {breaker.host}"
        if verdict == "open":
            reason = f"the circuit breaker of {where} is open; it lets a probe through in {left:.3g} s"
        else:
            reason = f"the circuit breaker of {where} is half-open and its probes are out"
        cause = breaker.cause if isinstance(breaker.cause, Classification) else _circuit_classification(self.policy)
        raise_from(self.failed(CircuitOpen, cause, reason, remaining=left), None)

    def attempt(self) -> Generator[Action, Any, Classification | None]:
        """Send once, or take over the driver's first attempt: ``None`` for a success, else
        what failed, classified."""
        first, self.first = self.first, None
        self.attempts += 1
        if first is None and self.core.observer is not None:
            self.sent_at = self.core.clock()
        self.response, self.error, self.sent = None, None, True
        try:
            if first is None:
                self.response = yield self.timed()
                if not hasattr(self.response, "_content"):
                    limit = self.policy.retry.max_body_bytes
                    plan = readable(self.response, limit)
                    if plan:
                        keep(self.response, (yield Read(self.response, limit, plan)))
            else:
                self.response = first.response
                if first.error is not None:
                    raise first.error
                if first.classification is not None:
                    return first.classification  # settle() classified it: not classified twice
        except httpx.TransportError as exc:
            if self.response is not None:
                yield Close(self.response)
                self.response = None
            self.sent = not isinstance(exc, (_NEVER_SENT, _UNSENDABLE))
            self.error = exc
            return _transport_classification(self.policy, exc, self.sent)
        assert self.response is not None
        return self.policy.classify(self.response)

    def timed(self) -> httpx.Request:
        """The request to send, its httpx timeouts capped by the attempt timeout and by the time
        left before the deadline (as google-api-core caps each attempt's timeout)."""
        request, limits = self.request, self.limits
        cap = limits.attempt_timeout or math.inf
        if limits.deadline > 0:  # a deadline of 0 allows no retry, and leaves the first attempt alone
            left = limits.deadline - (self.core.clock() - self.started)
            if left > 0:
                cap = min(cap, left)
        timeout = self.timeout
        if timeout is None:
            return request
        wanted = timeout if _within(timeout, cap) else _capped(timeout, cap)
        return request if request.extensions.get("timeout") == wanted else _timed(request, wanted)

    def heard(self, c: Classification | None) -> Step:
        """Tell the circuit breaker how the attempt went: a retryable failure (a timeout and a
        connection error included) counts against the platform; a success, or an answer of any
        other category (the platform is up), counts for it; a request that could not be built
        counts for nothing. A probe's outcome closes the breaker, or opens it again."""
        breaker, probe = self.lane.breaker, self.probe
        self.probe = None
        if breaker is None:
            return
        core, breakers = self.core, self.core.breakers
        if c is not None and c.category is Category.RETRYABLE:
            opened = breakers.failure(breaker, c, probe is not None)
            if opened is not None:
                core.circuit_event(
                    "circuit_opened",
                    breaker,
                    seconds=round(opened.seconds, 3),
                    failures=opened.failures,
                    calls=round(opened.calls, 1),
                    reopened=opened.reopened,
                    method=self.request.method,
                    url=self.url,
                )
                if breakers.shared(breaker):
                    yield StoreCall(functools.partial(breakers.publish_open, breaker, opened.seconds, c))
        elif c is not None and c.source == "transport":  # never sent: the platform said nothing
            if probe is not None:
                breakers.release(probe)
        elif breakers.answered(breaker, probe is not None):
            core.circuit_event("circuit_closed", breaker, method=self.request.method, url=self.url)
            if breakers.shared(breaker):
                yield StoreCall(functools.partial(breakers.publish_close, breaker))

    def succeed(self) -> httpx.Response:
        response = self.response
        assert response is not None
        self.core.budgets.success(self.policy.platform, self.policy.budget)
        self.succeeded = 1
        if self.manager is not None:
            self.manager.succeeded(self.token)  # the token worked: its refusal later is no loop
        if 300 <= response.status_code < 400:
            mark_redirect(self.asked, response)
        return response

    def judge(self, c: Classification) -> Generator[Action, Any, tuple[Classification, Decision]]:
        """Scrub what the platform said of secrets, start the cooldown it asks for, and decide
        (:func:`decide`, pure); a retry must also find the retry budget not empty."""
        core, manager, state = self.core, self.manager, self.state
        if self.token is None:
            self.token = token_in(self.request, self.policy.token)
        secrets = core.secrets(self.token)
        c = replace(c, message=scrub(c.message, secrets), details=scrub(c.details, secrets) if c.details else c.details)
        self.cause = c
        yield from self.heard(c)
        if c.cooldown is not None:
            yield from self.cool_down(c)
        safe, why = self.resend_safety(c)
        decision = decide(
            c,
            state,
            self.limits,
            elapsed=core.clock() - self.started,
            resend_safe=safe,
            unsafe_reason=why,
            can_renew=manager is not None,
            retry_after=c.wait_seconds(core.wall_clock()),
            wait=backoff(self.limits, state.attempt) if c.category is Category.RETRYABLE else None,
            token_worked=c.category is Category.TOKEN_REFRESH and manager is not None and self.hook_works(),
            token_current=manager is None or self.token is None or manager.current() == self.token,
            charged=None if manager is None else sum(not manager.worked(t) for t in state.refused),
        )
        if decision.action == "retry":
            budgets, platform = core.budgets, self.policy.platform
            spend = functools.partial(budgets.spend, platform, self.policy.budget)
            if not ((yield StoreCall(spend)) if budgets.store is not None else spend()):
                decision = Decision("give_up", error=RetryBudgetExhausted, reason="the retry budget is empty")
        return c, decision

    def act(self, c: Classification, decision: Decision) -> Step:
        """Renew the token or wait, then make the body ready to be sent again."""
        if self.response is not None:
            yield Close(self.response)
        if decision.action == "renew":
            decision = yield from self.renew(c, decision)
        else:
            with self.core.stats.lock:
                self.core.stats.retries += 1
            self.emit("retry_scheduled", c, delay=round(decision.delay, 3))
            yield Sleep(decision.delay)
        try:
            self.rewind()  # type: ignore[misc]  # not None: an unreplayable body is never resent
        except (OSError, ValueError) as exc:  # a file closed or broken meanwhile
            reason = f"the request body's file could not be rewound ({type(exc).__name__})"
            raise_from(self.failed(ResendUnsafe, c, reason), None)
        self.state = self.state.next(c, decision)

    def give_up(self, c: Classification, decision: Decision) -> Flow:
        """Hand back the response (a category not in ``raise_on``) or raise the decision's error,
        chained to a scrubbed stand-in of what went wrong; renew the token first if the request
        stops only because it cannot be resent."""
        assert decision.error is not None
        if decision.renew and self.manager is not None:
            yield from self.renew_for_later(c)
        response = self.response
        if response is not None and c.category not in self.core.raise_on:
            self.failed(decision.error, c, decision.reason)
            response.extensions = {**response.extensions, EXTENSION: c}
            return response
        if response is not None:
            yield Close(response)
        error = self.failed(decision.error, c, decision.reason, response=response)
        raise_from(error, self.error, self.core.secrets(self.token))  # a stand-in of the cause: no chain

    # -- parts of the steps

    def cool_down(self, c: Classification) -> Step:
        """Start the cooldown the code asks for (shared through the store, if any)."""
        assert c.cooldown is not None
        scope, cooldowns = c.cooldown.scope, self.core.cooldowns
        recipient = self.recipient_of() if scope == "recipient" else None
        if scope == "app" or recipient is not None:
            seconds = c.cooldown.duration(self.core.wall_clock())
            key = recipient or ""
            if cooldowns.start(self.policy.platform, scope, key, seconds, c):
                yield StoreCall(functools.partial(cooldowns.publish, self.policy.platform, scope, key, seconds, c))
            self.exempt = True
            self.emit("cooldown_started", c, scope=scope, seconds=round(seconds, 3))

    def resend_safety(self, c: Classification) -> tuple[bool, str]:
        """Could sending again duplicate the request, or send another body? (True, "") if not."""
        request, idempotent = self.request, self.idempotent
        if idempotent is None:
            idempotent = request.method in IDEMPOTENT_METHODS or any(
                fnmatch.fnmatchcase(request.url.path, glob) for glob in self.policy.idempotent_paths
            )
        if c.ambiguous and not idempotent:
            return False, f"{request.method} may have been carried out; resending could duplicate it"
        if self.sent and self.rewind is None:
            return False, "the request body is a stream that cannot be sent again"
        return True, ""

    def renew(self, c: Classification, decision: Decision) -> Generator[Action, Any, Decision]:
        """Renew the refused token (single-flight, in the token manager) and put the new one in."""
        assert self.manager is not None
        try:
            fresh, hook_called = yield RenewToken(self.manager, self.token)
        except TokenHookError as exc:
            raise_from(self.failed(TokenRefreshFailed, exc.classification or c, self.hook_trouble(exc)), None)
        if hook_called:  # False: another request had renewed already, and this one takes that token
            with self.core.stats.lock:
                self.core.stats.renewals += 1
            decision = replace(decision, hook_called=True)  # counted by state.next()
        self.state = replace(self.state, refused=(*self.state.refused, self.token))  # see decide(charged=)
        self.emit("token_renewed", c, hook_called=hook_called)
        self.token = fresh
        self.request = with_token(self.request, self.policy.token, fresh)
        return decision

    def renew_for_later(self, c: Classification) -> Step:
        """Renew a refused token for the requests that follow, when this one is not resent (its
        body cannot be sent again, or retry is off for it). A hook failure is logged; the
        request's own error is what the caller gets."""
        assert self.manager is not None
        try:
            _fresh, hook_called = yield RenewToken(self.manager, self.token)
        except TokenHookError as exc:
            self.emit("token_renewal_failed", c, reason=self.hook_trouble(exc))
            return
        if hook_called:
            with self.core.stats.lock:
                self.core.stats.renewals += 1
        self.emit("token_renewed", c, hook_called=hook_called, resent=False)

    def observe(self, observer: Observer, c: Classification | None, decision: Decision | None) -> None:
        """Tell the observer about the attempt just made (``c`` None: it succeeded); it never
        fails the request."""
        url, response, error = self.request.url, self.response, self.error
        attempt = Attempt(
            self.policy.platform,
            self.request.method,
            self.url,
            url.scheme,
            url.host,
            url.port,
            self.attempts,
            self.sent_at,
            self.core.clock(),
            None if response is None else response.status_code,
            c,
            None if decision is None else decision.action,
            0.0 if decision is None else decision.delay,
            None if error is None else f"{type(error).__module__}.{type(error).__qualname__}",
        )
        with contextlib.suppress(Exception):
            observer.attempted(attempt)

    def hook_works(self) -> bool:
        """Is a refusal of this request's token no sign of a loop? It is not when the token carried
        a success, or when any token carried its first success since the request began: the
        hook's tokens work, and this one was replaced or expired under concurrent sends (the
        loop ``max_renewals`` stops is every new token refused at once, by every request)."""
        manager = self.manager
        assert manager is not None
        state = manager._state
        return manager.worked(self.token) or state.proofs > self.proofs or state.hook_works()

    def recipient_of(self) -> str | None:
        if not self.recipient_read:
            self.recipient, self.recipient_read = recipient_of(self.request, self.policy), True
        return self.recipient

    def hook_trouble(self, exc: TokenHookError) -> str:
        return scrub(str(exc), self.core.secrets(self.token))  # a hook's error may quote a token

    @property
    def url(self) -> str:
        """The request's URL, redacted once (a renewal changes only the token in it)."""
        if self._url is None:
            self._url = redact_url(self.request.url)
        return self._url

    def emit(self, event: str, c: Classification, **extra: Any) -> None:
        elapsed = self.core.clock() - self.started
        attempt = self.attempts if event == "gave_up" else self.state.attempt
        self.core.emit(event, c, self.request.method, self.url, attempt, elapsed, **extra)

    def failed(
        self, error: type[RequestFailed], c: Classification, reason: str, *, unsent: bool = False, **extra: Any
    ) -> RequestFailed:
        """Count and log the give-up, and build its exception (the caller raises it). ``unsent``:
        given up before an attempt (as ``CooldownActive`` and ``CircuitOpen`` always are), so
        the history gets no record for it."""
        with self.core.stats.lock:
            self.core.stats.gave_up[c.category.value] += 1
        self.emit("gave_up", c, reason=reason, error=error.__name__)
        history = self.state.history
        if error not in _UNSENT and not unsent and self.attempts:
            history = (*history, AttemptRecord.of(self.state.attempt, c, "give_up", 0.0))
        return error(
            _message(c, reason, self.attempts, self.request.method, self.url, history),
            classification=c,
            attempts=self.attempts,
            url=self.url,
            history=history,
            **extra,
        )

    def count(self) -> None:
        stats = self.core.stats
        with stats.lock:
            stats.requests += 1
            stats.attempts += self.attempts
            stats.succeeded += self.succeeded


def _message(
    c: Classification, reason: str, attempts: int, method: str, url: str, history: tuple[AttemptRecord, ...]
) -> str:
    code = "no code" if c.code is None else f"code {c.code}" + (f"/{c.subcode}" if c.subcode is not None else "")
    text = f"{c.platform} {code} [{c.category.value}]: {c.description}"
    if c.message:
        text += f" | vendor message: {c.message}"
    if c.remediation:
        text += f" | what to do: {c.remediation}"
    if c.extra:  # e.g. Telegram's migrate_to_chat_id: what the caller needs to send again elsewhere
        text += " | " + ", ".join(f"{name}: {scrub(str(value))}" for name, value in c.extra.items())
    text += f" | gave up: {reason}; {attempts} attempt(s); {method} {url}"
    if 1 < len(history) <= _SHORT_HISTORY:
        text += " | history: " + "; ".join(map(str, history))
    return text


def _transport_classification(policy: Policy, exc: httpx.TransportError, sent: bool) -> Classification:
    name = type(exc).__name__
    message = scrub(str(exc))[:200] or name
    if isinstance(exc, _UNSENDABLE):
        description = f"{name}: the request could not be sent as built; it was never sent"
        return Classification(policy.platform, None, Category.FATAL, message, description, source="transport")
    description = f"{name}: " + ("the request may have reached the server" if sent else "the request was never sent")
    return Classification(
        policy.platform, None, Category.RETRYABLE, message, description, ambiguous=sent, source="transport"
    )


def _first_cap(limits: Limits) -> float | None:
    """What caps a first attempt's httpx timeouts: the attempt timeout and the deadline (0: none)."""
    cap = min(limits.attempt_timeout or math.inf, limits.deadline or math.inf)
    return None if cap == math.inf else cap


def _within(timeout: Any, cap: float) -> bool:
    """Is every httpx timeout in ``timeout`` set and at most ``cap`` (nothing to cap)?"""
    try:
        for value in timeout.values():
            if value is None or value > cap:
                return cap == math.inf
    except (AttributeError, TypeError):  # not httpx's dict of timeouts: left to the inner transport
        return True
    return True


def _capped(timeout: Mapping[str, float | None], cap: float) -> dict[str, float | None]:
    return {name: cap if value is None or value > cap else value for name, value in timeout.items()}


def _timed(request: httpx.Request, timeout: Mapping[str, float | None]) -> httpx.Request:
    """A shallow copy of the request with these httpx timeouts: the client's own request keeps
    its own, so each attempt is capped afresh."""
    copy = copy_of(request)
    copy.extensions["timeout"] = timeout
    return copy


def _circuit_classification(policy: Policy) -> Classification:
    description = "The circuit breaker is open: recent attempts failed"
    return Classification(policy.platform, None, Category.RETRYABLE, "", description, source="transport")


def _token_classification(policy: Policy) -> Classification:
    description = "Could not obtain a token before sending"
    return Classification(policy.platform, None, Category.TOKEN_REFRESH, "", description, source="transport")
