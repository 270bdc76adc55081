"""A training run killed mid-way and resumed gives exactly the uninterrupted run's result, for JAX and
PyTorch, the Euclidean and the hyperbolic model: real `poincare-parity train` processes, one killed
with SIGKILL after its first checkpoint and resumed with --resume in a new process. And what that
needs of PyTorch: two trainers in one process compute bit for bit alike (geoopt's TorchScript math
computes every call the same way)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 4
# narrow models with input dropout (masks redrawn from (seed, epoch) on resume); the hyperbolic one with
# a learnable curvature, so geoopt's learnable ball is part of the restored state
MODELS = {
    "ae": ["--model", "ae", "--set", "model.layer_sizes=[0,64]", "--set", "model.input_dropout=0.5"],
    "hae": ["--model", "hae", "--set", "model.layer_sizes=[0,64]", "--set", "model.input_dropout=0.5",
            "--set", "model.learn_c=true"],
}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _start(out: Path, framework: str, model: str, *extra: str, log: str) -> subprocess.Popen:
    """`poincare-parity train` into `out`, its output into `log`.log beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "parity.cli", "train", "--framework", framework, *MODELS[model],
               "--dataset", "ml-100k", "--protocol", "neumf", "--epochs", str(EPOCHS), "--out", str(out),
               "--no-progress", *extra]
    with open(out.parent / f"{log}.log", "w") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=_env(), cwd=REPO)


def _finish(process: subprocess.Popen, out: Path, log: str) -> dict:
    assert process.wait(timeout=600) == 0, (out.parent / f"{log}.log").read_text()[-3000:]
    return json.loads((out / "train.json").read_text())


def _kill_after_first_checkpoint(process: subprocess.Popen, checkpoint: Path, log: Path) -> None:
    """SIGKILL as soon as the first end-of-epoch checkpoint exists (the next epoch has begun)."""
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-3000:]  # it did not end by itself


def _without_clock(payload: dict) -> dict:
    """train.json less what differs between an uninterrupted and a resumed run by design: wall-clock
    seconds, the file's creation time and command line (another folder, --resume), the checkpoint paths
    and the epoch resumed from."""
    runs = [{k: v for k, v in r.items() if k not in ("checkpoints", "resumed_from_epoch")}
            | {"history": [{k: v for k, v in h.items() if not k.startswith("seconds")} for h in r["history"]]}
            for r in payload["runs"]]
    return {k: v for k, v in payload.items() if k not in ("created", "argv")} | {"runs": runs}


def _checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(path, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    meta = json.loads(str(arrays.pop("meta")))
    for row in meta["state"]["history"]:
        for key in [k for k in row if k.startswith("seconds")]:
            del row[key]
    return arrays, meta


@pytest.mark.parametrize(("framework", "model"), [  # the PyTorch hyperbolic case (the one that drifted) by default
    ("torch", "hae"), *(pytest.param(f, m, marks=pytest.mark.slow) for f, m in (("torch", "ae"), ("jax", "ae"),
                                                                                 ("jax", "hae")))])
def test_run_killed_mid_way_resumes_to_the_uninterrupted_result(tmp_path, require_dataset, framework, model):
    require_dataset("ml-100k")
    whole_out, cut_out = tmp_path / "whole", tmp_path / "cut"
    whole = _start(whole_out, framework, model, log="whole")  # alongside: its numbers must not depend on the load
    last = cut_out / "checkpoints" / f"{framework}-seed0-last.npz"
    _kill_after_first_checkpoint(_start(cut_out, framework, model, log="killed"), last, tmp_path / "killed.log")
    assert not (cut_out / "train.json").exists()  # killed before it finished
    killed_at = _checkpoint(last)[1]["state"]
    assert not killed_at["finished"] and killed_at["epoch"] < EPOCHS - 1, killed_at
    resumed = _finish(_start(cut_out, framework, model, "--resume", log="resumed"), cut_out, "resumed")
    reference = _finish(whole, whole_out, "whole")

    assert resumed["runs"][0]["resumed_from_epoch"] == killed_at["epoch"]
    assert _without_clock(resumed) == _without_clock(reference)  # history, test metrics, best epoch: exactly
    # and the final state bit for bit: parameters, optimizer state, counters
    (arrays, meta), (ref_arrays, ref_meta) = _checkpoint(last), _checkpoint(whole_out / last.relative_to(cut_out))
    assert meta.pop("run_dir") == str(cut_out) and ref_meta.pop("run_dir") == str(whole_out)  # its own folder
    assert meta == ref_meta and arrays.keys() == ref_arrays.keys()
    for name, value in arrays.items():
        assert value.dtype == ref_arrays[name].dtype and np.array_equal(value, ref_arrays[name]), name


def test_two_torch_trainers_in_one_process_take_the_same_steps():
    """In a fresh process, a second hyperbolic trainer (same weights, batches, masks) matches the first
    bit for bit at every step: the numbers depend on the inputs only, not on what ran before."""
    script = textwrap.dedent("""
        import json
        import numpy as np
        import torch
        import torch_ref.models as tm
        import torch_ref.train as tt
        from parity.config import ModelConfig, OptimizerConfig

        rng = np.random.default_rng(0)
        clicks = (rng.random((256, 300)) < 0.05).astype(np.float64)
        clicks[:, 0] = 1.0
        keep = rng.random((6, 64, 300)) >= 0.3
        config = ModelConfig(kind="hae", layer_sizes=(300, 24), activation="tanh", loss="multinomial",
                             input_normalization="l2", input_dropout=0.3, c=0.5)
        report = {}
        for dtype in ("float64", "float32"):
            trajectories = []
            for _ in range(2):
                torch.manual_seed(0)
                model = tm.HyperbolicAutoEncoder(config, dtype=getattr(torch, dtype))
                trainer = tt.Trainer(model, tt.riemannian_optimizer(OptimizerConfig()))
                steps = []
                for step in range(6):
                    rows = clicks[step * 32: step * 32 + 64].astype(dtype)
                    loss = trainer.train_step(rows, tt.StepMasks(input=keep[step]))
                    steps.append([loss] + [p.detach().numpy().copy() for p in model.parameters()])
                trajectories.append(steps)
            first, second = trajectories
            report[dtype] = [max(float(np.max(np.abs(a - b))) for a, b in zip(x, y)) for x, y in zip(first, second)]
        print(json.dumps(report))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    differences = json.loads(result.stdout.strip().splitlines()[-1])  # per dtype, per step: max |first - second|
    assert differences == {"float64": [0.0] * 6, "float32": [0.0] * 6}
