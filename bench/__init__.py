"""Benchmark of the prediction server: real Gunicorn under wrk, compared with the in-process path.

Run it with ``make bench`` (or ``python -m bench``). Environment knobs: ``BENCH_SECONDS``
(per wrk scenario, default 8), ``BENCH_WORKERS`` (Gunicorn workers, default 2) and
``BENCH_CONNECTIONS`` (wrk connections, default = workers).

Native thread pools are capped at one thread here, before numpy is imported by any bench
module, so the in-process timings use the same single-threaded BLAS/OpenMP as the workers
(``gunicorn.conf.py`` does the same for them); otherwise the comparison would flatter numpy.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
