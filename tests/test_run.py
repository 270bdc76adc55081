"""`poincare-parity run` plumbing: the planned command lines are valid for the real CLI, and a stage
that fails is recorded and reported while the run goes on. The stages' own work is tested elsewhere
(a whole `run --quick` takes about 10 minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parity.cli import build_parser, main
from parity.commands import run


@pytest.mark.parametrize("dataset,quick", [("ml-1m-neumf", True), ("ml-1m-neumf", False), ("synthetic", True)])
def test_plan_builds_valid_command_lines(tmp_path: Path, dataset: str, quick: bool):
    stages = run.plan(out=tmp_path, dataset=dataset, quick=quick)
    assert [s.name for s in stages] == list(run.STAGES)
    parser = build_parser()
    for stage in stages:
        if stage.argv:
            parser.parse_args(stage.argv)  # raises SystemExit on a flag the command does not take
            assert stage.json is not None and stage.json.parent == tmp_path
    by_name = {s.name: s for s in stages}
    assert ("--quick" in by_name["ops"].argv) == quick and ("--quick" in by_name["bench"].argv) == quick
    assert ("--epochs" in by_name["train-ae"].argv) == quick
    assert "--no-progress" not in by_name["train-ae"].argv  # the console shows each stage's bars ...
    quiet = {s.name: s for s in run.plan(out=tmp_path, dataset=dataset, quick=quick, progress=False)}
    for name in ("ops", "optim", "models", "train-ae", "train-hae", "bench"):  # ... unless run --no-progress
        assert quiet[name].argv.count("--no-progress") == 1
    for stage in quiet.values():
        if stage.argv:
            parser.parse_args(stage.argv)  # every stage's command takes it
    assert ("--no-training" in by_name["models"].argv) == (dataset == "synthetic")  # no network with synthetic
    assert by_name["train-ae"].argv[by_name["train-ae"].argv.index("--protocol") + 1] == "neumf"
    assert by_name["baselines"].argv[by_name["baselines"].argv.index("--protocol") + 1] == "neumf"
    hae = run.hae_preset()
    assert (by_name["train-hae"].skip is None) == (hae is not None)
    presets = by_name["bench"].argv[by_name["bench"].argv.index("--presets") + 1].split(",")
    assert presets == [run.AE_PRESET] + ([hae] if hae else [])


def test_failed_stages_are_recorded_and_reported(tmp_path: Path):
    out = tmp_path / "r"
    stages = [
        run.Stage("help", ["ops", "--help"]),  # exits 0, writes nothing, expects nothing
        run.Stage("bad-preset", ["train", "--preset", "no-such", "--json", str(out / "t.json")], out / "t.json"),
        run.Stage("silent", ["optim", "--help"], out / "optim.json"),  # exits 0 without its JSON
        run.Stage("later", skip="not selected"),
        run.Stage("report"),
    ]
    manifest = run.execute(stages, out=out, name="plumbing", dataset="synthetic", quick=True, echo=False)
    status = {s["name"]: s["status"] for s in manifest["stages"]}
    assert status == {"help": "ok", "bad-preset": "error", "silent": "error", "later": "skipped", "report": "ok"}
    bad = next(s for s in manifest["stages"] if s["name"] == "bad-preset")
    assert bad["returncode"] == 2 and "unknown preset 'no-such'" in bad["summary"]
    assert "unknown preset" in Path(bad["log"]).read_text()
    stored = json.loads((out / "run.json").read_text())
    assert [s["status"] for s in stored["stages"]] == [s["status"] for s in manifest["stages"]]
    text = (out / "report.md").read_text()
    verdict = "\n".join(text.splitlines()[:30])
    assert "FAILED: bad-preset (exit status 2" in verdict and "silent (exited 0 but wrote no optim.json)" in verdict
    assert "skipped: later (not selected)" in verdict


def test_run_cli_refuses_unknown_stage(capsys):
    assert main(["run", "--only", "ops,warp"]) == 2
    assert "unknown stage 'warp'" in capsys.readouterr().err
