"""The JAX backend: `jax_impl` sessions (one device, or data-parallel over a device mesh), and the
public checks' primitives for JAX functions and Flax NNX modules."""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from parity import convert
from parity.backend.base import Backend, Captured, DevicesUnavailable, ModuleRun, Session, check_session_request
from parity.config import RunConfig
from parity.data import dense_rows

# JAX's CPU platform makes N devices of the host only when told so before it starts
HOST_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def request_host_devices(count: int) -> None:
    """Ask JAX's CPU platform for at least `count` devices: XLA_FLAGS gets
    --xla_force_host_platform_device_count=count (a larger count already there stays). Takes effect
    only if JAX has not started yet (before its first import in this process); on GPUs nothing is needed."""
    if count <= 1:
        return
    found = re.search(rf"{HOST_DEVICES_FLAG}=(\d+)", os.environ.get("XLA_FLAGS", ""))
    if found and int(found.group(1)) >= count:
        return
    os.environ["XLA_FLAGS"] = _xla_flags_with_host_devices(count)


def _xla_flags_with_host_devices(count: int) -> str:
    """This process's XLA_FLAGS with the host device count set to `count` (any earlier count dropped)."""
    flags = re.sub(rf"\s*{HOST_DEVICES_FLAG}=\S*", "", os.environ.get("XLA_FLAGS", ""))
    return f"{flags} {HOST_DEVICES_FLAG}={count}".strip()


class JaxSession(Session):
    framework = "jax"

    def __init__(self, run: RunConfig, weights: dict[str, np.ndarray], backend: JaxBackend, device: str = "cpu"):
        import jax_impl.train as jt

        self.dtype, self.on_gpu, self.input_format = run.train.dtype, device == "gpu", run.train.input_format
        self._masks = jt.StepMasks
        model = backend.model(run.model, weights, self.dtype)
        self.trainer = jt.Trainer(model, backend.optimizer(run.model, run.optimizer),
                                  dense_refeeding=run.train.dense_refeeding)

    def put(self, array: np.ndarray) -> Any:
        import jax

        return jax.device_put(array)

    def put_sparse_rows(self, matrix, rows, input_keep=None):
        from jax_impl import sparse

        # padded at least as the last batch was: a compiled program serves the next batch too
        batch = sparse.sparse_rows(matrix, rows, input_keep=input_keep, dtype=self.dtype,
                                   at_least=getattr(self, "_sparse_sizes", None))
        self._sparse_sizes = batch.sizes
        return sparse.to_device(batch)

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


class JaxDataParallelSession(JaxSession):
    """A `JaxSession` on `devices` devices: `jax_impl.distributed.DataParallelTrainer`, one process
    driving a ("data",) mesh; parameters, optimizer state and the training matrix replicated, every
    batch's rows (and their keep-masks) split into one contiguous block per device."""

    def __init__(self, run: RunConfig, weights: dict[str, np.ndarray], backend: JaxBackend, device: str = "cpu",
                 devices: int = 2):
        import jax_impl.distributed as jd
        import jax_impl.train as jt

        self.dtype, self.on_gpu, self.devices = run.train.dtype, device == "gpu", devices
        self._masks = jt.StepMasks
        model = backend.model(run.model, weights, self.dtype)
        self.trainer = jd.DataParallelTrainer(model, backend.optimizer(run.model, run.optimizer),
                                              devices=mesh_devices(device, devices),
                                              dense_refeeding=run.train.dense_refeeding)

    def put(self, array):
        return self.trainer.put(array)

    def load_weights(self, weights):
        convert.load_jax(self.trainer.params, weights)
        self.trainer.params = self.trainer.put(self.trainer.params)  # back on every device

    def load_optimizer_arrays(self, arrays):
        template = self.trainer.optimizer.init(self.trainer.params)
        self.trainer.opt_state = self.trainer.put(convert.jax_tree_from_arrays(template, arrays))

    def replica_max_difference(self):
        return self.trainer.replica_max_difference()

    def peak_memory_bytes(self):
        if not self.on_gpu:
            return None
        peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in self.trainer.mesh.devices.flat]
        return max((p for p in peaks if p is not None), default=None)  # the fullest device


