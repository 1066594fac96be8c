"""``python -m bench.parsing``: CPU seconds per body size for every wide body layout, to show growth is linear.

Most cases are bodies made wide rather than long: one row, or one header, declaring thousands
of columns (a CSV header repeating one name or naming distinct ones, a CSV whose first row has
far more fields than its header, which pandas turns into index levels, v1 records and
``inputs`` columns, MLflow ``dataframe_split`` columns and ``dataframe_records``, V2 tensors one
per name, V2 binary tensor headers, one V2 tensor with a huge ``shape``). The others are long
where nothing is a column: a ``dataframe_split.index``, a v1 body of unknown keys, and a CSV of
one column with far more rows than ``MAX_BATCH_ROWS``. Each is grown to every
``--sizes`` (bytes) and posted once through the Flask test client of an app over the demo
models, in a fresh interpreter, and the process CPU seconds of that one request are printed
with its status and error code: linear parsing shows as constant seconds per megabyte.
``--before PATH`` runs the same cases on another checkout (say ``git archive <commit> | tar -x
-C PATH``); a case past ``--timeout`` seconds is stopped and reported as such. Every case runs
this file as a script, so its top level imports nothing from ``service``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess  # nosec B404  # runs this file's own cases with this interpreter
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
TREE = HERE.parent.parent
KB = 1000
SIZES = (100 * KB, 1000 * KB, 2000 * KB)
TIMEOUT_SECONDS = 60.0
V1 = "/v1/models/breast-cancer:predict"
V2 = "/v2/models/breast-cancer/infer"
MLFLOW = "/invocations"
JSON, CSV, BINARY = "application/json", "text/csv", "application/octet-stream"


def _fill(size: int, head: bytes, item: Callable[[int], bytes], tail: bytes, sep: bytes = b",") -> bytes:
    """``head`` + as many ``item(i)`` joined by ``sep`` as fit in ``size`` bytes + ``tail``."""
    items, used, i = [], len(head) + len(tail), 0
    while True:
        piece = item(i)
        if used + len(piece) + len(sep) > size:
            break
        items.append(piece)
        used += len(piece) + len(sep)
        i += 1
    return head + sep.join(items) + tail


def _name(i: int) -> bytes:
    return b"c%d" % i


def csv_same_name(size: int) -> bytes:
    return _fill(size, b"", lambda i: b"a", b"\n1\n")


def csv_distinct_names(size: int) -> bytes:
    return _fill(size, b"", _name, b"\n1\n")


def csv_wide_first_row(size: int) -> bytes:
    return _fill(size, b"mean radius\n", lambda i: b"1", b"\n")


def csv_many_rows(size: int) -> bytes:
    return _fill(size, b"mean radius\n", lambda i: b"1", b"\n", sep=b"\n")


def v1_records_unknown_keys(size: int) -> bytes:
    return _fill(size, b'{"instances": [{', lambda i: b'"%s": 0' % _name(i), b"}]}")


def v1_records_same_key(size: int) -> bytes:
    return _fill(size, b'{"instances": [{', lambda i: b'"a": 0', b"}]}")


def v1_inputs_columns(size: int) -> bytes:
    return _fill(size, b'{"inputs": {', lambda i: b'"%s": [0]' % _name(i), b"}}")


def mlflow_split_columns(size: int) -> bytes:
    names = _fill(size * 3 // 4, b"", lambda i: b'"%s"' % _name(i), b"")
    count = names.count(b",") + 1
    return b'{"dataframe_split": {"columns": [' + names + b'], "data": [[' + b",".join([b"0"] * count) + b"]]}}"


def mlflow_records(size: int) -> bytes:
    return _fill(size, b'{"dataframe_records": [{', lambda i: b'"%s": 0' % _name(i), b"}]}")


def mlflow_split_index(size: int) -> bytes:
    return _fill(size, b'{"dataframe_split": {"columns": ["mean radius"], "data": [[1.0]], "index": [',
                 lambda i: b"0", b"]}}")


def v1_unknown_envelope_keys(size: int) -> bytes:
    return _fill(size, b'{"instances": [[0]], ', lambda i: b'"%s": 0' % _name(i), b"}")


def v2_many_inputs(size: int) -> bytes:
    return _fill(size, b'{"inputs": [',
                 lambda i: b'{"name": "%s", "shape": [1], "datatype": "FP64", "data": [0]}' % _name(i), b"]}")


def v2_huge_shape(size: int) -> bytes:
    return _fill(size, b'{"inputs": [{"name": "x", "datatype": "FP64", "data": [0], "shape": [',
                 lambda i: b"1", b"]}]}")


def v2_binary_inputs(size: int) -> tuple[bytes, dict[str, str]]:
    item = b'{"name": "%s", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}'
    header = _fill(size * 8 // 10, b'{"inputs": [', lambda i: item % _name(i), b"]}")
    count = header.count(b"binary_data_size")
    return header + b"\0" * (8 * count), {"Inference-Header-Content-Length": str(len(header))}


#: case -> (path, content type, body builder)
CASES: dict[str, tuple[str, str, Callable[[int], bytes | tuple[bytes, dict[str, str]]]]] = {
    "csv_same_name": (MLFLOW, CSV, csv_same_name),
    "csv_distinct_names": (MLFLOW, CSV, csv_distinct_names),
    "csv_wide_first_row": (MLFLOW, CSV, csv_wide_first_row),
    "csv_many_rows": (MLFLOW, CSV, csv_many_rows),
    "v1_records_unknown_keys": (V1, JSON, v1_records_unknown_keys),
    "v1_records_same_key": (V1, JSON, v1_records_same_key),
    "v1_inputs_columns": (V1, JSON, v1_inputs_columns),
    "mlflow_split_columns": (MLFLOW, JSON, mlflow_split_columns),
    "mlflow_records": (MLFLOW, JSON, mlflow_records),
    "mlflow_split_index": (MLFLOW, JSON, mlflow_split_index),
    "v1_unknown_envelope_keys": (V1, JSON, v1_unknown_envelope_keys),
    "v2_many_inputs": (V2, JSON, v2_many_inputs),
    "v2_huge_shape": (V2, JSON, v2_huge_shape),
    "v2_binary_inputs": (V2, BINARY, v2_binary_inputs),
}


def body_of(case: str, size: int) -> tuple[str, bytes, dict[str, str]]:
    """The path, body and headers (content type included) of ``case`` grown to ``size`` bytes."""
    path, content_type, build = CASES[case]
    built = build(size)
    body, headers = built if isinstance(built, tuple) else (built, {})
    return path, body, {"Content-Type": content_type, **headers}


def run_case(case: str, size: int, artifacts: Path, scratch: Path) -> dict:
    """Build an app over ``artifacts`` (``/invocations`` serving the demo classifier) and post ``case`` to it once."""
    import logging

    from service.app import create_app
    from service.config import Config

    logging.disable(logging.CRITICAL)  # a refusal logs a line per request: not what is measured
    config = Config(artifacts_dir=artifacts, database_url=f"sqlite:///{scratch / 'bench.db'}", poll_seconds=0,
                    guard_seconds=0, alert_seconds=0, retention_seconds=0, default_model="breast-cancer",
                    local_admin_keys_file=scratch / "local-admin-keys.json")
    return post_case(create_app(config).test_client(), case, size)


def post_case(client: Any, case: str, size: int) -> dict:
    """Post ``case`` grown to ``size`` bytes with a Flask test client; return status, code and CPU seconds."""
    path, body, headers = body_of(case, size)
    cpu, wall = time.process_time(), time.perf_counter()
    response = client.post(path, data=body, headers=headers)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    answer = response.get_json(silent=True) or {}
    error = answer.get("error")  # ours {"error": {"code"}}, MLflow's {"code"}, V2's {"error": message}
    code = error.get("code") if isinstance(error, dict) else answer.get("code", error)
    return {"case": case, "bytes": len(body), "status": response.status_code, "code": str(code)[:26],
            "cpu_seconds": round(cpu, 3), "wall_seconds": round(wall, 3)}


def in_child(case: str, size: int, tree: Path, artifacts: Path, scratch: Path, timeout: float) -> dict:
    """Run one case in a fresh interpreter importing ``service`` from ``tree``; stop it after ``timeout`` s."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(HERE), "--case", case, "--size", str(size), "--artifacts", str(artifacts),
               "--scratch", str(scratch)]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True,  # nosec B603  # noqa: S603  our own file
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"case": case, "bytes": size, "status": None, "code": f"stopped after {timeout:g} s",
                "cpu_seconds": None, "wall_seconds": None}
    if done.returncode:
        return {"case": case, "bytes": size, "status": None, "code": (done.stderr.strip().splitlines() or ["?"])[-1],
                "cpu_seconds": None, "wall_seconds": None}
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_row(result: dict, before: dict | None) -> str:
    cpu = result["cpu_seconds"]
    per_mb = f"{cpu / (result['bytes'] / 1e6):8.3f}" if cpu is not None else "       -"
    line = (f"{result['case']:<24} {result['bytes']:>9} {result['status'] or '-':>6} {result['code']:<26} "
            f"{_seconds(cpu)} {per_mb}")
    if before is not None:
        line += f"   {_seconds(before['cpu_seconds'])} {before['status'] or '-':>6} {before['code']}"
    return line


def _seconds(value: float | None) -> str:
    return f"{value:8.3f}" if value is not None else "       -"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.parsing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="body sizes in bytes")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to run")
    parser.add_argument("--before", type=Path, help="another checkout to run every case on too")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="seconds before a case is stopped")
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--artifacts", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.size, args.artifacts, args.scratch)))
        return 0
    from service.models.demo import train_demo

    with tempfile.TemporaryDirectory(prefix="bench-parsing-") as scratch:
        artifacts = Path(scratch) / "artifacts"
        print("training the demo models...", file=sys.stderr)
        train_demo(artifacts)
        header = f"{'case':<24} {'bytes':>9} {'status':>6} {'code':<26} {'cpu_s':>8} {'s_per_MB':>8}"
        print(header + ("   before: cpu_s, status, code" if args.before else ""), flush=True)
        for case in args.cases:
            for size in args.sizes:
                result = in_child(case, size, TREE, artifacts, Path(scratch), args.timeout)
                before = None
                if args.before:
                    before = in_child(case, size, args.before.resolve(), artifacts, Path(scratch), args.timeout)
                print(format_row(result, before), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
