"""The wiring of one run: data -> task -> loss -> model -> regulariser -> module -> trainer.

Each step reads its own config node and what the earlier steps declared: the data tells its
task and facts (class counts, number of sample ids); the loss declares its head, its sampler and
optimizer and the data facts it takes (`BaseLoss` class variables); the model is built to that
head and checked against one real input. Every problem surfaces here, before training, as one
`HightprError`.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException, MissingConfigException, OverrideParseException
from hydra.utils import get_class, get_object, instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hightpr.callbacks import AtomicCheckpointIO, BestEpoch, Interrupt, LastCheckpoint, RNGState
from hightpr.errors import HightprError
from hightpr.metrics.thresholds import check_rule
from hightpr.models import MODELS_BY_INPUT
from hightpr.module import HighTPRModule
from hightpr.task import Task

log = logging.getLogger("hightpr")

GROUPS = ("dataset", "model", "loss", "reg", "optimizer", "scheduler", "sampler", "trainer", "logger",
          "ensemble")
TOP_LEVEL = (*GROUPS, "seed", "name", "init_from", "resume", "paths", "evaluation")
# trainer keys that hightpr reads itself; every other trainer key is a Lightning Trainer argument
TRAINER_OWN = ("batch_size", "eval_batch_size", "patience", "num_threads")
TRAINER_SET_BY_HIGHTPR = ("callbacks", "logger", "default_root_dir", "plugins")
FIXED_KEYS = {
    "ensemble": ("members", "member", "base_seed", "key", "batched", "checkpoint_every_s", "forward",
                 "compile"),
    "paths": ("data_dir", "output_root", "runs_csv"),
    "evaluation": ("operating_tprs", "delta", "threshold_rule"),
}
HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
LOGGER_PACKAGES = {"WandbLogger": "wandb", "TensorBoardLogger": "tensorboard"}  # optional extras


@dataclass(frozen=True)
class DataFacts:
    """What the data tells the rest of the wiring (losses take the fields they declare)."""

    class_counts: list[int]
    num_sample_ids: int
    task: Task


@contextmanager
def config_errors(what: str) -> Iterator[None]:
    """A bad value met while building `what` becomes one `HightprError` (the cause stays chained)."""
    try:
        yield
    except HightprError:
        raise
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, HightprError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from err
        raise HightprError(f"invalid {what} configuration: {err.__cause__ or err}") from err
    except (ValueError, TypeError, KeyError) as err:
        raise HightprError(f"invalid {what} configuration: {type(err).__name__}: {err} "
                           "(`--cfg job` shows the composed config)") from err


def build(node: DictConfig, what: str, **kwargs):
    """`hydra.utils.instantiate` of one config node, its errors named after the node."""
    with config_errors(what):
        return instantiate(node, **kwargs)


# -- every setting is read or refused ----------------------------------------------------------
def _nearest(key: str, valid: list[str]) -> str:
    match = get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"did you mean {match[0]}? " if match else ""


def unknown_key(path: str, key: str, valid: list[str]) -> str:
    """The message for a key that nothing reads: the nearest valid key, then all of them."""
    full = f"{path}.{key}" if path else key
    return (f"{full}: no component reads this setting; {_nearest(key, valid)}"
            f"valid keys of {path or 'the top level'}: {', '.join(sorted(valid))}")


def _refuse(path: str, key: str, valid: list[str]) -> None:
    raise HightprError(unknown_key(path, key, valid))


def _target_params(target: str) -> list[str] | None:
    """Keyword names a `_target_` accepts, or None when it takes any (**kwargs)."""
    try:
        params = inspect.signature(get_object(target)).parameters
    except (ValueError, TypeError, ImportError, AttributeError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL]


def _target_nodes(path: str, node: DictConfig):
    """(path, node) of `node` and of every node with a `_target_` below it: what both checks walk."""
    if not node.get("_target_"):
        return
    yield path, node
    for key in node:
        child = node._get_node(key) if key not in HYDRA_KEYS else None
        if isinstance(child, DictConfig) and child.get("_target_"):
            yield from _target_nodes(f"{path}.{key}", child)


def _check_target_node(path: str, node: DictConfig) -> None:
    """Every key of a component node (and of its nested components) is an argument it takes."""
    for where, n in _target_nodes(path, node):
        valid = _target_params(str(n.get("_target_")))
        if valid is None:
            continue
        for key in n:
            if key not in HYDRA_KEYS and key not in valid:
                _refuse(where, str(key), valid)


def trainer_arguments() -> list[str]:
    """Every key a `trainer` node may hold: hightpr's own plus Lightning Trainer arguments."""
    params = inspect.signature(pl.Trainer.__init__).parameters
    return [*TRAINER_OWN, *(n for n in params if n not in ("self", *TRAINER_SET_BY_HIGHTPR))]


