"""The report as data: one verdict sentence, parity per suite with its worst errors, quality with its
intervals and published counterparts, throughput ratios with the bench's trust flag, where it ran.

    build_summary(inputs, name) -> dict        what report.json holds and report.md renders
    suite_summary(suite, payload) -> dict      rows, passes, worst relative error per dtype, oracle rows
    quality_rows(trains) / baseline_rows(baselines) / throughput_rows(bench) / environment(inputs)
    bench_inputs(inputs) -> the bench file each part reads; cost_curve_rows(bench) / devices_rows(bench)
    verdict_sentence(summary) -> str

Nothing here recomputes a result: every number comes from an input file.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from parity.backend import PORT, REFERENCE
from parity.report import published
from parity.report.inputs import COMMANDS, PARITY_SUITES, Inputs, describe_device, environment_of

MODEL_LABEL = {"ae": "Euclidean AE", "hae": "Hyperbolic AE"}
MODEL_NOUN = {"ae": "Euclidean AE", "hae": "hyperbolic AE"}  # inside a sentence
FRAMEWORK_LABEL = {PORT: "JAX", REFERENCE: "PyTorch"}
PORT_ARM_PREFIX = "jax-"
BASELINE_ARMS = ("torch-eager", "torch-compile", "torch-sparse")
BASELINE_LABEL = {"torch-eager": "PyTorch eager", "torch-compile": "torch.compile", "torch-sparse": "PyTorch sparse"}
VERSION_ORDER = ("poincare-parity", "jax", "jaxlib", "flax", "optax", "torch", "geoopt", "numpy", "scipy", "mpmath")
# the stage of `poincare-parity run` that writes each kind of input (train stages: one per model kind)
STAGE_KIND = {"ops": "ops", "optim": "optim", "models": "models", "baselines": "baselines", "bench": "bench"}


def framework_label(framework: str) -> str:
    return FRAMEWORK_LABEL.get(framework, framework)


def model_label(kind: str | None) -> str:
    return MODEL_LABEL.get(kind, str(kind))


# ---------------------------------------------------------------------------------------------
# parity


def is_oracle_judged(record: dict[str, Any]) -> bool:
    """A row whose reference is known wrong: judged by the exact oracle, not by the reference."""
    return bool(record.get("reference_wrong"))


def suite_summary(suite: str, payload: dict[str, Any], source: Path | None = None) -> dict[str, Any]:
    """Rows, passes, the worst relative error per dtype (rows judged against the reference) and the
    rows judged by the exact oracle instead."""
    records = payload.get("records") or []
    failed = [r for r in records if not r.get("passed")]
    worst: dict[str, dict[str, Any]] = {}
    for dtype in sorted({str(r.get("dtype")) for r in records}, key=lambda d: (d != "float64", d != "float32", d)):
        judged = [r for r in records if str(r.get("dtype")) == dtype and not is_oracle_judged(r)
                  and isinstance(r.get("max_rel_err"), (int, float))]
        if judged:
            top = max(judged, key=lambda r: r["max_rel_err"])
            worst[dtype] = {"max_rel_err": top["max_rel_err"], "tolerance": top.get("tolerance"),
                            "check": check_label(top), "rows": len(judged),
                            "passed": sum(1 for r in judged if r.get("passed"))}
    oracle_rows = [r for r in records if is_oracle_judged(r)]
    entry: dict[str, Any] = {
        "suite": suite, "name": payload.get("name") or suite, "rows": len(records),
        "label": suite if (payload.get("name") or suite) == suite else f"{suite}: {payload['name']}",
        "passed": len(records) - len(failed), "failed": len(failed),
        "verdict": "pass" if records and not failed else ("fail" if failed else "empty"),
        "failures": [f"{check_label(r)} [{r.get('dtype')}]" for r in failed][:50],
        "worst": worst, "reference_wrong": len(oracle_rows),
    }
    if oracle_rows:
        jax_err = [r["oracle_rel_err_jax"] for r in oracle_rows if r.get("oracle_rel_err_jax") is not None]
        ref_err = [r["oracle_rel_err_ref"] for r in oracle_rows if r.get("oracle_rel_err_ref") is not None]
        entry["oracle"] = {"rows": len(oracle_rows), "passed": sum(1 for r in oracle_rows if r.get("passed")),
                           "worst_port_vs_oracle": max(jax_err, default=None),
                           "worst_reference_vs_oracle": max(ref_err, default=None)}
    if source is not None:
        entry["source"] = str(source)
    return entry


def missing_suite(suite: str, stage: dict[str, Any] | None) -> dict[str, Any]:
    if stage is not None and stage.get("status") not in ("ok", "failed-checks"):
        return {"suite": suite, "name": suite, "label": suite, "verdict": stage.get("status", "error"),
                "why": stage.get("summary", "")}
    return {"suite": suite, "name": suite, "label": suite, "verdict": "missing",
            "why": f"no {suite} JSON among the inputs"}


def check_label(r: dict[str, Any]) -> str:
    """A row's name in tables: function / regime (ops), configuration / variant (optim), else `check`."""
    if "function" in r and "regime" in r:
        return f"{r['function']} / {r['regime']}"
    if "config" in r and "variant" in r:
        return f"{r['config']} / {r['variant']}"
    return str(r.get("check"))


