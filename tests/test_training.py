"""Training: the JAX and PyTorch trainers step for step, and the `train` orchestration (checkpoints,
resume, NaN stop, early stopping, CLI errors)."""

from __future__ import annotations

import dataclasses
import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl.train as jt
import torch_ref.train as tt
from parity import backend, convert, training
from parity.checkpoint import load_checkpoint
from parity.cli import main
from parity.commands.train import resolve_config
from parity.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig, TrainConfig
from parity.data import epoch_masks
from parity.errors import ConfigError, TrainingDiverged
from parity.suites import models as checks

N_USERS, N_ITEMS = 90, 40
RNG = np.random.default_rng(0)
MATRIX = (RNG.random((N_USERS, N_ITEMS)) < 0.15) * RNG.integers(1, 6, (N_USERS, N_ITEMS)).astype(np.float64)
BATCHES = [np.arange(i, min(i + 32, N_USERS)) for i in range(0, N_USERS, 32)]  # 32, 32, 26: a short last batch

OPTIMIZERS = [
    OptimizerConfig(name="adam", learning_rate=1e-2),
    OptimizerConfig(name="adam", learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6, weight_decay=1e-3),
    OptimizerConfig(name="sgd", learning_rate=1e-2),
    OptimizerConfig(name="sgd", learning_rate=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3),
]


def _masks(config: ModelConfig, refeed: bool, seed: int = 0):
    r = np.random.default_rng(seed)
    draw = lambda rate, width: None if rate == 0 else r.random((N_USERS, width)) >= rate
    code = config.layer_sizes[-1]
    pair = [draw(config.input_dropout, N_ITEMS), draw(config.code_dropout, code)]
    refeed_pair = [draw(config.input_dropout, N_ITEMS), draw(config.code_dropout, code)] if refeed else [None, None]
    return tuple(pair + refeed_pair)


@pytest.mark.parametrize("opt, refeed", [(OPTIMIZERS[0], False), (OPTIMIZERS[1], True), (OPTIMIZERS[2], True),
                                         (OPTIMIZERS[3], False)], ids=["adam", "adam-wd-refeed", "sgd-refeed",
                                                                       "sgd-nesterov-wd"])
def test_trainers_agree_step_for_step_in_float64(opt, refeed):
    config = ModelConfig(layer_sizes=(N_ITEMS, 16, 8), activation="elu", input_dropout=0.2, code_dropout=0.5)
    weights = convert.init_weights(config, 0)
    j = jt.Trainer(convert.jax_model(config, weights, "float64"), jt.euclidean_optimizer(opt), dense_refeeding=refeed)
    t = tt.Trainer(convert.torch_model(config, weights, "float64"), tt.euclidean_optimizer(opt), dense_refeeding=refeed)
    for epoch in range(2):
        masks = _masks(config, refeed, epoch)
        j_loss = j.train_epoch(jnp.asarray(MATRIX), BATCHES, jt.StepMasks(*masks))
        t_loss = t.train_epoch(torch.from_numpy(MATRIX), BATCHES, tt.StepMasks(*masks))
        assert j_loss.shape == t_loss.shape == (3, 2 if refeed else 1)
        np.testing.assert_allclose(j_loss, t_loss, rtol=1e-12)
    j_w, t_w = convert.extract_jax(j.params), convert.extract_torch(t.model)
    for name in t_w:  # normwise: entries are sums that may cancel
        assert np.abs(j_w[name] - t_w[name]).max() <= 1e-12 * np.abs(t_w[name]).max()


def test_scanned_epoch_equals_step_by_step():
    config = ModelConfig(layer_sizes=(N_ITEMS, 16), activation="tanh", loss="multinomial", input_dropout=0.3)
    weights = convert.init_weights(config, 2)
    opt = jt.euclidean_optimizer(OPTIMIZERS[0])
    scanned = jt.Trainer(convert.jax_model(config, weights, "float64"), opt)
    stepped = jt.Trainer(convert.jax_model(config, weights, "float64"), opt)
    masks = _masks(config, False)
    epoch_losses = scanned.train_epoch(MATRIX, BATCHES, jt.StepMasks(*masks))
    start, step_losses = 0, []
    for rows in BATCHES:
        step_losses.append(stepped.train_step(MATRIX[rows], jt.StepMasks(masks[0][start : start + len(rows)])))
        start += len(rows)
    np.testing.assert_allclose(epoch_losses, np.stack(step_losses), rtol=1e-13)
    np.testing.assert_allclose(scanned.score(MATRIX), stepped.score(MATRIX), rtol=1e-12, atol=1e-14)


