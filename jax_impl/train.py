"""Training and scoring for the autoencoders (JAX): a jitted step, and a whole epoch as one
compiled program (`lax.scan` over the batches), consuming exactly the batches and dropout masks
the caller hands in, in the order given, so that `torch_ref.train` can be fed the same.

    euclidean_optimizer(config) -> optax.GradientTransformation     Adam / SGD, torch.optim semantics
    riemannian_optimizer(config) -> optax.GradientTransformation    geoopt's Riemannian Adam / SGD
    StepMasks(input, code, refeed_input, refeed_code)                dropout keep-masks, None = off
    Trainer(model, optimizer, *, dense_refeeding=False, apply_updates=None)
        .train_step(batch, masks) -> losses (k,)
        .train_epoch(matrix, batches, masks) -> losses (n_steps, k)
        .train_epoch_stepwise(matrix, batches, masks) -> the same, one jitted step per batch
        .score(batch) -> outputs (no dropout)
        .code(batch) -> the code layer (the model's `encode`, no dropout)
        .model, .params, .opt_state
    (jax_impl.distributed.DataParallelTrainer: the same over a mesh of devices, the batch rows sharded)

Sparse input: `matrix` a CSR matrix (scipy.sparse) instead of a dense array, `batch` a
`jax_impl.sparse.SparseRows`; the same batches, masks and losses. The first layer then reads the
nonzeros only (`jax_impl.sparse.matmul`) and the loss the target's nonzeros; dense re-feeding feeds
the dense output back, so its second step is the dense one.

k is 1, or 2 with dense re-feeding (the second loss is the re-fed step's). The optimizer is an
argument, so the hyperbolic model reuses all of this with a Riemannian optax transformation
(`riemannian_optimizer`) and `jax_impl.optim.apply_updates`, which the Trainer picks by itself for a
model with parameters on the ball.

A train step (DeepRecommender's, Kuchaiev & Ginsburg 2017):

    y = model(x; masks);  loss(y, x);  one optimizer step
    with dense re-feeding: x' = stop_gradient(y);  y' = model(x'; refeed masks);  loss(y', x');
    a second optimizer step (x' is both the new input and the target)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jax_impl import optim, sparse
from jax_impl.sparse import SparseRows
from parity.config import OptimizerConfig, euclidean_optimizer_problems

Array = jax.Array


def euclidean_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """optax's Adam or SGD with torch.optim's semantics for the same options.

    Adam: optax.adam and torch.optim.Adam agree term for term (eps added after the bias-corrected
    square root; both bias corrections). SGD: optax.sgd's trace starts from g, as torch's momentum
    buffer does. weight_decay is torch's coupled L2 (wd * p added to the gradient before the
    optimizer), i.e. optax.add_decayed_weights first in the chain.
    """
    problems = euclidean_optimizer_problems(config)
    if problems:  # e.g. amsgrad: optax maxes the bias-corrected second moment, torch the raw one
        raise ValueError("; ".join(problems) + " (jax_impl.optim's Riemannian optimizers take it)")
    if config.name == "adam":
        transform = optax.adam(config.learning_rate, b1=config.b1, b2=config.b2, eps=config.eps)
    else:
        transform = optax.sgd(config.learning_rate, momentum=config.momentum or None, nesterov=config.nesterov)
    if config.weight_decay:
        transform = optax.chain(optax.add_decayed_weights(config.weight_decay), transform)
    return transform


def riemannian_optimizer(config: OptimizerConfig, *, curvature: Callable | None = None) -> optax.GradientTransformation:
    """`jax_impl.optim`'s Riemannian Adam / SGD: geoopt's update rules, for ball and Euclidean
    parameters alike; the ball parameters are the model's `BallParam`s (a `Trainer` of such a model
    applies the updates with `jax_impl.optim.apply_updates`, which puts a ball parameter's new point
    in place).

    `curvature`, for a learnable curvature: params -> the current c (e.g.
    `jax_impl.models.learned_curvature`); every step then moves the ball parameters on the ball of
    that c, the one the forward pass used (geoopt reads its learnable ball's c the same way)."""
    transform = optim.from_config(config)
    if curvature is None:
        return transform

    def is_label(x):
        return x is None or isinstance(x, optim.PoincareBall)

    def update(grads, state, params=None, **extra_args):
        c = curvature(params)
        labels = jax.tree.map(lambda label: None if label is None else optim.PoincareBall(c),
                              optim.manifolds_of(params), is_leaf=is_label)
        return transform.update(grads, state, params, manifolds=labels)

    return optax.GradientTransformationExtraArgs(transform.init, update)


class StepMasks(NamedTuple):
    """Dropout keep-masks (bool) for one step, or for a whole epoch stacked along the first axis in
    the order the rows are consumed. None switches that dropout off."""

    input: Any = None
    code: Any = None
    refeed_input: Any = None
    refeed_code: Any = None


def _loss_and_output(params, graphdef, rest, inputs, target, input_keep, code_keep):
    model = nnx.merge(graphdef, params, rest)
    output = model(inputs, input_keep=input_keep, code_keep=code_keep)
    return model.loss(output, target), output


# graphdef, optimizer, apply_updates and dense_refeeding are static: trainers that share them (same
# model structure, same optimizer object) share the compiled programs. params and opt_state are
# donated: XLA writes the new ones over the old buffers instead of allocating fresh ones every step
# (the Trainer replaces its references with the results and copies the model's arrays at the start)
_STATIC = ("graphdef", "optimizer", "apply_updates", "dense_refeeding")

# Sparse input: when an epoch's batches outgrow the padded shapes, the new shapes get this much room (and
# the program compiles again); a batch of a new size (the short last one) starts from the full batches'
# room. Measured on ML-1M (hae-neumf, 40 epochs' batch orders and keep-masks): without room the shapes
# grew at the second epoch, and the short last batch's at the eighth (a recompilation inside a timed
# epoch); with 1.125 and the full batches' room neither grew (1.0625 was not enough). PyTorch has no
# compiled shapes: torch_ref pads nothing.
SPARSE_HEADROOM = 1.125


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnums=(0, 1))
def _train_step(params, opt_state, rest, batch, masks: StepMasks, *, graphdef, optimizer, apply_updates,
                dense_refeeding):
    grad_fn = jax.value_and_grad(_loss_and_output, has_aux=True)
    (loss, output), grads = grad_fn(params, graphdef, rest, batch, batch, masks.input, masks.code)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = apply_updates(params, updates)
    losses = [loss]
    if dense_refeeding:
        refed = jax.lax.stop_gradient(output)  # the re-fed output is both the new input and the target
        (loss, _), grads = grad_fn(params, graphdef, rest, refed, refed, masks.refeed_input, masks.refeed_code)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = apply_updates(params, updates)
        losses.append(loss)
    return params, opt_state, jnp.stack(losses)


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnums=(0, 1))
def _gather_step(params, opt_state, rest, matrix, rows, masks, **static):
    return _train_step(params, opt_state, rest, matrix[rows], masks, **static)


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnums=(0, 1))
def _scan_epoch(params, opt_state, rest, matrix, rows, masks, **static):
    """rows: (n_steps, batch_size); masks: StepMasks of (n_steps, batch_size, width) arrays."""

    def body(carry, step_inputs):
        step_rows, step_masks = step_inputs
        params, opt_state, losses = _gather_step(*carry, rest, matrix, step_rows, step_masks, **static)
        return (params, opt_state), losses

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (rows, masks))
    return params, opt_state, losses


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnums=(0, 1))
def _scan_steps(params, opt_state, rest, batches, masks, **static):
    """batches: a pytree (a `SparseRows`) stacked along (n_steps,); masks: StepMasks of (n_steps, ...) arrays."""

    def body(carry, step_inputs):
        step_batch, step_masks = step_inputs
        params, opt_state, losses = _train_step(*carry, rest, step_batch, step_masks, **static)
        return (params, opt_state), losses

    (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (batches, masks))
    return params, opt_state, losses


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _forward(params, rest, batch, *, graphdef):
    return nnx.merge(graphdef, params, rest)(batch)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _encode(params, rest, batch, *, graphdef):
    return nnx.merge(graphdef, params, rest).encode(batch)


