"""`poincare-parity report`: the JSON of ops, optim, models, train, baselines, bench (and run) in one
Markdown report with PNG plots, and a JSON summary for programs.

    reports/<name>/report.md      the verdict first (every parity suite, HR@10 of both frameworks for
                                  both models, the throughput ratios), then the details
    reports/<name>/report.json    the same verdict as data, and which inputs were read
    reports/<name>/plots/*.png    parity error per op and regime, optimizer trajectory error, training
                                  curves (both frameworks overlaid), HR@10 / NDCG@10 with the baselines
                                  and the published numbers, throughput bars with ratios

Inputs are told apart by their content: `"suite": "ops" | "optim" | "models"` (parity records),
`"command": "train" | "bench" | "run" | "sweep"` (`train --sweep`), and the baselines JSON of `data baselines` (it has
`popularity`). A folder stands for the JSON files in it (and `*/train.json` one level down).
Nothing here recomputes a result: every number comes from an input file, and a missing input is
shown as missing.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from parity.backend import PORT
from parity.errors import UsageError
from parity.files import atomic_write_text, write_json
from parity.stats import format_stat

PARITY_SUITES = ("ops", "optim", "models")
MODEL_LABEL = {"ae": "Euclidean AE", "hae": "Hyperbolic AE"}
FRAMEWORK_LABEL = {"jax": "JAX", "torch": "PyTorch"}
# Mirvakhabova et al. 2020, "Performance of hyperbolic geometry models on top-n recommendation tasks",
# Table 4, ML-1M in the NeuMF split (HR@10, NDCG@10); the hyperbolic AE has Möbius layers, c = 0.0016
PUBLISHED = {
    "dataset": "ml-1m-neumf",
    "source": "Mirvakhabova et al. 2020, Table 4",
    "rows": [
        {"model": "EASE", "hr": 0.7098, "ndcg": 0.4374},
        {"model": "SLIM", "hr": 0.7162, "ndcg": 0.4468},
        {"model": "NeuMF", "hr": 0.7093, "ndcg": 0.4349},
        {"model": "Euclidean AE", "hr": 0.4685, "ndcg": 0.2578},
        {"model": "Hyperbolic AE", "hr": 0.7051, "ndcg": 0.4360},
    ],
}
# keys a parity record may carry with its error after every optimizer step (one float per step)
STEP_ERROR_KEYS = ("per_step_max_rel_err", "step_rel_err")


class ReportError(UsageError):
    """A user mistake (no inputs, unreadable file): reported without a traceback."""


# ---------------------------------------------------------------------------------------------
# reading the inputs


def classify(payload: Any) -> str | None:
    """Which command wrote `payload`: ops, optim, models, train, bench, run, baselines; None if unknown."""
    if not isinstance(payload, dict):
        return None
    if payload.get("command") in ("train", "bench", "run", "sweep"):
        return payload["command"]
    if isinstance(payload.get("suite"), str) and isinstance(payload.get("records"), list):
        return payload["suite"]
    if "popularity" in payload and "protocol" in payload:
        return "baselines"
    return None


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files as given; a folder gives its *.json (not report.json) and */train.json."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.json") if p.name != "report.json")
            found += sorted(path.glob("*/train.json"))
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise ReportError(f"no such file or folder: {path}")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def load_inputs(paths: list[Path]) -> tuple[dict[str, list[tuple[Path, dict[str, Any]]]], list[dict[str, str]]]:
    """-> ({kind: [(path, payload), ...]}, [ignored {path, why}])."""
    found: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    ignored = []
    for path in paths:
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            ignored.append({"path": str(path), "why": f"unreadable: {error}"})
            continue
        kind = classify(payload)
        if kind is None:
            ignored.append({"path": str(path), "why": "not written by a poincare-parity command"})
            continue
        found.setdefault(kind, []).append((path, payload))
    return found, ignored


# ---------------------------------------------------------------------------------------------
# the verdict, as data


def parity_verdict(kind: str, payload: dict[str, Any] | None, stage: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rows, passed, failed and pass/fail of one parity suite; missing or error when it did not run."""
    if payload is None:
        if stage is not None and stage.get("status") not in ("ok", "failed-checks"):
            return {"suite": kind, "verdict": stage.get("status", "error"), "why": stage.get("summary", "")}
        return {"suite": kind, "verdict": "missing", "why": f"no {kind} JSON among the inputs"}
    records = payload["records"]
    failed = [r for r in records if not r.get("passed")]
    return {"suite": kind, "rows": len(records), "passed": len(records) - len(failed), "failed": len(failed),
            "verdict": "pass" if records and not failed else ("fail" if failed else "empty"),
            "failures": [f"{r.get('check')} [{r.get('dtype')}]" for r in failed][:50],
            "reference_wrong": sum(1 for r in records if r.get("reference_wrong"))}


def _dataset_of_train(payload: dict[str, Any]) -> str:
    return (payload.get("split") or {}).get("dataset") or payload["config"]["data"]["dataset"]


