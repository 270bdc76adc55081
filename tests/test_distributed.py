"""Data-parallel training: 2 devices against 1 on the same global batches, in float64, in each framework
and across frameworks, both models, Euclidean and Riemannian optimizers.

JAX runs with 2 host CPU devices in a subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=2
must be set before JAX starts, and this pytest process keeps its one device); PyTorch with 2 gloo
processes on 127.0.0.1, started once for the module and always stopped.

Tolerance: 1e-10 relative (losses entrywise, parameters normwise per parameter). Splitting a batch
only changes the order of the sums over its rows; measured errors are 1e-16 to 1e-15.
"""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

import jax_impl.distributed as jd
import jax_impl.models as jm
import jax_impl.train as jt
import torch_ref.distributed as td
import torch_ref.train as tt
from parity import config as cfg
from parity import convert
from parity.config import DataConfig, ModelConfig, OptimizerConfig

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-10
N_DEVICES = 2
SUBPROCESS_TIMEOUT = 600  # seconds; a JAX case takes ~30 s on a busy 2-core machine (mostly compilation)
RANK_TIMEOUT = 300.0  # seconds per call to the rank processes

N_USERS, N_ITEMS = 90, 40
RNG = np.random.default_rng(0)
MATRIX = (RNG.random((N_USERS, N_ITEMS)) < 0.15) * RNG.integers(1, 6, (N_USERS, N_ITEMS)).astype(np.float64)
MATRIX[:, 0] = 1.0  # no empty row (the BCE and multinomial targets need a click)
# 32, 32, 25: equal batches (scanned by JAX, split 16 / 16) and a short last batch that 2 devices cannot split
# evenly (JAX runs it replicated, PyTorch splits it 13 / 12); row 89 is left for a batch of one row
BATCHES = [np.arange(0, 32), np.arange(32, 64), np.arange(64, 89)]
EPOCHS = 2

CASES = {
    "ae-adam-masked-mse-refeed": (
        ModelConfig(layer_sizes=(N_ITEMS, 16, 8), activation="elu", input_dropout=0.2, code_dropout=0.5),
        OptimizerConfig(name="adam", learning_rate=1e-2), True),
    "hae-radam-multinomial-learn-c": (
        ModelConfig(kind="hae", layer_sizes=(N_ITEMS, 16), activation="tanh", loss="multinomial",
                    input_normalization="l2", input_dropout=0.3, code_dropout=0.2, c=0.5, learn_c=True),
        OptimizerConfig(name="adam", learning_rate=1e-2, weight_decay=1e-3), False),
    "ae-sgd-nesterov-dense-mse-tied": (
        ModelConfig(layer_sizes=(N_ITEMS, 16, 8), activation="selu", tied=True, loss="dense_mse", code_dropout=0.5),
        OptimizerConfig(name="sgd", learning_rate=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3), False),
    "hae-rsgd-bce-refeed": (
        ModelConfig(kind="hae", layer_sizes=(N_ITEMS, 16, 8), activation="tanh", loss="bce",
                    input_normalization="l2", input_dropout=0.2, c=1.0),
        OptimizerConfig(name="sgd", learning_rate=5e-2, momentum=0.9), True),
    "ae-adam-multinomial": (
        ModelConfig(layer_sizes=(N_ITEMS, 16), activation="tanh", loss="multinomial", input_normalization="l2",
                    input_dropout=0.5),
        OptimizerConfig(name="adam", learning_rate=1e-2), False),
}
FAST = ["ae-adam-masked-mse-refeed", "hae-radam-multinomial-learn-c"]
CASE_PARAMS = [pytest.param(name, marks=() if name in FAST else pytest.mark.slow) for name in CASES]


def _optimizers(model: ModelConfig, optimizer: OptimizerConfig):
    """(JAX, PyTorch) optimizers: Riemannian for the hyperbolic model, Euclidean otherwise."""
    if model.kind == "hae":
        curvature = jm.learned_curvature if model.learn_c else None
        return jt.riemannian_optimizer(optimizer, curvature=curvature), tt.riemannian_optimizer(optimizer)
    return jt.euclidean_optimizer(optimizer), tt.euclidean_optimizer(optimizer)


