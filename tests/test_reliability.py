"""Reliability: nothing of the user's is ever removed, and every bad input ends in one clear line with the
exit status README's "Exit status and errors" documents (2 usage, 3 diverged, 130 interrupted).

Each case asserts the message, the exit status and that the user's files are still there. No network: a
fake downloader stands in for pooch's. Training runs on a tiny generated dataset written as a local
u.data file (seconds), except the Ctrl-C test, which interrupts a real `train` process on ML-100K.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from parity import backend, training
from parity import data as D
from parity.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    config_hash,
    config_key,
    load_checkpoint,
    save_checkpoint,
)
from parity.cli import main
from parity.commands import run as run_command
from parity.config import DataConfig, ModelConfig, OptimizerConfig, RunConfig, TrainConfig
from parity.errors import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, TrainingDiverged
from parity.files import atomic_write_text, write_json

REPO = Path(__file__).resolve().parents[1]
MISSING = "/nonexistent/poincare-parity-test/u.data"  # a dataset that does not exist: any error about it comes late


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: str, *needles: str) -> str:
    """A user error: one line on stderr, no traceback, naming each of `needles`."""
    text = err.strip()
    assert "Traceback" not in err and "\n" not in text, err
    for needle in needles:
        assert needle in text, (needle, text)
    return text


# ----------------------------------------------------------------------------------------------- download


def _toy_remote(monkeypatch, content: bytes) -> D.RemoteFile:
    """ml-100k, as far as `download` knows, is one small file with the hash of `content`."""
    remote = D.RemoteFile("ml-100k.zip", "https://example.invalid/ml-100k.zip", _sha(content), "a test")
    monkeypatch.setitem(D.REMOTE, "ml-100k", (remote,))
    return remote


def _downloader(monkeypatch, fetch) -> None:
    """The command's default downloader (pooch's HTTP one) becomes `fetch(url, output_file, pooch)`."""
    import pooch

    monkeypatch.setattr(pooch, "HTTPDownloader", lambda **kwargs: fetch)


def _serve(content: bytes):
    return lambda url, output_file, pooch_obj, check_only=False: Path(output_file).write_bytes(content)


def _download(data_dir: Path) -> int:
    return main(["download", "--dataset", "ml-100k", "--data-dir", str(data_dir)])


RIGHT, THEIRS = b"the right bytes", b"a file the user put here by hand"


def test_download_moves_a_users_file_with_another_hash_aside(tmp_path, monkeypatch, capsys):
    _toy_remote(monkeypatch, RIGHT)
    _downloader(monkeypatch, _serve(RIGHT))
    (tmp_path / "ml-100k.zip").write_bytes(THEIRS)
    assert _download(tmp_path) == EXIT_OK
    aside = tmp_path / f"ml-100k.zip.mismatch-{_sha(THEIRS)[:8]}"
    assert _tree(tmp_path) == {"ml-100k.zip": RIGHT, aside.name: THEIRS}  # theirs kept, ours in place
    note = _one_line(capsys.readouterr().err, _sha(THEIRS), _sha(RIGHT), str(aside), "not deleted")
    assert note.startswith("note:")


def test_offline_with_a_users_file_keeps_it_and_says_both_hashes(tmp_path, monkeypatch, capsys):
    remote = _toy_remote(monkeypatch, RIGHT)

    def offline(url, output_file, pooch_obj, check_only=False):
        raise requests.exceptions.ConnectionError("Failed to resolve 'example.invalid'")

    _downloader(monkeypatch, offline)
    (tmp_path / "ml-100k.zip").write_bytes(THEIRS)
    assert _download(tmp_path) == EXIT_USAGE
    err = capsys.readouterr().err
    aside = tmp_path / f"ml-100k.zip.mismatch-{_sha(THEIRS)[:8]}"
    for needle in (remote.url, f"put it at {tmp_path / 'ml-100k.zip'}", f"its sha256 must be {_sha(RIGHT)}",
                   f"has sha256 {_sha(THEIRS)}", f"moved aside to {aside}"):
        assert needle in err, (needle, err)
    assert "Traceback" not in err
    assert _tree(tmp_path) == {aside.name: THEIRS}


@pytest.mark.parametrize("interruption, status", [
    (requests.exceptions.ChunkedEncodingError("connection broken half-way"), EXIT_USAGE),
    (KeyboardInterrupt(), EXIT_INTERRUPTED),
])
def test_a_download_that_stops_half_way_removes_only_its_own_partial_file(tmp_path, monkeypatch, capsys,
                                                                          interruption, status):
    _toy_remote(monkeypatch, RIGHT)

    def half_way(url, output_file, pooch_obj, check_only=False):
        Path(output_file).write_bytes(RIGHT[:5])
        raise interruption

    _downloader(monkeypatch, half_way)
    (tmp_path / "ml-100k.zip").write_bytes(THEIRS)
    (tmp_path / "notes.txt").write_bytes(b"mine")
    assert _download(tmp_path) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("could not download" in err if status == EXIT_USAGE else "interrupted" in err)
    assert _tree(tmp_path) == {f"ml-100k.zip.mismatch-{_sha(THEIRS)[:8]}": THEIRS, "notes.txt": b"mine"}


def test_a_download_with_the_wrong_hash_is_discarded_and_says_expected_and_actual(tmp_path, monkeypatch, capsys):
    _toy_remote(monkeypatch, RIGHT)
    _downloader(monkeypatch, _serve(b"a tampered mirror"))
    assert _download(tmp_path) == EXIT_USAGE
    _one_line(capsys.readouterr().err, f"has sha256 {_sha(b'a tampered mirror')}", f"not the pinned {_sha(RIGHT)}",
              "discarded")
    assert _tree(tmp_path) == {}


def test_moving_aside_never_overwrites_an_earlier_copy(tmp_path, monkeypatch):
    _toy_remote(monkeypatch, RIGHT)
    aside = tmp_path / f"ml-100k.zip.mismatch-{_sha(THEIRS)[:8]}"
    aside.write_bytes(b"moved aside before")
    (tmp_path / "ml-100k.zip").write_bytes(THEIRS)
    D.download("ml-100k", tmp_path, downloader=_serve(RIGHT))
    assert _tree(tmp_path) == {"ml-100k.zip": RIGHT, aside.name: b"moved aside before", aside.name + "-2": THEIRS}


# ------------------------------------------------------------------------------- configuration (before data)


@pytest.mark.parametrize("flags, named", [
    (["--set", "model.c=abc"], "model.c='abc'"),
    (["--set", "train.epochs=abc"], "train.epochs='abc'"),
    (["--set", "model.layer_sizes=[0,abc]"], "model.layer_sizes='[0,abc]'"),
    (["--lr", "-1"], "optimizer.learning_rate=-1.0"),
    (["--set", "model.input_dropout=1.5"], "model.input_dropout=1.5"),
    (["--patience", "-1"], "train.early_stopping_patience=-1"),
    (["--seeds", "x"], "--seeds 'x'"),
    (["--seeds", "0,1,0"], "a seed is given twice"),
    (["--sweep", "model.c=0.1,abc"], "--sweep 'model.c=0.1,abc': model.c='abc'"),
    (["--sweep", "model.colour=1,2"], "colour"),
    (["--sweep", "train.batch_size=64,64"], "given twice"),
    (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
])
def test_bad_values_are_one_line_before_any_data_is_read(flags, named, capsys):
    assert main(["train", "--dataset", MISSING, "--no-progress", *flags]) == EXIT_USAGE
    text = _one_line(capsys.readouterr().err, named)
    assert MISSING not in text  # the configuration error wins over the missing dataset


# ------------------------------------------------------------------------------------------ output folders


@pytest.mark.parametrize("argv", [
    ["train", "--dataset", MISSING, "--out", "{blocked}/run"],
    ["train", "--dataset", MISSING, "--json", "{blocked}/train.json"],
    ["train", "--dataset", MISSING, "--sweep", "model.c=0.1,1", "--out", "{blocked}/sweep"],
    ["bench", "--tiny", "--json", "{blocked}/bench.json"],
    ["report", "--out", "{blocked}/report"],
    ["run", "--out", "{blocked}/run", "--only", "ops"],
    ["ops", "--json", "{blocked}/ops.json"],
    ["optim", "--json", "{blocked}/optim.json"],
    ["models", "--json", "{blocked}/models.json"],
    ["data", "info", "--dataset", MISSING, "--json", "{blocked}/info.json"],
    ["data", "baselines", "--dataset", MISSING, "--json", "{blocked}/baselines.json"],
    ["download", "--dataset", "ml-100k", "--data-dir", "{blocked}/data"],
])
def test_an_unwritable_output_folder_fails_first(tmp_path, argv, capsys, monkeypatch):
    """A folder that cannot be made (a file stands where it would go: this holds for root too) is a
    one-line error before any work: before the dataset is looked for, a download, a suite or a stage starts."""
    import parity.bench
    import parity.commands.report
    import parity.suites.models
    import parity.suites.ops
    import parity.suites.optim

    def work(*args, **kwargs):
        pytest.fail("the work started before the output folder was checked")

    for module, name in ((parity.suites.ops, "run"), (parity.suites.optim, "run"), (parity.suites.models, "run"),
                         (parity.bench, "select_device"), (parity.commands.report, "write_report"),
                         (run_command, "execute")):
        monkeypatch.setattr(module, name, work)
    _downloader(monkeypatch, work)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert main([a.format(blocked=blocked) for a in argv]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, "cannot create the output folder", f"{blocked} is a file, not a folder")
    assert blocked.read_text() == "not a folder"


def test_json_onto_a_folder_is_refused_first(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["train", "--dataset", MISSING, "--json", str(tmp_path / "taken")]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, f"cannot write {tmp_path / 'taken'}: it is a folder")


# ------------------------------------------------------------------------------------- run folders (train)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A small generated dataset as a local u.data file (120 users, 300 items)."""
    data = D.synthetic(n_users=120, n_items=300, n_ratings=3000, seed=0)
    path = tmp_path_factory.mktemp("tiny") / "u.data"
    path.write_text("".join(f"{u + 1}\t{i + 1}\t{int(r)}\t{int(t)}\n"
                            for u, i, r, t in zip(data.users, data.items, data.ratings, data.timestamps)))
    return path


