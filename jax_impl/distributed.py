"""Data-parallel training (JAX): one process, a mesh of devices, the batch sharded along its rows.

    DATA_AXIS = "data"                                              the mesh axis the batch rows run along
    data_mesh(devices=None) -> jax.sharding.Mesh                    a 1-D mesh over the first `devices` devices
    DataParallelTrainer(model, optimizer, *, devices=None, dense_refeeding=False, apply_updates=None)
        the `jax_impl.train.Trainer` API (train_step, train_epoch, train_epoch_stepwise, score, code,
        model, params, opt_state) on a global batch, plus
        .put(array) -> the array replicated on every device (the training matrix: once, not per epoch)
        .replica_max_difference() -> largest difference between two devices' copies of the state
        .mesh, .n_devices
    data_parallel_trainer(model, optimizer, *, devices, dense_refeeding=False) -> DataParallelTrainer
    epoch_seconds(model, optimizer, matrix, epochs, *, devices, dense_refeeding=False) -> seconds per epoch

`torch_ref.distributed` mirrors these names with torch.distributed and DistributedDataParallel
(one process per device there; here one process drives every device).

How it works: the parameters, the optimizer state and the training matrix are replicated
(`PartitionSpec()`), every batch, its row indices and its dropout keep-masks are split along their
rows over the mesh axis "data" (device d holds the d-th contiguous block of rows of every batch), and
the very jitted programs of `jax_impl.train` (`_train_step`, `_gather_step`, `_scan_epoch`) are
compiled for that placement, with replicated outputs. The model and its loss are written for the
whole batch, so the compiler (GSPMD / Shardy) partitions the batch computation and inserts the
all-reduce of every sum over rows: the loss, its normaliser (masked MSE's count of rated entries) and
the gradient. Nothing is rescaled by hand, and the step computes what one device computes on the
same global batch, summed in another order. The optimizer update then runs on every device on the
same all-reduced gradient and replicated state, so each device's copy of the parameters (the
Poincaré-ball ones included) stays the same bits: `replica_max_difference` checks it.

A batch whose row count the device count does not divide (a short last batch, say 25 rows on 2
devices) cannot be split into equal blocks; it runs replicated: every device computes that whole
step, which is exact and costs one batch's redundant work per epoch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jax_impl.train import StepMasks, Trainer

DATA_AXIS = "data"


def data_mesh(devices: int | Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with the one axis "data" over `devices`: a count (the first that many of
    `jax.devices()`), a list of devices, or None (all of them)."""
    if devices is None or isinstance(devices, int):
        available = jax.devices()
        count = len(available) if devices is None else devices
        if not 1 <= count <= len(available):
            raise ValueError(f"asked for {count} devices, JAX sees {len(available)}: {available} (on CPU, "
                             "XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts makes N)")
        devices = available[:count]
    return Mesh(np.asarray(list(devices)), (DATA_AXIS,))


@functools.lru_cache(maxsize=64)
def _replicated_program(step: Callable, replicated: NamedSharding, static: tuple) -> Callable:
    """`step` compiled with its static arguments bound, the parameters and optimizer state donated, and
    every output (parameters, optimizer state, losses) replicated; the inputs' placement is the one
    they arrive with. Cached, so trainers with the same model structure and optimizer share it."""
    return jax.jit(functools.partial(step, **dict(static)), donate_argnums=(0, 1), out_shardings=replicated)