def quality_rows(trains: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Test HR@10 / NDCG@10 per (training run, framework): the mean over seeds, the 95% CI for one seed."""
    rows = []
    for path, payload in trains:
        kind = payload["config"]["model"]["kind"]
        for framework in payload.get("frameworks", []):
            runs = [r for r in payload["runs"] if r["framework"] == framework]
            if not runs:
                continue
            summary = payload.get("summary", {}).get(framework, {})
            row = {"model": MODEL_LABEL.get(kind, kind), "kind": kind, "preset": payload.get("preset"),
                   "run_name": payload.get("run_name"), "framework": framework, "dataset": _dataset_of_train(payload),
                   "protocol": payload["config"]["data"]["protocol"], "seeds": [r["seed"] for r in runs],
                   "hr": summary.get("test_hr", {}).get("mean", runs[0]["test"]["hr"]),
                   "hr_std": summary.get("test_hr", {}).get("std"),
                   "ndcg": summary.get("test_ndcg", {}).get("mean", runs[0]["test"]["ndcg"]),
                   "n_users": runs[0]["test"].get("n_users"), "epochs_run": [r["epochs_run"] for r in runs],
                   "best_epoch": [r["best_epoch"] + 1 for r in runs], "source": str(path)}
            if len(runs) == 1:
                test = runs[0]["test"]
                row.update(hr_low=test.get("hr_low"), hr_high=test.get("hr_high"), ndcg_low=test.get("ndcg_low"),
                           ndcg_high=test.get("ndcg_high"))
            rows.append(row)
    return rows


def baseline_rows(baselines: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for path, b in baselines:
        entries = [("popularity", b.get("popularity"))]
        if "ease_fixed" in b:
            entries.append((f"EASE (lambda {b['ease_fixed']['lambda']:g})", b["ease_fixed"]))
        if "ease_tuned" in b:
            entries.append((f"EASE (lambda {b['ease_tuned']['lambda']:g}, tuned on validation)", b["ease_tuned"]))
        for name, m in entries:
            if m:
                rows.append({"model": name, "dataset": b.get("dataset"), "protocol": b.get("protocol"), "hr": m["hr"],
                             "hr_low": m.get("hr_low"), "hr_high": m.get("hr_high"), "ndcg": m["ndcg"],
                             "ndcg_low": m.get("ndcg_low"), "ndcg_high": m.get("ndcg_high"), "source": str(path)})
    return rows


def throughput_rows(bench: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model workload: the best JAX arm's training users/s over PyTorch eager and torch.compile."""
    rows = []
    for w in bench.get("workloads", []):
        if w.get("kind") != "model":
            continue
        arms = {a["arm"]: a for a in w.get("arms", []) if a.get("status") == "ok"}
        row: dict[str, Any] = {"workload": w["name"], "model_kind": w.get("model_kind"), "status": w.get("status", "ok"),
                               "error": w.get("error")}
        jax_arms = [a for a in arms.values() if a["framework"] == PORT]
        if jax_arms:
            best = max(jax_arms, key=lambda a: a["train_users_per_s"]["median"])
            row.update(best_jax=best["arm"], best_jax_users_per_s=best["train_users_per_s"]["median"])
            for baseline in ("torch-eager", "torch-compile"):
                match = [r for r in w.get("ratios", []) if r["metric"] == "train_users_per_s"
                         and r["numerator"] == best["arm"] and r["denominator"] == baseline]
                if match:
                    row[baseline] = {k: match[0][k] for k in ("median", "low", "high")}
        for name, arm in arms.items():
            row.setdefault("users_per_s", {})[name] = arm["train_users_per_s"]["median"]
        rows.append(row)
    return rows


def build_summary(found: dict[str, list[tuple[Path, dict[str, Any]]]], ignored: list[dict[str, str]],
                  name: str) -> dict[str, Any]:
    run = found.get("run", [(None, None)])[-1][1]
    stages = {s["name"]: s for s in (run or {}).get("stages", [])}
    parity = [parity_verdict(kind, found[kind][-1][1] if kind in found else None, stages.get(kind))
              for kind in PARITY_SUITES]
    trains = found.get("train", [])
    quality = quality_rows(trains)
    baselines = baseline_rows(found.get("baselines", []))
    bench = found.get("bench", [(None, None)])[-1][1]
    datasets = sorted({q["dataset"] for q in quality} | {b["dataset"] for b in baselines if b.get("dataset")})
    return {
        "command": "report", "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "inputs": [{"path": str(p), "kind": kind} for kind, items in found.items() for p, _ in items],
        "ignored": ignored,
        "parity": parity,
        "quality": quality,
        "baselines": baselines,
        "published": PUBLISHED if PUBLISHED["dataset"] in datasets else None,
        "throughput": throughput_rows(bench) if bench else [],
        "sweeps": [sweep_summary(p, payload) for p, payload in found.get("sweep", [])],
        "targets": (bench or {}).get("targets", []),
        "stages": list(stages.values()),
        "run": {k: v for k, v in (run or {}).items() if k != "stages"} or None,
    }


def sweep_summary(path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    """A `train --sweep` JSON as the report keeps it: the field, the value validation chose, the points."""
    return {"field": payload["field"], "chosen_by_validation": payload.get("chosen_by_validation"),
            "dataset": (payload.get("split") or {}).get("dataset") or payload["config"]["data"]["dataset"],
            "model_kind": payload["config"]["model"]["kind"], "seeds": payload.get("seeds"),
            "points": payload["points"], "source": str(path)}


# ---------------------------------------------------------------------------------------------
# plots (matplotlib, Agg)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_ops(payload: dict[str, Any], path: Path) -> Path | None:
    """Heat map per dtype: functions x regimes, colour log10(max rel err / tolerance); <= 0 passes."""
    import numpy as np

    records = [r for r in payload["records"] if "function" in r and "regime" in r]
    if not records:
        return None
    plt = _pyplot()
    dtypes = sorted({r["dtype"] for r in records}, reverse=True)  # float64 first
    functions = list(dict.fromkeys(r["function"] for r in records))
    regimes = list(dict.fromkeys(r["regime"] for r in records))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(1.6 + 1.3 * len(regimes) * len(dtypes), 0.8 + 0.32 * len(functions)),
                             squeeze=False)
    image = None
    for ax, dtype in zip(axes[0], dtypes):
        grid = np.full((len(functions), len(regimes)), np.nan)
        for r in records:
            if r["dtype"] != dtype:
                continue
            i, j = functions.index(r["function"]), regimes.index(r["regime"])
            ratio = (r["max_rel_err"] or 0.0) / r["tolerance"] if r["tolerance"] else 0.0
            grid[i, j] = np.clip(np.log10(max(ratio, 1e-8)), -8, 2)
            label = "FAIL" if not r["passed"] else ("ref" if r.get("reference_wrong") else "")
            if label:
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color="black")
        image = ax.imshow(grid, cmap="RdYlGn_r", vmin=-8, vmax=2, aspect="auto")
        ax.set_xticks(range(len(regimes)), regimes, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(functions)), functions, fontsize=8)
        ax.set_title(dtype, fontsize=10)
    fig.colorbar(image, ax=axes[0].tolist(), label="log10(max rel err / tolerance)")
    fig.suptitle("ops parity: JAX vs geoopt (ref = geoopt wrong, judged by the oracle)", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _step_errors(record: dict[str, Any]) -> list[float] | None:
    for key in STEP_ERROR_KEYS:
        if isinstance(record.get(key), list) and record[key]:
            return record[key]
    return None


def plot_optim(payload: dict[str, Any], path: Path) -> tuple[Path | None, bool]:
    """Error against step per configuration when the records carry per-step errors; otherwise the
    worst error over the trajectory per configuration. -> (path, per_step)."""
    records = payload["records"]
    if not records:
        return None, False
    plt = _pyplot()
    dtypes = sorted({r["dtype"] for r in records}, reverse=True)
    per_step = any(_step_errors(r) for r in records)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 4.2), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        rows = [r for r in records if r["dtype"] == dtype]
        if per_step:
            for r in rows:
                errors = _step_errors(r)
                if errors:
                    ax.semilogy(range(1, len(errors) + 1), [max(e, 1e-18) for e in errors], lw=1,
                                label=r.get("check", "").removeprefix("optim."))
            ax.axhline(rows[0]["tolerance"], color="black", ls="--", lw=1, label="tolerance")
            ax.set_xlabel("step")
            ax.set_ylabel("max rel err (JAX vs geoopt)")
            ax.legend(fontsize=6, ncol=2)
        else:
            labels = [r.get("check", "").removeprefix("optim.") for r in rows]
            values = [max(r.get("trajectory_max_rel_err", r["max_rel_err"]) or 0.0, 1e-18) for r in rows]
            colors = ["tab:green" if r["passed"] else "tab:red" for r in rows]
            ax.barh(range(len(rows)), values, color=colors)
            ax.set_xscale("log")
            ax.set_yticks(range(len(rows)), labels, fontsize=7)
            ax.axvline(rows[0]["tolerance"], color="black", ls="--", lw=1)
            ax.set_xlabel("worst rel err over the trajectory (dashed: tolerance)")
        ax.set_title(dtype, fontsize=10)
    fig.suptitle("optimizer trajectories: JAX (optax) vs geoopt" + ("" if per_step else
                 " (worst over all steps; per-step errors not in the optim JSON)"), fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path, per_step


def plot_training(payload: dict[str, Any], path: Path) -> Path | None:
    """Loss and validation HR@10 per epoch, every framework and seed overlaid."""
    runs = payload.get("runs", [])
    if not runs:
        return None
    plt = _pyplot()
    fig, (ax_loss, ax_hr) = plt.subplots(1, 2, figsize=(11, 4))
    styles = {"jax": {"color": "tab:blue", "ls": "-"}, "torch": {"color": "tab:orange", "ls": "--"}}
    for r in runs:
        epochs = [h["epoch"] + 1 for h in r["history"]]
        label = f"{FRAMEWORK_LABEL.get(r['framework'], r['framework'])} seed {r['seed']}"
        style = styles.get(r["framework"], {})
        ax_loss.plot(epochs, [h["loss"] for h in r["history"]], marker=".", label=label, **style)
        ax_hr.plot(epochs, [h["val_hr"] for h in r["history"]], marker=".", label=label, **style)
    kind = payload["config"]["model"]["kind"]
    name = payload.get("preset") or payload.get("run_name") or kind
    ax_loss.set(xlabel="epoch", ylabel="training loss (mean over steps)", title=f"{MODEL_LABEL.get(kind, kind)} ({name})")
    ax_hr.set(xlabel="epoch", ylabel="validation HR@10", title=_dataset_of_train(payload))
    ax_loss.legend(fontsize=8)
    ax_hr.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_sweep(payload: dict[str, Any], path: Path) -> Path | None:
    """A `train --sweep`: validation and test HR@10 per value and framework (left); the code layer's
    saturation per value (right: mean and max norm relative to the ball's radius, share on the boundary)."""
    points = payload.get("points", [])
    if not points:
        return None
    plt = _pyplot()
    values = [p["value"] for p in points]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(values)))
    fig, (ax_q, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"jax": "tab:blue", "torch": "tab:orange"}
    for fw in payload["frameworks"]:
        label = FRAMEWORK_LABEL.get(fw, fw)
        for metric, marker, ls, what in (("val_hr", "o", "-", "validation"), ("test_hr", "s", ":", "test")):
            ax_q.plot(xs, [p["frameworks"][fw][metric] for p in points], marker=marker, ls=ls,
                      color=colors.get(fw), label=f"{label} {what} HR@10")
    ax_q.set(xlabel=payload["field"], ylabel="HR@10", title=f"{payload['field']} sweep (validation chooses "
             f"{payload.get('chosen_by_validation')})")
    ax_q.legend(fontsize=7)
    fw = next((f for f in payload["frameworks"] if "code_saturation" in points[0]["frameworks"][f]), None)
    if fw is not None:
        sat = [p["frameworks"][fw]["code_saturation"] for p in points]
        ax_s.plot(xs, [s["norm_mean"] for s in sat], marker="o", label="code layer: mean |z| / radius")
        ax_s.plot(xs, [s["norm_max"] for s in sat], marker="^", label="code layer: max |z| / radius")
        ax_s.plot(xs, [s["boundary_fraction"] for s in sat], marker="x", ls="--",
                  label="code layer: share within 1e-3 of the boundary")
        out = [p["frameworks"][fw].get("output_saturation") for p in points]
        if all(out):
            ax_s.plot(xs, [o["norm_mean"] for o in out], marker="o", ls=":", color="gray",
                      label="decoder output: mean |y| / radius")
            ax_s.plot(xs, [o["boundary_fraction"] for o in out], marker="x", ls=":", color="black",
                      label="decoder output: share on the boundary")
        ax_s.axhline(sat[0]["limit"], color="gray", lw=0.8, ls=":", label="projection limit")
        ax_s.set(xlabel=payload["field"], ylabel="norm relative to the radius / share", ylim=(-0.02, 1.05),
                 title=f"saturation at the best validation epoch ({FRAMEWORK_LABEL.get(fw, fw)})")
        ax_s.legend(fontsize=7)
    else:
        ax_s.set_axis_off()
    for ax in (ax_q, ax_s):
        if numeric and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in values])
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_quality(summary: dict[str, Any], path: Path) -> Path | None:
    """HR@10 and NDCG@10 bars: both frameworks per model, the baselines, the published numbers."""
    bars = []
    for q in summary["quality"]:
        bars.append((f"{q['model']} ({FRAMEWORK_LABEL.get(q['framework'], q['framework'])})", q, "tab:blue"
                     if q["framework"] == PORT else "tab:orange"))
    for b in summary["baselines"]:
        bars.append((b["model"], b, "tab:gray"))
    if summary.get("published"):
        for p in summary["published"]["rows"]:
            bars.append((f"{p['model']} (published)", p, "lightgray"))
    if not bars:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.9 + 0.36 * len(bars)), sharey=True)
    for ax, metric in zip(axes, ("hr", "ndcg")):
        for i, (_, row, color) in enumerate(bars):
            value = row[metric]
            low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
            err = [[max(value - low, 0.0)], [max(high - value, 0.0)]] if low is not None and high is not None else None
            ax.barh(i, value, color=color, xerr=err, capsize=2)
            ax.text(value + 0.005, i, f"{value:.3f}", va="center", fontsize=7)
        ax.set_xlabel({"hr": "HR@10", "ndcg": "NDCG@10"}[metric])
        ax.set_xlim(0, 1)
    axes[0].set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("test HR@10 / NDCG@10 (95% intervals where one seed)", fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_throughput(bench: dict[str, Any], path: Path) -> Path | None:
    """Per model workload, training and inference users/s per arm (min-max bars), ratio to PyTorch eager."""
    workloads = [w for w in bench.get("workloads", []) if w.get("kind") == "model" and w.get("arms")]
    if not workloads:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(workloads), figsize=(4.6 * len(workloads), 7), squeeze=False)
    colors = {"torch-eager": "tab:orange", "torch-compile": "tab:red", "jax-jit": "tab:cyan", "jax-scan": "tab:blue"}
    for col, w in enumerate(workloads):
        arms = [a for a in w["arms"] if a.get("status") == "ok"]
        for row, metric, label in ((0, "train_users_per_s", "training users/s"),
                                   (1, "infer_users_per_s", "inference users/s")):
            ax = axes[row][col]
            base = next((a[metric]["median"] for a in arms if a["arm"] == "torch-eager"), None)
            for i, a in enumerate(arms):
                s = a[metric]
                ax.bar(i, s["median"], yerr=[[max(s["median"] - s["min"], 0)], [max(s["max"] - s["median"], 0)]], capsize=3,
                       color=colors.get(a["arm"], "gray"))
                if base:
                    ax.text(i, s["max"], f"{s['median'] / base:.2f}x", ha="center", va="bottom", fontsize=8)
            ax.set_xticks(range(len(arms)), [a["arm"] for a in arms], rotation=20, fontsize=8)
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(f"{w['name']} ({w.get('model_kind')})", fontsize=10)
    device = bench.get("device", {})
    fig.suptitle(f"throughput on {device.get('cpu_model', '?')} ({bench['settings']['device']}), medians of "
                 f"{bench['settings']['repeats']} [min-max]; labels: ratio to torch-eager", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Markdown


def _f(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _e(value: Any) -> str:
    return "-" if value is None else f"{value:.2e}"


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cell(x) for x in row) + " |" for row in rows]


