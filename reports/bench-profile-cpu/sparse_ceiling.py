"""How much faster could JAX's sparse input train, at most, on this machine? Measured, not computed.

Three JAX arms train the same batches with the same dropout masks, epoch by epoch in turn (as
`poincare-parity bench` interleaves its arms), on ML-1M (NeuMF split):

    jax-scan         dense input, one `lax.scan` over the epoch (the best dense JAX arm)
    jax-sparse       sparse input (`jax_impl.sparse.matmul`), same scan
    jax-sparse-free  sparse input whose first layer costs next to nothing: W h replaced by
                     (sum of the row's kept values) * W[:, 0], O(rows x out) instead of O(nonzeros x out)

The third arm computes a different function, so its losses mean nothing: it exists only to time
everything the sparse path keeps when its first layer is free (the host's layout of the epoch's
nonzeros, the sparse loss, the decoder, the optimizer, the dense zero gradient of W that Adam
reads). `jax-scan / jax-sparse-free` is therefore the most any sparse first layer could give here.

    POINCARE_PARITY_DATA=../shared/data python reports/bench-profile-cpu/sparse_ceiling.py \
        --presets hae-neumf,ae-neumf --epochs 9 --json reports/bench-profile-cpu/sparse-ceiling.json

Run it with nothing else on the machine, like the bench. The first epoch of every arm (compilation)
is left out of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time

import numpy as np

from jax_impl import sparse
from parity import allocator, convert, stats, sysinfo
from parity.bench.arms import make_arm
from parity.bench.runner import TINY, load_bench_data, preset_run
from parity.data import batch_order, dense_rows, epoch_masks

ARMS = ("jax-scan", "jax-sparse", "jax-sparse-free")


def free_first_layer(batch: sparse.SparseRows, values, weight):
    """A stand-in for `sparse.matmul` that reads one column of W: (sum_e values_e) * W[:, 0] per row."""
    return sparse.row_sums(batch, values)[:, None] * weight[:, 0]


@contextlib.contextmanager
def first_layer(product):
    """`sparse.matmul` replaced by `product` while a program is traced (jit keeps what it traced)."""
    real = sparse.matmul
    sparse.matmul = product
    try:
        yield
    finally:
        sparse.matmul = real


def measure(preset: str, data, epochs: int, seed: int = 0, hidden_cap: int | None = None) -> dict:
    """Each arm's epoch seconds (the first, compiling, epoch left out) and jax-scan's over each sparse arm's.

    The arms are the bench's own (`parity.bench.arms`), from the same weights, fed the bench's batches
    and dropout masks; the free arm is a jax-sparse arm whose programs are traced with the stand-in (each
    arm's session has its own optimizer, a static argument of its compiled programs, so it traces its own)."""
    run = preset_run(preset, data.n_items, hidden_cap=hidden_cap)
    weights = convert.init_weights(run.model, seed)
    dense = dense_rows(data.matrix, np.arange(data.n_users), "float32")
    arms = {arm: make_arm("jax-sparse" if arm == "jax-sparse-free" else arm, run, weights, "cpu") for arm in ARMS}
    matrices = {arm: arms[arm].put_matrix(data.matrix, dense) for arm in ARMS}
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    mean_loss: dict[str, float] = {}
    for epoch in range(epochs + 1):
        batches = batch_order(data.n_users, run.train.batch_size, seed, epoch)
        masks = epoch_masks(run.model, run.train, seed, epoch, data.n_users)
        for arm, bench_arm in arms.items():
            product = free_first_layer if arm == "jax-sparse-free" else sparse.matmul
            start = time.perf_counter()
            with first_layer(product):
                losses = bench_arm.session.train_epoch(matrices[arm], batches, masks)  # host losses: synced
            seconds[arm].append(time.perf_counter() - start)
            mean_loss[arm] = float(np.mean(losses))
        print(f"  {preset} epoch {epoch}: " + ", ".join(f"{arm} {seconds[arm][-1]:.3f} s" for arm in ARMS),
              file=sys.stderr)
    timed = {arm: values[1:] for arm, values in seconds.items()}  # epoch 0 compiles
    return {
        "epoch_seconds": timed,
        "median_epoch_seconds": {arm: statistics.median(values) for arm, values in timed.items()},
        "speedup_over_jax_scan": {arm: stats.paired_ratio(timed["jax-scan"], timed[arm])
                                  for arm in ("jax-sparse", "jax-sparse-free")},
        # jax-sparse trains the same function as jax-scan (equal up to float32 rounding); the free arm does not
        "last_epoch_mean_loss": mean_loss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="hae-neumf,ae-neumf", help="comma-separated (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=9, help="timed epochs per arm, after one that compiles "
                                                              "(default: %(default)s)")
    parser.add_argument("--data", default=None, help="the data folder (default: $POINCARE_PARITY_DATA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the figures here")
    parser.add_argument("--tiny", action="store_true", help="a few synthetic users and items, hidden layers capped "
                                                            "(a check that it runs, as `bench --tiny`)")
    args = parser.parse_args(argv)
    allocator.keep_freed_memory()  # as every poincare-parity command does
    data = load_bench_data("ml-1m-neumf", data_dir=args.data, tiny=args.tiny)
    results = {}
    for preset in args.presets.split(","):
        results[preset] = result = measure(preset, data, args.epochs, args.seed,
                                           hidden_cap=TINY["hidden_cap"] if args.tiny else None)
        medians = result["median_epoch_seconds"]
        print(f"{preset}: median epoch " + ", ".join(f"{arm} {medians[arm]:.3f} s" for arm in ARMS))
        for arm, ratio in result["speedup_over_jax_scan"].items():
            interval = ratio["interval"]
            print(f"  jax-scan / {arm}: {ratio['median']:.2f}x"
                  + (f" [{interval['low']:.2f}, {interval['high']:.2f}]" if interval else "")
                  + f" (paired epochs: {ratio['low']:.2f}-{ratio['high']:.2f})")
    if args.json:
        payload = {"what": "JAX dense against sparse input, and against sparse input with a first layer that costs "
                           "next to nothing (the most sparse input could give)",
                   "dataset": data.name, "n_items": data.n_items, "n_users": data.n_users,
                   "timed_epochs": args.epochs, "environment": sysinfo.environment(), "presets": results}
        with open(args.json, "w") as out:
            json.dump(payload, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
