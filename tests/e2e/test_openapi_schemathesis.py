"""schemathesis against real Gunicorn, driven by the server's own /openapi.json.

Every operation gets generated requests (schema examples, fuzzing, and stateful sequences
where the document links them) with a key that holds every scope, so admin routes run too.
The run must find no 5xx, no answer that breaks its documented schema or content type, and
no status the document does not list. Bounded: a few examples per operation, a fixed seed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.security.keys import create_key

pytestmark = pytest.mark.e2e

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"
MAX_EXAMPLES = 5
SEED = 20261129
TIME_BUDGET = 120  # seconds; the run takes about 20 s on two shared cores


def test_schemathesis_finds_nothing(artifact_root, tmp_path, server_factory):
    keys = tmp_path / "keys.json"
    key = create_key(keys, "schemathesis", ["predict", "read", "admin"])
    server = server_factory(artifact_root, API_KEYS_FILE=str(keys), DEFAULT_MODEL="breast-cancer")
    run = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{server.base}/openapi.json", "--checks", CHECKS, "--max-examples", str(MAX_EXAMPLES),
         "--phases", "examples,fuzzing,stateful", "--seed", str(SEED), "--workers", "2", "--no-color",
         "--request-timeout", "30", "--header", f"Authorization: Bearer {key}", "--output-truncate", "true"],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIME_BUDGET,
    )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert "Tested:" in run.stdout and "Failures:" not in run.stdout, run.stdout[-3000:]
