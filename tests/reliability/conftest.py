"""Settings of the reliability suite: the long-run switch, testing mode, and the figures it prints.

``RETRYPOLICY_LONG=1`` makes every load and every hypothesis run bigger (see :func:`size`).
Each test prints one ``[reliability] ...`` line with its figures (cases tried, faults injected,
duplicates, leaks); the lines are repeated at the end of the session. Nothing is written to the
repository (hypothesis's cache goes to a temporary directory).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import hypothesis.configuration
import pytest

import retrypolicy
from retrypolicy import _clock

_FIGURES: list[str] = []
# hypothesis keeps a cache (.hypothesis/) in the working directory even with database=None: keep it
# out of the repository, in a directory removed when the session ends
_HYPOTHESIS_HOME = tempfile.TemporaryDirectory(prefix="retrypolicy-hypothesis-")
hypothesis.configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME.name)


def long_run() -> bool:
    """True when ``RETRYPOLICY_LONG=1``: longer runs, more hypothesis examples."""
    return os.environ.get("RETRYPOLICY_LONG", "").strip() == "1"


def size(default: int, long: int) -> int:
    """``default`` normally, ``long`` under ``RETRYPOLICY_LONG=1``."""
    return long if long_run() else default


def report(test: str, **figures: object) -> str:
    """Print (and remember for the session summary) one line of figures for ``test``."""
    line = f"[reliability] {test}: " + " ".join(f"{key}={value}" for key, value in figures.items())
    print(line)
    _FIGURES.append(line)
    return line


@pytest.fixture(autouse=True)
def _testing_mode() -> Iterator[None]:
    """Backoff sleeps skipped (decisions unchanged) for every test here; restored afterwards."""
    was_testing = retrypolicy.is_testing()
    previous_scale = getattr(_clock, "_testing_scale", None)
    retrypolicy.set_testing(True)
    try:
        yield
    finally:
        if was_testing:
            retrypolicy.set_testing(True, scale=previous_scale if isinstance(previous_scale, float) else 0.0)
        else:
            retrypolicy.set_testing(False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    _HYPOTHESIS_HOME.cleanup()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("retrypolicy reliability figures" + (" (RETRYPOLICY_LONG)" if long_run() else ""))
        for line in _FIGURES:
            terminalreporter.write_line(line)
