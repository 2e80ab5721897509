from __future__ import annotations

from collections.abc import Iterator

import pytest

import retrypolicy


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
