"""report.md: the first screen (verdict, where it ran, parity per suite, quality with intervals and
published counterparts, throughput with the bench's trust flag, stages), then the details.

    render(inputs, summary, out) -> str      draws the plots into out/plots as it goes
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from parity.backend import PORT, REFERENCE
from parity.report import plots, published
from parity.report.inputs import PARITY_SUITES, Inputs
from parity.report.summary import (
    BASELINE_ARMS,
    BASELINE_LABEL,
    bench_inputs,
    check_label,
    dataset_of_train,
    framework_label,
    is_oracle_judged,
    model_label,
    ratio_interval,
    short_why,
    sweep_summary,
)
from parity.stats import format_stat

FOOTNOTE_MARKS = "¹²³⁴⁵⁶⁷⁸⁹"


# ---------------------------------------------------------------------------------------------
# small formatters


def _f(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _e(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}e}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _signed(value: float) -> str:
    """A difference: 4 decimals, or 2 significant digits where 4 decimals would round it to zero."""
    return "0" if value == 0 else (f"{value:+.4f}" if abs(value) >= 5e-5 else f"{value:+.1e}")


def _tol(value: Any) -> str:
    return "-" if not value else f"{value:.0e}"


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(cell(x) for x in row) + " |" for row in rows]


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _try_plot(lines: list[str], function, *args):
    """A plot that fails costs its picture, never the report: the error is said in its place."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001
        lines.append(f"(plot {function.__name__} failed: {type(error).__name__}: {error})")
        return None


def _figure(lines: list[str], plot: Path | None, out: Path, alt: str, caption: str) -> None:
    if plot is not None:
        lines += ["", f"![{alt}]({_rel(plot, out)})", "", f"*{caption}*"]


# ---------------------------------------------------------------------------------------------
# the first screen


def environment_lines(summary: dict[str, Any]) -> list[str]:
    env = summary["environment"]
    n = env["files"]
    if env["devices"]:
        devices = "; ".join(d["device"] + (f" ({_count(len(d['files']), 'file')})" if len(env["devices"]) > 1 else "")
                            for d in env["devices"])
    else:
        devices = "not recorded"
    if env["device_not_recorded"] and env["devices"]:
        devices += f" (not recorded in {len(env['device_not_recorded'])} of {n} inputs)"
    shown = []
    for package, values in env["versions"].items():
        text = f"{package} {' / '.join(values)}"
        if len(values) > 1:
            text += " (differs between inputs)"
        shown.append(text)
    versions = ", ".join(shown) if shown else "not recorded"
    if env["versions_not_recorded"] and shown:
        versions += f" (not recorded in {len(env['versions_not_recorded'])} of {n} inputs)"
    made = f"**Made** {summary['created']} from {_count(n, 'JSON file')}"
    run = summary.get("run")
    if run:
        made += (f", among them `poincare-parity run{' --quick' if run.get('quick') else ''} --dataset "
                 f"{run.get('dataset')}` ({_f(run.get('seconds'), 0)} s)")
    return [f"**Device:** {devices}. **Versions:** {versions}. {made}."]


def _worst_cell(entry: dict[str, Any], dtype: str) -> str:
    worst = (entry.get("worst") or {}).get(dtype)
    if not worst:
        return "-"
    return f"{_e(worst['max_rel_err'])} (tolerance {_tol(worst['tolerance'])}; {worst['check']})"


def _verdict_word(entry: dict[str, Any]) -> str:
    return {"pass": "**PASS**", "fail": "**FAIL**", "missing": "not run", "empty": "no rows"}.get(
        entry["verdict"], f"**{entry['verdict'].upper()}**")


def oracle_sentence(entry: dict[str, Any]) -> str | None:
    """In words: the rows judged by the exact oracle because the reference is off it."""
    oracle = entry.get("oracle")
    if not oracle:
        return None
    failed = oracle["rows"] - oracle["passed"]
    text = (f"{entry['label']}: in {oracle['rows']} rows geoopt itself is off the exact oracle (worst relative error "
            f"{_e(oracle['worst_reference_vs_oracle'])}); ")
    if not failed:
        text += (f"JAX matches the oracle in all of them (worst {_e(oracle['worst_port_vs_oracle'])}), so they pass on "
                 "the oracle, not on geoopt: their JAX-vs-geoopt error is geoopt's.")
    else:
        text += f"JAX matches the oracle in {oracle['passed']}; {failed} fail because JAX is off the oracle too."
    return text


def parity_table(summary: dict[str, Any]) -> list[str]:
    dtypes = sorted({d for p in summary["parity"] for d in (p.get("worst") or {})},
                    key=lambda d: (d != "float64", d != "float32", d)) or ["float64", "float32"]
    rows = []
    for p in summary["parity"]:
        passing = f"{p['passed']}/{p['rows']}" if "rows" in p else p.get("why") or "-"
        rows.append([p["label"], _verdict_word(p), passing] + [_worst_cell(p, d) for d in dtypes])
    return _md_table(["suite", "verdict", "rows passing"] + [f"{d}: largest relative error (its row)" for d in dtypes],
                     rows)


def _quality_cell(q: dict[str, Any], metric: str) -> str:
    if q.get(f"{metric}_sd") is not None:
        half = q.get(f"{metric}_ci_half")
        return f"{q[metric]:.4f} ± {q[metric + '_sd']:.4f}" + (f" (±{half:.3f})" if half is not None else "")
    if q.get(f"{metric}_low") is not None:
        return f"{q[metric]:.4f} [{q[metric + '_low']:.3f}, {q[metric + '_high']:.3f}]"
    return f"{q[metric]:.4f}"


