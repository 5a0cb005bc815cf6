"""Bad values, broken files and interrupted runs: one `error:` line naming the fix, nothing lost.

In-process where the message and exit code can be checked there (`run_train`); the command line
itself (exit codes, no traceback) in one subprocess that calls `main` once per command.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.errors import HydraException

from hightpr.checks import composition_message
from hightpr.config import compose_config
from hightpr.data import prepare
from hightpr.data.cifar_files import CIFAR10_DIR, MANIFEST, repair_command
from hightpr.data.prepare import make_tiny_cifar10
from tests.conftest import FAST_TRAIN, ROOT, run_train

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text
    assert "Traceback" not in text, text
    return lines[0]


def _no_run_folders(root: Path) -> None:
    runs = root / "outputs"
    assert not runs.exists() or not [p for p in runs.rglob("runs/*") if p.is_dir()], list(runs.rglob("*"))


@pytest.mark.parametrize(("override", "says"), [
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc': expected null or -1 (no limit) or an integer >= 0"),
    ("seed=abc", "seed='abc': expected an integer from 0 to 2**32-1"),
    ("trainer.batch_size=0", "trainer.batch_size=0: expected an integer >= 1"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5: expected null, a batch count"),
    ("optimizer.lr=abc", "optimizer.lr='abc': expected a number"),
    ("paths.output_root=/proc/hightpr-x", "cannot create folders under /proc"),
])
def test_bad_values_are_refused_before_any_work(tiny_data_dir, tmp_path, override, says):
    result = run_train(tiny_data_dir, tmp_path, override)
    assert result.returncode == 2
    assert says in _one_error_line(result.stderr)
    _no_run_folders(tmp_path)


def test_output_root_under_a_file(tiny_data_dir, tmp_path):
    (tmp_path / "afile").write_text("x")
    result = run_train(tiny_data_dir, tmp_path, f"paths.output_root={tmp_path / 'afile' / 'out'}")
    assert result.returncode == 2
    assert "afile is a file, not a folder; set paths.output_root" in _one_error_line(result.stderr)


@NO_GPU
@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_without_a_gpu(tiny_data_dir, tmp_path, trainer):
    result = run_train(tiny_data_dir, tmp_path, f"trainer={trainer}", "trainer.num_threads=1")
    line = _one_error_line(result.stderr)
    assert result.returncode == 2 and "needs a CUDA GPU" in line
    assert "trainer=cpu_quick" in line and "trainer.accelerator=cpu" in line


def test_misspelled_key_gets_did_you_mean_without_plus():
    with pytest.raises(HydraException) as err:
        compose_config(["trainer.max_epoch=1"])
    message = composition_message(err.value)
    assert message.startswith("trainer.max_epoch: no component reads this setting; did you mean max_epochs?")
    with pytest.raises(HydraException) as err:
        compose_config(["trainer.gradient_clip_algorithm=value"])  # a Trainer argument not in the yaml
    assert composition_message(err.value) == ("trainer.gradient_clip_algorithm is not in the config yet: "
                                              "add it with +trainer.gradient_clip_algorithm=...")


def test_every_conflict_is_named_at_once(tiny_data_dir, tmp_path):
    result = run_train(tiny_data_dir, tmp_path, "reg=alm", "dataset=cifar10_lt",
                       f"dataset.root={tiny_data_dir / 'tiny-cifar10'}", "dataset.imbalance=2",
                       "dataset.val_per_class=10")
    line = _one_error_line(result.stderr)
    assert result.returncode == 2 and line.startswith("error: 2 problems:")
    assert "multi-class loss" in line and "reg=alm is binary" in line
    _no_run_folders(tmp_path)


@pytest.fixture
def damaged_copy(tiny_data_dir, tmp_path) -> Path:
    """A copy of the tiny data (the session's copy stays intact)."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    return data


def test_damaged_files_are_refused_and_the_named_command_repairs_them(damaged_copy, tmp_path):
    folder = damaged_copy / "tiny-cifar10" / CIFAR10_DIR
    raw = bytearray((folder / "test_batch").read_bytes())
    raw[1000:1100] = bytes(b ^ 0xFF for b in raw[1000:1100])  # 100 flipped bytes in the image data
    (folder / "test_batch").write_bytes(bytes(raw))
    with open(folder / "data_batch_2", "r+b") as handle:  # truncated
        handle.truncate(5000)
    result = run_train(damaged_copy, tmp_path)
    line = _one_error_line(result.stderr)
    assert result.returncode == 2 and str(folder) in line and "is missing or corrupt" in line
    command = line.split("`")[1]
    assert command == f"python -m hightpr.data.prepare tiny --data-dir {damaged_copy}"
    _no_run_folders(tmp_path)
    assert prepare.main(command.split()[3:]) == 0  # the named command, as the shell would run it
    assert run_train(damaged_copy, tmp_path, "trainer.fast_dev_run=true").returncode == 0


def test_repair_command_of_real_cifar_names_its_source(tmp_path):
    archive = tmp_path / "src" / "cifar10-jpg.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(b"")
    small = make_tiny_cifar10(tmp_path / "t", 2, 1) / CIFAR10_DIR
    root = tmp_path / "data"
    folder = root / CIFAR10_DIR
    shutil.copytree(small, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "source": "jpeg:cifar10-jpg.tar.gz",
                                               "from": str(archive)}))
    want = f"python -m hightpr.data.prepare cifar10 --force --from {archive} --data-dir {root}"
    assert repair_command(root, "cifar10") == want
    manifest.pop("from", None)  # an older manifest: the archive's name only
    (folder / MANIFEST).write_text(json.dumps({**manifest, "source": "jpeg:cifar10-jpg.tar.gz"}))
    assert "--from data-sources/cifar10/cifar10-jpg.tar.gz" in repair_command(root, "cifar10")


