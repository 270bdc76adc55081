"""Data-parallel training (PyTorch): torch.distributed and DistributedDataParallel, one process per device.

    data_parallel_trainer(model, optimizer, *, devices, dense_refeeding=False, device="cpu", timeout=None,
                          threads_per_process=None) -> SpawnedDataParallelTrainer
    epoch_seconds(model, optimizer, matrix, epochs, *, devices, dense_refeeding=False, device="cpu",
                  timeout=None, threads_per_process=None) -> seconds per epoch
        (both: the names and leading arguments of `jax_impl.distributed`'s; the keywords after
        dense_refeeding are PyTorch's own)
    DataParallelTrainer(model, optimizer, *, dense_refeeding=False, group=None)
        the `torch_ref.train.Trainer` API inside one process of a process group (torchrun, or the
        processes below); every rank is handed the same global batch and trains on its own block
        .replica_max_difference() -> largest difference between two ranks' copies of the state
    SpawnedDataParallelTrainer(model, optimizer, *, devices=None, processes=None, dense_refeeding=False,
                               device="cpu", timeout=None, threads_per_process=None)
        the same API in the calling process: each call is forwarded to a DataParallelTrainer in every
        rank process; .model / .optimizer are copies of rank 0's, edits to them reach every rank
        .put(array) -> a shared-memory tensor (the training matrix: once, not per epoch)
    RankProcesses(n_processes, *, device="cpu", backend=None, timeout=None, threads_per_process=None)
        spawned processes in one process group; .run(fn, *args, ranks=None) -> each rank's fn(*args)
    contiguous_share(n_rows, rank, world_size) -> slice   the rows of a global batch one rank trains on
    LOSS_NORMALIZERS                                       loss name -> the count that loss divides by

The gradient. Rank r trains on a contiguous block of every global batch (of its rows, their indices
and their dropout keep-masks; sizes as numpy.array_split, so a short last batch splits 13 / 12) and
DDP averages the gradients over the N ranks. Every loss of `torch_ref.models` is a sum over the batch
divided by a count n (rows, entries, or masked MSE's rated entries): L = S / max(n, 1). The global
batch's loss is sum_r S_r / max(n, 1) with n = sum_r n_r, so rank r back-propagates

    N * L_r * max(n_r, 1) / max(n, 1)          (n all-reduced each step)

and the average over ranks is the single-device gradient of the global batch, whatever the split,
up to the order of the sums (a rank with no rows contributes a zero gradient). The reported loss is
the sum over ranks of L_r * max(n_r, 1) / max(n, 1), all-reduced once per epoch. geoopt's Riemannian
optimizers then step on every rank with the same all-reduced gradient from the same state: each
rank's ball parameters stay the same bits (DDP broadcasts rank 0's parameters once, at construction;
`replica_max_difference` checks it after training).

Processes. `RankProcesses` starts them with torch.multiprocessing's "spawn" and joins them through a
TCPStore that the calling process holds on 127.0.0.1 (the OS picks a free port; gloo is pinned to
the loopback interface). With `timeout` set every call and collective has a deadline; a dead,
failing or late rank stops the whole group with that rank's traceback; `close()` (also run at garbage
collection, at exit, and when the calling process dies) ends every process. Tensors pass through
shared memory, not pipes.

Under torchrun (one process per GPU; the launcher sets the rank environment), each process runs

    dist.init_process_group("nccl"); torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    trainer = DataParallelTrainer(model.cuda(), optimizer, dense_refeeding=...)
    trainer.train_epoch(matrix, batch_order(...), masks)   # every rank: the same global batches and masks
"""

from __future__ import annotations

import copy
import datetime
import itertools
import os
import pickle
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from torch_ref.train import OptimizerFactory, StepMasks, Trainer, _slice_masks

# ---------------------------------------------------------------------------------------------
# the split of a global batch and of its loss


