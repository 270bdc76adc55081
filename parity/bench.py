"""`poincare-parity bench`: training and inference throughput, PyTorch against JAX, with a roofline.

What one run measures, for every model workload (a named preset of `parity.config.PRESETS` at the
dataset's width, ML-1M: 3,706 items) and every arm:

    arm             what runs                                                     from
    torch-eager     `torch_ref.train.Trainer.train_epoch`, batches gathered on the device, one sync per epoch
    torch-compile   the same with `torch.compile(model, dynamic=False)` (forward and its backward;
                    loss and optimizer step stay eager)
    jax-jit         `jax_impl.train.Trainer.train_epoch_stepwise`: one jitted step per batch, dispatched
                    without waiting, rows gathered on the device; the loop mirrors torch-eager's
    jax-scan        `jax_impl.train.Trainer.train_epoch`: the whole epoch as one compiled program, the dense
                    training matrix on the device and rows gathered inside a `lax.scan` in the same batch order

Every arm starts from the same weights (`parity.convert.init_weights`), trains on the same batch order
(`parity.data.batch_order`) with the same dropout keep-masks (`parity.training.epoch_masks`), as
`poincare-parity train` does, and each epoch's time includes that data feeding:

    epoch_s   = feed_s (batch order + keep-masks, numpy) + run_s (the framework's epoch: transfers, gathers, steps)
    train users/s = users per epoch / epoch_s
    step_s    one train step on a batch already on the device (median of `--repeats` samples of `--steps` steps)
    loop_overhead_s = run_s - n_steps * step_s: what the epoch spends outside the steps themselves
    infer users/s   scoring every training row (input on the device, scores back on the host, batches of 1,024)
    warmup_s  the first epoch (compilation included); compile_s = warmup_s - median epoch_s
    memory    CPU: resident growth of building and warming the arm plus the peak above that during one epoch
              (/proc/self VmHWM, reset per epoch); GPU: torch's max_memory_allocated, JAX's peak_bytes_in_use

Repeats run round-robin over the arms (arm A epoch, arm B epoch, ..., then again), so a change of the
machine's load hits every arm alike; medians over `--repeats` (default 5) with min and max. Ratios are
computed pair by pair: median / median, with the range min / max .. max / min.

Roofline: the matrix products of one training step at the model's shapes (forward x W^T, weight
gradient dY^T x, input gradient dY W; no input gradient for the first layer, whose input needs none)
are timed one by one in each framework; their FLOPs over their summed median times is that framework's
matmul rate at the model's shapes. Each arm's fraction is the model's matmul FLOPs per epoch over its
epoch time, divided by its framework's rate (per epoch with feeding: `matmul_fraction`; per isolated step:
`matmul_fraction_step`). Elementwise work (activations, loss, optimizer) is not counted as FLOPs.

The optimizer rows call `parity.checks.optim.time_optimizer_step` (one Riemannian SGD / Adam step on
10,000 ball points of dimension 64, JAX jitted against geoopt).

`--device gpu` runs both frameworks on CUDA (JAX with its CUDA plugin, torch with a CUDA build), float32
matrix products in true float32 on both sides unless `--gpu-matmul tf32`.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import config as cfg
from parity.config import ModelConfig

ARMS = ("torch-eager", "torch-compile", "jax-jit", "jax-scan")
ARM_FRAMEWORK = {"torch-eager": "torch", "torch-compile": "torch", "jax-jit": "jax", "jax-scan": "jax"}
ARM_DESCRIPTION = {
    "torch-eager": "PyTorch eager: Trainer.train_epoch, device-side gather, one sync per epoch",
    "torch-compile": "torch.compile(model, dynamic=False): forward + backward compiled, loss and optimizer eager",
    "jax-jit": "JAX: jitted train step called per batch, device-side gather",
    "jax-scan": "JAX: whole epoch as one compiled program (lax.scan over the batches, rows gathered inside)",
}
OPTIMIZERS = ("sgd", "adam")
INFER_BATCH = 1024  # the batch `parity.training.evaluate` scores with
SCHEMA_VERSION = 1

# --quick: ML-1M shapes, an epoch of this many users; --tiny: a toy dataset and model (tests)
QUICK_USERS = 1536
TINY = {"n_users": 96, "n_items": 120, "n_ratings": 96 * 24, "hidden_cap": 16, "repeats": 2, "steps": 2,
        "optimizer_points": 500, "optimizer_number": 2}

# acceptance figures of issue 7, checked on every run and reported as met / not met
TARGETS = {
    ("hae", "torch-eager"): 2.0,  # best JAX arm training users/s over PyTorch eager
    ("hae", "torch-compile"): 1.2,
    ("ae", "torch-eager"): 1.0,
}
MATMUL_FRACTION_TARGET = 0.8  # every JAX arm, of the JAX matmul rate at the model's shapes


class BenchError(ValueError):
    """A user mistake (unknown preset or arm, no GPU for --device gpu): reported without a traceback."""


# ---------------------------------------------------------------------------------------------
# small helpers


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of `samples` (and the samples themselves)."""
    values = [float(s) for s in samples]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0, "samples": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "samples": values}


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> dict[str, Any] | None:
    """numerator / denominator of two `summarize` results: median / median, range min/max .. max/min."""
    if not numerator.get("n") or not denominator.get("n") or not denominator["median"] or not denominator["min"]:
        return None
    return {"median": numerator["median"] / denominator["median"],
            "low": numerator["min"] / denominator["max"], "high": numerator["max"] / denominator["min"]}


def _proc_status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status ("VmRSS", "VmHWM") in bytes; None where /proc is missing."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss_bytes() -> int | None:
    return _proc_status_bytes("VmRSS")


def _peak_rss_bytes() -> int | None:
    """VmHWM (peak resident set) since the last `_reset_peak_rss`; ru_maxrss where /proc is missing."""
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # never reset: an upper bound
    except (ImportError, OSError):
        return None


