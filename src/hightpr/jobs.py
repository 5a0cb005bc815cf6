"""Where a run trains and how it continues: its run dir, its share of the machine, its resume point.

The one owner of the resume policy of both training paths: a finished run is not trained again
(`resume=never` retrains it), a run killed in Lightning's loop continues from its `last.ckpt`, an
ensemble's members killed in batched training continue batched, grouped by the epoch they reached
(`hightpr.stacked.resume`); anything unreadable starts over with one warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from hightpr.config import choices, hydra_setting
from hightpr.ensemble import is_finished
from hightpr.identity import run_key
from hightpr.runs import clear_outputs, describe_checkpoint, last_checkpoint
from hightpr.stacked.resume import saved_epoch

RESUME_MODES = ("auto", "never")  # resume=auto|never|<run dir>
log = logging.getLogger("hightpr")


def fresh_start(cfg: DictConfig) -> bool:
    """`resume=never`: train again from scratch, whatever the run dir holds."""
    return str(cfg.get("resume") or "auto") == "never"


def default_run_dir(cfg: DictConfig) -> Path:
    """`resume=<run dir>`, else Hydra's job dir, else `<output_root>/<name>/runs/<run key>`: the same
    configuration always lands in the same folder (a finished run is found, a killed one resumed)."""
    resume = str(cfg.get("resume") or "auto")
    if resume not in RESUME_MODES:
        return Path(resume)
    job_dir = hydra_setting("runtime.output_dir")
    if job_dir:
        return Path(job_dir)
    return Path(cfg.paths.output_root) / str(cfg.name) / "runs" / run_key(cfg, choices())


def job_resources(cfg: DictConfig) -> tuple[int | None, int | None]:
    """(torch threads, GPU index) of this job: `trainer.num_threads` if set; under the local
    parallel launcher, cores / n_jobs and, with several GPUs, GPU (job number mod GPU count)."""
    threads = int(cfg.trainer.num_threads) if cfg.trainer.get("num_threads") else None
    launcher = hydra_setting("launcher")
    if launcher is None or "Joblib" not in str(launcher.get("_target_", "")):
        return threads, None
    import torch

    cores = os.cpu_count() or 1
    n_jobs = int(launcher.get("n_jobs") or -1)
    n_jobs = cores if n_jobs < 1 else n_jobs
    threads = threads or max(1, cores // n_jobs)
    gpus = torch.cuda.device_count() if cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto") else 0
    single = cfg.trainer.get("devices") in (1, "1", None)
    gpu = int(hydra_setting("job.num")) % gpus if gpus > 1 and single else None
    return threads, gpu


def worker_process() -> bool:
    """Whether this process is a non-zero rank of a data-parallel run (launched by rank 0)."""
    return any(int(os.environ.get(var, "0") or 0) > 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def resume_point(run_dir: Path, fresh: bool, worker: bool = False) -> Path | None:
    """The checkpoint Lightning's loop continues from, or None to start (over) from scratch.

    Starting over clears what an earlier attempt left, and says why when it had a checkpoint: one
    the batched loop wrote (Lightning cannot continue its state) or one that is unreadable (killed
    while writing it). A data-parallel worker follows rank 0's decision and touches nothing."""
    last = last_checkpoint(run_dir)
    if worker:
        return None if fresh or not last.is_file() else last
    done = None if fresh or not last.is_file() else describe_checkpoint(last)
    if done is not None and not done[1]:
        log.info("resuming %s from its last checkpoint (%s)", run_dir, done[0])
        return last
    if done is not None:
        log.warning("%s was written by batched training (ensemble.batched): a run trained on its own starts "
                    "%s over", last, run_dir)
    elif last.is_file() and not fresh:
        log.warning("%s is unreadable (killed while writing it?): starting %s over", last, run_dir)
    clear_outputs(run_dir)
    return None


@dataclass(frozen=True)
class MemberPlan:
    """How an ensemble's unfinished members train: batched groups (members killed in batched training,
    grouped by the epoch they reached, then the fresh ones) and those that train one by one."""

    batched: list[list[int]]
    one_by_one: list[int]


def plan_members(member_dirs: dict[int, Path], batched: bool) -> MemberPlan:
    """The resume policy of an ensemble's unfinished members (`member_dirs`: member -> run dir)."""
    todo = [m for m, d in member_dirs.items() if not is_finished(d)]
    for m in (m for m in member_dirs if m not in todo):
        log.info("member %d already finished: %s", m, member_dirs[m])
    if not batched:
        return MemberPlan([], todo)
    saved = {m: saved_epoch(member_dirs[m]) for m in todo}
    groups = [[m for m in todo if saved[m] == epoch] for epoch in sorted({e for e in saved.values()
                                                                           if e is not None})]
    rest = [m for m in todo if saved[m] is None]
    # an interrupted one-by-one attempt resumes from its last checkpoint, on its own
    alone = [m for m in rest if last_checkpoint(member_dirs[m]).is_file()]
    fresh = [m for m in rest if m not in alone]
    if len(fresh) > 1:
        return MemberPlan([*groups, fresh], alone)
    return MemberPlan(groups, alone + fresh)
