"""Sparse input: the batch layout, the first layer on the nonzeros, the sparse losses and the trainers,
each held against the dense path (float64: 1e-10 relative, normwise) and JAX against PyTorch; a wrong
sparse layer must be caught."""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from flax import nnx

import jax_impl.train as jt
import torch_ref.train as tt
from jax_impl import sparse as js
from jax_impl.models import learned_curvature
from parity import convert
from parity.config import ModelConfig, OptimizerConfig
from torch_ref import sparse as ts

N_USERS, N_ITEMS = 90, 40
RNG = np.random.default_rng(7)
RATINGS = (RNG.random((N_USERS, N_ITEMS)) < 0.15) * RNG.integers(1, 6, (N_USERS, N_ITEMS)).astype(np.float64)
RATINGS[7] = 0.0  # a user with no rating
RATINGS[11, :30] = RNG.integers(1, 6, 30)  # a long row: several row chunks
MATRIX = sp.csr_matrix(RATINGS)
BATCHES = [np.arange(i, min(i + 32, N_USERS)) for i in range(0, N_USERS, 32)]  # 32, 32, 26: a short last batch
EQUAL_BATCHES = np.split(np.random.default_rng(1).permutation(N_USERS), 3)  # one scan, nothing else to compile
ROWS = np.array([11, 7, 3, 50, 0, 89, 12, 4])  # the long row and the empty one

TOL = 1e-10  # float64 acceptance, normwise relative