def mesh_devices(device: str, count: int) -> list:
    """The first `count` JAX devices of kind `device` ("cpu" or "gpu"); `DevicesUnavailable` if fewer."""
    problem = devices_problem(device, count)
    if problem:
        raise DevicesUnavailable(problem)
    import jax

    return jax.devices(device)[:count]


def devices_problem(device: str, count: int) -> str | None:
    """None if JAX sees `count` devices of kind `device`, else why not and what to do."""
    import jax

    try:
        available = len(jax.devices(device))
    except RuntimeError:  # no such platform (no GPU, or a CPU-only jaxlib)
        available = 0
    if available >= count:
        return None
    if device == "cpu":
        return (f"{count} devices asked for, JAX sees {available} CPU device(s): on the CPU, JAX makes N devices "
                f"only from XLA_FLAGS={HOST_DEVICES_FLAG}=N set before it starts (the poincare-parity command "
                "sets it from --devices; in your own script set it before `import jax`)")
    return f"{count} GPUs asked for, JAX sees {available} (a CUDA build of jax sees every visible GPU, see README)"


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

    def session(self, run, weights, *, device="cpu", devices=1, compile_mode=None, compiled=False):
        check_session_request(run, devices)
        if devices > 1:
            return JaxDataParallelSession(run, weights, self, device, devices)
        return JaxSession(run, weights, self, device)

    def check_devices(self, devices, device="cpu"):
        return None if devices == 1 else devices_problem(device, devices)

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

    def device_count_environment(self, devices, device="cpu"):
        if device != "cpu":
            return {}  # JAX sees every visible GPU
        # the CPU platform makes N devices of the host only when told before it starts
        return {"XLA_FLAGS": _xla_flags_with_host_devices(devices), "JAX_PLATFORMS": "cpu"}

    def data_parallel_epoch_seconds(self, run, weights, matrix, epochs, *, devices, device="cpu"):
        import jax_impl.distributed as jd
        import jax_impl.train as jt

        model = self.model(run.model, weights, run.train.dtype)
        return jd.epoch_seconds(model, self.optimizer(run.model, run.optimizer), matrix,
                                [(batches, jt.StepMasks(*masks)) for batches, masks in epochs], devices=devices,
                                dense_refeeding=run.train.dense_refeeding)

    # --- the public checks' primitives ---------------------------------------------------------------

    def vjp(self, fn, args, *, keywords=(), differentiable=(), cotangents=(), jit=True):
        import jax.numpy as jnp

        names, keywords, differentiable = tuple(args), tuple(keywords), tuple(differentiable)
        stacked = _stacked_vjp(fn, names, keywords, differentiable, jit)
        arrays = {k: jnp.asarray(v) for k, v in args.items()}
        outputs, grads = stacked(arrays, tuple(jnp.asarray(c) for c in cotangents))
        return [np.asarray(o) for o in outputs], {k: np.asarray(g) for k, g in grads.items()}

    def run_module(self, module, args, kwargs, *, loss, cotangents, capture=True, train=False):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        module = nnx.merge(*nnx.split(module))  # a copy: switching modes leaves the caller's module alone
        module.train() if train else module.eval()
        args = [jnp.asarray(a) for a in args]
        kwargs = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        graphdef, params, rest = nnx.split(module, nnx.Param, ...)
        cots = [jnp.asarray(c) for c in cotangents]
        calls: list[tuple[str, int]] = []  # (path, call) of each captured output, filled while tracing

        def objective(p):
            model = nnx.merge(graphdef, p, rest)
            if capture:
                output, seen = _captured_call(model, args, kwargs)
                calls[:] = [(c.path, c.call) for c in seen]
            else:
                output, seen = model(*args, **kwargs), []
            leaves = jax.tree.leaves(output)
            value = loss(output, *args) if loss is not None else sum(jnp.sum(o * c) for o, c in zip(leaves, cots))
            return value, (leaves, [c.outputs for c in seen])

        # one compiled program: the forward pass with every layer's output, the loss and the gradients
        # (an eager capture would compile every primitive on its own, for each dtype)
        (value, (leaves, layer_outputs)), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
        captured = [Captured(path, call, [np.asarray(o) for o in outputs])
                    for (path, call), outputs in zip(calls, layer_outputs)]
        return ModuleRun(outputs=[np.asarray(o) for o in leaves], loss=float(value),
                         grads=convert.extract_jax(grads), captured=captured)

    def forward(self, module, args, kwargs, *, train=False):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        module = nnx.merge(*nnx.split(module))
        module.train() if train else module.eval()
        graphdef, state = nnx.split(module)
        args = [jnp.asarray(a) for a in args]
        kwargs = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        leaves = jax.jit(lambda s: jax.tree.leaves(nnx.merge(graphdef, s)(*args, **kwargs)))(state)
        return [np.asarray(o) for o in leaves]

    def layer_outputs(self, module, args, kwargs, *, train=False):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        module = nnx.merge(*nnx.split(module))  # a copy, as in run_module
        module.train() if train else module.eval()
        graphdef, state = nnx.split(module)
        args = [jnp.asarray(a) for a in args]
        kwargs = {k: (jnp.asarray(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        calls: list[tuple[str, int]] = []  # (path, call) of each captured output, filled while tracing

        def forward(s):
            _, seen = _captured_call(nnx.merge(graphdef, s), args, kwargs)
            calls[:] = [(c.path, c.call) for c in seen]
            return [c.outputs for c in seen]

        outputs = jax.jit(forward)(state)  # one compiled program, as in run_module
        return [Captured(path, call, [np.asarray(o) for o in outs]) for (path, call), outs in zip(calls, outputs)]

    def model_pass(self, config, weights, dtype, rows, input_keep, input_format):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        from jax_impl import sparse

        graphdef, params, rest = nnx.split(self.model(config, weights, dtype), nnx.Param, ...)
        if input_format == "sparse":  # the keep-mask travels in the batch, read at its entries
            inputs = sparse.to_device(sparse.sparse_rows(rows, np.arange(rows.shape[0]), input_keep=input_keep,
                                                         dtype=dtype))
            keep = None
        else:
            inputs = jnp.asarray(dense_rows(rows, np.arange(rows.shape[0]), dtype))
            keep = None if input_keep is None else jnp.asarray(input_keep)

        def objective(p):
            model = nnx.merge(graphdef, p, rest)
            output = model(inputs, input_keep=keep)
            return model.loss(output, inputs), output

        (value, output), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
        return np.asarray(output), float(value), convert.extract_jax(grads)

    def parameters(self, module, *, trainable=False):
        from flax import nnx

        state = nnx.state(module, nnx.Param if trainable else nnx.Variable)
        return {convert.jax_name(path): np.asarray(variable[...]) for path, variable in state.flat_state()}

    def cast_module(self, module, dtype):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        if dtype == "float64" and not jax.config.jax_enable_x64:
            raise RuntimeError("float64 JAX needs 64-bit mode: call parity.backend.enable_float64() first")
        graphdef, state = nnx.split(module)
        cast = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, state)
        return nnx.merge(graphdef, cast)

    def optimizer_trajectory(self, optimizer, params, loss, steps, *, dtype, constants=None, make_params=None,
                             apply_updates=None):
        import jax.numpy as jnp
        import optax

        constants = dict(constants or {})
        apply = apply_updates or optax.apply_updates
        names = tuple(params)
        run = _trajectory_program(optimizer, loss, apply, names, tuple(sorted(constants)), steps)
        start = {k: jnp.asarray(v, dtype=dtype) for k, v in params.items()}
        traced = {k: jnp.asarray(v, dtype=dtype) for k, v in constants.items()}
        trajectory = run(start, traced)
        return {k: np.asarray(v) for k, v in trajectory.items()}


@functools.lru_cache(maxsize=256)
def _stacked_vjp(fn: Callable, names: tuple[str, ...], keywords: tuple[str, ...], differentiable: tuple[str, ...],
                 jit: bool) -> Callable:
    """(arrays, cotangents) -> (outputs, grads), vmapped over the leading axis; one compiled program per
    function, argument layout and shapes (cached: every regime and dtype of a check reuses it)."""
    import jax

    def single(arrays, cots):
        fixed = {k: v for k, v in arrays.items() if k not in differentiable}

        def call(*diff):
            values = {**fixed, **dict(zip(differentiable, diff))}
            positional = [values[k] for k in names if k not in keywords]
            return fn(*positional, **{k: values[k] for k in keywords})

        out, pullback = jax.vjp(call, *(arrays[k] for k in differentiable))
        outs = out if isinstance(out, tuple) else (out,)
        grads = pullback(tuple(cots) if isinstance(out, tuple) else cots[0]) if differentiable else ()
        return outs, dict(zip(differentiable, grads))

    batched = jax.vmap(single)
    return jax.jit(batched) if jit else batched


def _captured_call(module, args, kwargs) -> tuple[Any, list[Captured]]:
    """Call `module`, recording every NNX submodule's output (JAX arrays, traced under a transformation)
    by its path, in the order the calls finish. Each submodule class's own `__call__` is wrapped for the
    call and restored after. -> (the module's output, the captured calls)."""
    import jax
    from flax import nnx

    nodes = [(path, node) for path, node in nnx.iter_graph(module) if isinstance(node, nnx.Module)]
    paths = {id(node): convert.jax_name(path) for path, node in nodes}
    seen: list[Captured] = []
    calls: dict[str, int] = {}
    active: set[int] = set()
    patched = {}
    for cls in {type(node) for _, node in nodes}:
        if "__call__" not in cls.__dict__:  # inherited: the class that defines it is wrapped
            continue
        original = cls.__dict__["__call__"]

        def wrapper(self, *a, _original=original, **k):
            if id(self) in active:  # a subclass's __call__ calling its base's: one call, recorded once
                return _original(self, *a, **k)
            active.add(id(self))
            try:
                out = _original(self, *a, **k)
            finally:
                active.discard(id(self))
            path = paths.get(id(self))
            if path is not None:
                calls[path] = calls.get(path, -1) + 1
                seen.append(Captured(path, calls[path], list(jax.tree.leaves(out))))
            return out

        patched[cls] = original
        cls.__call__ = wrapper
    try:
        output = module(*args, **kwargs)
    finally:
        for cls, original in patched.items():
            cls.__call__ = original
    return output, seen


@functools.lru_cache(maxsize=64)
def _trajectory_program(optimizer, loss: Callable, apply: Callable, names: tuple[str, ...],
                        constant_names: tuple[str, ...], steps: int) -> Callable:
    """A jitted (start params, constants) -> params after every step, as one `lax.scan`."""
    import jax

    @jax.jit
    def run(params, constants):
        tx = _transformation(optimizer, constants)

        def step(carry, _):
            current, state = carry
            grads = jax.grad(lambda p: loss(p, **constants))(current)
            updates, state = tx.update(grads, state, current)
            current = apply(current, updates)
            return (current, state), current

        _, trajectory = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
        return trajectory

    return run


def _transformation(optimizer: Any, constants: dict[str, Any]) -> Any:
    """The optax transformation itself, or a factory's, called with the constants its signature names
    (all of them if it takes **kwargs)."""
    import inspect

    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
        return optimizer
    parameters = inspect.signature(optimizer).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return optimizer(**constants)
    named = {p.name for p in parameters}
    return optimizer(**{k: v for k, v in constants.items() if k in named})