# -- every value has the type and range its reader takes ------------------------------------
def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _at_least(low: int, null: bool = False) -> tuple[typing.Callable[[object], bool], str]:
    """An integer >= `low` (or null): a rule of `RANGES`."""
    what = {-1: "-1 (no limit) or an integer >= 0"}.get(low, f"an integer >= {low}")
    return (lambda v: (null and v is None) or (_int(v) and v >= low)), ("null or " if null else "") + what


def _batches(v: object) -> bool:
    return v is None or (_int(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0)


# settings whose range matters before any work starts: (test, what is allowed)
RANGES: dict[str, tuple[typing.Callable[[object], bool], str]] = {
    "seed": (lambda v: _int(v) and 0 <= v < 2**32, "an integer from 0 to 2**32-1"),
    "trainer.batch_size": _at_least(1),
    "trainer.eval_batch_size": _at_least(1),
    "trainer.patience": _at_least(0),
    "trainer.num_threads": _at_least(1, null=True),
    "trainer.max_epochs": _at_least(-1, null=True),
    "trainer.min_epochs": _at_least(0, null=True),
    "trainer.max_steps": _at_least(-1),
    "trainer.accelerator": (lambda v: str(v) in ACCELERATORS, "one of auto, cpu, gpu, cuda, mps, tpu"),
    "trainer.devices": (lambda v: (_int(v) and v >= -1) or isinstance(v, str)
                        or (isinstance(v, list) and all(map(_int, v))),
                        "auto, -1 (all), a count >= 1 or a list of device indices"),
    "trainer.log_every_n_steps": _at_least(1, null=True),
    "trainer.check_val_every_n_epoch": _at_least(1, null=True),
    "trainer.accumulate_grad_batches": _at_least(1),
    "trainer.num_sanity_val_steps": _at_least(-1, null=True),
    "trainer.gradient_clip_val": (lambda v: v is None or (_number(v) and v >= 0), "null or a number >= 0"),
    "trainer.fast_dev_run": (lambda v: isinstance(v, bool) or (_int(v) and v >= 0), "true, false or a count"),
    **{f"trainer.limit_{stage}_batches": (_batches, "null, a batch count >= 0 or a fraction in [0, 1]")
       for stage in ("train", "val", "test", "predict")},
}
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
SIMPLE = (int, float, bool, str, type(None))


def _fits(value, hint) -> bool | None:
    """Whether `value` fits the type hint; None when the hint is not one this check understands."""
    origin = typing.get_origin(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        verdicts = [_fits(value, h) for h in typing.get_args(hint)]
        return True if any(verdicts) else (None if None in verdicts else False)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (list, tuple, typing.Sequence, set) or hint in (list, tuple):
        return isinstance(value, list | tuple)
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return isinstance(value, str)
    if isinstance(hint, type) and issubclass(hint, torch.Tensor):  # a number or a list in a config
        return _number(value) or isinstance(value, list)
    if origin is not None or hint not in SIMPLE:
        return None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _int(value)
    if hint is float:
        return _number(value)
    if hint is type(None):
        return value is None
    return isinstance(value, str)


def _describe(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(h) for h in typing.get_args(hint)))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(hint))
    names = {int: "an integer", float: "a number", bool: "true/false", str: "a string", type(None): "null",
             torch.Tensor: "a number", Path: "a path"}
    return names.get(hint, "a list" if origin in (list, tuple, typing.Sequence) else str(hint))


def _hints(target) -> dict:
    try:
        obj = get_object(str(target)) if isinstance(target, str) else target
        return typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is simply not checked
        return {}


def _plain(node: DictConfig, key: str):
    """The resolved value of `node[key]` as plain Python, or `...` when it cannot be resolved yet."""
    try:
        value = node[key]
    except OmegaConfBaseException:
        return ...
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _bad_value(path: str, value, allowed: str) -> HightprError:
    return HightprError(f"{path}={value!r}: expected {allowed}" if isinstance(value, str)
                        else f"{path}={value}: expected {allowed}")


def _check_value(path: str, value, hint) -> None:
    if value is ...:
        return
    rule = RANGES.get(path)
    if rule is not None:
        if not rule[0](value):
            raise _bad_value(path, value, rule[1])
        return
    # null: a value the wiring fills in (model.num_logits) or the component defaults
    if hint is not None and value is not None and _fits(value, hint) is False:
        raise _bad_value(path, value, _describe(hint))


def check_values(cfg: DictConfig) -> None:
    """Types and ranges of the top-level, trainer and component settings, before any data is read:
    each bad value is one `HightprError` naming the key, the value and what is allowed."""
    _check_value("seed", _plain(cfg, "seed"), None)
    trainer_hints = _hints(pl.Trainer)
    for key in cfg.trainer:
        _check_value(f"trainer.{key}", _plain(cfg.trainer, str(key)), trainer_hints.get(str(key)))
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and group != "trainer":
            _check_node_values(group, node)


