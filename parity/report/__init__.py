"""`poincare-parity report`: the JSON of the other commands (ops, optim, models, any parity suite saved
from the public check API, train, sweep, compare, baselines, bench, run) in one Markdown report with
PNG plots, and a JSON summary for programs.

    reports/<name>/report.md      the first screen: one verdict sentence, device and versions, parity per
                                  suite with its worst errors, test HR@10 / NDCG@10 with intervals (and a
                                  published figure only beside the row it belongs to, with its source and
                                  setting), throughput ratios with their intervals and the bench's trust
                                  flag; then the details of every input
    reports/<name>/report.json    the same as data, and which inputs were read
    reports/<name>/plots/*.png    parity error per op and regime, optimizer error per step, training
                                  curves with |JAX − PyTorch| per epoch, sweeps, quality with intervals,
                                  throughput per arm

    write_report(inputs, out, name=None) -> summary dict
    plot_sweep(payload, path) -> path (also drawn by `train --sweep`)

Inputs are told apart by their content (see parity.report.inputs); a folder stands for the JSON files
in it (and `*/train.json` one level down). Nothing here recomputes a result: every number comes from
an input file, and a missing input or a missing field is shown as missing ("not recorded").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parity.files import atomic_write_text, write_json
from parity.report.inputs import PARITY_SUITES, ReportError, classify, expand_inputs, load_inputs
from parity.report.plots import plot_ops, plot_optim, plot_quality, plot_sweep, plot_throughput, plot_training
from parity.report.render import render
from parity.report.summary import FRAMEWORK_LABEL, MODEL_LABEL, build_summary


def write_report(inputs: list[str | Path], out: str | Path, name: str | None = None) -> dict[str, Any]:
    """Read `inputs` (files or folders), write report.md, report.json and plots/ under `out`; -> the summary."""
    out = Path(out)
    paths = expand_inputs(inputs)
    if not paths:
        raise ReportError(f"no JSON files found in {', '.join(str(i) for i in inputs)}")
    found = load_inputs(paths)
    if not found.by_kind:
        raise ReportError("none of the inputs was written by a poincare-parity command: "
                          + "; ".join(f"{i['path']} ({i['why']})" for i in found.ignored))
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(found, name or out.name)
    markdown = render(found, summary, out)
    atomic_write_text(out / "report.md", markdown)
    write_json(out / "report.json", summary, command="report")
    return summary


__all__ = ["write_report", "build_summary", "classify", "expand_inputs", "load_inputs", "ReportError", "PARITY_SUITES",
           "FRAMEWORK_LABEL", "MODEL_LABEL", "plot_ops", "plot_optim", "plot_training", "plot_sweep", "plot_quality",
           "plot_throughput"]