def _metric_cell(row: dict[str, Any] | None) -> str:
    if not row:
        return "not run"
    text = f"{row['hr']:.4f}"
    if row.get("hr_low") is not None:
        text += f" [{row['hr_low']:.3f}, {row['hr_high']:.3f}]"
    elif row.get("hr_std"):
        text += f" ± {row['hr_std']:.4f} ({len(row.get('seeds', []))} seeds)"
    return text + f" / {row['ndcg']:.4f}"


def _verdict_word(entry: dict[str, Any]) -> str:
    return {"pass": "**PASS**", "fail": "**FAIL**", "missing": "missing", "empty": "no rows"}.get(
        entry["verdict"], f"**{entry['verdict'].upper()}**")


def _ratio_cell(value: dict[str, Any] | None) -> str:
    if not value:
        return "-"
    return f"{value['median']:.2f}x [{value['low']:.2f}, {value['high']:.2f}]"


def verdict_lines(summary: dict[str, Any], bench: dict[str, Any] | None) -> list[str]:
    """The first screen: parity verdicts, HR@10 of both frameworks for both models, throughput ratios."""
    lines = ["## Verdict", ""]
    parity_cells = []
    for p in summary["parity"]:
        detail = f" ({p['passed']}/{p['rows']} rows)" if "rows" in p else (f" ({p['why']})" if p.get("why") else "")
        parity_cells.append(f"{p['suite']} {_verdict_word(p)}{detail}")
    lines.append("**Parity (JAX vs PyTorch/geoopt):** " + " · ".join(parity_cells))
    lines.append("")

    quality = summary["quality"]
    datasets = sorted({q["dataset"] for q in quality}) or ["-"]
    lines.append(f"**Test HR@10 / NDCG@10** ({', '.join(datasets)}):")
    lines.append("")
    published = {p["model"]: p for p in (summary.get("published") or {}).get("rows", [])}
    header = ["model", "JAX", "PyTorch"] + (["published"] if published else [])
    rows = []
    kinds = ["ae", "hae"] + sorted({q["kind"] for q in quality} - {"ae", "hae"})
    for kind in kinds:
        label = MODEL_LABEL.get(kind, kind)
        mine = [q for q in quality if q["kind"] == kind]
        presets = sorted({q["preset"] or q["run_name"] or "" for q in mine}) or [""]
        for preset in presets:
            by_fw = {q["framework"]: q for q in mine if (q["preset"] or q["run_name"] or "") == preset}
            name = f"{label} ({preset})" if preset else label
            row = [name, _metric_cell(by_fw.get("jax")), _metric_cell(by_fw.get("torch"))]
            if published:
                pub = published.get(label)
                row.append(f"{pub['hr']:.4f} / {pub['ndcg']:.4f}" if pub else "-")
            rows.append(row)
    for b in summary["baselines"]:
        row = [b["model"], _metric_cell(b), "(numpy)"]
        if published:
            pub = published.get("EASE") if b["model"].startswith("EASE") else None
            row.append(f"{pub['hr']:.4f} / {pub['ndcg']:.4f}" if pub else "-")
        rows.append(row)
    lines += _md_table(header, rows)
    lines.append("")

    if summary["throughput"]:
        lines.append("**Training throughput** (users/s over a full epoch, data feeding included; best JAX arm "
                     "over PyTorch, median [min/max .. max/min]):")
        lines.append("")
        rows = []
        for t in summary["throughput"]:
            if t.get("status") == "failed":
                rows.append([t["workload"], "FAILED", t.get("error", "")[:80], "", ""])
                continue
            rows.append([f"{t['workload']} ({MODEL_LABEL.get(t.get('model_kind'), t.get('model_kind'))})",
                         f"{t.get('best_jax', '-')}: {_f(t.get('best_jax_users_per_s'), 0)}",
                         _ratio_cell(t.get("torch-eager")), _ratio_cell(t.get("torch-compile")),
                         _f((t.get("users_per_s") or {}).get("torch-eager"), 0)])
        lines += _md_table(["model", "best JAX users/s", "÷ PyTorch eager", "÷ torch.compile", "PyTorch eager users/s"],
                           rows)
        if summary["targets"]:
            met = [t for t in summary["targets"] if t["met"]]
            missed = [t for t in summary["targets"] if t["met"] is False]
            lines.append("")
            missed_text = "; ".join(f"{t['workload']} {t['target']} = {_f(t['value'], 2)}" for t in missed)
            lines.append(f"Targets (issue 7): {len(met)} met, {len(missed)} not met" + (f": {missed_text}" if missed else "."))
        if bench:
            s, d = bench["settings"], bench["device"]
            lines.append("")
            lines.append(f"Measured on {d.get('cpu_model')} ({d.get('usable_cpus')} CPUs; {s['device']}), "
                         f"{bench['data']['n_users']} users x {bench['data']['n_items']} items, {s['dtype']}, "
                         f"{s['repeats']} repeats; load average {_load(d.get('load_average'))} at the start.")
    else:
        lines.append("**Training throughput:** no bench JSON among the inputs.")
    failed_stages = [s for s in summary["stages"] if s.get("status") not in ("ok", "failed-checks", "skipped")]
    skipped = [s for s in summary["stages"] if s.get("status") == "skipped"]
    if summary["stages"]:
        lines.append("")
        text = f"**Stages:** {len(summary['stages']) - len(failed_stages) - len(skipped)} ran"
        if failed_stages:
            text += ", FAILED: " + "; ".join(f"{s['name']} ({s.get('summary', s.get('status'))})" for s in failed_stages)
        if skipped:
            text += ", skipped: " + "; ".join(f"{s['name']} ({s.get('summary', '')})" for s in skipped)
        lines.append(text + ".")
    return lines


