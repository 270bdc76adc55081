"""Data-parallel parity: `poincare-parity models --devices N`.

An N-device data-parallel session (`parity.backend`: JAX over a ("data",) device mesh, PyTorch over N
rank processes under DistributedDataParallel) must train what a 1-device session trains on the same
global batches, in the same order, with the same dropout keep-masks: each device takes a contiguous
block of every batch, and only the order of the sums over rows changes. Per case and dtype, rows:

    dp<N>/<case>/jax/step            JAX on N devices against JAX on 1: the first step's losses and the
    dp<N>/<case>/jax/epochs            weights after it; then every step's losses over EPOCHS epochs and
                                       the final weights
    dp<N>/<case>/torch/step|epochs   the same for PyTorch
    dp<N>/<case>/jax-vs-torch/...    JAX on N devices against PyTorch on N devices

Cases (`cases`): the Euclidean autoencoder with Adam (dense re-feeding) and with SGD (Nesterov momentum,
weight decay, tied), the hyperbolic one with Riemannian Adam (a learnable curvature) and Riemannian
SGD (momentum, re-feeding); input and code dropout on. Data: a generated MovieLens-shaped matrix
(`parity.data.synthetic`, no download) of N_USERS users, batches of BATCH_SIZE rows, so every epoch
ends in a short batch of an odd row count (JAX runs it replicated, PyTorch splits it 23 / 22).

Error measure: `parity.compare.compare`; losses entrywise relative, each parameter normwise (its
largest difference over its largest entry, the measure of tests/test_distributed.py). A row passes
when losses and weights are within TOLERANCES and every device holds the same bits of every parameter
and optimizer-state entry (`Session.replica_max_difference` is 0).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Iterable, Mapping

import numpy as np

from parity import backend
from parity.compare import Comparison, ParityRecord, Tolerance, compare, merge
from parity.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig, TrainConfig
from parity.data import batch_order, dense_rows, epoch_masks, synthetic

N_USERS, N_ITEMS, RATINGS_PER_USER = 301, 400, 30
BATCH_SIZE = 64  # 4 batches of 64 and a short one of 45 per epoch
EPOCHS = 3

# (pairing, dtype) -> (rtol, why). "same": one framework, N devices against 1; "across": JAX against
# PyTorch, both on N devices. Losses compare entrywise, weights normwise per parameter.
TOLERANCES = {
    ("same", "float64"): (1e-10, "acceptance: N devices = 1 device in float64 to 1e-10 (only the order of "
                                 "the sums over rows differs)"),
    ("across", "float64"): (1e-10, "acceptance: JAX = PyTorch on N devices in float64 to 1e-10"),
    # float32, measured on 2 CPU devices (these cases, 3 epochs): losses <= 2.6e-7 apart; weights up to
    # 4.7e-5 (N against 1) and 5.2e-4 (JAX against PyTorch) of a parameter's largest entry, both in
    # hae-radam from its first step: Adam's first steps are about -lr * g / |g|, so a gradient entry that
    # is a cancelling sum (large relative rounding error) moves by up to lr either way. Bounds: 4x that
    ("same", "float32"): (2e-4, "float32: the order of the sums over rows, through Adam's g / |g|; measured <= 4.7e-5"),
    ("across", "float32"): (2e-3, "float32: two libraries' roundings, through Adam's g / |g|; measured <= 5.2e-4"),
}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    model: ModelConfig
    optimizer: OptimizerConfig
    implicit: bool = False  # train on the 0/1 matrix (the likelihood losses) instead of the ratings
    dense_refeeding: bool = False


def cases(n_items: int = N_ITEMS) -> list[Case]:
    """Both models, each with Adam and SGD (Riemannian for the hyperbolic one), dropout on."""
    hae = dict(kind="hae", activation="tanh", input_normalization="l2")
    return [
        Case("ae-adam", ModelConfig(layer_sizes=(n_items, 64, 32), activation="selu", loss="masked_mse",
                                    input_dropout=0.2, code_dropout=0.5),
             OptimizerConfig(name="adam", learning_rate=1e-3), dense_refeeding=True),
        Case("ae-sgd", ModelConfig(layer_sizes=(n_items, 64, 32), activation="elu", tied=True, loss="dense_mse",
                                   code_dropout=0.5),
             OptimizerConfig(name="sgd", learning_rate=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-4)),
        Case("hae-radam", ModelConfig(layer_sizes=(n_items, 32), loss="multinomial", input_dropout=0.3,
                                      code_dropout=0.2, c=0.5, learn_c=True, **hae),
             OptimizerConfig(name="adam", learning_rate=1e-3, weight_decay=1e-4), implicit=True),
        # learning rate 2e-2: at 5e-2 this trajectory is ill-conditioned by itself (on one device, a 1e-15
        # relative change of the start weights grows to 5e-10 by step 15, jumping 100x at step 12), so
        # a 1e-10 check there would measure the trajectory, not the data parallelism; at 2e-2: 5e-14
        Case("hae-rsgd", ModelConfig(layer_sizes=(n_items, 32, 16), loss="bce", input_dropout=0.2, c=1.0, **hae),
             OptimizerConfig(name="sgd", learning_rate=2e-2, momentum=0.9), implicit=True, dense_refeeding=True),
    ]


def training_matrix(case: Case, seed: int = 0) -> np.ndarray:
    """The generated rating rows (float64): every user, ratings 1..5, or 0/1 for an implicit case."""
    data = synthetic(n_users=N_USERS, n_items=N_ITEMS, n_ratings=N_USERS * RATINGS_PER_USER, seed=seed)
    matrix = dense_rows(data.matrix(), np.arange(data.n_users), np.float64)
    return (matrix != 0).astype(np.float64) if case.implicit else matrix


@dataclasses.dataclass
class Trajectory:
    """What one session trained: the first step's losses and the weights after it, every step's
    losses over the epochs (steps, k) and the final weights, and the largest difference between two
    devices' copies of the state at the end."""

    step_losses: np.ndarray
    step_weights: dict[str, np.ndarray]
    losses: np.ndarray
    weights: dict[str, np.ndarray]
    replica_max_difference: float