def test_debug_run_stays_out_of_the_results_and_the_log_has_no_phantom_epoch(tiny_data_dir, tmp_path):
    debug = run_train(tiny_data_dir, tmp_path, "trainer.fast_dev_run=true", name="dbg")
    assert debug.returncode == 0 and not debug.runs_csv.exists()
    full = run_train(tiny_data_dir, tmp_path, name="full")  # FAST_TRAIN: 2 epochs
    assert full.returncode == 0
    log = pd.read_csv(full.run_dir / "csv" / "metrics.csv")
    assert sorted(log["epoch"].unique()) == [0, 1] == list(range(full.metrics["epochs_trained"]))
    assert "debug" not in pd.read_csv(full.runs_csv).columns


DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys
    from hightpr.cli.train import main
    results = []
    for argv in json.loads(sys.argv[1]):
        sys.argv = ["train.py", *argv]
        err = io.StringIO()
        code = 0
        with contextlib.redirect_stderr(err):
            try:
                main()
            except SystemExit as stop:
                code = stop.code
            except BaseException as exc:  # a traceback would have reached the user
                code, _ = -1, err.write(f"Traceback {type(exc).__name__}: {exc}")
        results.append({"code": code, "stderr": err.getvalue()})
    print(json.dumps(results))
""")


def test_command_line_refusals_are_one_line(tiny_data_dir, tmp_path):
    """`python train.py` itself: exit 2, one `error:` line, no traceback, nothing written."""
    base = [f"paths.data_dir={tiny_data_dir}", f"paths.output_root={tmp_path / 'outputs'}", "dataset=tiny"]
    sweep = tmp_path / "outputs" / "default" / "runs"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("the previous grid\n")
    commands = {
        "trainer.max_epochs='abc'": [*base, "trainer.max_epochs=abc"],
        "seed": [*base, "seed=abc"],
        "did you mean max_epochs?": [*base, "trainer.max_epoch=1"],
        "'trainer/nope'; available options: cpu_quick, ddp, default, gpu": [*base, "trainer=nope"],
        "cannot create folders under /proc": [*base, "paths.output_root=/proc/hightpr-x"],
        "hydra/launcher=local": ["-m", "hydra/launcher=slurm", *base, "seed=1,2"],
        "ensemble.batched='maybe': expected true or false": [*base, "ensemble.members=2",
                                                             "ensemble.batched=maybe"],
        "ensemble.forward='x'": ["-m", *base, "ensemble.forward=x", "seed=1,2"],
    }
    if not torch.cuda.is_available():
        commands["trainer=cpu_quick"] = [*base, "trainer=gpu"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HIGHTPR_DEBUG": "0"}
    env.pop("HYDRA_FULL_ERROR", None)
    # hydra/launcher=slurm on a machine without SLURM, also where SLURM is installed
    env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep)
                                  if d and not (Path(d) / "sbatch").exists())
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(list(commands.values()))], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for (says, argv), got in zip(commands.items(), results, strict=True):
        assert got["code"] == 2, (argv, got)
        assert says in _one_error_line(got["stderr"]), (argv, got)
    assert (sweep / "multirun.yaml").read_text() == "the previous grid\n"  # refused before writing
    assert [p.name for p in sweep.iterdir()] == ["multirun.yaml"]  # no run folders


@pytest.mark.slow
def test_ctrl_c_then_the_same_command_keeps_every_epoch(tiny_data_dir, tmp_path):
    """SIGINT during epoch 2 of 6, the same command again: every epoch logged once, in order, and the
    metrics of an uninterrupted run."""
    args = [sys.executable, str(ROOT / "train.py"), *FAST_TRAIN, "trainer.max_epochs=6",
            "trainer.patience=10", "trainer.deterministic=true", f"paths.data_dir={tiny_data_dir}",
            "model.width=16"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def train(name: str) -> Path:
        subprocess.run([*args, f"name={name}"], cwd=tmp_path, env=env, check=True, capture_output=True,
                       timeout=600)
        return next((tmp_path / "outputs" / name / "runs").iterdir())

    proc = subprocess.Popen([*args, "name=cut"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not list(tmp_path.glob("outputs/cut/runs/*/checkpoints/last.ckpt")) and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    err, _ = proc.communicate(timeout=120)
    cut_dir = next((tmp_path / "outputs" / "cut" / "runs").iterdir())
    assert proc.returncode == 130 and not (cut_dir / "metrics.json").exists(), err
    assert "run the same command to resume" in err
    assert train("cut") == cut_dir
    ref_dir = train("ref")
    cut, ref = (pd.read_csv(d / "csv" / "metrics.csv") for d in (cut_dir, ref_dir))
    assert list(cut.dropna(subset=["train/loss"])["epoch"]) == list(range(6))
    assert list(cut.dropna(subset=["val/auc"])["epoch"]) == list(range(6))
    pd.testing.assert_frame_equal(cut, ref)
    cut_m, ref_m = (json.loads((d / "metrics.json").read_text()) for d in (cut_dir, ref_dir))
    assert cut_m["test"] == ref_m["test"] and cut_m["val"] == ref_m["val"]
