"""Drift scores between a reference distribution and a live one, over the same bins.

Both take shares (each distribution sums to 1). With ``p`` the reference's shares and ``q`` the
live ones:

* **Population stability index**, ``PSI = sum_i (q_i - p_i) * ln(q_i / p_i)``. An empty bin
  would make it infinite, so both distributions are smoothed first: every share gets
  :data:`EPSILON` added and the distribution is renormalised, ``s_i' = (s_i + eps) / (1 + k*eps)``
  over ``k`` bins. The smoothing needs only shares (no sample sizes), so replicas' histograms
  merge into the same score. Rules of thumb: below 0.1 stable, 0.1-0.2 moving, above 0.2 shifted.
* **Jensen-Shannon distance**, ``JS = sqrt(0.5 * KL(p || m) + 0.5 * KL(q || m))`` with
  ``m = (p + q) / 2`` and base-2 logarithms, so it lies in [0, 1] (0: the same, 1: disjoint). It is
  finite with empty bins (``0 * log 0 = 0``) and needs no smoothing.

>>> round(psi([0.5, 0.5], [0.5, 0.5]), 6), round(js_distance([1, 0], [0, 1]), 6)
(0.0, 1.0)
>>> round(psi([0.25, 0.75], [0.5, 0.5]), 4)  # 0.2747 unsmoothed
0.2745
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPSILON = 1e-4  # share added to every bin before PSI's logarithm


def smooth(shares: np.ndarray) -> np.ndarray:
    return (shares + EPSILON) / (1.0 + len(shares) * EPSILON)


def psi(reference: Sequence[float] | np.ndarray, live: Sequence[float] | np.ndarray) -> float:
    p, q = smooth(np.asarray(reference, dtype=np.float64)), smooth(np.asarray(live, dtype=np.float64))
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: Sequence[float] | np.ndarray, live: Sequence[float] | np.ndarray) -> float:
    p, q = np.asarray(reference, dtype=np.float64), np.asarray(live, dtype=np.float64)
    m = (p + q) / 2
    divergence = 0.5 * _kl(p, m) + 0.5 * _kl(q, m)
    return float(np.sqrt(max(divergence, 0.0)))


def _kl(a: np.ndarray, b: np.ndarray) -> float:
    mask = a > 0  # where a > 0, b = (a + other) / 2 > 0 too
    return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))


def shares(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Counts as shares (all zeros when there are none)."""
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else array