def test_stepwise_epoch_equals_scanned_epoch_and_leaves_the_model_intact():
    config = ModelConfig(layer_sizes=(N_ITEMS, 16), activation="tanh", loss="multinomial", input_dropout=0.3)
    weights = convert.init_weights(config, 3)
    opt = jt.euclidean_optimizer(OPTIMIZERS[0])
    model = convert.jax_model(config, weights, "float64")
    scanned = jt.Trainer(model, opt)
    stepwise = jt.Trainer(convert.jax_model(config, weights, "float64"), opt)
    masks = jt.StepMasks(*_masks(config, False))
    for _ in range(2):  # the second epoch runs on the donated buffers of the first
        np.testing.assert_allclose(stepwise.train_epoch_stepwise(MATRIX, BATCHES, masks),
                                   scanned.train_epoch(MATRIX, BATCHES, masks), rtol=1e-13)
    np.testing.assert_allclose(stepwise.score(MATRIX), scanned.score(MATRIX), rtol=1e-12, atol=1e-14)
    # the steps donate the trainer's buffers, never the caller's model's
    np.testing.assert_array_equal(convert.extract_jax(model)["encoder.0.weight"], weights["encoder.0.weight"])


def test_adam_first_step_is_minus_lr_times_sign_of_gradient():
    """Both libraries: m_hat = g, v_hat = g^2 after one step, so the update is -lr g / (|g| + eps):
    eps outside the square root, after both bias corrections (|step| is lr within eps / |g| < 1e-4)."""
    config = ModelConfig(layer_sizes=(N_ITEMS, 8), activation="identity", loss="dense_mse")
    weights = convert.init_weights(config, 0, bias_scale=0.1)
    opt = OptimizerConfig(name="adam", learning_rate=0.1, eps=1e-8)
    steps = []
    for trainer, read in [
        (jt.Trainer(convert.jax_model(config, weights, "float64"), jt.euclidean_optimizer(opt)),
         lambda tr: convert.extract_jax(tr.params)),
        (tt.Trainer(convert.torch_model(config, weights, "float64"), tt.euclidean_optimizer(opt)),
         lambda tr: convert.extract_torch(tr.model)),
    ]:
        trainer.train_step(MATRIX[:10])
        steps.append(read(trainer)["decoder.0.bias"] - weights["decoder.0.bias"])
        np.testing.assert_allclose(np.abs(steps[-1]), 0.1, rtol=1e-4)
    np.testing.assert_allclose(steps[0], steps[1], rtol=1e-12)


@pytest.mark.parametrize("bad", [OptimizerConfig(name="adam", amsgrad=True), OptimizerConfig(name="sgd", dampening=0.1),
                                 OptimizerConfig(name="sgd", exact=True)])
def test_optimizer_options_the_two_libraries_disagree_on_are_refused(bad):
    with pytest.raises(ValueError):
        jt.euclidean_optimizer(bad)
    with pytest.raises(ValueError):
        tt.euclidean_optimizer(bad)
    with pytest.raises(ConfigError, match="Euclidean autoencoder"):  # before any data is read
        RunConfig(ModelConfig(), bad, DataConfig(), TrainConfig())


@pytest.mark.parametrize("fields, message", [
    ({"name": "sgd", "nesterov": True}, "nesterov=true needs optimizer.momentum > 0"),
    ({"name": "lbfgs"}, "optimizer.name='lbfgs': expected one of sgd, adam"),
    ({"learning_rate": -1.0}, "optimizer.learning_rate=-1.0: expected a number >= 0"),
])
def test_invalid_optimizer_options_are_refused_when_the_config_is_built(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        OptimizerConfig(**fields)


def test_epoch_masks_are_a_function_of_seed_and_epoch():
    model = ModelConfig(layer_sizes=(N_ITEMS, 8), input_dropout=0.5, code_dropout=0.25)
    train = TrainConfig(dense_refeeding=True)
    a = epoch_masks(model, train, 0, 3, 50)
    b = epoch_masks(model, train, 0, 3, 50)
    c = epoch_masks(model, train, 0, 4, 50)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], a[2])
    assert a[0].shape == (50, N_ITEMS) and a[1].shape == (50, 8)
    assert abs(a[0].mean() - 0.5) < 0.05 and abs(a[1].mean() - 0.75) < 0.1
    assert epoch_masks(ModelConfig(layer_sizes=(N_ITEMS, 8)), TrainConfig(), 0, 0, 5) == (None,) * 4


