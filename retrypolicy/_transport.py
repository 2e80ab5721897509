"""RetryTransport and AsyncRetryTransport: thin drivers of the shared flow in ``_core``."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Literal, TypeAlias

import anyio
import anyio.to_thread
import httpx

from ._bodies import aread_small, hand_back, read_small
from ._breaker import CircuitBreaker, check_breaker, share_breakers
from ._clock import sleep_for, waited
from ._config import CertArg, ProxyArg, VerifyArg, host_key, inner_transport
from ._core import Close, FetchToken, First, Flow, Read, RenewToken, RetryCore, Sleep, StoreCall
from ._errors import ConfigurationError, RetryPolicyError
from ._load import load_policy
from ._log import as_logger
from ._observe import Binds, Observer
from ._overload import RetryBudget, Snapshot
from ._policy import Category, Policy, RetrySettings, categories_of
from ._store import StoreGuard, TokenStore, check_store, share_state, store_keys
from ._token import AnyTokenHook, AsyncTokenManager, TokenHook, TokenManager

__all__ = ["AsyncRetryTransport", "RetryTransport"]

PolicyLike: TypeAlias = str | os.PathLike[str] | Policy
PolicyArg: TypeAlias = PolicyLike | Mapping[str, PolicyLike]


def _policies(policy: PolicyArg) -> Policy | dict[str, Policy]:
    """The policy, or the policies by host with their keys checked and written as hosts compare
    (``"API.Weixin.QQ.com"`` -> ``"api.weixin.qq.com"``, see :func:`host_key`)."""
    if not isinstance(policy, Mapping):
        return _policy(policy, None)
    if not policy:
        raise ConfigurationError("policy mapping is empty; map hosts to policies, e.g. {'api.weixin.qq.com': 'wechat'}")
    policies: dict[str, Policy] = {}
    keys: dict[tuple[str, int | None], object] = {}
    for key, value in policy.items():
        host, port = host_key(key)
        if (host, port) in keys:
            raise ConfigurationError(f"policy mapping keys {keys[host, port]!r} and {key!r} name the same host")
        keys[host, port] = key
        name = f"[{host}]" if ":" in host else host  # an IPv6 address
        policies[name if port is None else f"{name}:{port}"] = _policy(value, key)
    return policies


def _policy(value: object, key: object) -> Policy:
    if not isinstance(value, (str, os.PathLike, Policy)):
        what = "policy" if key is None else f"policy[{key!r}]"
        also = ", or a mapping of hosts to those" if key is None else ""
        raise ConfigurationError(
            f"{what} must be a built-in name such as 'wechat', a path to a TOML file or a retrypolicy.Policy"
            f"{also}, got {type(value).__name__}"
        )
    return load_policy(value)


def _hooks(token: object, policies: Policy | dict[str, Policy]) -> dict[str, Any]:
    platforms = _platforms(policies)
    if token is None:
        return {}
    if isinstance(token, Mapping):
        unknown = set(token) - platforms
        if unknown:
            raise ConfigurationError(
                f"token hook given for {sorted(unknown, key=str)[0]!r}, which no policy of this transport uses"
            )
        for platform, hook in token.items():
            if not callable(hook):
                raise ConfigurationError(f"token[{platform!r}] must be {_HOOK}, got {type(hook).__name__}")
        return dict(token)
    if not callable(token):  # never the value in the message: it may be a token
        raise ConfigurationError(
            f"token must be {_HOOK} or {{platform: hook}}, got {type(token).__name__} "
            "(for a fixed token: token=lambda: TOKEN)"
        )
    if len(platforms) > 1:
        raise ConfigurationError("several platforms: pass token={platform: hook, ...}")
    return {next(iter(platforms)): token}


# What a request through the transport ends with when it fails: ours, or httpx's passed on. They
# leave the transport without the frames they came through: those frames' locals hold what a
# request handled (the copies sent with the token in the URL, the hook's tokens to scrub, vendor
# messages not yet scrubbed), and Sentry (include_local_variables, on by default), structlog's
# dict_tracebacks (show_locals, on by default) and pytest --showlocals print the repr of each
# local of each frame. The exception's own text, history and classification say what happened.
_EXPECTED = (RetryPolicyError, httpx.HTTPError)


def _check_rotation(hooks: Mapping[str, object], store: TokenStore | None) -> None:
    """A hook that rotates a single-use refresh token (``SlackRotatingToken``) must keep it where
    the transport shares the access token: with the store shared and the refresh token in each
    process's hook, the first process to renew uses up the refresh token the others hold, and
    their next renewal fails for good (``invalid_refresh_token``: a reinstall)."""
    for platform, hook in hooks.items():
        if store is not None and getattr(hook, "rotates", False) is True and getattr(hook, "store", None) is None:
            raise ConfigurationError(
                f"token[{platform!r}]: {type(hook).__name__} keeps a single-use refresh token; the transport "
                f"shares its access token through token_store={type(store).__name__}, so give the hook that "
                f"store too ({type(hook).__name__}(..., store=...)), or every other process would renew with "
                "a refresh token already used up"
            )


_HOOK = "a token hook (a callable returning a str or a retrypolicy.Token)"
_DEFAULT_BUDGET = RetryBudget()


def _budget(budget: object) -> RetryBudget | None:
    if budget is not None and not isinstance(budget, RetryBudget):
        raise ConfigurationError(f"budget must be a retrypolicy.RetryBudget or None, got {type(budget).__name__}")
    return budget


def _platforms(policies: Policy | dict[str, Policy]) -> set[str]:
    return {policies.platform} if isinstance(policies, Policy) else {p.platform for p in policies.values()}


def _build_core(
    manager_class: type[TokenManager] | type[AsyncTokenManager],
    *,
    policy: PolicyArg,
    token: Any,
    retry: RetrySettings | None,
    max_renewals: int,
    raise_on: Collection[Category | str] | None,
    token_timeout: float,
    budget: RetryBudget | None,
    logger: Any,
    token_store: TokenStore | None,
    breaker: object = "table",
    telemetry: Binds | None = None,
) -> RetryCore:
    """Validate the arguments and build the shared core; the transports differ only in managers."""
    _check(retry, max_renewals, token_timeout)
    categories = _raise_on(raise_on)
    budget = _budget(budget)
    log = as_logger(logger)  # a stdlib logging.Logger gets its adapter here, once
    policies = _policies(policy)
    store = check_store(token_store)
    hooks = _hooks(token, policies)
    _check_rotation(hooks, store)
    guard = StoreGuard(store, logger=log) if store is not None else None
    names = store_keys(store, _platforms(policies), hooks)
    managers = {
        p: manager_class(h, timeout=token_timeout, store=store, key=names[p], guard=guard) for p, h in hooks.items()
    }
    core = RetryCore(
        policies,
        managers,
        retry=retry,
        max_renewals=max_renewals,
        raise_on=categories,
        logger=log,
        budget=budget,
        breaker=check_breaker(breaker),
    )
    if store is not None and guard is not None:
        share_state(store, names, guard, core.budgets, core.cooldowns)
        share_breakers(store, names, guard, core.breakers)
    core.observer = _observer(telemetry, core)
    return core


def _observer(telemetry: object, core: RetryCore) -> Observer | None:
    """The observer of the core's attempts (``retrypolicy.otel.Telemetry``), or None."""
    if telemetry is None:
        return None
    bind = getattr(telemetry, "bind", None)
    if not callable(bind):
        raise ConfigurationError(
            f"telemetry must be a retrypolicy.otel.Telemetry (or None), got {type(telemetry).__name__}"
        )
    observer = bind(core)
    if not callable(getattr(observer, "attempted", None)):
        raise ConfigurationError(f"{type(telemetry).__name__}.bind() returned no observer (an object with attempted())")
    return observer  # type: ignore[no-any-return]


