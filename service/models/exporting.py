"""Hand a version's portable file to the outside: the parity-checked ONNX or PMML that packaging stored.

Copies the file only after the version verifies (hashes, signature), and only when packaging's
parity check passed; otherwise one line says why there is none. Converts nothing: conversion
and the parity check happen once, at packaging (``onnx_export``, ``pmml_export``). No Flask here.
"""

from __future__ import annotations

import hmac
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from service.models import artifacts, onnx_export, pmml_export

FORMATS = ("onnx", "pmml")


def export_version(root: Path, name: str, version: int, fmt: str, out: Path, *,
                   signing_key: Any = None) -> dict[str, Any]:
    """Copy ``name`` ``version``'s ``fmt`` file to ``out``; return its file entry (sha256, size)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}")
    folder = artifacts.version_dir(root, name, version)
    if not folder.is_dir():
        raise ValueError(f"model {name!r} has no version {version}")
    manifest = artifacts.verify_version(folder, expected_name=name, expected_version=int(version),
                                        signing_key=signing_key).manifest
    if fmt == "pmml":
        return _write(folder / pmml_export.PMML_FILE, out, *_pmml_file(manifest, name, version))
    entry = manifest["files"].get(onnx_export.ONNX_FILE)
    report = (manifest.get("backends") or {}).get("onnx")
    if report is None:
        raise ValueError(f"{name} version {version} was packaged without an ONNX export; package it again")
    if report.get("status") != onnx_export.OK or entry is None:
        raise ValueError(f"{name} version {version} has no parity-checked ONNX file "
                         f"({report.get('status')}: {report.get('reason') or 'no reason recorded'})")
    out = Path(out)
    if out.exists():
        raise ValueError(f"--out {out} exists; choose another path or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)  # only now: a refused export leaves no empty folder
    _copy_checked(folder / onnx_export.ONNX_FILE, out, entry)
    return {"file": str(out), **entry, "report": report}


def _pmml_file(manifest: dict[str, Any], name: str, version: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the stored PMML file's entry and its parity report, or say in one line why there is none."""
    report = (manifest.get("exports") or {}).get("pmml")
    if report is None:
        raise ValueError(f"{name} version {version} was packaged without a PMML export; package it again with --pmml")
    entry = manifest["files"].get(pmml_export.PMML_FILE)
    if report.get("status") != pmml_export.OK or entry is None:
        raise ValueError(f"{name} version {version} has no parity-checked PMML file "
                         f"({report.get('status')}: {report.get('reason') or 'no reason recorded'})")
    return entry, report


def _write(source: Path, out: Path, entry: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    out = Path(out)
    if out.exists():
        raise ValueError(f"--out {out} exists; choose another path or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)  # only now: a refused export leaves no empty folder
    _copy_checked(source, out, entry)
    return {"file": str(out), **entry, "report": report}


def _copy_checked(source: Path, out: Path, entry: dict[str, Any]) -> None:
    # the copy is checked against the manifest too: what leaves is what was verified
    handle, temp = tempfile.mkstemp(dir=out.parent if str(out.parent) else ".", prefix=f".{out.name}.")
    os.close(handle)
    try:
        shutil.copyfile(source, temp)
        if not hmac.compare_digest(artifacts.sha256_file(Path(temp)), str(entry.get("sha256"))):
            raise ValueError(f"{source} changed while it was copied; try again")
        os.chmod(temp, 0o644)
        os.replace(temp, out)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