def _ours_setting(q: dict[str, Any]) -> str:
    m = q.get("model_config") or {}
    parts = []
    if q.get("kind") != "ae":  # the Euclidean model ignores the ball's settings it carries
        if m.get("c") is not None:
            parts.append(f"c = {m['c']:g}")
        if m.get("input_map"):
            parts.append(f"input map {m['input_map']}")
    if m.get("layer_sizes"):
        parts.append(f"layers {list(m['layer_sizes'])}")
    if m.get("activation"):
        parts.append(f"{m['activation']} activation")
    if m.get("input_dropout") is not None:
        parts.append(f"input dropout {m['input_dropout']:g}")
    if m.get("loss"):
        parts.append(f"{m['loss']} likelihood")
    return ", ".join(parts)


def quality_table(summary: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(caption and table, footnotes): a row per model and framework, the baselines, and the published
    figure only on the row it belongs to, with a footnote saying where it comes from and what differs."""
    quality, baselines = summary["quality"], summary["baselines"]
    pub_applies = summary.get("published") is not None
    datasets = sorted({(q["dataset"], q["protocol"]) for q in quality}
                      | {(b["dataset"], b["protocol"]) for b in baselines if b.get("dataset")})
    several = len(datasets) > 1
    notes: list[str] = []
    marks: dict[str, str] = {}

    def mark(key: str, text: str) -> str:
        if key not in marks:
            marks[key] = FOOTNOTE_MARKS[len(marks) % len(FOOTNOTE_MARKS)]
            notes.append(f"- {marks[key]} {text}")
        return marks[key]

    def published_cell(row: dict[str, Any] | None, key: str, note: str) -> str:
        if row is None:
            return "-"
        return f"{row['hr']:.4f} / {row['ndcg']:.4f} {mark(key, note)}"

    rows = []
    models: dict[tuple, list[dict[str, Any]]] = {}
    for q in quality:
        models.setdefault((q["dataset"], q["kind"], q["preset"] or q["run_name"] or ""), []).append(q)
    for (dataset, kind, name), qs in sorted(models.items(), key=lambda kv: (kv[0][0], kv[0][1] != "hae", kv[0][2])):
        label = model_label(kind) + (f" ({name})" if name else "") + (f", {dataset}" if several else "")
        pub = published.for_model(kind) if pub_applies and published.applies(dataset, qs[0]["protocol"]) else None
        cell = "-"
        if pub is not None:
            ours = _ours_setting(qs[0])
            cell = published_cell(pub, pub["model"], f"{published.SOURCE}, {pub['model']}: {pub['setting']}. "
                                  f"{pub['differs'][:1].upper() + pub['differs'][1:]}"
                                  + (f": {name or 'ours'} has {ours}" if ours else "")
                                  + "; the gap to the published figure says nothing about the framework.")
        elif kind == "ae" and pub_applies and published.applies(dataset, qs[0]["protocol"]):
            ae = next(r for r in published.ROWS if r["model"] == "AE")
            ours = _ours_setting(qs[0])
            cell = "none " + mark("AE", f"{published.SOURCE}, AE ({ae['hr']:.4f} / {ae['ndcg']:.4f}): "
                                  f"{ae['setting']}; {ae['differs']}" + (f" ({name or 'ours'}: {ours})" if ours else "")
                                  + ".")
        for q in sorted(qs, key=lambda q: q["framework"] != PORT):
            rows.append([label, framework_label(q["framework"]), _quality_cell(q, "hr"), _quality_cell(q, "ndcg"),
                         cell])
    for b in baselines:
        pub = (published.for_baseline(b["key"], b.get("lambda"))
               if pub_applies and published.applies(b.get("dataset"), b.get("protocol")) else None)
        cell = "-"
        if pub is not None:
            where = []
            for metric, name in (("hr", "HR@10"), ("ndcg", "NDCG@10")):
                low, high = b.get(f"{metric}_low"), b.get(f"{metric}_high")
                if low is not None and high is not None:
                    side = "inside" if low <= pub[metric] <= high else "outside"
                    where.append(f"its {name} {pub[metric]:.4f} lies {side} our 95% interval [{low:.3f}, {high:.3f}]")
            outside = any("outside" in w for w in where)
            cell = published_cell(pub, pub["model"], f"{published.SOURCE}, {pub['model']}: {pub['setting']}; "
                                  f"{pub['differs']}. " + "; ".join(where)[:1].upper() + "; ".join(where)[1:]
                                  + ("; the cause of the difference is not established" if outside else "") + ".")
        rows.append([b["model"] + (f", {b['dataset']}" if several else ""), "numpy (no framework)",
                     _quality_cell(b, "hr"), _quality_cell(b, "ndcg"), cell])
    where = ", ".join(f"{d} ({p} protocol)" for d, p in datasets)
    users = sorted({q.get("n_users") for q in quality if q.get("n_users")} |
                   {b.get("n_users") for b in baselines if b.get("n_users")})
    seeds = sorted({len(q["seeds"]) for q in quality if len(q["seeds"]) > 1})
    how = []
    if seeds:
        how.append(f"autoencoders: mean ± sd over {'/'.join(map(str, seeds))} seeds (± the 95% interval half-width "
                   "of one seed's score)")
    if any(len(q["seeds"]) == 1 for q in quality) or baselines:
        how.append("single runs and baselines: [95% interval]")
    caption = (f"**Test HR@10 / NDCG@10**, {where}" + (f", {', '.join(f'{u:,}' for u in users)} users" if users else "")
               + (f"; {'; '.join(how)}" if how else "") + ":")
    header = ["model", "computed by", "HR@10", "NDCG@10"] + (["published HR@10 / NDCG@10"] if pub_applies else [])
    if not pub_applies:
        rows = [r[:4] for r in rows]
    return [caption, ""] + _md_table(header, rows), notes


def _ratio_cell(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    text = f"{r['median']:.2f}x"
    interval = r.get("interval")
    if interval:
        level = interval.get("level")
        text += f" [{interval['low']:.2f}, {interval['high']:.2f}] {int(level * 100) if level else 95}% CI"
    else:
        text += " (interval not measured"
        if r.get("range_low") is not None:
            text += f"; repeats' range {r['range_low']:.2f}-{r['range_high']:.2f}"
        text += ")"
    return text


def _ratio_detail(r: dict[str, Any]) -> str:
    """A ratio of the details: its cell, and the best epoch over the best epoch where measured."""
    text = _ratio_cell({"median": r["median"], "range_low": r.get("low"), "range_high": r.get("high"),
                        "interval": ratio_interval(r)})
    return text + (f", best / best {r['best']:.2f}x" if r.get("best") is not None else "")


def _trust_details(trust: Any) -> str:
    """The measurements beside a trust verdict ('; background_busy: 3%; spread: 1.08 (jax-scan)')."""
    if not isinstance(trust, dict):
        return ""
    parts = []
    for key, value in trust.items():
        if key in ("trustworthy", "why", "untrustworthy") or value is None or key.endswith(("_of", "_widest")):
            continue
        if key == "background_busy":
            text = f"{100 * value:.0f}%"
        elif isinstance(value, float):
            text = f"{value:.3g}"
            partner = trust.get(f"{key}_of") or trust.get(key.replace("_width", "_widest"))
            text += f" ({partner})" if partner and partner != value else ""
        elif isinstance(value, list):
            text = ", ".join(map(str, value))
        else:
            text = str(value)
        parts.append(f"{key.replace('_', ' ')}: {text}")
    return "".join(f"; {part}" for part in parts)


def _trust_cell(trust: Any, *, short: bool = False) -> str:
    if not isinstance(trust, dict) or trust.get("trustworthy") is None:
        return "not assessed"
    why = trust.get("why")
    if why and short:  # the first screen: the first reasons; all of them under Throughput
        why = short_why(why)
    return ("yes" if trust["trustworthy"] else "**no**") + (f": {why}" if why else "")


def throughput_table(summary: dict[str, Any], bench: dict[str, Any]) -> list[str]:
    s = bench.get("settings", {})
    repeats = s.get("repeats", "?")
    how = (f"each ratio the median of the paired ratios of {repeats} interleaved repeats, with its 95% bootstrap "
           "interval" if bench.get("ratio_method") else f"ratios of medians of {repeats} repeats")
    lines = [f"**Training throughput** (users/s over a full epoch, data feeding included; {how}, "
             f"{s.get('dtype', '?')}, on {summary.get('bench_device') or 'a device not recorded'}):",
             ""]
    rows = []
    for t in summary["throughput"]:
        label = f"{model_label(t.get('model_kind'))} ({t['workload']})"
        if t.get("status") == "failed":
            rows.append([label, "FAILED: " + str(t.get("error", ""))[:80], "-", "-", _trust_cell(t.get("trust"))])
            continue
        best = f"{t['best_jax']}, {t['best_jax_users_per_s']:.0f}/s" if t.get("best_jax") else "no JAX arm ran"
        rows.append([label, best] + [_ratio_cell(t.get(b)) for b in BASELINE_ARMS]
                    + [_trust_cell(t.get("trust"), short=True)])
    return lines + _md_table(["model", "best JAX arm"] + [f"÷ {BASELINE_LABEL[b]}" for b in BASELINE_ARMS]
                             + ["timings trustworthy?"], rows)


def stages_line(summary: dict[str, Any]) -> str | None:
    stages = summary["stages"]
    if not stages:
        return None
    failed = [s for s in stages if s.get("status") not in ("ok", "failed-checks", "skipped")]
    skipped = [s for s in stages if s.get("status") == "skipped"]
    ran = len(stages) - len(failed) - len(skipped)
    text = f"**Stages** of `poincare-parity run`: {ran} ran"
    if failed:
        text += ", FAILED: " + "; ".join(f"{s['name']} ({s.get('summary', s.get('status'))})"
                                         + (f", results read from `{s['results_from']}`" if s.get("results_from")
                                            else "") for s in failed)
    own = [s for s in skipped if not s.get("results_from")]
    supplied = [s for s in skipped if s.get("results_from")]
    if own:
        text += ", skipped: " + "; ".join(f"{s['name']} ({s.get('summary', '')})" for s in own)
    if supplied:
        text += ", not run there but read from other files: " + "; ".join(
            f"{s['name']} (`{s['results_from']}`)" for s in supplied)
    return text + "."


def first_screen(summary: dict[str, Any], bench: dict[str, Any] | None) -> list[str]:
    lines = [f"# poincare-parity report: {summary['name']}", "", f"**Verdict:** {summary['verdict']}", ""]
    lines += environment_lines(summary) + [""]
    lines += ["**Parity, JAX vs PyTorch/geoopt** (largest relative error per dtype over the rows judged against the "
              "reference, with that row's tolerance):", ""]
    lines += parity_table(summary)
    oracle = [t for t in (oracle_sentence(p) for p in summary["parity"]) if t]
    if oracle:
        lines += [""] + oracle
    lines.append("")
    if summary["quality"] or summary["baselines"]:
        table, notes = quality_table(summary)
        lines += table
        if notes:
            lines += [""] + notes
    else:
        lines.append("**Test HR@10 / NDCG@10:** no train or baselines JSON among the inputs.")
    lines.append("")
    if bench and summary["throughput"]:
        lines += throughput_table(summary, bench)
    elif bench:
        lines.append("**Training throughput:** the bench JSON among the inputs times no model at the dataset's width "
                     "(its cost curve or device counts are in their own sections below).")
    else:
        lines.append("**Training throughput:** no bench JSON among the inputs.")
    stage = stages_line(summary)
    if stage:
        lines += ["", stage]
    return lines


# ---------------------------------------------------------------------------------------------
# parity details


def _oracle_words(r: dict[str, Any]) -> str:
    port, ref = r.get("oracle_rel_err_jax"), r.get("oracle_rel_err_ref")
    if r.get("passed"):
        return (f"passes because JAX matches the exact oracle ({_e(port)} <= {_tol(r.get('tolerance'))}) where geoopt "
                f"does not ({_e(ref)})")
    return f"FAILS: geoopt is off the oracle ({_e(ref)}), and so is JAX ({_e(port)})"


def _pass_cell(r: dict[str, Any]) -> str:
    if not r.get("passed"):
        return "FAIL"
    return "ok, by the oracle" if is_oracle_judged(r) else "ok"


def _ops_rows(records: list[dict[str, Any]]) -> list[list[Any]]:
    return [[check_label(r), r["dtype"], _e(r.get("max_abs_err"), 2), _e(r.get("max_rel_err"), 2),
             _tol(r.get("tolerance")),
             _e(r.get("oracle_rel_err_jax"), 2) if r.get("oracle") else "-",
             _e(r.get("oracle_rel_err_ref"), 2) if r.get("oracle") else "-", _pass_cell(r)] for r in records]


OPS_HEADER = ["function / regime", "dtype", "JAX vs geoopt: max abs err", "max rel err", "tolerance",
              "JAX vs oracle (rel)", "geoopt vs oracle (rel)", "pass"]


def _generic_rows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Any suite's records: check, dtype, where the worst element is, the errors, tolerance, pass."""
    has = lambda key: any(r.get(key) is not None for r in records)  # noqa: E731
    header = ["check", "dtype"]
    if has("where") or has("worst_index") or has("worst"):
        header.append("worst at")
    if has("worst_jax") or has("worst_ref"):
        header.append("JAX / reference there")
    if has("mismatched"):
        header.append("elements over tolerance")
    header += ["max abs err", "max rel err", "tolerance (rel / abs)", "pass", "note"]
    rows = []
    for r in records:
        row = [check_label(r), r.get("dtype", "-")]
        if "worst at" in header:
            where = r.get("where") or r.get("worst") or ""
            index = r.get("worst_index")
            if index is not None:
                index_text = ", ".join(map(str, index)) if isinstance(index, (list, tuple)) else str(index)
                where = f"{where}[{index_text}]" if where else f"[{index_text}]"
            row.append(where or "-")
        if "JAX / reference there" in header:
            row.append(_pair(r.get("worst_jax"), r.get("worst_ref")))
        if "elements over tolerance" in header:
            n = r.get("n_elements")
            row.append(f"{r.get('mismatched', '-')}" + (f" of {n:,}" if isinstance(n, int) else ""))
        row += [_e(r.get("max_abs_err"), 2), _e(r.get("max_rel_err"), 2),
                f"{_tol(r.get('tolerance'))} / {_tol(r.get('atol'))}", _pass_cell(r), _note(r)]
        rows.append(row)
    return header, rows


def _pair(a: Any, b: Any) -> str:
    """'a / b' with enough significant digits to show where they differ (2 past the first differing one)."""
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)):
        return f"{'-' if a is None else a} / {'-' if b is None else b}"
    scale = max(abs(a), abs(b))
    digits = 3 if a == b or scale == 0 else min(17, max(3, math.ceil(-math.log10(abs(a - b) / scale)) + 2))
    return f"{a:.{digits}g} / {b:.{digits}g}"


