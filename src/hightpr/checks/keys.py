"""Every key is read by something: a key that nothing reads is refused, naming the nearest valid one.

A component node's keys are its `_target_`'s parameters; the trainer's are hightpr's own
(`TRAINER_OWN`) and Lightning's Trainer arguments (read from its source: `checks.trainer_source`);
`paths`, `ensemble` and `evaluation` have fixed keys.
"""

from __future__ import annotations

import inspect
from difflib import get_close_matches

from hydra.utils import get_object
from omegaconf import DictConfig

from hightpr.checks.trainer_source import trainer_signature
from hightpr.errors import HightprError

GROUPS = ("dataset", "model", "loss", "reg", "optimizer", "scheduler", "sampler", "trainer", "logger",
          "ensemble")
TOP_LEVEL = (*GROUPS, "callbacks", "seed", "name", "init_from", "resume", "paths", "evaluation")
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


def target_params(target: str) -> list[str] | None:
    """Keyword names a `_target_` accepts, or None when it takes any (**kwargs)."""
    try:
        params = inspect.signature(get_object(target)).parameters
    except (ValueError, TypeError, ImportError, AttributeError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL]


def target_nodes(path: str, node: DictConfig):
    """(path, node) of `node` and of every node with a `_target_` below it: what both checks walk."""
    if not node.get("_target_"):
        return
    yield path, node
    for key in node:
        child = node._get_node(key) if key not in HYDRA_KEYS else None
        if isinstance(child, DictConfig) and child.get("_target_"):
            yield from target_nodes(f"{path}.{key}", child)


def _check_target_node(path: str, node: DictConfig) -> None:
    """Every key of a component node (and of its nested components) is an argument it takes."""
    for where, n in target_nodes(path, node):
        valid = target_params(str(n.get("_target_")))
        if valid is None:
            continue
        for key in n:
            if key not in HYDRA_KEYS and key not in valid:
                _refuse(where, str(key), valid)


def trainer_arguments() -> list[str]:
    """Every key a `trainer` node may hold: hightpr's own plus Lightning Trainer arguments."""
    return [*TRAINER_OWN, *(n for n in trainer_signature() if n not in TRAINER_SET_BY_HIGHTPR)]




def check_unknown_keys(cfg: DictConfig) -> None:
    """Refuse any key that nothing reads, naming the nearest valid one and all of them."""
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


def component_nodes(cfg: DictConfig):
    """(path, node) of every component node: the groups' (not the trainer's) and each callback's."""
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and group != "trainer":
            yield group, node
    for name, node in (cfg.get("callbacks") or {}).items():
        yield f"callbacks.{name}", node


def check_component_keys(cfg: DictConfig) -> None:
    """Every key of a component node (and of its nested components) is an argument it takes; every
    callback is a node with a `_target_`."""
    for path, node in component_nodes(cfg):
        if path.startswith("callbacks.") and not (isinstance(node, DictConfig) and node.get("_target_")):
            raise HightprError(f"{path}: a callback is a node with a _target_ (a Lightning Callback class), "
                               f"e.g. +{path}._target_=pytorch_lightning.callbacks.LearningRateMonitor")
        _check_target_node(path, node)


def valid_keys(path: str, node) -> list[str]:
    """The keys a node at `path` accepts (for a message about a key it does not)."""
    if not path:
        return list(TOP_LEVEL)
    if path == "trainer":
        return trainer_arguments()
    if path in FIXED_KEYS:
        return list(FIXED_KEYS[path])
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        params = target_params(str(target)) if target else None
        return params if params is not None else [str(k) for k in node if k not in HYDRA_KEYS]
    return []
