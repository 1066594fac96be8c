"""``python -m bench.empty_rows``: what a 16 MiB body of empty rows costs a real Gunicorn worker.

The body is ``{"instances": [[], [], ...]}`` just under ``MAX_REQUEST_BYTES`` (16 MiB): valid
JSON with five million rows, so before the pre-parse check the worker built all of them before
the row limit refused the request. One worker serves (``WEB_CONCURRENCY=1``) so the request and
the figures are its own: resident memory now and at its peak (``VmRSS``, ``VmHWM`` from
``/proc/<pid>/status``) before and after, the worker's CPU seconds, and the time to the answer.
Run it from any checkout to compare two versions of the server. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.procstat import children, cpu_seconds
from bench.server import Server, post
from service.models.demo import train_demo

MIB = 1024 * 1024


def empty_rows_body(size: int) -> bytes:
    """The largest ``{"instances": [[], ...]}`` under ``size`` bytes."""
    head, tail = b'{"instances": [', b"]}"
    count = (size - len(head) - len(tail) - 2) // 3 + 1
    return head + b",".join([b"[]"] * count) + tail


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in MiB."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            figures[name] = int(value.split()[0]) // 1024
    return figures


def measure(artifacts: Path, scratch: Path, size: int, repeats: int) -> dict:
    """Start one worker, send the body ``repeats`` times, and read the worker's figures around each."""
    server = Server(artifacts, scratch, workers=1)
    server.start()
    try:
        (worker,) = children(server.pid)
        body = empty_rows_body(size)
        runs = []
        for _ in range(repeats):
            before, cpu = memory(worker), cpu_seconds(worker)
            started = time.perf_counter()
            status, answer = post(f"{server.url}/v1/models/diabetes:predict", body)
            seconds = time.perf_counter() - started
            runs.append({"status": status, "code": json.loads(answer)["error"]["code"], "seconds": round(seconds, 3),
                         "cpu_seconds": round(cpu_seconds(worker) - cpu, 2), "before_mib": before,
                         "after_mib": memory(worker)})
        return {"body_bytes": len(body), "rows": body.count(b"[]"), "worker": worker, "runs": runs}
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.empty_rows", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=float, default=16, help="body size in MiB (default 16: MAX_REQUEST_BYTES)")
    parser.add_argument("--repeats", type=int, default=2, help="requests in a row (default 2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-empty-rows-") as scratch:
        artifacts = Path(scratch) / "artifacts"
        print("training the demo models...", file=sys.stderr)
        train_demo(artifacts)
        result = measure(artifacts, Path(scratch) / "server", int(args.mib * MIB) - 64, args.repeats)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
