"""`hydra/launcher=slurm`: hydra-submitit-launcher's SlurmLauncher, fitted to hightpr's runs (Hydra
finds it as `hydra_plugins.hightpr_slurm.slurm_launcher.SlurmLauncher`, a plain subclass).

What it adds to the plugin (docs/clusters.md):

- **Resources that follow the run.** `gpus_per_node`, `cpus_per_task` and `mem_gb` left null in
  `hydra.launcher` are derived from each point's composed config (`hightpr.jobs.slurm_request`);
  points that need different resources are submitted as separate job arrays.
- **Finished points are not submitted.** A re-launched grid submits only the points with something
  left to train (`hightpr.jobs.point_finished`) and says how many it skipped.
- **One line for every failure.** A submission sbatch refuses, a job that fails (its own `error:`
  line and its log) or that was cancelled becomes one `HightprError`: exit 2, no traceback.
- **USR1 is USR2.** submitit checkpoints and requeues a job on SIGUSR2 (pre-emption, or
  `signal_delay_s` before the time limit); a job started with Lightning's usual
  `--signal=SIGUSR1@90` is handled the same way instead of being killed.

Imported only by Hydra when the launcher is chosen (and in each job): it needs the `slurm` extra.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import DictConfig, OmegaConf

from hightpr.errors import HightprError

log = logging.getLogger("hightpr")
DERIVED = ("gpus_per_node", "cpus_per_task", "mem_gb")  # null in hydra.launcher: from the run


# -- one line for each failure (pure functions of what SLURM and the job wrote) ------------------
def sbatch_refusal(text: str) -> str:
    """sbatch's own reason from a refused submission's output (`Invalid generic resource ...`)."""
    found = [line.split("error:", 1)[1].strip() for line in text.splitlines()
             if line.strip().startswith("sbatch: error:")]
    reason = found[-1] if found else (text.strip().splitlines() or ["sbatch failed"])[-1].strip()
    return reason.removeprefix("Batch job submission failed:").strip()


def job_error(log_text: str) -> str | None:
    """The line a failed job ended with: hightpr's own `error: ...` line, else the last exception
    line of a traceback (`RuntimeError: ...`); None when the log holds neither."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("error: ")]
    if own:
        return own[-1].removeprefix("error: ")
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b.*:", line)
              and not line.startswith(("srun:", "slurmstepd:"))]
    return raised[-1] if raised else None


def _describe_point(overrides: Sequence[str]) -> str:
    return " ".join(filter_overrides(list(overrides))) or "(no overrides)"


# -- in the job -------------------------------------------------------------------------------
def handle_usr1_like_usr2() -> None:
    """In a SLURM job: SIGUSR1 checkpoints and requeues like submitit's SIGUSR2 (its default action
    would kill the job, a FAILED job that is never requeued)."""
    handler = signal.getsignal(signal.SIGUSR2)
    if os.environ.get("SLURM_JOB_ID") and callable(handler):
        signal.signal(signal.SIGUSR1, handler)