def _raise_on(raise_on: Collection[Category | str] | None) -> frozenset[Category]:
    if raise_on is None:
        return frozenset(Category)
    if isinstance(raise_on, (str, bytes)) or not isinstance(raise_on, Iterable):
        raise ConfigurationError(
            f"raise_on takes a list of categories ({', '.join(Category)}), e.g. ['fatal'], "
            f"got {type(raise_on).__name__} {raise_on!r}"
        )
    return categories_of(raise_on, "raise_on")


def _check(retry: RetrySettings | None, max_renewals: int, token_timeout: float) -> None:
    if retry is not None and not isinstance(retry, RetrySettings):  # RetrySettings checks its own values
        raise ConfigurationError(f"retry must be a retrypolicy.RetrySettings, got {type(retry).__name__}")
    if not isinstance(max_renewals, int) or isinstance(max_renewals, bool) or not 0 <= max_renewals <= 10:
        raise ConfigurationError(f"max_renewals must be an integer from 0 to 10, got {max_renewals!r}")
    if (
        not isinstance(token_timeout, (int, float))
        or isinstance(token_timeout, bool)
        or not 0 < token_timeout < math.inf
    ):
        raise ConfigurationError(f"token_timeout must be a number of seconds > 0, got {token_timeout!r}")


class RetryTransport(httpx.BaseTransport):
    """An httpx transport that classifies platform errors, retries, and renews tokens.

    ``policy``: a built-in name (``"wechat"``, ``"tencent_im"``, ``"whatsapp_onprem"``,
    ``"whatsapp_cloud"``), a path to a TOML file, a :class:`Policy`, or a mapping of host to
    one of those (hosts not in the mapping pass through untouched; ``"*"`` matches any).
    ``token``: a hook returning ``str`` or :class:`Token`, or ``{platform: hook}``.
    ``retry``: :class:`RetrySettings` replacing the table's defaults.
    ``budget``: the retry budget (:class:`RetryBudget`; ``None`` turns it off); a table's
    ``[budget]`` section overrides it for that platform.
    ``breaker``: the circuit breaker of each platform (:class:`CircuitBreaker`; ``None`` turns it
    off); by default (``"table"``) each table's ``[breaker]`` settings, or the defaults.
    ``raise_on``: categories that raise (all by default); a final failure of any other category
    is returned as the response, with the classification in ``response.extensions["retrypolicy"]``.
    ``token_store``: where the token lives (:class:`MemoryTokenStore`, :class:`RedisTokenStore`):
    transports and processes sharing a store share one token and renew it once; a store that can
    also share cooldowns and the retry budget (Redis) does. ``None`` (default): this transport
    keeps its token, cooldowns and budget in memory, to itself.
    ``logger``: a structlog logger (default ``structlog.get_logger("retrypolicy")``), or a stdlib
    :class:`logging.Logger` / :class:`logging.LoggerAdapter` (one record per event, at the same
    level: the message is the event and its fields as ``key=value``, ``record.retrypolicy`` a dict).
    ``verify``, ``cert``, ``proxy``, ``http2``, ``limits``, ``trust_env``: settings of the default
    inner ``httpx.HTTPTransport``, as httpx takes them (``cert`` is loaded into the SSL context).
    Give them here, not to ``httpx.Client``: a client's ``proxy=`` mounts a transport of its own
    that bypasses this one, and its ``verify=``/``cert=`` never reach this one. With ``transport=``
    they are refused: set them on the transport you pass.
    ``telemetry``: a :class:`retrypolicy.otel.Telemetry` (OpenTelemetry spans and metrics), or None.
    """

    def __init__(
        self,
        policy: PolicyArg,
        *,
        token: TokenHook | Callable[[], Any] | Mapping[str, Callable[[], Any]] | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetrySettings | None = None,
        max_renewals: int = 1,
        raise_on: Collection[Category | str] | None = None,
        token_timeout: float = 30.0,
        budget: RetryBudget | None = _DEFAULT_BUDGET,
        breaker: CircuitBreaker | Literal["table"] | None = "table",
        logger: Any = None,
        token_store: TokenStore | None = None,
        verify: VerifyArg | None = None,
        cert: CertArg | None = None,
        proxy: ProxyArg | None = None,
        http2: bool | None = None,
        limits: httpx.Limits | None = None,
        trust_env: bool | None = None,
        telemetry: Binds | None = None,
    ) -> None:
        inner: httpx.BaseTransport = inner_transport(
            httpx.HTTPTransport,
            transport,
            verify=verify,
            cert=cert,
            proxy=proxy,
            http2=http2,
            limits=limits,
            trust_env=trust_env,
        )
        self._core = _build_core(
            TokenManager,
            policy=policy,
            token=token,
            retry=retry,
            max_renewals=max_renewals,
            raise_on=raise_on,
            token_timeout=token_timeout,
            budget=budget,
            breaker=breaker,
            logger=logger,
            token_store=token_store,
            telemetry=telemetry,
        )
        self._transport = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._send(request)
        except _EXPECTED as exc:
            raise exc.with_traceback(None)  # noqa: B904 - the same exception, its cause already set (see _EXPECTED)

    def _send(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        ready = core.ready(request)
        if ready is None:
            return self._drive(core.flow(request))
        sent, lane, rewind = ready  # the fast path: one attempt, no flow unless it fails
        started = core.clock()
        response: httpx.Response | None = None
        try:
            response = self._transport.handle_request(sent)
            failed = core.settle(lane, response, request)
            if type(failed) is Read:  # a small JSON or text body to read for its code
                failed = core.settled(lane, response, request, read_small(response, failed.limit, failed.plan))
        except Exception as exc:  # noqa: BLE001 - handed to the flow, which decides
            if response is not None:
                response.close()
            return self._drive(core.flow(request, First(sent, started, response, exc, rewind=rewind)))
        except BaseException:
            if response is not None:
                response.close()
            core.interrupted()
            raise
        if failed is None:
            return response
        assert not isinstance(failed, Read)  # settled once read
        return self._drive(core.flow(request, First(sent, started, response, None, failed, rewind)))

    def _drive(self, flow: Flow) -> httpx.Response:
        result: Any = None
        error: BaseException | None = None
        last: httpx.Response | None = None  # the latest response, closed if we never hand it back
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as stop:
                response: httpx.Response = stop.value
                return hand_back(response)
            result, error = None, None
            try:
                if isinstance(action, httpx.Request):  # the common action, without a call to _perform
                    result = last = self._transport.handle_request(action)
                else:
                    result = self._perform(action)
            except Exception as exc:  # noqa: BLE001 - handed to the flow, which decides
                error = exc
            except BaseException:  # interrupted: the flow ends here, and so does its response
                flow.close()
                if last is not None:
                    last.close()
                raise

    def _perform(self, action: Any) -> Any:
        if isinstance(action, Read):
            try:
                return read_small(action.response, action.limit, action.plan)
            except BaseException:
                action.response.close()
                raise
        if isinstance(action, Close):
            return action.response.close()
        if isinstance(action, Sleep):
            seconds = sleep_for(action.seconds)  # testing mode: less, or nothing ...
            if seconds > 0:
                time.sleep(seconds)
            return waited(action.seconds)  # ... and the virtual clock moves by the rest
        if isinstance(action, StoreCall):
            return action.call()
        if isinstance(action, (FetchToken, RenewToken)):
            manager = action.manager
            assert isinstance(manager, TokenManager)
            return manager.get() if isinstance(action, FetchToken) else manager.renew(action.stale)
        raise AssertionError(f"unknown action {action!r}")  # pragma: no cover

    def snapshot(self) -> Snapshot:
        """Counters (requests, attempts, retries, renewals, outcomes), budget levels, cooldowns."""
        return self._core.snapshot()

    def close(self) -> None:
        self._transport.close()

    def __repr__(self) -> str:
        return f"<RetryTransport policy={self._core.policies!r} transport={type(self._transport).__name__}>"


class AsyncRetryTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`RetryTransport`; the token hook may be ``async def``. Its
    ``verify``, ``cert``, ``proxy``, ``http2``, ``limits`` and ``trust_env`` configure the default
    inner ``httpx.AsyncHTTPTransport``."""

    def __init__(
        self,
        policy: PolicyArg,
        *,
        token: AnyTokenHook | Mapping[str, AnyTokenHook] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetrySettings | None = None,
        max_renewals: int = 1,
        raise_on: Collection[Category | str] | None = None,
        token_timeout: float = 30.0,
        budget: RetryBudget | None = _DEFAULT_BUDGET,
        breaker: CircuitBreaker | Literal["table"] | None = "table",
        logger: Any = None,
        token_store: TokenStore | None = None,
        verify: VerifyArg | None = None,
        cert: CertArg | None = None,
        proxy: ProxyArg | None = None,
        http2: bool | None = None,
        limits: httpx.Limits | None = None,
        trust_env: bool | None = None,
        telemetry: Binds | None = None,
    ) -> None:
        inner: httpx.AsyncBaseTransport = inner_transport(
            httpx.AsyncHTTPTransport,
            transport,
            verify=verify,
            cert=cert,
            proxy=proxy,
            http2=http2,
            limits=limits,
            trust_env=trust_env,
        )
        self._core = _build_core(
            AsyncTokenManager,
            policy=policy,
            token=token,
            retry=retry,
            max_renewals=max_renewals,
            raise_on=raise_on,
            token_timeout=token_timeout,
            budget=budget,
            breaker=breaker,
            logger=logger,
            token_store=token_store,
            telemetry=telemetry,
        )
        self._transport = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._send(request)
        except _EXPECTED as exc:
            raise exc.with_traceback(None)  # noqa: B904 - the same exception, its cause already set (see _EXPECTED)

    async def _send(self, request: httpx.Request) -> httpx.Response:
        core = self._core
        ready = core.ready(request)
        if ready is None:
            return await self._drive(core.flow(request))
        sent, lane, rewind = ready  # the fast path: one attempt, no flow unless it fails
        started = core.clock()
        response: httpx.Response | None = None
        try:
            response = await self._transport.handle_async_request(sent)
            failed = core.settle(lane, response, request)
            if type(failed) is Read:  # a small JSON or text body to read for its code
                failed = core.settled(lane, response, request, await aread_small(response, failed.limit, failed.plan))
        except Exception as exc:  # noqa: BLE001 - handed to the flow, which decides
            if response is not None:
                await response.aclose()
            return await self._drive(core.flow(request, First(sent, started, response, exc, rewind=rewind)))
        except BaseException:  # cancelled
            if response is not None:
                with anyio.CancelScope(shield=True):
                    await response.aclose()
            core.interrupted()
            raise
        if failed is None:
            return response
        assert not isinstance(failed, Read)  # settled once read
        return await self._drive(core.flow(request, First(sent, started, response, None, failed, rewind)))

    async def _drive(self, flow: Flow) -> httpx.Response:
        result: Any = None
        error: BaseException | None = None
        last: httpx.Response | None = None  # the latest response, closed if we never hand it back
        while True:
            try:
                action = flow.throw(error) if error is not None else flow.send(result)
            except StopIteration as stop:
                response: httpx.Response = stop.value
                return hand_back(response)
            result, error = None, None
            try:
                if isinstance(action, httpx.Request):  # the common action, without a call to _perform
                    result = last = await self._transport.handle_async_request(action)
                else:
                    result = await self._perform(action)
            except Exception as exc:  # noqa: BLE001 - handed to the flow, which decides
                error = exc
            except BaseException:  # cancelled: the flow ends here, and so does its response
                flow.close()
                if last is not None:
                    with anyio.CancelScope(shield=True):
                        await last.aclose()
                raise

    async def _perform(self, action: Any) -> Any:
        if isinstance(action, Read):
            try:
                return await aread_small(action.response, action.limit, action.plan)
            except BaseException:
                await action.response.aclose()
                raise
        if isinstance(action, Close):
            return await action.response.aclose()
        if isinstance(action, Sleep):
            await anyio.sleep(sleep_for(action.seconds))
            return waited(action.seconds)
        if isinstance(action, StoreCall):  # a blocking store call: off the event loop
            return await anyio.to_thread.run_sync(action.call)
        if isinstance(action, (FetchToken, RenewToken)):
            manager = action.manager
            assert isinstance(manager, AsyncTokenManager)
            return await (manager.get() if isinstance(action, FetchToken) else manager.renew(action.stale))
        raise AssertionError(f"unknown action {action!r}")  # pragma: no cover

    def snapshot(self) -> Snapshot:
        """Counters (requests, attempts, retries, renewals, outcomes), budget levels, cooldowns."""
        return self._core.snapshot()

    async def aclose(self) -> None:
        await self._transport.aclose()

    def __repr__(self) -> str:
        return f"<AsyncRetryTransport policy={self._core.policies!r} transport={type(self._transport).__name__}>"