def _on_device(batch):
    """A dense batch or a `SparseRows` (numpy or JAX arrays) as JAX arrays."""
    if isinstance(batch, SparseRows):
        return sparse.to_device(batch)
    return jnp.asarray(batch)


def _slice_masks(masks: StepMasks, start: int, stop: int) -> StepMasks:
    return StepMasks(*(None if m is None else m[start:stop] for m in masks))


def _stack_masks(masks: StepMasks, n_steps: int, batch_size: int) -> StepMasks:
    return StepMasks(
        *(None if m is None else jnp.reshape(m[: n_steps * batch_size], (n_steps, batch_size, -1)) for m in masks)
    )


class Trainer:
    """Parameters and optimizer state of one model, and the compiled programs that update them."""

    def __init__(self, model: nnx.Module, optimizer: optax.GradientTransformation, *, dense_refeeding: bool = False,
                 apply_updates: Callable | None = None):
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.params = jax.tree.map(jnp.copy, self.params)  # the steps donate these buffers; `model` keeps its own
        if apply_updates is None:  # a model with parameters on the ball needs the Riemannian apply
            has_ball = any(isinstance(v, optim.BallParam)
                           for v in jax.tree.leaves(self.params, is_leaf=lambda x: isinstance(x, nnx.Variable)))
            apply_updates = optim.apply_updates if has_ball else optax.apply_updates
        self.optimizer = optimizer
        self.opt_state = optimizer.init(self.params)
        self.dense_refeeding = dense_refeeding
        self._static = dict(graphdef=self.graphdef, optimizer=optimizer, apply_updates=apply_updates,
                            dense_refeeding=dense_refeeding)
        self._config = getattr(model, "config", None)
        self._dtype = np.dtype(jax.tree.leaves(self.params)[0].dtype)
        self._sparse_sizes: dict[int, sparse.SparseSizes] = {}  # per batch size: shapes only grow, compiles repeat

    @property
    def model(self) -> nnx.Module:
        """The model with the current parameters (a fresh module; editing it does not train)."""
        return nnx.merge(self.graphdef, self.params, self.rest)

    def train_step(self, batch, masks: StepMasks = StepMasks()) -> np.ndarray:
        """One step (two with dense re-feeding) on a dense (batch, n_items) array or a `SparseRows` (which
        carries its input keep-mask: `masks.input` must then be None); -> losses (k,)."""
        if isinstance(batch, SparseRows):  # one device: the sparse layout is not split over a mesh
            batch, masks = _on_device(batch), StepMasks(*(None if m is None else jnp.asarray(m) for m in masks))
        else:
            batch, masks = self._put_rows((batch, StepMasks(*masks)))
        self.params, self.opt_state, losses = self._program(_train_step)(self.params, self.opt_state, self.rest, batch,
                                                                         masks)
        return np.asarray(losses)

    def train_epoch(self, matrix, batches: Sequence[np.ndarray], masks: StepMasks = StepMasks()) -> np.ndarray:
        """Train on `matrix[batch]` for each batch in order; -> losses (n_steps, k).

        `matrix` is the dense (n_rows, n_items) training matrix, ideally already on the device
        (`jnp.asarray` once, not per epoch); `masks` stack the keep-masks of the whole epoch along
        the rows in the order consumed. The equal-sized batches run as one `lax.scan`; a short last
        batch (or any batch of another size) runs as its own step, so the order never changes.

        `matrix` a CSR matrix (scipy.sparse, on the host): the epoch's batches are laid out as
        `SparseRows` in numpy (the input keep-mask read at their entries), padded to one shape and moved
        to the device once; the scan then runs over them. The padding only grows from epoch to epoch
        (`sparse.bucket`), so the compiled program is reused.
        """
        return self._epoch(matrix, batches, masks, scan=True)

    def train_epoch_stepwise(self, matrix, batches: Sequence[np.ndarray], masks: StepMasks = StepMasks()) -> np.ndarray:
        """`train_epoch` as one jitted step per batch, as an eager loop runs it: the steps are dispatched
        without waiting (the losses stay on the device until the end), rows gathered on the device.
        Same arguments, same result; the bench's jax-jit arm."""
        return self._epoch(matrix, batches, masks, scan=False)

    def _epoch(self, matrix, batches: Sequence[np.ndarray], masks: StepMasks, *, scan: bool) -> np.ndarray:
        if not batches:
            return np.zeros((0, 2 if self.dense_refeeding else 1))
        if sparse.is_sparse_matrix(matrix):
            return self._sparse_epoch(matrix, batches, masks, scan=scan)
        matrix = self._put(matrix)
        masks = self._put(StepMasks(*masks))
        batch_size = len(batches[0])
        n_scanned = next((i for i, b in enumerate(batches) if len(b) != batch_size), len(batches)) if scan else 0
        pieces = []
        if n_scanned:
            rows, stacked = self._put_rows((np.stack(batches[:n_scanned]), _stack_masks(masks, n_scanned, batch_size)),
                                           axis=1)
            self.params, self.opt_state, losses = self._program(_scan_epoch)(
                self.params, self.opt_state, self.rest, matrix, rows, stacked)
            pieces.append(losses)
        start = n_scanned * batch_size
        for rows in batches[n_scanned:]:  # one jitted step each, dispatched without waiting
            step_rows, step_masks = self._put_rows((np.asarray(rows), _slice_masks(masks, start, start + len(rows))))
            self.params, self.opt_state, losses = self._program(_gather_step)(
                self.params, self.opt_state, self.rest, matrix, step_rows, step_masks)
            pieces.append(losses[None])
            start += len(rows)
        return np.asarray(jnp.concatenate(pieces))

    def _sparse_batches(self, matrix, batches: Sequence[np.ndarray], input_keep, *, stacked: bool):
        """`SparseRows` of `batches` (equal sizes when `stacked`), padded at least as the last ones of
        their size were, keep-mask read at the entries when the model has input dropout."""
        if self._config is None or not self._config.input_dropout:
            input_keep = None
        elif input_keep is not None:
            input_keep = np.asarray(input_keep)
        size = len(batches[0])
        at_least = self._sparse_sizes.get(size)
        if at_least is None and self._sparse_sizes:  # e.g. a short last batch: the full batches' room fits it
            at_least = sparse.SparseSizes(*(max(sizes) for sizes in zip(*self._sparse_sizes.values())))
        if stacked:
            out = sparse.epoch_sparse_rows(matrix, batches, input_keep=input_keep, dtype=self._dtype,
                                           at_least=at_least, headroom=SPARSE_HEADROOM)
        else:
            out = sparse.sparse_rows(matrix, batches[0], input_keep=input_keep, dtype=self._dtype,
                                     at_least=at_least, headroom=SPARSE_HEADROOM)
        self._sparse_sizes[size] = out.sizes
        return _on_device(out)

    def _sparse_epoch(self, matrix, batches: Sequence[np.ndarray], masks: StepMasks, *, scan: bool) -> np.ndarray:
        input_keep = masks.input
        masks = StepMasks(None, *(None if m is None else jnp.asarray(m) for m in masks[1:]))  # input: in the batches
        batch_size = len(batches[0])
        n_scanned = next((i for i, b in enumerate(batches) if len(b) != batch_size), len(batches)) if scan else 0
        pieces = []
        if n_scanned:
            n_rows = n_scanned * batch_size
            stacked = self._sparse_batches(matrix, batches[:n_scanned],
                                           None if input_keep is None else input_keep[:n_rows], stacked=True)
            self.params, self.opt_state, losses = _scan_steps(
                self.params, self.opt_state, self.rest, stacked, _stack_masks(masks, n_scanned, batch_size),
                **self._static)
            pieces.append(losses)
        start = n_scanned * batch_size
        for rows in batches[n_scanned:]:  # one jitted step each, dispatched without waiting
            stop = start + len(rows)
            batch = self._sparse_batches(matrix, [rows], None if input_keep is None else input_keep[start:stop],
                                         stacked=False)
            self.params, self.opt_state, losses = _train_step(
                self.params, self.opt_state, self.rest, batch, _slice_masks(masks, start, stop), **self._static)
            pieces.append(losses[None])
            start = stop
        return np.asarray(jnp.concatenate(pieces))

    def score(self, batch) -> np.ndarray:
        """Model outputs for a dense (batch, n_items) array or a `SparseRows`, dropout off."""
        batch = _on_device(batch) if isinstance(batch, SparseRows) else self._put_rows(batch)
        return np.asarray(_forward(self.params, self.rest, batch, graphdef=self.graphdef))

    def code(self, batch) -> np.ndarray:
        """The code layer (`model.encode`) for a dense (batch, n_items) array or a `SparseRows`, dropout off."""
        batch = _on_device(batch) if isinstance(batch, SparseRows) else self._put_rows(batch)
        return np.asarray(_encode(self.params, self.rest, batch, graphdef=self.graphdef))

    # Where arrays go and which program runs them. One device here: every array on the default device,
    # the jitted functions above as they are. `jax_impl.distributed.DataParallelTrainer` overrides these
    # three to replicate the state and shard the rows of every batch over a device mesh.

    def _put(self, tree):
        """Arrays every step reads whole (the training matrix, an epoch's masks) -> device arrays."""
        return jax.tree.map(jnp.asarray, tree)

    def _put_rows(self, tree, axis: int = 0):
        """Arrays whose `axis` runs over a batch's rows (a batch, its row indices, its masks) -> device arrays."""
        return jax.tree.map(jnp.asarray, tree)

    def _program(self, step: Callable) -> Callable:
        """`step` (`_train_step`, `_gather_step` or `_scan_epoch`) with this trainer's static arguments."""
        return functools.partial(step, **self._static)
