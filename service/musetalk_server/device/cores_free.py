"""How many cores this process could have now, on a machine it may share (Linux /proc/stat).

The figure is what the process used plus what nobody used, over the last `interval_s` or more:
other processes' work is not this process's to claim, and an idle process's share is all it
would get. It is sampled lazily, at most every `interval_s`, so the requests of a burst are all
judged on the figure from before the burst began.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["CoresFree"]

PROC_STAT = Path("/proc/stat")
_IDLE_FIELDS = (3, 4)  # idle, iowait in the `cpu` line's user nice system idle iowait irq softirq steal


def _read_jiffies() -> tuple[int, int]:
    """(idle, total) jiffies of every CPU of the machine since boot."""
    fields = [int(v) for v in PROC_STAT.read_text().split("\n", 1)[0].split()[1:9]]
    return sum(fields[i] for i in _IDLE_FIELDS), sum(fields)


class CoresFree:
    def __init__(self, machine_cores: int, interval_s: float) -> None:
        self.machine_cores, self.interval_s = machine_cores, interval_s
        self._mark = self._sample()
        self._free = float(machine_cores)

    @classmethod
    def available(cls, machine_cores: int, interval_s: float) -> CoresFree | None:
        """One reader, or None where /proc/stat cannot be read (not Linux)."""
        try:
            _read_jiffies()
        except (OSError, ValueError, IndexError):
            return None
        return cls(machine_cores, interval_s)

    def __call__(self) -> float:
        now = self._sample()
        wall = now[0] - self._mark[0]
        if wall >= self.interval_s:
            idle, total = now[1] - self._mark[1], now[2] - self._mark[2]
            idle_cores = idle / total * self.machine_cores if total > 0 else float(self.machine_cores)
            own_cores = (now[3] - self._mark[3]) / wall
            self._free = min(float(self.machine_cores), idle_cores + own_cores)
            self._mark = now
        return self._free

    @staticmethod
    def _sample() -> tuple[float, int, int, float]:
        idle, total = _read_jiffies()
        return time.monotonic(), idle, total, time.process_time()
