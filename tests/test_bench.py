"""The bench harness on toy sizes: FLOP counting, statistics and ratios, well-formed records from a real
(tiny) run of the arms, an arm failure that does not stop the others, the optimizer row, CLI errors.
Timings themselves are never asserted (speed is checked by running the bench, not by tests)."""

from __future__ import annotations

import json

import pytest

from parity import bench, stats
from parity.bench import runner
from parity.commands.bench import format_results
from parity.cli import main
from parity.config import ModelConfig


def test_step_gemms_count_forward_weight_and_input_gradients():
    model = ModelConfig(layer_sizes=(10, 4, 3))  # layers 10->4, 4->3, then the decoder 3->4, 4->10
    gemms = bench.step_gemms(model, batch=5)
    assert [g.role for g in gemms].count("forward") == 4
    assert [g.role for g in gemms].count("weight grad") == 4
    assert [g.role for g in gemms].count("input grad") == 3  # none for the first layer: its input needs no gradient
    assert gemms[0] == bench.Gemm("forward", "x W^T", 5, 10, 4)
    assert gemms[1] == bench.Gemm("weight grad", "dY^T x", 4, 5, 10)
    assert bench.Gemm("input grad", "dY W", 5, 3, 4) in gemms
    # per user: 2 * (40 + 12 + 12 + 40) for the forward, the same for weight grads, 2 * (12 + 12 + 40) for input grads
    assert bench.train_flops_per_user(model) == 2 * 104 * 2 + 2 * 64
    assert bench.train_flops_per_user(model, dense_refeeding=True) == 2 * (2 * 104 * 2 + 2 * 64)
    assert bench.inference_flops_per_user(model) == 2 * 104
    assert sum(g.flops for g in gemms) == 5 * bench.train_flops_per_user(model)
    for g in gemms:  # operand shapes multiply to (m, n) with inner size k
        (a0, a1), (b0, b1) = g.operand_shapes()
        m, k = (a1, a0) if g.op == "dY^T x" else (a0, a1)
        kb, n = (b1, b0) if g.op == "x W^T" else (b0, b1)
        assert (m, k, n) == (g.m, g.k, g.n) and kb == k


def test_summarize_and_ratio():
    s = stats.summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    r = stats.ratio(stats.summarize([4.0, 6.0, 5.0]), s)
    assert r == {"median": 2.5, "low": 4.0 / 3.0, "high": 6.0}
    assert stats.ratio(stats.summarize([]), s) is None


