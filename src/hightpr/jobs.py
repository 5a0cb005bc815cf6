"""Where a run trains and how it starts and ends: its run dir, its share of the machine, its resume point.

The one start and the one end of a run, for both training paths (Lightning's loop, `train_run`, and
the batched loop, `hightpr.stacked.trainer`): `run_start` takes the run dirs' locks, sets this job's
threads, returns a finished run as it is (`resume=never` starts it over) and clears what an
attempt that is started over left; `run_end` writes the outputs (`hightpr.runs.write_run`) and the
model card. Also the one owner of the resume policy: a run killed in Lightning's loop continues
from its `last.ckpt` (`resume_point`), an ensemble's members killed in batched training continue
batched, grouped by the epoch they reached (`plan_members`); anything unreadable starts over with
one warning. And of what a job asks a scheduler for (`slurm_request`) and of whether a grid point
has anything left to do (`point_finished`), so that `hightpr.slurm` submits only what the run needs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from hightpr.config import choices, hydra_setting
from hightpr.ensemble import ensemble_dir_of, ensemble_requested
from hightpr.errors import HightprError
from hightpr.identity import run_key
from hightpr.model_card import write_after_training
from hightpr.runs import (
    RunLock,
    clear_outputs,
    describe_checkpoint,
    finished_members,
    is_finished,
    last_checkpoint,
    member_dir,
    read_metrics,
    remove_unstarted,
    saved_epoch,
    write_run,
)

RESUME_MODES = ("auto", "never")  # resume=auto|never|<run dir>
log = logging.getLogger("hightpr")


def starts_over(cfg: DictConfig) -> bool:
    """`resume=never`: train again from scratch, whatever the run dir holds."""
    return str(cfg.get("resume") or "auto") == "never"


@dataclass
class Start:
    """What `run_start` decided for its run dirs: those to train (`todo`), the finished ones returned
    as they are (`finished`: run dir -> metrics), whether they start over, this job's GPU."""

    todo: list[Path]
    finished: dict[Path, dict] = field(default_factory=dict)
    over: bool = False
    gpu: int | None = None


@contextmanager
def run_start(cfg: DictConfig, run_dirs: Sequence[Path]) -> Iterator[Start]:
    """The start of every run, both training paths: one process per run dir (`RunLock`, held until
    the block ends), this job's threads (restored after), the finished runs left as they are, and
    with `resume=never` every run dir cleared to start over. A run refused before it trained
    (`HightprError`) leaves no folder (`remove_unstarted`)."""
    import torch

    run_dirs = [Path(d) for d in run_dirs]
    over = starts_over(cfg)
    threads, gpu = job_resources(cfg)
    before = torch.get_num_threads()
    try:
        with ExitStack() as locks:
            for run_dir in run_dirs:
                locks.enter_context(RunLock(run_dir))
            finished = {d: read_metrics(d) for d in run_dirs if not over and is_finished(d)}
            for run_dir in finished:
                log.info("already finished, not trained again: %s (resume=never retrains it)", run_dir)
            todo = [d for d in run_dirs if d not in finished]
            if over:
                for run_dir in todo:
                    clear_outputs(run_dir)
            if threads:
                torch.set_num_threads(threads)
            try:
                yield Start(todo, finished, over, gpu)
            finally:
                torch.set_num_threads(before)
    except HightprError:
        for run_dir in run_dirs:
            remove_unstarted(run_dir, Path(str(cfg.paths.output_root)))
        raise


def run_end(cfg: DictConfig, run_dir: Path, evaluator, reports: Mapping[str, Mapping[str, float]],
            outputs: Mapping[str, Mapping[str, np.ndarray]], facts: Mapping[str, object],
            run_choices: Mapping[str, str]) -> dict:
    """The end of every run, both training paths: its outputs (`hightpr.runs.write_run`: logits,
    metrics.json, a runs.csv row), then its model card. Returns the metrics."""
    metrics = write_run(cfg, run_dir, evaluator, reports, outputs, facts, run_choices)
    write_after_training(run_dir)
    return metrics


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
    """(torch threads, GPU index) of this job: `trainer.num_threads` if set; in a SLURM job, the CPUs
    it was given (not every core of the node); under the local parallel launcher, cores / n_jobs
    and, with several GPUs, GPU (job number mod GPU count)."""
    threads = int(cfg.trainer.num_threads) if cfg.trainer.get("num_threads") else None
    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if threads is None and slurm_cpus.isdigit() and os.environ.get("SLURM_JOB_ID"):
        threads = int(slurm_cpus)
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


# What a SLURM job asks for when hydra.launcher leaves it null (docs/clusters.md): a CPU run its
# trainer.num_threads or 2 CPUs, a GPU run 4 CPUs per GPU (data loading); 4 GB of memory per CPU.
SLURM_CPUS_CPU_RUN = 2
SLURM_CPUS_PER_GPU = 4
SLURM_MEM_GB_PER_CPU = 4
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


