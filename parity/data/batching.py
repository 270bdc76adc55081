"""The batches and dropout masks of an epoch, the same for both frameworks; dense rows of a CSR matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp


def batch_order(n_rows: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of one epoch: a permutation of 0..n_rows-1 cut into `batch_size` pieces.

    A function of (seed, epoch) only, so both frameworks, and a resumed run, see the same batches.
    The last batch is short when batch_size does not divide n_rows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
    order = rng.permutation(n_rows).astype(np.int64)
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def dense_rows(csr: sp.csr_matrix, rows: np.ndarray | Sequence[int], dtype: Any = np.float32) -> np.ndarray:
    """Rows of a CSR matrix as a dense C-contiguous (len(rows), n_cols) array of `dtype`."""
    rows = np.asarray(rows, np.int64)
    out = np.zeros((rows.size, csr.shape[1]), dtype=dtype)
    if rows.size:
        block = csr[rows]  # scipy's row gather keeps CSR; scatter its entries into the dense block
        out[np.repeat(np.arange(rows.size), np.diff(block.indptr)), block.indices] = block.data
    return out


def epoch_masks(model, train, seed: int, epoch: int, n_rows: int) -> tuple[np.ndarray | None, ...]:
    """Dropout keep-masks for one epoch (numpy bool, rows in the order the batches consume them), as a
    `StepMasks`-shaped tuple (input, code, refeed_input, refeed_code); None where that dropout is off.

    `model` and `train` are a `parity.config.ModelConfig` and `TrainConfig`. A function of (seed, epoch)
    only, like `batch_order`, from its own stream.
    """
    n_items, code = model.layer_sizes[0], model.layer_sizes[-1]
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0x6D61736B]))  # "mask": apart from batch_order's

    def draw(rate: float, width: int):
        return None if rate == 0.0 else rng.random((n_rows, width), dtype=np.float32) >= rate

    masks = [draw(model.input_dropout, n_items), draw(model.code_dropout, code)]
    if train.dense_refeeding:
        masks += [draw(model.input_dropout, n_items), draw(model.code_dropout, code)]
    else:
        masks += [None, None]
    return tuple(masks)