def run_config(case: Case, dtype: str, *, epochs: int = EPOCHS, seed: int = 0) -> RunConfig:
    return RunConfig(case.model, case.optimizer, DataConfig(dataset="synthetic"),
                     TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, seed=seed, dtype=dtype,
                                 dense_refeeding=case.dense_refeeding))


def train(framework: str, case: Case, matrix: np.ndarray, dtype: str, devices: int, *, epochs: int = EPOCHS,
          seed: int = 0, device: str = "cpu") -> Trajectory:
    """Train `case` with `framework` on `devices` devices from `init_weights(model, seed)` (biases
    drawn too: a mix-up cannot hide behind zeros), on the batches and masks of `train` at `seed`. The
    first epoch runs as its first step, then the rest, so the weights after one step are seen."""
    from parity import convert

    run = run_config(case, dtype, epochs=epochs, seed=seed)
    weights = {k: v.astype(dtype) for k, v in convert.init_weights(case.model, seed, bias_scale=0.1).items()}
    n_rows = len(matrix)
    with backend.get(framework).session(run, weights, device=device, devices=devices) as session:
        on_device = session.put(matrix.astype(dtype))
        losses = []
        for epoch in range(epochs):
            batches = batch_order(n_rows, BATCH_SIZE, seed, epoch)
            masks = epoch_masks(case.model, run.train, seed, epoch, n_rows)
            if epoch == 0:
                first = len(batches[0])
                step_losses = session.train_epoch(on_device, batches[:1], masks)
                step_weights = session.weights()
                rest = tuple(None if m is None else m[first:] for m in masks)  # the masks are consumed in order
                losses += [step_losses, session.train_epoch(on_device, batches[1:], rest)]
            else:
                losses.append(session.train_epoch(on_device, batches, masks))
        return Trajectory(step_losses, step_weights, np.concatenate(losses), session.weights(),
                          session.replica_max_difference())


def _weights_comparison(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], rtol: float,
                        reason: str) -> tuple[Comparison, dict[str, Tolerance]]:
    """Each parameter normwise: |got - ref| <= rtol * max|ref| elementwise (atol = rtol * max|ref|)."""
    tolerances = {k: Tolerance(rtol, max(rtol * float(np.max(np.abs(ref[k]), initial=0.0)), 1e-300), reason)
                  for k in ref}
    return merge([compare(got[k], ref[k], tolerances[k], where=k) for k in ref]), tolerances


