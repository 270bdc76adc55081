"""`poincare-parity models`: the autoencoders, JAX against PyTorch: forward, gradients, training; with
--devices N also N-device data-parallel training against 1 device (`parity.suites.distributed`)."""

from __future__ import annotations

import time

from parity.data import DataError
from parity.errors import EXIT_FAILED, EXIT_OK, UsageError
from parity.files import check_writable, write_json
from parity.suites import distributed, models


def format_table(records) -> str:
    head = (f"{'check':<52} {'dtype':<8} {'max abs err':>11} {'max rel err':>11} {'tolerance':>9} "
            f"{'oracle j/ref':>17}  pass")
    lines = [head, "-" * len(head)]
    for r in records:
        oracle = ""
        if "jax_vs_oracle" in r.extra:
            oracle = f"{r.extra['jax_vs_oracle']:.1e}/{r.extra['ref_vs_oracle']:.1e}"
        lines.append(f"{r.check:<52} {r.dtype:<8} {r.max_abs_err:>11.2e} {r.max_rel_err:>11.2e} {r.tolerance:>9.0e} "
                     f"{oracle:>17}  {'ok' if r.passed else 'FAIL'}")
    return "\n".join(lines)


def main(args) -> int:
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    check_writable(args.json)
    devices = args.devices
    if devices > 1:
        try:
            distributed.check_devices(devices)  # before any suite runs
        except UsageError as error:
            raise UsageError(f"--devices {devices}: {error}") from None
    start = time.perf_counter()
    try:
        records = models.run(dtypes, training=not args.no_training, large=not args.quick, dataset=args.dataset,
                             data_dir=args.data_dir, progress=not args.no_progress)
    except DataError as error:
        raise UsageError(f"{error}\n(use --no-training to run the forward suite alone)") from None
    if devices > 1:
        records += distributed.run(dtypes, devices, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    print(format_table(records))
    failed = [r for r in records if not r.passed]
    print(f"\n{len(records) - len(failed)}/{len(records)} rows pass ({elapsed:.0f} s)")
    if args.json:
        payload = {"suite": "models", "elapsed_s": elapsed, "devices": devices,
                   "records": [r.to_dict() for r in records]}
        print(f"wrote {write_json(args.json, payload, command='models')}")
    return EXIT_FAILED if failed else EXIT_OK
