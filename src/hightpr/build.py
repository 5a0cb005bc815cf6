"""The wiring of one run: data -> task -> loss -> model -> regulariser -> module -> trainer.

Each step reads its own config node and what the earlier steps declared: the data tells its
task and facts (class counts, number of sample ids); the loss declares its head, its sampler and
optimizer and the data facts it takes (`BaseLoss` class variables); the model is built to that
head and checked against one real input. Every problem surfaces here, before training, as one
`HightprError`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, get_object, instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from hightpr.callbacks import AtomicCheckpointIO, BestEpoch, LastCheckpoint
from hightpr.checks import TRAINER_OWN, config_errors
from hightpr.errors import HightprError
from hightpr.metrics.evaluators import TIE_BREAK, evaluator_for
from hightpr.models import MODELS_BY_INPUT
from hightpr.module import HighTPRModule
from hightpr.runs import BEST_FILENAME, checkpoint_dir, last_checkpoint
from hightpr.task import Task

log = logging.getLogger("hightpr")

LOGGER_PACKAGES = {"WandbLogger": "wandb", "TensorBoardLogger": "tensorboard"}  # optional extras


@dataclass(frozen=True)
class DataFacts:
    """What the data tells the rest of the wiring (losses take the fields they declare)."""

    class_counts: list[int]
    num_sample_ids: int
    task: Task


def instantiate_node(node: DictConfig, what: str, **kwargs):
    """`hydra.utils.instantiate` of one config node, its errors named after the node."""
    with config_errors(what):
        return instantiate(node, **kwargs)


# -- the components ----------------------------------------------------------------------------
def build_datamodule(cfg: DictConfig) -> tuple[pl.LightningDataModule, DataFacts]:
    """The DataModule (splits built), its batch sampler, and the facts the rest needs."""
    datamodule = instantiate_node(cfg.dataset, "dataset")
    with config_errors("dataset"):
        datamodule.setup("fit")
    datamodule.batch_sampler = instantiate_node(cfg.sampler, "sampler")
    facts = DataFacts(list(datamodule.class_counts), int(datamodule.num_sample_ids), Task.of(datamodule))
    return datamodule, facts


def _choice(cfg: DictConfig, group: str, choices: dict[str, str]) -> str:
    return choices.get(group) or str(cfg[group].get("_target_", group))


def _is_subclass(target: str, wanted: str) -> bool:
    """Whether the `_target_` (a class, or a factory function) is the class path `wanted` or a subclass."""
    obj = get_object(str(target))
    return isinstance(obj, type) and issubclass(obj, get_class(wanted))


def build_loss(cfg: DictConfig, facts: DataFacts, choices: dict[str, str] | None = None):
    """The base loss with the data facts it declares; its sampler and optimizer requirements checked."""
    choices = choices or {}
    with config_errors("loss"):
        loss_cls = get_class(cfg.loss._target_)
    name = _choice(cfg, "loss", choices)
    wanted = loss_cls.required_sampler
    if wanted and not _is_subclass(cfg.sampler._target_, wanted):
        raise HightprError(f"loss={name} needs both classes in every batch: add sampler=dual "
                           "(and sampler.positive_rate=..., default 0.1)")
    wanted = loss_cls.required_optimizer
    if wanted and not _is_subclass(cfg.optimizer._target_, wanted):
        raise HightprError(f"loss={name} is trained with its own optimizer {wanted}: "
                           f"add optimizer={wanted.rsplit('.', 1)[-1].lower()}")
    loss = instantiate_node(cfg.loss, "loss", **{fact: getattr(facts, fact) for fact in loss_cls.data_facts})
    return loss


def build_model(cfg: DictConfig, facts: DataFacts, loss, sample: torch.Tensor,
                choices: dict[str, str] | None = None) -> torch.nn.Module:
    """The model with the head the loss declares, checked on one real input of the data."""
    choices = choices or {}
    num_logits = cfg.model.get("num_logits") or type(loss).logits_for(facts.task.num_classes)
    facts.task.check_logits(num_logits, f"loss={_choice(cfg, 'loss', choices)}")
    model = instantiate_node(cfg.model, "model", num_logits=num_logits, normed_head=type(loss).normed_head)
    check_input(model, sample, _choice(cfg, "model", choices), _choice(cfg, "dataset", choices))
    init_weights(model, cfg.get("init_from"))
    return model


def check_input(model: torch.nn.Module, sample: torch.Tensor, model_name: str, dataset_name: str) -> None:
    """One forward pass on one real input: a model that cannot take the data's shape is refused."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample)
    except RuntimeError as err:
        kind = f"{sample.ndim - 2}d"
        fits = ", ".join(MODELS_BY_INPUT.get(kind, ())) or "none"
        raise HightprError(
            f"model={model_name} cannot take the inputs of dataset={dataset_name} "
            f"(one sample is {list(sample.shape[1:])}, {kind}): use model={fits} "
            f"or adjust the model's channels ({str(err).splitlines()[0][:120]})") from err
    finally:
        model.train(was_training)


def sample_input(datamodule, n: int = 1) -> torch.Tensor:
    """`n` validation samples as the model sees them (the last one repeated if the split is smaller):
    what a model is checked against before training."""
    split = datamodule.splits.get("val") or datamodule.splits["train"]
    return datamodule.to_input(split.__getitems__([min(i, len(split) - 1) for i in range(n)])["x"])


