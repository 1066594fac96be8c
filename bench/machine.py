"""Facts about the machine the numbers came from, including how much parallel CPU it really has.

On a shared VM "2 cores" may not mean two cores' worth of work: a quick check runs the same
CPU-bound loop in one process, then in two at once, and reports the speed-up (2.0 is ideal).
Read the server figures with it in mind: Gunicorn's workers and wrk share those cores.
"""

from __future__ import annotations

import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

PACKAGES = ("scikit-learn", "numpy", "pandas", "joblib", "gunicorn", "flask", "orjson")
SPIN_ITERATIONS = 3_000_000  # about 0.15 s of pure Python on a current core


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, when there is one (Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _spin(iterations: int) -> float:
    start = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i
    return time.perf_counter() - start


def parallel_speedup(processes: int = 2) -> float:
    """Work done by ``processes`` concurrent processes relative to one (ideal = ``processes``)."""
    with ProcessPoolExecutor(processes, mp_context=get_context("fork")) as pool:
        list(pool.map(_spin, [1000] * processes))  # start the workers before timing
        alone = pool.submit(_spin, SPIN_ITERATIONS).result()
        start = time.perf_counter()
        list(pool.map(_spin, [SPIN_ITERATIONS] * processes))
        together = time.perf_counter() - start
    return processes * alone / together


def machine_facts(workers: int, wrk: str, load_before: float) -> dict[str, Any]:
    """What the numbers depend on: cores (nominal and effective), CPU, Python, versions, workers."""
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "parallel_speedup_2_processes": round(parallel_speedup(2), 2),
        "load_average_before": load_before,
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: metadata.version(name) for name in PACKAGES},
        "wrk": wrk,
        "workers": workers,
        "worker_class": worker_class(),
    }


def worker_class() -> str:
    """The worker class gunicorn.conf.py picks for this environment: buffering unless a proxy is declared."""
    threads = int(os.environ.get("THREADS", "1") or 1)
    if not os.environ.get("FORWARDED_ALLOW_IPS", "").strip():
        return f"buffering ({threads} thread{'s' if threads > 1 else ''})"
    return "gthread" if threads > 1 else "sync"


def load_average() -> float:
    """The 1-minute load average (other jobs on the box skew every figure)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")