def _check_node_values(path: str, node: DictConfig) -> None:
    """Every plain value of a component node (and of its nested components) fits its type hint."""
    for where, n in _target_nodes(path, node):
        hints = _hints(str(n.get("_target_")))
        for key in n:
            if key in HYDRA_KEYS or isinstance(n._get_node(key), DictConfig):
                continue
            if str(key) in hints:
                _check_value(f"{where}.{key}", _plain(n, str(key)), hints[str(key)])


def check_keys(cfg: DictConfig) -> None:
    """Refuse any key that nothing reads (naming the nearest valid one) and any value of the wrong
    type or range (naming what is allowed)."""
    for key in cfg:
        if key == "hydra":  # the full config of a Hydra callback
            continue
        if key not in TOP_LEVEL:
            _refuse("", str(key), list(TOP_LEVEL))
    valid_trainer = trainer_arguments()
    for key in cfg.trainer:
        if key in TRAINER_SET_BY_HIGHTPR:
            raise HightprError(f"trainer.{key} is set by hightpr itself (checkpoint, early stopping, "
                               "run dir); remove the override")
        if key not in valid_trainer:
            _refuse("trainer", str(key), valid_trainer)
    for group, valid in FIXED_KEYS.items():
        for key in cfg.get(group) or {}:
            if key not in valid:
                _refuse(group, str(key), list(valid))
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and group != "trainer":
            _check_target_node(group, node)
    rule = (cfg.get("evaluation") or {}).get("threshold_rule")
    if rule is not None:
        with config_errors("evaluation"):
            check_rule(rule)  # np | ltt | crc | quantile, refused before any data is read
    check_values(cfg)


