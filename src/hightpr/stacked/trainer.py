"""Batched training of an ensemble: the members' models run together, everything else per member.

Every member is built by `hightpr.build` from its own config (its seed: its own training draw,
initialisation, loss, regulariser, evaluator, optimizer and schedule) and keeps its own random
streams (`MemberStreams`), so its batch order and augmentation are those of its sequential run.
Only the forward and backward passes of the models are shared (`hightpr.stacked.forward`): a
step gathers every member's batch at once, runs their models (one stacked network on a GPU),
adds the members' own losses and regulariser terms and runs one backward; each member's own
optimizer then steps its parameters (views of the stacked network's).

Each epoch ends with one validation pass over all members; per member, the best epoch (ties to
the lower validation loss) is kept and early stopping is decided as the sequential run's
callbacks decide them. A member that stops is frozen with its best weights and the others go on
in a smaller stack. At the end every member's best weights are evaluated on validation and test,
and its run dir receives what a sequential run writes (`hightpr.stacked.outputs`). docs/speed.md.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from hightpr.build import build_datamodule, build_module, sample_input
from hightpr.checks import check_keys
from hightpr.errors import HightprError
from hightpr.jobs import job_resources, run_end, run_start
from hightpr.metrics.evaluators import TIE_BREAK
from hightpr.module import split_report
from hightpr.regularizers.activity import reg_ratio
from hightpr.runs import (
    best_checkpoint,
    clear_outputs,
    csv_log_path,
    last_checkpoint,
    run_facts,
    save_run_config,
    saved_epoch,
)
from hightpr.stacked.data import MemberData
from hightpr.stacked.forward import OwnModels, make_forward
from hightpr.stacked.layers import NotStackable
from hightpr.stacked.outputs import clone_state, log_row, save_checkpoint, write_csv_log
from hightpr.stacked.resume import clear_state, restore, save_state
from hightpr.stacked.selection import Patience, f32
from hightpr.stacked.settings import Settings, settings_of
from hightpr.stacked.state import MemberState
from hightpr.stacked.streams import MemberStreams

log = logging.getLogger("hightpr")


# -- building ----------------------------------------------------------------------------------
def _build_members(cfgs: Sequence[DictConfig], run_dirs: Sequence[Path], choices: Mapping[str, str],
                   streams: MemberStreams) -> list[MemberState]:
    """Each member exactly as its sequential run builds it, its random streams captured after."""
    members = []
    for i, (cfg, run_dir) in enumerate(zip(cfgs, run_dirs, strict=True)):
        check_keys(cfg)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule, facts = build_datamodule(cfg)
        module = build_module(cfg, datamodule, facts, dict(choices))
        streams.capture()
        members.append(MemberState(i, cfg, Path(run_dir), datamodule, facts, module))
    return members


def _optimizer(conf) -> tuple[torch.optim.Optimizer, list[dict]]:
    """The optimizer and schedules of `configure_optimizers` (Lightning's return shapes)."""
    optimizer, schedulers = conf, []
    if isinstance(conf, Mapping):
        optimizer, sched = conf.get("optimizer"), conf.get("lr_scheduler")
        if sched is not None:
            spec = dict(sched) if isinstance(sched, Mapping) else {"scheduler": sched}
            schedulers = [{"interval": "epoch", "frequency": 1, "monitor": None, **spec}]
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise NotStackable("the module's configure_optimizers returns a shape batched training does not know")
    if not type(optimizer).__module__.startswith("torch.optim"):
        raise NotStackable(f"optimizer {type(optimizer).__name__} is not supported batched "
                           "(torch.optim optimizers are)")
    if any(s["frequency"] != 1 or s["interval"] not in ("epoch", "step") for s in schedulers):
        raise NotStackable("a learning-rate schedule stepped other than once per epoch or step "
                           "is not supported batched")
    return optimizer, schedulers


def _forward(members: Sequence[MemberState], settings: Settings, train: bool = True) -> OwnModels:
    """The members' models run together (`ensemble.forward`); checked against the members when stacked
    on two inputs (a train-mode BatchNorm check needs two)."""
    sample = sample_input(members[0].datamodule, 2).to(settings.device)
    return make_forward(settings.forward, [mb.module.model for mb in members], sample, settings.compile,
                        alias=train)


def _sync_counters(mb: MemberState) -> None:
    """BatchNorm step counters as the sequential run has them: one per training step."""
    for layer in mb.module.model.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.num_batches_tracked is not None:
            layer.num_batches_tracked.fill_(mb.global_step)


# -- training ----------------------------------------------------------------------------------
def _autocast(settings: Settings):
    """The mixed-precision context of `trainer.precision` (bf16-mixed), as Lightning's around a step."""
    if settings.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(settings.device.type, dtype=settings.autocast)


def _step(running: list[MemberState], forward: OwnModels, data: MemberData, rows: torch.Tensor,
          index: torch.Tensor, settings: Settings) -> None:
    """One optimizer step of every running member (HighTPRModule.training_step, per member)."""
    if forward.mode == "stacked":
        forward.zero_grad()  # in place: the members' gradients are views of the stacked ones
    else:
        for mb in running:
            mb.optimizer.zero_grad()
    x, y, ids = data.batch(rows, index)
    x = data.to_input(data.augment(x, [mb.index for mb in running]))
    total = None
    with _autocast(settings):
        batches = [{"x": x[i], "y": y[i], "id": ids[i]} for i in range(len(running))]
        extended = [mb.module.reg.extend_batch(b) for mb, b in zip(running, batches, strict=True)]
        same = all(e[0] is b for e, b in zip(extended, batches, strict=True))
        logits = forward.train(x if same else [e[0]["x"] for e in extended])
        for i, mb in enumerate(running):
            batch, n_base = extended[i]
            loss, base, term = mb.module.objective(batch, n_base, logits[i])
            n = len(batch["y"])
            mb.sums.add_(torch.stack([t.detach().to(mb.sums.dtype) for t in (loss, base, term)]), alpha=n)
            mb.count += n
            total = loss if total is None else total + loss
    total.backward()
    for mb in running:
        params = [p for g in mb.optimizer.param_groups for p in g["params"]]
        if settings.clip_val and settings.clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, settings.clip_val)
        elif settings.clip_val:
            torch.nn.utils.clip_grad_norm_(params, settings.clip_val)
        mb.optimizer.step()
        for s in mb.schedulers:
            if s["interval"] == "step":
                s["scheduler"].step()
        mb.global_step += 1


