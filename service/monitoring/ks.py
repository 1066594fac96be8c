"""Two-sample Kolmogorov-Smirnov tests of many columns against their references in one step.

The figures are those of ``scipy.stats.ks_2samp(current, reference, method="asymp")``, the same
arithmetic in the same order (so equal to the last bit; ``tests/monitoring/test_ks.py`` checks it
over random, tied, tiny and constant samples), without what a report of 30 features paid 30 times
over: scipy's per-call argument handling (about a millisecond each), sorting the reference
sample again at every evaluation, and one p-value call per feature. A reference is sorted once
per profile (``sorted_sample``); the p-values of all columns are one ``kstwo.sf`` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import kstwo

#: Profile entries whose sorted sample is kept; a worker holds a few model versions' profiles.
MAX_SAMPLES = 4096
_sorted: dict[int, tuple[Any, np.ndarray]] = {}  # id(sample list) -> (the list, its values sorted)


def sorted_sample(sample: Sequence[float]) -> np.ndarray:
    """The reference ``sample`` as sorted floats, computed once per sample object (a profile's list)."""
    kept = _sorted.get(id(sample))
    if kept is not None and kept[0] is sample:
        return kept[1]
    values = np.sort(np.asarray(sample, dtype=float))
    values.setflags(write=False)
    if len(_sorted) >= MAX_SAMPLES:
        _sorted.clear()
    _sorted[id(sample)] = (sample, values)
    return values


def statistic(current: np.ndarray, reference: np.ndarray) -> float:
    """The two-sided statistic of ``current`` against the sorted, non-empty ``reference`` (ks_2samp's steps)."""
    data1, data2 = np.sort(current), reference
    n1, n2 = data1.shape[0], data2.shape[0]
    data_all = np.concatenate([data1, data2])
    cddiffs = np.searchsorted(data1, data_all, side="right") / n1 - np.searchsorted(data2, data_all, side="right") / n2
    below = np.clip(-cddiffs[np.argmin(cddiffs)], 0, 1)
    above = cddiffs[np.argmax(cddiffs)]
    return float(below if below > above else above)


def two_sample(currents: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> list[tuple[float, float]]:
    """(statistic, p-value) of each non-empty current column against its sorted, non-empty reference."""
    if not currents:
        return []
    d = np.array([statistic(c, r) for c, r in zip(currents, references, strict=True)], dtype=float)
    sizes = np.array([(len(c), len(r)) for c, r in zip(currents, references, strict=True)], dtype=float)
    m, n = sizes.max(axis=1), sizes.min(axis=1)  # Smirnov's asymptotic formula, the larger sample first
    en = np.round(m * n / (m + n))
    prob = np.full(len(d), np.nan)  # one value on each side: no distribution to read (scipy: nan, and a warning)
    defined = en >= 1
    prob[defined] = np.clip(kstwo.sf(d[defined], en[defined]), 0, 1)
    return [(float(a), float(b)) for a, b in zip(d, prob, strict=True)]
