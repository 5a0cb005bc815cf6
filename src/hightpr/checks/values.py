"""Every value has the type and range its reader takes: one `HightprError` naming the key, the value
and what is allowed. The seed, the trainer's values (hints from Lightning's source) and the
`ensemble` node's are checked without importing torch; a component's values against its
`_target_`'s type hints; the threshold rule by the metrics that read it.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hightpr.checks.build_errors import config_errors
from hightpr.checks.keys import HYDRA_KEYS, component_nodes, target_nodes
from hightpr.checks.trainer_source import trainer_signature
from hightpr.errors import HightprError

ENSEMBLE_FORWARDS = ("stacked", "members")  # how batched members run their models (hightpr.stacked.forward)


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
    # the ensemble node (conf/ensemble/single.yaml)
    "ensemble.members": _at_least(1, null=True),
    "ensemble.member": _at_least(1, null=True),
    "ensemble.base_seed": _at_least(0, null=True),
    "ensemble.key": (lambda v: v is None or (isinstance(v, str) and v.strip() != "" and "/" not in v),
                     "null or a folder name"),
    "ensemble.batched": (lambda v: v is None or isinstance(v, bool), "true or false"),
    "ensemble.checkpoint_every_s": (lambda v: _number(v) and v >= 0,
                                    "a number of seconds >= 0 (0: every epoch)"),
    "ensemble.forward": (lambda v: v is None or v in ENSEMBLE_FORWARDS,
                         "stacked, members or null (automatic: stacked on a GPU, members on the CPU)"),
    "ensemble.compile": (lambda v: v is None or isinstance(v, bool), "true or false"),
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
    if _is_tensor(hint):  # a number or a list in a config
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
             Path: "a path"}
    if _is_tensor(hint):
        return "a number"
    return names.get(hint, "a list" if origin in (list, tuple, typing.Sequence) else str(hint))


def _is_tensor(hint) -> bool:
    """`torch.Tensor` (or a subclass), recognised without importing torch."""
    return isinstance(hint, type) and any(f"{c.__module__}.{c.__name__}" == "torch.Tensor"
                                          for c in hint.__mro__)


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




def _check_plain_values(cfg: DictConfig) -> None:
    """The seed and the trainer's settings (Lightning's arguments read from its source: no import)."""
    _check_value("seed", _plain(cfg, "seed"), None)
    trainer_hints = {k: (None if v is typing.Any else v) for k, v in trainer_signature().items()}
    for key in cfg.trainer:
        _check_value(f"trainer.{key}", _plain(cfg.trainer, str(key)), trainer_hints.get(str(key)))


def _check_node_values(path: str, node: DictConfig) -> None:
    """Every plain value of a component node (and of its nested components) fits its type hint."""
    for where, n in target_nodes(path, node):
        hints = _hints(str(n.get("_target_")))
        for key in n:
            if key in HYDRA_KEYS or isinstance(n._get_node(key), DictConfig):
                continue
            if str(key) in hints:
                _check_value(f"{where}.{key}", _plain(n, str(key)), hints[str(key)])


def _check_ensemble_values(cfg: DictConfig) -> None:
    """The `ensemble` node's values, and a member inside the ensemble's size."""
    ensemble = cfg.get("ensemble")
    if not isinstance(ensemble, DictConfig):
        return
    for key in ensemble:
        _check_value(f"ensemble.{key}", _plain(ensemble, str(key)), None)
    members, member = ensemble.get("members"), ensemble.get("member")
    if member is not None and members is not None and member > members:
        raise HightprError(f"ensemble.member={member} is outside ensemble.members={members}")


def check_quick_values(cfg: DictConfig) -> None:
    """The seed's, the trainer's and the ensemble's values: no import of torch or of a component."""
    _check_plain_values(cfg)
    _check_ensemble_values(cfg)


def check_component_values(cfg: DictConfig) -> None:
    """The threshold rule and every component's values (each against its `_target_`'s type hints)."""
    rule = (cfg.get("evaluation") or {}).get("threshold_rule")
    if rule is not None:
        from hightpr.metrics.thresholds import check_rule

        with config_errors("evaluation"):
            check_rule(rule)  # np | ltt | crc | quantile, refused before any data is read
    for path, node in component_nodes(cfg):
        _check_node_values(path, node)