def _train(tiny: Path, out: Path, *flags: str) -> int:
    return main(["train", "--dataset", str(tiny), "--protocol", "neumf", "--epochs", "1",
                 "--set", "model.layer_sizes=[0,8]", "--no-progress", "--out", str(out), *flags])


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory) -> Path:
    """A finished one-epoch run (JAX, seeds 0 and 1), copied by each test that changes it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert _train(tiny, out, "--seeds", "0,1") == EXIT_OK
    return out


def _copy(finished: Path, tmp_path: Path, name: str = "run") -> Path:
    return Path(shutil.copytree(finished, tmp_path / name))


def test_a_second_run_into_the_same_folder_is_refused_and_changes_nothing(tiny, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    before = _tree(out)
    assert _train(tiny, out) == EXIT_USAGE
    _one_line(capsys.readouterr().err, f"{out} already holds a training run", "train.json", "--resume", "--overwrite")
    assert _tree(out) == before


def test_overwrite_removes_that_runs_files_and_nothing_else(tiny, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    (out / "notes.txt").write_text("my notes")
    (out / "checkpoints" / "my-weights.npz").write_bytes(b"mine")
    assert _train(tiny, out, "--overwrite", "--seeds", "0") == EXIT_OK
    after = _tree(out)
    assert after["notes.txt"] == b"my notes" and after["checkpoints/my-weights.npz"] == b"mine"
    assert sorted(after) == ["checkpoints/jax-seed0-best.npz", "checkpoints/jax-seed0-last.npz",
                             "checkpoints/my-weights.npz", "notes.txt", "train.json"]  # seed 1's are gone
    assert json.loads(after["train.json"])["seeds"] == [0]


def test_resume_without_a_checkpoint_starts_fresh_and_says_so(tiny, tmp_path, capsys):
    out = tmp_path / "fresh"
    assert _train(tiny, out, "--resume") == EXIT_OK
    assert f"--resume: no checkpoint in {out / 'checkpoints'} yet; starting fresh" in capsys.readouterr().out
    result = json.loads((out / "train.json").read_text())
    assert result["runs"][0]["resumed_from_epoch"] is None


def test_every_checkpoint_carries_its_configuration_hash(finished):
    result = json.loads((finished / "train.json").read_text())
    for record in result["runs"]:
        config = result["config"]
        seeded = RunConfig.from_dict({**config, "train": {**config["train"], "seed": record["seed"]}})
        canonical = json.dumps(config_key(seeded), sort_keys=True, separators=(",", ":"))
        for kind in ("last", "best"):
            meta = load_checkpoint(Path(record["checkpoints"][kind]))[2]
            assert meta["config_sha256"] == hashlib.sha256(canonical.encode()).hexdigest() == config_hash(seeded)
            assert meta["run_dir"] == str(finished.resolve()) and record["config_sha256"] == meta["config_sha256"]
    assert len({r["config_sha256"] for r in result["runs"]}) == 2  # seeds 0 and 1: the seed is part of the key


def test_a_checkpoint_of_another_run_is_refused_naming_that_run(tiny, finished, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(finished / "checkpoints", elsewhere / "checkpoints")  # checkpoints copied by hand
    before = _tree(elsewhere)
    assert _train(tiny, elsewhere, "--resume", "--lr", "0.01") == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(elsewhere / "checkpoints" / "jax-seed0-last.npz"),
              f"written by the run in {finished.resolve()}", "optimizer.learning_rate: 0.001 -> 0.01",
              "--overwrite")
    assert _tree(elsewhere) == before


def test_a_checkpoint_without_a_configuration_hash_is_refused(tiny, finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    last = out / "checkpoints" / "jax-seed0-last.npz"
    weights, optimizer, meta = load_checkpoint(last)
    del meta["config_sha256"]
    meta["version"] = 1
    save_checkpoint(last, weights, meta, optimizer)
    assert _train(tiny, out, "--resume") == EXIT_USAGE
    _one_line(capsys.readouterr().err, str(last), "carries no configuration hash", "delete it")
    assert last.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_checkpoint_is_one_line_naming_the_file_and_is_kept(tiny, finished, tmp_path, capsys, damage):
    out = _copy(finished, tmp_path)
    last = out / "checkpoints" / "jax-seed0-last.npz"
    content = last.read_bytes()
    last.write_bytes({"truncated": content[: len(content) // 2], "garbage": b"\x00not a checkpoint" * 64,
                      "empty": b""}[damage])
    before = _tree(out)
    assert _train(tiny, out, "--resume") == EXIT_USAGE
    _one_line(capsys.readouterr().err, f"cannot read the checkpoint {last}", "truncated, corrupt",
              "delete it", "--overwrite")
    assert _tree(out) == before
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(out / "checkpoints" / "no-such.npz")
    assert _train(tiny, out, "--overwrite") == EXIT_OK  # the way out the message names
    load_checkpoint(last)


def test_compare_refuses_a_corrupt_best_checkpoint(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    result = json.loads((out / "train.json").read_text())
    best = Path(result["runs"][0]["checkpoints"]["best"])  # points into `finished`: repoint at the copy
    for record in result["runs"]:
        record["checkpoints"]["best"] = str(out / "checkpoints" / Path(record["checkpoints"]["best"]).name)
    (out / "train.json").write_text(json.dumps(result))
    (out / "checkpoints" / best.name).write_bytes(b"PK\x03\x04 cut short")
    assert main(["train", "--compare", str(out / "train.json"), str(finished / "train.json")]) == EXIT_USAGE
    _one_line(capsys.readouterr().err, "--compare", f"cannot read the checkpoint {out / 'checkpoints' / best.name}")


def _tiny_run(epochs: int = 3) -> RunConfig:
    return RunConfig(model=ModelConfig(layer_sizes=(0, 8)), optimizer=OptimizerConfig(learning_rate=1e-3),
                     data=DataConfig(dataset="tiny", protocol="neumf"), train=TrainConfig(epochs=epochs, batch_size=64))


def _poison(monkeypatch, bad_call: int) -> None:
    """The JAX session's `bad_call`-th epoch (1-based, in this process) returns a NaN loss at step 0."""
    real = backend.JaxSession.train_epoch
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        losses = np.array(real(self, *args, **kwargs))
        calls["n"] += 1
        if calls["n"] == bad_call:
            losses[0:] = np.nan
        return losses

    monkeypatch.setattr(backend.JaxSession, "train_epoch", poisoned)


