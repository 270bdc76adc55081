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

import jax
import numpy as np
from flax import nnx

from jax_impl import models, sparse
from jax_impl import train as jax_train
from parity import allocator, stats, sysinfo
from parity.bench.runner import TINY, load_bench_data, preset_run

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
    """Each arm's epoch seconds (the first, compiling, epoch left out) and jax-scan's over each sparse arm's."""
    run = preset_run(preset, data.n_items, hidden_cap=hidden_cap)
    model_class = models.HyperbolicAutoEncoder if run.model.kind == "hae" else models.AutoEncoder
    make_optimizer = jax_train.riemannian_optimizer if run.model.kind == "hae" else jax_train.euclidean_optimizer
    # one optimizer object per arm: it is a static argument of the compiled programs, so each arm
    # traces its own (the free arm's with the stand-in first layer)
    trainers = {arm: jax_train.Trainer(model_class(run.model, rngs=nnx.Rngs(seed)), make_optimizer(run.optimizer))
                for arm in ARMS}
    dense = jax.numpy.asarray(np.asarray(data.matrix.todense(), np.float32))
    rng = np.random.default_rng(seed)
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    mean_loss: dict[str, float] = {}
    batch_size = run.train.batch_size
    for epoch in range(epochs + 1):
        order = rng.permutation(data.n_users)
        batches = [order[i:i + batch_size] for i in range(0, data.n_users, batch_size)]
        masks = jax_train.StepMasks(rng.random((data.n_users, data.n_items)) >= run.model.input_dropout)
        for arm, trainer in trainers.items():
            product = free_first_layer if arm == "jax-sparse-free" else sparse.matmul
            start = time.perf_counter()
            with first_layer(product):
                losses = trainer.train_epoch(dense if arm == "jax-scan" else data.matrix, batches, masks)
            seconds[arm].append(time.perf_counter() - start)  # train_epoch returns its losses: the epoch is done
            mean_loss[arm] = float(np.mean(losses))
        print(f"  {preset} epoch {epoch}: " + ", ".join(f"{arm} {seconds[arm][-1]:.3f} s" for arm in ARMS),
              file=sys.stderr)
    timed = {arm: values[1:] for arm, values in seconds.items()}  # epoch 0 compiles
    return {
        "epoch_seconds": timed,
        "median_epoch_seconds": {arm: statistics.median(values) for arm, values in timed.items()},
        # jax-sparse trains the same function as jax-scan (equal up to float32 rounding); the free arm does not
        "last_epoch_mean_loss": mean_loss,
        "speedup_over_jax_scan": {arm: stats.paired_ratio(timed["jax-scan"], timed[arm])
                                  for arm in ("jax-sparse", "jax-sparse-free")},
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
