"""Whether a bench run's timings can be trusted: the load other processes put on the machine, and how
much each arm's epochs and each ratio moved from repeat to repeat.

    assess_workload(record, judge_ratios=True) -> trust     one model workload (or a cost-curve point)
    assess_timings(samples_by_name, background) -> trust    any set of repeated timings (optimizer rows,
                                                            device counts)
    assess_parts(parts) -> trust                            several parts: each trustworthy
    assess_run(parts, background_before, load_average, usable_cpus, probe_s) -> trust    the whole run
    THRESHOLDS                                              each threshold with its reason (in the JSON)

A trust record: {"trustworthy": bool, "why": "...", "background_busy": share, "spread": worst max/min
epoch time, ...}; `why` names every threshold crossed, or says what was measured when none was.
Other processes' load is measured from the CPU time counters (`parity.sysinfo.CpuMeter`): the busy
time of the CPUs this process may use, minus this process's own (its descendants included).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parity.stats import MIN_PAIRS_FOR_INTERVAL

BACKGROUND_PROBE_S = 2.0  # the pre-run probe sleeps this long: 200 clock ticks per CPU, a share to 0.5%
# other processes' share of the usable CPUs' time, before the run (probe) or during the timed epochs
BACKGROUND_BUSY_MAX = 0.10  # above a tenth, others take cores, caches and memory bandwidth the arms need
EPOCH_SPREAD_MAX = 1.30  # slowest / fastest timed epoch of one arm: more than 30% apart is load, not the arm
RATIO_INTERVAL_WIDTH_MAX = 1.15  # a ratio's 95% interval high / low: wider cannot tell 1.0x from 1.1x
# the 1-minute load average per usable CPU is recorded, not judged: it counts this run's own start-up and,
# under `poincare-parity run`, the stage before; the CPU counters tell others' work from ours

THRESHOLDS = {
    "background_busy_max": {"value": BACKGROUND_BUSY_MAX, "why": "other processes' share of the usable CPUs' time "
                            "(before the run, and during each part's timed epochs); above it they take cores, "
                            "caches and memory bandwidth the arms need"},
    "epoch_spread_max": {"value": EPOCH_SPREAD_MAX, "why": "slowest / fastest timed epoch of one arm; wider is "
                         "the machine's load, not the arm"},
    "ratio_interval_width_max": {"value": RATIO_INTERVAL_WIDTH_MAX, "why": "high / low of a training-throughput "
                                 "ratio's 95% interval; a wider interval cannot tell 1.0x from 1.1x"},
    "min_pairs_for_interval": {"value": MIN_PAIRS_FOR_INTERVAL, "why": "fewer paired repeats give no interval: "
                               "a bootstrap interval of so few would be their whole range, its ends set by single "
                               "repeats"},
    "background_probe_s": {"value": BACKGROUND_PROBE_S, "why": "seconds the pre-run probe sleeps while it "
                           "counts other processes' CPU time"},
}


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"


def _background_reason(share: float | None, when: str) -> str | None:
    if share is not None and share > BACKGROUND_BUSY_MAX:
        return (f"other processes used {_pct(share)} of the CPUs {when} (more than {_pct(BACKGROUND_BUSY_MAX)})")
    return None


def _spread(samples: Sequence[float]) -> float | None:
    values = [s for s in samples if s is not None and s > 0]
    return max(values) / min(values) if len(values) >= 2 else None


def _verdict(reasons: list[str], fine: str, **measured: Any) -> dict[str, Any]:
    return {"trustworthy": not reasons, "why": "; ".join(reasons) if reasons else fine, **measured}


def _timing_checks(samples: dict[str, Sequence[float]], background: float | None,
                   when: str) -> tuple[list[str], str, dict[str, Any]]:
    """-> (thresholds crossed, what was measured in words, the measurements)."""
    reasons = []
    background_reason = _background_reason(background, when)
    if background_reason:
        reasons.append(background_reason)
    spreads = {name: s for name, s in ((name, _spread(values)) for name, values in samples.items()) if s is not None}
    worst = max(spreads, key=spreads.get, default=None)
    for name, spread in spreads.items():
        if spread > EPOCH_SPREAD_MAX:
            reasons.append(f"{name}'s repeats vary {spread:.2f}x slowest / fastest (more than {EPOCH_SPREAD_MAX:.2f}x)")
    fine = (f"other processes used {_pct(background)} of the CPUs {when}" if background is not None
            else "other processes' load not measured") + (
        f"; repeats within {spreads[worst]:.2f}x (worst: {worst})" if worst else "")
    return reasons, fine, {"background_busy": background, "spread": spreads[worst] if worst else None,
                           "spread_of": worst}


def assess_timings(samples: dict[str, Sequence[float]], background: float | None,
                   when: str = "during the timed repeats") -> dict[str, Any]:
    """Trust in repeated timings by name (an arm, a device count): `background` (other processes'
    share during them) under BACKGROUND_BUSY_MAX and each name's slowest / fastest under EPOCH_SPREAD_MAX."""
    reasons, fine, measured = _timing_checks(samples, background, when)
    return _verdict(reasons, fine, **measured)


