"""`python train.py` / `hightpr-train`: one training run (or a Hydra multirun grid).

Wires config -> DataModule, model, base loss, regulariser -> Lightning; then tests the best
checkpoint and writes metrics.json, logits_{val,test}.npz and a row of the experiment's runs.csv.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from hightpr.cli.ensemble import ensemble_requested, train_members
from hightpr.errors import HightprError
from hightpr.metrics.evaluators import BinaryEvaluator, Evaluator
from hightpr.metrics.multiclass import MulticlassEvaluator
from hightpr.models import binary_score, critical_score
from hightpr.module import HighTPRModule
from hightpr.runs import append_run, flatten, save_logits, save_metrics

CONF_DIR = str(Path(__file__).resolve().parents[3] / "conf")
log = logging.getLogger("hightpr")


def _choices() -> dict[str, str]:
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items()
            if v is not None and not k.startswith("hydra")}


def _output_dir(cfg: DictConfig) -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.get("run_dir", "."))


def _instantiate(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, unwrapping our own user-facing errors from Hydra's wrapper."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, HightprError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        inner = err.__cause__ or err
        raise HightprError(f"cannot build {node.get('_target_')}: {inner}") from err


def init_weights(model, path: str | None) -> None:
    """Start from the model weights of a checkpoint (ALM-v1's two-step strategy: pre-train, then ALM)."""
    if not path:
        return
    import torch

    if not Path(path).is_file():
        raise HightprError(f"init_from={path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise HightprError(f"init_from={path}: not a readable checkpoint ({err})") from err
    state = state.get("state_dict", state)
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights or state, strict=False)
    if missing:
        raise HightprError(f"init_from={path}: checkpoint lacks {len(missing)} model tensors "
                           f"(e.g. {missing[0]}); was it trained with the same model config?")
    log.info("initialised the model from %s", path)


def build_trainer(cfg: DictConfig, run_dir: Path, monitor: str = "auc") -> pl.Trainer:
    """Lightning Trainer from `cfg.trainer` + `cfg.logger`, with best-AUC checkpoint and early stop."""
    t = cfg.trainer
    target = str(cfg.logger.get("_target_", "")) if cfg.get("logger") else ""
    if "Wandb" in target and importlib.util.find_spec("wandb") is None:
        raise HightprError("logger=wandb needs wandb: pip install -e '.[wandb]'")
    logger = _instantiate(cfg.logger) if target else False
    callbacks = [
        pl.callbacks.ModelCheckpoint(
            dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:03d}",
            monitor=f"val/{monitor}", mode="max", save_top_k=1, auto_insert_metric_name=False,
        ),
        pl.callbacks.EarlyStopping(monitor=f"val/{monitor}", mode="max", patience=t.patience),
    ]
    return pl.Trainer(
        max_epochs=t.max_epochs, accelerator=t.accelerator, devices=t.devices,
        precision=t.precision, deterministic=t.deterministic, logger=logger,
        callbacks=callbacks, enable_progress_bar=t.progress_bar,
        log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0,
        default_root_dir=str(run_dir), enable_model_summary=t.model_summary,
        **OmegaConf.to_container(t.extra, resolve=True),
    )


def build_components(cfg: DictConfig) -> tuple[pl.LightningDataModule, HighTPRModule]:
    """DataModule and LightningModule of one run, checked before any training starts.

    A value of the wrong type or range anywhere in the config surfaces here as one
    `HightprError` (set HIGHTPR_DEBUG=1 to see the stack instead).
    """
    try:
        datamodule, module = _build_components(cfg)
        module.configure_optimizers()  # optimizer and schedule settings fail here, not mid-fit
    except (ValueError, TypeError, KeyError) as err:
        if os.environ.get("HIGHTPR_DEBUG"):
            raise
        raise HightprError(f"invalid configuration: {type(err).__name__}: {err} "
                           "(python train.py --cfg job shows the composed config)") from err
    return datamodule, module


def _build_components(cfg: DictConfig) -> tuple[pl.LightningDataModule, HighTPRModule]:
    """The wiring itself: the loss decides the head, the data the counts."""
    datamodule = _instantiate(cfg.dataset)
    datamodule.setup("fit")
    datamodule.batch_sampler = _instantiate(cfg.sampler)
    loss_cls = get_class(cfg.loss._target_)
    check_loss_requirements(cfg, loss_cls)
    context = {"class_counts": datamodule.class_counts, "num_sample_ids": datamodule.num_sample_ids}
    loss = _instantiate(cfg.loss, **_accepted(loss_cls, context))
    num_logits = cfg.model.get("num_logits") or loss_cls.num_logits or len(datamodule.class_counts)
    model = _instantiate(cfg.model, num_logits=num_logits, normed_head=loss_cls.normed_head)
    init_weights(model, cfg.get("init_from"))
    reg = _instantiate(cfg.reg, num_sample_ids=datamodule.num_sample_ids)
    score_fn, evaluator = task_scoring(datamodule, num_logits)
    scheduler = cfg.get("scheduler")
    scheduler = _instantiate(scheduler) if scheduler and scheduler.get("_target_") else None
    module = HighTPRModule(model=model, loss=loss, reg=reg, optimizer=_instantiate(cfg.optimizer),
                           scheduler=scheduler, score_fn=score_fn, evaluator=evaluator)
    return datamodule, module