def _epoch_masks(model: ModelConfig, refeed: bool, n_rows: int, epoch: int) -> tuple:
    r = np.random.default_rng([7, epoch])
    def draw(rate, width):
        return None if rate == 0 else r.random((n_rows, width)) >= rate

    def pair():
        return [draw(model.input_dropout, model.layer_sizes[0]), draw(model.code_dropout, model.layer_sizes[-1])]

    return tuple(pair() + (pair() if refeed else [None, None]))


def _relative_errors(a_losses, a_weights, b_losses, b_weights) -> tuple[float, float]:
    """(largest entrywise relative loss error, largest normwise relative parameter error)."""
    loss = float(np.max(np.abs(a_losses - b_losses) / np.abs(b_losses)))
    weights = max(float(np.abs(a_weights[k] - b_weights[k]).max() / np.abs(b_weights[k]).max()) for k in b_weights)
    return loss, weights


# ---------------------------------------------------------------------------------------------
# JAX: a subprocess with 2 host devices trains 1-device and 2-device trainers on the same inputs

_JAX_WORKER = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    jax.config.update("jax_enable_x64", True)
    import jax_impl.distributed as jd, jax_impl.models as jm, jax_impl.train as jt
    from parity import config as cfg, convert

    spec = json.load(open(sys.argv[1]))
    data = dict(np.load(sys.argv[2]))
    model = cfg.from_dict(cfg.ModelConfig, spec["model"])
    options = cfg.from_dict(cfg.OptimizerConfig, spec["optimizer"])
    if model.kind == "hae":
        optimizer = jt.riemannian_optimizer(options, curvature=jm.learned_curvature if model.learn_c else None)
    else:
        optimizer = jt.euclidean_optimizer(options)
    weights = {k[2:]: v for k, v in data.items() if k.startswith("w/")}
    assert len(jax.devices()) == spec["devices"], jax.devices()
    out = {}
    for tag, devices in (("one", None), ("many", spec["devices"])):
        net = convert.jax_model(model, weights, "float64")
        if devices is None:
            trainer = jt.Trainer(net, optimizer, dense_refeeding=spec["refeed"])
            matrix = jax.numpy.asarray(data["matrix"])
        else:
            trainer = jd.data_parallel_trainer(net, optimizer, devices=devices, dense_refeeding=spec["refeed"])
            matrix = trainer.put(data["matrix"])
        losses = []
        for epoch in range(spec["epochs"]):
            batches = np.split(data[f"order/{epoch}"], np.cumsum(data[f"sizes/{epoch}"])[:-1])
            masks = jt.StepMasks(*(data.get(f"mask/{epoch}/{slot}") for slot in range(4)))
            losses.append(trainer.train_epoch(matrix, batches, masks))
        out[f"{tag}/losses"] = np.concatenate(losses)
        out.update({f"{tag}/w/{k}": v for k, v in convert.extract_jax(trainer.params).items()})
        if "score_rows" in data:
            out[f"{tag}/scores"] = trainer.score(data["score_rows"])
        if devices is not None:
            out["replica_max_difference"] = np.asarray(trainer.replica_max_difference())
            out["replicated"] = np.asarray(all(leaf.sharding.is_fully_replicated
                                               for leaf in jax.tree.leaves((trainer.params, trainer.opt_state))))
        if devices is not None and spec["hlo"]:  # the compiled 2-device epoch, for inspection
            rows, stacked = trainer._put_rows((np.stack(batches[:2]), jt._stack_masks(trainer._put(masks), 2,
                                                                                        len(batches[0]))), axis=1)
            static = tuple(sorted(trainer._static.items()))
            program = jd._replicated_program(jt._scan_epoch, trainer._replicated, static)
            out["hlo"] = np.asarray(program.lower(trainer.params, trainer.opt_state, trainer.rest, matrix, rows,
                                                  stacked).compile().as_text())
            out["rows_sharded"] = np.asarray(rows.sharding.spec == jax.sharding.PartitionSpec(None, jd.DATA_AXIS))
    np.savez(sys.argv[3], **out)
