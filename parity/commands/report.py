"""`poincare-parity report`: the JSON of the other commands in one Markdown report with plots."""

from __future__ import annotations

import sys
from pathlib import Path

from parity.errors import EXIT_OK, UsageError
from parity.files import check_writable, write_json
from parity.report import FRAMEWORK_LABEL, write_report


def main(args) -> int:
    inputs = list(args.inputs)
    if args.out:
        out = Path(args.out)
    elif args.name:
        out = Path("reports") / args.name
    elif len(inputs) == 1 and Path(inputs[0]).is_dir():
        out = Path(inputs[0])
    else:
        raise UsageError("say where to write it: --name NAME (reports/NAME) or --out DIR")
    if not inputs:
        inputs = [out]
    check_writable(args.json, folders=(out,))
    summary = write_report(inputs, out, args.name)
    print(f"Verdict: {summary['verdict']}")
    for p in summary["parity"]:
        print(f"{p['label']:<7} {p['verdict']}" + (f" ({p['passed']}/{p['rows']})" if "rows" in p else ""))
    for q in summary["quality"]:
        print(f"{q['model']} ({q['preset'] or q['run_name']}) {FRAMEWORK_LABEL.get(q['framework'], q['framework'])}: "
              f"test HR@10 {q['hr']:.4f}, NDCG@10 {q['ndcg']:.4f}")
    for t in summary["throughput"]:
        if t.get("torch-eager"):
            print(f"{t['workload']}: best JAX ({t['best_jax']}) / torch-eager {t['torch-eager']['median']:.2f}x"
                  + (f", / torch-compile {t['torch-compile']['median']:.2f}x" if t.get("torch-compile") else ""))
    if summary["ignored"]:
        for i in summary["ignored"]:
            print(f"ignored {i['path']}: {i['why']}", file=sys.stderr)
    print(f"wrote {out / 'report.md'}, {out / 'report.json'} and {len(summary['plots'])} plot(s) in {out / 'plots'}")
    if args.json:
        print(f"wrote {write_json(args.json, summary, command='report')}")
    return EXIT_OK