# ---------------------------------------------------------------------------------------------
# the training-parity suite on real data


def test_training_parity_on_ml100k_subset_float64(require_dataset):
    require_dataset("ml-100k")
    from parity.data import dense_rows, load_dataset

    data = load_dataset("ml-100k")
    matrix = dense_rows(data.matrix(), np.arange(200), np.float64)
    case = checks.TrainingCase("small", ModelConfig(layer_sizes=(data.n_items, 32, 16), activation="selu"),
                               OptimizerConfig(name="adam"), implicit=False, dense_refeeding=True, batch_size=64)
    (j_loss, j_w), (t_loss, t_w) = checks.train_both(case, matrix, "float64", epochs=3)
    assert j_loss.shape == (12, 2)
    assert np.max(np.abs(j_loss - t_loss) / np.abs(t_loss)) <= 1e-8  # the acceptance bound
    assert all(np.abs(j_w[k] - t_w[k]).max() <= 1e-8 * np.abs(t_w[k]).max() for k in t_w)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_training_parity_suite_ml100k(require_dataset, dtype):
    require_dataset("ml-100k")
    records = checks.training_records(dtype)
    assert len(records) == 6 and all(r.passed for r in records)


# ---------------------------------------------------------------------------------------------
# orchestration: `poincare-parity train`


def _run(tmp_path, epochs=3, frameworks=("jax",), patience=None, lr=1e-3, resume=False, name="run", existing=None):
    run = RunConfig(
        model=ModelConfig(layer_sizes=(0, 24), activation="tanh", loss="multinomial", input_dropout=0.3),
        optimizer=OptimizerConfig(name="adam", learning_rate=lr),
        data=DataConfig(dataset="ml-100k", protocol="neumf"),
        train=TrainConfig(epochs=epochs, batch_size=128, early_stopping_patience=patience),
    )
    existing = existing or ("resume" if resume else "refuse")
    return training.run_training(run, frameworks=list(frameworks), seeds=[0], out_dir=tmp_path / name,
                                 existing=existing, progress=False, split=_split())


_SPLIT = {}


def _split():
    if "s" not in _SPLIT:
        from parity.data import load_dataset, split_neumf

        _SPLIT["s"] = split_neumf(load_dataset("ml-100k"))
    return _SPLIT["s"]


def _strip_times(result):
    for r in result["runs"]:
        for row in r["history"]:
            row.pop("seconds_train"), row.pop("seconds_total")
        r.pop("resumed_from_epoch"), r.pop("checkpoints")
    return result


def test_both_frameworks_train_alike_and_write_checkpoints(tmp_path, require_dataset):
    require_dataset("ml-100k")
    result = _run(tmp_path, epochs=2, frameworks=("jax", "torch"))
    jax_run, torch_run = result["runs"]
    assert [h["epoch"] for h in jax_run["history"]] == [0, 1]
    for a, b in zip(jax_run["history"], torch_run["history"]):  # float32, same batches and masks
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert abs(result["summary"]["max_abs_test_hr_diff"]) <= 0.01
    assert 0.0 < jax_run["test"]["hr"] <= 1.0 and jax_run["test"]["n_users"] == _split().test.n_users
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "jax-seed0-best.npz", "jax-seed0-last.npz", "torch-seed0-best.npz", "torch-seed0-last.npz"]
    _, optimizer, meta = load_checkpoint(folder / "jax-seed0-last.npz")
    assert meta["state"]["epoch"] == 1 and meta["state"]["finished"] and optimizer


@pytest.mark.slow  # long on 2 cores; `pytest -m slow` and CI run it
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, require_dataset):
    require_dataset("ml-100k")
    whole = _run(tmp_path, epochs=2, name="whole", frameworks=("jax", "torch"))
    _run(tmp_path, epochs=1, name="cut", frameworks=("jax", "torch"))
    resumed = _run(tmp_path, epochs=2, name="cut", resume=True, frameworks=("jax", "torch"))
    assert [r["resumed_from_epoch"] for r in resumed["runs"]] == [0, 0]
    assert _strip_times(resumed)["runs"] == _strip_times(whole)["runs"]
    for fw in ("jax", "torch"):
        a = load_checkpoint(tmp_path / "whole" / "checkpoints" / f"{fw}-seed0-last.npz")
        b = load_checkpoint(tmp_path / "cut" / "checkpoints" / f"{fw}-seed0-last.npz")
        for name in a[0]:
            np.testing.assert_array_equal(a[0][name], b[0][name])
        for name in a[1]:
            np.testing.assert_array_equal(a[1][name], b[1][name])
    assert not list((tmp_path / "cut" / "checkpoints").glob("*.tmp"))


