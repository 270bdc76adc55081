"""`poincare-parity optim`: Riemannian SGD / Adam trajectories, jax_impl.optim (optax) against geoopt."""

from __future__ import annotations

import time
from typing import Any

from parity.commands.output import check_choices, split_names, table
from parity.errors import EXIT_FAILED, EXIT_OK, UsageError
from parity.files import check_writable, write_json
from parity.suites import optim


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.2e}"


def format_table(records) -> str:
    header = ("config", "variant", "dtype", "max abs err", "max rel err", "tolerance", "pass",
              "whole trajectory", "worst step", "max c|x|^2", "oracle jax", "oracle geoopt")
    rows = []
    for r in records:
        e = r.extra
        rows.append((e["config"], e["variant"], r.dtype, _fmt(r.max_abs_err), _fmt(r.max_rel_err),
                     f"{r.tolerance:.0e}", "ok" if r.passed else "FAIL", _fmt(e["trajectory_max_rel_err"]),
                     str(e["worst_step"]), f"{e['max_c_norm2']:.3f}", _fmt(e.get("oracle_rel_err_jax")),
                     _fmt(e.get("oracle_rel_err_ref"))))
    return table(header, rows)


def main(args) -> int:
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    cases = split_names(args.configs)
    check_choices("--configs", cases, optim.CASE_NAMES, "configuration")
    variants = {"both": (False, True), "retraction": (False,), "exact": (True,)}[args.variant]
    steps = args.steps
    if steps < 1:
        raise UsageError("--steps must be at least 1")
    check_writable(args.json)
    c_values = optim.C_VALUES
    if args.quick:
        c_values, steps = (1.0,), min(steps, optim.F32_WINDOW)
    start = time.perf_counter()
    records = optim.run(dtypes=dtypes, cases=cases, variants=variants, c_values=c_values, steps=steps,
                        seed=args.seed, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    print(format_table(records))
    failed = [r for r in records if not r.passed]
    print(f"\n{len(records) - len(failed)}/{len(records)} rows pass ({steps} steps, c in "
          f"{{{', '.join(f'{c:g}' for c in c_values)}}}; float32 judged on the first "
          f"{min(optim.F32_WINDOW, steps)} steps); {elapsed:.0f} s")
    timing = None
    if args.timing:
        timing = []
        for name in ("sgd", "adam"):
            result = optim.time_optimizer_step(name, dtype="float32")
            timing.append(result)
            print(f"step on {result['n_points']} x {result['dim']} ball points, {name}, float32: JAX "
                  f"{result['jax_ms']:.2f} ms, geoopt {result['torch_ms']:.2f} ms, "
                  f"ratio {result['ratio_jax_over_torch']:.2f}")
    if args.json:
        payload = {"suite": "optim", "steps": steps, "c_values": list(c_values),
                   "problem": {"n_points": optim.N_POINTS, "dim": optim.DIM, "weight_shape": list(optim.WEIGHT_SHAPE),
                               "seed": args.seed},
                   "elapsed_s": elapsed, "records": [r.to_dict() for r in records]}
        if timing is not None:
            payload["timing"] = timing
        print(f"wrote {write_json(args.json, payload, command='optim')}")
    return EXIT_FAILED if failed else EXIT_OK