def _rel(a, b) -> float:
    """Normwise relative difference max|a - b| / max|b| (entries are sums that may cancel)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def _keep(shape, rate, seed=0):
    return np.random.default_rng(seed).random(shape) >= rate


def _jax_batch(rows=ROWS, keep=None, **kw) -> js.SparseRows:
    return js.to_device(js.sparse_rows(MATRIX, rows, input_keep=keep, dtype=np.float64, **kw))


def _torch_batch(rows=ROWS, keep=None) -> ts.SparseRows:
    return ts.to_device(ts.sparse_rows(MATRIX, rows, input_keep=keep, dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# the layout


def test_both_builders_lay_out_the_same_entries_and_they_are_the_rows():
    keep = _keep((len(ROWS), N_ITEMS), 0.4)
    j = js.sparse_rows(MATRIX, ROWS, input_keep=keep, dtype=np.float64)
    t = ts.sparse_rows(MATRIX, ROWS, input_keep=keep, dtype=np.float64)
    common = ("indptr", "rows", "items", "values", "keep")  # then each side's kernel layout
    assert js.SparseRows._fields[:5] == ts.SparseRows._fields[:5] == common
    for name in common:
        np.testing.assert_array_equal(getattr(j, name), getattr(t, name), err_msg=name)
    nnz = int(j.indptr[-1])
    assert j.values.shape[0] > nnz and np.all(j.values[nnz:] == 0) and not j.keep[nnz:].any()  # a zero entry at least
    np.testing.assert_array_equal(np.asarray(js.to_dense(js.to_device(j), N_ITEMS)), RATINGS[ROWS])
    np.testing.assert_array_equal(j.keep[:nnz], keep[j.rows[:nnz], j.items[:nnz]])
    assert np.all(np.diff(j.rows) >= 0) and np.all(np.diff(j.indptr) >= 0)
    assert j.indptr[1] - j.indptr[0] == np.count_nonzero(RATINGS[11]) >= 30  # the long row,
    assert j.indptr[2] == j.indptr[1]  # then the empty one


@pytest.mark.parametrize("with_keep", [False, True])
def test_each_chunk_layout_holds_every_read_entry_exactly_once(with_keep):
    keep = _keep((len(ROWS), N_ITEMS), 0.4) if with_keep else None
    b = js.sparse_rows(MATRIX, ROWS, input_keep=keep, row_chunk=4, item_chunk=2)
    nnz, zero = int(b.indptr[-1]), b.values.shape[0] - 1
    read = np.arange(nnz) if keep is None else np.flatnonzero(b.keep)
    for slots, owner, key in [(b.row_chunks, b.chunk_rows, b.rows), (b.item_chunks, b.chunk_items, b.items)]:
        used = slots[slots != zero]
        np.testing.assert_array_equal(np.sort(used), read)  # every read entry once, nothing else
        assert np.all(np.diff(owner) >= 0)
        filled = slots != zero
        np.testing.assert_array_equal(key[slots][filled], np.broadcast_to(owner[:, None], slots.shape)[filled])


def test_torch_item_order_is_the_batch_transposed():
    b = ts.sparse_rows(MATRIX, ROWS, dtype=np.float64)
    np.testing.assert_array_equal(np.sort(b.item_order), np.arange(len(b.items)))  # every entry once
    by_item = b.items[b.item_order]
    assert np.all(np.diff(by_item) >= 0)
    np.testing.assert_array_equal(b.item_indptr, np.searchsorted(by_item, np.arange(N_ITEMS + 1)))
    rows_by_item = b.rows[b.item_order]
    assert all(np.all(np.diff(rows_by_item[a:z]) >= 0) for a, z in zip(b.item_indptr[:-1], b.item_indptr[1:]))


def test_epoch_layout_is_the_batches_stacked_and_padding_only_grows():
    keep = _keep((64, N_ITEMS), 0.3)
    epoch = js.epoch_sparse_rows(MATRIX, BATCHES[:2], input_keep=keep)
    for step, rows in enumerate(BATCHES[:2]):
        one = js.sparse_rows(MATRIX, rows, input_keep=keep[32 * step : 32 * (step + 1)], at_least=epoch.sizes)
        assert one.sizes == epoch.sizes
        for name in js.SparseRows._fields:
            np.testing.assert_array_equal(getattr(epoch, name)[step], getattr(one, name), err_msg=name)
    bigger = js.sparse_rows(MATRIX, BATCHES[0], at_least=js.SparseSizes(1000, 300, 400))
    assert bigger.sizes == js.SparseSizes(1000, 300, 400)
    with pytest.raises(ValueError, match="one size"):
        js.epoch_sparse_rows(MATRIX, BATCHES)


def test_bucket_rounds_up_by_at_most_a_sixteenth():
    for n in [1, 2, 31, 32, 33, 1000, 47697, 123457]:
        b = js.bucket(n)
        assert n <= b <= n + n / 16 and b == ts.bucket(n)
    assert len({js.bucket(n) for n in range(40000, 50000)}) <= 10


def test_unsorted_columns_and_explicit_zeros_are_read_as_the_dense_rows_and_duplicates_refused():
    coo = MATRIX.tocoo()
    order = np.random.default_rng(0).permutation(coo.nnz)
    # columns out of order within rows, an explicit zero at (3, 1)
    messy = sp.csr_matrix((np.append(coo.data[order], 0.0),
                           (np.append(coo.row[order], 3), np.append(coo.col[order], 1))), shape=MATRIX.shape)
    messy.has_sorted_indices = False
    for builder in (js.sparse_rows, ts.sparse_rows):
        b = builder(messy, ROWS, dtype=np.float64)
        nnz = int(b.indptr[-1])
        assert nnz == np.count_nonzero(RATINGS[ROWS])
        dense = np.zeros((len(ROWS), N_ITEMS))
        dense[b.rows[:nnz], b.items[:nnz]] = b.values[:nnz]
        np.testing.assert_array_equal(dense, RATINGS[ROWS])
    duplicated = sp.csr_matrix((np.array([1.0, 2.0]), np.array([3, 3]), np.array([0, 2])), shape=(1, N_ITEMS))
    with pytest.raises(ValueError, match="duplicate"):
        js.sparse_rows(duplicated, [0])
    with pytest.raises(ValueError, match="duplicate"):
        ts.sparse_rows(duplicated, [0])


# ---------------------------------------------------------------------------------------------
# the first layer


def test_jax_matmul_and_its_gradients_are_the_dense_ones():
    keep = _keep((len(ROWS), N_ITEMS), 0.4)
    batch = _jax_batch(keep=keep)
    values = batch.values * batch.keep  # 0 where dropped: what the layer's callers hand it
    weight = jnp.asarray(RNG.normal(size=(16, N_ITEMS)))
    dense = jnp.asarray(RATINGS[ROWS] * keep)
    cotangent = jnp.asarray(RNG.normal(size=(len(ROWS), 16)))
    f_sparse = lambda w, v: jnp.sum(jnp.sin(js.matmul(batch, v, w)) * cotangent)  # noqa: E731
    f_dense = lambda w, x: jnp.sum(jnp.sin(x @ w.T) * cotangent)  # noqa: E731
    assert _rel(js.matmul(batch, values, weight), dense @ weight.T) < 1e-14
    g_w, g_v = jax.grad(f_sparse, argnums=(0, 1))(weight, values)
    d_w, d_x = jax.grad(f_dense, argnums=(0, 1))(weight, dense)
    assert _rel(g_w, d_w) < 1e-14
    read = np.asarray(batch.keep)
    np.testing.assert_allclose(np.asarray(g_v)[read], np.asarray(d_x)[np.asarray(batch.rows)[read],
                                                                       np.asarray(batch.items)[read]], rtol=1e-13)
    assert np.all(np.asarray(g_v)[~read] == 0)  # dropped entries and padding are not read


def test_torch_matmul_and_its_gradients_are_the_dense_ones():
    keep = _keep((len(ROWS), N_ITEMS), 0.4)
    batch = _torch_batch(keep=keep)
    values = (batch.values * batch.keep).requires_grad_(True)
    weight = torch.tensor(RNG.normal(size=(16, N_ITEMS)), requires_grad=True)
    dense = torch.from_numpy(RATINGS[ROWS] * keep).requires_grad_(True)
    cotangent = torch.from_numpy(RNG.normal(size=(len(ROWS), 16)))
    sparse_out = ts.matmul(batch, values, weight)
    (torch.sin(sparse_out) * cotangent).sum().backward()
    g_w, g_v = weight.grad.clone(), values.grad.clone()
    weight.grad = None
    dense_out = dense @ weight.T
    (torch.sin(dense_out) * cotangent).sum().backward()
    assert _rel(sparse_out.detach(), dense_out.detach()) < 1e-14
    assert _rel(g_w, weight.grad) < 1e-14
    read = batch.keep.numpy()
    np.testing.assert_allclose(g_v.numpy()[read],
                               dense.grad.numpy()[batch.rows.numpy()[read], batch.items.numpy()[read]], rtol=1e-13)
    assert np.all(g_v.numpy()[~read] == 0)  # dropped entries and padding are not read


def test_the_comparison_notices_a_wrong_sparse_layer():
    """Mutations of the layout must show up far above the tolerance: an entry's item moved (the output
    and the gradient), an entry left out of the weight gradient's item chunks (the gradient only)."""
    batch = js.sparse_rows(MATRIX, ROWS, dtype=np.float64)
    weight = jnp.asarray(RNG.normal(size=(16, N_ITEMS)))
    dense = jnp.asarray(RATINGS[ROWS])
    want_out = dense @ weight.T
    want_grad = jax.grad(lambda w: jnp.sum((dense @ w.T) ** 2))(weight)
    wrong_item = batch._replace(items=batch.items.copy())
    wrong_item.items[3] = (wrong_item.items[3] + 1) % N_ITEMS
    lost_entry = batch._replace(item_chunks=batch.item_chunks.copy())
    lost_entry.item_chunks[0, 0] = batch.values.shape[0] - 1  # the zero entry
    for mutant, output_differs in [(batch, False), (wrong_item, True), (lost_entry, False)]:
        m = js.to_device(mutant)
        out = js.matmul(m, m.values, weight)
        grad = jax.grad(lambda w: jnp.sum(js.matmul(m, m.values, w) ** 2))(weight)  # noqa: B023
        assert (_rel(out, want_out) > 1e-3) == output_differs
        assert (_rel(grad, want_grad) > 1e-3) == (mutant is not batch)


