"""The interface every framework backend implements (`Backend`, `Session`), and JAX's 64-bit switch.

A `Backend` builds models, optimizers and training sessions from the shared configuration and a
weight set (numpy, canonical names: `parity.convert`), picks and warms devices, and times matrix
products. A `Session` is one model with its optimizer behind the calls every training loop of the
harness makes (the `train` command, the bench, the models suite): arrays in, numpy out.

    session = get("jax").session(run, weights)            # run: parity.config.RunConfig
    matrix = session.put(dense_rows(...))                  # the training matrix, on the device once
    losses = session.train_epoch(matrix, batches, masks)   # masks: parity.data.epoch_masks(...)
    scores = session.score(batch); weights = session.weights()
    session.close()                                        # or `with ... as session`

Data parallel: `session(run, weights, devices=N)` trains on N devices (`jax_impl.distributed`: one
process, the batch rows sharded over a device mesh; `torch_ref.distributed`: N rank processes under
DistributedDataParallel) behind the same calls. It trains the same global batches with the same
masks and computes what one device computes, up to the order of the sums. `device_group(N)` keeps
the N devices' workers (PyTorch's rank processes) running for every session built inside it.

For the public checks (`parity.checks`) a Backend also evaluates a function with its vector-Jacobian
product, runs a module forward with every submodule's output captured (`layer_outputs`; with the
parameter gradients, `run_module`), and runs an optimizer for a number of steps — each with numpy in
and numpy out.

Framework imports happen inside the methods: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.config import ModelConfig, OptimizerConfig, RunConfig
from parity.data import dense_rows
from parity.errors import UsageError


class DevicesUnavailable(UsageError):
    """More devices were asked for than the framework sees (a usage error: the message says what to do)."""


def enable_float64() -> None:
    """Switch JAX's 64-bit mode on for this process (float64 arrays; float32 arrays stay float32).

    The harness calls it once where it starts a float64 computation (a float64 parity suite or
    training run); jax_impl never switches it on by itself."""
    import jax

    jax.config.update("jax_enable_x64", True)


def float64_enabled() -> bool:
    import jax

    return bool(jax.config.jax_enable_x64)


class Session:
    """One model and its optimizer, on one device or data-parallel on `devices`, behind the calls the
    harness's loops make.

    Subclasses: `JaxSession` (`jax_impl.train.Trainer`), `TorchSession` (`torch_ref.train.Trainer`),
    and on several devices `JaxDataParallelSession` (`jax_impl.distributed.DataParallelTrainer`),
    `TorchDataParallelSession` (`torch_ref.distributed.SpawnedDataParallelTrainer`)."""

    framework: str
    dtype: str
    devices: int = 1

    def put(self, array: np.ndarray) -> Any:
        """`array` on this session's device (the training matrix: once, not per epoch)."""
        raise NotImplementedError

    def put_matrix(self, matrix: Any) -> Any:
        """The training matrix (a scipy CSR of the rows to train on) in this session's input format:
        dense rows on the device, or, for sparse input, the CSR itself in the session's dtype (the trainer
        lays out each epoch's batches from its nonzeros, on the host)."""
        if getattr(self, "input_format", "dense") == "sparse":
            return matrix.astype(self.dtype)
        return self.put(dense_rows(matrix, np.arange(matrix.shape[0]), self.dtype))

    def put_sparse_rows(self, matrix: Any, rows: np.ndarray, input_keep: np.ndarray | None = None) -> Any:
        """Rows `rows` of a scipy CSR as the framework's sparse batch on this session's device (what
        `train_step` and `score` take with sparse input), the input keep-mask of these rows, if any, read
        at their entries."""
        raise NotImplementedError

    def put_masks(self, masks: tuple) -> Any:
        """A (input, code, refeed_input, refeed_code) tuple of keep-masks on the device, as StepMasks."""
        return self._masks(*(None if m is None else self.put(m) for m in masks))

    def train_epoch(self, matrix: Any, batches: list[np.ndarray], masks: tuple, *,
                    stepwise: bool = False) -> np.ndarray:
        """Train on `matrix[batch]` for each batch in order; -> losses (n_steps, k) on the host.

        `stepwise`: one compiled step per batch (JAX; PyTorch always steps batch by batch) instead of
        the epoch as one program."""
        raise NotImplementedError

    def train_step(self, batch: Any, masks: Any) -> np.ndarray:
        return self.trainer.train_step(batch, masks)

    def score(self, batch: np.ndarray) -> np.ndarray:
        """Model outputs for a dense (batch, n_items) array, dropout off."""
        return self.trainer.score(batch)

    def code(self, batch: np.ndarray) -> np.ndarray:
        """The code layer for a dense (batch, n_items) array, dropout off."""
        return self.trainer.code(batch)

    def weights(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        """The optimizer state as flat arrays (for a checkpoint)."""
        raise NotImplementedError

    def load_optimizer_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait until the device has finished the work already dispatched."""

    def reset_peak_memory(self) -> None:
        """Start a new device-memory peak (where the framework keeps one per process, nothing)."""

    def peak_memory_bytes(self) -> int | None:
        """The device's peak memory in bytes since the last reset; None on the CPU."""
        return None

    def profile_epoch(self, matrix: Any, batches: list[np.ndarray], masks: tuple, folder: Path,
                      name: str, *, stepwise: bool = False) -> dict[str, Any]:
        """One epoch under the framework's profiler, its output under `folder`; -> where it is."""
        raise NotImplementedError

    def replica_max_difference(self) -> float:
        """The largest difference between two devices' copies of the parameters and optimizer state
        (data parallelism keeps them the same bits: 0.0). One device: one copy, 0.0."""
        return 0.0

    def close(self) -> None:
        """Free what the session holds outside this process (a data-parallel session's rank
        processes); safe to call twice. One device: nothing to free."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_session_request(run: RunConfig, devices: int) -> None:
    """What every backend's `session` refuses: a device count below 1, sparse input on several devices."""
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    if devices > 1 and run.train.input_format == "sparse":
        raise UsageError("sparse input (train.input_format=sparse) runs on one device; use --devices 1 or "
                         "dense input")


class Backend:
    """A framework: how to build its models, optimizers and sessions, and place work on a device."""

    name: str
    label: str

    def model(self, config: ModelConfig, weights: dict[str, np.ndarray], dtype: str = "float32") -> Any:
        raise NotImplementedError

    def optimizer(self, model: ModelConfig, optimizer: OptimizerConfig) -> Any:
        """The Euclidean model trains with optax / torch.optim; the hyperbolic one with the Riemannian
        optimizers (`jax_impl.optim` / geoopt), which move the ball parameters along the ball and the
        Euclidean weights as the Euclidean optimizer would."""
        raise NotImplementedError

    def session(self, run: RunConfig, weights: dict[str, np.ndarray], *, device: str = "cpu", devices: int = 1,
                compile_mode: str | None = None, compiled: bool = False) -> Session:
        """`run`'s model from `weights` with its optimizer, on `device` ("cpu" or "gpu"); `devices` > 1:
        data-parallel over that many devices of that kind (`DevicesUnavailable` if they are not there).
        `compiled` / `compile_mode`: torch.compile (one device only)."""
        raise NotImplementedError

    def check_devices(self, devices: int, device: str = "cpu") -> str | None:
        """None if `devices` devices of kind `device` can train data-parallel here, else why not."""
        return None if devices == 1 else f"{self.label} has no data-parallel sessions"

    @contextlib.contextmanager
    def device_group(self, devices: int, *, device: str = "cpu") -> Iterator[None]:
        """Within it, the sessions on `devices` devices of kind `device` share one set of workers
        (PyTorch: N rank processes, started once instead of per session). JAX needs none."""
        yield

    def select_device(self, device: str, gpu_matmul: str = "float32") -> str | None:
        """Point this framework at "cpu" or "gpu"; -> None, or why the device is not there."""
        raise NotImplementedError

    def warm(self, device: str = "cpu") -> None:
        """Start the runtime (backend, thread pools) so that no measurement carries its start-up."""
        raise NotImplementedError

    def matmul(self, op: str, a: np.ndarray, b: np.ndarray, device: str = "cpu") -> Callable[[], None]:
        """A call that computes one matrix product and waits for it: op "x W^T", "dY^T x" or "dY W"."""
        raise NotImplementedError

    # --- data-parallel timing (`bench --devices`) ---------------------------------------------------

    def device_count_environment(self, devices: int, device: str = "cpu") -> dict[str, str]:
        """Environment variables a new process needs, set before this framework starts in it, to see
        `devices` devices of kind `device`; {} when it needs none."""
        return {}

    def data_parallel_epoch_seconds(self, run: RunConfig, weights: dict[str, np.ndarray], matrix: np.ndarray,
                                    epochs: Sequence[tuple[list[np.ndarray], tuple]], *, devices: int,
                                    device: str = "cpu") -> np.ndarray:
        """Train `run`'s model from `weights` data-parallel on `devices` devices of kind `device`, one
        epoch per (batches, masks) of `epochs` (masks: a `parity.data.epoch_masks` tuple); -> each epoch's
        wall-clock seconds, the first with compilation and warm-up (the framework's own
        `distributed.epoch_seconds`)."""
        raise NotImplementedError

    # --- the primitives of the public checks (`parity.checks`): numpy in, numpy out ---------------

    def vjp(self, fn: Callable, args: Mapping[str, np.ndarray], *, keywords: Sequence[str] = (),
            differentiable: Sequence[str] = (), cotangents: Sequence[np.ndarray] = (),
            jit: bool = True) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """`fn` applied to each slice along the leading (group) axis of every array in `args` (name ->
        array, in call order; the names in `keywords` go in as keywords, the others positionally), its
        outputs (one array or a tuple) stacked back along that axis, and the vector-Jacobian product
        with `cotangents` (one stacked array per output) for each name in `differentiable`.
        -> (outputs, {name: gradient}); a gradient that does not reach an input is zeros."""
        raise NotImplementedError

    def run_module(self, module: Any, args: Sequence[np.ndarray], kwargs: Mapping[str, Any], *,
                   loss: Callable | None, cotangents: Sequence[np.ndarray], capture: bool = True,
                   train: bool = False) -> ModuleRun:
        """One forward and backward pass of `module(*args, **kwargs)`: the output leaves, the loss
        (`loss(output, *args)`, or the sum of each output times its cotangent when `loss` is None), the
        gradient of every parameter by the module's own dotted names, and (`capture`) every submodule's
        output in the order the calls finished. `train` selects the module's training mode."""
        raise NotImplementedError

    def forward(self, module: Any, args: Sequence[np.ndarray], kwargs: Mapping[str, Any], *,
                train: bool = False) -> list[np.ndarray]:
        """The output leaves of `module(*args, **kwargs)`, no gradient taken."""
        raise NotImplementedError

    def layer_outputs(self, module: Any, args: Sequence[np.ndarray], kwargs: Mapping[str, Any], *,
                      train: bool = False) -> list[Captured]:
        """Every submodule call's output during one forward pass of `module(*args, **kwargs)`, in the
        order the calls finished, no gradient taken (what `run_module(..., capture=True)` records)."""
        raise NotImplementedError

    def model_pass(self, config: ModelConfig, weights: dict[str, np.ndarray], dtype: str, rows: Any,
                   input_keep: np.ndarray | None, input_format: str) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
        """One forward and backward pass of this framework's autoencoder for `config` holding `weights`, on
        the rows of a scipy CSR, given dense or sparse (`input_format`), dropout off except the input
        keep-mask; -> (output, the model's loss, {parameter: gradient})."""
        raise NotImplementedError

    def parameters(self, module: Any, *, trainable: bool = False) -> dict[str, np.ndarray]:
        """Every variable of `module` (parameters and statistics / buffers; `trainable`: parameters only)
        by its dotted name, as numpy copies."""
        raise NotImplementedError

    def cast_module(self, module: Any, dtype: str) -> Any:
        """A copy of `module` whose floating-point parameters are in `dtype` (`module` is left as it is)."""
        raise NotImplementedError

    def optimizer_trajectory(self, optimizer: Any, params: Mapping[str, np.ndarray], loss: Callable, steps: int, *,
                             dtype: str, constants: Mapping[str, float] | None = None,
                             make_params: Callable | None = None,
                             apply_updates: Callable | None = None) -> dict[str, np.ndarray]:
        """`steps` optimizer steps on `loss(params)` from `params` (numpy, cast to `dtype`); -> every
        parameter after every step, {name: (steps, *shape)}. JAX: `optimizer` is an optax
        GradientTransformation, or a callable `(**constants) -> GradientTransformation`, and `loss` gets
        the constants as traced keywords. PyTorch: `optimizer(list of parameters) -> torch.optim
        optimizer`, `make_params(name, tensor) -> Parameter` builds each parameter (plain
        torch.nn.Parameter by default)."""
        raise NotImplementedError


@dataclasses.dataclass
class Captured:
    """One submodule call seen during a forward pass: its dotted path in the module tree ("" for the
    module itself), which call of that submodule it was (0, 1, ...), and its output leaves (numpy)."""

    path: str
    call: int
    outputs: list[np.ndarray]


@dataclasses.dataclass
class ModuleRun:
    """What `Backend.run_module` returns."""

    outputs: list[np.ndarray]
    loss: float
    grads: dict[str, np.ndarray]
    captured: list[Captured]



