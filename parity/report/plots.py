"""The report's figures (matplotlib, Agg), each readable on its own as a figure in a paper: units on
the axes, legends outside the data, what each colour and line style means stated in the legend,
error bars where the inputs carry intervals, and axes scaled to the differences that matter.

    plot_ops(payload, path)          heat map per dtype: function x regime, error / tolerance
    plot_optim(payload, path)        error per optimizer step, small multiples (dtype x family)
    plot_training(payload, path)     loss and validation HR@10 per epoch, and |JAX − PyTorch| under them
    plot_sweep(payload, path)        HR@10 per swept value (with test intervals), and the code's saturation
    plot_quality(summary, path)      test HR@10 / NDCG@10 dot plot: both frameworks, baselines, published
    plot_throughput(bench, path)     training and inference users/s per arm, ratio to PyTorch eager
    plot_cost_curve(bench, path)     seconds per epoch and memory per arm against the item count (log-log)

Each returns the path written (plot_optim: (path, per_step)), or None when there is nothing to draw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parity.backend import PORT, REFERENCE
from parity.report.summary import check_label, dataset_of_train, framework_label, is_oracle_judged, model_label
from parity.stats import wilson_interval

DPI = 130
COLOR = {PORT: "#1f77b4", REFERENCE: "#e66100"}  # blue / orange, told apart in grey scale by marker too
MARKER = {PORT: "o", REFERENCE: "s"}
BASELINE_COLOR = "#6b6b6b"
PUBLISHED_COLOR = "black"
SEED_COLORS = ("#1b9e77", "#7570b3", "#d95f02", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
ARM_COLOR = {"torch-eager": "#e66100", "torch-compile": "#b2182b", "torch-sparse": "#f4a582",
             "jax-jit": "#6baed6", "jax-scan": "#1f4e99", "jax-sparse": "#35978f"}
# arms the table above does not name (arms are added in parity.bench.arms): a colour of their framework's
# family in turn, and a marker of their own
EXTRA_ARM_COLORS = {PORT: ("#08306b", "#4292c6", "#9ecae1"), REFERENCE: ("#7f2704", "#fd8d3c", "#fdd0a2")}
ARM_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
TOLERANCE_COLOR = "black"
FAMILY_LABEL = {"sgd": "Riemannian SGD", "adam": "Riemannian Adam"}
# keys a parity record may carry with its error after every optimizer step (one float per step)
STEP_ERROR_KEYS = ("per_step_max_rel_err", "step_rel_err")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _pyplot().close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# ops


def ops_cell_value(record: dict[str, Any]) -> float | None:
    """What a heat-map cell shows: the error the row is judged on, over its tolerance. A row where
    geoopt is off the exact oracle is judged on JAX's error against the oracle, not against geoopt."""
    tolerance = record.get("tolerance")
    error = record.get("oracle_rel_err_jax") if is_oracle_judged(record) else record.get("max_rel_err")
    if not tolerance or error is None:
        return None
    return error / tolerance


