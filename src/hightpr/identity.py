"""Run identity: the folder name a configuration trains in, so the same command finds its run again.

One list says which settings change only how a run executes, not what it learns
(`EXECUTION_ONLY`); both names of a run use it. A config's name (`run_key`, `ensemble_key`) is a
digest of the resolved config without those settings; a table cell's name (`overrides_key`) is a
digest of the overrides that change what is learnt. Torch-free: the config layer imports it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# Settings that change how a run executes, never what it learns: left out of every run's name.
EXECUTION_ONLY = (
    "name", "paths", "ensemble", "logger", "hydra", "resume",
    "dataset.root", "dataset.eval_batch_size",
    "trainer.num_threads", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    "trainer.enable_model_summary", "trainer.accelerator", "trainer.devices", "trainer.eval_batch_size",
    "trainer.deterministic",
)
# A member's own seed: part of a run's name, not of its ensemble's (the ensemble spans the seeds).
SEEDS = ("seed", "dataset.seed")
# Keys added after runs were committed: left out of the digest while at their default, so the
# folders of earlier runs keep their names; any other value separates the runs as usual.
# A node all at its default (the callbacks: conf/callbacks/default.yaml) is left out whole.
KEY_DEFAULTS = {
    "evaluation": {"threshold_rule": "np"},
    "callbacks": OmegaConf.to_container(OmegaConf.load(Path(__file__).parent / "conf" / "callbacks"
                                                       / "default.yaml")),
}
KEY_CHOICES = ("dataset", "loss", "reg")  # the readable prefix of a folder name


def execution_only(override: str) -> bool:
    """`ensemble.batched=false`, `trainer.num_threads=2`, ...: how a run executes, not what it learns."""
    key = override.lstrip("+~").split("=", 1)[0].replace("/", ".")
    return any(key == p or key.startswith(p + ".") for p in EXECUTION_ONLY)


def execution_only_keys(group: str) -> tuple[str, ...]:
    """The execution-only keys of one config group (`trainer` -> num_threads, devices, ...)."""
    return tuple(p.split(".", 1)[1] for p in EXECUTION_ONLY if p.startswith(group + "."))


def _left_out(path: str) -> bool:
    return path in SEEDS or execution_only(path)


def key_content(cfg: DictConfig) -> dict:
    """The resolved config minus the execution-only settings and the seed: what a member learns."""
    content = {}
    for key in cfg:
        if _left_out(str(key)):
            continue
        node = cfg[key]
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        if isinstance(value, dict):
            defaults = KEY_DEFAULTS.get(str(key), {})
            value = {k: v for k, v in value.items() if not _left_out(f"{key}.{k}")
                     and not (k in defaults and v == defaults[k])}
            if defaults and not value:
                continue
        content[key] = value
    return content


def ensemble_key(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> str:
    """Readable, stable folder name of an ensemble: `<dataset>-<loss>-<reg>-<digest of the config>`.

    Two configurations get the same key only if they differ in nothing but the seed and the
    execution-only settings, so a finished member is found again.
    """
    digest = _digest(key_content(cfg))
    parts = _choice_parts(choices)
    return "-".join([*parts, digest]) if parts else f"ens-{digest}"


def run_key(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> str:
    """The folder name of a single run: `<dataset>-<loss>-<reg>-s<seed>-<digest>`, the ensemble
    key's content plus the seed. The same command (or the same job of a sweep) finds its run again:
    finished, it is not retrained; interrupted, it resumes."""
    digest = _digest({"seed": cfg.get("seed"), **key_content(cfg)})
    return "-".join([*_choice_parts(choices), f"s{cfg.get('seed')}", digest])


def overrides_key(prefix: str, overrides: Iterable[str]) -> str:
    """A table cell's ensemble folder: `<prefix>-<digest>` of its (order-free) overrides that change
    what is learnt."""
    learnt = sorted(o for o in overrides if not execution_only(o))
    return f"{prefix}-{hashlib.sha1(json.dumps(learnt).encode()).hexdigest()[:10]}"


def _digest(content: dict) -> str:
    return hashlib.sha1(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _choice_parts(choices: Mapping[str, str] | None) -> list[str]:
    choices = choices or {}
    return [str(choices[g]).replace("/", "_") for g in KEY_CHOICES if choices.get(g)]