# ---------------------------------------------------------------------------------------------
# whole models: sparse against dense, JAX against PyTorch

MODELS = {
    "ae-selu-masked": ModelConfig(layer_sizes=(N_ITEMS, 16, 8), activation="selu", loss="masked_mse"),
    "ae-tanh-l2-dropout-multinomial": ModelConfig(layer_sizes=(N_ITEMS, 16), activation="tanh", loss="multinomial",
                                                  input_normalization="l2", input_dropout=0.5, code_dropout=0.3),
    "ae-relu-tied-dense_mse": ModelConfig(layer_sizes=(N_ITEMS, 16, 8), activation="relu", tied=True, loss="dense_mse",
                                          input_dropout=0.2),
    "ae-lrelu-bce-lastact": ModelConfig(layer_sizes=(N_ITEMS, 12), activation="lrelu", loss="bce",
                                        last_layer_activation=True, input_normalization="l2"),
    "hae-tangent-l2-dropout": ModelConfig(kind="hae", layer_sizes=(N_ITEMS, 16), activation="tanh", loss="multinomial",
                                          input_normalization="l2", input_dropout=0.5, c=0.5),
    "hae-expmap0-learn_c": ModelConfig(kind="hae", layer_sizes=(N_ITEMS, 16, 8), activation="elu", loss="multinomial",
                                       input_normalization="l2", input_dropout=0.3, c=0.5, learn_c=True,
                                       input_map="expmap0"),
    "hae-point-masked": ModelConfig(kind="hae", layer_sizes=(N_ITEMS, 12), activation="tanh", loss="masked_mse",
                                    c=0.05, input_map="point"),
    "hae-point-tied-bce-learn_c": ModelConfig(kind="hae", layer_sizes=(N_ITEMS, 16), activation="swish", loss="bce",
                                              input_normalization="l2", input_dropout=0.2, tied=True, c=1.0,
                                              learn_c=True, input_map="point", output_scale=3.0),
    "hae-expmap0-tied-lastact-dense_mse": ModelConfig(kind="hae", layer_sizes=(N_ITEMS, 16), activation="tanh",
                                                      loss="dense_mse", tied=True, last_layer_activation=True, c=0.1,
                                                      input_map="expmap0"),
}