def _accepted(cls: type, context: dict) -> dict:
    """The entries of `context` that `cls.__init__` takes (data facts handed to losses)."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in context.items() if k in params}


def check_loss_requirements(cfg: DictConfig, loss_cls: type) -> None:
    """A loss that prescribes its sampler or optimizer (LibAUC's) says so before training starts."""
    name = _choices().get("loss", cfg.loss._target_)
    if getattr(loss_cls, "needs_dual_sampler", False) and \
            not str(cfg.sampler.get("_target_", "")).endswith("DualBatchSampler"):
        raise HightprError(f"loss={name} needs both classes in every batch: add sampler=dual "
                           "(and sampler.positive_rate=..., default 0.1)")
    wanted = getattr(loss_cls, "required_optimizer", None)
    if wanted and cfg.optimizer.get("_target_") != wanted:
        raise HightprError(f"loss={name} is trained with its own optimizer {wanted}: "
                           f"add optimizer={wanted.rsplit('.', 1)[-1].lower()}")


def task_scoring(datamodule: pl.LightningDataModule, num_logits: int
                 ) -> tuple[Callable, Evaluator]:
    """The ranked score and the evaluator of the data's task (the module itself never branches).

    Binary: the positive logit (z1 - z0 for 2 logits) and ROC metrics, best epoch on AUC.
    Multi-class (the data names `critical_classes`): the first critical class's logit and
    ALM's multi-class report, best epoch on accuracy (ALM selects multi-class models so).
    """
    critical = getattr(datamodule, "critical_classes", None)
    if not critical:
        return binary_score, BinaryEvaluator()
    n_classes = len(datamodule.class_counts)
    if num_logits != n_classes:
        raise HightprError(f"the dataset has {n_classes} classes but the model {num_logits} logits: use a "
                           "multi-class loss (loss=ce, fl, cbce or ldam) and leave model.num_logits unset")
    return partial(critical_score, critical_class=int(critical[0])), MulticlassEvaluator(critical)


def runs_row(cfg: DictConfig, run_dir: Path, reports: dict[str, dict]) -> dict[str, object]:
    """One tidy row: config choices, every hyper-parameter, seed, every val/test metric."""
    row = {"run_dir": str(run_dir), "name": cfg.name, "seed": cfg.seed, **_choices()}
    member = (cfg.get("ensemble") or {}).get("member")
    row.update({"kind": "single"} if member is None else
               {"kind": "member", "ensemble_key": cfg.ensemble.get("key"), "member": member})
    for group in ("dataset", "model", "loss", "reg", "optimizer", "scheduler", "sampler"):
        node = cfg.get(group)
        if node is not None:
            row.update(flatten(group, OmegaConf.to_container(node, resolve=True), skip=("root",)))
    for stage, report in reports.items():
        row.update({f"{stage}_{k}": v for k, v in report.items()})
    return row


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """Train, keep the best epoch on the validation monitor, test it, save every output."""
    run_dir = Path(run_dir) if run_dir is not None else _output_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.trainer.get("num_threads"):
        import torch

        torch.set_num_threads(int(cfg.trainer.num_threads))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, module = build_components(cfg)
    OmegaConf.save(cfg, run_dir / "config_resolved.yaml", resolve=True)
    log.info("data %s", datamodule.summary())

    trainer = build_trainer(cfg, run_dir, monitor=module.evaluator.monitor)
    trainer.fit(module, datamodule=datamodule)
    best = trainer.checkpoint_callback.best_model_path or None
    trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)

    for stage in ("val", "test"):
        save_logits(run_dir, stage, module.outputs[stage])
    metrics = {
        "val": module.reports["val"], "test": module.reports["test"],
        "epochs_trained": trainer.current_epoch, "best_checkpoint": best,
        "data": datamodule.summary(),
    }
    operating_points = getattr(module.evaluator, "operating_points", None)  # threshold on val, rates on test
    if operating_points is not None:
        metrics["operating_point"] = operating_points(module.outputs["val"], module.outputs["test"])
    save_metrics(run_dir, metrics)
    row = runs_row(cfg, run_dir, module.reports)
    row.update(flatten("op", metrics.get("operating_point", {})))
    append_run(Path(cfg.paths.runs_csv), row)
    log.info("test %s", {k: round(v, 4) for k, v in module.reports["test"].items()})
    log.info("outputs in %s", run_dir)
    return metrics


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    os.environ.setdefault("PL_DISABLE_FORK", "1")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> dict | None:
    _quiet_libraries()
    try:
        if ensemble_requested(cfg):  # ensemble.members=N / ensemble.member=M: members in their own dirs
            return train_members(cfg, run, _choices())
        return run(cfg)
    except HightprError as err:
        log.error("%s", err)
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