def test_a_nan_stop_names_only_a_checkpoint_of_its_own_run(tiny, finished, tmp_path, monkeypatch):
    split = D.split_neumf(D.load_dataset(tiny))
    out = _copy(finished, tmp_path)  # a finished run of another configuration is there
    _poison(monkeypatch, 1)
    with pytest.raises(TrainingDiverged) as caught:
        training.run_training(_tiny_run(), frameworks=["jax"], seeds=[0], out_dir=out, existing="overwrite",
                              progress=False, split=split)
    assert caught.value.checkpoint is None and "no checkpoint was written before it" in str(caught.value)
    # resumed: the checkpoint it continued from (verified as this run's) is the one named
    fresh = tmp_path / "fresh"
    training.run_training(_tiny_run(1), frameworks=["jax"], seeds=[0], out_dir=fresh, progress=False, split=split)
    _poison(monkeypatch, 1)
    with pytest.raises(TrainingDiverged) as caught:
        training.run_training(_tiny_run(3), frameworks=["jax"], seeds=[0], out_dir=fresh, existing="resume",
                              progress=False, split=split)
    last = checkpoint_paths(fresh, "jax", 0)[0]
    assert caught.value.checkpoint == last and caught.value.epoch == 1
    this_run = dataclasses.replace(_tiny_run(3), model=ModelConfig(layer_sizes=(split.n_items, 8)))
    assert load_checkpoint(last, this_run, "jax")[2]["state"]["epoch"] == 0