def _jax_forward(config, weights, inputs, input_keep):
    """(output, loss, {name: gradient}) of the JAX model on dense or sparse input (jitted: one compile
    instead of one per operation)."""
    graphdef, params, rest = nnx.split(convert.jax_model(config, weights, "float64"), nnx.Param, ...)

    def loss(params, rest, inputs, input_keep):
        model = nnx.merge(graphdef, params, rest)
        output = model(inputs, input_keep=input_keep)
        return model.loss(output, inputs), output

    (value, output), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, rest, inputs, input_keep)
    return np.asarray(output), float(value), convert.extract_jax(grads)


def _torch_forward(config, weights, inputs, input_keep):
    model = convert.torch_model(config, weights, "float64")
    output = model(inputs, input_keep=input_keep)
    value = model.loss(output, inputs)
    value.backward()
    return output.detach().numpy(), float(value), convert.extract_torch(model, grads=True)


LONG_MODELS = ("hae-expmap0-learn_c", "hae-expmap0-tied-lastact-dense_mse")  # ~10 s each on 2 cores: slow


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in LONG_MODELS else n for n in MODELS])
def test_sparse_model_is_the_dense_model_in_both_frameworks(name):
    config = MODELS[name]
    weights = convert.init_weights(config, 3, bias_scale=0.1)
    keep = _keep((len(ROWS), N_ITEMS), config.input_dropout, seed=1) if config.input_dropout else None
    dense = RATINGS[ROWS]
    runs = {
        "jax-dense": _jax_forward(config, weights, jnp.asarray(dense), None if keep is None else jnp.asarray(keep)),
        "jax-sparse": _jax_forward(config, weights, _jax_batch(keep=keep), None),
        "torch-dense": _torch_forward(config, weights, torch.from_numpy(dense),
                                      None if keep is None else torch.from_numpy(keep)),
        "torch-sparse": _torch_forward(config, weights, _torch_batch(keep=keep), None),
    }
    for a, b in [("jax-sparse", "jax-dense"), ("torch-sparse", "torch-dense"), ("jax-sparse", "torch-sparse")]:
        (out_a, loss_a, grads_a), (out_b, loss_b, grads_b) = runs[a], runs[b]
        assert _rel(out_a, out_b) < TOL, (a, b, "output")
        assert abs(loss_a - loss_b) <= TOL * abs(loss_b), (a, b, "loss")
        assert grads_a.keys() == grads_b.keys()
        for param in grads_b:
            assert _rel(grads_a[param], grads_b[param]) < TOL, (a, b, param)
    assert np.abs(runs["jax-dense"][2]["encoder.0.weight"]).max() > 0  # a gradient that can show a difference