def _device_count(devices: object) -> int | None:
    """How many devices `trainer.devices` names, or None when it leaves it to the machine (auto, -1)."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices >= 1 else None
    if isinstance(devices, list | tuple) or OmegaConf.is_list(devices):
        return len(devices)
    if isinstance(devices, str) and devices.strip().isdigit():
        return int(devices) or None
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    return None


def slurm_request(cfg: DictConfig, given: Mapping[str, int | None] | None = None) -> dict[str, int]:
    """{gpus_per_node, cpus_per_task, mem_gb} a SLURM job of this run asks for, from its trainer.

    A CPU trainer (`trainer.accelerator=cpu`) asks for no GPU, otherwise (gpu, cuda, auto) for as
    many as `trainer.devices` names; CPUs are `trainer.num_threads`, else `SLURM_CPUS_CPU_RUN` for a
    CPU run and `SLURM_CPUS_PER_GPU` per GPU; memory `SLURM_MEM_GB_PER_CPU` per CPU. `given`: the
    settings the user set (`hydra.launcher.cpus_per_task=1`; None: derive it), kept as they are, and
    what is derived follows them (the memory of the CPUs asked for). A data-parallel run (more than
    one device) is refused: a SLURM job here runs one process, and Lightning would expect one SLURM
    task per device.
    """
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if given.get("gpus_per_node") is not None:
        gpus = int(given["gpus_per_node"])
        return _cpus_and_memory(cfg, gpus, given)
    trainer = cfg.trainer
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator == "cpu":
        gpus = 0
    elif accelerator in GPU_ACCELERATORS:
        devices = trainer.get("devices")
        count = _device_count(OmegaConf.to_container(devices) if OmegaConf.is_list(devices) else devices)
        if count != 1:
            raise HightprError(f"trainer.devices={devices}: a hydra/launcher=slurm job trains on one device "
                               "(data-parallel trainer=ddp is not supported there); use trainer.devices=1 "
                               "or trainer=gpu")
        gpus = 1
    else:
        raise HightprError(f"trainer.accelerator={accelerator} does not run under hydra/launcher=slurm: "
                           "use trainer.accelerator=gpu or cpu")
    return _cpus_and_memory(cfg, gpus, given)


def _cpus_and_memory(cfg: DictConfig, gpus: int, given: Mapping[str, int]) -> dict[str, int]:
    threads = cfg.trainer.get("num_threads")
    cpus = int(threads) if threads else (SLURM_CPUS_PER_GPU * gpus if gpus else SLURM_CPUS_CPU_RUN)
    cpus = int(given.get("cpus_per_task") or cpus)
    mem = int(given.get("mem_gb") or SLURM_MEM_GB_PER_CPU * cpus)
    return {"gpus_per_node": gpus, "cpus_per_task": cpus, "mem_gb": mem}


def point_finished(cfg: DictConfig, run_dir: Path, run_choices: dict[str, str] | None = None) -> bool:
    """Whether a grid point has nothing left to train: its run finished (`run_dir`), or, for an
    ensemble, the member it asks for, or all members and their aggregate. `resume=never`: never."""
    if starts_over(cfg):
        return False
    if str(cfg.get("resume") or "auto") not in RESUME_MODES:
        run_dir = Path(str(cfg.resume))
    if not ensemble_requested(cfg):
        return is_finished(run_dir)
    edir = ensemble_dir_of(cfg, run_choices)
    member = cfg.ensemble.get("member")
    if member is not None:
        return is_finished(member_dir(edir, int(member)))
    members = int(cfg.ensemble.members)
    return is_finished(edir) and len(finished_members(edir)) >= members


def worker_process() -> bool:
    """Whether this process is a non-zero rank of a data-parallel run (launched by rank 0)."""
    return any(int(os.environ.get(var, "0") or 0) > 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def resume_point(run_dir: Path, over: bool = False, worker: bool = False) -> Path | None:
    """The checkpoint Lightning's loop continues from, or None to start (over) from scratch.

    Starting over (`over`: resume=never, else a checkpoint that cannot be continued) clears what an
    earlier attempt left, and says why when it had a checkpoint: one the batched loop wrote
    (Lightning cannot continue its state) or one that is unreadable (killed while writing it). A
    data-parallel worker follows rank 0's decision and touches nothing."""
    last = last_checkpoint(run_dir)
    if worker:
        return None if over or not last.is_file() else last
    done = None if over or not last.is_file() else describe_checkpoint(last)
    if done is not None and not done[1]:
        log.info("resuming %s from its last checkpoint (%s)", run_dir, done[0])
        return last
    if done is not None:
        log.warning("%s was written by batched training (ensemble.batched): a run trained on its own starts "
                    "%s over", last, run_dir)
    elif last.is_file() and not over:
        log.warning("%s is unreadable (killed while writing it?): starting %s over", last, run_dir)
    clear_outputs(run_dir)
    return None


@dataclass(frozen=True)
class MemberPlan:
    """How an ensemble's unfinished members train: batched groups (members killed in batched training,
    grouped by the epoch they reached, then the fresh ones) and those that train one by one."""

    batched: list[list[int]]
    one_by_one: list[int]


def plan_members(member_dirs: dict[int, Path], batched: bool, over: bool = False) -> MemberPlan:
    """The resume policy of an ensemble's members (`member_dirs`: member -> run dir): the unfinished
    ones, or all of them when they start over (`over`, `resume=never`)."""
    todo = list(member_dirs) if over else [m for m, d in member_dirs.items() if not is_finished(d)]
    for m in (m for m in member_dirs if m not in todo):
        log.info("member %d already finished: %s", m, member_dirs[m])
    if not batched:
        return MemberPlan([], todo)
    saved = {m: None if over else saved_epoch(member_dirs[m]) for m in todo}
    groups = [[m for m in todo if saved[m] == epoch] for epoch in sorted({e for e in saved.values()
                                                                           if e is not None})]
    rest = [m for m in todo if saved[m] is None]
    # an interrupted one-by-one attempt resumes from its last checkpoint, on its own
    alone = [m for m in rest if not over and last_checkpoint(member_dirs[m]).is_file()]
    fresh = [m for m in rest if m not in alone]
    if len(fresh) > 1:
        return MemberPlan([*groups, fresh], alone)
    return MemberPlan(groups, alone + fresh)
