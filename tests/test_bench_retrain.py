"""``python -m bench.retrain``: its command line (the run itself fills a large log)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
