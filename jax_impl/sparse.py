r"""Sparse user rows for the autoencoders' first layer (JAX): the same function as the dense layer,
computed from the nonzeros only.

A user's row of the item matrix (ML-1M: 3,706 items, about 165 nonzeros) enters the first layer as

    W h = \sum_{i : h_i \ne 0} h_i W_{:, i}                   (out,) for each row, W (out, n_items)

so the forward product and the weight gradient :math:`\partial L / \partial W_{:, i} = \sum_u h_{ui}\, g_u`
touch only the columns of W the batch's nonzeros name; no dense (batch, n_items) product is formed.

    SparseRows(indptr, rows, items, values, row_chunks, chunk_rows, item_chunks, chunk_items)
    sparse_rows(matrix, rows, ...) -> SparseRows (numpy)           one batch of a CSR matrix
    epoch_sparse_rows(matrix, batches, ...) -> SparseRows (numpy)  equal-sized batches stacked, one padding
    SparseSizes, bucket                                            the padding (static shapes for jit)
    matmul(batch, values, weight) -> (n_rows, out)                 W h per row; gradient a scatter-add
    row_sums(batch, x), at_entries(batch, dense), to_dense(batch, n_items)

The first four fields of `SparseRows` are framework-neutral and equal to `torch_ref.sparse.SparseRows`'
(one builder, mirrored): the batch's CSR (``indptr``) and its entries in CSR order with their batch
row, item and value, padded at the end to a static length with entries (last row, item 0, value 0)
that add exact zeros. The builder always leaves at least one padding entry: index ``n_entries - 1``
is a zero that the chunk layouts point their unused slots at.

The other four are this side's kernel layout, built with the rest in numpy: the entries cut into
fixed-width chunks, once row by row (forward) and once item by item (weight gradient), e.g.

    row_chunks  (n_row_chunks, K)   entry positions; a row of L entries fills ceil(L / K) chunks
    chunk_rows  (n_row_chunks,)     the batch row of each chunk, nondecreasing

The forward sums each chunk's K gathered columns with K unrolled multiply-adds, which XLA:CPU fuses
with the gathers into one loop (the gathered (entries, out) block is never written to memory), then
adds the chunk sums into their rows (a scatter-add of n_row_chunks rows, K times fewer than entries).
The weight gradient does the same over item chunks, gathering rows of the (n_rows, out) output
cotangent, which stays in cache. Why not the obvious alternatives (measured on XLA:CPU, ML-1M shapes,
see the sparse-input report): a plain gather + `segment_sum`, or `jax.experimental.sparse` BCOO,
materialise the (entries, out) gather, 120 MB per batch of 256 users, and run 10-20x slower than the
dense GEMM; an ``einsum``/``jnp.sum`` over the chunk axis becomes a separate library reduction that
again takes the gather materialised.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["SparseRows", "SparseSizes", "sparse_rows", "epoch_sparse_rows", "bucket", "matmul",
           "row_sums", "at_entries", "to_dense", "is_sparse_matrix", "ROW_CHUNK", "ITEM_CHUNK"]

# Chunk widths. Rows (ML-1M: 20 to 2,300 entries, mean 165) waste ~K/2 padded slots each: 8 gives 2%
# on ML-1M and keeps the chunk-to-row scatter-add 8x smaller than the entries. Items of one batch of
# 256 users hold 1 to 256 entries (most a handful): 8 wastes 25% of the slots but halves the scatter
# of 4 (measured fastest of 4, 8, 16 on ML-1M shapes).
ROW_CHUNK = 8
ITEM_CHUNK = 8


class SparseRows(NamedTuple):
    """A batch of rows of a sparse matrix, padded to static shapes (see the module docstring).

    Stacked along a leading axis (`epoch_sparse_rows`), the same fields carry a whole epoch's batches.
    """

    indptr: Any  # (n_rows + 1,) int32: row r's entries are [indptr[r], indptr[r + 1])
    rows: Any  # (n_entries,) int32: the batch row of each entry, nondecreasing; padding on the last row
    items: Any  # (n_entries,) int32: the column of each entry; padding 0
    values: Any  # (n_entries,) float: the value of each entry; padding 0
    keep: Any  # (n_entries,) bool: the input dropout keep-mask at the entries (padding False); None: no dropout
    # this side's kernel layout: chunks of the kept entries (all entries when keep is None)
    row_chunks: Any  # (n_row_chunks, ROW_CHUNK) int32: entry positions of each row chunk; unused slots -> n_entries - 1
    chunk_rows: Any  # (n_row_chunks,) int32: the row of each row chunk, nondecreasing; padding chunks on the last row
    item_chunks: Any  # (n_item_chunks, ITEM_CHUNK) int32: entry positions of each item chunk; unused -> n_entries - 1
    chunk_items: Any  # (n_item_chunks,) int32: the item of each item chunk, nondecreasing; padding on the last item

    @property
    def n_rows(self) -> int:
        return self.indptr.shape[-1] - 1

    @property
    def sizes(self) -> SparseSizes:
        """The padded lengths (the static shapes a compiled program is keyed on)."""
        return SparseSizes(self.rows.shape[-1], self.chunk_rows.shape[-1], self.chunk_items.shape[-1])


class SparseSizes(NamedTuple):
    """The padded lengths of a `SparseRows`: entries, row chunks, item chunks."""

    n_entries: int
    n_row_chunks: int
    n_item_chunks: int


def is_sparse_matrix(matrix: Any) -> bool:
    """A CSR matrix (scipy.sparse's csr_matrix / csr_array, or anything with indptr, indices, data, shape)."""
    return all(hasattr(matrix, name) for name in ("indptr", "indices", "data", "shape"))


def bucket(n: int) -> int:
    """``n`` rounded up to a multiple of 2^(bit_length(n) - 5): at most 1/16 more, and few distinct values,
    so that padded shapes (and the compiled programs keyed on them) repeat from epoch to epoch."""
    step = 1 << max(n.bit_length() - 5, 0)
    return -(-n // step) * step


def _batch_csr(matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, items, values) of `matrix[rows]`, entries in CSR order (columns ascending within a row),
    explicit zeros dropped (the dense path's masked loss counts only nonzero targets)."""
    indptr = np.asarray(matrix.indptr, np.int64)
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    first = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=first[1:])
    source = np.repeat(starts - first[:-1], lengths) + np.arange(first[-1])  # batch entry -> matrix entry
    row_of = np.repeat(np.arange(len(rows)), lengths)
    items = np.asarray(matrix.indices)[source].astype(np.int64)
    values = np.asarray(matrix.data)[source]
    order = np.lexsort((items, row_of))  # scipy keeps a row's columns unsorted unless told otherwise
    nonzero = values[order] != 0
    row_of, items, values = row_of[order][nonzero], items[order][nonzero], values[order][nonzero]
    if np.any((np.diff(row_of) == 0) & (np.diff(items) == 0)):
        raise ValueError("the matrix has duplicate entries in a row: call sum_duplicates() first")
    offsets = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(np.bincount(row_of, minlength=len(rows)), out=offsets[1:])
    return offsets, items, values


def _chunks(positions: np.ndarray, groups: np.ndarray, n_groups: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut `positions` (sorted by `groups`, nondecreasing) into chunks of `width` slots, a group per chunk
    -> (slot positions (n_chunks, width), -1 where unused; the group of each chunk (n_chunks,))."""
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.zeros(n_groups + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    n_chunks = -(-counts // width)
    group = np.repeat(np.arange(n_groups), n_chunks)
    first = np.zeros(n_groups + 1, np.int64)
    np.cumsum(n_chunks, out=first[1:])
    chunk_start = starts[group] + (np.arange(first[-1]) - first[group]) * width
    slots = chunk_start[:, None] + np.arange(width)
    inside = slots < starts[group + 1][:, None]
    return np.where(inside, positions[np.minimum(slots, max(len(positions) - 1, 0))], -1), group


class _Batch(NamedTuple):
    """One batch before padding."""

    indptr: np.ndarray
    items: np.ndarray
    values: np.ndarray
    keep: np.ndarray | None
    row_slots: np.ndarray
    chunk_rows: np.ndarray
    item_slots: np.ndarray
    chunk_items: np.ndarray

    def needs(self) -> np.ndarray:
        """(entries + the zero, row chunks, item chunks)."""
        return np.array([len(self.items) + 1, len(self.chunk_rows), len(self.chunk_items)])


def _unpadded(matrix, rows: np.ndarray, keep_rows: np.ndarray | None, row_chunk: int, item_chunk: int) -> _Batch:
    n_rows, n_items = len(rows), int(matrix.shape[1])
    if n_rows == 0:
        raise ValueError("a batch needs at least one row")
    indptr, items, values = _batch_csr(matrix, rows)
    row_of = np.repeat(np.arange(n_rows), np.diff(indptr))
    keep = None
    used = np.arange(len(items))  # the entries the first layer reads: the kept ones
    if keep_rows is not None:
        keep_rows = np.asarray(keep_rows)
        if keep_rows.shape != (n_rows, n_items):
            raise ValueError(f"input_keep rows have shape {keep_rows.shape}, expected {(n_rows, n_items)}")
        keep = keep_rows[row_of, items].astype(bool)
        used = used[keep]
    row_slots, chunk_rows = _chunks(used, row_of[used], n_rows, row_chunk)
    by_item = used[np.argsort(items[used], kind="stable")]
    item_slots, chunk_items = _chunks(by_item, items[by_item], n_items, item_chunk)
    return _Batch(indptr, items, values, keep, row_slots, chunk_rows, item_slots, chunk_items)


def _padded(batch: _Batch, sizes: SparseSizes, n_items: int, dtype: Any) -> SparseRows:
    n_rows = len(batch.indptr) - 1
    if np.any(batch.needs() > np.array(sizes)):
        raise ValueError(f"sizes {sizes} too small for a batch that needs {tuple(batch.needs())}")
    zero = sizes.n_entries - 1  # a padding entry (value 0): where every unused chunk slot points

    def pad(a, length, fill, kind=np.int32):
        out = np.full((length,) + a.shape[1:], fill, kind)
        out[: len(a)] = a
        return out

    return SparseRows(
        indptr=batch.indptr.astype(np.int32),
        rows=pad(np.repeat(np.arange(n_rows), np.diff(batch.indptr)), sizes.n_entries, n_rows - 1),
        items=pad(batch.items, sizes.n_entries, 0),
        values=pad(batch.values, sizes.n_entries, 0, dtype),
        keep=None if batch.keep is None else pad(batch.keep, sizes.n_entries, False, bool),
        row_chunks=pad(np.where(batch.row_slots >= 0, batch.row_slots, zero), sizes.n_row_chunks, zero),
        chunk_rows=pad(batch.chunk_rows, sizes.n_row_chunks, n_rows - 1),
        item_chunks=pad(np.where(batch.item_slots >= 0, batch.item_slots, zero), sizes.n_item_chunks, zero),
        chunk_items=pad(batch.chunk_items, sizes.n_item_chunks, n_items - 1),
    )


def _sizes(needs: np.ndarray, at_least: SparseSizes | None) -> SparseSizes:
    sizes = [bucket(int(n)) for n in np.maximum(needs, 1)]
    if at_least is not None:
        sizes = np.maximum(sizes, at_least).tolist()
    return SparseSizes(*(int(n) for n in sizes))


def sparse_rows(matrix, rows, *, input_keep=None, dtype: Any = np.float32, at_least: SparseSizes | None = None,
                row_chunk: int = ROW_CHUNK, item_chunk: int = ITEM_CHUNK) -> SparseRows:
    """The rows `rows` of the CSR `matrix` (n_rows_total, n_items) as a `SparseRows` of numpy arrays.

    `input_keep`: the input dropout keep-mask of these rows, dense (len(rows), n_items) bool, as the
    dense path takes it (only for a model with input dropout > 0); it is read at the entries, and the
    first layer's chunks leave the dropped entries out. Padded to this batch's `bucket`ed sizes, or
    more: to `at_least` (e.g. the sizes of the batches a compiled program was built for).
    """
    batch = _unpadded(matrix, np.asarray(rows, np.int64), input_keep, row_chunk, item_chunk)
    return _padded(batch, _sizes(batch.needs(), at_least), int(matrix.shape[1]), dtype)


def epoch_sparse_rows(matrix, batches, *, input_keep=None, dtype: Any = np.float32,
                      at_least: SparseSizes | None = None, row_chunk: int = ROW_CHUNK,
                      item_chunk: int = ITEM_CHUNK) -> SparseRows:
    """Batches (row index arrays of one size) as one `SparseRows` stacked along a leading (n_steps,)
    axis, all padded to the `bucket`ed largest need (or `at_least`), as `lax.scan` needs them.

    `input_keep`: the epoch's keep-mask, dense (sum of batch sizes, n_items), rows in the order the
    batches consume them (as `StepMasks.input`), or None.
    """
    parts, start = [], 0
    for rows in batches:
        keep_rows = None if input_keep is None else np.asarray(input_keep[start : start + len(rows)])
        parts.append(_unpadded(matrix, np.asarray(rows, np.int64), keep_rows, row_chunk, item_chunk))
        start += len(rows)
    sizes = _sizes(np.max([p.needs() for p in parts], axis=0), at_least)
    padded = [_padded(p, sizes, int(matrix.shape[1]), dtype) for p in parts]
    return SparseRows(*(None if field[0] is None else np.stack(field) for field in zip(*padded)))


# ---------------------------------------------------------------------------------------------
# in the model: functions of a SparseRows of device arrays


def row_sums(batch: SparseRows, x: Array) -> Array:
    r""":math:`\sum_{e \in \text{row } r} x_e` for each row: (n_entries,) -> (n_rows,)."""
    return jax.ops.segment_sum(x, batch.rows, num_segments=batch.n_rows, indices_are_sorted=True)


def at_entries(batch: SparseRows, dense: Array) -> Array:
    """A dense (n_rows, n_items) array read at the batch's entries: (n_entries,). Padding entries read
    [last row, item 0]; every caller multiplies what they read by the entry's value (0) or masks it."""
    return dense[batch.rows, batch.items]


def to_dense(batch: SparseRows, n_items: int) -> Array:
    """The batch as a dense (n_rows, n_items) array (padding adds exact zeros)."""
    return jnp.zeros((batch.n_rows, n_items), batch.values.dtype).at[batch.rows, batch.items].add(batch.values)


def _chunk_sums(table: Array, weights: Array, index: Array) -> Array:
    r""":math:`\sum_k w_{ck}\, T_{i_{ck}, :}` for each chunk c: (n_chunks, K) weights and row indices
    into `table` -> (n_chunks, table's width).

    Written as K multiply-adds of gathers, not a sum over a gathered (n_chunks, K, width) array: XLA:CPU
    fuses these gathers into the one elementwise loop (1.5 ms for 49k entries x 600), while it hands a
    reduction to a library kernel that needs the gather written out first (90 ms: 120 MB of memory).
    """
    total = weights[:, 0, None] * table.at[index[:, 0]].get(mode="promise_in_bounds")
    for k in range(1, index.shape[1]):
        total = total + weights[:, k, None] * table.at[index[:, k]].get(mode="promise_in_bounds")
    return total


@jax.custom_vjp
def _matmul_t(weight_t: Array, values: Array, batch: SparseRows) -> Array:
    # one zero row appended: the padding XLA:CPU cannot fold into the gathers, so W^T is written out row-major
    # once (1 ms) instead of each gathered element being read across W's rows (15x slower, measured)
    table = jnp.concatenate([weight_t, jnp.zeros((1, weight_t.shape[1]), weight_t.dtype)])
    chunk_sums = _chunk_sums(table, values[batch.row_chunks], batch.items[batch.row_chunks])
    return jax.ops.segment_sum(chunk_sums, batch.chunk_rows, num_segments=batch.n_rows, indices_are_sorted=True)


def _matmul_t_fwd(weight_t, values, batch):
    return _matmul_t(weight_t, values, batch), (weight_t, values, batch)


def _matmul_t_bwd(residuals, cotangent):
    weight_t, values, batch = residuals
    # dL/dW^T[i] = sum over entries e of item i of values[e] * g[row e]: item chunks over g's rows
    chunk_sums = _chunk_sums(cotangent, values[batch.item_chunks], batch.rows[batch.item_chunks])
    d_weight_t = jax.ops.segment_sum(chunk_sums, batch.chunk_items, num_segments=weight_t.shape[0],
                                     indices_are_sorted=True)
    # dL/dvalues[e] = <g[row e], W^T[item e]> for the entries read (0 for dropped ones and padding); dead
    # code, removed by XLA, when the values are data
    read = jnp.arange(values.shape[0]) < batch.indptr[-1]
    if batch.keep is not None:
        read = read & batch.keep
    d_values = jnp.where(read, jnp.sum(cotangent[batch.rows] * weight_t[batch.items], axis=-1), 0.0)
    return d_weight_t, d_values, None


_matmul_t.defvjp(_matmul_t_fwd, _matmul_t_bwd)


def matmul(batch: SparseRows, values: Array, weight: Array) -> Array:
    r""":math:`(W h_r)_r = \big(\sum_{e \in \text{row } r} \text{values}_e\, W_{:, \text{item}_e}\big)_r`:
    the dense ``h @ weight.T`` for the rows whose nonzeros are the batch's entries with `values`. The
    sum runs over the kept entries only (all when the batch has no keep-mask): `values` must be 0 at
    the dropped ones, as ``input_values`` makes them.

    ``weight`` (out, n_items), as the layers store it; -> (n_rows, out). Its gradient is the scatter-add
    :math:`\partial L / \partial W_{:, i} = \sum_{e:\, \text{item}_e = i} \text{values}_e\, g_{\text{row}_e}`
    (item chunks), never a dense (n_items, n_rows) x (n_rows, out) product.
    """
    return _matmul_t(weight.T, values, batch)