def _record(check: str, dtype: str, losses: tuple[np.ndarray, np.ndarray],
            weights: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], rtol: float, reason: str,
            replicas: float, **extra) -> ParityRecord:
    """One row: the losses entrywise and every parameter normwise; the worse of the two is shown."""
    loss_tol = Tolerance(rtol, 0.0, reason)
    loss_cmp = compare(losses[0], losses[1], loss_tol, where="losses")
    weight_cmp, weight_tols = _weights_comparison(*weights, rtol, reason)
    passed = (loss_cmp.passes(loss_tol) and all(compare(weights[0][k], weights[1][k], t).passes(t)
                                                for k, t in weight_tols.items()) and replicas == 0.0)
    worst = merge([loss_cmp, weight_cmp])
    note = "" if replicas == 0.0 else f"devices hold different copies of the state (max difference {replicas:.3g})"
    return ParityRecord.from_comparison(check, dtype, worst, loss_tol, passed=passed, note=note,
                                        loss_rel_err=loss_cmp.max_rel_err, weights_rel_err=weight_cmp.max_rel_err,
                                        worst_parameter=weight_cmp.where, replica_max_difference=replicas,
                                        reason=reason, **extra)


def case_records(case: Case, dtype: str, devices: int, *, epochs: int = EPOCHS, seed: int = 0,
                 device: str = "cpu") -> list[ParityRecord]:
    """The rows of one case in one dtype (see the module docstring)."""
    matrix = training_matrix(case, seed)
    runs = {(fw, n): train(fw, case, matrix, dtype, n, epochs=epochs, seed=seed, device=device)
            for fw in backend.BACKENDS for n in (1, devices)}
    steps = len(runs[(backend.PORT, 1)].losses)
    pairings = [(fw, "same", (fw, devices), (fw, 1)) for fw in backend.BACKENDS]
    pairings.append((f"{backend.PORT}-vs-{backend.REFERENCE}", "across", (backend.PORT, devices),
                     (backend.REFERENCE, devices)))
    records = []
    for label, kind, (a_fw, a_n), (b_fw, b_n) in pairings:
        rtol, reason = TOLERANCES[(kind, dtype)]
        a, b = runs[(a_fw, a_n)], runs[(b_fw, b_n)]
        replicas = max(a.replica_max_difference, b.replica_max_difference)
        compared = f"{a_fw} on {a_n} devices against {b_fw} on {b_n} device{'s' if b_n > 1 else ''}"
        extra = dict(case=case.name, devices=devices, compared=compared, n_users=len(matrix), batch_size=BATCH_SIZE)
        records.append(_record(f"dp{devices}/{case.name}/{label}/step", dtype, (a.step_losses, b.step_losses),
                               (a.step_weights, b.step_weights), rtol, reason, replicas, steps=1, **extra))
        records.append(_record(f"dp{devices}/{case.name}/{label}/epochs", dtype, (a.losses, b.losses),
                               (a.weights, b.weights), rtol, reason, replicas, epochs=epochs, steps=steps, **extra))
    return records


def check_devices(devices: int, device: str = "cpu") -> None:
    """Point both frameworks at `device` and make sure each sees `devices` > 1 of them
    (`DevicesUnavailable`, a usage error saying what to do, if not)."""
    if devices < 2:
        raise ValueError(f"the data-parallel suite compares N > 1 devices with 1, got devices={devices}")
    for name in backend.BACKENDS:
        problem = backend.get(name).select_device(device) or backend.get(name).check_devices(devices, device)
        if problem:
            raise backend.DevicesUnavailable(problem)


def run(dtypes: Iterable[str], devices: int, *, only: Iterable[str] | None = None, epochs: int = EPOCHS,
        seed: int = 0, device: str = "cpu", progress: bool = True) -> list[ParityRecord]:
    """Every case (or those named in `only`) in every dtype on `devices` devices of kind `device`.

    Points both frameworks at `device` (`Backend.select_device`) so the 1-device sessions run where the
    N-device ones do. JAX on the CPU needs `devices` host devices, which only XLA_FLAGS set before JAX
    starts makes (`parity.backend.request_host_devices`; the command line does it from --devices):
    `DevicesUnavailable` otherwise. PyTorch's N rank processes start once for the whole suite."""
    from tqdm import tqdm

    dtypes = list(dtypes)
    if "float64" in dtypes:
        backend.enable_float64()
    check_devices(devices, device)
    chosen = [c for c in cases() if only is None or c.name in set(only)]
    jobs = [(case, dtype) for dtype in dtypes for case in chosen]
    records = []
    with contextlib.ExitStack() as groups:
        for name in backend.BACKENDS:
            groups.enter_context(backend.get(name).device_group(devices, device=device))
        for case, dtype in tqdm(jobs, desc=f"data-parallel parity ({devices} devices)", disable=not progress,
                                file=sys.stderr):
            records += case_records(case, dtype, devices, epochs=epochs, seed=seed, device=device)
    return records
