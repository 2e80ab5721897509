"""RedisTokenStore without redis-py (the ``[redis]`` extra): a ConfigurationError at construction
naming the extra, not a store that fails on first use and leaves every worker to renew on its own."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from structlog.testing import capture_logs

import retrypolicy


def transport_class(mode: str) -> Any:
    return retrypolicy.RetryTransport if mode == "sync" else retrypolicy.AsyncRetryTransport


def hook() -> str:
    return "a-token"


@pytest.mark.parametrize(
    "make",
    [
        lambda: retrypolicy.RedisTokenStore.from_url("redis://127.0.0.1:6379/0"),
        lambda: retrypolicy.RedisTokenStore("redis://127.0.0.1:6379/0"),
        lambda: retrypolicy.RedisTokenStore.from_url("redis://127.0.0.1:7000/0", cluster=True),
    ],
    ids=["from_url", "constructor", "cluster"],
)
def test_redis_store_without_redis_py_fails_at_construction(
    mode: str, monkeypatch: pytest.MonkeyPatch, make: Any
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as without the [redis] extra
    with capture_logs() as logs, pytest.raises(retrypolicy.ConfigurationError) as info:
        transport_class(mode)(policy="wechat", token=hook, token_store=make())
    assert str(info.value) == "RedisTokenStore needs redis-py: pip install 'retrypolicy[redis]'"
    assert logs == []  # no store_unavailable warning: it never got that far


def test_redis_store_given_a_client_needs_no_import(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client passed in is the caller's: the store does not import redis-py for it."""
    monkeypatch.setitem(sys.modules, "redis", None)
    store = retrypolicy.RedisTokenStore(client=object())
    assert "client" in repr(store)