""")


def _inputs(model: ModelConfig, refeed: bool, matrix: np.ndarray, epochs: list[tuple[list, tuple]],
            weights: dict, score_rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    arrays = {"matrix": matrix, **{f"w/{k}": v for k, v in weights.items()}}
    for epoch, (batches, masks) in enumerate(epochs):
        arrays[f"order/{epoch}"] = np.concatenate(batches)
        arrays[f"sizes/{epoch}"] = np.asarray([len(b) for b in batches])
        arrays.update({f"mask/{epoch}/{slot}": m for slot, m in enumerate(masks) if m is not None})
    if score_rows is not None:
        arrays["score_rows"] = score_rows
    return arrays


def run_jax_devices(tmp: Path, model: ModelConfig, optimizer: OptimizerConfig, refeed: bool,
                    arrays: dict[str, np.ndarray], *, hlo: bool = False) -> dict[str, np.ndarray]:
    """Train 1-device and N_DEVICES-device JAX trainers in a subprocess that has N_DEVICES host devices;
    `hlo`: also return the compiled text of the N_DEVICES-device scanned epoch."""
    spec = {"model": cfg.to_dict(model), "optimizer": cfg.to_dict(optimizer), "refeed": refeed,
            "epochs": sum(k.startswith("order/") for k in arrays), "devices": N_DEVICES, "hlo": hlo}
    (tmp / "spec.json").write_text(json.dumps(spec))
    np.savez(tmp / "inputs.npz", **arrays)
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={N_DEVICES}")
    done = subprocess.run([sys.executable, "-c", _JAX_WORKER, str(tmp / "spec.json"), str(tmp / "inputs.npz"),
                           str(tmp / "out.npz")], env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(tmp / "out.npz") as stored:
        return dict(stored)


def _weights(result: dict, tag: str) -> dict[str, np.ndarray]:
    prefix = f"{tag}/w/"
    return {k[len(prefix):]: v for k, v in result.items() if k.startswith(prefix)}


# results are computed once per case and shared by the tests below
_JAX_RESULTS: dict[str, dict] = {}
_TORCH_RESULTS: dict[str, dict] = {}


def _case_inputs(name: str):
    model, optimizer, refeed = CASES[name]
    weights = convert.init_weights(model, 0, bias_scale=0.1)  # random biases: a mix-up cannot hide behind zeros
    epochs = [(BATCHES, _epoch_masks(model, refeed, N_USERS, epoch)) for epoch in range(EPOCHS)]
    return model, optimizer, refeed, weights, epochs


def jax_case(name: str, tmp_path_factory) -> dict:
    if name not in _JAX_RESULTS:
        model, optimizer, refeed, weights, epochs = _case_inputs(name)
        _JAX_RESULTS[name] = run_jax_devices(tmp_path_factory.mktemp(name), model, optimizer, refeed,
                                             _inputs(model, refeed, MATRIX, epochs, weights), hlo=name == FAST[0])
    return _JAX_RESULTS[name]


@pytest.fixture(scope="module")
def ranks():
    """2 gloo rank processes for the whole module, stopped at its end (and on any failure)."""
    with td.RankProcesses(N_DEVICES, timeout=RANK_TIMEOUT) as processes:
        yield processes
    assert all(p.exitcode is not None for p in processes._processes)


def _torch_train(trainer, epochs) -> np.ndarray:
    matrix = trainer.put(MATRIX) if hasattr(trainer, "put") else torch.from_numpy(MATRIX)
    return np.concatenate([trainer.train_epoch(matrix, batches, tt.StepMasks(*masks)) for batches, masks in epochs])


def torch_case(name: str, ranks) -> dict:
    if name not in _TORCH_RESULTS:
        model, optimizer, refeed, weights, epochs = _case_inputs(name)
        _, factory = _optimizers(model, optimizer)
        one = tt.Trainer(convert.torch_model(model, weights, "float64"), factory, dense_refeeding=refeed)
        many = td.SpawnedDataParallelTrainer(convert.torch_model(model, weights, "float64"), factory, processes=ranks,
                                             dense_refeeding=refeed)
        try:
            result = {"one/losses": _torch_train(one, epochs), "many/losses": _torch_train(many, epochs),
                      "replica_max_difference": many.replica_max_difference()}
            result.update({f"one/w/{k}": v for k, v in convert.extract_torch(one.model).items()})
            result.update({f"many/w/{k}": v for k, v in convert.extract_torch(many.model).items()})
        finally:
            many.close()
        _TORCH_RESULTS[name] = result
    return _TORCH_RESULTS[name]


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_jax_two_devices_equal_one_device(name, tmp_path_factory):
    result = jax_case(name, tmp_path_factory)
    assert result["one/losses"].shape == (EPOCHS * len(BATCHES), 2 if CASES[name][2] else 1)
    loss_err, weight_err = _relative_errors(result["many/losses"], _weights(result, "many"),
                                            result["one/losses"], _weights(result, "one"))
    assert loss_err <= TOLERANCE and weight_err <= TOLERANCE, (loss_err, weight_err)
    # every device holds the same bits of every parameter (the ball ones too) and optimizer state
    assert bool(result["replicated"]) and float(result["replica_max_difference"]) == 0.0
    start = convert.init_weights(CASES[name][0], 0, bias_scale=0.1)
    assert all(not np.allclose(v, start[k]) for k, v in _weights(result, "many").items())  # it trained


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_torch_two_processes_equal_one_process(name, ranks):
    result = torch_case(name, ranks)
    loss_err, weight_err = _relative_errors(result["many/losses"], _weights(result, "many"),
                                            result["one/losses"], _weights(result, "one"))
    assert loss_err <= TOLERANCE and weight_err <= TOLERANCE, (loss_err, weight_err)
    assert result["replica_max_difference"] == 0.0  # geoopt stepped every rank's ball parameters alike


@pytest.mark.parametrize("name", CASE_PARAMS)
def test_frameworks_agree_on_two_devices(name, ranks, tmp_path_factory):
    j, t = jax_case(name, tmp_path_factory), torch_case(name, ranks)
    loss_err, weight_err = _relative_errors(j["many/losses"], _weights(j, "many"),
                                            t["many/losses"], _weights(t, "many"))
    assert loss_err <= TOLERANCE and weight_err <= TOLERANCE, (loss_err, weight_err)


def test_jax_program_shards_the_batch_and_all_reduces(tmp_path_factory):
    """Deterministic evidence that the 2-device program splits the work: each device's program sees
    16 of the 32 rows of a batch, and the compiler inserted the all-reduces of the gradient sums."""
    result = jax_case(FAST[0], tmp_path_factory)
    hlo = str(result["hlo"])
    assert bool(result["rows_sharded"])  # the scanned row indices: (steps, rows) with rows split over "data"
    assert hlo.count("all-reduce(") >= 1 or hlo.count("all-reduce-start(") >= 1
    assert f"f64[16,{N_ITEMS}]" in hlo and f"f64[32,{N_ITEMS}]" not in hlo


def test_torch_rank_without_rows_contributes_nothing(ranks):
    """A one-row batch on 2 ranks: rank 1 has no rows (a mean over none would be NaN) and must add a zero
    gradient to DDP's all-reduce, not skip it."""
    model, optimizer, refeed, weights, _ = _case_inputs(FAST[1])
    _, factory = _optimizers(model, optimizer)
    batches = BATCHES + [np.arange(89, 90)]
    epochs = [(batches, _epoch_masks(model, refeed, N_USERS, 0))]
    one = tt.Trainer(convert.torch_model(model, weights, "float64"), factory, dense_refeeding=refeed)
    with td.SpawnedDataParallelTrainer(convert.torch_model(model, weights, "float64"), factory, processes=ranks,
                                       dense_refeeding=refeed) as many:
        losses = _torch_train(many, epochs)
        loss_err, weight_err = _relative_errors(losses, convert.extract_torch(many.model), _torch_train(one, epochs),
                                                convert.extract_torch(one.model))
        assert np.isfinite(losses).all() and loss_err <= TOLERANCE and weight_err <= TOLERANCE
        assert many.replica_max_difference() == 0.0


