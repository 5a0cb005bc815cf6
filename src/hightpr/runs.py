"""A run folder: the one owner of its layout, and what a finished run leaves behind.

Every file name of a run (or ensemble) folder is written here: `metrics.json`
(written last: the mark of a finished run, `is_finished`), `logits_{val,test}.npz`,
`config_resolved.yaml`, `csv/metrics.csv`, `model_card.md`, `run.lock` (`RunLock`), the
checkpoints (`last_checkpoint`, `best_checkpoint`) and batched training's resume mark
(`resume_mark`); an ensemble's `member_NN` folders (`member_dir`, `finished_members`). Other
modules ask for the paths. `write_run` writes what every run ends with (both training paths, through
`hightpr.jobs.run_end`)."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from hightpr.errors import HightprError
from hightpr.regularizers.activity import activity

# -- the layout of a run folder ------------------------------------------------------------------
METRICS = "metrics.json"
CONFIG = "config_resolved.yaml"
CARD = "model_card.md"
SAMPLES = "samples.csv"  # dataset=images' record of its samples (hightpr.data.image_table.SAMPLES)
LOCK = "run.lock"
CSV_DIR = "csv"  # the csv logger's folder (conf/logger/csv.yaml: name: csv)
CSV_LOG = "metrics.csv"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST_STEM = "best-epoch"  # best-epoch007.ckpt: the best epoch's weights
RESUME_MARK = "batched.json"  # beside last.ckpt: the loop epoch batched training goes on at
MEMBER_PREFIX = "member_"


def metrics_path(run_dir: Path) -> Path:
    """`metrics.json` of a run or ensemble folder."""
    return Path(run_dir) / METRICS


def logits_path(run_dir: Path, stage: str) -> Path:
    """`logits_{stage}.npz` (stage val or test) of a run or ensemble folder."""
    return Path(run_dir) / f"logits_{stage}.npz"


def config_path(run_dir: Path) -> Path:
    """`config_resolved.yaml`: the run's configuration, resolved, as it trained."""
    return Path(run_dir) / CONFIG


def card_path(run_dir: Path) -> Path:
    """`model_card.md` of a finished run or ensemble folder."""
    return Path(run_dir) / CARD


def samples_path(run_dir: Path) -> Path:
    """`samples.csv`: dataset=images' record of the run's samples."""
    return Path(run_dir) / SAMPLES


def lock_path(run_dir: Path) -> Path:
    """`run.lock`: the `flock` of the process training the run (`RunLock`)."""
    return Path(run_dir) / LOCK


def csv_log_path(run_dir: Path) -> Path:
    """`csv/metrics.csv`: the per-epoch log of both training paths."""
    return Path(run_dir) / CSV_DIR / CSV_LOG


def checkpoint_dir(run_dir: Path) -> Path:
    """`<run dir>/checkpoints`: the best epoch's checkpoint and `last.ckpt`."""
    return Path(run_dir) / CHECKPOINTS


def last_checkpoint(run_dir: Path) -> Path:
    """`checkpoints/last.ckpt`: the state a killed run resumes from (both training paths write it)."""
    return checkpoint_dir(run_dir) / LAST


BEST_FILENAME = BEST_STEM + "{epoch:03d}"  # Lightning's ModelCheckpoint filename pattern


def best_checkpoint(run_dir: Path, epoch: int) -> Path:
    """`checkpoints/best-epochNNN.ckpt`: the weights of the best epoch (0-based `epoch`)."""
    return checkpoint_dir(run_dir) / f"{BEST_STEM}{epoch:03d}.ckpt"


def resume_mark_path(run_dir: Path) -> Path:
    """`checkpoints/batched.json`: the loop epoch an interrupted batched member goes on at."""
    return checkpoint_dir(run_dir) / RESUME_MARK


def resume_mark(run_dir: Path) -> dict | None:
    """{next_epoch, epochs} of an interrupted batched member (its mark and `last.ckpt` both there),
    or None: no batched state to resume."""
    mark = resume_mark_path(run_dir)
    if not (mark.is_file() and last_checkpoint(run_dir).is_file()):
        return None
    try:
        found = json.loads(mark.read_text())
        return {"next_epoch": int(found["next_epoch"]), "epochs": int(found["epochs"])}
    except (ValueError, KeyError, TypeError):
        return None


