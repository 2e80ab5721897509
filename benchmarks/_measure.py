"""Interleaved measurement of contenders in one process: wall clock, and user-space CPU
instructions counted with Linux's ``perf_event_open``.

Instructions are the figure to read on a shared machine: wall clock there moves by ±5-10% from
run to run, while an instruction count of the same work repeats to within a few hundred per
request. Self-monitoring of user space is allowed at the kernel's default
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
    """Medians per request over the rounds."""

    micros: float
    instructions: float | None  # None: not counted


Batch = Callable[[int], None]  # sends that many requests, one after another


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
    """Each contender's batches, in a new random order each round, after a warm-up of 200
    requests each (imports, caches, the interpreter's specialisation)."""
    for run in runs.values():
        run(200)
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