# -- the machine can run it ------------------------------------------------------------------
def check_machine(cfg: DictConfig, run_dir: Path | None = None) -> None:
    """What the config asks of this machine: the accelerator exists and the output folder can be
    written. Refused before anything is written (not part of `check_keys`: a plan may be checked
    on a machine other than the one that trains it)."""
    accelerator = str(cfg.trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise HightprError(f"trainer.accelerator={accelerator} needs a CUDA GPU, but none is visible on this "
                           "machine: use trainer=cpu_quick or trainer.accelerator=cpu")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise HightprError("trainer.accelerator=mps needs Apple's MPS, which this machine lacks: "
                           "use trainer.accelerator=cpu")
    check_writable(Path(str(cfg.paths.output_root)), "paths.output_root")
    if run_dir is not None:
        check_writable(Path(run_dir), "the run folder")


def check_writable(folder: Path, what: str) -> None:
    """A folder that exists (or can be made) and can be written; nothing is created here."""
    probe = folder.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    fix = "set paths.output_root (or HIGHTPR_OUTPUT_DIR) to a folder you can write"
    if not probe.is_dir():
        raise HightprError(f"{what} {folder}: {probe} is a file, not a folder; {fix}")
    if not os.access(probe, os.W_OK | os.X_OK) or _virtual(probe):
        raise HightprError(f"{what} {folder}: cannot create folders under {probe}; {fix}")


def _virtual(folder: Path) -> bool:
    """Kernel file systems (/proc, /sys) accept no new folders, whatever their permissions say."""
    parts = folder.resolve().parts
    return len(parts) > 1 and parts[1] in ("proc", "sys")


# -- Hydra's composition errors, as one line -----------------------------------------------------
def _valid_keys(path: str, node) -> list[str]:
    if not path:
        return list(TOP_LEVEL)
    if path == "trainer":
        return trainer_arguments()
    if path in FIXED_KEYS:
        return list(FIXED_KEYS[path])
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        params = _target_params(str(target)) if target else None
        return params if params is not None else [str(k) for k in node if k not in HYDRA_KEYS]
    return []


def composition_message(err: Exception) -> str:
    """One line for a Hydra composition error: a misspelled key gets `did you mean`, an unknown
    option the group's options, any other error its first line."""
    cause = err.__cause__
    text = str(err)
    if text.startswith("Could not override '") and isinstance(cause, OmegaConfBaseException):
        full = text.split("'")[1]
        path, _, key = full.rpartition(".")
        valid = _valid_keys(path, getattr(cause, "parent_node", None))
        if key in valid:
            return f"{full} is not in the config yet: add it with +{full}=..."
        return unknown_key(path, key, valid)
    if isinstance(err, MissingConfigException) and err.options:
        return f"{text.splitlines()[0]}; available options: {', '.join(sorted(err.options))}"
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override: {text.splitlines()[0]}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(cause, OmegaConfBaseException):
        lines += [str(cause).splitlines()[0]]
    return "; ".join(lines) or type(err).__name__


@contextmanager
def hydra_errors() -> Iterator[None]:
    """Around `@hydra.main`: Hydra raises instead of printing a trace, and a composition or job-setup
    error becomes one `HightprError` (for `user_errors`, the one boundary)."""
    from hydra.errors import HydraException

    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except (HydraException, OmegaConfBaseException) as err:
        if isinstance(err.__cause__, HightprError):
            raise err.__cause__ from err
        raise HightprError(composition_message(err)) from err
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


# -- the components ----------------------------------------------------------------------------
def build_datamodule(cfg: DictConfig) -> tuple[pl.LightningDataModule, DataFacts]:
    """The DataModule (splits built), its batch sampler, and the facts the rest needs."""
    datamodule = build(cfg.dataset, "dataset")
    with config_errors("dataset"):
        datamodule.setup("fit")
    datamodule.batch_sampler = build(cfg.sampler, "sampler")
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
    loss = build(cfg.loss, "loss", **{fact: getattr(facts, fact) for fact in loss_cls.data_facts})
    return loss


def build_model(cfg: DictConfig, facts: DataFacts, loss, sample: torch.Tensor,
                choices: dict[str, str] | None = None) -> torch.nn.Module:
    """The model with the head the loss declares, checked on one real input of the data."""
    choices = choices or {}
    num_logits = cfg.model.get("num_logits") or type(loss).logits_for(facts.task.num_classes)
    facts.task.check_logits(num_logits, f"loss={_choice(cfg, 'loss', choices)}")
    model = build(cfg.model, "model", num_logits=num_logits, normed_head=type(loss).normed_head)
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


def first_input(datamodule) -> torch.Tensor:
    """One validation sample as the model sees it (a batch of one)."""
    split = datamodule.splits.get("val") or datamodule.splits["train"]
    return datamodule.to_input(split.__getitems__([0])["x"])


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
    reg = build(cfg.reg, "reg", num_sample_ids=facts.num_sample_ids)
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
        model = build_model(cfg, facts, loss, first_input(datamodule), choices)
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
    scheduler = build(scheduler, "scheduler") if scheduler and scheduler.get("_target_") else None
    evaluation = cfg.get("evaluation")
    evaluation = OmegaConf.to_container(evaluation, resolve=True) if evaluation is not None else {}
    with config_errors("evaluation"):
        evaluator = facts.task.evaluator(**evaluation) if facts.task.binary else facts.task.evaluator()
    module = HighTPRModule(model=model, loss=loss, reg=reg, optimizer=build(cfg.optimizer, "optimizer"),
                           scheduler=scheduler, score_fn=facts.task.score, evaluator=evaluator)
    with config_errors("optimizer"):
        module.configure_optimizers()  # optimizer and schedule settings fail here, not mid-fit
    return module


def build_trainer(cfg: DictConfig, run_dir: Path, monitor: str = "auc") -> pl.Trainer:
    """Lightning Trainer from `cfg.trainer` (Lightning's own argument names) and `cfg.logger`."""
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    lightning = {k: v for k, v in t.items() if k not in TRAINER_OWN}
    target = str(cfg.logger.get("_target_", "")) if cfg.get("logger") else ""
    for cls, package in LOGGER_PACKAGES.items():
        if target.endswith(cls) and importlib.util.find_spec(package) is None:
            raise HightprError(f"logger={cls} needs {package}: pip install 'hightpr[{package}]'")
    logger = build(cfg.logger, "logger", save_dir=str(run_dir)) if target else False
    plugins: list = [AtomicCheckpointIO()]
    callbacks = [
        BestEpoch(dirpath=run_dir / "checkpoints", filename="best-epoch{epoch:03d}", monitor=f"val/{monitor}",
                  mode="max", save_top_k=1, auto_insert_metric_name=False, tie_break="val/loss"),
        # last.ckpt once an epoch is complete (after its validation): a killed run resumes from it
        LastCheckpoint(run_dir / "checkpoints" / "last.ckpt"),
        RNGState(),
        Interrupt(),
        pl.callbacks.EarlyStopping(monitor=f"val/{monitor}", mode="max", patience=t["patience"]),
    ]
    if "ddp" in str(lightning.get("strategy", "")) and _is_subclass(cfg.sampler._target_,
                                                                    "hightpr.data.samplers.DualBatchSampler"):
        raise HightprError("trainer=ddp shards the training data with a distributed sampler, which "
                           "sampler=dual does not support yet: use sampler=random")
    if SLURMEnvironment.detect():  # submitit requeues pre-empted jobs: Lightning must not fight it
        plugins.append(SLURMEnvironment(auto_requeue=False))
    with config_errors("trainer"):
        return pl.Trainer(logger=logger, callbacks=callbacks, default_root_dir=str(run_dir),
                          plugins=plugins, **lightning)
