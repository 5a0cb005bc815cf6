"""hydra/launcher=slurm against a running SLURM (slow; skipped where `sbatch` or a cluster is absent).

Stand one up on a Debian machine as root with `bash scripts/slurm_cluster.sh install` and
`bash scripts/slurm_cluster.sh start` (one node, partitions `debug` and `urgent`), then
`make test-slurm`. The jobs write under pytest's tmp folder: on a cluster of several nodes, that
folder must be shared (`--basetemp` on a shared file system). `HIGHTPR_SLURM_PARTITION` names the
CPU partition (default: debug).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
PARTITION = os.environ.get("HIGHTPR_SLURM_PARTITION", "debug")
TINY = ["dataset=tiny", "trainer=cpu_quick", "trainer.enable_progress_bar=false"]


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-p", PARTITION, "-o", "%a"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "up" in out.stdout


@pytest.fixture(scope="module", autouse=True)
def _slurm():
    if not _cluster_up():
        pytest.skip(f"no running SLURM with a partition {PARTITION} (scripts/slurm_cluster.sh start)")


def _command(tiny_data_dir: Path, out: Path, *overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=slurm",
            f"hydra.launcher.partition={PARTITION}", *TINY, f"paths.data_dir={tiny_data_dir}",
            f"paths.output_root={out}", *overrides]


def _run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HIGHTPR_DEBUG": "0", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("default/runs/*/metrics.json"))]


def test_a_grid_runs_and_a_relaunch_submits_nothing(tiny_data_dir, tmp_path):
    """The issue's command: only the partition is named; then the same command trains nothing."""
    cmd = _command(tiny_data_dir, tmp_path / "out", "trainer.max_epochs=2", "seed=1,2")
    first = _run(cmd, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "0 GPU(s), 2 CPU(s), 8 GB" in first.stdout + first.stderr
    assert len(_metrics(tmp_path / "out")) == 2
    again = _run(cmd, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    said = again.stdout + again.stderr
    assert "2 of 2 grid points already finished: not submitted" in said and "SLURM:" not in said


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_a_failing_job_and_a_refused_submission_are_one_error_line(tiny_data_dir, tmp_path):
    missing = _run(_command(tiny_data_dir, tmp_path / "out", "trainer.max_epochs=1", "seed=1",
                            f"paths.data_dir={tmp_path / 'no-data'}"), tmp_path)
    line = _one_error_line(missing)
    assert "1 of 1 SLURM jobs failed" in line and "not found under" in line and "log: " in line
    refused = _run(_command(tiny_data_dir, tmp_path / "out", "trainer=gpu", "seed=1"), tmp_path)
    assert "sbatch refused the jobs" in _one_error_line(refused)


def _job_id(out: Path, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        folder = out / "default" / "runs" / ".submitit"
        found = [p.name for p in folder.glob("[0-9]*") if p.is_dir()] if folder.is_dir() else []
        if found:
            return found[0]
        time.sleep(1)
    raise AssertionError("no SLURM job was submitted")


def _wait_for(what: str, test, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if test():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _state(job: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-j", job, "-o", "State"], capture_output=True, text=True)
    return (out.stdout.split() or ["UNKNOWN"])[0]


def test_requeued_by_usr1_and_by_scontrol_a_run_ends_as_if_uninterrupted(tiny_data_dir, tmp_path):
    """A deterministic run, interrupted twice after a checkpoint (SIGUSR1, Lightning's usual signal,
    then `scontrol requeue`), ends with the metrics of the same run uninterrupted. Sixteen epochs:
    a job restarts in seconds, and the run must still be training when the second signal comes."""
    same = ["trainer.max_epochs=16", "trainer.patience=16", "trainer.deterministic=true",
            "trainer.num_threads=1", "seed=3"]
    env = {**os.environ, "HIGHTPR_DEBUG": "0", "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "slurm"
    proc = subprocess.Popen(_command(tiny_data_dir, out, *same), cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        job = _job_id(out)

        def checkpoint() -> Path | None:
            found = list(out.glob("default/runs/*/checkpoints/last.ckpt"))
            return found[0] if found else None

        _wait_for("the first checkpoint", lambda: checkpoint() is not None)
        last = checkpoint()
        first = last.stat().st_mtime
        subprocess.run(["scancel", "--signal=USR1", job], check=True)
        _wait_for("a checkpoint after the USR1 requeue",
                  lambda: last.is_file() and last.stat().st_mtime > first and _state(job) == "RUNNING")
        subprocess.run(["scontrol", "requeue", job], check=True)
        log, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-3000:]
    reference = subprocess.run([sys.executable, str(ROOT / "train.py"), *TINY, *same,
                                f"paths.data_dir={tiny_data_dir}", f"paths.output_root={tmp_path / 'ref'}"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    (got,), (want,) = _metrics(out), _metrics(tmp_path / "ref")
    assert got["test"] == want["test"] and got["val"] == want["val"]
    assert got["epochs_trained"] == want["epochs_trained"]
    requeues = subprocess.run(["sacct", "-n", "-D", "-X", "-j", job, "-o", "State"], capture_output=True,
                              text=True).stdout.split()
    assert requeues.count("REQUEUED") + requeues.count("PREEMPTED") >= 2, requeues


def _elapsed_s(job: str) -> int:
    """The job's run time so far (squeue's [D-][H:]M:SS)."""
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%M"], capture_output=True, text=True)
    days, _, clock = (out.stdout.strip() or "0:00").rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + 86400 * int(days or 0)


def test_a_run_longer_than_its_time_limit_is_requeued_and_finishes(tiny_data_dir, tmp_path):
    """SLURM's own time-limit signal requeues the run, and it finishes from its checkpoint.

    The run's length depends on the machine, so the job is not given a short limit up front: once
    it has a checkpoint, its limit is cut to end 91-151 s after now (`signal_delay_s=90`: the
    signal comes within about a minute), and once requeued it is given 30 minutes and released
    from SLURM's requeue hold, so that the test takes minutes on a fast or a slow machine. With
    `timeout_min=10` submitit counts any signal as a time-out (it calls a job timed out past
    min(0.8 T, T - 10 min) of its own start), as it does a real one on a longer limit."""
    out = tmp_path / "out"
    env = {**os.environ, "HIGHTPR_DEBUG": "0", "PYTHONWARNINGS": "ignore"}
    cmd = _command(tiny_data_dir, out, "trainer.max_epochs=200", "trainer.patience=200", "seed=4",
                   "hydra.launcher.timeout_min=10", "hydra.launcher.signal_delay_s=90",
                   "hydra.launcher.max_num_timeout=3")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        job = _job_id(out)
        _wait_for("the first checkpoint", lambda: any(out.glob("default/runs/*/checkpoints/last.ckpt")))
        minutes = (_elapsed_s(job) + 91 + 59) // 60
        subprocess.run(["scontrol", "update", f"JobId={job}", f"TimeLimit={minutes}"], check=True)
        _wait_for("the time-limit requeue", lambda: _state(job) in ("REQUEUED", "PENDING"), timeout=240)
        subprocess.run(["scontrol", "update", f"JobId={job}", "TimeLimit=30"], check=True)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=False)
        log, _ = proc.communicate(timeout=1500)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-3000:]
    (metrics,) = _metrics(out)
    assert metrics["epochs_trained"] == 200
    logs = "".join(p.read_text(errors="replace") for p in out.glob("default/runs/.submitit/*/*.out")) + \
        "".join(p.read_text(errors="replace") for p in out.glob("default/runs/.submitit/*/*.err"))
    assert "this job is timed-out" in logs, logs[-3000:]
