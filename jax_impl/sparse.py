r"""Sparse user rows for the autoencoders' first layer (JAX): the same function as the dense layer,
computed from the nonzeros only.

A user's row of the item matrix (ML-1M: 3,706 items, about 165 nonzeros) enters the first layer as

    W h = \sum_{i : h_i \ne 0} h_i W_{:, i}                   (out,) for each row, W (out, n_items)

so the forward product and the weight gradient :math:`\partial L / \partial W_{:, i} = \sum_u h_{ui}\, g_u`
touch only the columns of W the batch's nonzeros name; no dense (batch, n_items) product is formed.

    SparseRows(indptr, rows, items, values, keep, row_chunks, chunk_rows, item_chunks, chunk_items)
    sparse_rows(matrix, rows, ...) -> SparseRows (numpy)           one batch of a CSR matrix
    epoch_sparse_rows(matrix, batches, ...) -> SparseRows (numpy)  equal-sized batches stacked, one padding
    to_device(batch) -> SparseRows of JAX arrays
    SparseSizes, bucket                                            the padding (static shapes for jit)
    matmul(batch, values, weight) -> (n_rows, out)                 W h per row; gradient a scatter-add
    row_sums(batch, x), at_entries(batch, dense), to_dense(batch, n_items)

The first five fields of `SparseRows` are framework-neutral and equal to `torch_ref.sparse.SparseRows`'
(one builder, mirrored): the batch's CSR (``indptr``), its entries in CSR order with their batch row,
item and value, and the input dropout keep-mask read at the entries (the dense mask the dense path
takes); padded at the end to a static length with entries (last row, item 0, value 0, not kept) that
add exact zeros. The builder always leaves at least one padding entry: index ``n_entries - 1`` is a
zero that the chunk layouts point their unused slots at.

The other four are this side's kernel layout, built with the rest in numpy: the kept entries (the
first layer reads no dropped one) cut into fixed-width chunks, once row by row (forward) and once
item by item (weight gradient), e.g.

    row_chunks  (n_row_chunks, K)   entry positions; a row of L entries fills ceil(L / K) chunks
    chunk_rows  (n_row_chunks,)     the batch row of each chunk, nondecreasing

The forward sums each chunk's K gathered columns with K unrolled multiply-adds, which XLA:CPU fuses
with the gathers into one loop (the gathered (entries, out) block is never written to memory), then
adds the chunk sums into their rows (a scatter-add of n_row_chunks rows, K times fewer than entries).
The weight gradient does the same over item chunks, gathering rows of the (n_rows, out) output
cotangent, which stays in cache. Why not the obvious alternatives (measured on XLA:CPU, ML-1M shapes,
one batch of 256 users at input dropout 0.5, forward and weight gradient; reports/sparse-input): a
plain gather + `segment_sum`, or `jax.experimental.sparse` BCOO, write the (entries, out) gather out
(42 MB here, 120 MB without dropout) and take ~5x the dense GEMMs' time; an ``einsum``/``jnp.sum``
over the chunk axis becomes a separate library reduction that again takes the gather written out
(~6x); this layout 0.55-0.9x (minima of two runs). Compacting W to the batch's items buys nothing:
one batch names ~92% of ML-1M's items even after dropout.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.layout import Layout, with_layout_constraint

Array = jax.Array

__all__ = ["SparseRows", "SparseSizes", "sparse_rows", "epoch_sparse_rows", "to_device", "bucket", "matmul",
           "row_sums", "at_entries", "to_dense", "is_sparse_matrix", "ROW_CHUNK", "ITEM_CHUNK"]

# Chunk widths. Rows (ML-1M: 20 to 2,300 entries, mean 165) waste ~K/2 padded slots each: 8 gives 2%
# on ML-1M and keeps the chunk-to-row scatter-add 8x smaller than the entries. Items of one batch of
# 256 users hold 1 to 256 entries (most a handful): 8 wastes 25% of the slots but halves the scatter
# of 4. (4, 8 and 16 for either were measured within the machine's noise of each other.)
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
    owner = np.repeat(np.arange(len(rows), dtype=np.int32), lengths)  # the run's row of each entry
    items = np.asarray(matrix.indices)[source].astype(np.int32, copy=False)  # 32-bit: half the memory traffic
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
        keep = input_keep.reshape(-1)[owner.astype(np.int64) * input_keep.shape[1] + items].astype(bool, copy=False)
    per_row = np.bincount(owner, minlength=len(rows)).reshape(n_steps, n_rows)
    batch_indptr = np.zeros((n_steps, n_rows + 1), np.int64)
    np.cumsum(per_row, axis=1, out=batch_indptr[:, 1:])
    step, row = np.divmod(owner, np.int32(n_rows))
    step_first = np.concatenate([[0], np.cumsum(batch_indptr[:, -1])]).astype(np.int32)
    return _Entries(n_steps, n_rows, step, row, items, values, keep,
                    np.arange(len(items), dtype=np.int32) - step_first[step], batch_indptr)


def _group_chunks(groups: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunks of `width` consecutive elements within runs of equal `groups` (nondecreasing) ->
    (element index of each slot (n_chunks, width), -1 where unused; the first element of each chunk)."""
    if len(groups) == 0:
        return np.zeros((0, width), np.int64), np.zeros(0, np.int64)
    run_start = np.flatnonzero(np.concatenate([[True], groups[1:] != groups[:-1]]))
    run_stop = np.concatenate([run_start[1:], [len(groups)]])
    n_chunks = -(-(run_stop - run_start) // width)
    run = np.repeat(np.arange(len(run_start)), n_chunks)
    chunk_first = np.zeros(len(run_start) + 1, np.int64)
    np.cumsum(n_chunks, out=chunk_first[1:])
    start = run_start[run] + (np.arange(chunk_first[-1]) - chunk_first[run]) * width
    slots = start[:, None] + np.arange(width)
    return np.where(slots < run_stop[run][:, None], slots, -1), start


def _rank_in_step(step: np.ndarray, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(the rank of each element among those of its step (`step` nondecreasing), the count per step)."""
    counts = np.bincount(step, minlength=n_steps)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(len(step)) - first[step], counts


def _layout(matrix, batches, input_keep, dtype, at_least: SparseSizes | None, row_chunk: int,
            item_chunk: int, headroom: float = 1.0) -> SparseRows:
    """The batches as one `SparseRows` stacked along (n_steps,), padded to one (bucketed) size."""
    e = _entries(matrix, batches, input_keep)
    n_steps, n_rows, n_items = e.n_steps, e.n_rows, int(matrix.shape[1])
    used = np.arange(len(e.items)) if e.keep is None else np.flatnonzero(e.keep)  # the entries the layer reads
    # row chunks: the used entries are in CSR order, so grouped by (step, row) already
    row_slots, row_start = _group_chunks(e.step[used] * n_rows + e.row[used], row_chunk)
    # item chunks: the used entries grouped by (step, item), two stable 16-bit sorts (numpy's radix sort)
    small = np.uint16 if max(n_items, n_steps) <= 1 << 16 else np.int64
    by_item = used[np.argsort(e.items[used].astype(small), kind="stable")]
    by_item = by_item[np.argsort(e.step[by_item].astype(small), kind="stable")]
    item_slots, item_start = _group_chunks(e.step[by_item].astype(np.int64) * n_items + e.items[by_item], item_chunk)
    row_chunk_step, item_chunk_step = e.step[used[row_start]], e.step[by_item[item_start]]
    row_rank, row_counts = _rank_in_step(row_chunk_step, n_steps)
    item_rank, item_counts = _rank_in_step(item_chunk_step, n_steps)
    needs = np.array([e.indptr[:, -1].max() + 1, row_counts.max(initial=0), item_counts.max(initial=0)])
    needs = np.maximum(needs, 1)
    sizes = [bucket(int(n)) for n in needs]
    if at_least is None or any(s > a for s, a in zip(sizes, at_least)):  # new shapes: room for the next batches
        sizes = [bucket(int(np.ceil(n * headroom))) for n in needs]
    if at_least is not None:
        sizes = np.maximum(sizes, at_least).tolist()
    sizes = SparseSizes(*(int(n) for n in sizes))
    zero = sizes.n_entries - 1  # a padding entry (value 0): where every unused chunk slot points

    def filled(shape, fill, kind=np.int32):
        return np.full((n_steps,) + shape, fill, kind)

    def local(slots, order):  # slot -> the entry's position within its batch; unused -> the zero entry
        if not len(order):
            return np.full(slots.shape, zero)
        return np.where(slots >= 0, e.position[order[np.maximum(slots, 0)]], zero)

    out = SparseRows(
        indptr=e.indptr.astype(np.int32), rows=filled((sizes.n_entries,), n_rows - 1),
        items=filled((sizes.n_entries,), 0), values=filled((sizes.n_entries,), 0, dtype),
        keep=None if e.keep is None else filled((sizes.n_entries,), False, bool),
        row_chunks=filled((sizes.n_row_chunks, row_chunk), zero), chunk_rows=filled((sizes.n_row_chunks,), n_rows - 1),
        item_chunks=filled((sizes.n_item_chunks, item_chunk), zero),
        chunk_items=filled((sizes.n_item_chunks,), n_items - 1))
    at = e.step * sizes.n_entries + e.position  # flat index into the (n_steps, n_entries) fields
    out.rows.reshape(-1)[at] = e.row
    out.items.reshape(-1)[at] = e.items
    out.values.reshape(-1)[at] = e.values
    if e.keep is not None:
        out.keep.reshape(-1)[at] = e.keep
    out.row_chunks[row_chunk_step, row_rank] = local(row_slots, used)
    out.chunk_rows[row_chunk_step, row_rank] = e.row[used[row_start]]
    out.item_chunks[item_chunk_step, item_rank] = local(item_slots, by_item)
    out.chunk_items[item_chunk_step, item_rank] = e.items[by_item[item_start]]
    return out


def sparse_rows(matrix, rows, *, input_keep=None, dtype: Any = np.float32, at_least: SparseSizes | None = None,
                row_chunk: int = ROW_CHUNK, item_chunk: int = ITEM_CHUNK, headroom: float = 1.0) -> SparseRows:
    """The rows `rows` of the CSR `matrix` (n_rows_total, n_items) as a `SparseRows` of numpy arrays.

    `input_keep`: the input dropout keep-mask of these rows, dense (len(rows), n_items) bool, as the
    dense path takes it (only for a model with input dropout > 0); it is read at the entries, and the
    first layer's chunks leave the dropped entries out. Padded to this batch's `bucket`ed sizes, or
    more: to `at_least` (e.g. the sizes of the batches a compiled program was built for). Where the batch
    does not fit `at_least` (or none is given), `headroom` > 1 pads each need by that factor before
    bucketing: room for the next batches, so the shapes (and the compiled program) change less often.
    """
    stacked = _layout(matrix, [rows], input_keep, dtype, at_least, row_chunk, item_chunk, headroom)
    return SparseRows(*(None if field is None else field[0] for field in stacked))


def epoch_sparse_rows(matrix, batches, *, input_keep=None, dtype: Any = np.float32,
                      at_least: SparseSizes | None = None, row_chunk: int = ROW_CHUNK,
                      item_chunk: int = ITEM_CHUNK, headroom: float = 1.0) -> SparseRows:
    """Batches (row index arrays of one size) as one `SparseRows` stacked along a leading (n_steps,)
    axis, all padded to the `bucket`ed largest need (or `at_least`), as `lax.scan` needs them.

    `input_keep`: the epoch's keep-mask, dense (sum of batch sizes, n_items), rows in the order the
    batches consume them (as `StepMasks.input`), or None.
    """
    if input_keep is not None:
        input_keep = np.asarray(input_keep)[: sum(len(rows) for rows in batches)]
    return _layout(matrix, batches, input_keep, dtype, at_least, row_chunk, item_chunk, headroom)


def to_device(batch: SparseRows) -> SparseRows:
    """A `SparseRows` of JAX arrays (on the default device)."""
    return SparseRows(*(None if a is None else jnp.asarray(a) for a in batch))


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


# Both transposes between W (out, n_items) and the gathered table W^T are written out row-major, each once
# (~1.5 ms of CPU for 3706 x 600): left to itself XLA folds a transpose into its consumers, and then the
# gathers read each row of W^T across the rows of W (the forward ~15x slower), and the optimizer's two
# moment updates read the gradient across its rows (~6x slower; both measured on ML-1M shapes).
_ROW_MAJOR = Layout(major_to_minor=(0, 1))


def _transposed(x: Array) -> Array:
    """x.T, materialised row-major."""
    return with_layout_constraint(x.T, _ROW_MAJOR)


@jax.custom_vjp
def _matmul(weight: Array, values: Array, batch: SparseRows) -> Array:
    chunk_sums = _chunk_sums(_transposed(weight), values[batch.row_chunks], batch.items[batch.row_chunks])
    return jax.ops.segment_sum(chunk_sums, batch.chunk_rows, num_segments=batch.n_rows, indices_are_sorted=True)


def _matmul_fwd(weight, values, batch):
    return _matmul(weight, values, batch), (weight, values, batch)


def _matmul_bwd(residuals, cotangent):
    weight, values, batch = residuals
    # dL/dW^T[i] = sum over entries e of item i of values[e] * g[row e]: item chunks over g's rows
    chunk_sums = _chunk_sums(cotangent, values[batch.item_chunks], batch.rows[batch.item_chunks])
    d_weight_t = jax.ops.segment_sum(chunk_sums, batch.chunk_items, num_segments=weight.shape[1],
                                     indices_are_sorted=True)
    # dL/dvalues[e] = <g[row e], W[:, item e]> for the entries read (0 for dropped ones and padding); dead
    # code, removed by XLA, when the values are data
    read = jnp.arange(values.shape[0]) < batch.indptr[-1]
    if batch.keep is not None:
        read = read & batch.keep
    d_values = jnp.where(read, jnp.sum(cotangent[batch.rows] * weight.T[batch.items], axis=-1), 0.0)
    return _transposed(d_weight_t), d_values, None


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(batch: SparseRows, values: Array, weight: Array) -> Array:
    r""":math:`(W h_r)_r = \big(\sum_{e \in \text{row } r} \text{values}_e\, W_{:, \text{item}_e}\big)_r`:
    the dense ``h @ weight.T`` for the rows whose nonzeros are the batch's entries with `values`. The
    sum runs over the kept entries only (all when the batch has no keep-mask): `values` must be 0 at
    the dropped ones, as ``input_values`` makes them.

    ``weight`` (out, n_items), as the layers store it; -> (n_rows, out). Its gradient is the scatter-add
    :math:`\partial L / \partial W_{:, i} = \sum_{e:\, \text{item}_e = i} \text{values}_e\, g_{\text{row}_e}`
    (item chunks), never a dense (n_items, n_rows) x (n_rows, out) product.
    """
    return _matmul(weight, values, batch)
