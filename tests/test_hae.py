"""The hyperbolic autoencoder: JAX against PyTorch + geoopt (layout, forward, gradients, Riemannian
training step for step), its limits, and its training orchestration (saturation statistics, sweep)."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl.models as jm
import jax_impl.optim as jopt
import jax_impl.train as jt
import torch_ref.models as tm
import torch_ref.train as tt
from parity import convert, training
from parity.config import PRESETS, DataConfig, ModelConfig, OptimizerConfig, RunConfig, TrainConfig
from parity.errors import ConfigError
from parity.suites import models as checks

N_USERS, N_ITEMS = 90, 40
RNG = np.random.default_rng(0)
CLICKS = (RNG.random((N_USERS, N_ITEMS)) < 0.15).astype(np.float64)
CLICKS[:, 0] = 1.0  # no empty row
BATCHES = [np.arange(i, min(i + 32, N_USERS)) for i in range(0, N_USERS, 32)]  # 32, 32, 26: a short last batch
HAE = ModelConfig(kind="hae", layer_sizes=(N_ITEMS, 16), activation="tanh", loss="multinomial",
                  input_normalization="l2", input_dropout=0.3, code_dropout=0.2, c=0.5)


@pytest.mark.parametrize("tied", [False, True])
def test_layout_is_the_canonical_one_with_biases_on_the_ball(tied):
    config = dataclasses.replace(HAE, layer_sizes=(20, 8, 4), tied=tied)
    shapes = convert.parameter_shapes(config)
    j = {k: v.shape for k, v in convert.extract_jax(jm.HyperbolicAutoEncoder(config)).items()}
    t = {k: v.shape for k, v in convert.extract_torch(tm.HyperbolicAutoEncoder(config)).items()}
    assert j == t == shapes
    assert convert.ball_parameters(config) == [k for k in shapes if k.endswith(".bias")]
    assert convert.ball_parameters(dataclasses.replace(config, kind="ae")) == []
    from flax import nnx

    state = nnx.state(jm.HyperbolicAutoEncoder(config), nnx.Param)
    on_ball = {".".join(map(str, path)) for path, v in nnx.to_flat_state(state) if isinstance(v, jopt.BallParam)}
    assert on_ball == set(convert.ball_parameters(config))
    torch_on_ball = {name for name, p in tm.HyperbolicAutoEncoder(config).named_parameters() if hasattr(p, "manifold")}
    assert torch_on_ball == set(convert.ball_parameters(config))


def test_random_ball_biases_start_inside_the_ball_and_euclidean_init_is_unchanged():
    config = ModelConfig(kind="hae", layer_sizes=(3706, 600), c=1.0)
    weights = convert.init_weights(config, 3, bias_scale=0.1)
    for name in convert.ball_parameters(config):
        assert np.linalg.norm(weights[name]) <= convert.BALL_INIT_RADIUS + 1e-12
    # the Euclidean model draws exactly what it drew before the ball parameters existed
    ae = ModelConfig(layer_sizes=(30, 8))
    rng = np.random.default_rng(5)
    expected = [rng.uniform(-np.sqrt(6 / 38), np.sqrt(6 / 38), (8, 30)), rng.uniform(-0.1, 0.1, 8),
                rng.uniform(-np.sqrt(6 / 38), np.sqrt(6 / 38), (30, 8)), rng.uniform(-0.1, 0.1, 30)]
    for got, want in zip(convert.init_weights(ae, 5, bias_scale=0.1).values(), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", [{"layer_sizes": (10,)}, {"c": 0.0}, {"input_map": "raw"}, {"output_map": "mlr"},
                                 {"output_scale": -1.0}, {"activation": "gelu"}])
def test_bad_configurations_are_refused_when_built(bad):
    with pytest.raises(ConfigError, match=f"model.{next(iter(bad))}="):
        dataclasses.replace(HAE, **{"layer_sizes": (10, 4), **bad})


def test_the_hyperbolic_model_refuses_a_euclidean_configuration_on_both_sides():
    config = dataclasses.replace(HAE, kind="ae", layer_sizes=(10, 4))
    with pytest.raises(ValueError, match="kind='hae'"):
        jm.HyperbolicAutoEncoder(config)
    with pytest.raises(ValueError, match="kind='hae'"):
        tm.HyperbolicAutoEncoder(config)


CASES = {"float64": ["hae-tangent-c0.001", "hae-deep-tied-elu-lastact-c1", "hae-learn_c-deep-c0.5"],
         "float32": ["hae-tangent-c1", "hae-swish-bce-scale3-c0.1"]}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_loss_and_gradient_parity(dtype):
    records = checks.forward_records(dtype, large=False, kind="hae", only=CASES[dtype])
    assert len(records) == 3 * len(CASES[dtype])
    assert all(r.passed for r in records), [(r.check, r.max_rel_err) for r in records if not r.passed]
    if dtype == "float64":  # the acceptance bound, 1e-9, with room to spare
        assert max(r.max_rel_err for r in records) < 1e-9 / 2
    else:  # away from the boundary both sides are as close to the float64 oracle as to each other
        assert all(r.extra["jax_vs_oracle"] <= r.tolerance for r in records)


def test_the_check_notices_a_wrong_port(monkeypatch):
    """A mutation (the decoder's bias added in Euclidean space instead of by Möbius addition) must
    fail the forward suite."""
    import jax_impl.layers as jl
    from jax_impl import poincare

    def euclidean_bias(x, weight, bias, *, c):
        return poincare.logmap0(poincare.project(poincare.mobius_matvec(weight, x, c=c) + bias, c=c), c=c)

    monkeypatch.setattr(jl, "mobius_linear_logmap0", euclidean_bias)
    records = checks.forward_records("float64", large=False, kind="hae", only=["hae-tangent-c1"])
    assert {r.check for r in records if not r.passed} == {
        "forward/hae-tangent-c1/output", "forward/hae-tangent-c1/loss", "forward/hae-tangent-c1/grad"}


def test_small_curvature_recovers_the_euclidean_autoencoder():
    """c -> 0: the Möbius autoencoder is the Euclidean one with the same weights."""
    ae = ModelConfig(layer_sizes=(N_ITEMS, 16), activation="tanh", loss="multinomial", input_normalization="l2")
    hae = dataclasses.replace(ae, kind="hae", c=1e-7)
    weights = convert.init_weights(ae, 0, bias_scale=0.1)
    x = jnp.asarray(CLICKS[:10])
    expected = np.asarray(convert.jax_model(ae, weights, "float64")(x))
    np.testing.assert_allclose(np.asarray(convert.jax_model(hae, weights, "float64")(x)), expected,
                               rtol=1e-5, atol=1e-6)
    torch_hae = convert.torch_model(hae, weights, "float64")
    np.testing.assert_allclose(torch_hae(torch.from_numpy(CLICKS[:10])).detach().numpy(), expected,
                               rtol=1e-5, atol=1e-6)


def _masks(config, seed):
    r = np.random.default_rng(seed)
    return (r.random((N_USERS, N_ITEMS)) >= config.input_dropout, r.random((N_USERS, config.layer_sizes[-1])) >=
            config.code_dropout, None, None)


@pytest.mark.parametrize("opt", [OptimizerConfig(name="adam", learning_rate=1e-2, weight_decay=1e-3),
                                 pytest.param(OptimizerConfig(name="sgd", learning_rate=5e-2, momentum=0.9,
                                                              nesterov=True), marks=pytest.mark.slow)],
                         ids=["adam-wd", "sgd-nesterov"])
def test_riemannian_trainers_agree_step_for_step_in_float64(opt):
    """jax_impl.optim against geoopt through the whole model, dropout on, a short last batch."""
    weights = convert.init_weights(HAE, 0, bias_scale=0.1)
    j = jt.Trainer(convert.jax_model(HAE, weights, "float64"), jt.riemannian_optimizer(opt))
    t = tt.Trainer(convert.torch_model(HAE, weights, "float64"), tt.riemannian_optimizer(opt))
    for epoch in range(3):
        masks = _masks(HAE, epoch)
        j_loss = j.train_epoch(jnp.asarray(CLICKS), BATCHES, jt.StepMasks(*masks))
        t_loss = t.train_epoch(torch.from_numpy(CLICKS), BATCHES, tt.StepMasks(*masks))
        np.testing.assert_allclose(j_loss, t_loss, rtol=1e-12)
    j_w, t_w = convert.extract_jax(j.params), convert.extract_torch(t.model)
    for name in t_w:
        assert np.abs(j_w[name] - t_w[name]).max() <= 1e-11 * np.abs(t_w[name]).max(), name
    for name in convert.ball_parameters(HAE):  # moved, and still inside the ball
        assert not np.allclose(j_w[name], weights[name]) and HAE.c * np.sum(j_w[name] ** 2) < 1.0
    np.testing.assert_allclose(j.code(CLICKS), t.code(CLICKS), rtol=1e-11, atol=1e-14)


@pytest.mark.slow  # ~20-40 s on 2 cores
def test_learnable_curvature_trains_alike():
    """c = softplus(ball.isp_c) learned on both sides: geoopt steps the ball biases with its ball's c of
    before the step (the ball is the model's last parameter), jax_impl.optim with the labels of
    `learned_curvature`; a ball registered first on the PyTorch side would part the two."""
    config = dataclasses.replace(HAE, learn_c=True)
    opt = OptimizerConfig(name="sgd", learning_rate=5e-2, momentum=0.9)  # Adam: the models suite's training row
    weights = convert.init_weights(config, 1, bias_scale=0.1)
    assert list(weights)[-1] == "ball.isp_c" and np.logaddexp(0, weights["ball.isp_c"]) == pytest.approx(config.c)
    j = jt.Trainer(convert.jax_model(config, weights, "float64"),
                   jt.riemannian_optimizer(opt, curvature=jm.learned_curvature))
    t = tt.Trainer(convert.torch_model(config, weights, "float64"), tt.riemannian_optimizer(opt))
    assert [name for name, _ in t.model.named_parameters()][-1] == "ball.isp_c"
    for epoch in range(3):
        masks = _masks(config, epoch)
        np.testing.assert_allclose(j.train_epoch(jnp.asarray(CLICKS), BATCHES, jt.StepMasks(*masks)),
                                   t.train_epoch(torch.from_numpy(CLICKS), BATCHES, tt.StepMasks(*masks)), rtol=1e-12)
    j_w, t_w = convert.extract_jax(j.params), convert.extract_torch(t.model)
    assert j_w["ball.isp_c"] != weights["ball.isp_c"]  # the curvature moved
    for name in t_w:
        assert np.abs(j_w[name] - t_w[name]).max() <= 1e-11 * np.abs(t_w[name]).max(), name
    assert training.current_curvature(config, j_w) == pytest.approx(float(tm.learned_curvature(t.model).detach()),
                                                                     rel=1e-12)
    # the order matters: with the ball first, geoopt moves the biases with the curvature after the step
    first = convert.torch_model(config, weights, "float64")
    first._modules = dict([("ball", first._modules.pop("ball"))] + list(first._modules.items()))
    parted = tt.Trainer(first, tt.riemannian_optimizer(opt))
    j = jt.Trainer(convert.jax_model(config, weights, "float64"),
                   jt.riemannian_optimizer(opt, curvature=jm.learned_curvature))
    masks = _masks(config, 0)
    gap = np.abs(j.train_epoch(jnp.asarray(CLICKS), BATCHES, jt.StepMasks(*masks))
                 - parted.train_epoch(torch.from_numpy(CLICKS), BATCHES, tt.StepMasks(*masks)))
    assert gap.max() > 1e-10


def test_jax_trainer_applies_ball_updates_by_itself():
    weights = convert.init_weights(HAE, 0)
    trainer = jt.Trainer(convert.jax_model(HAE, weights, "float64"), jt.riemannian_optimizer(OptimizerConfig()))
    assert trainer._static["apply_updates"] is jopt.apply_updates
    euclidean = jt.Trainer(convert.jax_model(dataclasses.replace(HAE, kind="ae"), weights, "float64"),
                           jt.euclidean_optimizer(OptimizerConfig()))
    assert euclidean._static["apply_updates"] is not jopt.apply_updates


@pytest.mark.slow  # long on 2 cores; `pytest -m slow` and CI run it
def test_training_parity_on_ml100k_subset_float64(require_dataset):
    require_dataset("ml-100k")
    from parity.data import dense_rows, load_dataset

    data = load_dataset("ml-100k")
    matrix = (dense_rows(data.matrix(), np.arange(200), np.float64) != 0).astype(np.float64)
    case = checks.TrainingCase("small", dataclasses.replace(HAE, layer_sizes=(data.n_items, 32), input_dropout=0.0,
                                                            code_dropout=0.0, c=1.0),
                               OptimizerConfig(name="adam"), implicit=True, batch_size=64)
    (j_loss, j_w), (t_loss, t_w) = checks.train_both(case, matrix, "float64", epochs=3)
    assert j_loss.shape == (12, 1)
    assert np.max(np.abs(j_loss - t_loss) / np.abs(t_loss)) <= 1e-7  # the acceptance bound
    assert all(np.abs(j_w[k] - t_w[k]).max() <= 1e-7 * np.abs(t_w[k]).max() for k in t_w)


# ---------------------------------------------------------------------------------------------
# orchestration


def test_saturation_statistics():
    c = 4.0  # radius 0.5
    codes = np.array([[0.0, 0.0], [0.25, 0.0], [0.0, 0.5 * 0.996], [0.3, 0.4 * 0.996]])
    stats = training.saturation_stats(codes, c, "float32")
    r = np.array([0.0, 0.5, 0.996, np.hypot(0.6, 0.8 * 0.996)])
    assert stats["norm_mean"] == pytest.approx(r.mean()) and stats["norm_max"] == pytest.approx(r.max())
    assert stats["boundary_fraction"] == 0.5 and stats["limit"] == 0.996
    assert training.saturation_stats(codes, c, "float64")["boundary_fraction"] == 0.0  # float64's limit: 1 - 1e-5


_SPLIT = {}


def _split():
    if "s" not in _SPLIT:
        from parity.data import load_dataset, split_neumf

        _SPLIT["s"] = split_neumf(load_dataset("ml-100k"))
    return _SPLIT["s"]


def _run(c: float = 0.5) -> RunConfig:
    return RunConfig(
        model=dataclasses.replace(HAE, layer_sizes=(0, 24), c=c, code_dropout=0.0),
        optimizer=OptimizerConfig(name="adam", learning_rate=1e-3),
        data=DataConfig(dataset="ml-100k", protocol="neumf"),
        train=TrainConfig(epochs=2, batch_size=128),
    )


@pytest.mark.slow  # ~20-40 s on 2 cores
def test_train_hae_both_frameworks_saturation_and_resume(tmp_path, require_dataset):
    require_dataset("ml-100k")
    whole = training.run_training(_run(), frameworks=["jax", "torch"], seeds=[0], out_dir=tmp_path / "whole",
                                  progress=False, split=_split())
    jax_run, torch_run = whole["runs"]
    for a, b in zip(jax_run["history"], torch_run["history"]):  # float32, same batches and masks
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert set(a["code_saturation"]) == {"norm_mean", "norm_max", "boundary_fraction", "limit"}
        assert 0.0 < a["code_saturation"]["norm_mean"] <= a["code_saturation"]["norm_max"] < 1.0
        assert a["code_saturation"]["norm_max"] == pytest.approx(b["code_saturation"]["norm_max"], rel=1e-4)
        assert 0.0 < a["output_saturation"]["norm_mean"] <= a["output_saturation"]["norm_max"] < 1.0
    assert jax_run["code_saturation"] == jax_run["history"][jax_run["best_epoch"]]["code_saturation"]
    assert jax_run["output_saturation"] == jax_run["history"][jax_run["best_epoch"]]["output_saturation"]
    assert abs(whole["summary"]["max_abs_test_hr_diff"]) <= 0.01
    training.run_training(dataclasses.replace(_run(), train=TrainConfig(epochs=1, batch_size=128)),
                          frameworks=["jax", "torch"], seeds=[0], out_dir=tmp_path / "cut", progress=False,
                          split=_split())
    resumed = training.run_training(_run(), frameworks=["jax", "torch"], seeds=[0], out_dir=tmp_path / "cut",
                                    existing="resume", progress=False, split=_split())
    strip = lambda r: {k: v for k, v in r.items() if k not in ("resumed_from_epoch", "checkpoints", "history")} | {
        "history": [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in r["history"]]}
    assert strip(resumed["runs"][0]) == strip(whole["runs"][0])  # JAX: bit for bit
    assert strip(resumed["runs"][1]) == strip(whole["runs"][1])  # PyTorch: bit for bit, in the same process too


@pytest.mark.slow  # ~20-40 s on 2 cores
def test_sweep_writes_json_plot_and_report_section(tmp_path, require_dataset):
    require_dataset("ml-100k")
    from parity import report
    from parity.cli import main

    out = tmp_path / "sweep"
    args = ["train", "--model", "hae", "--dataset", "ml-100k", "--protocol", "neumf", "--epochs", "1",
            "--set", "model.layer_sizes=[0,8]", "--set", "model.loss=multinomial", "--set", "model.activation=tanh",
            "--sweep", "model.c=0.01,1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    payload = json.loads((out / "sweep.json").read_text())
    assert payload["command"] == "sweep" and payload["field"] == "model.c" and payload["values"] == [0.01, 1]
    assert [p["value"] for p in payload["points"]] == [0.01, 1]
    jax_points = [p["frameworks"]["jax"] for p in payload["points"]]
    assert all(e["all_losses_finite"] and "code_saturation" in e for e in jax_points)
    # a larger curvature puts the same network's code closer to the boundary
    assert jax_points[1]["code_saturation"]["norm_mean"] > jax_points[0]["code_saturation"]["norm_mean"]
    assert payload["chosen_by_validation"] in (0.01, 1) and (out / "sweep.png").stat().st_size > 0
    assert (out / "c=1" / "train.json").exists()
    summary = report.write_report([out / "sweep.json"], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Sweep over model.c" in text and summary["sweeps"][0]["field"] == "model.c"
    train_report = report.write_report([out / "c=1" / "train.json"], tmp_path / "report-train")
    assert "Saturation at the best validation epoch" in (tmp_path / "report-train" / "report.md").read_text()
    assert train_report["quality"][0]["kind"] == "hae"
    assert main(["train", "--sweep", "model.c=1", "--dataset", "ml-100k"]) == 2  # one value: a message, no traceback


def test_hae_preset_is_valid_and_names_the_design():
    preset = PRESETS["hae-neumf"]
    run = RunConfig.from_dict({k: v for k, v in preset.items() if k != "description"})
    assert run.model.kind == "hae" and run.model.input_map == "tangent" and run.model.c > 0
    sized = dataclasses.replace(run.model, layer_sizes=(40, *run.model.layer_sizes[1:]))
    jm.HyperbolicAutoEncoder(sized), tm.HyperbolicAutoEncoder(sized)  # both sides build it


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_models_suite_hae_rows(require_dataset, dtype):
    """`poincare-parity models`' hyperbolic rows: every forward case (the ML-1M-sized one included)
    and the 3-epoch ML-100K training cases."""
    require_dataset("ml-100k")
    records = checks.forward_records(dtype, large=True, kind="hae") + checks.training_records(dtype, kind="hae")
    assert len(records) == 3 * len(checks.hae_forward_cases(True)) + 2 * len(checks.hae_training_cases(1682))
    assert all(r.passed for r in records), [(r.check, r.max_rel_err) for r in records if not r.passed]