def _note(r: dict[str, Any]) -> str:
    note = r.get("note") or ""
    nonfinite = [f"{n} non-finite on the {side} side" for side, n in (("JAX", r.get("nonfinite_jax")),
                                                                       ("reference", r.get("nonfinite_ref"))) if n]
    return "; ".join([note] * bool(note) + nonfinite) or ""


def parity_section(entry: dict[str, Any], payload: dict[str, Any], plots_dir: Path, out: Path,
                   made: list[str]) -> list[str]:
    suite, records = entry["suite"], payload.get("records") or []
    lines = [f"### {entry['label']}", "",
             f"{entry['passed']}/{entry['rows']} rows pass (from `{entry.get('source')}`)."]
    plot, per_step = None, None
    if suite == "ops":
        plot = _try_plot(lines, plots.plot_ops, payload, plots_dir / "ops_parity.png")
        _figure(lines, plot, out, "ops parity",
                "Each cell: the worst relative error of one function in one input regime "
                "(over curvatures, shapes, the value and the gradient with respect to every input and c), divided by "
                "the row's tolerance, on a log scale: blue passes, red fails. R: geoopt is off the exact oracle there "
                "and the cell shows JAX's error against the oracle, which is what the row is judged on.")
    elif suite == "optim":
        result = _try_plot(lines, plots.plot_optim, payload, plots_dir / "optim_trajectory.png")
        plot, per_step = result if result else (None, None)
        judged = sorted({(r["dtype"], r.get("judged_steps"), r.get("steps")) for r in records if r.get("judged_steps")})
        partial = [f"{d}: the first {j} of {s} steps" for d, j, s in judged if s and j and j < s]
        caption = ("Relative error of JAX's parameters against geoopt's after each step (worst over curvatures and "
                   "parameters), one panel per optimizer family and dtype; colour: configuration, line style: variant "
                   "(retraction or exact exponential map). The thick black line is the tolerance, drawn over the "
                   "steps it "
                   "judges" + (f" ({'; '.join(partial)}: float32 round-off grows chaotically along a trajectory, so "
                               "later steps are shown but not judged)" if partial else "") + ".")
        if per_step is False:
            caption = ("The worst relative error over each trajectory (the optim JSON carries no per-step errors); "
                       "dashed: tolerance.")
        _figure(lines, plot, out, "optimizer trajectories", caption)
    if plot:
        made.append(str(plot))
    failed = [r for r in records if not r.get("passed")]
    if suite == "ops":
        wrong = [r for r in records if is_oracle_judged(r)]
        if wrong:
            lines += ["", f"#### Rows judged by the exact oracle ({len(wrong)}: geoopt is off the oracle)", "",
                      "In these rows JAX and geoopt disagree because geoopt deviates from the exact (mpmath) oracle. "
                      "The JAX-vs-geoopt error is shown for completeness; the row is judged on JAX's error against the "
                      "oracle, next to geoopt's:", ""]
            lines += _md_table(["function / regime", "dtype", "JAX vs geoopt (rel)", "JAX vs oracle (rel)",
                                "geoopt vs oracle (rel)", "tolerance", "verdict"],
                               [[check_label(r), r["dtype"], _e(r.get("max_rel_err"), 2),
                                 _e(r.get("oracle_rel_err_jax"), 2), _e(r.get("oracle_rel_err_ref"), 2),
                                 _tol(r.get("tolerance")), _oracle_words(r)] for r in wrong])
        if failed:
            lines += ["", "Failing rows:", ""] + _md_table(OPS_HEADER, _ops_rows(failed))
        lines += ["", "<details><summary>all rows</summary>", ""] + _md_table(OPS_HEADER, _ops_rows(records))
    else:
        if suite == "optim":
            lines += ["", "Errors are the worst over the judged steps (the row's worst step in brackets)."]
        header, rows = _generic_rows(records)
        if suite == "optim":
            rows = [[f"{row[0]} (worst step {r.get('worst_step', '?')})", *row[1:]] for row, r in zip(rows, records)]
        if failed:
            fh, fr = _generic_rows(failed)
            lines += ["", "Failing rows:", ""] + _md_table(fh, fr)
        lines += ["", "<details><summary>all rows</summary>", ""] + _md_table(header, rows)
    lines += ["", "</details>", ""]
    return lines