def contiguous_share(n_rows: int, rank: int, world_size: int) -> slice:
    """Rank `rank`'s rows of an `n_rows` batch: contiguous blocks in rank order, the first
    n_rows % world_size ranks one row longer (numpy.array_split's sizes)."""
    base, longer = divmod(n_rows, world_size)
    start = rank * base + min(rank, longer)
    return slice(start, start + base + (rank < longer))


def rated_entries(target: Tensor) -> Tensor:
    """The number of entries with target != 0 (masked MSE's count)."""
    return torch.count_nonzero(target)


def entries(target: Tensor) -> Tensor:
    """The number of entries (dense MSE's count)."""
    return torch.tensor(target.numel(), device=target.device)


def rows(target: Tensor) -> Tensor:
    """The number of rows (the count of the per-user likelihoods, multinomial and BCE)."""
    return torch.tensor(target.shape[0], device=target.device)


# loss name -> the count n of its denominator, from the target: every loss of torch_ref.models is
# (a sum over the batch) / max(n, 1). A loss missing here cannot be split over ranks exactly.
LOSS_NORMALIZERS: dict[str, Callable[[Tensor], Tensor]] = {
    "masked_mse": rated_entries,
    "dense_mse": entries,
    "multinomial": rows,
    "bce": rows,
}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """`optimizer.load_state_dict(state)`, then the state's plain values put back: torch.optim.Adam's
    loader turns an int `step` into a float32 tensor, and geoopt's RiemannianAdam computes beta ** step
    in double from the int, so the bias corrections would be rounded differently after a copy.

    The optimizer gets copies of the tensors: torch's loader keeps a tensor that already has the
    parameter's dtype and device, and one shared with `state` (or, through shared memory, with another
    process) would then be updated in place by both."""
    state = copy.deepcopy(state)
    optimizer.load_state_dict(state)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in state["state"].items():
        for key, value in values.items():
            if not isinstance(value, Tensor):
                optimizer.state[params[index]][key] = value


# ---------------------------------------------------------------------------------------------
# inside one rank


class DataParallelTrainer(Trainer):
    """`torch_ref.train.Trainer` in one process of a data-parallel group (see the module docstring).

    Every rank must make the same calls with the same arguments: the global batches in the global
    order and the epoch's masks for all rows, as the single-device trainer takes them; each rank
    keeps its block. Losses returned are the global batch's. `score` and `code` run the whole batch
    on the calling rank (no communication). `model` is the plain module (DDP wraps it as `ddp`).
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, *, dense_refeeding: bool = False,
                 group: dist.ProcessGroup | None = None):
        if not dist.is_initialized():
            raise RuntimeError("DataParallelTrainer needs torch.distributed.init_process_group first "
                               "(torchrun, or torch_ref.distributed.RankProcesses)")
        try:
            self._normalizer = LOSS_NORMALIZERS[model.config.loss]
        except KeyError:
            raise ValueError(f"no data-parallel normaliser for loss {model.config.loss!r}; "
                             f"known: {sorted(LOSS_NORMALIZERS)}") from None
        super().__init__(model, optimizer, dense_refeeding=dense_refeeding)
        self.group = group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # broadcast_buffers off: the models have no buffers; DDP broadcasts the parameters once, here
        self.ddp = DistributedDataParallel(model, device_ids=device_ids, process_group=group)

    def _share(self, rows, masks: StepMasks):
        block = contiguous_share(len(rows), self.rank, self.world_size)
        return rows[block], _slice_masks(masks, block.start, block.stop)

    def _total(self, losses: Tensor) -> Tensor:
        losses = losses.clone()
        dist.all_reduce(losses, group=self.group)
        return losses

    def _update(self, inputs: Tensor, input_keep: Tensor | None, code_keep: Tensor | None) -> tuple[Tensor, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        output = self.ddp(inputs, input_keep=input_keep, code_keep=code_keep)
        loss = self.model.loss(output, inputs)
        count = self._normalizer(inputs).to(loss.dtype)
        total = count.clone()
        dist.all_reduce(total, group=self.group)
        weight = torch.clamp(count, min=1.0) / torch.clamp(total, min=1.0)  # this rank's part of the global loss
        if inputs.shape[0] == 0:  # no rows here (a batch shorter than the group): the mean over 0 rows is NaN
            objective, part = output.sum() * 0.0, torch.zeros_like(loss)  # zero gradient, still all-reduced
        else:
            objective, part = loss * (weight * self.world_size), loss.detach() * weight
        objective.backward()  # DDP averages over the ranks: the world_size factor cancels
        self.optimizer.step()
        return part, output.detach()

    def replica_max_difference(self) -> float:
        """max |a - b| over every parameter and optimizer-state tensor, between this rank's copy and
        rank 0's (collective: every rank calls it); 0.0 when all ranks hold the same state."""
        mine = _flat_state(self.model, self.optimizer)
        reference = mine.clone()
        dist.broadcast(reference, src=0, group=self.group)
        worst = torch.max(torch.abs(mine - reference)) if mine.numel() else torch.zeros((), dtype=mine.dtype)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX, group=self.group)
        return float(worst)


