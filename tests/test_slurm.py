"""hydra/launcher=slurm without a cluster: the request derived from a composed run, the one-line
messages read from what sbatch and a job wrote, which grid points are finished, the tables'
launcher settings. The same paths against a running SLURM: tests/test_slurm_cluster.py (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hightpr.config import compose_config
from hightpr.errors import HightprError
from hightpr.jobs import point_finished, slurm_request


@pytest.mark.parametrize(("overrides", "expected"), [
    (["trainer=cpu_quick"], {"gpus_per_node": 0, "cpus_per_task": 2, "mem_gb": 8}),
    (["trainer=cpu_quick", "trainer.num_threads=1"], {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 4}),
    (["trainer=gpu"], {"gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 16}),
    ([], {"gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 16}),          # accelerator auto: a GPU
    (["trainer=gpu", "trainer.devices=[2]"], {"gpus_per_node": 1, "cpus_per_task": 4, "mem_gb": 16}),
])
def test_the_request_follows_the_trainer(overrides, expected):
    assert slurm_request(compose_config(overrides)) == expected


def test_what_the_user_sets_is_kept_and_the_rest_follows_it():
    cfg = compose_config(["trainer=cpu_quick"])
    assert slurm_request(cfg, {"cpus_per_task": 1, "gpus_per_node": None, "mem_gb": None}) == \
        {"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 4}
    assert slurm_request(compose_config(), {"gpus_per_node": 0}) == \
        {"gpus_per_node": 0, "cpus_per_task": 2, "mem_gb": 8}
    assert slurm_request(cfg, {"mem_gb": 3})["mem_gb"] == 3


def test_a_data_parallel_run_is_refused_naming_the_fix():
    with pytest.raises(HightprError, match="trainer.devices=-1.*use trainer.devices=1"):
        slurm_request(compose_config(["trainer=ddp"]))


def test_finished_points(tmp_path):
    cfg = compose_config(["trainer=cpu_quick", f"paths.output_root={tmp_path}"])
    run = tmp_path / "run"
    run.mkdir()
    assert not point_finished(cfg, run)
    (run / "logits_test.npz").write_bytes(b"")
    (run / "metrics.json").write_text(json.dumps({"val": {"auc": 0.9}}))
    assert point_finished(cfg, run)
    assert not point_finished(compose_config(["trainer=cpu_quick", "resume=never"]), run)
    member = compose_config(["trainer=cpu_quick", f"paths.output_root={tmp_path}", "ensemble.key=k",
                             "ensemble.member=2"])
    assert not point_finished(member, run)
    mdir = tmp_path / "default" / "ensembles" / "k" / "member_02"
    mdir.mkdir(parents=True)
    for name in ("logits_test.npz", "metrics.json"):
        (mdir / name).write_text("{}")
    assert point_finished(member, run)


def test_sbatch_refusals_and_job_errors_are_read_as_one_line():
    slurm = pytest.importorskip("hightpr.slurm", reason="hydra-submitit-launcher not installed")
    assert slurm.sbatch_refusal("sbatch: error: Invalid generic resource (gres) specification\n") == \
        "Invalid generic resource (gres) specification"
    assert slurm.sbatch_refusal("sbatch: error: Batch job submission failed: More processors requested than "
                                "permitted") == "More processors requested than permitted"
    log = ("submitit WARNING ...\nTraceback (most recent call last):\n  File x\n"
           "error: CIFAR10 not found under /x (prepare it)\n"
           "srun: error: vm: task 0: Exited with exit code 2\n")
    assert slurm.job_error(log) == "CIFAR10 not found under /x (prepare it)"
    crash = "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\nsrun: error: x\n"
    assert slurm.job_error(crash) == "RuntimeError: CUDA out of memory"
    assert slurm.job_error("slurmstepd: error: *** JOB 7 CANCELLED ***\n") is None


def test_tables_pass_launcher_settings_to_the_launcher_only():
    from hightpr.tables.runner import launcher_error, launcher_setting

    assert launcher_setting("hydra.launcher.gpus_per_node=0") and not launcher_setting("trainer.max_epochs=1")
    out = "[HYDRA] SLURM: 2 job(s)\nerror: sbatch refused the jobs: Invalid account\n"
    assert launcher_error(out) == "sbatch refused the jobs: Invalid account"
    assert launcher_error("Traceback\nValueError: x\n") == "ValueError: x"


def test_tables_compose_a_run_with_a_launcher_setting(tmp_path):
    from hightpr.tables.results import resolve
    from hightpr.tables.runner import Context, compose_run, table_plans
    from hightpr.tables.specs import get_scale, get_spec

    scale = get_scale("smoke").with_overrides(["hydra.launcher.partition=debug",
                                               "hydra.launcher.gpus_per_node=0"])
    assert "hydra.launcher.partition=debug" in scale.execution
    ctx = Context(scale, results_dir=tmp_path, paper_root=Path("results") / "paper")
    plan_ = next(p for p in table_plans(get_spec("rankreg-t1"), ctx) if not p.unavailable)
    run = resolve(plan_, ctx.pool, scale.grid_limit, assume_first=True)[0][0]
    assert compose_run(plan_, run, ctx).trainer.accelerator == "cpu"
