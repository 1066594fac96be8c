"""Server-side cost from ``/proc``: CPU time of a Gunicorn process tree, and each worker's memory.

wrk sees latency and throughput from outside; what a request costs the machine is the CPU the
server's processes spend on it. A sampler thread lists the master's children every ~100 ms and
keeps the last ``utime + stime`` seen per pid, so a worker replaced mid-run (``max_requests``)
still counts once, with what it had used when last seen (at most one poll interval is lost), and
its replacement counts from zero, boot included. Linux only; this module never signals anything.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.1
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Gunicorn's workers), from every thread's children list."""
    found: list[int] = []
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(p) for p in listing.read_text().split()]
        except OSError:
            continue  # the thread ended between the listing and the read
    return sorted(set(found))


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process in seconds, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / TICKS


class CpuSampler:
    """Polls a master and its children in a thread; ``total()`` is the CPU they used since start."""

    def __init__(self, master: int) -> None:
        self.master = master
        self._last: dict[int, float] = {}
        self._baseline: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _poll(self) -> None:
        for pid in [self.master, *children(self.master)]:
            value = cpu_seconds(pid)
            if value is not None:
                self._last[pid] = value

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._poll()

    def __enter__(self) -> CpuSampler:
        self._poll()
        self._baseline = dict(self._last)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    def total(self) -> float:
        """CPU seconds the tree used between enter and exit (new pids count from zero)."""
        return sum(value - self._baseline.get(pid, 0.0) for pid, value in self._last.items())

    @property
    def pids_seen(self) -> int:
        return len(self._last)


@dataclass(frozen=True)
class Memory:
    """One process's memory in MiB: PSS (shared pages split among sharers), USS (its own), RSS."""

    pid: int
    pss_mib: float
    uss_mib: float
    rss_mib: float


def memory(pid: int) -> Memory | None:
    """Read ``/proc/<pid>/smaps_rollup``; None when the process is gone or the file unreadable."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kib: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            kib[parts[0].rstrip(":")] = int(parts[1])
    uss = kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)
    return Memory(pid, kib.get("Pss", 0) / 1024, uss / 1024, kib.get("Rss", 0) / 1024)


def worker_memory(master: int) -> list[Memory]:
    """Every live worker's memory, oldest pid first."""
    return [m for m in (memory(pid) for pid in children(master)) if m is not None]


#: Where a mapping's pages come from, by its smaps name: the brk heap, anonymous mmaps (large
#: mallocs, Python's arenas, other threads' malloc arenas, ONNX Runtime's buffers), files (shared
#: libraries' data and code, the metrics files) and the rest (stacks, vdso).
KINDS = ("heap", "anonymous", "file", "other")


def breakdown(pid: int) -> dict[str, dict[str, float]] | None:
    """PSS and USS in MiB per kind of mapping (``KINDS``) from ``/proc/<pid>/smaps``; None once gone."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return None
    kib = {kind: {"Pss": 0, "Private_Clean": 0, "Private_Dirty": 0} for kind in KINDS}
    kind = "other"
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if not head.endswith(":"):  # a mapping's first line: range, perms, offset, dev, inode, [name]
            name = rest.split(None, 4)[4].strip() if len(rest.split(None, 4)) == 5 else ""
            kind = "heap" if name == "[heap]" else "anonymous" if not name else "other" if name.startswith("[") \
                else "file"
        elif head[:-1] in kib[kind]:
            kib[kind][head[:-1]] += int(rest.split()[0])
    return {k: {"pss_mib": v["Pss"] / 1024, "uss_mib": (v["Private_Clean"] + v["Private_Dirty"]) / 1024}
            for k, v in kib.items()}