def _flat_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> Tensor:
    """Every parameter and every optimizer-state tensor, flattened into one float64 vector."""
    tensors = [p.detach() for p in model.parameters()]
    for per_param in optimizer.state.values():
        tensors += [v.detach() for _, v in sorted(per_param.items()) if isinstance(v, Tensor)]
    if not tensors:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])


# ---------------------------------------------------------------------------------------------
# the rank processes

_START_TIMEOUT = 300.0  # seconds for a rank to start (importing torch on a busy machine takes a while)
_STOP_TIMEOUT = 5.0  # seconds a rank gets to leave by itself before it is terminated, then killed


class RankError(RuntimeError):
    """A rank process raised, died or missed its deadline; the group was stopped."""


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the process that spawned it dies (even by SIGKILL)."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _rank_main(rank: int, world_size: int, backend: str, device: str, store_port: int, timeout: float | None,
               threads: int | None, connection) -> None:
    """A rank process: join the group, then run the (function, args) it is sent until told to stop."""
    _die_with_parent()
    try:
        if threads:
            torch.set_num_threads(threads)
        if backend == "gloo" and sys.platform == "linux":
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only
        if device == "cuda":
            torch.cuda.set_device(rank)
        wait = datetime.timedelta(seconds=timeout or _START_TIMEOUT)
        store = dist.TCPStore("127.0.0.1", store_port, is_master=False, timeout=wait)
        options = {} if timeout is None else {"timeout": datetime.timedelta(seconds=timeout)}
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, **options)
        _RANK.update(device=torch.device(device, rank) if device == "cuda" else torch.device("cpu"))
        connection.send(("ok", None))
    except BaseException:
        connection.send(("error", traceback.format_exc()))
        return
    try:
        while True:
            try:
                message = connection.recv()
            except EOFError:  # the calling process is gone
                break
            if message is None:
                break
            fn, args = message
            try:
                reply = ("ok", fn(*args))
            except BaseException:
                reply = ("error", traceback.format_exc())
            connection.send(reply)
    finally:
        _RANK["trainers"].clear()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # everything is sent: skip the interpreter's teardown (seconds of unloading torch)


# what one rank process holds: its device and the trainers built in it, by key
_RANK: dict[str, Any] = {"device": None, "trainers": {}}


