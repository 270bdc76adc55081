"""Data parallelism in the harness: `parity.backend` sessions on N devices, `train --devices N` (checkpoints
across device counts included) and `models --devices N` (`parity.suites.distributed`).

JAX on 2 devices runs in a subprocess (XLA_FLAGS=--xla_force_host_platform_device_count=2 must be set
before JAX starts; this pytest process keeps its one CPU device); PyTorch runs 2 gloo processes on
127.0.0.1 from here. float64 throughout: N devices equal 1 device to 1e-10 (relative: losses entrywise,
parameters normwise), measured 1e-16 to 1e-13.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from parity import backend, convert
from parity.cli import main
from parity.compare import Tolerance, compare
from parity.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig, TrainConfig
from parity.suites import distributed

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-10
SUBPROCESS_TIMEOUT = 900  # seconds; a 2-device JAX run compiles its programs on a busy 2-core machine

N_USERS, N_ITEMS = 90, 40
RNG = np.random.default_rng(0)
MATRIX = (RNG.random((N_USERS, N_ITEMS)) < 0.15) * RNG.integers(1, 6, (N_USERS, N_ITEMS)).astype(np.float64)
MATRIX[:, 0] = 1.0  # no empty row (the multinomial target needs a click)
RUN = RunConfig(ModelConfig(kind="hae", layer_sizes=(N_ITEMS, 16), activation="tanh", loss="multinomial",
                            input_normalization="l2", input_dropout=0.3, code_dropout=0.2, c=0.5, learn_c=True),
                OptimizerConfig(name="adam", learning_rate=1e-2, weight_decay=1e-3), DataConfig(),
                TrainConfig(batch_size=32, dtype="float64", dense_refeeding=True))


def _relative(a_losses, a_weights, b_losses, b_weights) -> tuple[float, float]:
    """(largest entrywise relative loss difference, largest normwise relative parameter difference)."""
    loss = float(np.max(np.abs(a_losses - b_losses) / np.abs(b_losses)))
    weights = max(float(np.abs(a_weights[k] - b_weights[k]).max() / np.abs(b_weights[k]).max()) for k in b_weights)
    return loss, weights


def _env(devices: int) -> dict[str, str]:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS=flags)


# ---------------------------------------------------------------------------------------------
# the session interface on N devices: the same calls, the same numbers, state in and out across counts

# The script every framework runs (PyTorch here, JAX in a subprocess with 2 host devices): epoch e on
# counts[e] devices, each session starting from the weights and optimizer state the previous one wrote
# (a checkpoint written on one count, resumed on another); against all epochs on one device.
_SESSIONS = textwrap.dedent("""
    import numpy as np
    from parity import backend
    from parity.data import batch_order, epoch_masks

    def across_counts(framework, run, weights, matrix, counts):
        side = backend.get(framework)
        epochs = [(batch_order(len(matrix), run.train.batch_size, 0, e),
                   epoch_masks(run.model, run.train, 0, e, len(matrix))) for e in range(len(counts))]
        out = {"devices": [], "replicas": []}
        with side.session(run, weights) as one:
            m = one.put(matrix)
            out["one/losses"] = np.concatenate([one.train_epoch(m, batches, masks) for batches, masks in epochs])
            out["one/weights"], out["one/scores"], out["one/codes"] = one.weights(), one.score(matrix), one.code(matrix)
        losses, saved = [], None
        for (batches, masks), count in zip(epochs, counts):
            with side.session(run, weights, devices=count) as session:  # the start weights, then the checkpoint
                if saved is not None:
                    session.load_weights(saved[0])
                    session.load_optimizer_arrays(saved[1])
                losses.append(session.train_epoch(session.put(matrix), batches, masks))
                saved = session.weights(), session.optimizer_arrays()
                out["devices"].append(session.devices)
                out["replicas"].append(session.replica_max_difference())
                out["many/scores"], out["many/codes"] = session.score(matrix), session.code(matrix)
        out["many/losses"], out["many/weights"] = np.concatenate(losses), saved[0]
        return out