# ---------------------------------------------------------------------------------------------
# recommendation quality


def dataset_of_train(payload: dict[str, Any]) -> str:
    return (payload.get("split") or {}).get("dataset") or payload["config"]["data"]["dataset"]


def _half_width(runs: list[dict[str, Any]], metric: str) -> float | None:
    widths = [(r["test"][f"{metric}_high"] - r["test"][f"{metric}_low"]) / 2 for r in runs
              if r["test"].get(f"{metric}_high") is not None and r["test"].get(f"{metric}_low") is not None]
    return statistics.fmean(widths) if widths else None


def quality_rows(trains: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Test HR@10 / NDCG@10 per (training run, framework): for several seeds the mean, the standard
    deviation over seeds and the mean half-width of one seed's 95% interval; for one seed its interval."""
    rows = []
    for path, payload in trains:
        kind = payload["config"]["model"]["kind"]
        for framework in payload.get("frameworks", []):
            runs = [r for r in payload["runs"] if r["framework"] == framework]
            if not runs:
                continue
            summary = payload.get("summary", {}).get(framework, {})
            row = {"model": model_label(kind), "kind": kind, "preset": payload.get("preset"),
                   "run_name": payload.get("run_name"), "framework": framework, "dataset": dataset_of_train(payload),
                   "protocol": payload["config"]["data"].get("protocol"), "seeds": [r["seed"] for r in runs],
                   "n_users": runs[0]["test"].get("n_users"), "epochs_run": [r["epochs_run"] for r in runs],
                   "best_epoch": [r["best_epoch"] + 1 for r in runs], "source": str(path),
                   "model_config": payload["config"]["model"]}
            for metric in ("hr", "ndcg"):
                values = [r["test"][metric] for r in runs]
                row[metric] = summary.get(f"test_{metric}", {}).get("mean", statistics.fmean(values))
                row[f"{metric}_seeds"] = values
                if len(runs) > 1:
                    row[f"{metric}_sd"] = summary.get(f"test_{metric}", {}).get("std", statistics.stdev(values))
                    row[f"{metric}_ci_half"] = _half_width(runs, metric)
                else:
                    row[f"{metric}_low"] = runs[0]["test"].get(f"{metric}_low")
                    row[f"{metric}_high"] = runs[0]["test"].get(f"{metric}_high")
            rows.append(row)
    return rows


def baseline_rows(baselines: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for path, b in baselines:
        entries = [("popularity", "popularity", b.get("popularity"))]
        if b.get("ease_fixed"):
            entries.append(("ease_fixed", f"EASE, lambda {b['ease_fixed']['lambda']:g}", b["ease_fixed"]))
        if b.get("ease_tuned"):
            entries.append(("ease_tuned", f"EASE, lambda {b['ease_tuned']['lambda']:g} (tuned on validation)",
                            b["ease_tuned"]))
        for key, name, m in entries:
            if m:
                rows.append({"model": name, "key": key, "lambda": m.get("lambda"), "dataset": b.get("dataset"),
                             "protocol": b.get("protocol"), "hr": m["hr"], "hr_low": m.get("hr_low"),
                             "hr_high": m.get("hr_high"), "ndcg": m["ndcg"], "ndcg_low": m.get("ndcg_low"),
                             "ndcg_high": m.get("ndcg_high"), "n_users": m.get("n_users"), "source": str(path)})
    return rows


def framework_gaps(trains: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per training run with both frameworks: the largest |JAX − PyTorch| test HR@10 / NDCG@10 at one seed."""
    out = []
    for path, payload in trains:
        by_seed: dict[int, dict[str, dict[str, Any]]] = {}
        for r in payload.get("runs", []):
            by_seed.setdefault(r["seed"], {})[r["framework"]] = r
        pairs = [(s, fw[PORT], fw[REFERENCE]) for s, fw in by_seed.items() if PORT in fw and REFERENCE in fw]
        if not pairs:
            continue
        loss_gap = []
        for _, a, b in pairs:
            n = min(len(a["history"]), len(b["history"]))
            loss_gap += [abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a["history"][:n], b["history"][:n])
                         if y["loss"]]
        out.append({"kind": payload["config"]["model"]["kind"],
                    "name": payload.get("preset") or payload.get("run_name"),
                    "seeds": len(pairs), "source": str(path),
                    "max_abs_test_hr_diff": max(abs(a["test"]["hr"] - b["test"]["hr"]) for _, a, b in pairs),
                    "max_abs_test_ndcg_diff": max(abs(a["test"]["ndcg"] - b["test"]["ndcg"]) for _, a, b in pairs),
                    "max_epoch_loss_rel_gap": max(loss_gap, default=None)})
    return out


def comparison_rows(compares: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Paired comparisons (`train --compare`): model a − model b with its 95% interval."""
    rows = []
    for path, payload in compares:
        for c in payload.get("comparisons") or ([payload] if "a" in payload and "b" in payload else []):
            rows.append({"a": c.get("a"), "b": c.get("b"), "framework": c.get("framework"), "seeds": c.get("seeds"),
                         "n_users": c.get("n_users"), "dataset": c.get("dataset"), "hr": c.get("hr"),
                         "ndcg": c.get("ndcg"), "method": c.get("method"), "source": str(path)})
    return rows


# ---------------------------------------------------------------------------------------------
# throughput


def ratio_interval(ratio: dict[str, Any]) -> dict[str, Any] | None:
    """A ratio's confidence interval, where the bench measured one: `interval` {low, high, level?,
    method?} or `ci_low` / `ci_high`. The plain `low` / `high` are the range min/max .. max/min of the
    repeats, not an interval."""
    interval = ratio.get("interval") or ratio.get("ci")
    if isinstance(interval, dict) and interval.get("low") is not None and interval.get("high") is not None:
        return {"low": interval["low"], "high": interval["high"], "level": interval.get("level"),
                "method": interval.get("method")}
    if isinstance(interval, (list, tuple)) and len(interval) == 2:
        return {"low": interval[0], "high": interval[1], "level": ratio.get("level"), "method": ratio.get("method")}
    if ratio.get("ci_low") is not None and ratio.get("ci_high") is not None:
        return {"low": ratio["ci_low"], "high": ratio["ci_high"], "level": ratio.get("level"),
                "method": ratio.get("method")}
    return None


def bench_inputs(inputs: Inputs) -> dict[str, dict[str, Any] | None]:
    """The bench files each part of the report reads: "throughput" the last with model workloads (else
    the last bench file), "cost_curve" the last with a cost curve, "devices" the last with device counts
    (`bench --items` and `bench --devices` write files of their own)."""
    benches = [payload for _, payload in inputs.all("bench")]
    with_workloads = [b for b in benches if any(w.get("kind") == "model" for w in b.get("workloads", []))]
    return {"throughput": (with_workloads or benches or [None])[-1],
            "cost_curve": next((b for b in reversed(benches) if b.get("cost_curve")), None),
            "devices": next((b for b in reversed(benches) if b.get("devices")), None)}


def cost_curve_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """The cost curve's rows (preset, items, arm, status, median epoch seconds, memory, reason)."""
    out = []
    for r in bench["cost_curve"].get("rows", []):
        row = {k: r.get(k) for k in ("preset", "n_items", "nnz", "arm", "framework", "status", "memory_mb",
                                     "process_peak_mb", "train_users_per_s", "reason")}
        row["epoch_s"] = (r.get("epoch_s") or {}).get("median")
        out.append(row)
    return out


def devices_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """Throughput per device count: (preset, framework, devices, status, users/s, speed-up, efficiency)."""
    return [{"preset": r["preset"], "framework": r["framework"], "devices": r["devices"], "status": r["status"],
             "users_per_s": (r.get("users_per_s") or {}).get("median"), "speedup": r.get("speedup"),
             "scaling_efficiency": r.get("scaling_efficiency"), "error": r.get("error")}
            for r in bench["devices"].get("rows", [])]


def throughput_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model workload: the best JAX arm's training users/s over each PyTorch arm (eager, compiled, sparse),
    with the repeats' range, the ratio's interval where measured, and the bench's trust flag."""
    rows = []
    for w in bench.get("workloads", []):
        if w.get("kind") != "model":
            continue
        arms = {a["arm"]: a for a in w.get("arms", []) if a.get("status") == "ok"}
        row: dict[str, Any] = {"workload": w["name"], "model_kind": w.get("model_kind"),
                               "status": w.get("status", "ok"), "error": w.get("error"), "trust": w.get("trust")}
        port_arms = [a for a in arms.values() if a.get("framework") == PORT or a["arm"].startswith(PORT_ARM_PREFIX)]
        if port_arms:
            best = max(port_arms, key=lambda a: a["train_users_per_s"]["median"])
            row.update(best_jax=best["arm"], best_jax_users_per_s=best["train_users_per_s"]["median"])
            for baseline in BASELINE_ARMS:
                match = [r for r in w.get("ratios", []) if r["metric"] == "train_users_per_s"
                         and r["numerator"] == best["arm"] and r["denominator"] == baseline]
                if match:
                    row[baseline] = {"median": match[0]["median"], "range_low": match[0].get("low"),
                                     "range_high": match[0].get("high"), "interval": ratio_interval(match[0]),
                                     "best": match[0].get("best")}
        row["users_per_s"] = {name: arm["train_users_per_s"]["median"] for name, arm in arms.items()}
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# where it ran


def environment(inputs: Inputs) -> dict[str, Any]:
    """Devices and versions over every input: each package's version(s), each device description, and
    the files that record neither."""
    devices: dict[str, list[str]] = {}
    versions: dict[str, dict[str, list[str]]] = {}
    no_device, no_versions = [], []
    for _, path, payload in inputs.files():
        v, d = environment_of(payload)
        if d is None:
            no_device.append(str(path))
        else:
            devices.setdefault(describe_device(d), []).append(str(path))
        if v is None:
            no_versions.append(str(path))
        else:
            for package, value in v.items():
                versions.setdefault(package, {}).setdefault(value, []).append(str(path))
    # a bare "cpu" says less than "cpu: AMD EPYC, 2 usable CPUs": keep the fuller description
    for short in [k for k in devices if any(other != k and other.startswith(k + ":") for other in devices)]:
        full = next(other for other in devices if other.startswith(short + ":"))
        devices[full] += devices.pop(short)
    order = {name: i for i, name in enumerate(VERSION_ORDER)}
    return {"devices": [{"device": k, "files": v} for k, v in devices.items()],
            "versions": {p: {value: files for value, files in versions[p].items()}
                         for p in sorted(versions, key=lambda p: (order.get(p, len(order)), p))},
            "device_not_recorded": no_device, "versions_not_recorded": no_versions,
            "files": len(inputs.files())}


# ---------------------------------------------------------------------------------------------
# stages of `poincare-parity run`


def _stage_covered(stage: dict[str, Any], inputs: Inputs) -> str | None:
    """The input file that supplies what a skipped or failed stage would have written, if any."""
    name = stage["name"]
    if name.startswith("train-"):
        kind = name.removeprefix("train-")
        return next((str(p) for p, t in inputs.all("train") if t["config"]["model"]["kind"] == kind), None)
    kind = STAGE_KIND.get(name)
    if kind and inputs.all(kind):
        return str(inputs.all(kind)[-1][0])
    return None


def stage_rows(inputs: Inputs) -> list[dict[str, Any]]:
    run = inputs.last("run") or {}
    rows = []
    for s in run.get("stages", []):
        row = dict(s)
        if s.get("status") in ("ok", "skipped"):  # a stage's output is kept only where it explains a failure
            row.pop("tail", None)
        if s.get("status") != "ok":
            covered = _stage_covered(s, inputs)
            if covered is not None and covered != s.get("json"):
                row["results_from"] = covered
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# the verdict


def _fmt_ratio(value: float) -> str:
    return f"{value:.2f}x"


def short_why(why: str | None, keep: int = 2) -> str:
    """The first `keep` of a trust verdict's "; "-separated reasons, and how many more there are."""
    reasons = [r for r in (why or "no reason given").split("; ") if r]
    more = len(reasons) - keep
    return "; ".join(reasons[:keep]) + (f" (+{more} more under Throughput)" if more > 0 else "")


def verdict_sentence(summary: dict[str, Any]) -> str:
    """One sentence: parity over every suite, JAX vs PyTorch in training, throughput, failed stages."""
    clauses = []
    suites = summary["parity"]
    ran = [p for p in suites if "rows" in p]
    failing = [p for p in ran if p["verdict"] != "pass"]
    absent = [p for p in suites if "rows" not in p]

    def counts(entries):
        return ", ".join(f"{p['label']} {p['passed']}/{p['rows']}" for p in entries)

    if not ran:
        clauses.append("no parity suite among the inputs")
    elif not failing:
        scope = "every parity suite" if not absent else "every parity suite that ran"
        clauses.append(f"the JAX port matches PyTorch/geoopt in {scope} ({counts(ran)} rows pass)")
    else:
        passing = [p for p in ran if p not in failing]
        text = "the JAX port FAILS parity in " + ", ".join(
            f"{p['label']} ({p['passed']}/{p['rows']} rows pass)" for p in failing)
        if passing:
            text += f"; {counts(passing)} rows pass"
        clauses.append(text)
    if absent:
        clauses.append("not run: " + ", ".join(f"{p['label']} ({p['verdict']})" for p in absent))

    gaps = summary.get("framework_gaps") or []
    if gaps:
        worst = max(gaps, key=lambda g: g["max_abs_test_hr_diff"])
        seeds = sum(g["seeds"] for g in gaps)
        clauses.append(f"trained from the same weights and batches, JAX and PyTorch reach test HR@10 within "
                       f"{worst['max_abs_test_hr_diff']:.4f} of each other "
                       f"({seeds} paired run{'s' if seeds != 1 else ''})")

    throughput = [t for t in summary.get("throughput", []) if t.get("torch-eager")]
    if throughput:
        parts = []
        kinds = [t.get("model_kind") for t in throughput]
        for t in throughput:
            r = t["torch-eager"]
            interval = r.get("interval")
            noun = MODEL_NOUN.get(t.get("model_kind"), model_label(t.get("model_kind")))
            if kinds.count(t.get("model_kind")) > 1:  # two workloads of one kind: the preset tells them apart
                noun += f" {t['workload']}"
            part = f"{_fmt_ratio(r['median'])} ({noun}"
            part += f", 95% CI {interval['low']:.2f}-{interval['high']:.2f})" if interval else ")"
            parts.append(part)
        text = ("the best JAX arm trains " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
                + " as many users/s as PyTorch eager")
        bench_device = summary.get("bench_device")
        if bench_device:
            text += f" on {bench_device}"
        if not any(t["torch-eager"].get("interval") for t in throughput):
            text += " (interval not measured)"
        untrusted = [t for t in throughput
                     if isinstance(t.get("trust"), dict) and t["trust"].get("trustworthy") is False]
        if untrusted:
            text += "; the bench flags these timings as not trustworthy (" + "; ".join(
                f"{t['workload']}: {short_why(t['trust'].get('why'), keep=1)}" for t in untrusted) + ")"
        clauses.append(text)
    elif summary.get("throughput"):
        clauses.append("throughput: no JAX/PyTorch eager ratio measured")

    failed_stages = [s for s in summary.get("stages", []) if s.get("status") not in ("ok", "failed-checks", "skipped")]
    if failed_stages:
        clauses.append("stages that FAILED: " + ", ".join(s["name"] for s in failed_stages))
    text = "; ".join(clauses)
    return text[:1].upper() + text[1:] + "."


# ---------------------------------------------------------------------------------------------


def build_summary(inputs: Inputs, name: str) -> dict[str, Any]:
    stages = stage_rows(inputs)
    stage_by_name = {s["name"]: s for s in stages}
    parity = []
    for suite in PARITY_SUITES:
        if not inputs.all(suite):
            parity.append(missing_suite(suite, stage_by_name.get(suite)))
    for suite in inputs.suites():
        if suite in PARITY_SUITES:
            path, payload = inputs.all(suite)[-1]
            parity.append(suite_summary(suite, payload, path))
        else:  # a user's suite: every file is its own section
            parity += [suite_summary(suite, payload, path) for path, payload in inputs.all(suite)]
    order = {s: i for i, s in enumerate(PARITY_SUITES)}
    parity.sort(key=lambda p: order.get(p["suite"], len(order)))

    trains = inputs.all("train")
    quality = quality_rows(trains)
    baselines = baseline_rows(inputs.all("baselines"))
    benches = bench_inputs(inputs)
    bench = benches["throughput"]
    datasets = sorted({(q["dataset"], q["protocol"]) for q in quality}
                      | {(b["dataset"], b["protocol"]) for b in baselines if b.get("dataset")})
    run = inputs.last("run")
    env = environment(inputs)
    bench_env = environment_of(bench)[1] if bench else None
    summary = {
        "command": "report", "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "inputs": [{"path": str(p), "kind": kind, "versions_recorded": environment_of(payload)[0] is not None,
                    "device_recorded": environment_of(payload)[1] is not None}
                   for kind, p, payload in inputs.files()],
        "ignored": inputs.ignored,
        "environment": env,
        "bench_device": describe_device(bench_env) if bench_env else None,
        "parity": parity,
        "quality": quality,
        "baselines": baselines,
        "framework_gaps": framework_gaps(trains),
        "published": published.as_dict() if any(published.applies(d, p) for d, p in datasets) else None,
        "throughput": throughput_rows(bench) if bench else [],
        "bench_trust": bench.get("trust") if bench else None,
        "cost_curve": cost_curve_rows(benches["cost_curve"]) if benches["cost_curve"] else [],
        "devices": devices_rows(benches["devices"]) if benches["devices"] else [],
        "sweeps": [sweep_summary(p, payload) for p, payload in inputs.all("sweep")],
        "comparisons": comparison_rows(inputs.all("compare")),
        "stages": stages,
        "run": {k: v for k, v in run.items() if k != "stages"} if run else None,
    }
    summary["verdict"] = verdict_sentence(summary)
    return summary


def sweep_summary(path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """A `train --sweep` JSON as the report keeps it: the field, the value validation chose, the points."""
    return {"field": payload["field"], "chosen_by_validation": payload.get("chosen_by_validation"),
            "dataset": (payload.get("split") or {}).get("dataset") or payload["config"]["data"]["dataset"],
            "model_kind": payload["config"]["model"]["kind"], "seeds": payload.get("seeds"),
            "points": payload["points"], "source": str(path)}


__all__ = ["MODEL_LABEL", "FRAMEWORK_LABEL", "COMMANDS", "build_summary", "suite_summary", "quality_rows",
           "baseline_rows", "throughput_rows", "environment", "verdict_sentence", "check_label", "ratio_interval",
           "bench_inputs", "cost_curve_rows", "devices_rows"]
