"""Runs that survive: kill -9 and the same command resumes; finished runs are found again; locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from hightpr.runs import RunLock
from tests.conftest import ROOT, _args

RESUMABLE = ["reg=alm", "reg.mu0=1e-3", "reg.mu_schedule=official", "trainer.max_epochs=6",
             "trainer.batch_size=8", "trainer.deterministic=true", "sampler=dual"]


def test_kill_9_then_the_same_command_resumes_to_the_same_metrics(tiny_data_dir, tmp_path, train):
    reference = train(*RESUMABLE, name="reference")
    assert reference.returncode == 0, reference.stderr[-3000:]

    args = [sys.executable, str(ROOT / "train.py"),
            *_args(tiny_data_dir, tmp_path, RESUMABLE, True, "killed")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "outputs" / "killed" / "runs"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list(runs.glob("*/checkpoints/last.ckpt")):  # written atomically: complete once it exists
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_dir,) = runs.iterdir()
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be killed"
    epoch = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"]
    assert epoch < 5

    resumed = train(*RESUMABLE, name="killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.run_dir == run_dir and "resuming" in resumed.stderr
    for key, value in reference.metrics["test"].items():
        assert resumed.metrics["test"][key] == pytest.approx(value, abs=1e-6), key
    assert resumed.metrics["epochs_trained"] == reference.metrics["epochs_trained"]


def test_a_finished_run_is_found_again_and_resume_never_retrains(train):
    first = train("trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    stamp = (first.run_dir / "metrics.json").stat().st_mtime_ns
    again = train("trainer.max_epochs=1")
    assert again.run_dir == first.run_dir and "already finished" in again.stderr
    assert (first.run_dir / "metrics.json").stat().st_mtime_ns == stamp
    other_seed = train("trainer.max_epochs=1", "seed=2")
    assert other_seed.run_dir != first.run_dir
    fresh = train("trainer.max_epochs=1", "resume=never")
    assert fresh.run_dir == first.run_dir and (first.run_dir / "metrics.json").stat().st_mtime_ns != stamp
    assert fresh.metrics["test"] == first.metrics["test"]  # same seed, same result


def test_an_unreadable_last_checkpoint_starts_the_run_over(train):
    first = train("trainer.max_epochs=1")
    (first.run_dir / "metrics.json").unlink()  # as if killed before the end
    (first.run_dir / "checkpoints" / "last.ckpt").write_bytes(b"truncated")
    again = train("trainer.max_epochs=1")
    assert again.returncode == 0 and "starting" in again.stderr and "over" in again.stderr
    assert again.metrics["test"] == first.metrics["test"]


def test_the_run_lock_waits_for_its_owner_and_survives_a_crash(tmp_path):
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT / 'src')!r}); from hightpr.runs import RunLock; "
            f"RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    lock = RunLock(tmp_path, poll_s=0.05)
    assert f"pid {holder.pid}" in lock.owner()
    holder.send_signal(signal.SIGKILL)  # the owner dies without releasing: the kernel drops its lock
    holder.wait()
    start = time.time()
    lock.acquire()
    assert time.time() - start < 5 and f"pid {os.getpid()}" in lock.owner()
    lock.release()


# -- launchers, loggers, clusters ------------------------------------------------------------------
@pytest.mark.slow  # ~1 minute: two launches of joblib worker processes
def test_local_parallel_sweep_then_relaunch_trains_nothing(tiny_data_dir, tmp_path):
    args = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=local", "hydra.launcher.n_jobs=2",
            *_args(tiny_data_dir, tmp_path, ["seed=1,2", "reg=none,alm", "trainer.max_epochs=2"], True,
                   "sweep")]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def launch() -> str:
        proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    assert launch().count("`Trainer.fit` stopped") == 4
    runs = sorted((tmp_path / "outputs" / "sweep" / "runs").glob("*/metrics.json"))
    assert len(runs) == 4
    stamps = [p.stat().st_mtime_ns for p in runs]
    log = launch()
    assert log.count("already finished") == 4 and "`Trainer.fit`" not in log  # nothing trained again
    assert [p.stat().st_mtime_ns for p in runs] == stamps


def test_lightning_does_not_requeue_slurm_jobs_itself(monkeypatch, tmp_path):
    from hightpr.build import build_trainer
    from hightpr.config import compose_config

    for key, value in {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "hightpr",
                       "SLURM_NODELIST": "node1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}.items():
        monkeypatch.setenv(key, value)
    trainer = build_trainer(compose_config(["logger=none", "trainer.accelerator=cpu"]), tmp_path)
    environment = trainer._accelerator_connector.cluster_environment
    assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue is False


def test_submitit_requeues_a_preempted_job_with_the_same_arguments():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import submitit
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    launcher = SlurmLauncher()
    again = launcher.checkpoint(["seed=3"], 5)  # what submitit calls on pre-emption or time-out
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert again.function is launcher and again.args == (["seed=3"], 5)


def test_tensorboard_logger_writes_events(train):
    pytest.importorskip("tensorboard")
    r = train("logger=tensorboard", "trainer.max_epochs=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((r.run_dir / "tb").glob("events.out.tfevents.*"))


def test_wandb_groups_the_members_of_an_ensemble(tmp_path):
    from hightpr.config import compose_config
    from hightpr.ensemble import member_config

    cfg = compose_config(["logger=wandb", "ensemble.members=3", "logger.tags=[rankreg-t1,bce]"])
    member = member_config(cfg, 2, tmp_path / "ensembles" / "tiny-bce-none-abc")
    assert member.logger.group == "tiny-bce-none-abc" and list(member.logger.tags) == ["rankreg-t1", "bce"]
    assert cfg.logger.offline is True


@pytest.mark.slow  # ~30 s: two gloo processes started by Lightning
def test_two_process_ddp_evaluates_every_sample_once(train_cli):
    """Both ranks' shares are gathered: the same metrics and logits as one process (same weights:
    evaluation of the initial model, no training batches)."""
    common = ("trainer.limit_train_batches=0", "trainer.max_epochs=1")
    single = train_cli(*common, name="single")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = train_cli("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                    "trainer.precision=32-true", "trainer.sync_batchnorm=false",
                    "trainer.enable_progress_bar=false", "trainer.num_threads=1", *common, name="ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    for stage in ("val", "test"):
        assert ddp.metrics[stage] == pytest.approx(single.metrics[stage], rel=1e-6), stage
        a, b = (np.load(r.run_dir / f"logits_{stage}.npz") for r in (single, ddp))
        assert np.array_equal(a["ids"], b["ids"]) and len(np.unique(b["ids"])) == len(b["ids"])
        np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-6)
    rows = pd.read_csv(ddp.runs_csv)
    assert len(rows) == 1  # one process writes


def test_alm_multipliers_are_summed_over_processes(monkeypatch):
    from hightpr.regularizers import alm

    reg = alm.ALMRegularizer(num_sample_ids=6, mu0=0.5)
    reduced = []

    def all_reduce(t):  # a second process contributed the same update
        reduced.append(t.clone())
        t.mul_(2)

    monkeypatch.setattr(alm, "distributed", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    reg._update_all_processes(torch.tensor([1, 4]), torch.tensor([0.2, 0.6]), torch.tensor([True, True]))
    assert reg.lambdas.tolist() == pytest.approx([0, 0.2, 0, 0, 0.6, 0])  # 2 x 0.5 x q
    assert reg.seen.tolist() == [False, True, False, False, True, False]
