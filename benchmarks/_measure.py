"""Interleaved measurement of contenders in one process.

Two ways to run the contenders' batches, each in a new random order every round, so that all of
them suffer the machine's noise alike:

* :func:`as_users_run`: wall clock with the garbage collector ON and left alone, as users'
  processes run. A contender that allocates more pays for the collections it causes. Many
  rounds of small batches (by default 5 of 10 requests per contender): each round gives one
  sample per contender, the figure is a median, and the per-round ratio to a baseline
  (:func:`paired`) cancels the drift of a shared machine.
* :func:`interleaved`: the garbage collector paused during each batch, user-space CPU
  instructions counted with Linux's ``perf_event_open`` beside the wall clock. An instruction
  count of the same work repeats to within a few hundred per request, so it shows differences the
  wall clock hides; but it leaves out the collections users pay for, so it is a second figure,
  labelled as such. Self-monitoring of user space is allowed at the kernel's default
  ``perf_event_paranoid`` (2); a machine that forbids it (or has no hardware counters, as some
  VMs) makes :func:`counter` return ``None``, and the benchmarks then print wall clock only.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import random
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "ppc64le": 319, "s390x": 331}
_TYPE_HARDWARE, _COUNT_INSTRUCTIONS = 0, 1
_EXCLUDE_KERNEL, _EXCLUDE_HV = 1 << 5, 1 << 6  # bits of perf_event_attr's flags word
_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7: the fields after flags stay zero


class InstructionCounter:
    """A counter of the instructions the calling thread retires in user space."""

    def __init__(self) -> None:
        number = _PERF_EVENT_OPEN.get(platform.machine())
        if number is None:
            raise OSError(f"perf_event_open: no syscall number known for {platform.machine()}")
        attr = bytearray(_ATTR_SIZE)
        struct.pack_into("IIQ", attr, 0, _TYPE_HARDWARE, _ATTR_SIZE, _COUNT_INSTRUCTIONS)
        struct.pack_into("Q", attr, 40, _EXCLUDE_KERNEL | _EXCLUDE_HV)
        libc = ctypes.CDLL(None, use_errno=True)
        # pid 0, cpu -1: this thread, on any CPU; no group, no flags
        fd = libc.syscall(number, (ctypes.c_char * _ATTR_SIZE).from_buffer(attr), 0, -1, -1, 0)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"perf_event_open: {os.strerror(errno)}")
        self._fd: int = fd

    def read(self) -> int:
        """Instructions counted since the counter opened."""
        return int.from_bytes(os.read(self._fd, 8), "little")

    def close(self) -> None:
        os.close(self._fd)


def steady() -> None:
    """Re-run this script once with address randomisation off (``setarch -R``) and a fixed hash
    seed, so that dict and set layouts, and with them the instructions counted, repeat from run
    to run (without: ±0.5k per request). Where ``setarch`` cannot, go on as we are."""
    if os.environ.get("RETRYPOLICY_BENCH_STEADY"):
        return
    os.environ["RETRYPOLICY_BENCH_STEADY"] = "1"
    os.environ.setdefault("PYTHONHASHSEED", "0")
    setarch = shutil.which("setarch")
    command = [platform.machine(), "-R", sys.executable, *sys.argv]
    if setarch is not None and subprocess.run([setarch, *command[:2], "true"], check=False).returncode == 0:
        sys.stdout.flush()
        os.execv(setarch, [setarch, *command])


def counter() -> InstructionCounter | None:
    """An instruction counter, or None (and why, printed) where this machine cannot count."""
    try:
        return InstructionCounter()
    except OSError as exc:
        print(f"instructions: not counted ({exc}); wall clock only")
        return None


@dataclass(frozen=True)
class Figures:
    """Medians per request over the rounds of :func:`interleaved` (garbage collector paused)."""

    micros: float
    instructions: float | None  # None: not counted


Batch = Callable[[int], None]  # sends that many requests, one after another


def _warm(runs: Mapping[str, Batch], requests: int = 200) -> None:
    for run in runs.values():
        run(requests)


def _batch(run: Batch, requests: int, count: InstructionCounter | None) -> tuple[float, float | None]:
    """(µs, instructions or None) per request over one batch, with the garbage collector paused:
    its runs fall in whichever batch happens to allocate the 700th object, and would put a
    collection of the whole heap on one contender's account."""
    gc.collect()
    gc.disable()
    try:
        before = count.read() if count is not None else 0
        start = time.perf_counter()
        run(requests)
        seconds = time.perf_counter() - start
        after = count.read() if count is not None else 0
    finally:
        gc.enable()
    return seconds / requests * 1e6, (after - before) / requests if count is not None else None


def interleaved(
    runs: Mapping[str, Batch], requests: int, rounds: int, count: InstructionCounter | None
) -> dict[str, Figures]:
    """Each contender's batches with the garbage collector paused (see :func:`_batch`), in a new
    random order each round, after a warm-up of 200 requests each. The figure beside
    :func:`as_users_run`'s, not instead of it: users' processes pay for collections."""
    _warm(runs)
    shuffle = random.Random(0).shuffle  # the same orders in every run
    micros: dict[str, list[float]] = {name: [] for name in runs}
    counts: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            us, instructions = _batch(runs[name], requests, count)
            micros[name].append(us)
            if instructions is not None:
                counts[name].append(instructions)
    return {
        name: Figures(statistics.median(micros[name]), statistics.median(counts[name]) if counts[name] else None)
        for name in runs
    }


def as_users_run(
    runs: Mapping[str, Batch], requests: int, rounds: int, batches: int = 1, seed: int = 0
) -> dict[str, list[float]]:
    """µs per request of each contender, one sample per round, with the garbage collector on and
    never forced: collections fall where the contenders' allocations put them, so one that
    allocates more pays for more of them, as in a user's process.

    A round is ``batches`` batches of ``requests`` requests per contender, interleaved in a new
    random order each time; its sample is the contender's total over them. Small batches keep a
    contender's batches close in time to the others' (a slow spell of a shared machine falls on all
    alike); a round long enough to span a few collections puts their cost into every sample, where
    a median of small batches alone would leave it out. After a warm-up of 200 requests each
    (imports, caches, the interpreter's specialisation)."""
    _warm(runs)
    shuffle = random.Random(seed).shuffle
    micros: dict[str, list[float]] = {name: [] for name in runs}
    order = list(runs)
    clock = time.perf_counter
    for _ in range(rounds):
        spent = dict.fromkeys(runs, 0.0)
        for _ in range(batches):
            shuffle(order)
            for name in order:
                run = runs[name]
                start = clock()
                run(requests)
                spent[name] += clock() - start
        for name, seconds in spent.items():
            micros[name].append(seconds / (requests * batches) * 1e6)
    return micros


@dataclass(frozen=True)
class Paired:
    """One contender's samples against the baseline's, round by round."""

    micros: float  # median µs per request
    ratio: float  # median of the per-round ratios contender / baseline
    low: float  # first quartile of those ratios
    high: float  # third quartile

    @property
    def extra(self) -> float:
        """µs per request above the baseline, as the median ratio puts it: this contender's
        median less that median divided by the ratio."""
        return (self.ratio - 1) * self.micros / self.ratio


def paired(samples: list[float], base: list[float]) -> Paired:
    """Median, and the median and interquartile range of the ratios to ``base`` taken round by
    round (both batches ran within milliseconds of each other, so slow spells of a shared machine
    cancel out)."""
    ratios = [s / b for s, b in zip(samples, base, strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return Paired(statistics.median(samples), statistics.median(ratios), q1, q3)