# ---------------------------------------------------------------------------------------------
# training, sweeps, comparisons


def training_section(index: int, path: Path, payload: dict[str, Any], plots_dir: Path, out: Path,
                     made: list[str]) -> list[str]:
    name = payload.get("preset") or payload.get("run_name") or f"train{index}"
    kind = payload["config"]["model"]["kind"]
    lines = [f"### {model_label(kind)}: {name}", "",
             f"{dataset_of_train(payload)}, {payload['config']['data'].get('protocol')} protocol; seeds "
             f"{payload.get('seeds')}; from `{path}`."]
    plot = _try_plot(lines, plots.plot_training, payload, plots_dir / f"training_{_slug(name)}_{index}.png")
    if plot:
        made.append(str(plot))
        frameworks = {r["framework"] for r in payload["runs"]}
        paired = PORT in frameworks and REFERENCE in frameworks
        _figure(lines, plot, out, f"training {name}",
                "Top: training loss and validation HR@10 per epoch, a colour per seed; JAX as lines, PyTorch as open "
                "markers (they lie on top of each other where the frameworks agree). "
                + ("Bottom: the difference per epoch at the same seed, the loss relative to PyTorch's (log scale) "
                   "and HR@10 absolute (right axis: in validation users)." if paired else ""))
    rows = []
    for r in payload["runs"]:
        t = r["test"]
        rows.append([framework_label(r["framework"]), r["seed"], f"{r['best_epoch'] + 1}/{r['epochs_run']}",
                     _f(r["validation"]["hr"]), f"{t['hr']:.4f} [{t['hr_low']:.4f}, {t['hr_high']:.4f}]",
                     f"{t['ndcg']:.4f} [{t['ndcg_low']:.4f}, {t['ndcg_high']:.4f}]", t["n_users"]])
    lines += [""] + _md_table(["framework", "seed", "best epoch / epochs run", "val HR@10", "test HR@10 [95% interval]",
                               "test NDCG@10 [95% interval]", "test users"], rows)
    gaps = (payload.get("summary") or {}).get("jax_minus_torch")
    if gaps:
        lines += ["", "JAX − PyTorch at the same seed: " + "; ".join(
            f"seed {g['seed']}: test HR@10 {_signed(g['test_hr'])}, NDCG@10 {_signed(g['test_ndcg'])}, "
            f"largest relative epoch-loss gap {_e(g.get('max_epoch_loss_rel_gap'))}" for g in gaps) + "."]
    saturated = [r for r in payload["runs"] if "code_saturation" in r]
    if saturated:  # the hyperbolic model: how close its points sit to the ball's boundary
        lines += ["", "Saturation at the best validation epoch (r = sqrt(c)|point|, the norm relative to the "
                  "ball's radius; on boundary: share of users within 1e-3 of the largest r the projection allows):", ""]
        lines += _md_table(["framework", "seed", "code mean r", "code max r", "code on boundary",
                            "output mean r", "output on boundary"],
                           [[framework_label(r["framework"]), r["seed"],
                             _f(r["code_saturation"]["norm_mean"], 3), _f(r["code_saturation"]["norm_max"], 4),
                             _f(r["code_saturation"]["boundary_fraction"], 3),
                             _f((r.get("output_saturation") or {}).get("norm_mean"), 3),
                             _f((r.get("output_saturation") or {}).get("boundary_fraction"), 3)]
                            for r in saturated])
    lines.append("")
    return lines


