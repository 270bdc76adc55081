"""Summaries, ratios and intervals: the statistics every part of the harness reports, in one place.

    summarize(samples) -> {median, min, max, n, samples}          timings and other repeated measurements
    ratio(a, b) -> {median, low, high}                            a / b of two summaries, with its range
    paired_ratio(a, b, ...) -> {median, interval, best, low, high, ...}   a_i / b_i of interleaved repeats
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


# the fewest pairs given an interval: with 5 or fewer the percentile bootstrap's interval is the whole range
# of the ratios (it cannot reach past it), so one disturbed repeat sets an end; from 6 on it is narrower.
# Its coverage of the median ratio, simulated (4,000 draws each of log-normal and of load-spike ratios):
# 92-96% from 6 to 15 pairs (6: 94%, 9: 95-96%, 10: 94%, 15: 92%); a percentile bootstrap of a median
# under-covers a little at so few samples
MIN_PAIRS_FOR_INTERVAL = 6
PAIRED_RATIO_METHOD = (
    "paired: r_i = a_i / b_i for each repeat i (the arms ran interleaved, so a_i and b_i ran close in "
    "time and share the machine's load); median = the median of the r_i; interval = a percentile "
    "bootstrap of that median over the repeats (pairs resampled with replacement; simulated coverage 92-96% "
    "for 6 to 15 repeats); low / high = the "
    "smallest and largest r_i; best = best a / best b (the fastest repeat of each, which a load spike "
    "cannot improve)")


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float], *, better: str = "higher",
                 n_resamples: int = 2000, seed: int = 0, level: float = 0.95,
                 min_pairs: int = MIN_PAIRS_FOR_INTERVAL) -> dict[str, Any] | None:
    """The ratio of two measurements repeated in step: r_i = numerator_i / denominator_i.

    median = median_i r_i; interval = the (1 - level) / 2 and (1 + level) / 2 quantiles of the median of
    `n_resamples` resamples of the pairs (percentile bootstrap), None with `interval_why` when there are
    fewer than `min_pairs` pairs; low, high = min_i r_i, max_i r_i; best = best(numerator) /
    best(denominator), best the max for `better` "higher" (throughput) and the min for "lower" (seconds).
    Samples are paired by position; with unequal lengths the common prefix is used. None when no pair
    has a positive denominator.
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    n = min(len(numerator), len(denominator))
    a = np.asarray(numerator[:n], np.float64)
    b = np.asarray(denominator[:n], np.float64)
    keep = np.isfinite(a) & np.isfinite(b) & (b > 0)
    a, b = a[keep], b[keep]
    if a.size == 0:
        return None
    r = a / b
    best = (a.max() / b.max()) if better == "higher" else (a.min() / b.min() if b.min() > 0 else math.nan)
    out: dict[str, Any] = {"median": float(np.median(r)), "low": float(r.min()), "high": float(r.max()),
                           "best": float(best), "n": int(r.size), "paired": [float(x) for x in r],
                           "interval": None}
    if r.size < min_pairs:
        out["interval_why"] = (f"{r.size} paired repeat{'s' if r.size != 1 else ''}: a {level:.0%} interval needs "
                               f"at least {min_pairs}")
        return out
    rng = np.random.default_rng(seed)
    medians = np.median(r[rng.integers(0, r.size, size=(n_resamples, r.size))], axis=1)
    low, high = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    out["interval"] = {"low": float(low), "high": float(high), "level": level,
                       "method": f"percentile bootstrap of the median of the paired ratios, {n_resamples} resamples"}
    return out


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
