"""Statistics for comparing configurations over seeds: which differences are real.

Pure functions on numbers (scipy.stats), no MLflow or Ray:

* :func:`describe` — n, mean, std and the 95 % t confidence interval of the mean;
* :func:`paired` — the paired difference of two configurations over matching (class, seed) pairs:
  mean difference with its t interval, and a two-sided p-value from the paired t-test when there
  are fewer than ``WILCOXON_MIN_PAIRS`` pairs, else from the Wilcoxon signed-rank test (exact for
  small n); the test used is returned with the result;
* :func:`holm` — Holm's step-down correction of p-values across the variants of a family;
* :func:`verdict` — better / worse / no detectable difference, from the corrected p-value and the
  sign of the difference (with the metric's direction).

A Wilcoxon test cannot reach p < 0.05 with fewer than 6 pairs (its smallest two-sided p-value is
2 / 2^n), so small samples use the paired t-test, which assumes roughly normal differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "ALPHA",
    "WILCOXON_MIN_PAIRS",
    "Paired",
    "Summary",
    "describe",
    "holm",
    "paired",
    "verdict",
]

ALPHA = 0.05
WILCOXON_MIN_PAIRS = 10  # fewer pairs: paired t-test


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1); 0 for one value
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Paired:
    pairs: int
    diff: float  # mean of (variant - baseline)
    diff_ci_low: float
    diff_ci_high: float
    p: float
    test: str  # "paired t" | "wilcoxon"


def _t_interval(values: np.ndarray, level: float) -> tuple[float, float, float, float]:
    """mean, std, and the t interval of the mean (the mean itself for n=1 or zero spread)."""
    n = len(values)
    mean = float(values.mean()) if n else math.nan
    if n < 2:
        return mean, 0.0 if n else math.nan, mean, mean
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


def describe(values: Sequence[float], *, level: float = 0.95) -> Summary:
    """n, mean, std and the ``level`` t interval of the mean of the finite ``values``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    mean, std, lo, hi = _t_interval(v, level)
    return Summary(len(v), mean, std, lo, hi)


def paired(
    variant: Sequence[float],
    baseline: Sequence[float],
    *,
    level: float = 0.95,
    wilcoxon_min_pairs: int = WILCOXON_MIN_PAIRS,
) -> Paired:
    """Paired comparison of ``variant`` against ``baseline`` (same order = matching pairs).

    Pairs with a non-finite value on either side are dropped. With no spread in the differences
    the p-value is 1 when they are all zero (identical results) and 0 otherwise (every pair moved
    by the same amount). Fewer than two pairs give p = NaN (no test possible).
    """
    if len(variant) != len(baseline):
        raise ValueError(
            f"paired: {len(variant)} variant values vs {len(baseline)} baseline values"
        )
    d = np.asarray(
        [
            a - b
            for a, b in zip(variant, baseline)
            if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
        ],
        dtype=float,
    )
    n = len(d)
    mean, _std, lo, hi = _t_interval(d, level)
    test = "wilcoxon" if n >= wilcoxon_min_pairs else "paired t"
    if n < 2:
        p = math.nan
    elif np.ptp(d) <= 1e-12 * max(1.0, float(np.abs(d).max())):  # no spread (float rounding)
        p = 1.0 if np.all(d == 0) else 0.0
    elif test == "wilcoxon":
        # zero differences count toward neither side ("wilcox"); the exact null when possible
        p = float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)
    else:
        p = float(stats.ttest_1samp(d, 0.0).pvalue)
    return Paired(n, mean, lo, hi, p, test)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count in the family)."""
    p = np.asarray(pvalues, dtype=float)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), math.nan)
    m = len(ok)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def verdict(diff: float, p_adjusted: float, *, mode: str = "max", alpha: float = ALPHA) -> str:
    """``better`` / ``worse`` than the baseline, or ``no detectable difference``."""
    if not math.isfinite(p_adjusted) or p_adjusted >= alpha or diff == 0:
        return "no detectable difference"
    up = diff > 0
    return "better" if up == (mode == "max") else "worse"