def sweep_section(index: int, path: Path, payload: dict[str, Any], plots_dir: Path, out: Path,
                  made: list[str]) -> list[str]:
    kind = payload["config"]["model"]["kind"]
    lines = [f"### Sweep over {payload['field']}: {model_label(kind)}", "",
             f"{sweep_summary(path, payload)['dataset']}; seeds {payload.get('seeds')}; the value with the best "
             f"validation HR@10 is {payload.get('chosen_by_validation')} (the test column never chooses); "
             f"from `{path}`."]
    plot = _try_plot(lines, plots.plot_sweep, payload, plots_dir / f"sweep_{_slug(payload['field'])}_{index}.png")
    if plot:
        made.append(str(plot))
        _figure(lines, plot, out, f"sweep {payload['field']}",
                "Left: validation HR@10 per value, which chooses it (dashed line: the value chosen), with its 95% "
                "interval over the validation users (Wilson). Middle: test HR@10 with its 95% interval, reported and "
                "never used to choose. Right: how close the code layer z and the decoder's output y sit to the ball's "
                "boundary at the best validation epoch.")
    rows = []
    for p in payload["points"]:
        for fw, e in p["frameworks"].items():
            sat = e.get("code_saturation") or {}
            o = e.get("output_saturation") or {}
            rows.append([p["value"], framework_label(fw), _f(e["val_hr"]), _f(e["val_ndcg"]), _f(e["test_hr"]),
                         _f(e["test_ndcg"]), _f(sat.get("norm_mean"), 3), _f(sat.get("norm_max"), 4),
                         _f(sat.get("boundary_fraction"), 3), _f(o.get("norm_mean"), 3),
                         _f(o.get("boundary_fraction"), 3), "/".join(str(b) for b in e.get("best_epoch", []))])
    lines += [""] + _md_table([payload["field"], "framework", "val HR@10", "val NDCG@10", "test HR@10", "test NDCG@10",
                               "code mean r", "code max r", "code on boundary", "output mean r", "output on boundary",
                               "best epoch"], rows)
    lines += ["", "r = sqrt(c)|z|: a point's norm relative to the ball's radius (code layer z, decoder output y), at "
              "the best validation epoch; on boundary: share of users within 1e-3 of the largest r the projection "
              "allows.", ""]
    return lines


