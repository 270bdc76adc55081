"""Training and scoring for the autoencoders (PyTorch eager): the reference for `jax_impl.train`,
consuming exactly the batches and dropout masks the caller hands in, in the order given.

    euclidean_optimizer(config) -> factory(params) -> torch.optim.Adam / SGD
    riemannian_optimizer(config) -> factory(params) -> geoopt.optim.RiemannianAdam / RiemannianSGD
    StepMasks(input, code, refeed_input, refeed_code)                dropout keep-masks, None = off
    Trainer(model, optimizer, *, dense_refeeding=False)              optimizer: a factory(params)
        .train_step(batch, masks) -> losses (k,)
        .train_epoch(matrix, batches, masks) -> losses (n_steps, k)
        .train_epoch_stepwise(...)  the same (named as jax_impl.train's)
        .score(batch) -> outputs (no dropout)
        .code(batch) -> the code layer (the model's `encode`, no dropout)
        .model, .optimizer
    (torch_ref.distributed.DataParallelTrainer: the same with DistributedDataParallel, one process per device)

Sparse input: `matrix` a CSR matrix (scipy.sparse) instead of a dense array, `batch` a
`torch_ref.sparse.SparseRows`; the same batches, masks and losses (see `jax_impl.train`).

A train step (DeepRecommender's, Kuchaiev & Ginsburg 2017):

    y = model(x; masks);  loss(y, x);  one optimizer step
    with dense re-feeding: x' = y.detach();  y' = model(x'; refeed masks);  loss(y', x');
    a second optimizer step (x' is both the new input and the target)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from parity.config import OptimizerConfig, euclidean_optimizer_problems
from torch_ref import optim, sparse
from torch_ref.sparse import SparseRows

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def euclidean_optimizer(config: OptimizerConfig) -> OptimizerFactory:
    """torch.optim.Adam or SGD from the options `jax_impl.train.euclidean_optimizer` reads (a picklable
    factory: a spawned process can build it)."""
    problems = euclidean_optimizer_problems(config)
    if problems:
        raise ValueError("; ".join(problems) + " (torch_ref.optim's Riemannian optimizers take it)")
    if config.name == "adam":
        return functools.partial(torch.optim.Adam, lr=config.learning_rate, betas=(config.b1, config.b2),
                                 eps=config.eps, weight_decay=config.weight_decay)
    return functools.partial(torch.optim.SGD, lr=config.learning_rate, momentum=config.momentum,
                             nesterov=config.nesterov, weight_decay=config.weight_decay)


def riemannian_optimizer(config: OptimizerConfig, *, curvature: Callable | None = None) -> OptimizerFactory:
    """geoopt's RiemannianAdam / RiemannianSGD from the same options (`torch_ref.optim.from_config`):
    ball parameters (geoopt ManifoldParameters) move along the ball, the rest as torch.optim would.

    `curvature` is accepted for symmetry with `jax_impl.train` and unused: geoopt reads a learnable
    ball's current c from the parameters' manifold itself."""
    del curvature
    return optim.from_config(config)


class StepMasks(NamedTuple):
    """Dropout keep-masks (bool) for one step, or for a whole epoch stacked along the first axis in
    the order the rows are consumed. None switches that dropout off."""

    input: Any = None
    code: Any = None
    refeed_input: Any = None
    refeed_code: Any = None


def _as_tensor(value, device: torch.device) -> Tensor | None:
    if value is None:
        return None
    return torch.as_tensor(value, device=device)


def _on_device(batch, device: torch.device):
    """A dense batch or a `SparseRows` (numpy or tensors) as tensors on `device`."""
    if isinstance(batch, SparseRows):
        return sparse.to_device(batch, device)
    return _as_tensor(batch, device)


def _slice_masks(masks: StepMasks, start: int, stop: int) -> StepMasks:
    return StepMasks(*(None if m is None else m[start:stop] for m in masks))


class Trainer:
    """A model, its optimizer, and the step / epoch loops that update them."""

    def __init__(self, model: nn.Module, optimizer: OptimizerFactory, *, dense_refeeding: bool = False):
        self.model = model
        self.optimizer = optimizer(model.parameters())
        self.dense_refeeding = dense_refeeding
        self.device = next(model.parameters()).device

    def _update(self, inputs: Tensor, input_keep: Tensor | None, code_keep: Tensor | None) -> tuple[Tensor, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        output = self.model(inputs, input_keep=input_keep, code_keep=code_keep)
        loss = self.model.loss(output, inputs)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), output.detach()

    def _step(self, batch: Tensor | SparseRows, masks: StepMasks) -> Tensor:
        self.model.train()
        loss, output = self._update(batch, masks.input, masks.code)
        losses = [loss]
        if self.dense_refeeding:
            refed = output  # detached: the re-fed output is both the new input and the target
            loss, _ = self._update(refed, masks.refeed_input, masks.refeed_code)
            losses.append(loss)
        return torch.stack(losses)

    def train_step(self, batch, masks: StepMasks = StepMasks()) -> np.ndarray:
        """One step (two with dense re-feeding) on a dense (batch, n_items) array or a `SparseRows` (which
        carries its input keep-mask: `masks.input` must then be None); -> losses (k,)."""
        masks = StepMasks(*(_as_tensor(m, self.device) for m in masks))
        if isinstance(batch, SparseRows):  # one process: the sparse layout is not split over ranks
            return self._step(_on_device(batch, self.device), masks).cpu().numpy()
        batch, masks = self._share(_as_tensor(batch, self.device), masks)
        return self._total(self._step(batch, masks)).cpu().numpy()

    def train_epoch(self, matrix, batches: Sequence[np.ndarray], masks: StepMasks = StepMasks()) -> np.ndarray:
        """Train on `matrix[batch]` for each batch in order; -> losses (n_steps, k).

        `matrix` is the dense (n_rows, n_items) training matrix (a tensor on the model's device, made
        once); `masks` stack the keep-masks of the whole epoch along the rows in the order consumed.
        """
        if sparse.is_sparse_matrix(matrix):
            return self._sparse_epoch(matrix, batches, masks)
        matrix = _as_tensor(matrix, self.device)
        masks = StepMasks(*(_as_tensor(m, self.device) for m in masks))
        if not batches:
            return np.zeros((0, 2 if self.dense_refeeding else 1))
        losses, start = [], 0
        for rows in batches:
            own_rows, step_masks = self._share(rows, _slice_masks(masks, start, start + len(rows)))
            index = torch.as_tensor(own_rows, device=self.device)
            losses.append(self._step(matrix[index], step_masks))
            start += len(rows)
        return self._total(torch.stack(losses)).cpu().numpy()  # one device sync per epoch

    # an eager epoch is one step per batch already: the name mirrors jax_impl.train.Trainer's
    train_epoch_stepwise = train_epoch

    def _sparse_epoch(self, matrix, batches: Sequence[np.ndarray], masks: StepMasks) -> np.ndarray:
        """`train_epoch` on a CSR `matrix`: each batch laid out as `SparseRows` (numpy, the input keep-mask
        read at its entries) and moved to the device as it is consumed."""
        if not batches:
            return np.zeros((0, 2 if self.dense_refeeding else 1))
        config = getattr(self.model, "config", None)
        input_keep = masks.input if config is not None and config.input_dropout else None
        if torch.is_tensor(input_keep):
            input_keep = input_keep.cpu().numpy()
        masks = StepMasks(None, *(_as_tensor(m, self.device) for m in masks[1:]))  # input: in the batches
        dtype = torch.empty((), dtype=next(self.model.parameters()).dtype).numpy().dtype
        losses, start = [], 0
        for rows in batches:
            stop = start + len(rows)
            batch = sparse.sparse_rows(matrix, rows, input_keep=None if input_keep is None else input_keep[start:stop],
                                       dtype=dtype)
            losses.append(self._step(sparse.to_device(batch, self.device), _slice_masks(masks, start, stop)))
            start = stop
        return torch.stack(losses).cpu().numpy()  # one device sync per epoch

    # One process trains on every row of a batch. `torch_ref.distributed.DataParallelTrainer` overrides
    # these two: each process takes its block of every batch and the losses are summed over processes.

    def _share(self, rows, masks: StepMasks):
        """This process's part of a global batch (its rows, or their indices) and of its masks."""
        return rows, masks

    def _total(self, losses: Tensor) -> Tensor:
        """The global batch's losses from this process's `_step` results."""
        return losses

    @torch.no_grad()
    def score(self, batch) -> np.ndarray:
        """Model outputs for a dense (batch, n_items) array or a `SparseRows`, dropout off."""
        self.model.eval()
        return self.model(_on_device(batch, self.device)).cpu().numpy()

    @torch.no_grad()
    def code(self, batch) -> np.ndarray:
        """The code layer (`model.encode`) for a dense (batch, n_items) array or a `SparseRows`, dropout off."""
        self.model.eval()
        return self.model.encode(_on_device(batch, self.device)).cpu().numpy()
