"""The composed config of a run: `compose_config` (in-process) and the choices Hydra made.

Torch- and Lightning-free, so `--help`, `--cfg job` and a refused override answer at once. The
`${hightpr_run_key:}` resolver (the run dir of every job, `hightpr.identity.run_key`) is registered
on import: Hydra resolves `hydra.run.dir` with it.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from hightpr.identity import run_key

CONFIG_MODULE = "hightpr.conf"  # the packaged configs; users add theirs with --config-dir / hydra.searchpath


def choices() -> dict[str, str]:
    """The option chosen in every config group (`loss: bce`, ...), when Hydra composed the config."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items()
            if v is not None and not k.startswith("hydra")}


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python train.py OVERRIDES` would run, composed in-process (no output dir made).

    Registers the composition with Hydra (choices, `${hydra:...}`) as a command-line run does.
    """
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def hydra_setting(key: str):
    """A setting of the running Hydra job (`runtime.output_dir`, `launcher`, `job.num`), else None."""
    return OmegaConf.select(HydraConfig.get(), key) if HydraConfig.initialized() else None


def without_hydra(config: DictConfig) -> DictConfig:
    """The job's config without its `hydra` node (what a run receives)."""
    return OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"])


def _run_key_resolver(*, _root_: DictConfig) -> str:
    """`${hightpr_run_key:}`: the run's folder name (the run dir of every job, single or swept)."""
    found = OmegaConf.select(_root_, "hydra.runtime.choices", default=None)
    found = {k: v for k, v in (found or {}).items() if v is not None and not k.startswith("hydra")}
    return run_key(_root_, found)


if not OmegaConf.has_resolver("hightpr_run_key"):
    OmegaConf.register_new_resolver("hightpr_run_key", _run_key_resolver, use_cache=False)