def test_resume_refuses_another_configuration(tmp_path, require_dataset):
    require_dataset("ml-100k")
    _run(tmp_path, epochs=1)
    with pytest.raises(ValueError, match="another configuration"):
        _run(tmp_path, epochs=2, lr=5e-3, resume=True)


def test_nan_loss_stops_with_epoch_step_and_keeps_the_last_good_checkpoint(tmp_path, require_dataset, monkeypatch):
    require_dataset("ml-100k")
    real = backend.JaxSession.train_epoch
    calls = {"n": 0}

    def poisoned(self, matrix, batches, masks, **kwargs):
        losses = np.array(real(self, matrix, batches, masks, **kwargs))
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 1 goes bad at its 3rd step
            losses[2:] = np.nan
        return losses

    monkeypatch.setattr(backend.JaxSession, "train_epoch", poisoned)
    last = tmp_path / "run" / "checkpoints" / "jax-seed0-last.npz"
    with pytest.raises(TrainingDiverged) as caught:
        _run(tmp_path, epochs=3)
    assert (caught.value.epoch, caught.value.step) == (1, 2)
    assert caught.value.checkpoint == last and "epoch 1, step 2" in str(caught.value)
    weights, _, meta = load_checkpoint(last)
    assert meta["state"]["epoch"] == 0 and all(np.isfinite(w).all() for w in weights.values())


def test_early_stopping_on_validation_hr(tmp_path, require_dataset):
    require_dataset("ml-100k")
    result = _run(tmp_path, epochs=10, patience=2, lr=0.0)  # nothing learns: epoch 0 stays best
    run = result["runs"][0]
    assert run["stopped_early"] and run["epochs_run"] == 3 and run["best_epoch"] == 0


def test_cli_errors_are_messages_not_tracebacks(capsys):
    assert main(["train", "--preset", "no-such-preset"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["train", "--set", "activation=tanh"]) == 2
    assert "SECTION.FIELD=VALUE" in capsys.readouterr().err
    assert main(["train", "--set", "model.colour=red"]) == 2
    assert "unknown model field(s) colour" in capsys.readouterr().err
    assert main(["train", "--list-presets"]) == 0
    assert "ae-neumf" in capsys.readouterr().out


def test_cli_train_writes_json(tmp_path, require_dataset, capsys):
    require_dataset("ml-100k")
    out = tmp_path / "cli"
    code = main(["train", "--dataset", "ml-100k", "--protocol", "seed", "--framework", "both", "--epochs", "1",
                 "--set", "model.layer_sizes=[0,16]", "--out", str(out), "--no-progress",
                 "--json", str(tmp_path / "copy.json")])
    assert code == 0
    result = json.loads((out / "train.json").read_text())
    assert result == json.loads((tmp_path / "copy.json").read_text())
    assert result["config"]["model"]["layer_sizes"] == [1682, 16] and result["config"]["data"]["protocol"] == "seed"
    assert {r["framework"] for r in result["runs"]} == {"jax", "torch"}
    assert "test HR@10" in capsys.readouterr().out


def test_presets_are_valid_configurations():
    from parity.config import PRESETS

    for name, preset in PRESETS.items():
        run = RunConfig.from_dict({k: v for k, v in preset.items() if k != "description"})
        assert run.model.kind in ("ae", "hae") and preset["description"], name
        dataclasses.replace(run.model)  # frozen dataclasses build


def test_configuration_precedence_preset_then_flags_then_set():
    from parity.cli import build_parser

    args = build_parser().parse_args(["train", "--preset", "ae-neumf", "--epochs", "7", "--lr", "0.01",
                                      "--set", "optimizer.learning_rate=0.02", "--set", "model.layer_sizes=[0,32,8]",
                                      "--set", "train.dense_refeeding=true", "--dataset", "ml-100k"])
    run = resolve_config(args)
    assert run.train.epochs == 7 and run.optimizer.learning_rate == 0.02  # --set wins over --lr
    assert run.model.layer_sizes == (0, 32, 8) and run.train.dense_refeeding is True
    assert run.model.activation == "tanh" and run.model.input_normalization == "l2"  # from the preset
    assert run.data.dataset == "ml-100k" and run.data.protocol == "neumf"  # the preset's protocol stays
    plain = resolve_config(build_parser().parse_args(["train", "--dataset", "ml-100k"]))
    assert plain.data.protocol == "seed" and plain.model == ModelConfig()
