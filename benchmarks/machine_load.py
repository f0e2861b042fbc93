"""Is the machine idle enough to time on? The load average beside what the measuring process itself uses.

A timing taken while other processes compete for the cores says little: on
the 2-core machine of benchmarks/RESULTS.md one loaded run moved a ratio from
1.31 to 1.95. So every benchmark row records the load before and after it and
is marked when it was measured under load.

The rule (`LoadMonitor.loaded`): a sample is *under load* when the 1-minute
load average, less the cores that the measuring process and its children kept
busy on average over the preceding minute (their own share of that load
average), exceeds `MAX_OTHER_LOAD_PER_CORE` (0.5) per core. On 2 cores: more
than one other runnable process on average. A row is under load when its
sample before or after it is. Each row also records `other_cpu_cores`, the CPU
that other processes actually used while it ran (all CPU time of the machine
less the measuring processes', per second of the row), which shows load that a
1-minute average smooths over.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import psutil

#: Other processes' share of the 1-minute load average above which a sample counts as "under load", per core.
MAX_OTHER_LOAD_PER_CORE = 0.5
#: Seconds over which the load average is taken (the 1-minute figure).
LOAD_WINDOW_S = 60.0


@dataclasses.dataclass(frozen=True)
class Sample:
    """One reading: wall time (s), load averages (1, 5, 15 min), CPU seconds of this process tree and of the machine."""

    time: float
    loadavg: tuple[float, float, float]
    own_cpu_s: float
    machine_cpu_s: float


def own_cpu_seconds(process: psutil.Process | None = None) -> float:
    """User + system CPU seconds of this process, its finished children and its live descendants."""
    process = process or psutil.Process()
    t = process.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in process.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.Error:  # ended between the listing and the reading
            continue
        total += c.user + c.system
    return total


def machine_cpu_seconds() -> float:
    """CPU seconds every core of the machine spent busy (not idle or waiting for I/O) since boot."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def take_sample() -> Sample:
    return Sample(time.time(), tuple(os.getloadavg()), own_cpu_seconds(), machine_cpu_seconds())


class LoadMonitor:
    """Samples the load and applies the rule of the module docstring.

    Args:
      cores: cores of the machine (default: `os.cpu_count()`).
      max_other_load_per_core: the threshold of the rule.
    """

    def __init__(self, cores: int | None = None, max_other_load_per_core: float = MAX_OTHER_LOAD_PER_CORE):
        self.cores = cores or os.cpu_count() or 1
        self.threshold = max_other_load_per_core * self.cores
        start = psutil.Process().create_time()
        self.history = [Sample(start, (0.0, 0.0, 0.0), 0.0, 0.0)]  # the process's start: no CPU used yet

    def _own_cores(self, now: Sample) -> float:
        """Cores this process tree kept busy on average over the minute before `now` (or since it started)."""
        earlier = [s for s in self.history if now.time - s.time >= LOAD_WINDOW_S]
        ref = earlier[-1] if earlier else self.history[0]
        span = max(now.time - ref.time, 1e-3)
        return min(max((now.own_cpu_s - ref.own_cpu_s) / span, 0.0), float(self.cores))

    def read(self) -> dict[str, Any]:
        """Takes a sample: {time, load1, load5, load15, own_cores, other_load, loaded}."""
        now = take_sample()
        own = self._own_cores(now)
        self.history.append(now)
        other = now.loadavg[0] - own
        return {"time": now.time, "load1": now.loadavg[0], "load5": now.loadavg[1], "load15": now.loadavg[2],
                "own_cores": round(own, 3), "other_load": round(other, 3), "loaded": other > self.threshold,
                "_sample": now}

    def row(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """What a row records: both samples, other processes' CPU in between, and whether it was under load."""
        a, b = before["_sample"], after["_sample"]
        span = max(b.time - a.time, 1e-3)
        other_cpu = max((b.machine_cpu_s - a.machine_cpu_s) - (b.own_cpu_s - a.own_cpu_s), 0.0) / span
        strip = lambda r: {k: v for k, v in r.items() if k != "_sample"}
        return {"before": strip(before), "after": strip(after), "other_cpu_cores": round(other_cpu, 3),
                "loaded": bool(before["loaded"] or after["loaded"]), "rule": self.rule()}

    def rule(self) -> str:
        return (f"under load when the 1-minute load average less this benchmark's own busy cores exceeds "
                f"{self.threshold / self.cores:g} per core ({self.threshold:g} on {self.cores} cores), before or after the row")