# ---------------------------------------------------------------------------------------------
# what would fail: DDP as commonly written (each rank back-propagates its own mean loss)


class PlainMeanTrainer(td.DataParallelTrainer):
    """The usual DDP step: loss = this rank's mean, gradients averaged over the ranks. Exact only when
    every rank's share of the loss's normaliser is the same."""

    def _update(self, inputs, input_keep, code_keep):
        self.optimizer.zero_grad(set_to_none=True)
        output = self.ddp(inputs, input_keep=input_keep, code_keep=code_keep)
        loss = self.model.loss(output, inputs)
        loss.backward()
        self.optimizer.step()
        return loss.detach() / self.world_size, output.detach()


def _build_plain_mean(key, pickled_model, optimizer, dense_refeeding):
    import pickle

    model = pickle.loads(pickled_model)
    td._RANK["trainers"][key] = PlainMeanTrainer(model, optimizer, dense_refeeding=dense_refeeding)


def test_plain_mean_ddp_fails_the_check(ranks):
    """Masked MSE divides by the batch's count of ratings: averaging the two ranks' own means weighs
    their rows wrongly, and the parity check sees it (the check can fail)."""
    import pickle

    model, optimizer, refeed, weights, epochs = _case_inputs(FAST[0])
    _, factory = _optimizers(model, optimizer)
    one = tt.Trainer(convert.torch_model(model, weights, "float64"), factory, dense_refeeding=refeed)
    key = -1
    ranks.run(_build_plain_mean, key, pickle.dumps(convert.torch_model(model, weights, "float64")), factory, refeed)
    try:
        batches, masks = epochs[0]
        plain = ranks.run(td._call, key, "train_epoch", torch.from_numpy(MATRIX), batches,
                          tt.StepMasks(*(None if m is None else torch.from_numpy(m) for m in masks)))[0]
    finally:
        ranks.run(td._drop, key)
    reference = one.train_epoch(torch.from_numpy(MATRIX), batches, tt.StepMasks(*masks))
    assert np.abs(plain[1:] - reference[1:]).max() / np.abs(reference).max() > 1e-4  # the steps after the first


