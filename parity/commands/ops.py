"""`poincare-parity ops`: Poincaré-ball functions, JAX against geoopt, per input regime."""

from __future__ import annotations

import time
from typing import Any

from parity.commands.output import check_choices, split_names, table
from parity.errors import EXIT_FAILED, EXIT_OK
from parity.files import check_writable, write_json
from parity.suites import ops


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.2e}"


def format_table(records) -> str:
    header = ("function", "regime", "dtype", "max abs err", "max rel err", "tolerance", "pass",
              "oracle jax", "oracle geoopt", "note")
    rows = []
    for r in records:
        e = r.extra
        flag = "REF WRONG" if e.get("reference_wrong") else ""
        if r.nonfinite_jax or r.nonfinite_ref:
            flag = (flag + f" nonfinite jax={r.nonfinite_jax} geoopt={r.nonfinite_ref}").strip()
        rows.append((e["function"], e["regime"], r.dtype, _fmt(r.max_abs_err), _fmt(r.max_rel_err),
                     f"{r.tolerance:.0e}", "ok" if r.passed else "FAIL", _fmt(e.get("oracle_rel_err_jax")),
                     _fmt(e.get("oracle_rel_err_ref")), flag))
    return table(header, rows)


def main(args) -> int:
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    functions, regimes = split_names(args.functions), split_names(args.regimes)
    check_choices("--functions", functions, list(ops.SPECS), "function")
    check_choices("--regimes", regimes, ops.REGIMES, "regime")
    check_writable(args.json)
    start = time.perf_counter()
    records = ops.run(dtypes=dtypes, functions=functions, regimes=regimes, quick=args.quick, seed=args.seed,
                      oracle=args.oracle, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    print(format_table(records))
    failed = [r for r in records if not r.passed]
    wrong = [r for r in records if r.extra.get("reference_wrong")]
    for r in failed:
        print(f"FAIL {r.extra['function']} / {r.extra['regime']} / {r.dtype}: worst {r.extra['worst']}; {r.note}")
    print(f"\n{len(records) - len(failed)}/{len(records)} rows pass; geoopt deviates from the exact oracle in "
          f"{len(wrong)} row(s) (marked REF WRONG); {elapsed:.0f} s")
    if args.json:
        payload = {"suite": "ops", "seed": args.seed, "c_values": list(ops.C_VALUES),
                   "dims": list(ops.QUICK_DIMS if args.quick else ops.DIMS), "elapsed_s": elapsed,
                   "records": [r.to_dict() for r in records]}
        print(f"wrote {write_json(args.json, payload, command='ops')}")
    return EXIT_FAILED if failed else EXIT_OK