def _reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _mb(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else n_bytes / 2**20


# ---------------------------------------------------------------------------------------------
# FLOPs of the model's matrix products


@dataclasses.dataclass(frozen=True)
class Gemm:
    """One matrix product of a training step: (m x k) @ (k x n), 2 m k n FLOPs.

    `op` says which operands, as the step forms them: "x W^T" (forward; x (B, in), W (out, in)),
    "dY^T x" (weight gradient), "dY W" (input gradient)."""

    role: str
    op: str
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    def operand_shapes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.op == "x W^T":
            return (self.m, self.k), (self.n, self.k)
        if self.op == "dY^T x":
            return (self.k, self.m), (self.k, self.n)
        return (self.m, self.k), (self.k, self.n)  # dY W


def model_layers(model: ModelConfig) -> list[tuple[int, int]]:
    """(in, out) of every weight product, encoder then decoder (the decoder mirrors the encoder; a tied
    decoder multiplies by the encoder's transposed weight, the same shapes)."""
    sizes = tuple(model.layer_sizes)
    back = sizes[::-1]
    return [(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)] + [
        (back[i], back[i + 1]) for i in range(len(back) - 1)]


def step_gemms(model: ModelConfig, batch: int) -> list[Gemm]:
    """The matrix products of one optimizer step at batch size `batch`: forward, weight gradients and
    input gradients (none for the first layer: the model's input needs no gradient).

    The same list for the Euclidean and the hyperbolic autoencoder: a Möbius layer's product
    mobius_matvec(W, x) is one x W^T, its norms and artanh/tanh are elementwise."""
    gemms = []
    for index, (n_in, n_out) in enumerate(model_layers(model)):
        gemms.append(Gemm("forward", "x W^T", batch, n_in, n_out))
        gemms.append(Gemm("weight grad", "dY^T x", n_out, batch, n_in))
        if index > 0:
            gemms.append(Gemm("input grad", "dY W", batch, n_out, n_in))
    return gemms


def train_flops_per_user(model: ModelConfig, dense_refeeding: bool = False) -> float:
    """Matmul FLOPs of training on one user's row (all are linear in the batch size); dense re-feeding
    makes a second full step on the re-fed output."""
    per_user = sum(g.flops for g in step_gemms(model, 1))
    return per_user * (2 if dense_refeeding else 1)


def inference_flops_per_user(model: ModelConfig) -> float:
    return sum(2 * n_in * n_out for n_in, n_out in model_layers(model))


# ---------------------------------------------------------------------------------------------
# the device


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi() -> list[dict[str, str]] | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = []
    for line in out.strip().splitlines():
        name, driver, memory = (part.strip() for part in line.split(",", 2))
        rows.append({"name": name, "driver": driver, "memory": memory})
    return rows


def device_info(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on: CPU model and threads, GPU and driver, framework versions."""
    import jax
    import torch

    info: dict[str, Any] = {
        "device": device,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS",
                                             "XLA_PYTHON_CLIENT_PREALLOCATE", "CUDA_VISIBLE_DEVICES") if k in os.environ},
        "versions": {name: _version(name) for name in ("numpy", "scipy", "jax", "jaxlib", "flax", "optax", "torch",
                                                       "geoopt")},
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        "jax_x64": bool(jax.config.jax_enable_x64),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device == "gpu":
        info["gpu"] = {
            "torch_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "jax_device_kind": next((d.device_kind for d in jax.devices() if d.platform == "gpu"), None),
            "nvidia_smi": _nvidia_smi(),
        }
    return info


def select_device(device: str, gpu_matmul: str = "float32") -> None:
    """Point both frameworks at `device` ("cpu" or "gpu"); raise BenchError if it is not there."""
    if device == "gpu":
        # JAX grabs 75% of GPU memory at start by default, which would starve torch in the same process
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax
    import torch

    if device == "cpu":
        jax.config.update("jax_default_device", jax.devices("cpu")[0])
        return
    if device != "gpu":
        raise BenchError(f"--device must be cpu or gpu, got {device!r}")
    if not torch.cuda.is_available():
        raise BenchError("--device gpu: torch sees no CUDA device (install a CUDA build of torch, see README)")
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    if not gpus:
        raise BenchError("--device gpu: JAX sees no GPU (install jax[cuda12] or jax[cuda13], see README)")
    jax.config.update("jax_default_device", gpus[0])
    # both sides multiply float32 the same way: JAX's default on recent GPUs is TF32, torch's is float32
    jax.config.update("jax_default_matmul_precision", "float32" if gpu_matmul == "float32" else "tensorfloat32")
    torch.set_float32_matmul_precision("highest" if gpu_matmul == "float32" else "high")


# ---------------------------------------------------------------------------------------------
# arms: one framework's trainer behind the few calls the timing loop makes


class TorchArm:
    """torch-eager / torch-compile: `torch_ref.train.Trainer`, built by `parity.training.Side`."""

    framework = "torch"

    def __init__(self, name: str, run, weights: dict[str, np.ndarray], device: str, compile_mode: str | None):
        import torch

        import torch_ref.train as tt
        from parity.training import Side

        self.name, self.torch, self.masks_type = name, torch, tt.StepMasks
        self.device = torch.device("cuda" if device == "gpu" else "cpu")
        self.trainer = Side("torch", run, weights).trainer
        if self.device.type != "cpu":
            # Module.to moves parameters in place, so the optimizer built on them stays valid; its state
            # is created lazily at the first step, on the parameters' device
            self.trainer.model.to(self.device)
            self.trainer.device = self.device
        if name == "torch-compile":
            kwargs = {"dynamic": False}  # one static graph per batch shape: the short last batch gets its own
            if compile_mode:
                kwargs["mode"] = compile_mode
            self.trainer.model = torch.compile(self.trainer.model, **kwargs)

    def put(self, array: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def put_masks(self, masks):
        return self.masks_type(*(None if m is None else self.put(m) for m in masks))

    def epoch(self, matrix, batches, masks) -> None:
        self.trainer.train_epoch(matrix, batches, self.masks_type(*masks))  # returns host losses: synced

    def step(self, batch, masks) -> None:
        self.trainer.train_step(batch, masks)

    def score(self, matrix, n_rows: int, batch: int = INFER_BATCH) -> None:
        for start in range(0, n_rows, batch):
            self.trainer.score(matrix[start:start + batch])  # scores come back to the host

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def reset_device_peak(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats()

    def device_peak_bytes(self) -> int | None:
        return int(self.torch.cuda.max_memory_allocated()) if self.device.type == "cuda" else None


class JaxArm:
    """jax-jit (a jitted step per batch) / jax-scan (the epoch as one program): `jax_impl.train.Trainer`."""

    framework = "jax"

    def __init__(self, name: str, run, weights: dict[str, np.ndarray], device: str):
        import jax

        import jax_impl.train as jt
        from parity.training import Side

        self.name, self.jax, self.masks_type = name, jax, jt.StepMasks
        self.on_gpu = device == "gpu"
        self.trainer = Side("jax", run, weights).trainer

    def put(self, array: np.ndarray):
        return self.jax.device_put(array)

    def put_masks(self, masks):
        return self.masks_type(*(None if m is None else self.put(m) for m in masks))

    def epoch(self, matrix, batches, masks) -> None:
        if self.name == "jax-scan":
            self.trainer.train_epoch(matrix, batches, self.masks_type(*masks))  # returns host losses: synced
            return
        self.trainer.train_epoch_stepwise(matrix, batches, self.masks_type(*masks))  # returns host losses: synced

    def step(self, batch, masks) -> None:
        self.trainer.train_step(batch, masks)  # returns host losses: synced

    def score(self, matrix, n_rows: int, batch: int = INFER_BATCH) -> None:
        for start in range(0, n_rows, batch):
            self.trainer.score(matrix[start:start + batch])

    def sync(self) -> None:
        self.jax.block_until_ready((self.trainer.params, self.trainer.opt_state))

    def reset_device_peak(self) -> None:
        return None  # JAX keeps one process-wide peak

    def device_peak_bytes(self) -> int | None:
        if not self.on_gpu:
            return None
        stats = self.jax.devices("gpu")[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")


def make_arm(name: str, run, weights: dict[str, np.ndarray], device: str, compile_mode: str | None = None):
    if ARM_FRAMEWORK[name] == "torch":
        return TorchArm(name, run, weights, device, compile_mode)
    return JaxArm(name, run, weights, device)


# ---------------------------------------------------------------------------------------------
# matmul rate at the model's shapes


def _calibrate(call: Callable[[], None], target_s: float) -> int:
    """How many calls make one timing sample of about `target_s` seconds."""
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, min(1000, int(target_s / once)))


def _time_calls(call: Callable[[], None], repeats: int, target_s: float) -> list[float]:
    call()  # warm: compile, allocate
    number = _calibrate(call, target_s)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number)
    return samples


def _gemm_callable(framework: str, gemm: Gemm, dtype: str, device: str, rng: np.random.Generator):
    a_shape, b_shape = gemm.operand_shapes()
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    if framework == "torch":
        import torch

        dev = torch.device("cuda" if device == "gpu" else "cpu")
        ta, tb = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
        product = {"x W^T": lambda: ta @ tb.t(), "dY^T x": lambda: ta.t() @ tb, "dY W": lambda: ta @ tb}[gemm.op]
        if dev.type == "cuda":
            return lambda: (product(), torch.cuda.synchronize())
        return product
    import jax

    ja, jb = jax.device_put(a), jax.device_put(b)
    fn = jax.jit({"x W^T": lambda x, y: x @ y.T, "dY^T x": lambda x, y: x.T @ y, "dY W": lambda x, y: x @ y}[gemm.op])
    return lambda: fn(ja, jb).block_until_ready()


def matmul_rate(framework: str, gemms: Sequence[Gemm], *, dtype: str = "float32", device: str = "cpu",
                repeats: int = 5, target_s: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Each distinct product of `gemms` timed alone (median of `repeats`); the rate of the whole list is
    its FLOPs over the sum of its products' median times."""
    rng = np.random.default_rng(seed)
    per_shape: dict[Gemm, dict[str, Any]] = {}
    for gemm in gemms:
        if gemm in per_shape:
            continue
        samples = _time_calls(_gemm_callable(framework, gemm, dtype, device, rng), repeats, target_s)
        seconds = summarize(samples)
        per_shape[gemm] = {"role": gemm.role, "op": gemm.op, "m": gemm.m, "k": gemm.k, "n": gemm.n,
                           "flops": gemm.flops, "seconds": seconds, "gflops": gemm.flops / seconds["median"] / 1e9}
    total_flops = sum(g.flops for g in gemms)
    total_s = sum(per_shape[g]["seconds"]["median"] for g in gemms)
    return {"framework": framework, "gflops": total_flops / total_s / 1e9, "step_flops": total_flops,
            "step_matmul_s": total_s, "per_shape": list(per_shape.values())}


# ---------------------------------------------------------------------------------------------
# data and workloads


@dataclasses.dataclass
class BenchData:
    """The training matrix the bench trains on: one row per user with at least one entry."""

    name: str
    matrix: Any  # scipy.sparse.csr_matrix (n_users, n_items)
    dense: np.ndarray | None = None  # filled per dtype

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]


def load_bench_data(dataset: str = "synthetic", *, data_dir=None, users: int | None = None,
                    tiny: bool = False) -> BenchData:
    """The rows `poincare-parity train` trains on (`split.fit`, users with an entry), neumf protocol
    (binary) for implicit data, seed protocol otherwise; the first `users` of them when given."""
    from parity import data
    from parity.config import DataConfig

    if tiny:
        dataset_obj = data.synthetic(n_users=TINY["n_users"], n_items=TINY["n_items"], n_ratings=TINY["n_ratings"])
        split = data.split_neumf(dataset_obj)
        name = "synthetic-tiny"
    else:
        dataset_obj = data.load_dataset(dataset, data_dir)
        protocol = "neumf" if dataset_obj.implicit or dataset == "synthetic" else "seed"
        split = data.make_split(dataset_obj, DataConfig(dataset=dataset, protocol=protocol))
        name = dataset
    rows = split.fit_users()
    if users is not None:
        if users < 1:
            raise BenchError(f"--users must be >= 1, got {users}")
        rows = rows[:users]
    return BenchData(name, split.fit[rows])


def preset_run(preset: str, n_items: int, *, dtype: str = "float32", hidden_cap: int | None = None):
    """The `RunConfig` of a preset at the dataset's width (and, for --tiny, hidden layers capped)."""
    from parity.training import RunConfig

    if preset not in cfg.PRESETS:
        raise BenchError(f"unknown preset {preset!r}; known: {', '.join(sorted(cfg.PRESETS))}")
    run = RunConfig.from_dict({k: v for k, v in cfg.PRESETS[preset].items() if k != "description"})
    hidden = tuple(run.model.layer_sizes[1:])
    if hidden_cap is not None:
        hidden = tuple(min(size, hidden_cap) for size in hidden)
    model = dataclasses.replace(run.model, layer_sizes=(n_items, *hidden))
    return dataclasses.replace(run, model=model, train=dataclasses.replace(run.train, dtype=dtype))


# ---------------------------------------------------------------------------------------------
# one model workload


@dataclasses.dataclass
class _ArmState:
    name: str
    arm: Any = None
    matrix: Any = None
    error: str | None = None
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    epoch_s: list[float] = dataclasses.field(default_factory=list)
    feed_s: list[float] = dataclasses.field(default_factory=list)
    run_s: list[float] = dataclasses.field(default_factory=list)
    step_s: list[float] = dataclasses.field(default_factory=list)
    infer_s: list[float] = dataclasses.field(default_factory=list)
    step_inputs: Any = None  # (batch, masks) on the device, for the isolated-step timing


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) < 2000 else text[:2000] + " ..."