class HightprSlurmLauncher(BaseSubmititLauncher):
    """hydra-submitit-launcher's SLURM launcher with hightpr's resources, skips and error lines."""

    _EXECUTOR = "slurm"

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """One grid point, in its SLURM job."""
        handle_usr1_like_usr2()
        return super().__call__(*args, **kwargs)

    def _point(self, overrides: Sequence[str]) -> tuple[DictConfig, Path, dict[str, str]]:
        """(config without hydra, run dir, group choices) of one grid point, composed as its job will."""
        from hightpr.config import without_hydra

        assert self.hydra_context is not None and self.config is not None
        sweep = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        run_dir = Path(str(sweep.hydra.sweep.dir)) / str(sweep.hydra.sweep.subdir)
        picked = {k: v for k, v in (sweep.hydra.runtime.choices or {}).items()
                  if v is not None and not str(k).startswith("hydra")}
        return without_hydra(sweep), run_dir, picked

    def request(self, cfg: DictConfig) -> dict[str, Any]:
        """The launcher's settings for one point: those left null derived from its config."""
        from hightpr.jobs import slurm_request

        params = dict(self.params)
        params.update(slurm_request(cfg, {k: params.get(k) for k in DERIVED}))
        return params

    def _executor(self, params: dict[str, Any]):
        """A submitit executor for `params`, as the plugin's own `launch` builds it."""
        import submitit

        init = {"folder": params["submitit_folder"], "slurm_max_num_timeout": params["max_num_timeout"]}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        rest = {k: v for k, v in params.items() if k not in ("submitit_folder", "max_num_timeout")}
        executor.update_parameters(**{(k if k in base else f"slurm_{k}"): v for k, v in rest.items()})
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit the grid's unfinished points (one array per distinct request), wait for them, and
        return every point's result; a refused submission or a failed job is one `HightprError`."""
        from hightpr.jobs import point_finished

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        results: dict[int, JobReturn] = {}
        groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
        for i, overrides in enumerate(job_overrides):
            cfg, run_dir, picked = self._point(overrides)
            if point_finished(cfg, run_dir, picked):
                results[i] = _finished_return(overrides, run_dir)
                continue
            params = self.request(cfg)
            groups.setdefault(repr(sorted(params.items())), (params, []))[1].append(i)
        skipped = len(results)
        if skipped:
            log.info("%d of %d grid points already finished: not submitted", skipped, len(job_overrides))
        if not groups:
            return [results[i] for i in range(len(job_overrides))]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        submitted = []
        for params, points in groups.values():
            log.info("SLURM: %d job(s) with %s", len(points), describe_request(params))
            for i in points:
                log.info("\t#%d : %s", initial_job_idx + i, _describe_point(job_overrides[i]))
            args = [(list(job_overrides[i]), "hydra.sweep.dir", initial_job_idx + i,
                     f"job_id_for_{initial_job_idx + i}", Singleton.get_state()) for i in points]
            jobs = self._submit(params, args)
            submitted += list(zip(points, jobs, strict=True))
        failures = []
        for i, job in submitted:
            outcome = _wait(job, job_overrides[i])
            if isinstance(outcome, str):
                failures.append(outcome)
            else:
                results[i] = outcome
        if failures:
            more = f" (and {len(failures) - 1} more: see their logs)" if len(failures) > 1 else ""
            raise HightprError(f"{len(failures)} of {len(submitted)} SLURM jobs failed; finished runs are "
                               f"kept and the same command submits the rest again: {failures[0]}{more}")
        return [results[i] for i in range(len(job_overrides))]

    def _submit(self, params: dict[str, Any], args: list[tuple]) -> list:
        """`map_array` of one request; sbatch's refusal becomes one line naming the request."""
        from submitit.core.utils import FailedJobError

        try:
            with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's refusal as well
                return self._executor(params).map_array(self, *zip(*args, strict=True))
        except (FailedJobError, OSError) as err:
            raise HightprError(f"sbatch refused the jobs: {sbatch_refusal(str(err))}; the request was "
                               f"{describe_request(params)}: change it with hydra.launcher.<setting>=... "
                               "(docs/clusters.md)") from err


def describe_request(params: dict[str, Any]) -> str:
    """`partition=debug, 0 GPUs, 2 CPUs, 8 GB, 240 min (requeued up to 3 times on time-out)`."""
    where = ", ".join(f"{k}={params[k]}" for k in ("partition", "account", "qos", "constraint")
                      if params.get(k))
    what = (f"{params.get('gpus_per_node') or 0} GPU(s), {params.get('cpus_per_task')} CPU(s), "
            f"{params.get('mem_gb')} GB, {params.get('timeout_min')} min (requeued up to "
            f"{params.get('max_num_timeout')} times on time-out)")
    return f"{where}, {what}" if where else what


def _finished_return(overrides: Sequence[str], run_dir: Path) -> JobReturn:
    """The result of a point that was not submitted: its validation objective, read back."""
    from hightpr.metrics.evaluators import monitor_value
    from hightpr.runs import metrics_path, read_metrics

    value = None
    if metrics_path(run_dir).is_file():
        found = monitor_value(read_metrics(run_dir).get("val"))
        value = None if found is None else found[1]
    ret = JobReturn(overrides=list(overrides), working_dir=str(run_dir), status=JobStatus.COMPLETED)
    ret.return_value = value
    return ret


def _wait(job, overrides: Sequence[str]) -> JobReturn | str:
    """A job's result, or one line saying how it failed: its own error, its state, its log."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    where = f"job {job.job_id} ({_describe_point(overrides)})"
    try:
        ret = job.results()[0]
    except (UncompletedJobError, FailedJobError) as err:
        stderr = job.paths.stderr
        text = stderr.read_text(errors="replace") if stderr.is_file() else str(err)
        reason = job_error(text)
        state = str(job.state)
        if reason is None:
            reason = f"ended {state}" + (" without an error line (a signal nothing handles?)"
                                         if state.startswith(("CANCELLED", "FAILED")) else "")
        return f"{where}: {reason.rstrip('.')}; log: {stderr}"
    if ret.status == JobStatus.FAILED:
        err = ret._return_value
        return f"{where}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; " \
               f"log: {job.paths.stderr}"
    return ret
