"""Summaries, ratios and intervals: the statistics every part of the harness reports, in one place.

    summarize(samples) -> {median, min, max, n, samples}          timings and other repeated measurements
    ratio(a, b) -> {median, low, high}                            a / b of two summaries, with its range
    format_stat(summary, scale, digits) -> "median [min, max]"
    mean_std(values) -> {mean, std, n}                            over seeds (std with ddof 1)
    wilson_interval(successes, n, level) -> (low, high)           a binomial proportion (HR@k)
    bootstrap_interval(values, n_resamples, seed, level) -> (low, high)   the mean of per-user values (NDCG@k)

numpy and the standard library only (scipy for a non-95% normal quantile).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

_Z95 = 1.959963984540054  # standard normal quantile at 0.975


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of `samples` (and the samples themselves)."""
    values = [float(s) for s in samples]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "samples": values}


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> dict[str, Any] | None:
    """numerator / denominator of two `summarize` results: median / median, range min/max .. max/min."""
    if not numerator.get("n") or not denominator.get("n") or not denominator["median"] or not denominator["min"]:
        return None
    return {"median": numerator["median"] / denominator["median"],
            "low": numerator["min"] / denominator["max"], "high": numerator["max"] / denominator["min"]}


def format_stat(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 0) -> str:
    """A `summarize` record as 'median [min, max]' (times `scale`), '-' when empty."""
    if not stat or stat.get("median") is None:
        return "-"
    lo = "?" if stat.get("min") is None else f"{stat['min'] * scale:.{digits}f}"
    hi = "?" if stat.get("max") is None else f"{stat['max'] * scale:.{digits}f}"
    return f"{stat['median'] * scale:.{digits}f} [{lo}, {hi}]"


def largest_finite(*arrays: Any) -> float:
    """The largest finite |value| over `arrays` (0 when there is none)."""
    values = [np.abs(np.asarray(a, dtype=np.float64)) for a in arrays]
    values = [v[np.isfinite(v)] for v in values]
    return max((float(v.max()) for v in values if v.size), default=0.0)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) and the count."""
    array = np.asarray(values, np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "n": int(array.size)}


def normal_quantile(q: float) -> float:
    """The standard normal quantile at `q`."""
    from scipy.stats import norm

    return float(norm.ppf(q))


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: good at small n and at p near 0 or 1.

    centre = (p + z^2 / 2n) / (1 + z^2 / n),  half = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n).
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n >= 1")
    z = _Z95 if level == 0.95 else normal_quantile(0.5 + level / 2)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (users resampled with replacement)."""
    values = np.asarray(values, np.float64)
    n = values.size
    if n == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    step = max(1, 4_000_000 // n)  # bound the (step, n) index block to ~32 MB
    for start in range(0, n_resamples, step):
        stop = min(start + step, n_resamples)
        means[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)