def comparisons_section(summary: dict[str, Any]) -> list[str]:
    rows = []
    for c in summary["comparisons"]:
        cells = []
        for metric in ("hr", "ndcg"):
            m = c.get(metric) or {}
            cells.append("-" if m.get("diff") is None else f"{m['diff']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]")
        rows.append([f"{c['a']} − {c['b']}", framework_label(c.get("framework") or "-"),
                     len(c.get("seeds") or []), c.get("n_users"), *cells, f"`{c['source']}`"])
    lines = ["## Paired comparisons", "", "Model a minus model b on the same test users and seeds (95% bootstrap "
             "interval over users):", ""]
    lines += _md_table(["a − b", "framework", "seeds", "users", "test HR@10", "test NDCG@10", "from"], rows)
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# quality and throughput details


def quality_section(summary: dict[str, Any], plots_dir: Path, out: Path, made: list[str]) -> list[str]:
    lines = ["## Recommendation quality"]
    plot = _try_plot(lines, plots.plot_quality, summary, plots_dir / "quality.png")
    if plot:
        made.append(str(plot))
        _figure(lines, plot, out, "quality",
                "Test HR@10 and NDCG@10. Autoencoders: JAX (blue circle) and PyTorch (orange square) at the mean over "
                "seeds, each seed a tick, the horizontal line the 95% interval of one seed's score (Wilson over "
                "users for HR@10, bootstrap for NDCG@10; the mean half-width over the seeds). Baselines (grey): their "
                "95% interval. Published (black X): one reported value, no interval. The axis is zoomed to the "
                "differences that matter; values far below it are named at its left edge.")
    lines.append("")
    pub = summary.get("published")
    if pub:
        lines += [f"Published numbers: {pub['source']}; {pub['split']}. Each is set next to one of ours only where it "
                  "is the same model on the same split:", ""]
        ours = {"hae": [q for q in summary["quality"] if q["kind"] == "hae"],
                "ease_fixed": [b for b in summary["baselines"] if b["key"] == "ease_fixed"]}
        rows = []
        for r in pub["rows"]:
            c = r["counterpart"] or {}
            mine = ours.get(c.get("model_kind") or c.get("baseline"), [])
            if c.get("lambda") is not None:
                mine = [b for b in mine if b.get("lambda") == c["lambda"]]
            names = {q.get("preset") or q.get("run_name") or q.get("model") for q in mine}
            counterpart = ", ".join(sorted(names)) or "-"
            rows.append([r["model"], f"{r['hr']:.4f}", f"{r['ndcg']:.4f}", r["setting"], counterpart, r["differs"]])
        lines += _md_table(["published model", "HR@10", "NDCG@10", "setting", "our counterpart", "what differs"], rows)
        lines.append("")
    if not summary["baselines"]:
        lines += ["No baselines JSON among the inputs.", ""]
    return lines


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _load(values: list[float] | None) -> str:
    return "-" if not values else ", ".join(f"{v:.1f}" for v in values)


def _heap(policy: dict[str, Any] | None) -> str:
    if not policy:
        return ""
    if policy.get("keeps_freed_memory"):
        below = policy.get("threshold_bytes")
        size = f", blocks below {below / 2**30:g} GiB" if below else ""
        return f" Heap: freed blocks kept for the next step (glibc{size}), as every command runs."
    return " Heap: glibc's defaults (freed large blocks returned to the kernel)."


