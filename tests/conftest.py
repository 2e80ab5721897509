from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import retrypolicy
from retrypolicy._core import RetryCore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run a test through RetryTransport and AsyncRetryTransport alike."""
    value: str = request.param
    return value


@pytest.fixture
def testing() -> Iterator[None]:
    """retrypolicy.set_testing(True) for one test: decisions as in production, no waiting."""
    retrypolicy.set_testing(True)
    yield
    retrypolicy.set_testing(False)


@pytest.fixture
def flows(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each start of the flow generator in this test: False for a request the flow runs from the
    start, True for one it takes over after a first attempt the driver made alone."""
    started: list[bool] = []
    original = RetryCore.flow

    def spy(self: RetryCore, request: httpx.Request, first: Any = None) -> Any:
        started.append(first is not None)
        return original(self, request, first)

    monkeypatch.setattr(RetryCore, "flow", spy)
    return started
