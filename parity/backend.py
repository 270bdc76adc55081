"""One framework behind one interface: the only place in `parity` that chooses JAX or PyTorch.

    get(name) -> Backend                 "jax" (the port, `jax_impl`) or "torch" (the reference, `torch_ref`)
    BACKENDS                             both names, the port first; PORT = "jax", REFERENCE = "torch"
    enable_float64()                     JAX's x64 mode (PyTorch needs none): once, where the harness starts

A `Backend` builds models, optimizers and training sessions from the shared configuration and a
weight set (numpy, canonical names: `parity.convert`), picks and warms devices, and times matrix
products. A `Session` is one model with its optimizer behind the calls every training loop of the
harness makes (the `train` command, the bench, the models suite): arrays in, numpy out.

    session = get("jax").session(run, weights)            # run: parity.config.RunConfig
    matrix = session.put(dense_rows(...))                  # the training matrix, on the device once
    losses = session.train_epoch(matrix, batches, masks)   # masks: parity.data.epoch_masks(...)
    scores = session.score(batch); weights = session.weights()

Framework imports happen inside the methods: importing this module costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from parity import convert
from parity.config import ModelConfig, OptimizerConfig, RunConfig

BACKENDS = ("jax", "torch")
PORT, REFERENCE = "jax", "torch"  # the port under test and the reference it is held against


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
    """One model and its optimizer, on one device, behind the calls the harness's loops make.

    Subclasses: `JaxSession` (`jax_impl.train.Trainer`), `TorchSession` (`torch_ref.train.Trainer`)."""

    framework: str
    dtype: str

    def put(self, array: np.ndarray) -> Any:
        """`array` on this session's device (the training matrix: once, not per epoch)."""
        raise NotImplementedError

    def put_masks(self, masks: tuple) -> Any:
        """A (input, code, refeed_input, refeed_code) tuple of keep-masks on the device, as StepMasks."""
        return self._masks(*(None if m is None else self.put(m) for m in masks))

    def train_epoch(self, matrix: Any, batches: list[np.ndarray], masks: tuple, *, stepwise: bool = False) -> np.ndarray:
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

    def session(self, run: RunConfig, weights: dict[str, np.ndarray], *, device: str = "cpu",
                compile_mode: str | None = None, compiled: bool = False) -> Session:
        raise NotImplementedError

    def select_device(self, device: str, gpu_matmul: str = "float32") -> str | None:
        """Point this framework at "cpu" or "gpu"; -> None, or why the device is not there."""
        raise NotImplementedError

    def warm(self, device: str = "cpu") -> None:
        """Start the runtime (backend, thread pools) so that no measurement carries its start-up."""
        raise NotImplementedError

    def matmul(self, op: str, a: np.ndarray, b: np.ndarray, device: str = "cpu") -> Callable[[], None]:
        """A call that computes one matrix product and waits for it: op "x W^T", "dY^T x" or "dY W"."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# JAX


class JaxSession(Session):
    framework = "jax"

    def __init__(self, run: RunConfig, weights: dict[str, np.ndarray], backend: JaxBackend, device: str = "cpu"):
        import jax_impl.train as jt

        self.dtype, self.on_gpu = run.train.dtype, device == "gpu"
        self._masks = jt.StepMasks
        model = backend.model(run.model, weights, self.dtype)
        self.trainer = jt.Trainer(model, backend.optimizer(run.model, run.optimizer),
                                  dense_refeeding=run.train.dense_refeeding)

    def put(self, array: np.ndarray) -> Any:
        import jax

        return jax.device_put(array)

    def train_epoch(self, matrix, batches, masks, *, stepwise=False):
        masks = self._masks(*masks)
        if stepwise:
            return self.trainer.train_epoch_stepwise(matrix, batches, masks)
        return self.trainer.train_epoch(matrix, batches, masks)

    def weights(self):
        return convert.extract_jax(self.trainer.params)

    def load_weights(self, weights):
        convert.load_jax(self.trainer.params, weights)

    def optimizer_arrays(self):
        return convert.jax_tree_to_arrays(self.trainer.opt_state)

    def load_optimizer_arrays(self, arrays):
        template = self.trainer.optimizer.init(self.trainer.params)
        self.trainer.opt_state = convert.jax_tree_from_arrays(template, arrays)

    def sync(self):
        import jax

        jax.block_until_ready((self.trainer.params, self.trainer.opt_state))

    def peak_memory_bytes(self):
        if not self.on_gpu:
            return None
        import jax

        stats = jax.devices("gpu")[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")  # JAX keeps one peak per process: nothing to reset

    def profile_epoch(self, matrix, batches, masks, folder, name, *, stepwise=False):
        import jax

        from parity.bench.profile import summarize_jax_trace

        path = Path(folder) / f"{name}-trace"
        started = time.perf_counter()
        with jax.profiler.trace(str(path)):
            self.train_epoch(matrix, batches, masks, stepwise=stepwise)
            self.sync()
        return {"trace_dir": str(path), "epoch_s_traced": time.perf_counter() - started,
                "xla_ops": summarize_jax_trace(path),
                "view": "the *.trace.json.gz inside in ui.perfetto.dev, or xprof / tensorboard on the folder"}


class JaxBackend(Backend):
    name, label = "jax", "JAX"

    def model(self, config, weights, dtype="float32"):
        return convert.jax_model(config, weights, dtype)

    def optimizer(self, model, optimizer):
        import jax_impl.train as jt

        if model.kind == "hae":
            from jax_impl.models import learned_curvature

            # the ball parameters move on the ball of the curvature the forward pass used
            return jt.riemannian_optimizer(optimizer, curvature=learned_curvature if model.learn_c else None)
        return jt.euclidean_optimizer(optimizer)

    def session(self, run, weights, *, device="cpu", compile_mode=None, compiled=False):
        return JaxSession(run, weights, self, device)

    def select_device(self, device, gpu_matmul="float32"):
        import jax

        if device == "cpu":
            jax.config.update("jax_default_device", jax.devices("cpu")[0])
            return None
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
        if not gpus:
            return "JAX sees no GPU (install jax[cuda12] or jax[cuda13], see README)"
        jax.config.update("jax_default_device", gpus[0])
        # both sides multiply float32 the same way: JAX's default on recent GPUs is TF32, torch's is float32
        jax.config.update("jax_default_matmul_precision", "float32" if gpu_matmul == "float32" else "tensorfloat32")
        return None

    def warm(self, device="cpu"):
        import jax
        import jax.numpy as jnp

        jax.block_until_ready(jnp.ones((8, 8)) @ jnp.ones((8, 8)))

    def matmul(self, op, a, b, device="cpu"):
        import jax

        ja, jb = jax.device_put(a), jax.device_put(b)
        fn = jax.jit({"x W^T": lambda x, y: x @ y.T, "dY^T x": lambda x, y: x.T @ y, "dY W": lambda x, y: x @ y}[op])
        return lambda: fn(ja, jb).block_until_ready()


# ---------------------------------------------------------------------------------------------
# PyTorch


def _torch_device(device: str):
    import torch

    return torch.device("cuda" if device == "gpu" else "cpu")


class TorchSession(Session):
    framework = "torch"

    def __init__(self, run: RunConfig, weights: dict[str, np.ndarray], backend: TorchBackend, device: str = "cpu",
                 compiled: bool = False, compile_mode: str | None = None):
        import torch

        import torch_ref.train as tt

        self.dtype, self.device = run.train.dtype, _torch_device(device)
        self._masks = tt.StepMasks
        model = backend.model(run.model, weights, self.dtype)
        # Module.to moves parameters in place, so an optimizer built on them stays valid; its state is
        # created lazily at the first step, on the parameters' device
        model.to(self.device)
        self.trainer = tt.Trainer(model, backend.optimizer(run.model, run.optimizer),
                                  dense_refeeding=run.train.dense_refeeding)
        if compiled:
            kwargs: dict[str, Any] = {"dynamic": False}  # one static graph per batch shape: the short last batch gets its own
            if compile_mode:
                kwargs["mode"] = compile_mode
            self.trainer.model = torch.compile(self.trainer.model, **kwargs)
        self._module = model  # the uncompiled module: its parameters are the compiled one's

    def put(self, array):
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def train_epoch(self, matrix, batches, masks, *, stepwise=False):
        return self.trainer.train_epoch(matrix, batches, self._masks(*masks))  # an eager epoch is stepwise already

    def weights(self):
        return convert.extract_torch(self._module)

    def load_weights(self, weights):
        convert.load_torch(self._module, weights)

    def optimizer_arrays(self):
        return convert.torch_optimizer_to_arrays(self.trainer.optimizer)

    def load_optimizer_arrays(self, arrays):
        convert.torch_optimizer_from_arrays(self.trainer.optimizer, arrays)

    def sync(self):
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()

    def reset_peak_memory(self):
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak_memory_bytes(self):
        if self.device.type != "cuda":
            return None
        import torch

        return int(torch.cuda.max_memory_allocated())

    def profile_epoch(self, matrix, batches, masks, folder, name, *, stepwise=False):
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            self.train_epoch(matrix, batches, masks)
            self.sync()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        path = Path(folder) / f"{name}-ops.txt"
        path.write_text(table + "\n")
        return {"ops_table": str(path)}


class TorchBackend(Backend):
    name, label = "torch", "PyTorch"

    def model(self, config, weights, dtype="float32"):
        return convert.torch_model(config, weights, dtype)

    def optimizer(self, model, optimizer):
        import torch_ref.train as tt

        # geoopt reads a learnable ball's current c from the parameters' manifold itself
        return tt.riemannian_optimizer(optimizer) if model.kind == "hae" else tt.euclidean_optimizer(optimizer)

    def session(self, run, weights, *, device="cpu", compile_mode=None, compiled=False):
        return TorchSession(run, weights, self, device, compiled=compiled, compile_mode=compile_mode)

    def select_device(self, device, gpu_matmul="float32"):
        import torch

        if device == "cpu":
            return None
        if not torch.cuda.is_available():
            return "torch sees no CUDA device (install a CUDA build of torch, see README)"
        torch.set_float32_matmul_precision("highest" if gpu_matmul == "float32" else "high")
        return None

    def warm(self, device="cpu"):
        import torch

        dev = _torch_device(device)
        (torch.ones(8, 8, device=dev) @ torch.ones(8, 8, device=dev)).sum().item()

    def matmul(self, op, a, b, device="cpu"):
        import torch

        dev = _torch_device(device)
        ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
        product = {"x W^T": lambda: ta @ tb.t(), "dY^T x": lambda: ta.t() @ tb, "dY W": lambda: ta @ tb}[op]
        if dev.type == "cuda":
            return lambda: (product(), torch.cuda.synchronize())
        return product


_BACKENDS: dict[str, Backend] = {"jax": JaxBackend(), "torch": TorchBackend()}


def get(name: str) -> Backend:
    """The backend called `name` ("jax" or "torch")."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown framework {name!r}; known: {', '.join(BACKENDS)}") from None