def bench_model(preset: str, data: BenchData, *, arms: Sequence[str] = ARMS, repeats: int = 5, steps: int = 3,
                dtype: str = "float32", device: str = "cpu", compile_mode: str | None = None,
                hidden_cap: int | None = None, seed: int = 0, matmul_target_s: float = 0.05,
                progress: Callable[[str], None] | None = None, profile_dir: Path | None = None) -> dict[str, Any]:
    """Time every arm on one preset; -> the workload's JSON-able record."""
    from parity import convert
    from parity.data import batch_order, dense_rows
    from parity.training import epoch_masks

    say = progress or (lambda _text: None)
    run = preset_run(preset, data.n_items, dtype=dtype, hidden_cap=hidden_cap)
    model, train = run.model, run.train
    n_users, batch_size = data.n_users, train.batch_size
    n_steps = -(-n_users // batch_size)
    weights = {k: v.astype(dtype) for k, v in convert.init_weights(model, seed).items()}
    dense = dense_rows(data.matrix, np.arange(n_users), dtype)
    per_user = train_flops_per_user(model, train.dense_refeeding)
    record: dict[str, Any] = {
        "name": preset, "kind": "model", "model_kind": model.kind, "description": cfg.PRESETS[preset].get("description"),
        "config": run.to_dict(), "dtype": dtype, "n_users": n_users, "n_items": data.n_items,
        "batch_size": batch_size, "steps_per_epoch": n_steps, "dense_refeeding": train.dense_refeeding,
        "flops": {"train_per_user": per_user, "train_epoch": per_user * n_users,
                  "inference_per_user": inference_flops_per_user(model),
                  "gemms_per_step": [dataclasses.asdict(g) | {"flops": g.flops} for g in step_gemms(model, batch_size)]},
        "arms": [], "ratios": [],
    }

    def feed(epoch: int):
        started = time.perf_counter()
        batches = batch_order(n_users, batch_size, seed, epoch)
        masks = epoch_masks(model, train, seed, epoch, n_users)
        return batches, masks, time.perf_counter() - started

    # phase 1, arm by arm: build, put the data on the device, warm up (compilation), memory
    states = [_ArmState(name) for name in arms]
    for state in states:
        say(f"{preset}: {state.name} warm-up")
        try:
            rss0 = _rss_bytes()
            state.arm = make_arm(state.name, run, weights, device, compile_mode)
            state.matrix = state.arm.put(dense)
            state.arm.sync()
            batches, masks, _ = feed(0)
            started = time.perf_counter()
            state.arm.epoch(state.matrix, batches, masks)
            state.result["warmup_s"] = time.perf_counter() - started
            step_batch = state.arm.put(dense[batches[0]])
            step_masks = state.arm.put_masks(tuple(None if m is None else m[: len(batches[0])] for m in masks))
            state.step_inputs = (step_batch, step_masks)
            state.arm.step(step_batch, step_masks)
            started = time.perf_counter()
            state.arm.score(state.matrix, n_users)
            state.arm.sync()
            state.result["infer_warmup_s"] = time.perf_counter() - started
            rss1 = _rss_bytes()
            state.result["memory"] = {"resident_mb": _mb(rss1 - rss0) if rss0 and rss1 else None}
        except Exception as error:  # noqa: BLE001 - one arm failing must not stop the others
            state.error = _error_text(error)
            say(f"{preset}: {state.name} failed: {state.error}")

    # phase 2, round robin: epochs (with feeding), isolated steps, inference
    live = [s for s in states if s.error is None]
    for repeat in range(repeats):
        for state in live:
            if state.error is not None:
                continue
            say(f"{preset}: repeat {repeat + 1}/{repeats} {state.name}")
            try:
                arm = state.arm
                measure_memory = repeat == 0
                if measure_memory:
                    before = _rss_bytes()
                    reset = _reset_peak_rss()
                    arm.reset_device_peak()
                batches, masks, feed_s = feed(repeat + 1)
                started = time.perf_counter()
                arm.epoch(state.matrix, batches, masks)
                run_s = time.perf_counter() - started
                if measure_memory:
                    peak = _peak_rss_bytes()
                    memory = state.result["memory"]
                    memory["epoch_peak_above_mb"] = _mb(peak - before) if reset and peak and before else None
                    memory["process_peak_mb"] = _mb(peak)
                    memory["peak_reset"] = reset
                    device_peak = arm.device_peak_bytes()
                    if device_peak is not None:
                        memory["device_peak_mb"] = _mb(device_peak)
                state.feed_s.append(feed_s)
                state.run_s.append(run_s)
                state.epoch_s.append(feed_s + run_s)
                batch, step_masks = state.step_inputs
                started = time.perf_counter()
                for _ in range(steps):
                    arm.step(batch, step_masks)
                arm.sync()
                state.step_s.append((time.perf_counter() - started) / steps)
                started = time.perf_counter()
                arm.score(state.matrix, n_users)
                arm.sync()
                state.infer_s.append(time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001
                state.error = _error_text(error)
                say(f"{preset}: {state.name} failed: {state.error}")

    if profile_dir is not None:
        for state in live:
            if state.error is None:
                state.result["profile"] = _profile_epoch(state, feed(repeats + 1), profile_dir / preset)

    # roofline: each framework's matmul rate at this model's shapes
    rates: dict[str, dict[str, Any]] = {}
    for framework in sorted({ARM_FRAMEWORK[s.name] for s in live if s.error is None}):
        say(f"{preset}: {framework} matmul rate")
        rates[framework] = matmul_rate(framework, step_gemms(model, batch_size), dtype=dtype, device=device,
                                       repeats=repeats, target_s=matmul_target_s, seed=seed)
    record["matmul_rate"] = rates

    for state in states:
        record["arms"].append(_arm_record(state, record, rates, n_users, n_steps))
    record["ratios"] = _ratios(record["arms"])
    for state in states:  # free the device memory before the next workload
        state.arm = state.matrix = None
    return record


def _arm_record(state: _ArmState, workload: dict[str, Any], rates: dict[str, Any], n_users: int,
                n_steps: int) -> dict[str, Any]:
    framework = ARM_FRAMEWORK[state.name]
    row: dict[str, Any] = {"arm": state.name, "framework": framework, "description": ARM_DESCRIPTION[state.name]}
    if state.error is not None or not state.epoch_s:
        row.update(status="failed", error=state.error or "no repeat completed")
        row.update(state.result)
        return row
    epoch = summarize(state.epoch_s)
    run = summarize(state.run_s)
    step = summarize(state.step_s)
    row.update(state.result)
    row.update(
        status="ok",
        train_users_per_s=summarize([n_users / s for s in state.epoch_s]),
        epoch_s=epoch, feed_s=summarize(state.feed_s), run_s=run, step_s=step,
        epoch_step_s=run["median"] / n_steps,
        loop_overhead_s=run["median"] - n_steps * step["median"],
        infer_users_per_s=summarize([n_users / s for s in state.infer_s]),
        infer_s=summarize(state.infer_s),
        compile_s=max(0.0, row["warmup_s"] - epoch["median"]),
    )
    flops_epoch = workload["flops"]["train_epoch"]
    achieved = flops_epoch / epoch["median"]
    row["matmul_gflops"] = achieved / 1e9
    row["infer_matmul_gflops"] = workload["flops"]["inference_per_user"] * n_users / row["infer_s"]["median"] / 1e9
    rate = rates.get(framework)
    if rate:
        row["matmul_fraction"] = achieved / (rate["gflops"] * 1e9)
        row["matmul_fraction_run"] = flops_epoch / run["median"] / (rate["gflops"] * 1e9)
        step_flops = workload["flops"]["train_per_user"] * workload["batch_size"]
        row["matmul_fraction_step"] = step_flops / step["median"] / (rate["gflops"] * 1e9)
    return row


def _ratios(arm_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of arms that ran, later arm (in ARMS order) over earlier: JAX over PyTorch first."""
    ok = sorted((row for row in arm_rows if row.get("status") == "ok"), key=lambda row: ARMS.index(row["arm"]))
    out = []
    for earlier, later in itertools.combinations(ok, 2):
        for metric in ("train_users_per_s", "infer_users_per_s"):
            value = ratio(later[metric], earlier[metric])
            if value is not None:
                out.append({"metric": metric, "numerator": later["arm"], "denominator": earlier["arm"], **value})
    return out


# XLA:CPU names its compiled operations after the HLO instructions ("dot.3", "ynn_fusion.1" for a
# YNNPACK matmul with its fused epilogue, "multiply_add_fusion.2"); control flow ("while": the scan)
# encloses the others, and runtime bookkeeping has "::" or spaces in its name, Python frames a "$"
_MATMUL_OP = re.compile(r"dot|ynn|gemm|matmul|convolution")
_ENCLOSING_OP = re.compile(r"^(while|conditional|call)(\.\d+)?$")
_HLO_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


def summarize_jax_trace(folder: Path, top: int = 12) -> dict[str, Any]:
    """Where a traced JAX epoch spent its time, from the XLA operations in the trace: total seconds
    in matrix products (their fused epilogues included) and in everything else, and the `top`
    operations by time. Durations are summed over threads, so they can exceed the wall time."""
    import gzip

    files = sorted(Path(folder).rglob("*.trace.json.gz"))
    if not files:
        return {"error": f"no *.trace.json.gz under {folder}"}
    events = json.loads(gzip.open(files[-1]).read())["traceEvents"]
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or not _HLO_NAME.match(name) or _ENCLOSING_OP.match(name):
            continue
        seconds[name] = seconds.get(name, 0.0) + event.get("dur", 0.0) * 1e-6
        counts[name] = counts.get(name, 0) + 1
    matmul = sum(v for k, v in seconds.items() if _MATMUL_OP.search(k))
    ranked = sorted(seconds, key=seconds.get, reverse=True)[:top]
    return {"matmul_s": matmul, "other_s": sum(seconds.values()) - matmul,
            "top": [{"op": k, "seconds": seconds[k], "calls": counts[k], "matmul": bool(_MATMUL_OP.search(k))}
                    for k in ranked]}


def _profile_epoch(state: _ArmState, fed, folder: Path) -> dict[str, Any]:
    """One more epoch under the framework's profiler: torch's op table (text) or a JAX trace folder."""
    batches, masks, _ = fed
    folder.mkdir(parents=True, exist_ok=True)
    try:
        if state.arm.framework == "torch":
            from torch.profiler import ProfilerActivity, profile

            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if state.arm.device.type == "cuda" else [])
            with profile(activities=activities) as prof:
                state.arm.epoch(state.matrix, batches, masks)
                state.arm.sync()
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
            path = folder / f"{state.name}-ops.txt"
            path.write_text(table + "\n")
            return {"ops_table": str(path)}
        import jax

        path = folder / f"{state.name}-trace"
        started = time.perf_counter()
        with jax.profiler.trace(str(path)):
            state.arm.epoch(state.matrix, batches, masks)
            state.arm.sync()
        wall_s = time.perf_counter() - started
        return {"trace_dir": str(path), "epoch_s_traced": wall_s, "xla_ops": summarize_jax_trace(path),
                "view": "the *.trace.json.gz inside in ui.perfetto.dev, or xprof / tensorboard on the folder"}
    except Exception as error:  # noqa: BLE001 - a profiler problem must not lose the timings
        return {"error": _error_text(error)}


# ---------------------------------------------------------------------------------------------
# the optimizer rows


def bench_optimizer(name: str, *, dtype: str = "float32", repeats: int = 5, n_points: int = 10_000,
                    dim: int = 64, number: int = 10) -> dict[str, Any]:
    """One Riemannian optimizer step on `n_points` ball points of dimension `dim`, JAX jitted vs geoopt,
    timed by `parity.checks.optim.time_optimizer_step` (its torch side runs on the CPU)."""
    from parity.checks.optim import time_optimizer_step

    result = time_optimizer_step(name, n_points=n_points, dim=dim, dtype=dtype, repeats=repeats, number=number)
    arms = []
    for arm, prefix in (("torch-eager", "torch"), ("jax-jit", "jax")):
        median_s, min_s = result[f"{prefix}_ms"] / 1e3, result[f"{prefix}_ms_min"] / 1e3
        max_ms = result.get(f"{prefix}_ms_max")
        step = {"median": median_s, "min": min_s, "max": None if max_ms is None else max_ms / 1e3,
                "n": result.get("repeats")}
        arms.append({"arm": arm, "framework": prefix, "status": "ok", "step_s": step,
                     "points_per_s": n_points / median_s})
    return {"name": f"optimizer-{name}", "kind": "optimizer", "optimizer": name, "dtype": dtype,
            "n_points": n_points, "dim": dim, "arms": arms, "result": result,
            "ratios": [{"metric": "step_speedup", "numerator": "jax-jit", "denominator": "torch-eager",
                        "median": result["torch_ms"] / result["jax_ms"], "low": None, "high": None}]}


# ---------------------------------------------------------------------------------------------
# targets


def _best_jax(workload: dict[str, Any]) -> dict[str, Any] | None:
    rows = [r for r in workload["arms"] if r.get("status") == "ok" and r["framework"] == "jax"]
    return max(rows, key=lambda r: r["train_users_per_s"]["median"], default=None)


def check_targets(workloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 7's acceptance figures, as measured in this run: met, not met, or None (not measurable)."""
    out = []
    for w in workloads:
        if w.get("kind") != "model":
            continue
        arms = {r["arm"]: r for r in w["arms"] if r.get("status") == "ok"}
        best = _best_jax(w)
        for (kind, baseline), threshold in TARGETS.items():
            if w["model_kind"] != kind:
                continue
            entry = {"workload": w["name"], "target": f"best JAX training users/s / {baseline} >= {threshold:g}",
                     "threshold": threshold, "value": None, "met": None}
            if best is not None and baseline in arms:
                entry["value"] = best["train_users_per_s"]["median"] / arms[baseline]["train_users_per_s"]["median"]
                entry["met"] = entry["value"] >= threshold
                entry["arm"] = best["arm"]
            else:
                entry["why_not_measured"] = f"needs a JAX arm and {baseline}"
            out.append(entry)
        for row in w["arms"]:
            if row["framework"] == "jax" and row.get("status") == "ok" and "matmul_fraction" in row:
                out.append({"workload": w["name"], "arm": row["arm"],
                            "target": f"{row['arm']} matmul FLOP rate per epoch (feeding included) / JAX matmul rate "
                                      f">= {MATMUL_FRACTION_TARGET:g}",
                            "threshold": MATMUL_FRACTION_TARGET, "value": row["matmul_fraction"],
                            "met": row["matmul_fraction"] >= MATMUL_FRACTION_TARGET})
    return out


# ---------------------------------------------------------------------------------------------
# the whole run


def validate(presets: Sequence[str], arms: Sequence[str], optimizers: Sequence[str], repeats: int = 5,
             steps: int = 3) -> None:
    """Raise BenchError for an unknown preset, arm or optimizer, or a count below 1."""
    unknown_arms = [a for a in arms if a not in ARMS]
    if unknown_arms:
        raise BenchError(f"unknown arm(s) {', '.join(unknown_arms)}; known: {', '.join(ARMS)}")
    for preset in presets:
        if preset not in cfg.PRESETS:
            raise BenchError(f"unknown preset {preset!r}; known: {', '.join(sorted(cfg.PRESETS))}")
    unknown_opt = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown_opt:
        raise BenchError(f"unknown optimizer(s) {', '.join(unknown_opt)}; known: {', '.join(OPTIMIZERS)}")
    if repeats < 1 or steps < 1:
        raise BenchError("--repeats and --steps must be at least 1")


def warm_runtimes(device: str = "cpu") -> None:
    """Start both frameworks' runtimes (backend, thread pools) before any arm, so that no arm's memory
    and warm-up time carry a framework's one-off start-up."""
    import jax
    import jax.numpy as jnp
    import torch

    jax.block_until_ready(jnp.ones((8, 8)) @ jnp.ones((8, 8)))
    dev = torch.device("cuda" if device == "gpu" else "cpu")
    (torch.ones(8, 8, device=dev) @ torch.ones(8, 8, device=dev)).sum().item()


def run_bench(presets: Sequence[str], data: BenchData, *, arms: Sequence[str] = ARMS,
              optimizers: Sequence[str] = OPTIMIZERS,
              repeats: int = 5, steps: int = 3, dtype: str = "float32", device: str = "cpu",
              compile_mode: str | None = None, hidden_cap: int | None = None, seed: int = 0,
              matmul_target_s: float = 0.05, progress: bool = False, profile_dir: Path | None = None,
              optimizer_points: int = 10_000, optimizer_dim: int = 64, optimizer_number: int = 10,
              settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every preset's workload and the optimizer rows; -> the bench JSON (see the module docstring)."""
    from tqdm import tqdm

    validate(presets, arms, optimizers, repeats, steps)
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)

    started = time.time()
    warm_runtimes(device)
    info = device_info(device)
    frameworks = {ARM_FRAMEWORK[a] for a in arms}
    bar = tqdm(total=len(presets) * (len(arms) * (1 + repeats) + len(frameworks)) + len(optimizers), desc="bench",
               disable=not progress, file=sys.stderr, unit="task")

    def say(text: str) -> None:
        bar.set_postfix_str(text[:70])
        bar.update()

    workloads = []
    for preset in presets:
        try:
            workloads.append(bench_model(preset, data, arms=arms, repeats=repeats, steps=steps, dtype=dtype,
                                         device=device, compile_mode=compile_mode, hidden_cap=hidden_cap, seed=seed,
                                         matmul_target_s=matmul_target_s, progress=say, profile_dir=profile_dir))
        except BenchError:
            raise
        except Exception as error:  # noqa: BLE001 - e.g. a preset whose model kind is not wired yet
            workloads.append({"name": preset, "kind": "model", "status": "failed", "error": _error_text(error),
                              "arms": [], "ratios": []})
    for name in optimizers:
        say(f"optimizer {name}")
        try:
            workloads.append(bench_optimizer(name, dtype=dtype, repeats=repeats, n_points=optimizer_points,
                                             dim=optimizer_dim, number=optimizer_number))
        except Exception as error:  # noqa: BLE001
            workloads.append({"name": f"optimizer-{name}", "kind": "optimizer", "status": "failed",
                              "error": _error_text(error), "arms": [], "ratios": []})
    bar.close()
    info["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {
        "command": "bench", "version": SCHEMA_VERSION,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": time.time() - started,
        "settings": {"presets": list(presets), "arms": list(arms), "optimizers": list(optimizers), "repeats": repeats,
                     "steps": steps, "dtype": dtype, "device": device, "compile_mode": compile_mode,
                     "hidden_cap": hidden_cap, "seed": seed, **(settings or {})},
        "data": {"dataset": data.name, "n_users": data.n_users, "n_items": data.n_items, "nnz": int(data.matrix.nnz)},
        "device": info,
        "workloads": workloads,
        # toy shapes say nothing about the acceptance figures (dispatch overhead dominates)
        "targets": [] if (settings or {}).get("tiny") else check_targets(workloads),
    }


# ---------------------------------------------------------------------------------------------
# printing


def format_stat(stat: dict[str, Any] | None, scale: float = 1.0, digits: int = 0) -> str:
    """A `summarize` record as 'median [min, max]' (times `scale`), '-' when empty."""
    if not stat or stat.get("median") is None:
        return "-"
    lo = "?" if stat.get("min") is None else f"{stat['min'] * scale:.{digits}f}"
    hi = "?" if stat.get("max") is None else f"{stat['max'] * scale:.{digits}f}"
    return f"{stat['median'] * scale:.{digits}f} [{lo}, {hi}]"


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def format_results(payload: dict[str, Any]) -> str:
    d = payload["device"]
    out = [f"bench on {d['cpu_model']} ({d['usable_cpus']} usable CPUs, torch threads {d['torch_threads']}), "
           f"device {payload['settings']['device']}, JAX backend {d['jax_backend']}; data {payload['data']['dataset']} "
           f"({payload['data']['n_users']} users x {payload['data']['n_items']} items); {payload['settings']['dtype']}; "
           f"medians of {payload['settings']['repeats']} repeats [min, max]; load average "
           f"{d.get('load_average')} -> {d.get('load_average_end')}"]
    for w in payload["workloads"]:
        out.append("")
        if w.get("status") == "failed":
            out.append(f"{w['name']}: FAILED: {w['error']}")
            continue
        if w["kind"] == "optimizer":
            r = w["result"]
            out.append(f"{w['name']} ({w['n_points']} x {w['dim']} ball points, {w['dtype']}): JAX {r['jax_ms']:.3f} ms, "
                       f"geoopt {r['torch_ms']:.3f} ms per step; geoopt / JAX = {r['torch_ms'] / r['jax_ms']:.2f}x")
            continue
        out.append(f"{w['name']} ({w['model_kind']}, layers {w['config']['model']['layer_sizes']}, batch "
                   f"{w['batch_size']}, {w['steps_per_epoch']} steps/epoch, "
                   f"{w['flops']['train_epoch'] / 1e9:.1f} matmul GFLOP/epoch)")
        rows = []
        for r in w["arms"]:
            if r.get("status") != "ok":
                rows.append((r["arm"], f"FAILED: {r.get('error', '')[:60]}", "", "", "", "", "", "", "", ""))
                continue
            memory = r.get("memory", {})
            peak = memory.get("device_peak_mb")
            if peak is None and memory.get("resident_mb") is not None and memory.get("epoch_peak_above_mb") is not None:
                peak = memory["resident_mb"] + memory["epoch_peak_above_mb"]
            rows.append((r["arm"], format_stat(r["train_users_per_s"]), f"{r['epoch_s']['median']:.2f}",
                         f"{r['feed_s']['median']:.2f}", f"{r['loop_overhead_s']:.2f}",
                         format_stat(r["step_s"], 1e3, 1), format_stat(r["infer_users_per_s"]), f"{r['compile_s']:.1f}",
                         "-" if peak is None else f"{peak:.0f}",
                         f"{100 * r['matmul_fraction']:.0f}% / {100 * r['matmul_fraction_step']:.0f}%"
                         if "matmul_fraction" in r else "-"))
        out.append(_table(("arm", "train users/s", "epoch s", "feed s", "loop s", "step ms", "infer users/s",
                           "compile s", "peak MB", "matmul epoch/step"), rows))
        rates = ", ".join(f"{fw} {rate['gflops']:.1f} GFLOP/s" for fw, rate in w.get("matmul_rate", {}).items())
        out.append(f"matmul rate at the model's shapes: {rates}")
        for r in w["arms"]:
            ops = r.get("profile", {}).get("xla_ops")
            if ops and "matmul_s" in ops:
                top = ", ".join(f"{o['op']} {o['seconds']:.3f}" for o in ops["top"] if not o["matmul"])
                out.append(f"profile {r['arm']}: XLA ops {ops['matmul_s']:.3f} s in matrix products, "
                           f"{ops['other_s']:.3f} s elsewhere (traced epoch {r['profile']['epoch_s_traced']:.2f} s); "
                           f"largest others: {top}")
            elif r.get("profile", {}).get("ops_table"):
                out.append(f"profile {r['arm']}: op table in {r['profile']['ops_table']}")
        train_ratios = [x for x in w["ratios"] if x["metric"] == "train_users_per_s"]
        if train_ratios:
            out.append("training throughput ratios: " + "; ".join(
                f"{x['numerator']} / {x['denominator']} {x['median']:.2f}x [{x['low']:.2f}, {x['high']:.2f}]"
                for x in train_ratios))
    if payload["targets"]:
        out.append("")
        out.append("targets (issue 7):")
        for t in payload["targets"]:
            verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT MET")
            value = "-" if t["value"] is None else f"{t['value']:.2f}"
            out.append(f"  {t['workload']}: {t['target']}: {value} ({verdict})")
    return "\n".join(out)


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# command line


def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def default_presets() -> list[str]:
    """Every preset of `parity.config.PRESETS` (a hyperbolic preset joins the bench when it is added)."""
    return list(cfg.PRESETS)


def cli(args) -> int:
    from parity.data import DataError

    tiny, quick = bool(getattr(args, "tiny", False)), bool(getattr(args, "quick", False))
    presets = _split_names(args.presets) or default_presets()
    arms = _split_names(args.arms) or list(ARMS)
    optimizers = [] if args.no_optimizer else (_split_names(args.optimizers) or list(OPTIMIZERS))
    repeats = args.repeats if args.repeats is not None else (TINY["repeats"] if tiny else 5)
    steps = args.steps if args.steps is not None else (TINY["steps"] if tiny else 3)
    users = args.users if args.users is not None else (QUICK_USERS if quick else None)
    try:
        validate(presets, arms, optimizers, repeats, steps)
        select_device(args.device, args.gpu_matmul)
        data = load_bench_data(args.dataset, data_dir=args.data_dir, users=users, tiny=tiny)
        payload = run_bench(presets, data, arms=arms, optimizers=optimizers, repeats=repeats, steps=steps,
                            dtype=args.dtype, device=args.device, compile_mode=args.compile_mode,
                            hidden_cap=TINY["hidden_cap"] if tiny else None, seed=args.seed,
                            matmul_target_s=0.005 if tiny else 0.05, progress=not args.no_progress,
                            profile_dir=Path(args.profile) if args.profile else None,
                            optimizer_points=TINY["optimizer_points"] if tiny else 10_000,
                            optimizer_number=TINY["optimizer_number"] if tiny else 10,
                            settings={"quick": quick, "tiny": tiny, "users": users})
    except (BenchError, DataError) as error:
        print(f"poincare-parity bench: {error}", file=sys.stderr)
        return 2
    print(format_results(payload))
    if args.json:
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    failed = [w["name"] for w in payload["workloads"] if w.get("status") == "failed"] + [
        f"{w['name']}/{r['arm']}" for w in payload["workloads"] for r in w["arms"] if r.get("status") == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
