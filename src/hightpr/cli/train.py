"""`python train.py` / `hightpr-train`: one training run, an ensemble, or a Hydra multirun grid.

`main` is the Hydra entry point and the one error boundary; `train` dispatches a run or an
ensemble; `run` trains one model, tests its best checkpoint and writes metrics.json,
logits_{val,test}.npz and a row of the experiment's runs.csv. The wiring is `hightpr.build`.
`compose_config` gives the same config in-process (notebooks, tests, table drivers).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from hightpr.build import build_datamodule, build_module, build_trainer, check_keys
from hightpr.cli.ensemble import ensemble_requested, train_members
from hightpr.errors import HightprError, user_errors
from hightpr.runs import append_run, flatten, runs_row, save_logits, save_metrics

CONFIG_MODULE = "hightpr.conf"  # the packaged configs; users add theirs with --config-dir / hydra.searchpath
log = logging.getLogger("hightpr")


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


def default_run_dir(cfg: DictConfig) -> Path:
    """Hydra's job dir when Hydra runs the job; else a fresh dir under `<output_root>/<name>/runs/`."""
    job_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir") if HydraConfig.initialized() else None
    if job_dir:
        return Path(job_dir)
    root = Path(cfg.paths.output_root) / str(cfg.name) / "runs"
    n = len(list(root.glob("run-*"))) if root.is_dir() else 0
    while (root / f"run-{n:04d}").exists():
        n += 1
    return root / f"run-{n:04d}"


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """Train, keep the best epoch on the validation monitor, test it, save every output."""
    check_keys(cfg)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if cfg.trainer.get("num_threads"):
        torch.set_num_threads(int(cfg.trainer.num_threads))
    try:
        return _fit_and_test(cfg, run_dir)
    finally:
        torch.set_num_threads(threads)


def _fit_and_test(cfg: DictConfig, run_dir: Path) -> dict:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, facts = build_datamodule(cfg)
    module = build_module(cfg, datamodule, facts, choices())
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
        "epochs_trained": trainer.current_epoch, "global_step": trainer.global_step, "best_checkpoint": best,
        "data": datamodule.summary(), "task": facts.task.to_dict(),
    }
    operating_points = getattr(module.evaluator, "operating_points", None)  # threshold on val, rates on test
    if operating_points is not None:
        metrics["operating_point"] = operating_points(module.outputs["val"], module.outputs["test"])
    save_metrics(run_dir, metrics)
    row = runs_row(cfg, run_dir, module.reports, choices())
    row.update(flatten("op", metrics.get("operating_point", {})))
    append_run(Path(cfg.paths.runs_csv), row)
    log.info("test %s", {k: round(v, 4) for k, v in module.reports["test"].items()})
    log.info("outputs in %s", run_dir)
    return metrics


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """One run, or the members of an ensemble (`ensemble.members=N` / `ensemble.member=M`)."""
    check_keys(cfg)
    if ensemble_requested(cfg):
        return train_members(cfg, run, choices())
    return run(cfg, run_dir)


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    os.environ.setdefault("PL_DISABLE_FORK", "1")


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    """Hydra entry point: a user error ends as one `error:` line and exit code 2."""
    _quiet_libraries()
    with user_errors():
        return train(cfg)


__all__ = ["HightprError", "choices", "compose_config", "main", "run", "train"]


if __name__ == "__main__":
    main()
