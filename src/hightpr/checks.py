"""Every setting is read or refused, before anything is built or written.

`check_keys` refuses a key that nothing reads (naming the nearest valid one) and a value of the
wrong type or range; `check_machine` what this machine cannot do; `hydra_errors` turns Hydra's
composition errors into one line. This module imports neither torch nor Lightning: the trainer's
arguments are read from Lightning's source (`trainer_signature`) and the keys, the seed and the
trainer's values are checked first, so such a refusal (like `--help` and `--cfg job`) answers at
once. The components' settings and the threshold rule come after: they import the class (or the
metrics) that reads them.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import os
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from difflib import get_close_matches
from pathlib import Path

from hydra.errors import InstantiationException, MissingConfigException, OverrideParseException
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from hightpr.errors import HightprError

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
    return [*TRAINER_OWN, *(n for n in trainer_signature() if n not in TRAINER_SET_BY_HIGHTPR)]


class _Unknown:
    """A type named in Lightning's annotations that this check does not judge (a class of its own)."""


class _SourceNames(dict):
    """The names an annotation in one source file refers to, resolved without importing the file:
    typing's and the builtins', the file's own module-level aliases (`_PRECISION_INPUT = Union[...]`)
    and those it imports from another file of the same installed package; anything else (a class)
    is `_Unknown`."""

    def __init__(self, path: Path, depth: int = 0) -> None:
        super().__init__({**vars(typing), "timedelta": timedelta, "Path": Path})
        tree = ast.parse(path.read_text())
        self.depth = depth
        self.aliases = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                        for t in node.targets if isinstance(t, ast.Name)}
        self.imports = {(a.asname or a.name): (node.module, a.name) for node in tree.body
                        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                        for a in node.names}
        self.tree = tree

    def __missing__(self, key: str) -> object:
        import builtins

        if hasattr(builtins, key):
            return getattr(builtins, key)
        if self.depth < 4 and key in self.aliases:
            self[key] = self.evaluate(self.aliases[key])
        elif self.depth < 4 and key in self.imports:
            module, name = self.imports[key]
            source = _module_source(module)
            self[key] = _SourceNames(source, self.depth + 1)[name] if source is not None else _Unknown
        else:
            self[key] = _Unknown
        return self[key]

    def evaluate(self, node: ast.expr) -> object:
        """The value of an annotation expression of this file (`_Unknown` where it cannot be read)."""
        try:
            return eval(ast.unparse(node), {"__builtins__": {}}, self)  # noqa: S307 - an installed package's annotation
        except Exception:  # noqa: BLE001 - an annotation this check cannot read is not checked
            return _Unknown


def _module_source(module: str) -> Path | None:
    """The source file of `pytorch_lightning.x.y` / `lightning_fabric.x.y`, found without importing it."""
    top, *rest = module.split(".")
    if top not in ("pytorch_lightning", "lightning_fabric"):
        return None
    spec = importlib.util.find_spec(top)  # a submodule's spec would import the package
    if spec is None or spec.origin is None:
        return None
    base = Path(spec.origin).parent.joinpath(*rest)
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.cache
def trainer_signature() -> dict[str, object]:
    """{argument: type hint} of `pytorch_lightning.Trainer.__init__`, read from its source, not imported
    (importing Lightning takes seconds); imported only when the source has another shape."""
    try:
        names = _SourceNames(_module_source("pytorch_lightning.trainer.trainer"))
        init = next(f for c in names.tree.body if isinstance(c, ast.ClassDef) and c.name == "Trainer"
                    for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    except (AttributeError, OSError, SyntaxError, StopIteration, TypeError):
        import pytorch_lightning as pl

        params = inspect.signature(pl.Trainer.__init__).parameters
        hints = typing.get_type_hints(pl.Trainer.__init__)
        return {n: hints.get(n, typing.Any) for n in params if n != "self"}
    return {arg.arg: names.evaluate(arg.annotation) if arg.annotation is not None else typing.Any
            for arg in [*init.args.args, *init.args.kwonlyargs] if arg.arg != "self"}


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


def check_values(cfg: DictConfig) -> None:
    """Types and ranges of the top-level, trainer and component settings, before any data is read:
    each bad value is one `HightprError` naming the key, the value and what is allowed."""
    _check_plain_values(cfg)
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and group != "trainer":
            _check_node_values(group, node)


def _check_plain_values(cfg: DictConfig) -> None:
    """The seed and the trainer's settings (Lightning's arguments read from its source: no import)."""
    _check_value("seed", _plain(cfg, "seed"), None)
    trainer_hints = {k: (None if v is typing.Any else v) for k, v in trainer_signature().items()}
    for key in cfg.trainer:
        _check_value(f"trainer.{key}", _plain(cfg.trainer, str(key)), trainer_hints.get(str(key)))


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
    _check_plain_values(cfg)  # before any component's class is imported (a quick refusal)
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and group != "trainer":
            _check_target_node(group, node)
    rule = (cfg.get("evaluation") or {}).get("threshold_rule")
    if rule is not None:
        from hightpr.metrics.thresholds import check_rule

        with config_errors("evaluation"):
            check_rule(rule)  # np | ltt | crc | quantile, refused before any data is read
    for group in GROUPS:
        node = cfg.get(group)
        if isinstance(node, DictConfig) and group != "trainer":
            _check_node_values(group, node)


# -- the machine can run it ------------------------------------------------------------------
def check_machine(cfg: DictConfig, run_dir: Path | None = None) -> None:
    """What the config asks of this machine: the accelerator exists and the output folder can be
    written. Refused before anything is written (not part of `check_keys`: a plan may be checked
    on a machine other than the one that trains it)."""
    accelerator = str(cfg.trainer.get("accelerator") or "auto")
    import torch

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


