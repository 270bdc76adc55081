"""The PyTorch backend: `torch_ref` sessions (one device, or data-parallel over rank processes under
DistributedDataParallel), and the public checks' primitives for torch functions and modules (geoopt's
included)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

import numpy as np

from parity import convert
from parity.backend.base import Backend, Captured, DevicesUnavailable, ModuleRun, Session, check_session_request
from parity.config import RunConfig
from parity.data import dense_rows


def _torch_device(device: str):
    import torch

    return torch.device("cuda" if device == "gpu" else "cpu")


class TorchSession(Session):
    framework = "torch"

    def __init__(self, run: RunConfig, weights: dict[str, np.ndarray], backend: TorchBackend, device: str = "cpu",
                 compiled: bool = False, compile_mode: str | None = None):
        import torch

        import torch_ref.train as tt

        self.dtype, self.device, self.input_format = run.train.dtype, _torch_device(device), run.train.input_format
        self._masks = tt.StepMasks
        model = backend.model(run.model, weights, self.dtype)
        # Module.to moves parameters in place, so an optimizer built on them stays valid; its state is
        # created lazily at the first step, on the parameters' device
        model.to(self.device)
        self.trainer = tt.Trainer(model, backend.optimizer(run.model, run.optimizer),
                                  dense_refeeding=run.train.dense_refeeding)
        if compiled:
            # one static graph per batch shape: the short last batch gets its own
            kwargs: dict[str, Any] = {"dynamic": False}
            if compile_mode:
                kwargs["mode"] = compile_mode
            self.trainer.model = torch.compile(self.trainer.model, **kwargs)
        self._module = model  # the uncompiled module: its parameters are the compiled one's

    def put(self, array):
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def put_sparse_rows(self, matrix, rows, input_keep=None):
        from torch_ref import sparse

        return sparse.to_device(sparse.sparse_rows(matrix, rows, input_keep=input_keep, dtype=self.dtype), self.device)

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


class TorchDataParallelSession(TorchSession):
    """A `TorchSession` on `devices` devices: `torch_ref.distributed.SpawnedDataParallelTrainer`, one
    rank process per device (gloo on the CPU, nccl on GPUs) each training its contiguous block of every
    batch under DistributedDataParallel; this process holds rank 0's weights and optimizer state.

    `processes`: rank processes to share (`TorchBackend.device_group`); without them the session starts
    its own, and `close()` stops them."""

    def __init__(self, run: RunConfig, weights: dict[str, np.ndarray], backend: TorchBackend, device: str = "cpu",
                 devices: int = 2, processes=None):
        import torch_ref.distributed as td
        import torch_ref.train as tt

        problem = backend.check_devices(devices, device)
        if problem:
            raise DevicesUnavailable(problem)
        self.dtype, self.device, self.devices = run.train.dtype, _torch_device(device), devices
        self._masks = tt.StepMasks
        model = backend.model(run.model, weights, self.dtype)
        factory = backend.optimizer(run.model, run.optimizer)
        if processes is not None:
            self.trainer = td.SpawnedDataParallelTrainer(model, factory, processes=processes,
                                                         dense_refeeding=run.train.dense_refeeding)
        else:
            self.trainer = td.data_parallel_trainer(model, factory, devices=devices, device=self.device.type,
                                                    dense_refeeding=run.train.dense_refeeding)

    def put(self, array):
        return self.trainer.put(np.ascontiguousarray(array))  # shared memory: the ranks read it in place

    def train_epoch(self, matrix, batches, masks, *, stepwise=False):
        return self.trainer.train_epoch(matrix, batches, self._masks(*masks))

    # the trainer's `model` / `optimizer` are host copies of rank 0's; what is loaded into them reaches
    # every rank before the next call
    def weights(self):
        return convert.extract_torch(self.trainer.model)

    def load_weights(self, weights):
        convert.load_torch(self.trainer.model, weights)

    def optimizer_arrays(self):
        return convert.torch_optimizer_to_arrays(self.trainer.optimizer)

    def load_optimizer_arrays(self, arrays):
        convert.torch_optimizer_from_arrays(self.trainer.optimizer, arrays)

    def sync(self):
        """Nothing to wait for: every call returns when the ranks have answered."""

    def replica_max_difference(self):
        return self.trainer.replica_max_difference()

    def reset_peak_memory(self):
        """The rank processes hold the device memory: no peak is kept here."""

    def peak_memory_bytes(self):
        return None

    def profile_epoch(self, matrix, batches, masks, folder, name, *, stepwise=False):
        raise NotImplementedError("a data-parallel PyTorch epoch runs in its rank processes: profile one rank "
                                  "under torchrun instead")

    def close(self):
        self.trainer.close()


class TorchBackend(Backend):
    name, label = "torch", "PyTorch"

    def model(self, config, weights, dtype="float32"):
        return convert.torch_model(config, weights, dtype)

    def optimizer(self, model, optimizer):
        import torch_ref.train as tt

        # geoopt reads a learnable ball's current c from the parameters' manifold itself
        return tt.riemannian_optimizer(optimizer) if model.kind == "hae" else tt.euclidean_optimizer(optimizer)

    def __init__(self):
        self._groups: dict[tuple[int, str], Any] = {}  # (devices, device) -> rank processes of a device_group

    def session(self, run, weights, *, device="cpu", devices=1, compile_mode=None, compiled=False):
        check_session_request(run, devices)
        if devices > 1:
            if compiled:
                raise ValueError("torch.compile runs on one device here: compiled=True needs devices=1")
            return TorchDataParallelSession(run, weights, self, device, devices, self._groups.get((devices, device)))
        return TorchSession(run, weights, self, device, compiled=compiled, compile_mode=compile_mode)

    def check_devices(self, devices, device="cpu"):
        if devices == 1 or device == "cpu":  # on the CPU the ranks are processes: any number
            return None
        import torch

        available = torch.cuda.device_count()
        if available >= devices:
            return None
        return f"{devices} GPUs asked for, torch sees {available} (one rank process per GPU; see README)"

    @contextlib.contextmanager
    def device_group(self, devices, *, device="cpu"):
        key = (devices, device)
        if devices == 1 or key in self._groups:  # one device, or an outer group already holds them
            yield
            return
        problem = self.check_devices(devices, device)
        if problem:
            raise DevicesUnavailable(problem)
        import torch_ref.distributed as td

        with td.RankProcesses(devices, device=_torch_device(device).type) as processes:
            self._groups[key] = processes
            try:
                yield
            finally:
                del self._groups[key]

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

    def data_parallel_epoch_seconds(self, run, weights, matrix, epochs, *, devices, device="cpu"):
        import torch_ref.distributed as td
        import torch_ref.train as tt

        # one rank process per device; on the CPU each gets cpu_count // devices threads (its default)
        model = self.model(run.model, weights, run.train.dtype)
        return td.epoch_seconds(model, self.optimizer(run.model, run.optimizer), matrix,
                                [(batches, tt.StepMasks(*masks)) for batches, masks in epochs], devices=devices,
                                dense_refeeding=run.train.dense_refeeding, device=_torch_device(device).type)

    # --- the public checks' primitives ---------------------------------------------------------------

    def vjp(self, fn, args, *, keywords=(), differentiable=(), cotangents=(), jit=True):
        import torch

        names = list(args)
        groups = len(next(iter(args.values())))
        outputs: list[list[np.ndarray]] = []
        grads: dict[str, list[np.ndarray]] = {k: [] for k in differentiable}
        for g in range(groups):
            values = {k: torch.tensor(np.asarray(v[g]), requires_grad=k in differentiable) for k, v in args.items()}
            out = fn(*(values[k] for k in names if k not in keywords), **{k: values[k] for k in keywords})
            outs = out if isinstance(out, tuple) else (out,)
            inputs = [values[k] for k in differentiable]
            found = torch.autograd.grad(outs, inputs, grad_outputs=[torch.tensor(np.asarray(c[g])) for c in cotangents],
                                        allow_unused=True) if inputs else ()
            for k, tensor, grad in zip(differentiable, inputs, found):
                grads[k].append((torch.zeros_like(tensor) if grad is None else grad).detach().numpy())
            for i, o in enumerate(outs):
                if len(outputs) <= i:
                    outputs.append([])
                outputs[i].append(o.detach().numpy())
        return [np.stack(o) for o in outputs], {k: np.stack(v) for k, v in grads.items()}

    def run_module(self, module, args, kwargs, *, loss, cotangents, capture=True, train=False):
        import torch

        module.train(train)
        args = [torch.as_tensor(a) for a in args]
        kwargs = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        seen: list[Captured] = []
        module.zero_grad(set_to_none=True)
        with _capturing(module, seen, enabled=capture):
            output = module(*args, **kwargs)
        leaves = _leaves(output)
        if loss is not None:
            value = loss(output, *args)
        else:
            value = sum((o * torch.as_tensor(c)).sum() for o, c in zip(leaves, cotangents))
        value.backward()
        grads = {name: (torch.zeros_like(p) if p.grad is None else p.grad).detach().cpu().numpy().copy()
                 for name, p in module.named_parameters()}
        return ModuleRun(outputs=[o.detach().cpu().numpy().copy() for o in leaves], loss=float(value.detach()),
                         grads=grads, captured=seen)

    def forward(self, module, args, kwargs, *, train=False):
        import torch

        module.train(train)
        kwargs = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        with torch.no_grad():
            output = module(*(torch.as_tensor(a) for a in args), **kwargs)
        return [t.detach().cpu().numpy().copy() for t in _leaves(output)]

    def layer_outputs(self, module, args, kwargs, *, train=False):
        import torch

        module.train(train)
        kwargs = {k: (torch.as_tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()}
        seen: list[Captured] = []
        with torch.no_grad(), _capturing(module, seen):
            module(*(torch.as_tensor(a) for a in args), **kwargs)
        return seen

    def model_pass(self, config, weights, dtype, rows, input_keep, input_format):
        import torch

        from torch_ref import sparse

        model = self.model(config, weights, dtype)
        if input_format == "sparse":  # the keep-mask travels in the batch, read at its entries
            inputs = sparse.to_device(sparse.sparse_rows(rows, np.arange(rows.shape[0]), input_keep=input_keep,
                                                         dtype=dtype))
            keep = None
        else:
            inputs = torch.from_numpy(dense_rows(rows, np.arange(rows.shape[0]), dtype))
            keep = None if input_keep is None else torch.from_numpy(input_keep)
        output = model(inputs, input_keep=keep)
        value = model.loss(output, inputs)
        value.backward()
        return output.detach().numpy(), float(value.detach()), convert.extract_torch(model, grads=True)

    def parameters(self, module, *, trainable=False):
        tensors = dict(module.named_parameters()) if trainable else module.state_dict(keep_vars=True)
        return {name: t.detach().cpu().numpy().copy() for name, t in tensors.items()}

    def cast_module(self, module, dtype):
        import torch

        return copy.deepcopy(module).to(getattr(torch, dtype))

    def optimizer_trajectory(self, optimizer, params, loss, steps, *, dtype, constants=None, make_params=None,
                             apply_updates=None):
        import torch

        make = make_params or (lambda _name, tensor: torch.nn.Parameter(tensor))
        tensors = {k: make(k, torch.tensor(np.asarray(v), dtype=getattr(torch, dtype))) for k, v in params.items()}
        fixed = {k: torch.tensor(np.asarray(v), dtype=getattr(torch, dtype)) for k, v in (constants or {}).items()}
        opt = optimizer(list(tensors.values()))
        out = {k: np.empty((steps, *np.shape(v)), dtype=dtype) for k, v in params.items()}
        for i in range(steps):
            opt.zero_grad()
            loss(tensors, **fixed).backward()
            opt.step()
            for k, t in tensors.items():
                out[k][i] = t.detach().numpy()
        return out


@contextlib.contextmanager
def _capturing(module, seen: list[Captured], *, enabled: bool = True):
    """Within the block, every call of `module` or one of its submodules appends its output to `seen`
    (forward hooks on each, removed on the way out)."""
    calls: dict[str, int] = {}
    handles = []
    if enabled:
        for name, sub in module.named_modules():
            def hook(_module, _inputs, out, _name=name):
                calls[_name] = calls.get(_name, -1) + 1
                seen.append(Captured(_name, calls[_name], [t.detach().cpu().numpy().copy() for t in _leaves(out)]))

            handles.append(sub.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _leaves(output) -> list:
    """The tensors of a module's output (a tensor, or a tuple / list / dict of them), in order."""
    import torch

    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for v in output.values() for t in _leaves(v)]
    if isinstance(output, (tuple, list)):
        return [t for v in output for t in _leaves(v)]
    return []
