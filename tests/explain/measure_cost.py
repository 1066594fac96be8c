"""Explain cost per row next to predict, in process: ``python -m tests.explain.measure_cost``.

Kept so the old command still works; the measuring lives in ``bench.explaining`` (and runs in
``make bench``). Not a test.
"""

from bench.explaining import main

if __name__ == "__main__":
    main()
