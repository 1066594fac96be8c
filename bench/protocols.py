"""What each wire protocol costs the server per row, and what ``:explain`` costs next to ``:predict``.

The same rows of the demo classifier go out as four bodies: v1 JSON rows, Open Inference
Protocol V2 JSON (one ``[rows, features]`` FP64 tensor), V2 binary (the same tensor as raw
little-endian FP64 after the JSON header, ``Inference-Header-Content-Length`` saying where the
header ends) and MLflow's ``dataframe_split`` on ``/invocations`` (``DEFAULT_MODEL`` set). One
server of the project's own (monitoring on, the defaults) answers all of them, loaded in turn
by wrk while its CPU is read from /proc, so only the protocol differs. The explain runs use the
same server, first: ``:explain`` against ``:predict`` on the same v1 body. Building the bodies is pure
and tested without a server; the server is stopped by pid when the phase ends.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from bench import load, procstat
from bench.compare import Run, drop_database
from bench.server import Server, post
from bench.workload import CLASSIFIER, Scenario, request_body

V1, V2_JSON, V2_BINARY, MLFLOW = "v1 rows", "v2 json", "v2 binary", "mlflow split"
PROTOCOLS = (V1, V2_JSON, V2_BINARY, MLFLOW)
HEADER_LENGTH = "Inference-Header-Content-Length"
EXPLAIN_ROWS = (1, 100)  # explain answers carry a contribution per feature and row: 10,000 rows is not its use


@dataclass(frozen=True)
class Request:
    """One body on one URL path with its headers; ``rows`` is what the answer must hold."""

    protocol: str
    model: str
    rows: int
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})

    @property
    def key(self) -> str:
        return f"{self.model}/{self.rows}/{self.protocol}"


def v2_json_body(frame: pd.DataFrame) -> bytes:
    """One FP64 ``[rows, features]`` tensor in schema order, values as a flat JSON list."""
    matrix = frame.to_numpy(dtype=np.float64)
    return orjson.dumps({"inputs": [{"name": "input-0", "shape": list(matrix.shape), "datatype": "FP64",
                                     "data": matrix.ravel().tolist()}]})


def v2_binary_body(frame: pd.DataFrame) -> tuple[bytes, dict[str, str]]:
    """The same tensor as raw little-endian FP64 after its JSON header, as tritonclient sends it."""
    raw = np.ascontiguousarray(frame.to_numpy(dtype=np.float64), dtype="<f8").tobytes()
    head = orjson.dumps({"inputs": [{"name": "input-0", "shape": [len(frame), frame.shape[1]], "datatype": "FP64",
                                     "parameters": {"binary_data_size": len(raw)}}]})
    return head + raw, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def mlflow_body(frame: pd.DataFrame) -> bytes:
    """MLflow's ``dataframe_split``: column names once, then rows (plain ints and floats)."""
    columns = [frame[name].tolist() for name in frame.columns]
    return orjson.dumps({"dataframe_split": {"columns": list(frame.columns),
                                             "data": [list(row) for row in zip(*columns, strict=True)]}})


def requests_for(model: str, frame: pd.DataFrame) -> list[Request]:
    """The four protocol requests for one batch of rows."""
    rows = len(frame)
    binary, headers = v2_binary_body(frame)
    return [Request(V1, model, rows, f"/v1/models/{model}:predict", request_body(frame)),
            Request(V2_JSON, model, rows, f"/v2/models/{model}/infer", v2_json_body(frame)),
            Request(V2_BINARY, model, rows, f"/v2/models/{model}/infer", binary, headers),
            Request(MLFLOW, model, rows, "/invocations", mlflow_body(frame))]


def protocol_requests(scenarios: list[Scenario], model: str = CLASSIFIER) -> list[Request]:
    return [r for s in scenarios if s.model == model for r in requests_for(model, s.frame)]


def explain_requests(scenarios: list[Scenario], models: tuple[str, ...]) -> list[Request]:
    """``:predict`` then ``:explain`` with the same v1 body, per model and batch size."""
    return [Request(verb, s.model, s.rows, f"/v1/models/{s.model}:{verb}", s.body)
            for s in scenarios if s.model in models and s.rows in EXPLAIN_ROWS for verb in ("predict", "explain")]


def answered_rows(request: Request, body: bytes) -> int:
    """How many predictions the answer holds, in whichever protocol it came back."""
    # a binary request still gets a JSON answer: no output asks for binary data
    answer = orjson.loads(body)
    if "outputs" in answer:
        return next(o["shape"][0] for o in answer["outputs"] if o["name"] == "predict")
    return len(answer.get("predictions", []))


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def smoke(server: Server, request: Request) -> str | None:
    status, body = post(server.url + request.path, request.body, headers=request.headers)
    if status != 200:
        return f"{request.key}: smoke request got HTTP {status}: {body[:200].decode(errors='replace')}"
    got = answered_rows(request, body)
    return None if got == request.rows else f"{request.key}: {got} predictions for {request.rows} rows"


def measure(server: Server, requests: list[Request], work: Path, settings: load.LoadSettings) -> tuple[dict, list[str]]:
    """Smoke-check then load every request in turn; a failing one is reported, the others still run."""
    script = load.write_script(work)
    runs: dict[str, Any] = {}
    problems: list[str] = []
    for i, request in enumerate(requests):
        problem = smoke(server, request) or smoke(server, request)
        if problem:
            problems.append(problem)
            continue
        body_file = work / f"body-{i}.bin"
        body_file.write_bytes(request.body)
        try:
            with procstat.CpuSampler(server.pid) as sampler:
                result = load.run_wrk(server.url + request.path, body_file, script, settings, request.headers)
        except RuntimeError as exc:
            problems.append(f"{request.key}: {exc}")
            continue
        runs[request.key] = Run(result, sampler.total(), sampler.pids_seen).as_dict(request.rows) | {
            "protocol": request.protocol, "model": request.model, "rows": request.rows,
            "body_bytes": len(request.body)}
    return runs, problems


def run_phase(root: Path, work: Path, workers: int, scenarios: list[Scenario], settings: load.LoadSettings,
              explain_models: tuple[str, ...]) -> dict[str, Any]:
    """One project server (monitoring on, DEFAULT_MODEL = the classifier): explain vs predict, then protocols."""
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        server = Server(root, work / "server", workers, {"DEFAULT_MODEL": CLASSIFIER})
        stack.callback(drop_database, server.scratch)
        stack.callback(server.stop)
        progress(f"starting the protocol server (monitoring on, DEFAULT_MODEL={CLASSIFIER}) on {server.url}")
        server.start()
        # explain first: after the 10,000-row protocol runs the writer thread is still logging their
        # predictions, which would bill its CPU to the small explain and predict requests
        requests = explain_requests(scenarios, explain_models)
        progress(f"wrk explain vs predict: {len(requests)} runs of {settings.seconds} s")
        explained, problems = measure(server, requests, work, settings)
        requests = protocol_requests(scenarios)
        progress(f"wrk protocols: {len(requests)} runs of {settings.seconds} s")
        protocols, more = measure(server, requests, work, settings)
    return {"seconds": settings.seconds, "protocols": protocols, "explain": explained, "problems": problems + more}