def _parity_section(kind: str, payload: dict[str, Any], plot: Path | None, out: Path,
                    per_step: bool | None = None) -> list[str]:
    records = payload["records"]
    failed = [r for r in records if not r.get("passed")]
    lines = [f"### {kind}", "", f"{len(records) - len(failed)}/{len(records)} rows pass."]
    if kind == "ops":
        wrong = [r for r in records if r.get("reference_wrong")]
        lines[-1] += (f" geoopt deviates from the exact oracle in {len(wrong)} row(s); those pass only where "
                      "JAX matches the oracle.")
    if kind == "optim" and per_step is False:
        lines.append("")
        lines.append("The optim JSON carries the worst error over each trajectory (and the step where it "
                     "occurs), not the error after every step; the plot shows the worst per configuration.")
    if plot is not None:
        lines += ["", f"![{kind}]({plot.relative_to(out).as_posix()})"]
    if failed:
        lines += ["", "Failing rows:", ""]
        lines += _md_table(["check", "dtype", "max abs err", "max rel err", "tolerance", "note"],
                           [[_check_label(r), r["dtype"], _e(r["max_abs_err"]), _e(r["max_rel_err"]),
                             f"{r['tolerance']:.0e}", r.get("note", "")] for r in failed])
    lines += ["", "<details><summary>all rows</summary>", ""]
    lines += _md_table(["check", "dtype", "max abs err", "max rel err", "tolerance", "pass"],
                       [[_check_label(r), r["dtype"], _e(r["max_abs_err"]), _e(r["max_rel_err"]),
                         f"{r['tolerance']:.0e}", "ok" if r["passed"] else "FAIL"] for r in records])
    lines += ["", "</details>", ""]
    return lines


