"""The report writer on fixture JSON written here: the verdict on the first screen (every parity suite,
HR@10 of both frameworks for both models, throughput ratios, failed stages), the plots, report.json,
inputs told apart by content, and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parity import bench, report, stats
from parity.bench import runner
from parity.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _record(check: str, dtype: str, rel: float, passed: bool, **extra) -> dict:
    return {"check": check, "dtype": dtype, "max_abs_err": rel / 10, "max_rel_err": rel, "tolerance": 1e-9 if dtype ==
            "float64" else 1e-4, "passed": passed, "atol": 0.0, "nonfinite_jax": 0, "nonfinite_ref": 0, "note": "", **extra}


def _train(kind: str, preset: str, hr: dict[str, float]) -> dict:
    runs = []
    for framework, value in hr.items():
        history = [{"epoch": e, "loss": 10.0 - e, "val_hr": value - 0.1 + 0.02 * e, "val_ndcg": 0.3} for e in range(5)]
        runs.append({"framework": framework, "seed": 0, "dtype": "float32", "epochs_run": 5, "stopped_early": False,
                     "best_epoch": 4, "validation": {"hr": value - 0.02, "ndcg": 0.4},
                     "test": {"k": 10, "hr": value, "hr_low": value - 0.01, "hr_high": value + 0.01, "ndcg": value / 2,
                              "ndcg_low": value / 2 - 0.01, "ndcg_high": value / 2 + 0.01, "n_users": 6040,
                              "protocol": "neumf"},
                     "history": history})
    summary = {fw: {"test_hr": {"mean": v, "std": 0.0, "n": 1}, "test_ndcg": {"mean": v / 2, "std": 0.0, "n": 1},
                    "val_hr": {"mean": v, "std": 0.0, "n": 1}, "seeds": [0]} for fw, v in hr.items()}
    return {"command": "train", "preset": preset, "run_name": preset, "frameworks": list(hr), "seeds": [0],
            "config": {"model": {"kind": kind}, "data": {"dataset": "ml-1m-neumf", "protocol": "neumf"}},
            "split": {"dataset": "ml-1m-neumf"}, "runs": runs, "summary": summary}


def _arm(name: str, users_per_s: list[float]) -> dict:
    epoch = [6000 / u for u in users_per_s]
    return {"arm": name, "framework": bench.ARM_FRAMEWORK[name], "status": "ok", "warmup_s": 9.0, "compile_s": 1.0,
            "train_users_per_s": stats.summarize(users_per_s), "epoch_s": stats.summarize(epoch),
            "feed_s": stats.summarize([0.1] * len(epoch)), "run_s": stats.summarize([e - 0.1 for e in epoch]),
            "step_s": stats.summarize([0.05] * len(epoch)), "epoch_step_s": 0.05, "loop_overhead_s": 0.1,
            "infer_users_per_s": stats.summarize([10 * u for u in users_per_s]),
            "infer_s": stats.summarize([0.1] * len(epoch)), "matmul_gflops": 40.0, "matmul_fraction": 0.85,
            "matmul_fraction_run": 0.9, "matmul_fraction_step": 0.95, "memory": {"resident_mb": 100.0,
                                                                              "epoch_peak_above_mb": 50.0}}


def _bench() -> dict:
    workloads = []
    for name, kind, speeds in (("ae-neumf", "ae", {"torch-eager": [1000, 1100, 900], "torch-compile": [1200, 1300, 1100],
                                                   "jax-jit": [1500, 1600, 1400], "jax-scan": [2000, 2100, 1900]}),
                               ("hae-neumf", "hae", {"torch-eager": [300, 310, 290], "torch-compile": [500, 520, 480],
                                                     "jax-scan": [450, 460, 440]})):
        arms = [_arm(arm, values) for arm, values in speeds.items()]
        workloads.append({"name": name, "kind": "model", "model_kind": kind, "config": {"model": {"layer_sizes": [3706, 600]}},
                          "batch_size": 256, "steps_per_epoch": 24, "n_users": 6000,
                          "flops": {"train_epoch": 1.3e11, "train_per_user": 2.2e7, "inference_per_user": 8.9e6},
                          "matmul_rate": {"jax": {"gflops": 48.0}, "torch": {"gflops": 21.0}},
                          "arms": arms, "ratios": runner._ratios(arms)})
    workloads.append({"name": "optimizer-adam", "kind": "optimizer", "n_points": 10000, "dim": 64, "dtype": "float32",
                      "arms": [], "ratios": [], "result": {"jax_ms": 9.0, "torch_ms": 60.0, "jax_ms_min": 8.0,
                                                           "torch_ms_min": 55.0}})
    return {"command": "bench", "settings": {"device": "cpu", "dtype": "float32", "repeats": 3},
            "data": {"dataset": "synthetic", "n_users": 6000, "n_items": 3706},
            "device": {"cpu_model": "Test CPU", "usable_cpus": 2, "load_average": [1.0, 1.0, 1.0]},
            "workloads": workloads, "targets": bench.check_targets(workloads)}


@pytest.fixture
def fixture_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    ops = [_record("ops.dist", dtype, rel, passed, function=fn, regime=regime, reference_wrong=(fn == "dist" and
                                                                                                 regime == "zero"))
           for dtype in ("float64", "float32") for fn in ("dist", "expmap")
           for regime, rel, passed in (("zero", 1e-12, True), ("boundary", 3e-3, dtype == "float64" or fn != "expmap"))]
    (folder / "ops.json").write_text(json.dumps({"suite": "ops", "records": ops}))
    optim = [_record(f"optim.{name}.retr", "float64", 1e-12, True, config=name, variant="retraction", worst_step=7,
                     trajectory_max_rel_err=1e-12, per_step_max_rel_err=[1e-15 * (s + 1) for s in range(20)])
             for name in ("sgd", "adam")]
    (folder / "optim.json").write_text(json.dumps({"suite": "optim", "records": optim}))
    models = [_record("forward/selu/output", "float64", 1e-14, True), _record("training/adam/weights", "float32", 1e-6, True)]
    (folder / "models.json").write_text(json.dumps({"suite": "models", "records": models}))
    (folder / "train-ae.json").write_text(json.dumps(_train("ae", "ae-neumf", {"jax": 0.6612, "torch": 0.6598})))
    (folder / "train-hae.json").write_text(json.dumps(_train("hae", "hae-neumf", {"jax": 0.7012})))
    baseline = {"k": 10, "hr": 0.4531, "hr_low": 0.44, "hr_high": 0.46, "ndcg": 0.2541, "ndcg_low": 0.25,
                "ndcg_high": 0.26, "n_users": 6040}
    (folder / "baselines.json").write_text(json.dumps({"protocol": "neumf", "dataset": "ml-1m-neumf", "k": 10,
                                                       "popularity": baseline,
                                                       "ease_fixed": {**baseline, "lambda": 500.0, "hr": 0.7096,
                                                                      "hr_low": 0.70, "hr_high": 0.72}}))
    (folder / "bench.json").write_text(json.dumps(_bench()))
    (folder / "run.json").write_text(json.dumps({"command": "run", "name": "t", "dataset": "ml-1m-neumf", "quick": True,
                                                 "seconds": 100.0, "stages": [
        {"name": "ops", "status": "failed-checks", "seconds": 10.0, "argv": ["poincare-parity", "ops"], "summary": "7/8 rows pass"},
        {"name": "optim", "status": "error", "seconds": 1.0, "argv": ["poincare-parity", "optim"],
         "summary": "exit status 2: boom", "tail": "Traceback ...\nboom"},
        {"name": "train-hae", "status": "skipped", "seconds": 0.0, "argv": [], "summary": "not selected"}]}))
    (folder / "unrelated.json").write_text(json.dumps({"hello": "world"}))
    return folder


def test_report_first_screen_shows_the_verdict(fixture_dir: Path, tmp_path: Path):
    out = tmp_path / "report"
    summary = report.write_report([fixture_dir], out, "fixture")
    text = (out / "report.md").read_text()
    first_screen = "\n".join(text.splitlines()[:40])
    assert text.startswith("# poincare-parity report: fixture")
    assert "ops **FAIL** (7/8 rows)" in first_screen
    assert "optim **PASS** (2/2 rows)" in first_screen and "models **PASS** (2/2 rows)" in first_screen
    # HR@10 of both frameworks for both models, next to the published numbers and the baselines
    assert "| Euclidean AE (ae-neumf) | 0.6612 [0.651, 0.671] / 0.3306 | 0.6598 [0.650, 0.670] / 0.3299 | 0.4685 / 0.2578 |" \
        in first_screen
    assert "| Hyperbolic AE (hae-neumf) | 0.7012 [0.691, 0.711] / 0.3506 | not run | 0.7051 / 0.4360 |" in first_screen
    assert "| popularity | 0.4531" in first_screen and "EASE (lambda 500)" in first_screen
    # throughput: best JAX arm over PyTorch eager and torch.compile, with ranges
    assert "| ae-neumf (Euclidean AE) | jax-scan: 2000 | 2.00x [1.73, 2.33] | 1.67x [1.46, 1.91] | 1000 |" in first_screen
    assert "hae-neumf (Hyperbolic AE) | jax-scan: 450 | 1.50x" in first_screen
    assert "Targets (issue 7):" in first_screen and "not met" in first_screen
    assert "FAILED: optim (exit status 2: boom)" in first_screen and "skipped: train-hae" in first_screen

    assert [p["verdict"] for p in summary["parity"]] == ["fail", "pass", "pass"]
    assert {(q["kind"], q["framework"]) for q in summary["quality"]} == {("ae", "jax"), ("ae", "torch"), ("hae", "jax")}
    assert summary["ignored"] and summary["ignored"][0]["path"].endswith("unrelated.json")
    assert summary["published"]["source"].startswith("Mirvakhabova")
    hae_targets = [t for t in summary["targets"] if t["workload"] == "hae-neumf" and "torch" in t["target"]]
    assert [t["met"] for t in hae_targets] == [False, False]  # 1.5x < 2.0x eager, 0.9x < 1.2x compile

    stored = json.loads((out / "report.json").read_text())
    assert stored["parity"] == summary["parity"] and len(stored["plots"]) == 6
    for plot in stored["plots"]:
        assert (out / plot).read_bytes()[:8] == PNG
        assert f"]({plot})" in text  # every plot is shown in the Markdown
    assert "Traceback ...\nboom" in text  # the failed stage's last lines


def test_report_marks_missing_inputs(tmp_path: Path, fixture_dir: Path):
    only = tmp_path / "only"
    only.mkdir()
    (only / "models.json").write_text((fixture_dir / "models.json").read_text())
    summary = report.write_report([only], only)
    assert [p["verdict"] for p in summary["parity"]] == ["missing", "missing", "pass"]
    text = (only / "report.md").read_text()
    assert "ops missing" in text and "No bench JSON among the inputs" in text
    assert "| Euclidean AE | not run | not run |" in text


def test_optim_plot_falls_back_to_the_worst_error_without_per_step_errors(tmp_path: Path):
    records = [_record("optim.sgd.retr", "float64", 1e-12, True, config="sgd", variant="retraction",
                       trajectory_max_rel_err=1e-12, worst_step=3)]
    path, per_step = report.plot_optim({"suite": "optim", "records": records}, tmp_path / "o.png")
    assert per_step is False and path.read_bytes()[:8] == PNG


def test_report_cli(fixture_dir: Path, tmp_path: Path, capsys):
    assert main(["report", str(fixture_dir)]) == 0
    assert (fixture_dir / "report.md").exists()
    assert "ops     fail (7/8)" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["report", str(fixture_dir / "ops.json")]) == 2  # where to write it?
    assert "--name" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "no JSON files" in capsys.readouterr().err
