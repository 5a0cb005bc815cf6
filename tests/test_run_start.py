"""The resume rules on folders made here, no training: `plan_members`, `resume_point`, `run_start`."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
import torch

from hightpr import training
from hightpr.config import compose_config
from hightpr.errors import HightprError
from hightpr.jobs import MemberPlan, plan_members, resume_point, run_start
from hightpr.runs import (
    config_path,
    csv_log_path,
    last_checkpoint,
    lock_path,
    logits_path,
    member_dir,
    metrics_path,
    resume_mark_path,
)


def finished(run_dir: Path, auc: float = 0.9) -> Path:
    """A run dir as a finished run leaves it (the files `is_finished` reads)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    logits_path(run_dir, "test").write_bytes(b"npz")
    metrics_path(run_dir).write_text(json.dumps({"test": {"auc": auc}}))
    return run_dir


def lightning_checkpoint(run_dir: Path, epoch: int = 1, batched: bool = False) -> Path:
    """A `last.ckpt` as Lightning's loop (or, `batched`, the batched loop) writes it."""
    path = last_checkpoint(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": epoch, **({"hightpr": {"batched": True}} if batched else {})}, path)
    return path


def batched_state(run_dir: Path, next_epoch: int) -> None:
    """A member killed in batched training after `next_epoch` epochs of the loop."""
    lightning_checkpoint(run_dir, next_epoch - 1, batched=True)
    resume_mark_path(run_dir).write_text(json.dumps({"next_epoch": next_epoch, "epochs": next_epoch}))


def started_attempt(run_dir: Path) -> None:
    """What an unfinished attempt leaves besides its checkpoint."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path(run_dir).write_text("seed: 1\n")
    csv_log_path(run_dir).parent.mkdir(exist_ok=True)
    csv_log_path(run_dir).write_text("epoch\n0\n")


def dirs(root: Path, members: range) -> dict[int, Path]:
    return {m: member_dir(root, m) for m in members}


# -- plan_members ---------------------------------------------------------------------------------
def test_finished_members_are_left_out_and_the_fresh_ones_train_batched(tmp_path):
    members = dirs(tmp_path, range(1, 4))
    finished(members[1])
    assert plan_members(members, batched=True) == MemberPlan([[2, 3]], [])


def test_one_member_left_trains_alone(tmp_path):
    members = dirs(tmp_path, range(1, 3))
    finished(members[1])
    assert plan_members(members, batched=True) == MemberPlan([], [2])


def test_not_batched_every_unfinished_member_trains_one_by_one(tmp_path):
    members = dirs(tmp_path, range(1, 4))
    finished(members[2])
    assert plan_members(members, batched=False) == MemberPlan([], [1, 3])


def test_members_killed_in_batched_training_resume_grouped_by_the_epoch_they_reached(tmp_path):
    members = dirs(tmp_path, range(1, 7))
    batched_state(members[1], 3)
    batched_state(members[2], 2)
    batched_state(members[3], 3)
    finished(members[4])
    plan = plan_members(members, batched=True)
    assert plan.batched == [[2], [1, 3], [5, 6]]  # by epoch reached, then the fresh ones
    assert plan.one_by_one == []


def test_a_member_interrupted_while_training_alone_resumes_alone(tmp_path):
    members = dirs(tmp_path, range(1, 5))
    finished(members[1])
    lightning_checkpoint(members[3])
    assert plan_members(members, batched=True) == MemberPlan([[2, 4]], [3])


def test_starting_over_plans_every_member_even_finished_or_interrupted_ones(tmp_path):
    members = dirs(tmp_path, range(1, 5))
    finished(members[1])
    batched_state(members[2], 2)
    lightning_checkpoint(members[3])
    assert plan_members(members, batched=True, over=True) == MemberPlan([[1, 2, 3, 4]], [])
    assert plan_members(members, batched=False, over=True) == MemberPlan([], [1, 2, 3, 4])


# -- resume_point ----------------------------------------------------------------------------------
def test_lightnings_last_checkpoint_is_resumed_and_kept(tmp_path):
    started_attempt(tmp_path)
    last = lightning_checkpoint(tmp_path)
    assert resume_point(tmp_path) == last
    assert last.is_file() and config_path(tmp_path).is_file() and csv_log_path(tmp_path).is_file()


@pytest.mark.parametrize("left", ["nothing", "batched", "unreadable", "over"])
def test_what_cannot_be_continued_starts_over_from_a_clean_folder(tmp_path, left):
    started_attempt(tmp_path)
    if left == "batched":
        batched_state(tmp_path, 2)
    elif left == "unreadable":
        last_checkpoint(tmp_path).parent.mkdir()
        last_checkpoint(tmp_path).write_bytes(b"killed while writing")
    elif left == "over":
        lightning_checkpoint(tmp_path)
    assert resume_point(tmp_path, over=left == "over") is None
    assert not last_checkpoint(tmp_path).exists()
    assert not config_path(tmp_path).exists() and not csv_log_path(tmp_path).exists()


def test_a_data_parallel_worker_follows_the_checkpoint_and_touches_nothing(tmp_path):
    started_attempt(tmp_path)
    last = last_checkpoint(tmp_path)
    last.parent.mkdir()
    last.write_bytes(b"rank 0 reads it")
    assert resume_point(tmp_path, worker=True) == last
    assert resume_point(tmp_path, over=True, worker=True) is None
    assert last.is_file() and config_path(tmp_path).is_file()


# -- run_start -------------------------------------------------------------------------------------
def config(tmp_path: Path, *overrides: str):
    return compose_config(["dataset=tiny", "trainer=cpu_quick", f"paths.output_root={tmp_path}", *overrides])


def test_a_finished_run_is_returned_as_it_is(tmp_path):
    run_dir = finished(tmp_path / "run")
    stamp = metrics_path(run_dir).stat().st_mtime_ns
    with run_start(config(tmp_path), [run_dir, tmp_path / "other"]) as start:
        assert start.todo == [tmp_path / "other"] and not start.over
        assert start.finished == {run_dir: {"test": {"auc": 0.9}}}
    assert metrics_path(run_dir).stat().st_mtime_ns == stamp


def test_resume_never_starts_a_finished_run_over_from_a_clean_folder(tmp_path):
    run_dir = finished(tmp_path / "run")
    started_attempt(run_dir)
    lightning_checkpoint(run_dir)
    with run_start(config(tmp_path, "resume=never"), [run_dir]) as start:
        assert start.todo == [run_dir] and start.over and start.finished == {}
        assert sorted(p.name for p in run_dir.iterdir()) == [lock_path(run_dir).name]


def test_the_run_dirs_are_locked_and_the_jobs_threads_set_while_the_run_trains(tmp_path):
    before = torch.get_num_threads()
    run_dirs = [tmp_path / "a", tmp_path / "b"]
    with run_start(config(tmp_path, "trainer.num_threads=1"), run_dirs):
        assert torch.get_num_threads() == 1
        for run_dir in run_dirs:
            with open(lock_path(run_dir)) as handle, pytest.raises(BlockingIOError):
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert torch.get_num_threads() == before
    for run_dir in run_dirs:
        with open(lock_path(run_dir)) as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


def test_a_run_refused_before_it_trained_leaves_no_folder(tmp_path):
    run_dir = tmp_path / "test" / "runs" / "key"
    with pytest.raises(HightprError), run_start(config(tmp_path), [run_dir]):
        raise HightprError("refused")
    assert not (tmp_path / "test").exists()


# -- an ensemble's members, started over ------------------------------------------------------------
@pytest.fixture
def finished_ensemble(tmp_path, monkeypatch):
    """(config of a 2-member ensemble, its dir) with both members finished; no aggregation."""
    monkeypatch.setattr(training, "finish_ensemble", lambda edir, runs_csv: {})
    monkeypatch.setattr(training, "summary_text", lambda edir, metrics: "")

    def make(*overrides: str):
        cfg = config(tmp_path, "ensemble.members=2", *overrides)
        edir = training.ensemble_dir_of(cfg, training.choices())
        for m in (1, 2):
            finished(member_dir(edir, m))
        return cfg, edir
    return make


@pytest.mark.parametrize("resume", ["auto", "never"])
def test_one_by_one_resume_never_trains_finished_members_again(finished_ensemble, resume):
    cfg, edir = finished_ensemble(f"resume={resume}")
    trained = []
    training.train_members(cfg, batched=False, run_fn=lambda mcfg, run_dir: trained.append(run_dir) or {})
    assert trained == ([member_dir(edir, 1), member_dir(edir, 2)] if resume == "never" else [])


@pytest.mark.parametrize("resume", ["auto", "never"])
def test_batched_resume_never_trains_finished_members_again(finished_ensemble, monkeypatch, resume):
    from hightpr.stacked import trainer

    cfg, edir = finished_ensemble(f"resume={resume}")
    groups = []
    monkeypatch.setattr(trainer, "train_batched", lambda cfgs, run_dirs, choices: groups.append(run_dirs))
    training.train_members(cfg, batched=True, run_fn=lambda mcfg, run_dir: pytest.fail("trained alone"))
    assert groups == ([[member_dir(edir, 1), member_dir(edir, 2)]] if resume == "never" else [])