def _stop(processes: list, connections: list) -> None:
    for connection in connections:
        try:
            connection.send(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + _STOP_TIMEOUT
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(_STOP_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join()
    for connection in connections:
        connection.close()


class RankProcesses:
    """`n_processes` spawned processes joined in one torch.distributed process group (rank = index).

    device "cpu": backend gloo, `threads_per_process` torch threads each (default: the CPU count
    divided among the ranks); "cuda": backend nccl, rank r on GPU r. `timeout` (seconds, None: no
    limit) bounds every call and the group's collectives. Use as a context manager, or `close()`.
    """

    def __init__(self, n_processes: int, *, device: str = "cpu", backend: str | None = None,
                 timeout: float | None = None, threads_per_process: int | None = None):
        if n_processes < 1:
            raise ValueError(f"n_processes must be >= 1, got {n_processes}")
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and n_processes > torch.cuda.device_count():
            raise ValueError(f"{n_processes} processes need {n_processes} GPUs, torch sees {torch.cuda.device_count()}")
        self.n_processes, self.device, self.timeout = n_processes, device, timeout
        self.backend = backend or ("nccl" if device == "cuda" else "gloo")
        if device == "cpu" and threads_per_process is None:
            threads_per_process = max(1, (os.cpu_count() or 1) // n_processes)
        # the store every rank meets at: held here, on loopback, on a port the OS picks
        self._store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
        context = torch.multiprocessing.get_context("spawn")
        self._processes, self._connections = [], []
        self._finalizer = weakref.finalize(self, _stop, self._processes, self._connections)
        for rank in range(n_processes):
            mine, theirs = context.Pipe()
            process = context.Process(target=_rank_main, daemon=True, name=f"rank-{rank}",
                                      args=(rank, n_processes, self.backend, device, self._store.port, timeout,
                                            threads_per_process, theirs))
            process.start()
            theirs.close()
            self._processes.append(process)
            self._connections.append(mine)
        try:
            for rank in range(n_processes):
                self._receive(rank, _START_TIMEOUT if timeout is None else max(timeout, _START_TIMEOUT))
        except BaseException:
            self.close()
            raise

    def run(self, fn: Callable, *args, ranks: Sequence[int] | None = None) -> list:
        """`fn(*args)` in each of `ranks` (default: all, which collectives need); -> their results in
        that order. `fn` must be importable (module level) and the arguments picklable. Any failure
        stops every process and raises RankError."""
        if not self._finalizer.alive:
            raise RankError("these rank processes were closed")
        ranks = range(self.n_processes) if ranks is None else list(ranks)
        try:
            for rank in ranks:
                self._connections[rank].send((fn, args))
            return [self._receive(rank, self.timeout) for rank in ranks]
        except BaseException:
            self.close()
            raise

    def _receive(self, rank: int, timeout: float | None):
        deadline = None if timeout is None else time.monotonic() + timeout
        connection = self._connections[rank]
        while not connection.poll(0.05):
            for other, process in enumerate(self._processes):
                if process.exitcode is not None:
                    raise RankError(f"rank {other} exited with code {process.exitcode}")
            if deadline is not None and time.monotonic() > deadline:
                raise RankError(f"rank {rank} did not answer within {timeout} s; all ranks stopped")
        try:
            status, value = connection.recv()
        except (EOFError, OSError):  # the pipe closed: the rank is gone
            self._processes[rank].join(_STOP_TIMEOUT)
            raise RankError(f"rank {rank} exited with code {self._processes[rank].exitcode}") from None
        if status == "error":
            raise RankError(f"rank {rank} failed; all ranks stopped. Its traceback:\n{value}")
        return value

    def close(self) -> None:
        """Stop every rank process (politely, then by force); safe to call twice."""
        self._finalizer()

    def __enter__(self) -> RankProcesses:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# what the rank processes run for a SpawnedDataParallelTrainer (module level: sent by reference)


def _build(key: int, pickled_model: bytes, optimizer: OptimizerFactory, dense_refeeding: bool) -> None:
    # the model comes as plain pickle bytes: a module sent as an object would arrive with its parameters in
    # memory shared with the other ranks (torch.multiprocessing's pickler), and every rank would step them
    model = pickle.loads(pickled_model).to(_RANK["device"])
    _RANK["trainers"][key] = DataParallelTrainer(model, optimizer, dense_refeeding=dense_refeeding)


def _call(key: int, method: str, *args):
    return getattr(_RANK["trainers"][key], method)(*args)


def _drop(key: int) -> None:
    _RANK["trainers"].pop(key, None)


def _state(key: int) -> tuple[dict, dict]:
    trainer = _RANK["trainers"][key]
    return _to_cpu(trainer.model.state_dict()), _to_cpu(trainer.optimizer.state_dict())


def _load_state(key: int, model_state: dict, optimizer_state: dict) -> None:
    trainer = _RANK["trainers"][key]
    trainer.model.load_state_dict(model_state)
    load_optimizer_state(trainer.optimizer, optimizer_state)


def _timed_epochs(key: int, matrix, epochs) -> list[float]:
    """Each epoch's seconds on this rank, from a barrier (all ranks start together) to its losses
    (all-reduced: the slowest rank's end)."""
    trainer = _RANK["trainers"][key]
    matrix = torch.as_tensor(matrix, device=trainer.device)  # on the device once, as a user would
    seconds = []
    for batches, masks in epochs:
        dist.barrier()
        started = time.perf_counter()
        trainer.train_epoch(matrix, batches, masks)
        seconds.append(time.perf_counter() - started)
    return seconds


def _to_cpu(value):
    """Copies on the CPU of the tensors in `value` (never the live ones: sending a CPU tensor moves
    it to shared memory, where the receiver would see the rank's later updates)."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _shared(value):
    """numpy arrays -> tensors, which travel to the ranks through shared memory instead of a pipe."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value


_KEYS = itertools.count()


# ---------------------------------------------------------------------------------------------
# the calling process's handle


class SpawnedDataParallelTrainer:
    """The `torch_ref.train.Trainer` API in the calling process, run data-parallel by a
    `DataParallelTrainer` in each of `devices` spawned rank processes (or in `processes`, which
    several trainers may share and which the caller then closes).

    `model` and `optimizer` (a picklable factory, as `torch_ref.train`'s optimizer functions make)
    are copied into every rank. `model` and `optimizer` here are host copies of rank 0's: read them
    for weights and optimizer state; what is written into them (a checkpoint, parity.convert's
    loaders) is sent to every rank before the next call.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, *, devices: int | None = None,
                 processes: RankProcesses | None = None, dense_refeeding: bool = False, device: str = "cpu",
                 timeout: float | None = None, threads_per_process: int | None = None):
        if (devices is None) == (processes is None):
            raise ValueError("give either devices (processes are started and owned here) or processes")
        self.processes = processes or RankProcesses(devices, device=device, timeout=timeout,
                                                    threads_per_process=threads_per_process)
        self._owns_processes = processes is None
        self.dense_refeeding = dense_refeeding
        self._key = next(_KEYS)
        self._host_model = copy.deepcopy(model).cpu()
        self._host_optimizer = optimizer(self._host_model.parameters())
        self._host_current = True  # the host copies hold the ranks' state
        self._host_lent = False  # the caller was handed the host copies and may have written into them
        self.processes.run(_build, self._key, pickle.dumps(model), optimizer, dense_refeeding)

    @property
    def n_devices(self) -> int:
        return self.processes.n_processes

    # the Trainer API

    def put(self, array) -> Tensor:
        """`array` (e.g. the dense training matrix) in shared memory: pass the result to `train_epoch`
        every epoch, and the ranks read it in place instead of receiving a copy each time."""
        return torch.as_tensor(array).share_memory_()

    def train_step(self, batch, masks: StepMasks = StepMasks()) -> np.ndarray:
        return self._train("train_step", _shared(batch), StepMasks(*(_shared(m) for m in masks)))

    def train_epoch(self, matrix, batches: Sequence[np.ndarray], masks: StepMasks = StepMasks()) -> np.ndarray:
        return self._train("train_epoch", _shared(matrix), list(batches), StepMasks(*(_shared(m) for m in masks)))

    train_epoch_stepwise = train_epoch  # an eager epoch is one step per batch already

    def score(self, batch) -> np.ndarray:
        """Model outputs (dropout off) for a dense batch, computed on rank 0."""
        self._send_host_edits()
        return self.processes.run(_call, self._key, "score", _shared(batch), ranks=[0])[0]

    def code(self, batch) -> np.ndarray:
        """The code layer (dropout off) for a dense batch, computed on rank 0."""
        self._send_host_edits()
        return self.processes.run(_call, self._key, "code", _shared(batch), ranks=[0])[0]

    @property
    def model(self) -> nn.Module:
        """Rank 0's model (a host copy; what is written into it reaches every rank before the next call)."""
        self._fetch()
        return self._host_model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """Rank 0's optimizer state, on a host optimizer over `model` (writes reach every rank too)."""
        self._fetch()
        return self._host_optimizer

    def replica_max_difference(self) -> float:
        """max |a - b| over every parameter and optimizer-state entry between any rank and rank 0."""
        return max(self.processes.run(_call, self._key, "replica_max_difference"))

    def epoch_seconds(self, matrix, epochs: Sequence[tuple[Sequence[np.ndarray], StepMasks]]) -> list[float]:
        """Train one epoch per (batches, masks); -> rank 0's seconds per epoch (see `epoch_seconds`)."""
        self._send_host_edits()
        self._host_current = False
        epochs = [(list(batches), StepMasks(*(_shared(m) for m in masks))) for batches, masks in epochs]
        return self.processes.run(_timed_epochs, self._key, _shared(matrix), epochs, ranks=None)[0]

    def close(self) -> None:
        """Drop the ranks' trainer; stop the processes if this trainer started them."""
        if self._owns_processes:
            self.processes.close()
        elif self.processes._finalizer.alive:
            self.processes.run(_drop, self._key)

    def __enter__(self) -> SpawnedDataParallelTrainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # the host copies

    def _train(self, method: str, *args) -> np.ndarray:
        self._send_host_edits()
        self._host_current = False
        return self.processes.run(_call, self._key, method, *args)[0]

    def _fetch(self) -> None:
        if not self._host_current:
            model_state, optimizer_state = self.processes.run(_state, self._key, ranks=[0])[0]
            self._host_model.load_state_dict(model_state)
            load_optimizer_state(self._host_optimizer, optimizer_state)
            self._host_current = True
        self._host_lent = True

    def _send_host_edits(self) -> None:
        if self._host_lent:
            self.processes.run(_load_state, self._key, self._host_model.state_dict(),
                               self._host_optimizer.state_dict())
            self._host_lent = False


def data_parallel_trainer(model: nn.Module, optimizer: OptimizerFactory, *, devices: int,
                          dense_refeeding: bool = False, device: str = "cpu", timeout: float | None = None,
                          threads_per_process: int | None = None) -> SpawnedDataParallelTrainer:
    """A `SpawnedDataParallelTrainer` on `devices` new rank processes (the name `jax_impl.distributed`
    shares; `device`, `timeout`, `threads_per_process` as `RankProcesses` takes them). Close it (or use
    it as a context manager) to stop them."""
    return SpawnedDataParallelTrainer(model, optimizer, devices=devices, dense_refeeding=dense_refeeding,
                                      device=device, timeout=timeout, threads_per_process=threads_per_process)


def epoch_seconds(model: nn.Module, optimizer: OptimizerFactory, matrix,
                  epochs: Sequence[tuple[Sequence[np.ndarray], StepMasks]], *, devices: int,
                  dense_refeeding: bool = False, device: str = "cpu", timeout: float | None = None,
                  threads_per_process: int | None = None) -> np.ndarray:
    """Train on `devices` rank processes for one epoch per (batches, masks) of `epochs`; -> rank 0's
    wall-clock seconds of each epoch, from a barrier to the all-reduced losses (process start-up and
    the transfer of the inputs excluded; the matrix is put on each device once). The first epoch
    includes warm-up: report it apart. Throughput is rows per epoch / seconds.

    On CPU the ranks share the cores: by default each gets cores // devices torch threads, so every
    device count uses the same number of threads in all."""
    with data_parallel_trainer(model, optimizer, devices=devices, dense_refeeding=dense_refeeding, device=device,
                               timeout=timeout, threads_per_process=threads_per_process) as trainer:
        return np.asarray(trainer.epoch_seconds(matrix, epochs))