""")

_JAX_SESSIONS = _SESSIONS + textwrap.dedent("""
    if __name__ == "__main__":
        import json, pickle, sys
        import jax
        from parity import config as cfg

        backend.enable_float64()
        spec = json.loads(sys.argv[1])
        data = dict(np.load(sys.argv[2]))
        run = cfg.RunConfig.from_dict(spec["run"])
        weights = {k[2:]: v for k, v in data.items() if k.startswith("w/")}
        assert len(jax.devices("cpu")) == 2, jax.devices()
        with open(sys.argv[3], "wb") as handle:
            pickle.dump(across_counts("jax", run, weights, data["matrix"], spec["counts"]), handle)
""")

COUNTS = [2, 1, 2]  # a state written on 2 devices continues on 1, and one written on 1 continues on 2


def _check_across_counts(out: dict) -> None:
    assert out["devices"] == COUNTS
    assert out["replicas"] == [0.0, 0.0, 0.0]  # every device holds the same bits of the state
    loss_err, weight_err = _relative(out["many/losses"], out["many/weights"], out["one/losses"], out["one/weights"])
    assert loss_err <= TOLERANCE and weight_err <= TOLERANCE, (loss_err, weight_err)
    for what in ("scores", "codes"):  # the model after training, dropout off, on the whole matrix
        assert compare(out[f"many/{what}"], out[f"one/{what}"], Tolerance(1e-10, 1e-12)).max_rel_err <= 1e-10
    start = convert.init_weights(RUN.model, 0, bias_scale=0.1)
    assert all(not np.allclose(out["many/weights"][k], start[k]) for k in start)  # it trained


@pytest.fixture(scope="module")
def session_script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sessions") / "sessions.py"
    path.write_text(_JAX_SESSIONS)
    return path


def test_torch_sessions_on_two_devices_train_like_one_and_checkpoints_cross_counts():
    """2 gloo rank processes started once (`device_group`) for every session inside it."""
    namespace: dict = {}
    exec(compile(_SESSIONS, "sessions", "exec"), namespace)
    weights = convert.init_weights(RUN.model, 0, bias_scale=0.1)
    torch_backend = backend.get("torch")
    with torch_backend.device_group(2):
        processes = torch_backend._groups[(2, "cpu")]
        _check_across_counts(namespace["across_counts"]("torch", RUN, weights, MATRIX, COUNTS))
        with torch_backend.session(RUN, weights, devices=2) as session:
            assert session.trainer.processes is processes  # the group's ranks, not new ones
    assert all(p.exitcode is not None for p in processes._processes)  # the group stopped them


@pytest.mark.slow  # long on 2 cores; `pytest -m slow` and CI run it
def test_jax_sessions_on_two_devices_train_like_one_and_checkpoints_cross_counts(session_script, tmp_path):
    import pickle

    weights = convert.init_weights(RUN.model, 0, bias_scale=0.1)
    np.savez(tmp_path / "inputs.npz", matrix=MATRIX, **{f"w/{k}": v for k, v in weights.items()})
    spec = {"run": RUN.to_dict(), "counts": COUNTS}
    done = subprocess.run([sys.executable, str(session_script), json.dumps(spec), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.pkl")], env=_env(2), capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    with open(tmp_path / "out.pkl", "rb") as handle:
        _check_across_counts(pickle.load(handle))


def test_a_spawned_session_stops_its_rank_processes_when_closed():
    weights = convert.init_weights(RUN.model, 0)
    session = backend.get("torch").session(RUN, weights, devices=2)  # no group: it starts its own
    processes = session.trainer.processes
    assert isinstance(session, backend.TorchDataParallelSession) and session.devices == 2
    session.close()
    assert all(p.exitcode is not None for p in processes._processes)
    session.close()  # twice is fine


def test_devices_jax_cannot_see_are_a_usage_error_saying_what_to_do():
    """This pytest process started JAX with one CPU device: 2 cannot be had any more, and the message says
    how to get them."""
    jax_backend = backend.get("jax")
    problem = jax_backend.check_devices(2)
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=N" in problem and "1 CPU device" in problem
    assert jax_backend.check_devices(1) is None and backend.get("torch").check_devices(3) is None  # ranks: processes
    with pytest.raises(backend.DevicesUnavailable, match="before it starts"):
        jax_backend.session(RUN, convert.init_weights(RUN.model, 0), devices=2)
    with pytest.raises(ValueError, match="devices must be >= 1"):
        jax_backend.session(RUN, convert.init_weights(RUN.model, 0), devices=0)
    if not __import__("torch").cuda.is_available():
        assert "torch sees 0" in backend.get("torch").check_devices(2, "gpu")


def test_cli_devices_errors_come_before_any_work(tmp_path, monkeypatch, capsys):
    import jax

    monkeypatch.delenv("XLA_FLAGS", raising=False)  # the command sets it: too late for this process's JAX,
    assert len(jax.devices("cpu")) == 1  # which started here with one CPU device
    out = tmp_path / "run"
    code = main(["train", "--framework", "jax", "--devices", "2", "--dataset", "no-such-dataset", "--out", str(out)])
    assert code == 2  # refused for the devices before the (missing) data is looked at
    err = capsys.readouterr().err
    assert "--devices 2:" in err and "XLA_FLAGS" in err and "Traceback" not in err
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    assert not (out / "train.json").exists()
    assert main(["models", "--devices", "2", "--no-training"]) == 2
    assert "--devices 2:" in capsys.readouterr().err
    if backend.get("jax").select_device("gpu") is not None:  # no GPU here: --device gpu is refused up front
        backend.get("jax").select_device("cpu")
        assert main(["train", "--framework", "jax", "--device", "gpu", "--dataset", "no-such-dataset",
                     "--out", str(out)]) == 2
        assert "--device gpu: JAX sees no GPU" in capsys.readouterr().err
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as caught:
            main(["train", "--devices", bad])
        assert caught.value.code == 2
        assert "expected a device count >= 1" in capsys.readouterr().err


def test_request_host_devices_sets_or_raises_the_flag(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=1")
    backend.request_host_devices(4)
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=4"
    backend.request_host_devices(2)  # 4 are already asked for
    assert os.environ["XLA_FLAGS"].endswith("count=4")
    monkeypatch.delenv("XLA_FLAGS")
    backend.request_host_devices(1)
    assert "XLA_FLAGS" not in os.environ


def test_cli_help_stays_cheap():
    code = ("import sys\nfrom parity.cli import main\ntry:\n    main(['train', '--help'])\n"
            "except SystemExit:\n    pass\nprint('LOADED', [m for m in ('jax', 'torch') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], env=_env(1), capture_output=True, text=True, timeout=120)
    assert "--devices N" in done.stdout and "LOADED []" in done.stdout


# ---------------------------------------------------------------------------------------------
# the parity rows of `models --devices N`


def test_a_row_fails_when_devices_disagree_or_hold_different_copies():
    """The check can fail: a weight off by 1e-9 of its parameter's largest entry, a loss off by 1e-9, or
    two devices holding different copies of the state."""
    losses = np.array([[0.5], [0.25]])
    weights = {"a": np.array([1.0, -2.0]), "b": np.array([1e-3, 3e-3])}

    def row(got_losses, got_weights, replicas=0.0):
        return distributed._record("dp2/x/jax/step", "float64", (got_losses, losses), (got_weights, weights), 1e-10,
                                   "test", replicas)

    assert row(losses, weights).passed
    assert row(losses * (1 + 1e-12), {"a": weights["a"] + 1e-11, "b": weights["b"]}).passed
    assert not row(losses * (1 + 1e-9), weights).passed
    nudged = {"a": weights["a"], "b": weights["b"] + np.array([0.0, 3e-3 * 1e-9])}
    failed = row(losses, nudged)
    assert not failed.passed and failed.extra["worst_parameter"] == "b"
    assert failed.extra["weights_rel_err"] == pytest.approx(1e-9, rel=1e-3)
    assert not row(losses, weights, replicas=1e-16).passed


def test_the_suite_covers_both_models_and_both_optimizers():
    chosen = distributed.cases()
    assert {(c.model.kind, c.optimizer.name) for c in chosen} == {("ae", "adam"), ("ae", "sgd"), ("hae", "adam"),
                                                                   ("hae", "sgd")}
    assert any(c.dense_refeeding for c in chosen) and all(c.model.input_dropout or c.model.code_dropout
                                                          for c in chosen)
    assert distributed.N_USERS % distributed.BATCH_SIZE % 2 == 1  # a short last batch of an odd row count


@pytest.mark.slow  # ~5 minutes on a busy 2-core machine: 4 cases, 6 sessions each, JAX compiling every program
def test_models_devices_2_rows_pass_in_float64(tmp_path):
    out = tmp_path / "models.json"
    done = subprocess.run([sys.executable, "-m", "parity.cli", "models", "--devices", "2", "--dtype", "float64",
                           "--no-training", "--quick", "--no-progress", "--json", str(out)],
                          env={k: v for k, v in _env(1).items() if k != "XLA_FLAGS"}, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    payload = json.loads(out.read_text())
    rows = [r for r in payload["records"] if r["check"].startswith("dp2/")]
    assert payload["devices"] == 2 and len(rows) == 4 * 3 * 2  # cases x (jax, torch, jax-vs-torch) x (step, epochs)
    assert all(r["passed"] and r["max_rel_err"] <= 1e-10 and r["replica_max_difference"] == 0.0 for r in rows)
    assert {r["case"] for r in rows} == {c.name for c in distributed.cases()}


# ---------------------------------------------------------------------------------------------
# train --devices N on MovieLens


def _train(tmp_path: Path, name: str, devices: int, epochs: int, *extra: str) -> dict:
    out = tmp_path / name
    done = subprocess.run([sys.executable, "-m", "parity.cli", "train", "--dataset", "ml-100k", "--framework", "both",
                           "--epochs", str(epochs), "--dtype", "float64", "--set", "model.layer_sizes=[0,32]",
                           "--set", "model.input_dropout=0.2", "--devices", str(devices), "--out", str(out),
                           "--no-progress", *extra],
                          env={k: v for k, v in _env(1).items() if k != "XLA_FLAGS"}, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return json.loads((out / "train.json").read_text())


def _epoch_losses(result: dict, framework: str) -> np.ndarray:
    run = next(r for r in result["runs"] if r["framework"] == framework)
    return np.array([row["loss"] for row in run["history"]])


@pytest.mark.slow  # ~2.5 minutes on a busy 2-core machine: four training runs of both frameworks
def test_ml100k_train_on_two_devices_reaches_the_hr_of_one_and_resumes_across_counts(require_dataset, tmp_path):
    require_dataset("ml-100k")
    one = _train(tmp_path, "one", 1, 2)
    two = _train(tmp_path, "two", 2, 2)
    assert (one["devices"], two["devices"]) == (1, 2)
    for framework in ("jax", "torch"):
        a = next(r for r in two["runs"] if r["framework"] == framework)
        b = next(r for r in one["runs"] if r["framework"] == framework)
        assert a["devices"] == 2 and [row["devices"] for row in a["history"]] == [2, 2]
        assert a["test"]["hr"] == b["test"]["hr"] and a["validation"]["hr"] == b["validation"]["hr"]
        assert a["test"]["ndcg"] == pytest.approx(b["test"]["ndcg"], rel=1e-10)
        assert np.max(np.abs(_epoch_losses(two, framework) / _epoch_losses(one, framework) - 1)) <= TOLERANCE
    # a checkpoint written on 2 devices resumes on 1: the same run as 2 uninterrupted epochs on 1 device
    _train(tmp_path, "cut", 2, 1)
    resumed = _train(tmp_path, "cut", 1, 2, "--resume")
    for framework in ("jax", "torch"):
        run = next(r for r in resumed["runs"] if r["framework"] == framework)
        reference = next(r for r in one["runs"] if r["framework"] == framework)
        assert run["resumed_from_epoch"] == 0 and [row["devices"] for row in run["history"]] == [2, 1]
        assert run["test"]["hr"] == reference["test"]["hr"]
        assert np.max(np.abs(_epoch_losses(resumed, framework) / _epoch_losses(one, framework) - 1)) <= TOLERANCE