def bench_section(summary: dict[str, Any], bench: dict[str, Any], plots_dir: Path, out: Path,
                  made: list[str]) -> list[str]:
    s = bench.get("settings", {})
    d = bench.get("device") if isinstance(bench.get("device"), dict) else {}
    data = bench.get("data", {})
    lines = ["## Throughput", "",
             f"Data {data.get('dataset')} ({data.get('n_users')} users x {data.get('n_items')} items), "
             f"{s.get('dtype')}, "
             f"on {summary.get('bench_device') or 'a device not recorded'}; medians of {s.get('repeats')} repeats "
             f"[min, max], run round-robin over the arms; load average {_load(d.get('load_average'))} at the start, "
             f"{_load(d.get('load_average_end'))} at the end.{_heap(d.get('allocator'))}"]
    if isinstance(bench.get("trust"), dict):
        lines += ["", "Run timings trustworthy? " + _trust_cell(bench["trust"]) + _trust_details(bench["trust"]) + "."]
    if bench.get("ratio_method"):
        lines += ["", f"Ratios: {bench['ratio_method']}."]
    plot = _try_plot(lines, plots.plot_throughput, bench, plots_dir / "throughput.png")
    if plot:
        made.append(str(plot))
        _figure(lines, plot, out, "throughput", "Training (top) and inference (bottom) users/s per arm: median of the "
                "repeats, whiskers from the slowest to the fastest repeat; the label over each bar is its median over "
                "PyTorch eager's. PyTorch arms orange/red, JAX arms blue; the sparse-input arms light orange (PyTorch) "
                "and teal (JAX).")
    for w in bench.get("workloads", []):
        lines.append("")
        if w.get("status") == "failed":
            lines += [f"### {w['name']}", "", f"FAILED: {w.get('error')}"]
            continue
        if w.get("kind") == "optimizer":
            r = w["result"]
            lines += [f"### {w['name']}", "",
                      f"One step on {w['n_points']:,} ball points of dimension {w['dim']} ({w['dtype']}): JAX "
                      f"{r['jax_ms']:.3f} ms (min {r['jax_ms_min']:.3f}), geoopt {r['torch_ms']:.3f} ms (min "
                      f"{r['torch_ms_min']:.3f}); geoopt / JAX = {r['torch_ms'] / r['jax_ms']:.2f}x."]
            if isinstance(w.get("trust"), dict):
                lines += ["", "Timings trustworthy? " + _trust_cell(w["trust"]) + _trust_details(w["trust"]) + "."]
            continue
        lines += [f"### {w['name']} ({model_label(w.get('model_kind'))})", "",
                  f"Layers {w['config']['model']['layer_sizes']}, batch {w['batch_size']}, {w['steps_per_epoch']} "
                  f"steps per epoch, {w['flops']['train_epoch'] / 1e9:.1f} matmul GFLOP per epoch."]
        trust = w.get("trust")
        lines += ["", "Timings trustworthy? " + _trust_cell(trust) + _trust_details(trust) + "."]
        rows = []
        for a in w["arms"]:
            if a.get("status") != "ok":
                rows.append([a["arm"], f"{str(a.get('status', 'failed')).upper()}: "
                             + str(a.get("error") or a.get("reason"))[:100]] + [""] * 9)
                continue
            m = a.get("memory", {})
            peak = m.get("device_peak_mb")
            if peak is None and m.get("resident_mb") is not None and m.get("epoch_peak_above_mb") is not None:
                peak = m["resident_mb"] + m["epoch_peak_above_mb"]
            rows.append([a["arm"], format_stat(a["train_users_per_s"]), _f(a["epoch_s"]["median"], 2),
                         _f(a["feed_s"]["median"], 2), _f(a.get("loop_overhead_s"), 2),
                         format_stat(a["step_s"], 1e3, 1),
                         format_stat(a["infer_users_per_s"]), _f(a.get("compile_s"), 1), _f(peak, 0),
                         _pct(a.get("matmul_fraction")), _pct(a.get("matmul_fraction_step"))])
        lines += [""] + _md_table(["arm", "train users/s", "epoch s", "feed s", "loop overhead s", "step ms",
                                   "infer users/s", "compile s", "peak MB", "matmul % (epoch)", "matmul % (step)"],
                                   rows)
        rates = w.get("matmul_rate", {})
        if rates:
            lines += ["", "Matmul rate at the model's shapes (the roofline): " + "; ".join(
                f"{framework_label(fw)} {r['gflops']:.1f} GFLOP/s" for fw, r in rates.items()) + "."]
        ratios = [r for r in w.get("ratios", []) if r["metric"] == "train_users_per_s"]
        if ratios:
            lines += ["", "Training throughput ratios: " + "; ".join(
                f"{r['numerator']} ÷ {r['denominator']} " + _ratio_detail(r) for r in ratios) + "."]
    lines += ["", "<details><summary>device</summary>", "", "```", json.dumps(d, indent=1), "```", "", "</details>", ""]
    return lines


# ---------------------------------------------------------------------------------------------