def _evaluate(forward: OwnModels, data: MemberData, stage: str, members: Sequence[MemberState],
              settings: Settings) -> list[tuple[dict, dict]]:
    """One pass over a split in large batches, all members together; each member's report and outputs."""
    index = [mb.index for mb in members]
    chunk = forward.eval_batch(settings.eval_batch_size)
    with torch.inference_mode():
        with _autocast(settings):
            logits = torch.cat([forward.eval(x) for x in data.eval_chunks(stage, index, chunk)], 1)
        y, ids = data.eval_targets(stage, index)
        return [split_report(mb.module.evaluator, mb.module.loss, logits[i], y[i], ids[i])
                for i, mb in enumerate(members)]


def _scheduler_step(mb: MemberState, metrics: Mapping[str, float]) -> None:
    """Step a member's per-epoch schedules (a plateau schedule on its logged float32 monitor)."""
    for s in mb.schedulers:
        if s["interval"] != "epoch":
            continue
        if isinstance(s["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
            if s["monitor"] not in metrics:
                raise HightprError(f"scheduler monitor {s['monitor']} is not a logged metric "
                                   f"({', '.join(sorted(metrics))})")
            s["scheduler"].step(f32(metrics[s["monitor"]]))
        else:
            s["scheduler"].step()


def _epoch_end(running: list[MemberState], results: list[tuple[dict, dict]], epoch: int) -> None:
    """Per member: the validation hooks, best epoch, epoch logs, schedules and early stopping."""
    for mb, (report, _) in zip(running, results, strict=True):
        module = mb.module
        monitor = report[module.evaluator.monitor]
        module.reg.on_validation_end(monitor)
        mb.epochs, step = epoch + 1, mb.global_step - 1
        val = {f"val/{k}": v for k, v in report.items()}
        if mb.best.improves(monitor, report.get(TIE_BREAK)):
            _sync_counters(mb)
            mb.best.keep(monitor, report.get(TIE_BREAK), epoch, mb.global_step, clone_state(module))
        sums = (mb.sums / max(mb.count, 1)).tolist()
        train = {"train/loss": sums[0], "train/base_loss": sums[1], "train/reg_term": sums[2],
                 "train/reg_ratio": reg_ratio(sums[2], sums[1]),
                 **{f"reg/{k}": float(v) for k, v in module.reg.epoch_log().items()}}
        mb.rows += [log_row(epoch, step, val), log_row(epoch, step, train)]
        _scheduler_step(mb, {**val, **train})
        if mb.stopping.should_stop(monitor):
            mb.running = False


class _Saver:
    """Each member's resume state at epoch ends, at most every `checkpoint_every_s` seconds."""

    def __init__(self, members: list[MemberState], streams, every_s: float) -> None:
        self.members, self.streams, self.every_s = members, streams, every_s
        self.last = time.perf_counter()

    def __call__(self, next_epoch: int, final: bool) -> None:
        if final or time.perf_counter() - self.last < self.every_s:
            return
        for mb in self.members:  # a member stopped before its last write: only its mark moves on
            save_state(mb, next_epoch, self.streams, checkpoint=mb.saved != mb.epochs)
            mb.saved = mb.epochs
        self.last = time.perf_counter()


def _train_epochs(members: list[MemberState], data: MemberData, settings: Settings, forward: OwnModels,
                  start: int = 0, save: _Saver | None = None) -> None:
    """Train until every member stopped (early stopping) or reached max_epochs (from epoch `start`)."""
    running = [mb for mb in members if mb.running]
    if running and len(running) < len(members):  # resumed with members already stopped: they stay frozen
        forward = forward.keep([i for i, mb in enumerate(members) if mb.running])
    clock = time.perf_counter()
    for epoch in range(start, settings.max_epochs if running else start):
        for mb in running:
            mb.module.reg.on_train_epoch_start(epoch)
            mb.module.loss.on_train_epoch_start(epoch)
            mb.sums.zero_()
            mb.count = 0
        index = [mb.index for mb in running]
        rows = torch.as_tensor(index, device=settings.device)
        for batch in data.epoch_batches(epoch, index):
            _step(running, forward, data, rows, batch, settings)
        data.val_iter_draw(index)
        results = _evaluate(forward, data, "val", running, settings)
        _epoch_end(running, results, epoch)
        monitor = running[0].module.evaluator.monitor
        pairs = zip(running, results, strict=True)
        scores = " ".join(f"{mb.number}:{rep[monitor]:.4f}" for mb, (rep, _) in pairs)
        log.info("epoch %d/%d (%.0f s): val %s by member %s", epoch + 1, settings.max_epochs,
                 time.perf_counter() - clock, monitor, scores)
        for mb in running:
            if not mb.running and epoch + 1 < settings.max_epochs:
                log.info("member %d stopped early after epoch %d (best epoch %s)", mb.number, epoch,
                         mb.best.epoch)
        keep = [i for i, mb in enumerate(running) if mb.running and epoch + 1 < settings.max_epochs]
        if save is not None:
            save(epoch + 1, final=not keep)
        if not keep:
            break
        if len(keep) < len(running):  # the stopped members are frozen, the others go on
            forward = forward.keep(keep)
            running = [running[i] for i in keep]
    forward.release()


# -- the end ------------------------------------------------------------------------------------
def _evaluate_best(members: list[MemberState], data: MemberData, settings: Settings,
            choices: Mapping[str, str]) -> list[dict]:
    """Best weights of every member evaluated on validation and test; every run dir written."""
    best_paths = []
    for mb in members:
        _sync_counters(mb)
        if mb.epochs:  # as the sequential run: written at the end of each epoch (here: the last one)
            save_checkpoint(last_checkpoint(mb.run_dir), clone_state(mb.module), mb.epochs - 1,
                            mb.global_step, mb.optimizer, mb.schedulers)
        path = None
        if mb.best.epoch is not None:
            path = best_checkpoint(mb.run_dir, mb.best.epoch).resolve()
            save_checkpoint(path, mb.best.state, mb.best.epoch, mb.best.global_step)
            mb.module.load_state_dict(mb.best.state)
        best_paths.append(path)
    forward = _forward(members, settings, train=False)
    val = _evaluate(forward, data, "val", members, settings)
    test = _evaluate(forward, data, "test", members, settings)
    out = [_write_member(mb, path, v, t, settings, choices)
           for mb, path, v, t in zip(members, best_paths, val, test, strict=True)]
    for mb in members:
        clear_state(mb.run_dir)
    return out


def _write_member(mb: MemberState, best_path: Path | None, val: tuple[dict, dict], test: tuple[dict, dict],
                  settings: Settings, choices: Mapping[str, str]) -> dict:
    """A member's run dir, written as Lightning's path writes a run (`hightpr.runs.write_run`)."""
    reports = {"val": val[0], "test": test[0]}
    if settings.csv_log:
        mb.rows += [log_row(mb.epochs, mb.global_step, {f"{s}/{k}": v for k, v in reports[s].items()})
                    for s in ("val", "test")]
        write_csv_log(csv_log_path(mb.run_dir), mb.rows)
    facts = run_facts(mb.epochs, mb.global_step, best_path, mb.datamodule, mb.facts.task)
    outputs = {"val": val[1], "test": test[1]}
    return run_end(mb.cfg, mb.run_dir, mb.module.evaluator, reports, outputs, facts, dict(choices))


# -- the entry point ----------------------------------------------------------------------------
@contextlib.contextmanager
def _backend(settings: Settings) -> Iterator[None]:
    """Determinism and cuDNN autotuning for the run (threads: `hightpr.jobs.run_start`); restored after."""
    old_bench = torch.backends.cudnn.benchmark
    old_det, old_warn = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    if settings.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=settings.deterministic == "warn")
    elif settings.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # grouped convolutions: let cuDNN pick its fastest
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old_bench
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def train_batched(cfgs: Sequence[DictConfig], run_dirs: Sequence[Path],
                  choices: Mapping[str, str] | None = None) -> list[dict]:
    """Train the members (configs of one ensemble, `member_config`) together; write each run dir.

    Raises `NotStackable` before any run dir is touched when the configuration is one batched
    training does not reproduce (the caller then trains the members one after another).
    """
    choices = choices or {}
    settings = settings_of(cfgs[0], job_resources(cfgs[0])[1])
    with run_start(cfgs[0], run_dirs) as start:  # the members' locks, threads, finished or starting over
        todo = [(c, Path(d)) for c, d in zip(cfgs, run_dirs, strict=True) if Path(d) in start.todo]
        epochs = {saved_epoch(d) for _, d in todo}
        if len(epochs) > 1:
            raise ValueError(f"members saved at different epochs ({sorted(map(str, epochs))}): resume them "
                             "apart (hightpr.jobs.plan_members groups them)")
        if len(todo) < 2 and epochs == {None}:
            raise NotStackable("fewer than two members left to train")
        with _backend(settings):
            try:
                return _train_members(todo, settings, choices)
            except _StartOver:
                for _, run_dir in todo:
                    clear_outputs(run_dir)
                return _train_members(todo, settings, choices)


def _train_members(todo: list[tuple[DictConfig, Path]], settings: Settings, choices: Mapping[str, str]
                   ) -> list[dict]:
    streams = MemberStreams(settings.device)
    members = _build_members([c for c, _ in todo], [d for _, d in todo], choices, streams)
    for mb in members:
        mb.module.to(settings.device).train()
        mb.optimizer, mb.schedulers = _optimizer(mb.module.configure_optimizers())
        mb.stopping = Patience(settings.patience)
        mb.sums = torch.zeros(3, dtype=torch.float64, device=settings.device)
    data = MemberData([mb.datamodule for mb in members], streams, settings.device,
                      settings.limit_train_batches)
    start = _resume(members, streams)  # before the forward: a stacked network starts from the saved weights
    forward = _forward(members, settings)  # the last refusal (a model that does not stack): nothing written
    if forward.mode == "stacked":
        own = {id(p) for mb in members for p in mb.module.model.parameters()}
        if any(id(p) not in own for mb in members for g in mb.optimizer.param_groups for p in g["params"]):
            forward.release()
            raise NotStackable("a loss with its own trainable variables is not supported stacked")
    log.info("training members %s batched (%s forward of %s) on %s", [mb.number for mb in members],
             forward.mode, type(members[0].module.model).__name__, settings.device)
    for mb in members:
        if start == 0:
            clear_outputs(mb.run_dir)
        save_run_config(mb.cfg, mb.run_dir, mb.datamodule)
        log.info("member %d data %s", mb.number, mb.datamodule.summary())
    saver = _Saver(members, streams, settings.checkpoint_every_s)
    _train_epochs(members, data, settings, forward, start, saver)
    return _evaluate_best(members, data, settings, choices)


def _resume(members: list[MemberState], streams: MemberStreams) -> int:
    """The loop epoch to start at: the members' saved one when every member's state loads, else 0."""
    if saved_epoch(members[0].run_dir) is None:
        for mb in members:
            if last_checkpoint(mb.run_dir).is_file():
                log.warning("%s was interrupted without a batched state: batched training starts it over",
                            mb.run_dir)
        return 0
    starts = {restore(mb, streams) for mb in members}
    if len(starts) != 1 or None in starts:
        log.warning("the saved states of members %s do not load together (killed while writing them?): "
                    "batched training starts them over", [mb.number for mb in members])
        raise _StartOver
    start = starts.pop()
    for mb in members:
        mb.saved = mb.epochs
    log.info("resuming members %s batched at epoch %d of %s (%s stopped early)",
             [mb.number for mb in members], start + 1, members[0].cfg.trainer.get("max_epochs"),
             sum(not mb.running for mb in members))
    return start


class _StartOver(Exception):
    """The saved states cannot be resumed: build the members afresh and train them from the start."""