class DataParallelTrainer(Trainer):
    """`jax_impl.train.Trainer` over a mesh: state replicated, batch rows sharded along "data".

    Takes exactly the single-device trainer's arguments (global batches in the same order, epoch
    masks stacked along the rows in that order) and returns the same global losses; see the module
    docstring. `devices`: a count, a list of devices, a `Mesh` with the axis "data", or None (all).
    """

    def __init__(self, model: nnx.Module, optimizer: optax.GradientTransformation, *,
                 devices: int | Sequence[jax.Device] | Mesh | None = None, dense_refeeding: bool = False,
                 apply_updates: Callable | None = None):
        super().__init__(model, optimizer, dense_refeeding=dense_refeeding, apply_updates=apply_updates)
        self.mesh = devices if isinstance(devices, Mesh) else data_mesh(devices)
        if DATA_AXIS not in self.mesh.axis_names:
            raise ValueError(f"the mesh needs an axis named {DATA_AXIS!r}, it has {self.mesh.axis_names}")
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self.params, self.opt_state, self.rest = self._put((self.params, self.opt_state, self.rest))

    @property
    def n_devices(self) -> int:
        return self.mesh.shape[DATA_AXIS]

    def put(self, array):
        """`array` (e.g. the dense training matrix) replicated on every device: pass the result to
        `train_epoch` every epoch instead of a host array, which would be copied each time."""
        return self._put(array)

    def _put(self, tree):
        return jax.device_put(tree, self._replicated)

    def _put_rows(self, tree, axis: int = 0):
        def place(x):
            if np.shape(x)[axis] % self.n_devices:  # no equal blocks: the whole batch on every device
                return jax.device_put(x, self._replicated)
            return jax.device_put(x, NamedSharding(self.mesh, PartitionSpec(*(None,) * axis, DATA_AXIS)))

        return jax.tree.map(place, tree)

    def _program(self, step: Callable) -> Callable:
        program = _replicated_program(step, self._replicated, tuple(sorted(self._static.items())))

        def run(params, opt_state, rest, *batch_inputs):
            # a no-op for the trainer's own replicated state; a state written from outside (a checkpoint,
            # parity.convert.load_jax) is put back on every device first
            params, opt_state, rest = self._put((params, opt_state, rest))
            return program(params, opt_state, rest, *batch_inputs)

        return run

    def replica_max_difference(self) -> float:
        """max |a - b| over every parameter and optimizer-state entry, between any device's copy and the
        first device's: 0.0 when all devices hold the same state (as data parallelism requires)."""
        worst = 0.0
        for leaf in jax.tree.leaves((self.params, self.opt_state)):
            if not isinstance(leaf, jax.Array):
                continue
            if not leaf.sharding.is_fully_replicated:
                raise RuntimeError(f"a state array of shape {leaf.shape} is not replicated: {leaf.sharding}")
            copies = [np.asarray(shard.data) for shard in leaf.addressable_shards]
            for copy in copies[1:]:
                worst = max(worst, float(np.max(np.abs(copy - copies[0]), initial=0.0)))
        return worst


def data_parallel_trainer(model: nnx.Module, optimizer: optax.GradientTransformation, *, devices: int,
                          dense_refeeding: bool = False) -> DataParallelTrainer:
    """A `DataParallelTrainer` on the first `devices` devices (the name `torch_ref.distributed` shares)."""
    return DataParallelTrainer(model, optimizer, devices=devices, dense_refeeding=dense_refeeding)


def epoch_seconds(model: nnx.Module, optimizer: optax.GradientTransformation, matrix,
                  epochs: Sequence[tuple[Sequence[np.ndarray], StepMasks]], *, devices: int,
                  dense_refeeding: bool = False) -> np.ndarray:
    """Train a fresh `DataParallelTrainer` on `devices` devices for one epoch per (batches, masks) of
    `epochs`; -> the wall-clock seconds of each epoch (the losses are read back, so the work is done).

    The first epoch includes compilation: report it apart. Throughput is rows per epoch / seconds.
    """
    trainer = data_parallel_trainer(model, optimizer, devices=devices, dense_refeeding=dense_refeeding)
    matrix = trainer.put(matrix)
    seconds = []
    for batches, masks in epochs:
        started = time.perf_counter()
        trainer.train_epoch(matrix, batches, masks)
        seconds.append(time.perf_counter() - started)
    return np.asarray(seconds)