def saved_epoch(run_dir: Path) -> int | None:
    """The loop epoch an interrupted batched member resumes at (None: no batched state there)."""
    found = resume_mark(run_dir)
    return None if found is None else found["next_epoch"]


def is_finished(run_dir: Path) -> bool:
    """A run (or an aggregated ensemble) finished when its metrics.json, written last, and its test
    logits are there: the one definition of finished."""
    return metrics_path(run_dir).is_file() and logits_path(run_dir, "test").is_file()


def read_metrics(run_dir: Path) -> dict:
    """The `metrics.json` of a finished run or ensemble; an unreadable one is one clear error."""
    path = metrics_path(run_dir)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise HightprError(f"{path}: not readable ({err}); re-run that run") from err


def member_dir(ensemble_dir: Path, member: int) -> Path:
    """`member_NN`: the run dir of member `member` of an ensemble."""
    return Path(ensemble_dir) / f"{MEMBER_PREFIX}{member:02d}"


def finished_members(ensemble_dir: Path) -> dict[int, Path]:
    """{member index: run dir} of an ensemble's finished members, in index order."""
    found = {}
    for path in Path(ensemble_dir).glob(f"{MEMBER_PREFIX}*"):
        match = re.fullmatch(rf"{MEMBER_PREFIX}(\d+)", path.name)
        if match and path.is_dir() and is_finished(path):
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


# -- what a run writes ---------------------------------------------------------------------------
def save_logits(run_dir: Path, stage: str, outputs: Mapping[str, np.ndarray]) -> Path:
    """`logits_{stage}.npz`: scores (the ranked scalar), labels, sample ids, raw logits [N, K]."""
    path = logits_path(run_dir, stage)
    np.savez_compressed(path, **{k: outputs[k] for k in ("scores", "labels", "ids", "logits")})
    return path


def load_logits(path: Path) -> dict[str, np.ndarray]:
    """Read a `logits_*.npz`; a missing or corrupt file is one clear error."""
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as err:
        raise HightprError(f"{path}: missing or corrupt logits file ({err}); re-run that run") from err


def write_json(path: Path, content: Mapping) -> Path:
    """A JSON file written to a temporary file and renamed into place: never half there."""
    path = Path(path)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True, default=float))
    os.replace(tmp, path)
    return path


def save_run_config(cfg: DictConfig, run_dir: Path, datamodule) -> None:
    """`config_resolved.yaml`, and what the data records of itself where it does (`record(run_dir)`:
    dataset=images' samples.csv). Written when a run starts, by both training paths."""
    OmegaConf.save(cfg, config_path(run_dir), resolve=True)
    record = getattr(datamodule, "record", None)
    if record is not None:
        record(Path(run_dir))


def save_metrics(run_dir: Path, metrics: Mapping) -> Path:
    """`metrics.json`, written atomically: it is the mark of a finished run, never half there.

    A run with a regulariser also records how active it was (`regularizer_activity`: its term
    against the base loss, from the run's csv log; `hightpr.regularizers.activity`).
    """
    end_csv_log(csv_log_path(run_dir), metrics.get("epochs_trained"))
    found = activity(csv_log_path(run_dir))
    if found is not None and "regularizer_activity" not in metrics:
        metrics = {**metrics, "regularizer_activity": found}
    return write_json(metrics_path(run_dir), metrics)


def end_csv_log(path: Path, epochs_trained: int | None) -> None:
    """Drop the rows of the final evaluation of the best checkpoint from a run's per-epoch log.

    They are logged at epoch `epochs_trained`, one past the last trained epoch, and read like one
    more epoch; their values are in metrics.json. Sequential and batched runs both end here.
    """
    if epochs_trained is None or not Path(path).is_file():
        return
    log = pd.read_csv(path)
    if "epoch" not in log or not (log["epoch"] >= int(epochs_trained)).any():
        return
    kept = log[~(log["epoch"] >= int(epochs_trained))]  # rows without an epoch (a callback's, by step) stay
    kept = kept.loc[:, kept.notna().any(axis=0) | kept.columns.isin(["epoch", "step"])]
    tmp = Path(path).with_suffix(".csv.tmp")
    kept.to_csv(tmp, index=False)
    os.replace(tmp, path)