def test_a_keep_mask_goes_into_the_batch_not_beside_it():
    config = MODELS["ae-tanh-l2-dropout-multinomial"]
    weights = convert.init_weights(config, 0)
    keep = _keep((len(ROWS), N_ITEMS), 0.5)
    for model, batch, dense_keep in [(convert.jax_model(config, weights, "float64"), _jax_batch(), jnp.asarray(keep)),
                                     (convert.torch_model(config, weights, "float64"), _torch_batch(),
                                      torch.from_numpy(keep))]:
        with pytest.raises(ValueError, match="carries its input keep-mask"):
            model(batch, input_keep=dense_keep)
    no_dropout = dataclasses.replace(config, input_dropout=0.0)
    for model, batch in [(convert.jax_model(no_dropout, weights, "float64"), _jax_batch(keep=keep)),
                         (convert.torch_model(no_dropout, weights, "float64"), _torch_batch(keep=keep))]:
        with pytest.raises(ValueError, match="no input dropout"):
            model(batch)


@pytest.mark.slow  # ~15-25 s on 2 cores
def test_padding_beyond_the_batch_changes_nothing():
    config = MODELS["hae-expmap0-learn_c"]
    weights = convert.init_weights(config, 1, bias_scale=0.1)
    keep = _keep((len(ROWS), N_ITEMS), config.input_dropout, seed=2)
    tight = _jax_forward(config, weights, _jax_batch(keep=keep), None)
    padded = _jax_forward(config, weights, _jax_batch(keep=keep, at_least=js.SparseSizes(512, 64, 256)), None)
    np.testing.assert_array_equal(tight[0], padded[0])
    for name in tight[2]:
        assert _rel(padded[2][name], tight[2][name]) < 1e-15


# ---------------------------------------------------------------------------------------------
# training


def _trainers(config: ModelConfig, opt: OptimizerConfig, weights, dtype: str, refeed: bool):
    if config.kind == "hae":
        j_opt = jt.riemannian_optimizer(opt, curvature=learned_curvature if config.learn_c else None)
        t_opt = tt.riemannian_optimizer(opt)
    else:
        j_opt, t_opt = jt.euclidean_optimizer(opt), tt.euclidean_optimizer(opt)
    jax_trainer = lambda: jt.Trainer(convert.jax_model(config, weights, dtype), j_opt, dense_refeeding=refeed)  # noqa: E731
    torch_trainer = lambda: tt.Trainer(convert.torch_model(config, weights, dtype), t_opt, dense_refeeding=refeed)  # noqa: E731
    return jax_trainer, torch_trainer


def _epoch_masks(config: ModelConfig, refeed: bool, seed: int):
    r = np.random.default_rng(seed)
    draw = lambda rate, width: None if rate == 0 else r.random((N_USERS, width)) >= rate  # noqa: E731
    code = config.layer_sizes[-1]
    masks = [draw(config.input_dropout, N_ITEMS), draw(config.code_dropout, code)]
    return masks + ([draw(config.input_dropout, N_ITEMS), draw(config.code_dropout, code)] if refeed else [None, None])


TRAINING = {
    "ae-adam-refeed": (ModelConfig(layer_sizes=(N_ITEMS, 16, 8), activation="elu", loss="multinomial",
                                   input_normalization="l2", input_dropout=0.2, code_dropout=0.5),
                       OptimizerConfig(name="adam", learning_rate=1e-2), True),
    "hae-radam-learn_c": (MODELS["hae-expmap0-learn_c"], OptimizerConfig(name="adam", learning_rate=1e-2), False),
}


