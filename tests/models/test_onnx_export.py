"""ONNX Runtime as the server imports it."""

from __future__ import annotations

import os


def test_onnx_runtime_is_imported_with_its_telemetry_off_unless_asked(monkeypatch):
    """Every entry point (not only Gunicorn's config) keeps ONNX Runtime from uploading usage data."""
    from service.models import onnx_export

    monkeypatch.delenv("ORT_DISABLE_TELEMETRY", raising=False)
    onnx_export.import_onnxruntime()
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "1"
    monkeypatch.setenv("ORT_DISABLE_TELEMETRY", "0")
    onnx_export.import_onnxruntime()
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "0"