def cost_curve_section(bench: dict[str, Any], plots_dir: Path, out: Path, made: list[str]) -> list[str]:
    curve = bench["cost_curve"]
    lines = ["## Cost against the item count", "",
             f"Synthetic data at {', '.join(f'{n:,}' for n in curve.get('items', []))} items, "
             f"{curve.get('n_users', 0):,} users per epoch and {curve.get('ratings_per_user', 0):.0f} ratings per user "
             f"at every width ({curve.get('why', '')}); median of {curve.get('repeats')} epochs per arm and width."]
    if isinstance(curve.get("trust"), dict):
        lines += ["", "Timings trustworthy? " + _trust_cell(curve["trust"]) + "."]
    plot = _try_plot(lines, plots.plot_cost_curve, bench, plots_dir / "cost_curve.png")
    if plot:
        made.append(str(plot))
        _figure(lines, plot, out, "cost curve", "Seconds per training epoch (top) and each arm's memory (bottom) "
                "against the number of items, both axes logarithmic; whiskers from the fastest to the slowest epoch; "
                "grey dashes: cost in proportion to the items.")
    rows = []
    for r in curve.get("rows", []):
        if r.get("status") == "ok":
            rows.append([r["preset"], f"{r['n_items']:,}", r["arm"], format_stat(r["epoch_s"], 1, 2),
                         _f(r.get("train_users_per_s"), 0), _f(r.get("memory_mb"), 0), _f(r.get("process_peak_mb"), 0)])
        else:
            rows.append([r["preset"], f"{r['n_items']:,}", r["arm"], f"{str(r.get('status')).upper()}: "
                         f"{r.get('reason') or ''}", "-", "-", "-"])
    memory = curve.get("memory", {})
    lines += ["", "Arm memory: " + str(memory.get("arm_memory", "as measured")) + "; process peak: "
              + str(memory.get("process_peak_mb", "the process's peak")) + "."]
    lines += [""] + _md_table(["preset", "items", "arm", "epoch s [min, max]", "users/s", "arm MiB",
                               "process peak MiB"], rows) + [""]
    return lines


def devices_section(bench: dict[str, Any]) -> list[str]:
    section = bench["devices"]
    lines = ["## Throughput per device count", "",
             f"Data-parallel training on {', '.join(map(str, section.get('counts', [])))} {section.get('device')} "
             f"device(s), {section.get('n_users', 0):,} users per epoch; median of {section.get('repeats')} epochs "
             f"after a warm-up. Method: {section.get('method', 'not recorded')}."]
    if section.get("why_efficiency_is_low"):
        lines += ["", f"Why the efficiency is low here: {section['why_efficiency_is_low']}."]
    if isinstance(section.get("trust"), dict):
        lines += ["", "Timings trustworthy? " + _trust_cell(section["trust"]) + "."]
    rows = []
    for r in section.get("rows", []):
        if r.get("status") == "ok":
            rows.append([r["preset"], framework_label(r["framework"]), r["devices"], format_stat(r["users_per_s"]),
                         "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x",
                         _f(r.get("scaling_efficiency"), 2)])
        else:
            rows.append([r["preset"], framework_label(r["framework"]), r["devices"],
                         "FAILED: " + str(r.get("error"))[:100], "-", "-"])
    lines += [""] + _md_table(["preset", "framework", "devices", "users/s [min, max]", "speed-up over 1",
                               "scaling efficiency"], rows) + [""]
    return lines


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)


def render(inputs: Inputs, summary: dict[str, Any], out: Path) -> str:
    plots_dir = out / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    benches = bench_inputs(inputs)
    bench = benches["throughput"]
    lines = first_screen(summary, bench)

    lines += ["", "## Parity", ""]
    for entry in summary["parity"]:
        if "rows" not in entry:
            lines += [f"### {entry['label']}", "", f"Not available: {entry.get('why') or entry['verdict']}.", ""]
            continue
        payload = next(p for path, p in inputs.all(entry["suite"]) if str(path) == entry.get("source"))
        lines += parity_section(entry, payload, plots_dir, out, made)

    lines += ["## Training", ""]
    trains = inputs.all("train")
    if not trains:
        lines += ["No train JSON among the inputs.", ""]
    for index, (path, payload) in enumerate(trains):
        lines += training_section(index, path, payload, plots_dir, out, made)
    for index, (path, payload) in enumerate(inputs.all("sweep")):
        lines += sweep_section(index, path, payload, plots_dir, out, made)
    if summary["comparisons"]:
        lines += comparisons_section(summary)

    lines += quality_section(summary, plots_dir, out, made)
    if bench and any(w.get("kind") == "model" for w in bench.get("workloads", [])):
        lines += bench_section(summary, bench, plots_dir, out, made)
    elif not bench:
        lines += ["## Throughput", "", "No bench JSON among the inputs.", ""]
    if benches["cost_curve"]:
        lines += cost_curve_section(benches["cost_curve"], plots_dir, out, made)
    if benches["devices"]:
        lines += devices_section(benches["devices"])

    if summary["stages"]:
        lines += ["## Stages", ""]
        lines += _md_table(["stage", "status", "seconds", "command", "log", "summary"],
                           [[s["name"], s["status"], _f(s.get("seconds"), 0), f"`{' '.join(s.get('argv', []))}`",
                             s.get("log") or "", (s.get("summary") or "") + (
                                 f" (results read from `{s['results_from']}`)" if s.get("results_from") else "")]
                            for s in summary["stages"]])
        for s in summary["stages"]:
            if s.get("status") not in ("ok", "skipped") and s.get("tail"):
                lines += ["", f"<details><summary>{s['name']}: last lines of output</summary>", "", "```",
                          s["tail"].rstrip(), "```", "", "</details>"]
        lines.append("")
    lines += ["## Inputs", ""]
    lines += _md_table(["file", "kind", "versions", "device"],
                       [[f"`{i['path']}`", i["kind"], "recorded" if i["versions_recorded"] else "not recorded",
                         "recorded" if i["device_recorded"] else "not recorded"] for i in summary["inputs"]])
    lines += [""] + [f"- ignored `{i['path']}`: {i['why']}" for i in summary["ignored"]]
    summary["plots"] = [_rel(Path(p), out) for p in made]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["render", "first_screen", "oracle_sentence", "PARITY_SUITES"]
