"""tenacity pieces driven by the policy tables, for code that gets vendor codes from an SDK's
exception (pywa's ``WhatsAppError.code``, wechatpy's ``WeChatClientException.errcode``) rather than
from a response going through a retrypolicy transport::

    from retrypolicy.tenacity import before_sleep_log_event, retry_if_category, stop_policy, wait_policy

    @tenacity.retry(
        retry=retry_if_category("whatsapp_cloud"),           # the table's retryable codes
        wait=wait_policy("whatsapp_cloud"),                  # backoff, min_delay, Retry-After, deadline
        stop=stop_policy("whatsapp_cloud"),                  # the table's max_attempts and deadline
        before_sleep=before_sleep_log_event("whatsapp_cloud"),  # retrypolicy.retry_scheduled events
        reraise=True,
    )
    def send(): ...

Every piece takes ``code=``, a function from the exception to its code, or ``(code, subcode)``,
or ``None`` when the exception carries no platform code (a network error: not retried by
:func:`retry_if_category`). The default reads a retrypolicy ``RequestFailed``'s classification, then
the attributes ``code``/``subcode`` (pywa), ``error_code``/``error_subcode`` and ``errcode``
(wechatpy). Where the exception carries the HTTP response (pywa's ``raw_response``, wechatpy's
``response``), its body and headers are classified too, for the wait hints (``Retry-After``, a
quota reset) and the request id.

The token renewal stays the transport's job: give the SDK a client with a retrypolicy transport
(``token=`` a hook) to renew a refused token once, single-flight, and resend; retrying
``token-refresh`` codes at the call site would resend with the same refused token.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import tenacity
from tenacity import RetryCallState

from ._core import EXTENSION
from ._decide import Limits, backoff
from ._errors import ConfigurationError, RequestFailed
from ._load import load_policy
from ._log import as_logger
from ._policy import Category, Classification, Code, Policy, categories_of
from ._redact import redact_url, scrub
from ._transport import PolicyLike

__all__ = [
    "before_sleep_log_event",
    "classify_exception",
    "retry_if_category",
    "stop_policy",
    "wait_policy",
]

CodeOf = Callable[[BaseException], Any]


def default_code(exc: BaseException) -> Any:
    """The vendor code an SDK exception carries, or ``(code, subcode)``; ``None`` if none."""
    for name, sub in (("code", "subcode"), ("error_code", "error_subcode"), ("errcode", None)):
        value = getattr(exc, name, None)
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            subcode = getattr(exc, sub, None) if sub is not None else None
            return (value, subcode) if isinstance(subcode, (int, str)) and not isinstance(subcode, bool) else value
    return None


def classify_exception(policy: PolicyLike, exc: BaseException, code: CodeOf = default_code) -> Classification | None:
    """The classification of an exception by the policy table, or ``None`` when it carries no
    code (and is no retrypolicy ``RequestFailed``)."""
    return _classify(_policy(policy), exc, _code_of(code))


def _policy(policy: object) -> Policy:
    if isinstance(policy, Policy):
        return policy
    if not isinstance(policy, str) and not hasattr(policy, "__fspath__"):
        raise ConfigurationError(
            f"policy must be a built-in name such as 'wechat', a path to a TOML file or a retrypolicy.Policy, "
            f"got {type(policy).__name__}"
        )
    return load_policy(policy)


def _code_of(code: object) -> CodeOf:
    if not callable(code):
        raise ConfigurationError(f"code must be a function of the exception, got {type(code).__name__}")
    return code


def _classify(policy: Policy, exc: BaseException, code_of: CodeOf) -> Classification | None:
    if isinstance(exc, RequestFailed) and code_of is default_code:
        return exc.classification
    try:
        found = code_of(exc)
    except Exception:  # noqa: BLE001 - a code= that fails on an unexpected exception: no code
        return None
    if found is None:
        return None
    subcode: Any = None
    if isinstance(found, tuple) and len(found) == 2:
        found, subcode = found
    if not isinstance(found, (int, str)) or isinstance(found, bool):
        return None
    code: Code = found
    from_response = _from_response(policy, exc)
    if from_response is not None and str(from_response.code) == str(code):
        return from_response  # the same code, with the response's wait hints and request id
    message = _text(getattr(exc, "message", None) or getattr(exc, "errmsg", None))
    c = policy.explain(code, subcode if isinstance(subcode, (int, str)) else None, message=message)
    pattern = policy.extract.request_id_pattern
    if c.request_id is None and message and pattern is not None:  # WeChat's "... rid: <id>"
        found_id = pattern.search(message)
        if found_id:
            c = replace(c, request_id=found_id.group(1))
    return c


def _text(value: object) -> str | None:
    return scrub(value) if isinstance(value, str) and value else None


def _from_response(policy: Policy, exc: BaseException) -> Classification | None:
    """The classification of the HTTP response an SDK exception carries, if any."""
    response = getattr(exc, "raw_response", None) or getattr(exc, "response", None)
    if isinstance(response, httpx.Response):
        known = response.extensions.get(EXTENSION)  # a retrypolicy transport classified it already
        if isinstance(known, Classification):
            return known
        try:
            content = response.content
        except httpx.ResponseNotRead:
            return None
        return _parts(policy, response.status_code, content, response.headers)
    status = getattr(response, "status_code", None)
    body = getattr(response, "content", None)  # a requests.Response (wechatpy), read already
    headers = getattr(response, "headers", None)
    if isinstance(status, int) and isinstance(body, bytes):
        return _parts(policy, status, body, headers if headers is not None else {})
    return None


def _parts(policy: Policy, status: int, content: bytes, headers: Any) -> Classification | None:
    try:
        return policy.classify_parts(status, content, headers=headers)
    except Exception:  # noqa: BLE001 - an odd response must not turn a retry decision into a crash
        return None


def _categories(categories: tuple[Category | str, ...]) -> frozenset[Category]:
    if not categories:
        return frozenset({Category.RETRYABLE})
    return categories_of(categories, "retry_if_category")


def _limits(policy: Policy) -> Limits:
    r = policy.retry
    return Limits(r.max_attempts, r.initial_delay, r.max_delay, r.deadline, 0)


def _failure(retry_state: RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    if outcome is None or not outcome.failed:
        return None
    return outcome.exception()


def _required_wait(policy: Policy, c: Classification) -> float:
    """What the platform asks for at least: the table's and the rule's ``min_delay``, any wait hint."""
    table = getattr(policy.retry, "min_delay", 0.0)  # RetrySettings.min_delay, where the table sets it
    return max(table, c.min_delay, c.wait_seconds(time.time()) or 0.0)


class retry_if_category(tenacity.retry_base):
    """Retry when the exception's code falls in one of ``categories`` of the table (default:
    ``retryable``), and the wait the platform asks for (the rule's ``min_delay``, ``Retry-After``,
    a quota reset) still ends before the table's deadline, counted from the first attempt: a
    daily-quota error is not retried for hours, it is raised at once, as the transport does."""

    def __init__(self, policy: PolicyLike, *categories: Category | str, code: CodeOf = default_code) -> None:
        self.policy = _policy(policy)
        self.categories = _categories(categories)
        self.code = _code_of(code)

    def __call__(self, retry_state: RetryCallState) -> bool:
        exc = _failure(retry_state)
        if exc is None:
            return False
        c = _classify(self.policy, exc, self.code)
        if c is None or c.category not in self.categories:
            return False
        elapsed = retry_state.seconds_since_start or 0.0
        return elapsed + _required_wait(self.policy, c) <= self.policy.retry.deadline


class wait_policy(tenacity.wait.wait_base):
    """The wait before the next attempt, as the transport computes it: full-jitter exponential
    backoff (the table's ``initial_delay`` and ``max_delay``), raised to the table's and the rule's
    ``min_delay`` and to any wait hint (``Retry-After``, a body's ``retry_after``, a quota reset). The backoff
    never runs past the table's deadline: it is cut to the time left, but never below what the
    platform asks for (:class:`retry_if_category` does not retry when that is past the deadline)."""

    def __init__(self, policy: PolicyLike, *, code: CodeOf = default_code) -> None:
        self.policy = _policy(policy)
        self.code = _code_of(code)
        self._limits = _limits(self.policy)

    def __call__(self, retry_state: RetryCallState) -> float:
        drawn = backoff(self._limits, retry_state.attempt_number)
        left = max(0.0, self.policy.retry.deadline - (retry_state.seconds_since_start or 0.0))
        exc = _failure(retry_state)
        c = _classify(self.policy, exc, self.code) if exc is not None else None
        required = _required_wait(self.policy, c) if c is not None else 0.0
        return max(min(drawn, left), required)


def stop_policy(policy: PolicyLike) -> tenacity.stop.stop_base:
    """Stop after the table's ``max_attempts``, or once its deadline has passed."""
    p = _policy(policy)
    return tenacity.stop_after_attempt(p.retry.max_attempts) | tenacity.stop_after_delay(p.retry.deadline)


def before_sleep_log_event(
    policy: PolicyLike, *, code: CodeOf = default_code, logger: Any = None
) -> Callable[[RetryCallState], None]:
    """A ``before_sleep`` that logs ``retrypolicy.retry_scheduled`` with the fields the transport's
    event has (platform, code, category, vendor message, description, attempt, delay, request id,
    status, elapsed; method and redacted URL when the exception carries its request), secrets
    scrubbed, to ``logger`` (as ``logger=`` of the transports: structlog's by default, or a stdlib
    ``logging.Logger``). A logger that raises never stops the retry."""
    p, code_of, log = _policy(policy), _code_of(code), as_logger(logger)

    def before_sleep(retry_state: RetryCallState) -> None:
        exc = _failure(retry_state)
        if exc is None:
            return
        c = _classify(p, exc, code_of)
        if c is None:
            return
        fields: dict[str, Any] = {
            "platform": c.platform,
            "code": c.code,
            "category": c.category.value,
            "message": scrub(c.message),
            "description": c.description,
            "attempt": retry_state.attempt_number,
            "request_id": c.request_id,
            "status_code": c.status_code,
            "elapsed": round(retry_state.seconds_since_start or 0.0, 3),
        }
        if c.subcode is not None:
            fields["subcode"] = c.subcode
        request = _request_of(exc)
        if request is not None:
            fields["method"], fields["url"] = request
        sleep = retry_state.next_action.sleep if retry_state.next_action is not None else retry_state.upcoming_sleep
        fields["delay"] = round(float(sleep), 3)
        fields["via"] = "tenacity"
        with contextlib.suppress(Exception):  # logging must not turn a retry into a failure
            log.warning("retrypolicy.retry_scheduled", **fields)

    return before_sleep


def _request_of(exc: BaseException) -> tuple[str, str] | None:
    """(method, redacted URL) of the request behind an SDK exception's response, if any."""
    response = getattr(exc, "raw_response", None) or getattr(exc, "response", None)
    request: Any
    if isinstance(response, httpx.Response):
        try:
            request = response.request
        except RuntimeError:
            return None
    else:
        request = getattr(response, "request", None) or getattr(exc, "request", None)
    method, url = getattr(request, "method", None), getattr(request, "url", None)
    if isinstance(method, str) and isinstance(url, (str, httpx.URL)):
        return method, redact_url(url)
    return None