def _check_label(r: dict[str, Any]) -> str:
    if "function" in r and "regime" in r:
        return f"{r['function']} / {r['regime']}" + (" (REF WRONG)" if r.get("reference_wrong") else "")
    if "config" in r and "variant" in r:
        return f"{r['config']} / {r['variant']} (worst step {r.get('worst_step', '?')})"
    return str(r.get("check"))


def _bench_section(bench: dict[str, Any], plot: Path | None, out: Path) -> list[str]:
    s, d = bench["settings"], bench["device"]
    lines = ["## Throughput", ""]
    lines.append(f"Data {bench['data']['dataset']} ({bench['data']['n_users']} users x {bench['data']['n_items']} "
                 f"items), {s['dtype']}, device {s['device']}, medians of {s['repeats']} repeats [min, max], "
                 f"run round-robin over the arms.")
    if plot is not None:
        lines += ["", f"![throughput]({plot.relative_to(out).as_posix()})"]
    for w in bench["workloads"]:
        lines.append("")
        if w.get("status") == "failed":
            lines += [f"### {w['name']}", "", f"FAILED: {w.get('error')}"]
            continue
        if w["kind"] == "optimizer":
            r = w["result"]
            lines += [f"### {w['name']}", "",
                      f"One step on {w['n_points']:,} ball points of dimension {w['dim']} ({w['dtype']}): JAX "
                      f"{r['jax_ms']:.3f} ms (min {r['jax_ms_min']:.3f}), geoopt {r['torch_ms']:.3f} ms (min "
                      f"{r['torch_ms_min']:.3f}); geoopt / JAX = {r['torch_ms'] / r['jax_ms']:.2f}x."]
            continue
        lines += [f"### {w['name']} ({MODEL_LABEL.get(w['model_kind'], w['model_kind'])})", "",
                  f"Layers {w['config']['model']['layer_sizes']}, batch {w['batch_size']}, {w['steps_per_epoch']} "
                  f"steps per epoch, {w['flops']['train_epoch'] / 1e9:.1f} matmul GFLOP per epoch.", ""]
        rows = []
        for a in w["arms"]:
            if a.get("status") != "ok":
                rows.append([a["arm"], "FAILED: " + str(a.get("error"))[:100]] + [""] * 9)
                continue
            m = a.get("memory", {})
            peak = m.get("device_peak_mb")
            if peak is None and m.get("resident_mb") is not None and m.get("epoch_peak_above_mb") is not None:
                peak = m["resident_mb"] + m["epoch_peak_above_mb"]
            rows.append([a["arm"], format_stat(a["train_users_per_s"]), _f(a["epoch_s"]["median"], 2),
                         _f(a["feed_s"]["median"], 2), _f(a["loop_overhead_s"], 2), format_stat(a["step_s"], 1e3, 1),
                         format_stat(a["infer_users_per_s"]), _f(a["compile_s"], 1), _f(peak, 0),
                         _pct(a.get("matmul_fraction")), _pct(a.get("matmul_fraction_step"))])
        lines += _md_table(["arm", "train users/s", "epoch s", "feed s", "loop overhead s", "step ms",
                            "infer users/s", "compile s", "peak MB", "matmul % (epoch)", "matmul % (step)"], rows)
        rates = w.get("matmul_rate", {})
        if rates:
            lines += ["", "Matmul rate at the model's shapes (the roofline): " + "; ".join(
                f"{fw} {r['gflops']:.1f} GFLOP/s" for fw, r in rates.items()) + "."]
        ratios = [r for r in w["ratios"] if r["metric"] == "train_users_per_s"]
        if ratios:
            lines += ["", "Training throughput ratios: " + "; ".join(
                f"{r['numerator']} ÷ {r['denominator']} {_ratio_cell(r)}" for r in ratios) + "."]
    if bench.get("targets"):
        lines += ["", "### Targets (issue 7)", ""]
        lines += _md_table(["workload", "target", "value", "verdict"],
                           [[t["workload"], t["target"], _f(t["value"], 2),
                             "not measured" if t["met"] is None else ("met" if t["met"] else "**NOT MET**")]
                            for t in bench["targets"]])
    lines += ["", "<details><summary>device</summary>", "", "```", json.dumps(d, indent=1), "```", "", "</details>", ""]
    return lines