def test_the_cli_maps_a_nan_stop_to_exit_3(tiny, tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, 1)
    assert _train(tiny, tmp_path / "nan") == EXIT_DIVERGED
    _one_line(capsys.readouterr().err, "NaN or Inf at epoch 0, step 0", "no checkpoint was written before it")


def test_sweep_folders_refuse_resume_and_overwrite(tiny, tmp_path):
    split = D.split_neumf(D.load_dataset(tiny))
    out = tmp_path / "sweep"

    def sweep(values, existing):
        return training.run_sweep(_tiny_run(1), "train", "batch_size", values, frameworks=["jax"], seeds=[0],
                                  out_dir=out, existing=existing, progress=False, split=split,
                                  on_point=lambda folder, result: write_json(folder / "train.json", result,
                                                                             command="train"))

    sweep([32, 64], "refuse")
    (out / "notes.txt").write_text("mine")
    before = _tree(out)
    with pytest.raises(training.RunFolderInUse, match="batch_size=32/train.json"):
        sweep([32, 128], "refuse")
    assert _tree(out) == before
    resumed = sweep([32, 64], "resume")
    assert all(r["resumed_from_epoch"] == 0 for p in resumed["train_json"]
               for r in json.loads(Path(p).read_text())["runs"])
    sweep([32, 128], "overwrite")
    assert not (out / "batch_size=64").exists()  # the previous sweep's value, gone with its files
    assert (out / "notes.txt").read_text() == "mine" and (out / "batch_size=128" / "train.json").exists()