# ---------------------------------------------------------------------------------------------
# the API around it


def test_one_device_data_parallel_trainer_is_the_trainer():
    """In this process (1 device): the mesh trainer runs the same programs as the plain one."""
    model, optimizer, refeed, weights, epochs = _case_inputs("ae-adam-multinomial")
    j_opt, _ = _optimizers(model, optimizer)
    plain = jt.Trainer(convert.jax_model(model, weights, "float64"), j_opt, dense_refeeding=refeed)
    mesh = jd.DataParallelTrainer(convert.jax_model(model, weights, "float64"), j_opt, devices=1,
                                  dense_refeeding=refeed)
    assert mesh.n_devices == 1 and mesh.mesh.axis_names == (jd.DATA_AXIS,)
    for batches, masks in epochs:  # another compiled program (replicated outputs): equal up to fusion
        np.testing.assert_allclose(mesh.train_epoch(mesh.put(MATRIX), batches, jt.StepMasks(*masks)),
                                   plain.train_epoch(MATRIX, batches, jt.StepMasks(*masks)), rtol=1e-14)
    np.testing.assert_allclose(mesh.score(MATRIX), plain.score(MATRIX), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(mesh.code(MATRIX), plain.code(MATRIX), rtol=1e-13, atol=1e-15)
    assert mesh.replica_max_difference() == 0.0
    with pytest.raises(ValueError, match="JAX sees"):
        jd.data_mesh(len(jax.devices()) + 1)


def test_weights_written_into_the_jax_trainer_are_used():
    """parity.convert.load_jax writes plain arrays into the State; the next step puts them back on the mesh."""
    model, optimizer, refeed, weights, epochs = _case_inputs("ae-adam-multinomial")
    j_opt, _ = _optimizers(model, optimizer)
    trainer = jd.DataParallelTrainer(convert.jax_model(model, weights, "float64"), j_opt, devices=1,
                                     dense_refeeding=refeed)
    other = convert.init_weights(model, 5, bias_scale=0.1)
    convert.load_jax(trainer.params, other)
    fresh = jt.Trainer(convert.jax_model(model, other, "float64"), j_opt, dense_refeeding=refeed)
    batches, masks = epochs[0]
    np.testing.assert_allclose(trainer.train_epoch(MATRIX, batches, jt.StepMasks(*masks)),
                               fresh.train_epoch(MATRIX, batches, jt.StepMasks(*masks)), rtol=1e-14)


def test_contiguous_shares_cover_the_batch_in_order():
    for n_rows in (0, 1, 2, 25, 32):
        for world in (1, 2, 3, 8):
            shares = [td.contiguous_share(n_rows, r, world) for r in range(world)]
            assert [i for s in shares for i in range(n_rows)[s]] == list(range(n_rows))
            assert [s.stop - s.start for s in shares] == [len(a) for a in np.array_split(np.arange(n_rows), world)]


def test_every_loss_has_a_normaliser():
    import torch_ref.models as tm

    assert set(td.LOSS_NORMALIZERS) == set(tm.LOSSES)
    target = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
    output = torch.rand(2, 3, dtype=torch.float64)
    for name, count in td.LOSS_NORMALIZERS.items():  # each loss is (its sum over the batch) / its count
        halves = [tm.LOSSES[name](output[i:i + 1], target[i:i + 1]) * max(int(count(target[i:i + 1])), 1)
                  for i in range(2)]
        whole = tm.LOSSES[name](output, target) * max(int(count(target)), 1)
        assert float(abs(sum(halves) - whole)) <= 1e-14 * float(abs(whole)), name


def test_host_copies_read_and_write_the_ranks_state(ranks):
    """`model` / `optimizer` of the spawned trainer are rank 0's; what is loaded into them (a checkpoint)
    reaches every rank: training on from there equals a single process resumed the same way."""
    model, optimizer, refeed, weights, epochs = _case_inputs(FAST[1])
    _, factory = _optimizers(model, optimizer)
    one = tt.Trainer(convert.torch_model(model, weights, "float64"), factory, dense_refeeding=refeed)
    with td.SpawnedDataParallelTrainer(convert.torch_model(model, weights, "float64"), factory, processes=ranks,
                                       dense_refeeding=refeed) as many:
        _torch_train(one, epochs[:1])
        _torch_train(many, epochs[:1])
        saved = convert.torch_optimizer_to_arrays(many.optimizer)
        assert isinstance(many.optimizer.state[next(many.model.parameters())]["step"], int)  # geoopt's int step
        other = convert.init_weights(model, 9, bias_scale=0.1)
        convert.load_torch(many.model, other)  # a checkpoint: new weights, the optimizer state kept
        convert.torch_optimizer_from_arrays(many.optimizer, saved)
        convert.load_torch(one.model, other)
        # rank 0 runs 1 torch thread, this process 2: equal up to the order of the matmul sums
        np.testing.assert_allclose(many.score(MATRIX), one.score(MATRIX), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(many.code(MATRIX), one.code(MATRIX), rtol=1e-13, atol=1e-15)
        loss_err, weight_err = _relative_errors(_torch_train(many, epochs[1:]), convert.extract_torch(many.model),
                                                _torch_train(one, epochs[1:]), convert.extract_torch(one.model))
        assert loss_err <= TOLERANCE and weight_err <= TOLERANCE
        assert many.replica_max_difference() == 0.0


@pytest.mark.parametrize("failure, message", [((operator.truediv, 1, 0), "ZeroDivisionError"),
                                              ((time.sleep, 60), "did not answer within 2"),
                                              ((os._exit, 3), "exited with code 3")],
                         ids=["raises", "hangs", "dies"])
def test_a_failing_rank_stops_every_process(failure, message):
    processes = td.RankProcesses(N_DEVICES, timeout=2.0)
    try:
        with pytest.raises(td.RankError, match=message):
            processes.run(*failure, ranks=[1])
        assert all(p.exitcode is not None for p in processes._processes)  # all stopped, not just rank 1
        with pytest.raises(td.RankError, match="closed"):
            processes.run(operator.add, 1, 2)
    finally:
        processes.close()


# ---------------------------------------------------------------------------------------------
# MovieLens: 2 epochs on 1 and 2 devices, the same losses and the same HR@10


@pytest.mark.slow  # ~70 s on a busy 2-core machine, most of it compiling the JAX programs
def test_ml100k_two_devices_train_like_one(require_dataset, ranks, tmp_path):
    from parity import metrics
    from parity.baselines import score_heldout
    from parity.data import batch_order, dense_rows, load_split

    data_dir = require_dataset("ml-100k").parent
    split = load_split(DataConfig(dataset="ml-100k", protocol="seed"), data_dir)
    users = split.fit_users()
    model = ModelConfig(kind="hae", layer_sizes=(split.n_items, 32), activation="tanh", loss="multinomial",
                        input_normalization="l2", input_dropout=0.5, c=0.01)
    optimizer = OptimizerConfig(name="adam", learning_rate=1e-3)
    weights = convert.init_weights(model, 0)
    matrix = dense_rows(split.fit, users, np.float64)
    epochs = [(batch_order(len(users), 128, 0, epoch), _epoch_masks(model, False, len(users), epoch))
              for epoch in range(2)]
    heldout = split.validation
    inputs = dense_rows(split.fit, heldout.users, np.float64)

    position = {user: i for i, user in enumerate(heldout.users)}

    def hr(scores_of_rows) -> metrics.RankingMetrics:
        """HR@10 on the validation users, `scores_of_rows(positions in heldout.users)` scoring them."""
        scores = score_heldout(lambda us: scores_of_rows([position[u] for u in us]), heldout)
        return metrics.evaluate(scores, heldout, 10, n_bootstrap=10)

    j = run_jax_devices(tmp_path, model, optimizer, False, _inputs(model, False, matrix, epochs, weights, inputs))
    _, factory = _optimizers(model, optimizer)
    one = tt.Trainer(convert.torch_model(model, weights, "float64"), factory)
    with td.SpawnedDataParallelTrainer(convert.torch_model(model, weights, "float64"), factory,
                                       processes=ranks) as many:
        t_losses = {}
        for tag, trainer in (("one", one), ("many", many)):
            shared = many.put(matrix) if trainer is many else torch.from_numpy(matrix)
            t_losses[tag] = np.concatenate([trainer.train_epoch(shared, b, tt.StepMasks(*m)) for b, m in epochs])
        t_hr = {tag: hr(lambda at, trainer=trainer: trainer.score(inputs[at])) for tag, trainer in
                (("one", one), ("many", many))}
        t_weights = {"one": convert.extract_torch(one.model), "many": convert.extract_torch(many.model)}
    j_hr = {tag: hr(lambda at, tag=tag: j[f"{tag}/scores"][at]) for tag in ("one", "many")}
    for losses, w, reference, reference_w in [
        (j["many/losses"], _weights(j, "many"), j["one/losses"], _weights(j, "one")),
        (t_losses["many"], t_weights["many"], t_losses["one"], t_weights["one"]),
        (j["many/losses"], _weights(j, "many"), t_losses["many"], t_weights["many"]),
    ]:
        loss_err, weight_err = _relative_errors(losses, w, reference, reference_w)
        assert loss_err <= TOLERANCE and weight_err <= TOLERANCE, (loss_err, weight_err)
    assert j_hr["one"].hr == j_hr["many"].hr == t_hr["one"].hr == t_hr["many"].hr
    assert j_hr["one"].n_users == heldout.n_users
