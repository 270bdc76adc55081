r"""Sparse user rows for the autoencoders' first layer (PyTorch): the reference for `jax_impl.sparse`.

    W h = \sum_{i : h_i \ne 0} h_i W_{:, i}                   (out,) for each row, W (out, n_items)

computed by ``torch.nn.functional.embedding_bag(mode="sum", per_sample_weights=h)`` over the rows of
:math:`W^T`; the weight gradient :math:`\partial L / \partial W^T = X^T G` by ``torch.sparse.mm`` with the
batch transposed (CSR by item, from the builder). No dense (batch, n_items) product is formed.
(embedding_bag's own backward sorts the entries' items every step: in the train step on ML-1M shapes
that sort of 49k entries took 190-290 ms, measured with torch's profiler; embedding_bag's forward and
this product together take ~11 ms of CPU.)

    SparseRows(indptr, rows, items, values, keep, item_order, item_indptr)
    sparse_rows(matrix, rows, ...) -> SparseRows (numpy)          one batch of a CSR matrix
    to_device(batch, device) -> SparseRows of tensors
    matmul(batch, values, weight) -> (n_rows, out)
    row_sums(batch, x), at_entries(batch, dense), to_dense(batch, n_items)

The first five fields are those of `jax_impl.sparse.SparseRows`, built by the same numpy code (mirrored
here, as the two sides import nothing of each other): the batch's CSR and its entries in CSR order,
padded at the end with entries (last row, item 0, value 0, not kept) to `bucket(nnz + 1)`. Each side
adds the layout of its own kernels: the JAX side fixed-width chunks, this one the entries ordered by
item (eager PyTorch takes any shape; the padding entries join the last row's bag and item 0's
column and add exact zeros).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SparseRows", "sparse_rows", "to_device", "matmul", "row_sums", "at_entries", "to_dense", "bucket",
           "is_sparse_matrix"]


class SparseRows(NamedTuple):
    """A batch of rows of a sparse matrix (see the module docstring)."""

    indptr: Any  # (n_rows + 1,) int: row r's entries are [indptr[r], indptr[r + 1])
    rows: Any  # (n_entries,) int: the batch row of each entry, nondecreasing; padding on the last row
    items: Any  # (n_entries,) int: the column of each entry; padding 0
    values: Any  # (n_entries,) float: the value of each entry; padding 0
    keep: Any  # (n_entries,) bool: the input dropout keep-mask at the entries (padding False); None: no dropout
    # this side's kernel layout: the batch transposed, X^T as a CSR matrix (n_items, n_rows)
    item_order: Any = None  # (n_entries,) int: the entries ordered by item (stable; padding under item 0)
    item_indptr: Any = None  # (n_items + 1,) int: item i's entries are item_order[item_indptr[i]:item_indptr[i + 1]]

    @property
    def n_rows(self) -> int:
        return self.indptr.shape[-1] - 1


def is_sparse_matrix(matrix: Any) -> bool:
    """A CSR matrix (scipy.sparse's csr_matrix / csr_array, or anything with indptr, indices, data, shape)."""
    return all(hasattr(matrix, name) for name in ("indptr", "indices", "data", "shape"))


def bucket(n: int) -> int:
    """``n`` rounded up to a multiple of 2^(bit_length(n) - 5) (`jax_impl.sparse.bucket`)."""
    step = 1 << max(n.bit_length() - 5, 0)
    return -(-n // step) * step


class _Entries(NamedTuple):
    """The nonzeros of a run of equal-sized batches, in CSR order, numbered through the whole run."""

    n_steps: int
    n_rows: int  # per batch
    step: np.ndarray  # (n,) the batch of each entry, nondecreasing
    row: np.ndarray  # (n,) its row within the batch
    items: np.ndarray  # (n,) int64
    values: np.ndarray  # (n,)
    keep: np.ndarray | None  # (n,) bool
    position: np.ndarray  # (n,) its position within its batch's entries
    indptr: np.ndarray  # (n_steps, n_rows + 1)


def _entries(matrix, batches, input_keep) -> _Entries:
    """The batches' rows of the CSR `matrix` as entries (vectorised over the whole run: one pass of
    numpy per epoch, not one per batch), explicit zeros dropped (the dense masked loss counts only
    nonzero targets), the keep-mask read at the entries."""
    n_steps, n_rows = len(batches), len(batches[0])
    if n_rows == 0:
        raise ValueError("a batch needs at least one row")
    if any(len(rows) != n_rows for rows in batches):
        raise ValueError("batches laid out together need one size")
    rows = np.concatenate([np.asarray(r, np.int64) for r in batches])
    indptr = np.asarray(matrix.indptr, np.int64)
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    first = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=first[1:])
    source = np.repeat(starts - first[:-1], lengths) + np.arange(first[-1])  # run entry -> matrix entry
    owner = np.repeat(np.arange(len(rows)), lengths)  # the run's row of each entry
    items = np.asarray(matrix.indices)[source].astype(np.int64)
    values = np.asarray(matrix.data)[source]
    if not getattr(matrix, "has_canonical_format", False):  # scipy's flag: columns sorted, no duplicates
        order = np.lexsort((items, owner))
        owner, items, values = owner[order], items[order], values[order]
        if np.any((np.diff(owner) == 0) & (np.diff(items) == 0)):
            raise ValueError("the matrix has duplicate entries in a row: call sum_duplicates() first")
    nonzero = values != 0
    if not nonzero.all():
        owner, items, values = owner[nonzero], items[nonzero], values[nonzero]
    keep = None
    if input_keep is not None:
        input_keep = np.asarray(input_keep)
        if input_keep.shape != (len(rows), int(matrix.shape[1])):
            raise ValueError(f"input_keep has shape {input_keep.shape}, expected {(len(rows), int(matrix.shape[1]))}")
        keep = input_keep.reshape(-1)[owner * input_keep.shape[1] + items].astype(bool)
    per_row = np.bincount(owner, minlength=len(rows)).reshape(n_steps, n_rows)
    batch_indptr = np.zeros((n_steps, n_rows + 1), np.int64)
    np.cumsum(per_row, axis=1, out=batch_indptr[:, 1:])
    step = owner // n_rows
    step_first = np.concatenate([[0], np.cumsum(batch_indptr[:, -1])])
    return _Entries(n_steps, n_rows, step, owner % n_rows, items, values, keep,
                    np.arange(len(items)) - step_first[step], batch_indptr)


def sparse_rows(matrix, rows, *, input_keep=None, dtype: Any = np.float32) -> SparseRows:
    """The rows `rows` of the CSR `matrix` (n_rows_total, n_items) as a `SparseRows` of numpy arrays.

    `input_keep`: the input dropout keep-mask of these rows, dense (len(rows), n_items) bool, as the
    dense path takes it (only for a model with input dropout > 0); it is read at the entries.
    """
    e = _entries(matrix, [rows], input_keep)
    n_entries, n_items = bucket(len(e.items) + 1), int(matrix.shape[1])

    def padded(a, fill, kind=np.int32):
        out = np.full(n_entries, fill, kind)
        out[: len(a)] = a
        return out

    items = padded(e.items, 0)
    small = np.uint16 if n_items <= 1 << 16 else np.int64  # 16-bit keys: numpy's radix sort
    item_indptr = np.zeros(n_items + 1, np.int64)
    np.cumsum(np.bincount(items, minlength=n_items), out=item_indptr[1:])
    return SparseRows(indptr=e.indptr[0].astype(np.int32), rows=padded(e.row, e.n_rows - 1), items=items,
                      values=padded(e.values, 0, dtype), keep=None if e.keep is None else padded(e.keep, False, bool),
                      item_order=np.argsort(items.astype(small), kind="stable").astype(np.int32),
                      item_indptr=item_indptr.astype(np.int32))


def to_device(batch: SparseRows, device: torch.device | str | None = None) -> SparseRows:
    """A `SparseRows` of tensors on `device` (indices as int64, which torch's index ops take)."""
    def put(a, index: bool):
        if a is None:
            return None
        t = torch.as_tensor(a, device=device)
        return t.long() if index else t

    return SparseRows(put(batch.indptr, True), put(batch.rows, True), put(batch.items, True),
                      put(batch.values, False), put(batch.keep, False), put(batch.item_order, True),
                      put(batch.item_indptr, True))


def row_sums(batch: SparseRows, x: Tensor) -> Tensor:
    r""":math:`\sum_{e \in \text{row } r} x_e` for each row: (n_entries,) -> (n_rows,)."""
    return torch.zeros(batch.n_rows, dtype=x.dtype, device=x.device).index_add(0, batch.rows, x)


def at_entries(batch: SparseRows, dense: Tensor) -> Tensor:
    """A dense (n_rows, n_items) tensor read at the batch's entries: (n_entries,)."""
    return dense[batch.rows, batch.items]


def to_dense(batch: SparseRows, n_items: int) -> Tensor:
    """The batch as a dense (n_rows, n_items) tensor (padding adds exact zeros)."""
    out = torch.zeros(batch.n_rows, n_items, dtype=batch.values.dtype, device=batch.values.device)
    return out.index_put((batch.rows, batch.items), batch.values, accumulate=True)


class _Matmul(torch.autograd.Function):
    """W h from the entries (embedding_bag), its weight gradient X^T G (torch.sparse.mm)."""

    @staticmethod
    def forward(ctx, weight: Tensor, values: Tensor, batch: SparseRows) -> Tensor:
        ctx.batch = batch
        ctx.save_for_backward(weight, values)
        # over a contiguous W^T: on the transposed view embedding_bag reads each row across W's rows (5x slower)
        return F.embedding_bag(batch.items, weight.t().contiguous(), batch.indptr[:-1], mode="sum",
                               per_sample_weights=values)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, values = ctx.saved_tensors
        batch = ctx.batch
        d_weight = d_values = None
        if ctx.needs_input_grad[0]:
            with warnings.catch_warnings():  # torch calls its sparse CSR support beta
                warnings.simplefilter("ignore", UserWarning)
                transposed = torch.sparse_csr_tensor(batch.item_indptr, batch.rows[batch.item_order],
                                                     values[batch.item_order], (weight.shape[1], batch.n_rows))
                d_weight = torch.sparse.mm(transposed, grad).t()
        if ctx.needs_input_grad[1]:  # <g[row e], W[:, item e]> for the entries read (0 for dropped ones and padding)
            read = torch.arange(values.shape[0], device=values.device) < batch.indptr[-1]
            if batch.keep is not None:
                read = read & batch.keep
            d_values = torch.where(read, (grad[batch.rows] * weight.t()[batch.items]).sum(-1), 0.0)
        return d_weight, d_values, None


def matmul(batch: SparseRows, values: Tensor, weight: Tensor) -> Tensor:
    r""":math:`(W h_r)_r = \big(\sum_{e \in \text{row } r} \text{values}_e\, W_{:, \text{item}_e}\big)_r`,
    the dense ``h @ weight.T``; ``weight`` (out, n_items) -> (n_rows, out). The sum runs over the kept
    entries (`values` must be 0 at the dropped ones); its gradient is the sparse product
    :math:`\partial L / \partial W^T = X^T G`.
    """
    return _Matmul.apply(weight, values, batch)
