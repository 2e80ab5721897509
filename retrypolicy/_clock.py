"""The transports' clock, and testing mode: waits that pass on a virtual clock instead of being slept."""

from __future__ import annotations

import threading
import time

from ._errors import ConfigurationError

__all__ = ["TestingMode", "is_testing", "monotonic", "set_testing", "sleep_for", "waited"]

_testing_scale: float | None = None  # None: production; else the share of each wait really slept
_virtual = 0.0  # how far testing mode's waits have moved the clock ahead of the real one
_virtual_lock = threading.Lock()


class TestingMode:
    """What :func:`set_testing` returns: use it as a context manager to restore the mode that
    was on before (``with retrypolicy.set_testing(True): ...``); ignore it otherwise."""

    __test__ = False  # not a pytest test class

    def __init__(self, previous: float | None) -> None:
        self._previous = previous

    def __enter__(self) -> TestingMode:
        return self

    def __exit__(self, *exc: object) -> None:
        global _testing_scale
        _testing_scale = self._previous


def set_testing(testing: bool, *, scale: float = 0.0) -> TestingMode:
    """Testing mode: waits pass on a virtual clock instead of being slept.

    Each backoff wait moves the transports' clock (:func:`monotonic`) ahead by its length and
    sleeps only ``scale`` of it (nothing by default), so deadlines and cooldowns bind exactly as
    in production: the same attempts, decisions and log events. (The wall clock, against which an
    HTTP-date Retry-After is read, stays real: servers live in real time.) The virtual clock is
    global, so the waits of concurrent requests add up on it. Returns a :class:`TestingMode`, a
    context manager that restores the previous mode.
    """
    global _testing_scale
    if not isinstance(testing, bool):
        raise ConfigurationError(f"testing must be True or False, got {testing!r}")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and 0 <= scale <= 1):
        raise ConfigurationError(f"scale must be a number from 0 to 1, got {scale!r}")
    previous = _testing_scale
    _testing_scale = float(scale) if testing else None
    return TestingMode(previous)


def is_testing() -> bool:
    """Whether :func:`set_testing` is on."""
    return _testing_scale is not None


def monotonic() -> float:
    """The transports' clock: ``time.monotonic()``, plus the waits testing mode skipped."""
    return time.monotonic() + _virtual


def sleep_for(seconds: float) -> float:
    """The seconds a driver really sleeps for a wait: all of them in production, ``scale`` of them
    in testing mode (then :func:`waited` moves the virtual clock ahead by the rest)."""
    scale = _testing_scale
    return max(seconds, 0.0) if scale is None else max(seconds, 0.0) * scale


def waited(seconds: float) -> None:
    """After a driver slept :func:`sleep_for` of a wait: in testing mode the virtual clock moves
    ahead by the part that was not slept, so the wait has passed in full on the clock."""
    global _virtual
    scale = _testing_scale
    if scale is not None and seconds > 0:
        with _virtual_lock:
            _virtual += seconds * (1.0 - scale)
