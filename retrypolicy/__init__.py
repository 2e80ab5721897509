"""retrypolicy: an httpx transport that reads messaging platforms' error codes, retries what is
transient, renews expired tokens once, and stops on what needs a person or can never succeed.

Public API (everything else is private)::

    load_policy(name_or_path) -> Policy          Policy.classify(response) -> Classification | None
    RetryTransport / AsyncRetryTransport         Token, RetrySettings, set_testing() -> TestingMode
    RetryBudget, CircuitBreaker                  overload protection (Snapshot, CircuitStatus in snapshot())
    TokenStore, MemoryTokenStore, RedisTokenStore  sharing one token between transports and processes
    Category, Classification, Rule, AttemptRecord  the exception tree (see retrypolicy._errors)
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _NotInstalled
from importlib.metadata import version as _version

from ._breaker import CircuitBreaker, CircuitStatus
from ._clock import TestingMode, is_testing, set_testing
from ._core import EXTENSION
from ._decide import AttemptRecord
from ._errors import (
    CircuitOpen,
    ConfigurationError,
    CooldownActive,
    PolicyError,
    RequestFailed,
    RequestRejected,
    ResendUnsafe,
    RetriesExhausted,
    RetryBudgetExhausted,
    RetryPolicyError,
    TokenRefreshFailed,
    UserActionRequired,
)
from ._load import BUILTIN_POLICIES, SHIPPED_POLICIES, load_policy
from ._overload import ActiveCooldown, RetryBudget, Snapshot
from ._policy import Category, Classification, Cooldown, Policy, RetrySettings, Rule, TokenPlacement
from ._redact import redact_url
from ._store import MemoryTokenStore, TokenStore
from ._token import AsyncTokenHook, Token, TokenHook
from ._transport import AsyncRetryTransport, RetryTransport
from .redis_store import RedisTokenStore  # imports redis-py only when used

try:  # one place for the version: the package metadata (pyproject.toml)
    __version__ = _version("retrypolicy")
except _NotInstalled:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "BUILTIN_POLICIES",
    "EXTENSION",
    "SHIPPED_POLICIES",
    "ActiveCooldown",
    "AsyncRetryTransport",
    "AsyncTokenHook",
    "AttemptRecord",
    "Category",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitStatus",
    "Classification",
    "ConfigurationError",
    "Cooldown",
    "CooldownActive",
    "MemoryTokenStore",
    "Policy",
    "PolicyError",
    "RedisTokenStore",
    "RequestFailed",
    "RequestRejected",
    "ResendUnsafe",
    "RetriesExhausted",
    "RetryBudget",
    "RetryBudgetExhausted",
    "RetryPolicyError",
    "RetrySettings",
    "RetryTransport",
    "Rule",
    "Snapshot",
    "TestingMode",
    "Token",
    "TokenHook",
    "TokenPlacement",
    "TokenRefreshFailed",
    "TokenStore",
    "UserActionRequired",
    "__version__",
    "is_testing",
    "load_policy",
    "redact_url",
    "set_testing",
]