def limited_run_label(cfg: DictConfig) -> str | None:
    """`fast_dev_run` for a smoke test of the wiring, a short description for a run limited to some
    batches or steps (`limit_train_batches=3`), None for a real run."""
    trainer = cfg.get("trainer") or {}
    if trainer.get("fast_dev_run"):
        return "fast_dev_run"
    limits = [f"{key}={trainer.get(key)}" for key in ("limit_train_batches", "limit_val_batches",
                                                      "limit_test_batches")
              if trainer.get(key) not in (None, 1.0)]
    if int(trainer.get("max_steps") or -1) >= 0:
        limits.append(f"max_steps={trainer.get('max_steps')}")
    return " ".join(limits) or None


def remove_unstarted(run_dir: Path, output_root: Path | None = None) -> bool:
    """Remove a run folder that a refused or failed-before-training run made (Hydra's `.hydra/`, its
    log, the lock, a resolved config) and the empty folders above it, up to `output_root`.
    A folder holding a checkpoint or metrics.json is kept. Returns whether it was removed."""
    import shutil

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or any(p.exists() for p in (checkpoint_dir(run_dir), metrics_path(run_dir))):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    stop = Path(output_root).absolute() if output_root is not None else None
    parent = run_dir.absolute().parent
    while parent != stop and parent.parent != parent and stop is not None and stop in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent
    return True


def flatten(prefix: str, cfg: Mapping, skip: tuple[str, ...] = ()) -> dict[str, object]:
    """Scalar leaves of a (nested) mapping as `prefix.key` columns; `_target_` is dropped."""
    out: dict[str, object] = {}
    for key, value in cfg.items():
        if key.startswith("_") or key in skip:
            continue
        if isinstance(value, Mapping):
            out.update(flatten(f"{prefix}.{key}", value, skip))
        elif isinstance(value, str | int | float | bool) or value is None:
            out[f"{prefix}.{key}"] = value
        elif isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
            out[f"{prefix}.{key}"] = ",".join(str(v) for v in value)  # e.g. class groups "72,4,95"
    return out


@contextmanager
def _locked(path: Path):
    lock = path.with_suffix(path.suffix + ".lock")
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_run(csv_path: Path, row: Mapping[str, object]) -> None:
    """Append one row to a tidy runs table (columns are the union; safe for parallel runs)."""
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    row = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"), **row}
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    with _locked(csv_path):
        new = pd.DataFrame([row])
        if csv_path.is_file() and csv_path.stat().st_size > 0:
            old = pd.read_csv(csv_path)
            if list(old.columns) == list(new.columns):
                new.to_csv(csv_path, mode="a", header=False, index=False)
                return
            new = pd.concat([old, new], ignore_index=True)
        new.to_csv(csv_path, index=False)


ROW_GROUPS = ("dataset", "model", "loss", "reg", "optimizer", "scheduler", "sampler")


def runs_row(cfg: DictConfig, run_dir: Path, reports: Mapping[str, Mapping], choices: Mapping[str, str]
             ) -> dict[str, object]:
    """One tidy row: config choices, every hyper-parameter, seed, every val/test metric."""
    row = {"run_dir": str(run_dir), "name": cfg.name, "seed": cfg.seed, **choices}
    member = (cfg.get("ensemble") or {}).get("member")
    row.update({"kind": "single"} if member is None else
               {"kind": "member", "ensemble_key": cfg.ensemble.get("key"), "member": member})
    for group in ROW_GROUPS:
        node = cfg.get(group)
        if node is not None:
            row.update(flatten(group, OmegaConf.to_container(node, resolve=True), skip=("root",)))
    for stage, report in reports.items():
        row.update({f"{stage}_{k}": v for k, v in report.items()})
    return row