def assess_workload(record: dict[str, Any], judge_ratios: bool = True) -> dict[str, Any]:
    """Trust in one model workload: other processes' share during its round robin (`background_busy`),
    every arm's epoch spread, and (`judge_ratios`) every training-throughput ratio's 95% interval:
    present (enough paired repeats) and narrower than RATIO_INTERVAL_WIDTH_MAX."""
    arms = [a for a in record.get("arms", []) if a.get("status") == "ok"]
    if not arms:
        return {"trustworthy": None, "why": "no arm was timed", "background_busy": record.get("background_busy"),
                "spread": None}
    reasons, fine, measured = _timing_checks({a["arm"]: a["epoch_s"]["samples"] for a in arms},
                                             record.get("background_busy"), "during the timed epochs")
    widths: dict[str, float] = {}
    missing: list[str] = []
    if judge_ratios:
        for r in record.get("ratios", []):
            if r.get("metric") != "train_users_per_s":
                continue
            interval = r.get("interval")
            if interval and interval["low"] > 0:
                widths[f"{r['numerator']} / {r['denominator']}"] = interval["high"] / interval["low"]
            else:
                missing.append(r.get("interval_why") or "no interval measured")
        if missing:
            reasons.append(f"no 95% interval for the training-throughput ratios ({missing[0]})")
        for name, width in widths.items():
            if width > RATIO_INTERVAL_WIDTH_MAX:
                reasons.append(f"the 95% interval of {name} spans {width:.2f}x (more than "
                               f"{RATIO_INTERVAL_WIDTH_MAX:.2f}x)")
    widest = max(widths, key=widths.get, default=None)
    if widest:
        fine += f"; ratio intervals within {widths[widest]:.2f}x (widest: {widest})"
    return _verdict(reasons, fine, **measured, ratio_interval_width=widths[widest] if widest else None,
                    ratio_interval_widest=widest, repeats=max((a["epoch_s"]["n"] for a in arms), default=0))


def assess_parts(parts: list[tuple[str, dict[str, Any] | None]]) -> dict[str, Any]:
    """Trust in several parts at once (name, its trust record or None when it has none): every part
    trustworthy. The worst spread and the names of the parts that are not."""
    assessed = [(name, t) for name, t in parts if isinstance(t, dict) and t.get("trustworthy") is not None]
    untrusted = [name for name, t in assessed if not t["trustworthy"]]
    spreads = [t["spread"] for _, t in assessed if t.get("spread") is not None]
    reasons = ["not trustworthy: " + ", ".join(untrusted)] if untrusted else []
    return _verdict(reasons, f"every part within the thresholds ({len(assessed)} assessed)",
                    spread=max(spreads, default=None), untrustworthy=untrusted)


def assess_run(parts: list[tuple[str, dict[str, Any] | None]], background_before: float | None,
               load_average: list[float] | None = None, usable_cpus: int | None = None,
               probe_s: float = BACKGROUND_PROBE_S) -> dict[str, Any]:
    """Trust in the whole run: the pre-run probe (other processes' share while this one slept) under
    BACKGROUND_BUSY_MAX and every part trustworthy (`assess_parts`)."""
    together = assess_parts(parts)
    reasons = []
    probe = _background_reason(background_before, f"in the {probe_s:g} s before the run")
    if probe:
        reasons.append(probe)
    if not together["trustworthy"]:
        reasons.append(together["why"])
    fine = (f"other processes used {_pct(background_before)} of the CPUs before the run"
            if background_before is not None else "other processes' load before the run not measured")
    fine += "; " + together["why"]
    load = load_average[0] / usable_cpus if load_average and usable_cpus else None
    return _verdict(reasons, fine, background_busy=background_before, spread=together["spread"],
                    load_average_per_cpu=load, untrustworthy=together["untrustworthy"])
