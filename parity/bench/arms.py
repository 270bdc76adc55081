"""The bench's arms: one framework's training session run a given way, behind the calls the timing
loop makes (`parity.backend` builds the session; an arm only says how its epoch runs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from parity import backend
from parity.config import RunConfig

INFER_BATCH = 1024  # the batch `parity.training.evaluate` scores with


@dataclasses.dataclass(frozen=True)
class ArmSpec:
    name: str
    framework: str
    description: str
    stepwise: bool = False  # one compiled step per batch (JAX), instead of the epoch as one program
    compiled: bool = False  # torch.compile
    sparse: bool = False  # sparse input (train.input_format=sparse): the first layer from each row's nonzeros


# PyTorch's arms first, then JAX's: a ratio is a later arm over an earlier one (JAX over PyTorch, sparse
# over dense)
ARM_SPECS = {spec.name: spec for spec in (
    ArmSpec("torch-eager", "torch", "PyTorch eager: Trainer.train_epoch, device-side gather, one sync per epoch",
            stepwise=True),
    ArmSpec("torch-compile", "torch", "torch.compile(model, dynamic=False): forward + backward compiled, loss and "
            "optimizer eager", stepwise=True, compiled=True),
    ArmSpec("torch-sparse", "torch", "PyTorch eager, sparse input: each batch's nonzeros laid out on the host "
            "(torch_ref.sparse), the first layer and its weight gradient from them alone", stepwise=True, sparse=True),
    ArmSpec("jax-jit", "jax", "JAX: jitted train step called per batch, device-side gather", stepwise=True),
    ArmSpec("jax-scan", "jax", "JAX: whole epoch as one compiled program (lax.scan over the batches, rows "
            "gathered inside)"),
    ArmSpec("jax-sparse", "jax", "JAX scan, sparse input: the epoch's batches laid out from their nonzeros on the "
            "host (jax_impl.sparse), moved once, the epoch one compiled program", sparse=True),
)}
ARMS = tuple(ARM_SPECS)
ARM_FRAMEWORK = {name: spec.framework for name, spec in ARM_SPECS.items()}
ARM_DESCRIPTION = {name: spec.description for name, spec in ARM_SPECS.items()}


class Arm:
    """One arm: a training session (`parity.backend.Session`) and the way its epochs run."""

    def __init__(self, name: str, run: RunConfig, weights: dict[str, np.ndarray], device: str,
                 compile_mode: str | None = None):
        self.spec = ARM_SPECS[name]
        self.name, self.framework = name, self.spec.framework
        if self.spec.sparse:
            run = dataclasses.replace(run, train=dataclasses.replace(run.train, input_format="sparse"))
        self.session = backend.get(self.framework).session(run, weights, device=device, compiled=self.spec.compiled,
                                                           compile_mode=compile_mode)

    def put_matrix(self, matrix, dense: np.ndarray) -> Any:
        """The training matrix as this arm trains from it: `dense` on the device, or the CSR `matrix`."""
        return self.session.put_matrix(matrix) if self.spec.sparse else self.session.put(dense)

    def step_inputs(self, matrix, dense: np.ndarray, rows: np.ndarray, masks: tuple) -> tuple[Any, Any]:
        """(batch, masks) of one isolated step on `rows` (masks: the epoch's, cut to these rows); with
        sparse input the input keep-mask travels in the batch."""
        if self.spec.sparse:
            return self.session.put_sparse_rows(matrix, rows, masks[0]), self.session.put_masks((None, *masks[1:]))
        return self.session.put(dense[rows]), self.session.put_masks(masks)

    def epoch(self, matrix, batches, masks) -> None:
        self.session.train_epoch(matrix, batches, masks, stepwise=self.spec.stepwise)  # host losses: synced

    def step(self, batch, masks) -> None:
        self.session.train_step(batch, masks)

    def score(self, matrix, n_rows: int, batch: int = INFER_BATCH) -> None:
        for start in range(0, n_rows, batch):
            rows = (self.session.put_sparse_rows(matrix, np.arange(start, min(start + batch, n_rows)))
                    if self.spec.sparse else matrix[start:start + batch])
            self.session.score(rows)  # scores come back to the host

    def sync(self) -> None:
        self.session.sync()

    def reset_device_peak(self) -> None:
        self.session.reset_peak_memory()

    def device_peak_bytes(self) -> int | None:
        return self.session.peak_memory_bytes()

    def profile_epoch(self, matrix, batches, masks, folder: Path) -> dict[str, Any]:
        folder.mkdir(parents=True, exist_ok=True)
        return self.session.profile_epoch(matrix, batches, masks, folder, self.name, stepwise=self.spec.stepwise)


def make_arm(name: str, run: RunConfig, weights: dict[str, np.ndarray], device: str,
             compile_mode: str | None = None) -> Arm:
    return Arm(name, run, weights, device, compile_mode)