def run_facts(epochs_trained: int, global_step: int, best_checkpoint: Path | str | None, datamodule,
              task) -> dict[str, object]:
    """What `metrics.json` records of how a run trained, beside its reports: both training paths."""
    return {"epochs_trained": int(epochs_trained), "global_step": int(global_step),
            "best_checkpoint": str(best_checkpoint) if best_checkpoint else None,
            "data": datamodule.summary(), "task": task.to_dict()}


def write_run(cfg: DictConfig, run_dir: Path, evaluator, reports: Mapping[str, Mapping[str, float]],
              outputs: Mapping[str, Mapping[str, np.ndarray]], facts: Mapping[str, object],
              choices: Mapping[str, str]) -> dict:
    """The files every run ends with, Lightning's and the batched loop's: `logits_{val,test}.npz`,
    `metrics.json` (the reports, `facts` of `run_facts`, the deployed operating points of a binary
    evaluator) and the run's row of runs.csv (`hightpr.jobs.run_end` adds the model card). Returns
    the metrics."""
    metrics = {"val": reports["val"], "test": reports["test"], **facts}
    operating_points = getattr(evaluator, "operating_points", None)  # threshold on val, rates on test
    if operating_points is not None:
        metrics["operating_point"] = operating_points(outputs["val"], outputs["test"])
    for stage in ("val", "test"):
        save_logits(run_dir, stage, outputs[stage])
    save_metrics(run_dir, metrics)
    log = logging.getLogger("hightpr")
    debug = limited_run_label(cfg)
    if debug == "fast_dev_run":  # a smoke test of the wiring: no result, no row in the results table
        log.info("trainer.fast_dev_run: a debug run, not added to %s", cfg.paths.runs_csv)
    else:
        row = runs_row(cfg, run_dir, reports, choices)
        row.update(flatten("op", metrics.get("operating_point", {})))
        if debug:
            row["debug"] = debug  # a limited run: in the table, marked
        append_run(Path(cfg.paths.runs_csv), row)
    log.info("%s test %s", Path(run_dir).name, {k: round(v, 4) for k, v in reports["test"].items()})
    return metrics


class RunLock:
    """One process trains a run dir at a time: an exclusive `flock` on `<run_dir>/run.lock`.

    The kernel drops the lock when its process dies (kill -9, a node reboot), so a lock left by a
    crash is stale by construction and the next process simply takes it over. The file keeps
    the owner (host, pid, start time) for the log line of a process that has to wait.
    """

    def __init__(self, run_dir: Path, poll_s: float = 5.0) -> None:
        self.path = lock_path(run_dir)
        self.poll_s = poll_s
        self._handle = None

    def owner(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def acquire(self) -> bool:
        """Take the lock; returns True when another process held it first (and we waited)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        waited = False
        while True:
            try:
                fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    logging.getLogger("hightpr").info("%s is being trained by %s; waiting for it",
                                                      self.path.parent, self.owner())
                waited = True
                time.sleep(self.poll_s)
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"host {socket.gethostname()} pid {os.getpid()} since "
                           f"{datetime.now(UTC).isoformat(timespec='seconds')}\n")
        self._handle.flush()
        return waited

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def clear_outputs(run_dir: Path) -> None:
    """Remove what an earlier, unfinished or discarded attempt left in a run dir (not Hydra's files)."""
    import shutil

    outputs = (metrics_path, lambda d: logits_path(d, "val"), lambda d: logits_path(d, "test"), config_path,
               samples_path, card_path)
    for path in outputs:
        path(run_dir).unlink(missing_ok=True)
    for folder in (checkpoint_dir(run_dir), csv_log_path(run_dir).parent):
        shutil.rmtree(folder, ignore_errors=True)


def describe_checkpoint(path: Path) -> tuple[str, bool] | None:
    """(`N epochs done`, written by batched training) of a checkpoint, for the resume decision and
    its log line; None if unreadable (a process killed while writing it)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - truncated or corrupt: the caller starts the run over
        return None
    batched = bool((state.get("hightpr") or {}).get("batched"))
    return f"{int(state.get('epoch', -1)) + 1} epochs done", batched