def test_a_sweep_folder_holding_a_run_is_refused_before_any_data_is_read(tmp_path, capsys):
    point = tmp_path / "sweep" / "c=1"
    (point / "checkpoints").mkdir(parents=True)
    (point / "checkpoints" / "jax-seed0-last.npz").write_bytes(b"an earlier run's")
    assert main(["train", "--dataset", MISSING, "--sweep", "model.c=0.1,1", "--out", str(tmp_path / "sweep")]) == 2
    _one_line(capsys.readouterr().err, "already holds a training run", "c=1/checkpoints/jax-seed0-last.npz")


def test_run_reruns_its_training_stage_into_the_same_folder(tiny, tmp_path, capsys):
    """`run` passes --overwrite to its training stages: a second `run` into the same report folder trains
    afresh instead of being refused (the stage's own command line, shortened to one tiny epoch)."""
    stages = {s.name: s for s in run_command.plan(out=tmp_path / "report", dataset=str(tiny), quick=True)}
    argv = stages["train-ae"].argv
    assert "--overwrite" in argv and "--resume" not in argv
    argv = [*argv, "--epochs", "1", "--set", "model.layer_sizes=[0,8]", "--framework", "jax", "--no-progress"]
    assert main(argv) == EXIT_OK
    (tmp_path / "report" / "checkpoints" / "notes.txt").write_text("mine")
    assert main(argv) == EXIT_OK
    assert (tmp_path / "report" / "checkpoints" / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------------------------------- atomic writes


def test_a_failure_mid_checkpoint_write_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "jax-seed0-last.npz"
    save_checkpoint(path, {"w": np.arange(6.0)}, {"epoch": 0}, {"opt/m": np.ones(3)})
    before = path.read_bytes()

    def dies_half_way(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # Ctrl-C (or a full disk) in the middle of the write

    monkeypatch.setattr(np, "savez", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": np.zeros(6)}, {"epoch": 1})
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == [path.name]
    weights, optimizer, meta = load_checkpoint(path)
    assert meta == {"epoch": 0} and np.array_equal(weights["w"], np.arange(6.0))


def test_a_failure_mid_json_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "train.json"
    write_json(path, {"epoch": 0}, command="train")
    before = path.read_bytes()

    def no_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_disk)
    with pytest.raises(OSError):
        write_json(path, {"epoch": 1, "padding": "x" * 100_000}, command="train")
    with pytest.raises(OSError):
        atomic_write_text(path, "half")
    monkeypatch.undo()
    assert path.read_bytes() == before and json.loads(before)["epoch"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["train.json"]


def test_a_kill_mid_write_leaves_a_temporary_file_that_nothing_mistakes_for_a_checkpoint(tiny, finished, tmp_path,
                                                                                       capsys):
    out = _copy(finished, tmp_path)
    stray = out / "checkpoints" / "jax-seed0-last.npz.tmp"  # what SIGKILL during a save leaves
    stray.write_bytes(b"PK\x03\x04 half")
    assert _train(tiny, out, "--resume", "--epochs", "2", "--seeds", "0,1") == EXIT_OK  # resumes from the whole file
    assert "jax seed 0 continues from" in capsys.readouterr().out
    assert _train(tiny, out, "--overwrite") == EXIT_OK
    assert not stray.exists()


# ------------------------------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_during_train_exits_130_without_a_traceback_and_keeps_a_loadable_checkpoint(tmp_path, require_dataset,
                                                                                          capsys):
    """A real `poincare-parity train` process on ML-100K, sent SIGINT once it has written a checkpoint."""
    require_dataset("ml-100k")
    out = tmp_path / "interrupted"
    flags = ["--dataset", "ml-100k", "--protocol", "neumf", "--patience", "500", "--set", "model.layer_sizes=[0,16]",
             "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # `python -m parity.cli train ...`, with Python's own Ctrl-C handler put back first: a shell that starts
    # jobs in the background has them ignore SIGINT (and a preexec_fn is unsafe in this JAX-threaded process)
    entry = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from parity.cli import main; sys.exit(main(sys.argv[1:]))")
    process = subprocess.Popen([sys.executable, "-c", entry, "train", "--epochs", "500", *flags], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "jax-seed0-last.npz"
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert last.exists(), process.communicate(timeout=60)
    time.sleep(0.5)  # into the next epochs
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == EXIT_INTERRUPTED, stderr.decode()
    _one_line(stderr.decode(), "poincare-parity train: interrupted", "--resume")
    assert not (out / "train.json").exists() and not list(out.rglob("*.tmp"))
    epoch = load_checkpoint(last)[2]["state"]["epoch"]
    # loadable the way a user would load it: resume to two epochs past it
    assert main(["train", "--epochs", str(epoch + 3), "--resume", *flags]) == EXIT_OK
    assert f"jax seed 0 continues from {last}" in capsys.readouterr().out
    run = json.loads((out / "train.json").read_text())["runs"][0]
    assert run["resumed_from_epoch"] == epoch and run["epochs_run"] == epoch + 3