@pytest.mark.slow  # ~15-20 s each on 2 cores; the default run trains sparse in test_train_with_sparse_input_...
@pytest.mark.parametrize("name", list(TRAINING))
def test_sparse_training_is_dense_training_in_float64(name):
    """Two epochs of three batches (scanned; for the Euclidean model the last batch short, and also one
    jitted step per batch): sparse against dense on each side, and JAX sparse against PyTorch sparse.
    The hyperbolic model's batches are equal: each program of its Riemannian step takes ~20 s to compile."""
    config, opt, refeed = TRAINING[name]
    weights = convert.init_weights(config, 0, bias_scale=0.1)
    jax_trainer, torch_trainer = _trainers(config, opt, weights, "float64", refeed)
    runs = {"jax-dense": jax_trainer(), "jax-sparse": jax_trainer(), "torch-dense": torch_trainer(),
            "torch-sparse": torch_trainer()}
    stepwise = config.kind == "ae"
    batches = BATCHES if stepwise else EQUAL_BATCHES
    if stepwise:
        runs["jax-sparse-stepwise"] = jax_trainer()
    losses = {name: [] for name in runs}
    for epoch in range(2):
        masks = _epoch_masks(config, refeed, epoch)
        losses["jax-dense"].append(runs["jax-dense"].train_epoch(jnp.asarray(RATINGS), batches, jt.StepMasks(*masks)))
        losses["jax-sparse"].append(runs["jax-sparse"].train_epoch(MATRIX, batches, jt.StepMasks(*masks)))
        if stepwise:
            losses["jax-sparse-stepwise"].append(
                runs["jax-sparse-stepwise"].train_epoch_stepwise(MATRIX, batches, jt.StepMasks(*masks)))
        losses["torch-dense"].append(runs["torch-dense"].train_epoch(torch.from_numpy(RATINGS), batches,
                                                                     tt.StepMasks(*masks)))
        losses["torch-sparse"].append(runs["torch-sparse"].train_epoch(MATRIX, batches, tt.StepMasks(*masks)))
    weights_of = {name: convert.extract_jax(t.params) if name.startswith("jax") else convert.extract_torch(t.model)
                  for name, t in runs.items()}
    pairs = [("jax-sparse", "jax-dense"), ("torch-sparse", "torch-dense"), ("jax-sparse", "torch-sparse")]
    for a, b in pairs + ([("jax-sparse-stepwise", "jax-dense")] if stepwise else []):
        assert np.stack(losses[a]).shape == (2, 3, 2 if refeed else 1)
        assert _rel(np.stack(losses[a]), np.stack(losses[b])) < TOL, (a, b)
        for name in weights_of[b]:
            assert _rel(weights_of[a][name], weights_of[b][name]) < TOL, (a, b, name)
    sparse_scores = runs["jax-sparse"].score(js.sparse_rows(MATRIX, ROWS, dtype=np.float64))
    assert _rel(sparse_scores, runs["jax-dense"].score(RATINGS[ROWS])) < TOL
    torch_scores = runs["torch-sparse"].score(ts.sparse_rows(MATRIX, ROWS, dtype=np.float64))
    assert _rel(torch_scores, runs["torch-dense"].score(RATINGS[ROWS])) < TOL
    assert _rel(runs["jax-sparse"].code(js.sparse_rows(MATRIX, ROWS, dtype=np.float64)),
                runs["jax-dense"].code(RATINGS[ROWS])) < TOL


def test_train_step_on_a_sparse_batch_and_the_scanned_epoch_reuses_its_program():
    config = MODELS["ae-tanh-l2-dropout-multinomial"]
    opt = OptimizerConfig(name="sgd", learning_rate=0.05, momentum=0.9)
    weights = convert.init_weights(config, 4)
    jax_trainer, torch_trainer = _trainers(config, opt, weights, "float64", False)
    dense_j, sparse_j, dense_t, sparse_t = jax_trainer(), jax_trainer(), torch_trainer(), torch_trainer()
    keep = _keep((len(ROWS), N_ITEMS), config.input_dropout, seed=5)
    for _ in range(2):
        want = dense_j.train_step(RATINGS[ROWS], jt.StepMasks(keep))
        assert _rel(sparse_j.train_step(js.sparse_rows(MATRIX, ROWS, input_keep=keep, dtype=np.float64)), want) < TOL
        assert _rel(dense_t.train_step(RATINGS[ROWS], tt.StepMasks(keep)), want) < TOL
        assert _rel(sparse_t.train_step(ts.sparse_rows(MATRIX, ROWS, input_keep=keep, dtype=np.float64)), want) < TOL
    # an epoch is one compiled scan; later epochs are padded at least as the earlier ones, so a new program
    # is compiled only when an epoch needs more room than any before (a handful of times, `bucket`)
    trainer, sizes = jax_trainer(), []
    compiled = jt._scan_steps._cache_size()
    for epoch in [0, 1, 2, 0]:
        order = np.random.default_rng(epoch).permutation(N_USERS)
        trainer.train_epoch(MATRIX, [order[i : i + 30] for i in range(0, N_USERS, 30)],
                            jt.StepMasks(_keep((N_USERS, N_ITEMS), 0.5, seed=epoch)))
        sizes.append(trainer._sparse_sizes[30])
    assert all(np.all(np.array(a) <= np.array(b)) for a, b in zip(sizes, sizes[1:]))
    assert sizes[-1] == sizes[-2]  # a repeated epoch fits: no new program
    assert jt._scan_steps._cache_size() - compiled <= len(set(sizes))