def plot_ops(payload: dict[str, Any], path: Path) -> Path | None:
    """Heat map per dtype: functions x regimes, colour log10(judged error / tolerance), <= 0 passes."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Patch

    records = [r for r in payload["records"] if "function" in r and "regime" in r]
    if not records:
        return None
    plt = _pyplot()
    dtypes = sorted({r["dtype"] for r in records}, reverse=True)  # float64 first
    functions = list(dict.fromkeys(r["function"] for r in records))
    regimes = list(dict.fromkeys(r["regime"] for r in records))
    low, high = -10.0, 2.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    norm = TwoSlopeNorm(vmin=low, vcenter=0.0, vmax=high)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(max(9.0, 2.2 + 1.05 * len(regimes) * len(dtypes)),
                                                      max(4.5, 1.6 + 0.3 * len(functions))),
                             squeeze=False, sharey=True, layout="constrained")
    image = None
    for ax, dtype in zip(axes[0], dtypes):
        grid = np.full((len(functions), len(regimes)), np.nan)
        for r in records:
            if r["dtype"] != dtype:
                continue
            i, j = functions.index(r["function"]), regimes.index(r["regime"])
            value = ops_cell_value(r)
            if value is not None:
                grid[i, j] = np.clip(np.log10(max(value, 1e-30)), low, high)
            label = "FAIL" if not r.get("passed") else ("R" if is_oracle_judged(r) else
                                                        "ok" if value is not None and value > 1 else "")
            if label:
                dark = not np.isnan(grid[i, j]) and (grid[i, j] < -6 or grid[i, j] > 1.2)
                ax.text(j, i, label, ha="center", va="center", fontsize=7, fontweight="bold",
                        color="white" if dark else "black")
        missing = np.argwhere(np.isnan(grid))
        for i, j in missing:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", color="#bbbbbb", lw=0))
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(regimes)), regimes, rotation=35, ha="right", fontsize=8)
        ax.set_yticks(range(len(functions)), functions, fontsize=8)
        ax.set_xlabel("input regime", fontsize=8)
        ax.set_title(f"{dtype} (tolerances: {_tolerance_text(records, dtype)})", fontsize=9)
    cbar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    cbar.set_label("log10(relative error / the row's tolerance)\n< 0 passes (blue), > 0 fails (red)", fontsize=8)
    handles = [Patch(facecolor="white", edgecolor="black", label="R: geoopt is off the exact oracle; the cell "
                     "shows JAX's error against the oracle"),
               Patch(facecolor="white", edgecolor="#bbbbbb", hatch="///",
                     label="regime does not apply to the function")]
    fig.legend(handles=handles, loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    fig.suptitle("Op parity, JAX vs geoopt: worst relative error of values and gradients over curvatures and shapes",
                 fontsize=10)
    return _save(fig, path)


def _tolerance_text(records: list[dict[str, Any]], dtype: str) -> str:
    values = sorted({r["tolerance"] for r in records if r["dtype"] == dtype and r.get("tolerance")})
    return ", ".join(f"{v:.0e}" for v in values)


# ---------------------------------------------------------------------------------------------
# optim


def _step_errors(record: dict[str, Any]) -> list[float] | None:
    for key in STEP_ERROR_KEYS:
        if isinstance(record.get(key), list) and record[key]:
            return record[key]
    return None


def _family(record: dict[str, Any]) -> str:
    name = str(record.get("config") or record.get("check", "")).removeprefix("optim.")
    return name.split("-")[0].split(".")[0]


def plot_optim(payload: dict[str, Any], path: Path) -> tuple[Path | None, bool]:
    """Relative error against step, small multiples: one panel per dtype (rows) and optimizer family
    (columns); a colour per configuration, a line style per variant; the tolerance drawn over the steps
    it judges. Without per-step errors in the records: the worst error per configuration. -> (path, per_step)."""
    records = payload["records"]
    if not records:
        return None, False
    per_step = any(_step_errors(r) for r in records)
    if not per_step:
        return _plot_optim_worst(records, path), False
    import numpy as np
    from matplotlib.lines import Line2D

    plt = _pyplot()
    dtypes = sorted({r["dtype"] for r in records}, reverse=True)
    families = list(dict.fromkeys(_family(r) for r in records))
    variants = list(dict.fromkeys(str(r.get("variant", "")) for r in records))
    styles = dict(zip(variants, ("-", "--", ":", "-.")))
    fig, axes = plt.subplots(len(dtypes), len(families), figsize=(5.2 * len(families), 3.1 * len(dtypes) + 1.4),
                             squeeze=False, sharex=True)
    for col, family in enumerate(families):
        configs = list(dict.fromkeys(str(r.get("config", r.get("check"))) for r in records if _family(r) == family))
        colors = {c: SEED_COLORS[i % len(SEED_COLORS)] for i, c in enumerate(configs)}
        for row, dtype in enumerate(dtypes):
            ax = axes[row][col]
            rows = [r for r in records if r["dtype"] == dtype and _family(r) == family]
            last_step = 1
            for r in rows:
                errors = _step_errors(r)
                if not errors:
                    continue
                values = np.asarray([e if e and e > 0 else np.nan for e in errors], float)  # exact zeros: gaps
                steps = np.arange(1, len(values) + 1)
                last_step = max(last_step, len(values))
                ax.semilogy(steps, values, lw=0.9, alpha=0.9, color=colors[str(r.get("config", r.get("check")))],
                            ls=styles.get(str(r.get("variant", "")), "-"))
            for tolerance, judged in sorted({(r["tolerance"], r.get("judged_steps") or len(_step_errors(r) or []) or 1)
                                             for r in rows}):
                ax.hlines(tolerance, 1, judged, color=TOLERANCE_COLOR, lw=2.2, alpha=0.85, zorder=5)
                if judged < last_step:
                    ax.axvspan(judged, last_step, color="#eeeeee", zorder=0)
                    ax.text((judged + last_step) / 2, tolerance, f"not judged\nafter step {judged}", ha="center",
                            va="top", fontsize=7, color="#555555")
            ax.set_xlim(1, last_step)
            ax.grid(True, which="major", axis="y", color="#e5e5e5", lw=0.6)
            ax.set_title(f"{FAMILY_LABEL.get(family, family)}, {dtype}", fontsize=9)
            if col == 0:
                ax.set_ylabel("max relative error, JAX vs geoopt", fontsize=8)
            if row == len(dtypes) - 1:
                ax.set_xlabel("optimizer step", fontsize=8)
        handles = [Line2D([], [], color=colors[c], lw=1.5, label=c) for c in configs]
        axes[-1][col].legend(handles=handles, title=f"{family} configurations (colour)", loc="upper center",
                             bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=7, title_fontsize=8, frameon=False)
    shared = [Line2D([], [], color="black", ls=styles[v], lw=1, label=f"variant: {v}") for v in variants]
    shared.append(Line2D([], [], color=TOLERANCE_COLOR, lw=2.2, alpha=0.85,
                         label="tolerance, over the steps it judges"))
    fig.legend(handles=shared, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=len(shared), fontsize=8,
               frameon=False)
    fig.suptitle("Riemannian optimizer trajectories, JAX (optax) vs geoopt: error after each step "
                 "(exact zeros left out)", fontsize=10, y=1.04)
    fig.tight_layout()
    return _save(fig, path), True


def _plot_optim_worst(records: list[dict[str, Any]], path: Path) -> Path:
    """The worst error over each trajectory, one bar per configuration and variant, per dtype."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    dtypes = sorted({r["dtype"] for r in records}, reverse=True)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5.5 * len(dtypes), 1.2 + 0.22 * max(
        sum(1 for r in records if r["dtype"] == d) for d in dtypes)), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        rows = [r for r in records if r["dtype"] == dtype]
        values = [max(r.get("trajectory_max_rel_err", r["max_rel_err"]) or 0.0, 1e-18) for r in rows]
        ax.barh(range(len(rows)), values, color=["#4393c3" if r["passed"] else "#d6604d" for r in rows])
        ax.set_xscale("log")
        ax.set_yticks(range(len(rows)), [check_label(r) for r in rows], fontsize=7)
        ax.invert_yaxis()
        for tolerance in sorted({r["tolerance"] for r in rows}):
            ax.axvline(tolerance, color="black", ls="--", lw=1)
        ax.set_xlabel("worst relative error over the trajectory, JAX vs geoopt", fontsize=8)
        ax.set_title(dtype, fontsize=9)
    handles = [Patch(color="#4393c3", label="passes"), Patch(color="#d6604d", label="fails"),
               plt.Line2D([], [], color="black", ls="--", label="tolerance")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Riemannian optimizer trajectories, JAX vs geoopt: worst error over all steps "
                 "(the optim JSON has no per-step errors)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# training


def _gaps(a: list[float], b: list[float], relative: bool) -> list[float]:
    out = []
    for x, y in zip(a, b):
        gap = abs(x - y) / abs(y) if relative and y else abs(x - y)
        out.append(gap)
    return out


def plot_training(payload: dict[str, Any], path: Path) -> Path | None:
    """Top: training loss and validation HR@10 per epoch, a colour per seed, JAX as lines and PyTorch as
    markers. Below (both frameworks present): |JAX − PyTorch| per epoch, the loss relative (log scale)
    and HR@10 absolute (with the same difference in validation users on the right)."""
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    runs = payload.get("runs", [])
    if not runs:
        return None
    plt = _pyplot()
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    frameworks = list(dict.fromkeys(r["framework"] for r in runs))
    paired = PORT in frameworks and REFERENCE in frameworks
    epsilon_label = None
    n_rows = 2 if paired else 1
    fig, axes = plt.subplots(n_rows, 2, figsize=(11, 3.4 * n_rows + 0.8), squeeze=False, sharex=True)
    seed_color = {s: SEED_COLORS[i % len(SEED_COLORS)] for i, s in enumerate(seeds)}
    for r in runs:
        epochs = [h["epoch"] + 1 for h in r["history"]]
        color = seed_color[r["seed"]]
        if r["framework"] == PORT or not paired:
            style = {"ls": "-", "lw": 1.4, "marker": MARKER.get(r["framework"], "."), "ms": 2.5}
        else:
            style = {"ls": "none", "marker": "o", "ms": 5, "mfc": "none", "mew": 0.9}
        axes[0][0].plot(epochs, [h["loss"] for h in r["history"]], color=color, **style)
        axes[0][1].plot(epochs, [h["val_hr"] for h in r["history"]], color=color, **style)
        best = r.get("best_epoch")
        if best is not None and best < len(r["history"]) and (r["framework"] == PORT or not paired):
            axes[0][1].plot(best + 1, r["history"][best]["val_hr"], marker="*", ms=10, color=color, mec="black",
                            mew=0.5, ls="none", zorder=5)
    kind = payload["config"]["model"]["kind"]
    name = payload.get("preset") or payload.get("run_name") or kind
    axes[0][0].set_ylabel("training loss\n(mean over the epoch's batches)", fontsize=8)
    axes[0][1].set_ylabel("validation HR@10", fontsize=8)
    axes[0][0].set_title("training loss", fontsize=9)
    axes[0][1].set_title("validation HR@10 (star: best epoch, the one tested)", fontsize=9)
    if paired:
        validation_users = (payload.get("split") or {}).get("validation_users")
        by_seed = {s: {r["framework"]: r for r in runs if r["seed"] == s} for s in seeds}
        for s, pair in by_seed.items():
            if PORT not in pair or REFERENCE not in pair:
                continue
            a, b = pair[PORT]["history"], pair[REFERENCE]["history"]
            n = min(len(a), len(b))
            epochs = [h["epoch"] + 1 for h in a[:n]]
            loss_gap = np.asarray(_gaps([h["loss"] for h in a[:n]], [h["loss"] for h in b[:n]], True), float)
            axes[1][0].semilogy(epochs, np.where(loss_gap > 0, loss_gap, np.nan), color=seed_color[s], marker=".",
                                lw=1)
            hr_gap = _gaps([h["val_hr"] for h in a[:n]], [h["val_hr"] for h in b[:n]], False)
            axes[1][1].plot(epochs, hr_gap, color=seed_color[s], marker=".", lw=1)
        dtype = runs[0].get("dtype")
        if dtype in ("float32", "float64", "float16"):
            eps = float(np.finfo(dtype).eps)
            axes[1][0].axhline(eps, color="gray", lw=0.9, ls=(0, (1, 2)))
            epsilon_label = f"{dtype} machine epsilon ({eps:.1e})"
        axes[1][0].set_ylabel("|JAX − PyTorch| / |PyTorch|\ntraining loss (exact zeros left out)", fontsize=8)
        axes[1][0].set_title("relative loss difference per epoch", fontsize=9)
        axes[1][1].set_ylabel("|JAX − PyTorch| validation HR@10", fontsize=8)
        axes[1][1].set_title("validation HR@10 difference per epoch", fontsize=9)
        axes[1][1].set_ylim(bottom=0)
        top = axes[1][1].get_ylim()[1]
        if validation_users:
            axes[1][1].set_ylim(0, max(top, 3.5 / validation_users))
            twin = axes[1][1].secondary_yaxis("right", functions=(lambda v: v * validation_users,
                                                                  lambda u: u / validation_users))
            twin.set_ylabel(f"users (of {validation_users:,})", fontsize=8)
        for ax in axes[1]:
            ax.grid(True, axis="y", color="#e5e5e5", lw=0.6)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [Line2D([], [], color=seed_color[s], lw=2, label=f"seed {s}") for s in seeds]
    if paired:
        handles += [Line2D([], [], color="gray", lw=1.4, marker="o", ms=2.5, label="JAX (line)"),
                    Line2D([], [], color="gray", ls="none", marker="o", mfc="none", ms=5,
                           label="PyTorch (open markers)")]
        if epsilon_label:
            handles.append(Line2D([], [], color="gray", lw=0.9, ls=(0, (1, 2)), label=epsilon_label))
    else:
        handles += [Line2D([], [], color="gray", lw=1.4, label=", ".join(framework_label(f) for f in frameworks))]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), fontsize=8,
               frameon=False)
    title = f"{model_label(kind)} ({name}) on {dataset_of_train(payload)}"
    fig.suptitle(title + (": both frameworks from the same weights, batches and masks" if paired else ""), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# sweep


def plot_sweep(payload: dict[str, Any], path: Path) -> Path | None:
    """A `train --sweep`, one panel each: validation HR@10 per value and framework (what chooses), test
    HR@10 with its 95% interval (never chooses), and the code layer's saturation (mean and max norm
    relative to the ball's radius, share of users on the boundary; the decoder output's too)."""
    points = payload.get("points", [])
    if not points:
        return None
    plt = _pyplot()
    values = [p["value"] for p in points]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    xs = values if numeric else list(range(len(values)))
    fig, (ax_v, ax_t, ax_s) = plt.subplots(1, 3, figsize=(15, 4.4))
    frameworks = payload.get("frameworks") or list(points[0]["frameworks"])
    chosen = payload.get("chosen_by_validation")
    validation_users = (payload.get("split") or {}).get("validation_users")
    for fw in frameworks:
        label = framework_label(fw)
        color = COLOR.get(fw)
        entries = [p["frameworks"].get(fw, {}) for p in points]
        val = [e.get("val_hr") for e in entries]
        if validation_users and all(v is not None for v in val):
            # HR@10 is a share of users: its 95% interval follows from the value and the user count (Wilson)
            bounds = [wilson_interval(round(v * validation_users), validation_users) for v in val]
            ax_v.errorbar(xs, val, yerr=[[v - lo for v, (lo, _) in zip(val, bounds)],
                                         [hi - v for v, (_, hi) in zip(val, bounds)]],
                          marker=MARKER.get(fw, "o"), color=color, capsize=3,
                          label=f"{label} (95% interval over {validation_users:,} users)")
        else:
            ax_v.plot(xs, val, marker=MARKER.get(fw, "o"), color=color, label=label)
        test = [e.get("test_hr") for e in entries]
        low = [e.get("test_hr_low") for e in entries]
        high = [e.get("test_hr_high") for e in entries]
        if all(v is not None for v in low + high):
            err = [[t - lo for t, lo in zip(test, low)], [hi - t for t, hi in zip(test, high)]]
            ax_t.errorbar(xs, test, yerr=err, marker=MARKER.get(fw, "o"), color=color, capsize=3,
                          label=f"{label} (95% interval)")
        else:
            ax_t.plot(xs, test, marker=MARKER.get(fw, "o"), color=color, label=label)
    for ax in (ax_v, ax_t):
        if chosen in values:
            ax.axvline(xs[values.index(chosen)], color="#888888", lw=1, ls="--", zorder=0,
                       label=f"chosen on validation: {chosen}")
        ax.set_xlabel(payload["field"])
        ax.grid(True, axis="y", color="#e5e5e5", lw=0.6)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax_v.set_ylabel("validation HR@10")
    ax_v.set_title("validation HR@10 (chooses the value)", fontsize=9)
    ax_t.set_ylabel("test HR@10")
    ax_t.set_title("test HR@10 (reported, never chooses)", fontsize=9)
    fw = next((f for f in frameworks if "code_saturation" in points[0]["frameworks"].get(f, {})), None)
    if fw is not None:
        sat = [p["frameworks"][fw]["code_saturation"] for p in points]
        ax_s.plot(xs, [s["norm_mean"] for s in sat], marker="o", color="#1b9e77", label="code: mean |z| / radius")
        ax_s.plot(xs, [s["norm_max"] for s in sat], marker="^", color="#1b9e77", ls="--",
                  label="code: max |z| / radius")
        ax_s.plot(xs, [s["boundary_fraction"] for s in sat], marker="x", color="#7570b3",
                  label="code: share of users on the boundary")
        out = [p["frameworks"][fw].get("output_saturation") for p in points]
        if all(out):
            ax_s.plot(xs, [o["norm_mean"] for o in out], marker="o", ls=":", color="#d95f02",
                      label="decoder output: mean |y| / radius")
            ax_s.plot(xs, [o["boundary_fraction"] for o in out], marker="x", ls=":", color="#e7298a",
                      label="decoder output: share on the boundary")
        limit = sat[0].get("limit")
        if limit is not None:
            ax_s.axhline(limit, color="gray", lw=0.8, ls=(0, (1, 2)),
                         label=f"largest r the projection allows ({limit:g})")
        ax_s.set(xlabel=payload["field"], ylabel="r = sqrt(c)|point| (norm / radius)\nor share of users",
                 ylim=(-0.02, 1.05))
        ax_s.set_title(f"saturation at the best validation epoch ({framework_label(fw)})", fontsize=9)
        ax_s.grid(True, axis="y", color="#e5e5e5", lw=0.6)
        ax_s.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    else:
        ax_s.set_axis_off()
    for ax in (ax_v, ax_t, ax_s):
        if numeric and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in values])
    kind = payload["config"]["model"]["kind"]
    dataset = (payload.get("split") or {}).get("dataset") or payload["config"]["data"]["dataset"]
    fig.suptitle(f"{model_label(kind)} on {dataset}: sweep over {payload['field']} (seeds {payload.get('seeds')})",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# quality


def quality_entries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the quality figure, top to bottom: our models (both frameworks on one row), the
    baselines, the published numbers."""
    entries = []
    datasets = sorted({q["dataset"] for q in summary["quality"]} | {b["dataset"] for b in summary["baselines"]
                                                                    if b.get("dataset")})
    several = len(datasets) > 1
    models: dict[tuple, dict[str, Any]] = {}
    for q in summary["quality"]:
        key = (q["dataset"], q["kind"], q["preset"] or q["run_name"] or "")
        models.setdefault(key, {})[q["framework"]] = q
    for (dataset, kind, name), by_fw in sorted(models.items(), key=lambda kv: (kv[0][0], kv[0][1] != "hae", kv[0][2])):
        label = f"{model_label(kind)}" + (f" ({name})" if name else "") + (f", {dataset}" if several else "")
        entries.append({"label": label, "kind": "model", "by_framework": by_fw})
    for b in summary["baselines"]:
        entries.append({"label": b["model"] + (f", {b['dataset']}" if several else ""), "kind": "baseline", "row": b})
    if summary.get("published"):
        for p in summary["published"]["rows"]:
            entries.append({"label": f"published: {p['model']}", "kind": "published", "row": p})
    return entries


def _axis_range(points: list[tuple[float, float | None, float | None]]) -> tuple[float, float]:
    """The x range that shows the differences that matter: (value, low, high) triples whose value is far
    below the best (< 0.8 x) are left off the axis and named at its edge; the rest fit with their intervals."""
    top = max(p[0] for p in points)
    kept = [p for p in points if p[0] >= 0.8 * top]
    lo = min(min(p[0], p[1] if p[1] is not None else p[0]) for p in kept)
    hi = max(max(p[0], p[2] if p[2] is not None else p[0]) for p in kept)
    pad = max(0.06 * (hi - lo), 0.002)
    return lo - pad, hi + pad


def plot_quality(summary: dict[str, Any], path: Path) -> Path | None:
    """Dot plot of test HR@10 and NDCG@10 with intervals: both frameworks per model (mean over seeds,
    each seed a tick, the line the 95% interval of one seed's score), the baselines (95% interval), the
    published numbers (one reported value, no interval)."""
    from matplotlib.lines import Line2D

    entries = quality_entries(summary)
    if not entries:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.7 + 0.45 * len(entries)), sharey=True)
    for ax, metric, title in zip(axes, ("hr", "ndcg"), ("test HR@10", "test NDCG@10")):
        # y, value, low, high, colour, marker, label above (+1) or below (-1)
        points: list[tuple[float, float, float | None, float | None, str, str, int]] = []
        seed_dots: list[tuple[float, float, str]] = []
        for i, e in enumerate(entries):
            if e["kind"] == "model":
                fws = sorted(e["by_framework"], key=lambda f: f != PORT)
                for k, fw in enumerate(fws):
                    q = e["by_framework"][fw]
                    y = i + (0.0 if len(fws) == 1 else (-0.17 if k == 0 else 0.17))
                    half = q.get(f"{metric}_ci_half")
                    if half is not None:
                        low, high = q[metric] - half, q[metric] + half
                    else:
                        low, high = q.get(f"{metric}_low"), q.get(f"{metric}_high")
                    points.append((y, q[metric], low, high, COLOR.get(fw, "gray"), MARKER.get(fw, "o"),
                                   1 if k == 0 else -1))
                    if len(q.get(f"{metric}_seeds", [])) > 1:
                        seed_dots += [(y, v, COLOR.get(fw, "gray")) for v in q[f"{metric}_seeds"]]
            elif e["kind"] == "baseline":
                r = e["row"]
                points.append((i, r[metric], r.get(f"{metric}_low"), r.get(f"{metric}_high"), BASELINE_COLOR, "D", 1))
            else:
                points.append((i, e["row"][metric], None, None, PUBLISHED_COLOR, "X", 1))
        lo, hi = _axis_range([(p[1], p[2], p[3]) for p in points])
        for y, value, low, high, color, marker, side in points:
            if value < lo:  # off the axis: named at its left edge
                ax.annotate(f"◀ {value:.4f} (off the axis)", (lo, y), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=7, color=color)
                continue
            if low is not None and high is not None:
                ax.hlines(y, low, high, color=color, lw=1.3, alpha=0.7)
            ax.plot(value, y, marker=marker, color=color, ms=6 if marker != "X" else 7, ls="none",
                    mfc=color if marker != "s" else "white", mew=1.3, zorder=4)
            ax.annotate(f"{value:.4f}", (value, y), xytext=(0, 6 * side), textcoords="offset points", ha="center",
                        va="bottom" if side > 0 else "top", fontsize=6.5, color=color)
        for y, value, color in seed_dots:
            if value >= lo:
                ax.plot(value, y, marker="|", color=color, ms=9, mew=1.2, ls="none", zorder=3)
        ax.set_xlim(lo, hi)
        ax.set_xlabel(f"{title} (axis zoomed to the values compared)", fontsize=8)
        ax.grid(True, axis="x", color="#e5e5e5", lw=0.6)
        ax.set_axisbelow(True)
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(range(len(entries)), [e["label"] for e in entries], fontsize=8)
    axes[0].set_ylim(len(entries) - 0.5, -0.6)
    handles = [Line2D([], [], color=COLOR[PORT], marker=MARKER[PORT], ls="none", label="JAX (mean over seeds)"),
               Line2D([], [], color=COLOR[REFERENCE], marker=MARKER[REFERENCE], mfc="white", ls="none",
                      label="PyTorch (mean over seeds)"),
               Line2D([], [], color="gray", marker="|", ls="none", ms=9, mew=1.2, label="one seed"),
               Line2D([], [], color=BASELINE_COLOR, marker="D", ls="none", label="baseline (numpy)"),
               Line2D([], [], color=PUBLISHED_COLOR, marker="X", ls="none", label="published (one value, no interval)"),
               Line2D([], [], color="gray", lw=1.3, alpha=0.7,
                      label="95% interval (autoencoders: of one seed's score)")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    users = sorted({q.get("n_users") for q in summary["quality"] if q.get("n_users")} |
                   {b.get("n_users") for b in summary["baselines"] if b.get("n_users")})
    datasets = sorted({q["dataset"] for q in summary["quality"]} | {b["dataset"] for b in summary["baselines"]
                                                                    if b.get("dataset")})
    fig.suptitle(f"Recommendation quality on the test split of {', '.join(datasets)}"
                 + (f" ({', '.join(f'{u:,}' for u in users)} users)" if users else ""), fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------
# throughput


def plot_throughput(bench: dict[str, Any], path: Path) -> Path | None:
    """Per model workload, training and inference users/s per arm (median; whiskers: min and max of the
    repeats), each bar labelled with its ratio to PyTorch eager."""
    workloads = [w for w in bench.get("workloads", []) if w.get("kind") == "model" and w.get("arms")]
    if not workloads:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(workloads), figsize=(4.8 * len(workloads), 7), squeeze=False)
    colors = arm_colors([(a["arm"], a.get("framework")) for w in workloads for a in w["arms"]])
    for col, w in enumerate(workloads):
        arms = [a for a in w["arms"] if a.get("status") == "ok"]
        for row, metric, label in ((0, "train_users_per_s", "training users/s (full epoch, feeding included)"),
                                   (1, "infer_users_per_s", "inference users/s")):
            ax = axes[row][col]
            base = next((a[metric]["median"] for a in arms if a["arm"] == "torch-eager"), None)
            for i, a in enumerate(arms):
                s = a[metric]
                ax.bar(i, s["median"], yerr=[[max(s["median"] - s["min"], 0)], [max(s["max"] - s["median"], 0)]],
                       capsize=3, color=colors[a["arm"]], width=0.65)
                if base:
                    ax.annotate(f"{s['median'] / base:.2f}x", (i, s["max"]), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=8)
            ax.set_xticks(range(len(arms)), [a["arm"] for a in arms], rotation=20, fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            ax.margins(y=0.12)
            ax.set_axisbelow(True)
            ax.grid(True, axis="y", color="#e5e5e5", lw=0.6)
            if row == 0:
                trust = w.get("trust")
                flag = "" if not isinstance(trust, dict) else (
                    "\ntimings trustworthy" if trust.get("trustworthy") else "\ntimings NOT trustworthy")
                ax.set_title(f"{w['name']} ({model_label(w.get('model_kind'))}){flag}", fontsize=9)
    settings = bench.get("settings", {})
    device = bench.get("device") if isinstance(bench.get("device"), dict) else {}
    fig.suptitle(f"Throughput on {device.get('cpu_model', 'an unrecorded device')} ({settings.get('device', '?')}): "
                 f"median of {settings.get('repeats', '?')} repeats, whiskers min-max; labels: ratio to torch-eager "
                 "(higher is faster)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def arm_colors(arms: list[tuple[str, str | None]]) -> dict[str, str]:
    """A colour per arm (name, framework): ARM_COLOR's, else the next of its framework's family."""
    out: dict[str, str] = {}
    used = {PORT: 0, REFERENCE: 0}
    for name, framework in arms:
        if name in out:
            continue
        if name in ARM_COLOR:
            out[name] = ARM_COLOR[name]
            continue
        family = EXTRA_ARM_COLORS.get(framework, ("gray",))
        out[name] = family[used.get(framework, 0) % len(family)]
        used[framework] = used.get(framework, 0) + 1
    return out


def plot_cost_curve(bench: dict[str, Any], path: Path) -> Path | None:
    """Per preset, seconds per epoch (top) and each arm's memory (bottom) against the item count, one line
    per arm, both axes logarithmic (a slope of 1 is cost in proportion to the items; the grey dashes show
    it); whiskers min-max of the epochs; an arm skipped or failed at a width has no point there."""
    curve = bench.get("cost_curve") or {}
    rows = curve.get("rows") or []
    presets = [p for p in dict.fromkeys(r["preset"] for r in rows)]
    if not presets:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(presets), figsize=(max(4.8 * len(presets), 8.0), 7.4), squeeze=False)
    colors = arm_colors([(r["arm"], r.get("framework")) for r in rows])
    markers = {arm: ARM_MARKERS[i % len(ARM_MARKERS)] for i, arm in enumerate(dict.fromkeys(r["arm"] for r in rows))}
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    for col, preset in enumerate(presets):
        mine = [r for r in rows if r["preset"] == preset]
        missing = sorted({(r["arm"], r["n_items"]) for r in mine if r.get("status") != "ok"})
        for row, label in ((0, "seconds per training epoch"), (1, "arm memory (MiB)")):
            ax = axes[row][col]
            guide = None  # (x0, y0, x1): the first line's first point and the widest width
            for arm in arms:
                points = sorted(((r["n_items"], r) for r in mine if r["arm"] == arm and r.get("status") == "ok"
                                 and (r.get("memory_mb") if row else r.get("epoch_s"))), key=lambda p: p[0])
                if not points:
                    continue
                x = [n for n, _ in points]
                if row == 0:
                    stats = [r["epoch_s"] for _, r in points]
                    y = [st["median"] for st in stats]
                    err = [[max(st["median"] - st["min"], 0) for st in stats],
                           [max(st["max"] - st["median"], 0) for st in stats]]
                    ax.errorbar(x, y, yerr=err, color=colors[arm], marker=markers[arm], ms=5, lw=1.4, capsize=2,
                                label=arm)
                else:
                    y = [r["memory_mb"] for _, r in points]
                    ax.plot(x, y, color=colors[arm], marker=markers[arm], ms=5, lw=1.4, label=arm)
                if guide is None and len(x) > 1:
                    guide = (x[0], y[0], max(r["n_items"] for r in mine))
            if guide:
                x0, y0, x1 = guide
                ax.plot([x0, x1], [y0, y0 * x1 / x0], color="#9a9a9a", ls="--", lw=0.9,
                        label="in proportion to the items")
            ax.set_xscale("log")
            ax.set_yscale("log")
            widths = sorted({r["n_items"] for r in mine})
            ax.set_xticks(widths, [f"{n:,}" for n in widths])
            ax.set_xticks([], minor=True)  # the widths alone, not the log scale's minor ticks
            ax.set_xlabel("items (input and output width)", fontsize=8)
            ax.set_ylabel(label, fontsize=8)
            ax.grid(True, which="both", color="#e5e5e5", lw=0.6)
            ax.set_axisbelow(True)
            ax.tick_params(labelsize=7)
            if row == 0:
                point_trust = [t.get("trust") for t in curve.get("points", []) if t.get("name") == preset]
                assessed = [t for t in point_trust if isinstance(t, dict)]
                flag = ("" if not assessed else "\ntimings trustworthy" if all(t.get("trustworthy") for t in assessed)
                        else "\ntimings NOT trustworthy")
                ax.set_title(f"{preset}{flag}", fontsize=9)
                ax.legend(fontsize=7, loc="upper left")
            elif missing:
                ax.annotate("no point (skipped or failed): " + ", ".join(f"{a} at {n:,}" for a, n in missing),
                            (0.0, -0.22), xycoords="axes fraction", fontsize=6.5, va="top")
    fig.suptitle(f"Cost against the item count: {curve.get('n_users', '?'):,} users per epoch, "
                 f"{curve.get('ratings_per_user', 0):.0f} ratings per user at every width; median of "
                 f"{curve.get('repeats', '?')} epochs, whiskers min-max", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["plot_ops", "plot_optim", "plot_training", "plot_sweep", "plot_quality", "plot_throughput",
           "plot_cost_curve", "arm_colors", "ops_cell_value", "quality_entries"]