@pytest.fixture(scope="module")
def tiny_payload(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    code = main(["bench", "--tiny", "--presets", "ae-neumf", "--arms", "torch-eager,jax-jit,jax-scan",
                 "--optimizers", "adam", "--no-progress", "--json", str(path)])
    assert code == 0
    return json.loads(path.read_text())


def test_tiny_bench_writes_well_formed_records(tiny_payload):
    p = tiny_payload
    assert p["command"] == "bench" and p["settings"]["tiny"] and p["settings"]["repeats"] == bench.TINY["repeats"]
    assert p["data"]["n_items"] == bench.TINY["n_items"]
    for key in ("cpu_model", "usable_cpus", "torch_threads", "versions", "jax_backend", "load_average"):
        assert key in p["device"]
    assert p["device"]["versions"]["jax"] and p["device"]["versions"]["torch"]
    model = next(w for w in p["workloads"] if w["kind"] == "model")
    assert model["name"] == "ae-neumf" and model["model_kind"] == "ae"
    assert model["config"]["model"]["layer_sizes"][0] == p["data"]["n_items"]
    assert model["flops"]["train_epoch"] == pytest.approx(model["flops"]["train_per_user"] * model["n_users"])
    assert set(model["matmul_rate"]) == {"torch", "jax"}
    for rate in model["matmul_rate"].values():
        assert rate["gflops"] > 0 and rate["per_shape"]
    assert [a["arm"] for a in model["arms"]] == ["torch-eager", "jax-jit", "jax-scan"]
    for arm in model["arms"]:
        assert arm["status"] == "ok", arm.get("error")
        for key in ("train_users_per_s", "epoch_s", "feed_s", "run_s", "step_s", "infer_users_per_s"):
            stat = arm[key]
            assert stat["n"] == bench.TINY["repeats"]
            assert stat["min"] <= stat["median"] <= stat["max"]
        for a, f, r in zip(arm["epoch_s"]["samples"], arm["feed_s"]["samples"], arm["run_s"]["samples"]):
            assert a == pytest.approx(f + r)
        assert arm["warmup_s"] > 0 and arm["compile_s"] >= 0
        assert arm["matmul_fraction"] > 0 and arm["matmul_fraction_step"] > 0
        assert "resident_mb" in arm["memory"]
    # every pair, both metrics, later arm over earlier; the median ratio is the ratio of the medians
    assert len(model["ratios"]) == 3 * 2
    by_arm = {a["arm"]: a for a in model["arms"]}
    for r in model["ratios"]:
        expected = by_arm[r["numerator"]][r["metric"]]["median"] / by_arm[r["denominator"]][r["metric"]]["median"]
        assert r["median"] == pytest.approx(expected) and r["low"] <= r["median"] <= r["high"]
    optimizer = next(w for w in p["workloads"] if w["kind"] == "optimizer")
    assert optimizer["name"] == "optimizer-adam" and {a["arm"] for a in optimizer["arms"]} == {"torch-eager", "jax-jit"}
    assert p["targets"] == []  # not judged on toy shapes
    targets = bench.check_targets(p["workloads"])  # ... but computable from the records
    assert {t["threshold"] for t in targets} == {1.0, bench.MATMUL_FRACTION_TARGET}
    assert all(isinstance(t["met"], bool) for t in targets)
    text = format_results(p)
    assert "jax-scan" in text and "matmul rate" in text


def test_a_failing_arm_is_recorded_and_the_others_still_run(monkeypatch):
    real = bench.make_arm

    def make_arm(name, *args, **kwargs):
        if name == "jax-jit":
            raise RuntimeError("no such luck")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(runner, "make_arm", make_arm)
    data = bench.load_bench_data(tiny=True)
    record = bench.bench_model("ae-neumf", data, arms=("torch-eager", "jax-jit"), repeats=1, steps=1, hidden_cap=8,
                               matmul_target_s=0.001)
    arms = {a["arm"]: a for a in record["arms"]}
    assert arms["jax-jit"]["status"] == "failed" and "no such luck" in arms["jax-jit"]["error"]
    assert arms["torch-eager"]["status"] == "ok"
    assert record["ratios"] == [] and set(record["matmul_rate"]) == {"torch"}


def test_bench_cli_refuses_unknown_names(capsys):
    assert main(["bench", "--tiny", "--presets", "no-such-preset"]) == 2
    assert "unknown preset 'no-such-preset'" in capsys.readouterr().err
    assert main(["bench", "--tiny", "--arms", "torch-eager,warp-drive"]) == 2
    assert "unknown arm(s) warp-drive" in capsys.readouterr().err


@pytest.mark.slow
def test_torch_compile_arm_on_a_tiny_model():
    data = bench.load_bench_data(tiny=True)
    record = bench.bench_model("ae-neumf", data, arms=("torch-eager", "torch-compile"), repeats=1, steps=1,
                               hidden_cap=8, matmul_target_s=0.001)
    assert [a["status"] for a in record["arms"]] == ["ok", "ok"], [a.get("error") for a in record["arms"]]


def test_profile_summarises_where_a_jax_epoch_spends_its_time(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = main(["bench", "--tiny", "--presets", "hae-neumf", "--arms", "torch-eager,jax-scan", "--no-optimizer",
                 "--no-progress", "--profile", str(tmp_path / "prof"), "--json", str(path)])
    assert code == 0
    arms = {a["arm"]: a for a in json.loads(path.read_text())["workloads"][0]["arms"]}
    ops = arms["jax-scan"]["profile"]["xla_ops"]
    assert ops["matmul_s"] > 0 and ops["other_s"] > 0  # the Möbius maps and the optimizer are not matmuls
    assert len(ops["top"]) == 12 and [o["seconds"] for o in ops["top"]] == sorted(
        (o["seconds"] for o in ops["top"]), reverse=True)
    every = bench.summarize_jax_trace(arms["jax-scan"]["profile"]["trace_dir"], top=10_000)["top"]
    assert any(o["matmul"] for o in every) and any(not o["matmul"] for o in every)
    assert not any(o["op"].startswith("while") for o in every)  # the scan encloses the rest: not counted
    assert (tmp_path / "prof" / "hae-neumf" / "torch-eager-ops.txt").exists()
    assert "profile jax-scan: XLA ops" in capsys.readouterr().out