@pytest.mark.parametrize("config_name", ["hae-tangent-l2-dropout"])
@pytest.mark.slow  # long on 2 cores; `pytest -m slow` and CI run it
def test_float32_sparse_training_stays_close_to_dense(config_name):
    """float32: the sums run in another order (chunks of entries instead of a GEMM), nothing else."""
    config = MODELS[config_name]
    weights = {k: v.astype(np.float32) for k, v in convert.init_weights(config, 0).items()}
    jax_trainer, torch_trainer = _trainers(config, OptimizerConfig(name="adam", learning_rate=1e-2), weights,
                                           "float32", False)
    matrix32 = MATRIX.astype(np.float32)
    runs = [(jax_trainer(), jnp.asarray(RATINGS, jnp.float32), jax_trainer(), jt.StepMasks),
            (torch_trainer(), torch.from_numpy(RATINGS.astype(np.float32)), torch_trainer(), tt.StepMasks)]
    for dense, dense_matrix, sparse, masks_of in runs:
        for epoch in range(2):
            masks = masks_of(*_epoch_masks(config, False, epoch))
            want = dense.train_epoch(dense_matrix, EQUAL_BATCHES, masks)
            got = sparse.train_epoch(matrix32, EQUAL_BATCHES, masks)
            # measured, 2 epochs of Adam (lr 1e-2), 3 seeds, this model and the Euclidean one, both frameworks:
            # losses within 2.2e-7 relative, weights within 7.7e-7 normwise; bounds 4x above that
            assert _rel(got, want) < 1e-6
        read = (lambda t: convert.extract_jax(t.params)) if masks_of is jt.StepMasks else (
            lambda t: convert.extract_torch(t.model))
        for name, value in read(dense).items():
            assert _rel(read(sparse)[name], value) < 3e-6, name


# ---------------------------------------------------------------------------------------------
# the compiled program


def _dot_contractions(hlo: str) -> list[tuple[tuple[int, ...], int]]:
    """(result shape, contracted size) of each dot of an optimised HLO module."""
    shapes = {m.group(1): tuple(int(x) for x in m.group(2).split(",") if x)
              for m in re.finditer(r"(%[\w.\-]+) = \w+\[([\d,]*)\]", hlo)}
    shapes.update({"%" + m.group(1): tuple(int(x) for x in m.group(2).split(",") if x)
                   for m in re.finditer(r"\b([\w.\-]+): \w+\[([\d,]*)\]", hlo)})
    out = []
    for m in re.finditer(r"= \w+\[([\d,]*)\]\{[^}]*\} dot\((%[\w.\-]+), %[\w.\-]+\),"
                         r"[^\n]*?lhs_contracting_dims=\{(\d+)\}", hlo):
        result = tuple(int(x) for x in m.group(1).split(",") if x)
        out.append((result, shapes[m.group(2)][int(m.group(3))]))
    return out


@pytest.mark.parametrize("kind", ["ae", "hae"])
def test_the_sparse_step_has_no_dense_first_layer_product(kind):
    """The optimised HLO of one float32 train step (n_items 300, hidden 64, batch 32): the dense step has
    the five products of a one-layer autoencoder, two of them over n_items x batch for the first layer;
    the sparse step has the decoder's three only."""
    n_items, hidden, batch = 300, 64, 32
    config = ModelConfig(kind=kind, layer_sizes=(n_items, hidden), activation="tanh", loss="multinomial",
                         input_normalization="l2", input_dropout=0.5)
    weights = {k: v.astype(np.float32) for k, v in convert.init_weights(config, 0).items()}
    opt = OptimizerConfig(name="adam")
    jax_trainer, _ = _trainers(config, opt, weights, "float32", False)
    trainer = jax_trainer()
    clicks = sp.random(200, n_items, density=0.05, format="csr", random_state=0, dtype=np.float32)
    clicks.data[:] = 1.0
    rows = np.arange(batch)
    keep = _keep((batch, n_items), 0.5)
    programs = {
        "dense": (jnp.asarray(clicks[rows].toarray()), jt.StepMasks(jnp.asarray(keep))),
        "sparse": (js.to_device(js.sparse_rows(clicks, rows, input_keep=keep)), jt.StepMasks()),
    }
    products = {}
    for name, (inputs, masks) in programs.items():
        hlo = jt._train_step.lower(trainer.params, trainer.opt_state, trainer.rest, inputs, masks,
                                   **trainer._static).compile().as_text()
        products[name] = sorted(p for p in _dot_contractions(hlo) if np.prod(p[0]) * p[1] >= batch * hidden * 64)
    first_layer = [((batch, hidden), n_items), ((hidden, n_items), batch)]  # forward, weight gradient
    decoder = [((batch, n_items), hidden), ((batch, hidden), n_items), ((n_items, hidden), batch)]
    assert products["dense"] == sorted(first_layer + decoder)
    assert products["sparse"] == sorted(decoder)