def init_weights(model: torch.nn.Module, path: str | None) -> None:
    """Start from the model weights of a checkpoint (ALM-v1's two-step strategy: pre-train, then ALM)."""
    if not path:
        return
    if not Path(path).is_file():
        raise HightprError(f"init_from={path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise HightprError(f"init_from={path}: not a readable checkpoint ({err})") from err
    state = state.get("state_dict", state)
    weights = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    missing, _ = model.load_state_dict(weights or state, strict=False)
    if missing:
        raise HightprError(f"init_from={path}: checkpoint lacks {len(missing)} model tensors "
                           f"(e.g. {missing[0]}); was it trained with the same model config?")
    log.info("initialised the model from %s", path)


def build_regularizer(cfg: DictConfig, facts: DataFacts, choices: dict[str, str] | None = None):
    """The regulariser; a binary one on multi-class data is refused."""
    reg = instantiate_node(cfg.reg, "reg", num_sample_ids=facts.num_sample_ids)
    if not reg.handles(facts.task):
        name = _choice(cfg, "reg", choices or {})
        raise HightprError(f"reg={name} is binary but the data is multi-class (critical classes "
                           f"{list(facts.task.critical_classes)}): use reg=alm_m1, reg=alm_m2 or reg=rankreg")
    return reg


def build_module(cfg: DictConfig, datamodule, facts: DataFacts,
                 choices: dict[str, str] | None = None) -> HighTPRModule:
    """Loss, model, regulariser, optimizer and schedule in one LightningModule."""
    conflicts = []  # every incompatible choice is named at once, not one per attempt
    try:
        loss = build_loss(cfg, facts, choices)
        model = build_model(cfg, facts, loss, sample_input(datamodule), choices)
    except HightprError as err:
        conflicts.append(err)
    try:
        reg = build_regularizer(cfg, facts, choices)
    except HightprError as err:
        conflicts.append(err)
    if len(conflicts) == 1:
        raise conflicts[0]
    if conflicts:
        raise HightprError(f"{len(conflicts)} problems: " + "; and ".join(str(e) for e in conflicts))
    scheduler = cfg.get("scheduler")
    scheduler = instantiate_node(scheduler, "scheduler") if scheduler and scheduler.get("_target_") else None
    evaluation = cfg.get("evaluation")
    evaluation = OmegaConf.to_container(evaluation, resolve=True) if evaluation is not None else {}
    with config_errors("evaluation"):
        evaluator = evaluator_for(facts.task, **evaluation)  # multi-class reports take no settings
    optimizer = instantiate_node(cfg.optimizer, "optimizer")
    module = HighTPRModule(model=model, loss=loss, reg=reg, optimizer=optimizer, scheduler=scheduler,
                           score_fn=facts.task.score, evaluator=evaluator)
    with config_errors("optimizer"):
        module.configure_optimizers()  # optimizer and schedule settings fail here, not mid-fit
    return module


def _run_arguments(cls: type, run_dir: Path, monitor: str, patience: int) -> dict:
    """What the protocol's own callbacks take from the run (`conf/callbacks/default.yaml`)."""
    if issubclass(cls, BestEpoch):
        return {"dirpath": checkpoint_dir(run_dir), "filename": BEST_FILENAME, "monitor": f"val/{monitor}",
                "mode": "max", "save_top_k": 1, "auto_insert_metric_name": False,
                "tie_break": f"val/{TIE_BREAK}"}
    if issubclass(cls, LastCheckpoint):  # once an epoch is complete (after its validation)
        return {"path": last_checkpoint(run_dir)}
    if issubclass(cls, pl.callbacks.EarlyStopping):
        return {"monitor": f"val/{monitor}", "mode": "max", "patience": patience}
    return {}


def build_callbacks(cfg: DictConfig, run_dir: Path, monitor: str = "auc") -> list[pl.Callback]:
    """The `callbacks` group, in its order: each a `_target_`, the protocol's own given the run's
    checkpoint folder, validation monitor and `trainer.patience`."""
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        with config_errors(f"callbacks.{name}"):
            cls = get_class(str(node._target_))
        kwargs = _run_arguments(cls, run_dir, monitor, int(cfg.trainer.patience))
        callbacks.append(instantiate_node(node, f"callbacks.{name}", **kwargs))
    return callbacks


def build_trainer(cfg: DictConfig, run_dir: Path, monitor: str = "auc") -> pl.Trainer:
    """Lightning Trainer from `cfg.trainer` (Lightning's own argument names) and `cfg.logger`."""
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    lightning = {k: v for k, v in t.items() if k not in TRAINER_OWN}
    target = str(cfg.logger.get("_target_", "")) if cfg.get("logger") else ""
    for cls, package in LOGGER_PACKAGES.items():
        if target.endswith(cls) and importlib.util.find_spec(package) is None:
            raise HightprError(f"logger={cls} needs {package}: pip install 'hightpr[{package}]'")
    logger = instantiate_node(cfg.logger, "logger", save_dir=str(run_dir)) if target else False
    plugins: list = [AtomicCheckpointIO()]
    callbacks = build_callbacks(cfg, run_dir, monitor)
    if "ddp" in str(lightning.get("strategy", "")) and _is_subclass(cfg.sampler._target_,
                                                                    "hightpr.data.samplers.DualBatchSampler"):
        raise HightprError("trainer=ddp shards the training data with a distributed sampler, which "
                           "sampler=dual does not support yet: use sampler=random")
    if SLURMEnvironment.detect():  # submitit requeues pre-empted jobs: Lightning must not fight it
        plugins.append(SLURMEnvironment(auto_requeue=False))
    with config_errors("trainer"):
        return pl.Trainer(logger=logger, callbacks=callbacks, default_root_dir=str(run_dir),
                          plugins=plugins, **lightning)