def _load(values: list[float] | None) -> str:
    return "-" if not values else ", ".join(f"{v:.1f}" for v in values)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _try_plot(lines: list[str], function, *args):
    """A plot that fails costs its picture, never the report: the error is said in its place."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001
        lines.append(f"(plot {function.__name__} failed: {type(error).__name__}: {error})")
        return None


def render(found: dict[str, list[tuple[Path, dict[str, Any]]]], summary: dict[str, Any], out: Path) -> str:
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    plots: list[str] = []
    bench = found.get("bench", [(None, None)])[-1][1]
    lines = [f"# poincare-parity report: {summary['name']}", ""]
    run = summary.get("run")
    context = [f"created {summary['created']}"]
    if run:
        context.append(f"`poincare-parity run{' --quick' if run.get('quick') else ''} --dataset {run.get('dataset')}` "
                       f"({_f(run.get('seconds'), 0)} s)")
    lines += ["; ".join(context) + ".", ""]
    lines += verdict_lines(summary, bench)

    lines += ["", "## Parity", ""]
    for kind in PARITY_SUITES:
        if kind not in found:
            entry = next(p for p in summary["parity"] if p["suite"] == kind)
            lines += [f"### {kind}", "", f"Not available: {entry.get('why', 'missing')}.", ""]
            continue
        payload = found[kind][-1][1]
        plot, per_step = None, None
        if kind == "ops":
            plot = _try_plot(lines, plot_ops, payload, plots_dir / "ops_parity.png")
        elif kind == "optim":
            plot, per_step = _try_plot(lines, plot_optim, payload, plots_dir / "optim_trajectory.png") or (None, None)
        if plot:
            plots.append(str(plot))
        lines += _parity_section(kind, payload, plot, out, per_step)

    lines += ["## Training", ""]
    trains = found.get("train", [])
    if not trains:
        lines += ["No train JSON among the inputs.", ""]
    for index, (path, payload) in enumerate(trains):
        name = payload.get("preset") or payload.get("run_name") or f"train{index}"
        plot = _try_plot(lines, plot_training, payload, plots_dir / f"training_{_slug(name)}_{index}.png")
        kind = payload["config"]["model"]["kind"]
        lines += [f"### {MODEL_LABEL.get(kind, kind)}: {name}", "",
                  f"{_dataset_of_train(payload)}, {payload['config']['data']['protocol']} protocol; "
                  f"seeds {payload.get('seeds')}; from `{path}`."]
        if plot:
            plots.append(str(plot))
            lines += ["", f"![training {name}]({plot.relative_to(out).as_posix()})"]
        rows = []
        for r in payload["runs"]:
            t = r["test"]
            rows.append([FRAMEWORK_LABEL.get(r["framework"], r["framework"]), r["seed"],
                         f"{r['best_epoch'] + 1}/{r['epochs_run']}",
                         _f(r["validation"]["hr"]), f"{t['hr']:.4f} [{t['hr_low']:.4f}, {t['hr_high']:.4f}]",
                         f"{t['ndcg']:.4f} [{t['ndcg_low']:.4f}, {t['ndcg_high']:.4f}]", t["n_users"]])
        lines += [""] + _md_table(["framework", "seed", "best epoch", "val HR@10", "test HR@10", "test NDCG@10",
                                   "users"], rows)
        diff = payload.get("summary", {}).get("max_abs_test_hr_diff")
        if diff is not None:
            lines += ["", f"Largest |JAX − PyTorch| test HR@10 at the same seed: {diff:.4f}."]
        saturated = [r for r in payload["runs"] if "code_saturation" in r]
        if saturated:  # the hyperbolic model: how close its points sit to the ball's boundary
            lines += ["", "Saturation at the best validation epoch (r = sqrt(c)|point|, the norm relative to the "
                      "ball's radius; on boundary: share of users within 1e-3 of the largest r the projection allows):",
                      ""]
            lines += _md_table(["framework", "seed", "code mean r", "code max r", "code on boundary",
                                "output mean r", "output on boundary"],
                               [[FRAMEWORK_LABEL.get(r["framework"], r["framework"]), r["seed"],
                                 _f(r["code_saturation"]["norm_mean"], 3), _f(r["code_saturation"]["norm_max"], 4),
                                 _f(r["code_saturation"]["boundary_fraction"], 3),
                                 _f((r.get("output_saturation") or {}).get("norm_mean"), 3),
                                 _f((r.get("output_saturation") or {}).get("boundary_fraction"), 3)]
                                for r in saturated])
        lines.append("")

    for index, (path, payload) in enumerate(found.get("sweep", [])):
        plot = _try_plot(lines, plot_sweep, payload, plots_dir / f"sweep_{_slug(payload['field'])}_{index}.png")
        lines += _sweep_section(path, payload, plot, out)
        if plot:
            plots.append(str(plot))

    lines += ["## Recommendation quality", ""]
    plot = _try_plot(lines, plot_quality, summary, plots_dir / "quality.png")
    if plot:
        plots.append(str(plot))
        lines += [f"![quality]({plot.relative_to(out).as_posix()})", ""]
    if summary.get("published"):
        lines += [f"Published numbers: {summary['published']['source']}, on {summary['published']['dataset']}.", ""]
    if not summary["baselines"]:
        lines += ["No baselines JSON among the inputs.", ""]

    if bench:
        plot = _try_plot(lines, plot_throughput, bench, plots_dir / "throughput.png")
        if plot:
            plots.append(str(plot))
        lines += _bench_section(bench, plot, out)
    else:
        lines += ["## Throughput", "", "No bench JSON among the inputs.", ""]

    if summary["stages"]:
        lines += ["## Stages", ""]
        lines += _md_table(["stage", "status", "seconds", "command", "log", "summary"],
                           [[s["name"], s["status"], _f(s.get("seconds"), 0), f"`{' '.join(s.get('argv', []))}`",
                             s.get("log", ""), s.get("summary", "")] for s in summary["stages"]])
        for s in summary["stages"]:
            if s.get("status") not in ("ok", "skipped") and s.get("tail"):
                lines += ["", f"<details><summary>{s['name']}: last lines of output</summary>", "", "```",
                          s["tail"].rstrip(), "```", "", "</details>"]
        lines.append("")
    lines += ["## Inputs", ""] + [f"- `{i['path']}` ({i['kind']})" for i in summary["inputs"]]
    lines += [f"- ignored `{i['path']}`: {i['why']}" for i in summary["ignored"]]
    summary["plots"] = [Path(p).relative_to(out).as_posix() for p in plots]
    return "\n".join(lines) + "\n"


def _sweep_section(path: Path, payload: dict[str, Any], plot: Path | None, out: Path) -> list[str]:
    kind = payload["config"]["model"]["kind"]
    lines = [f"### Sweep over {payload['field']}: {MODEL_LABEL.get(kind, kind)}", "",
             f"{sweep_summary(path, payload)['dataset']}; seeds {payload.get('seeds')}; the value with the best "
             f"validation HR@10 is {payload.get('chosen_by_validation')} (the test column never chooses); "
             f"from `{path}`."]
    if plot:
        lines += ["", f"![sweep {payload['field']}]({plot.relative_to(out).as_posix()})"]
    rows = []
    for p in payload["points"]:
        for fw, e in p["frameworks"].items():
            sat = e.get("code_saturation") or {}
            out = e.get("output_saturation") or {}
            rows.append([p["value"], FRAMEWORK_LABEL.get(fw, fw), _f(e["val_hr"]), _f(e["val_ndcg"]), _f(e["test_hr"]),
                         _f(e["test_ndcg"]), _f(sat.get("norm_mean"), 3), _f(sat.get("norm_max"), 4),
                         _f(sat.get("boundary_fraction"), 3), _f(out.get("norm_mean"), 3),
                         _f(out.get("boundary_fraction"), 3), "/".join(str(b) for b in e.get("best_epoch", []))])
    lines += [""] + _md_table([payload["field"], "framework", "val HR@10", "val NDCG@10", "test HR@10", "test NDCG@10",
                               "code mean r", "code max r", "code on boundary", "output mean r", "output on boundary",
                               "best epoch"], rows)
    lines += ["", "r = sqrt(c)|z|: a point's norm relative to the ball's radius (code layer z, decoder output y), at "
              "the best validation epoch; on boundary: share of users within 1e-3 of the largest r the projection "
              "allows.", ""]
    return lines


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)


def write_report(inputs: list[str | Path], out: str | Path, name: str | None = None) -> dict[str, Any]:
    """Read `inputs`, write report.md, report.json and plots/ under `out`; -> the summary."""
    out = Path(out)
    paths = expand_inputs(inputs)
    if not paths:
        raise ReportError(f"no JSON files found in {', '.join(str(i) for i in inputs)}")
    found, ignored = load_inputs(paths)
    if not found:
        raise ReportError("none of the inputs was written by a poincare-parity command: "
                          + "; ".join(f"{i['path']} ({i['why']})" for i in ignored))
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(found, ignored, name or out.name)
    markdown = render(found, summary, out)
    atomic_write_text(out / "report.md", markdown)
    write_json(out / "report.json", summary, command="report")
    return summary