# ---------------------------------------------------------------------------------------------
# the models suite's sparse rows, and `train --set train.input_format=sparse`


@pytest.mark.slow  # ~15-25 s on 2 cores
def test_models_suite_sparse_rows_pass_and_catch_a_shifted_layer(monkeypatch):
    """The suite's sparse rows hold (float64, the Euclidean cases); a sparse first layer off by one part in
    1e8 must fail them (the bound is 1e-10)."""
    from parity.backend import enable_float64
    from parity.suites import models as suite

    enable_float64()
    records = suite.sparse_records("float64", kind="ae")
    assert records and all(r.passed for r in records), [r.name for r in records if not r.passed]
    assert {r.extra.get("pair") for r in records} == {f"{a} vs {b}" for a, b in suite.SPARSE_PAIRS}

    right = js.matmul
    monkeypatch.setattr(js, "matmul", lambda batch, values, weight: right(batch, values, weight) * (1 + 1e-8))
    shifted = suite.sparse_records("float64", kind="ae")
    failed = {r.extra.get("pair") for r in shifted if not r.passed}
    assert failed == {"jax-sparse vs jax-dense", "jax-sparse vs torch-sparse"}, failed


def test_train_with_sparse_input_gives_the_dense_run(tmp_path, require_dataset):
    """`poincare-parity train --set train.input_format=sparse`: the same HR@10 and loss history as dense
    input at the same seed, in both frameworks (float64: the sums differ only in order)."""
    require_dataset("ml-100k")
    from parity.cli import main

    results = {}
    for form in ("dense", "sparse"):
        out = tmp_path / form
        code = main(["train", "--dataset", "ml-100k", "--framework", "both", "--epochs", "2", "--no-progress",
                     "--set", "model.layer_sizes=[0,24]", "--set", "train.dtype=float64",
                     "--set", f"train.input_format={form}", "--out", str(out)])
        assert code == 0
        results[form] = json.loads((out / "train.json").read_text())
    for dense_run, sparse_run in zip(results["dense"]["runs"], results["sparse"]["runs"], strict=True):
        assert sparse_run["framework"] == dense_run["framework"]
        for d, s in zip(dense_run["history"], sparse_run["history"], strict=True):
            assert s["val_hr"] == d["val_hr"]
            assert s["loss"] == pytest.approx(d["loss"], rel=1e-9)
        assert sparse_run["test"]["hr"] == dense_run["test"]["hr"]
    assert results["sparse"]["config"]["train"]["input_format"] == "sparse"


def test_headroom_pads_only_where_the_shapes_must_grow():
    """New shapes get room (fewer recompilations); a batch that fits the shapes it is given keeps them."""
    plain = js.sparse_rows(MATRIX, ROWS, dtype=np.float64)
    roomy = js.sparse_rows(MATRIX, ROWS, dtype=np.float64, headroom=1.5)
    assert roomy.sizes.n_entries >= 1.4 * plain.sizes.n_entries
    assert all(r >= p for r, p in zip(roomy.sizes, plain.sizes))
    fits = js.sparse_rows(MATRIX, ROWS[:4], dtype=np.float64, at_least=roomy.sizes, headroom=1.5)
    assert fits.sizes == roomy.sizes  # no growth, no extra room
    outgrown = js.sparse_rows(MATRIX, ROWS, dtype=np.float64, at_least=js.SparseSizes(1, 1, 1), headroom=1.5)
    assert outgrown.sizes == roomy.sizes
    np.testing.assert_array_equal(js.to_dense(js.to_device(roomy), N_ITEMS), RATINGS[ROWS])  # the same rows
