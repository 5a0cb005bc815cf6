"""Which configurations batched training reproduces, and the settings it reads from the trainer node.

Anything else (another logger, data-parallel strategies, sanity validation, gradient
accumulation, ...) raises `NotStackable` with the reason, and the members train one after another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from hightpr.identity import KEY_DEFAULTS, execution_only_keys
from hightpr.stacked.forward import forward_mode
from hightpr.stacked.layers import NotStackable

# trainer keys that change nothing batched training does: how a run executes (`hightpr.identity`),
# the batch size (each member's data reads it) and Lightning's own switches
IGNORED = (*execution_only_keys("trainer"), "batch_size", "benchmark", "enable_checkpointing", "barebones",
           "detect_anomaly", "inference_mode")
DEFAULTS = {  # keys supported only at these values
    "num_sanity_val_steps": (0,), "limit_val_batches": (None, 1.0), "limit_test_batches": (None, 1.0),
    "fast_dev_run": (False, 0), "max_steps": (-1, None), "accumulate_grad_batches": (1,),
    "check_val_every_n_epoch": (1,), "val_check_interval": (None, 1.0), "min_epochs": (None, 0),
    "min_steps": (None,), "max_time": (None,), "strategy": ("auto", None), "sync_batchnorm": (False,),
    "num_nodes": (1,), "reload_dataloaders_every_n_epochs": (0,), "limit_predict_batches": (None, 1.0),
}
PRECISIONS = {"32-true": None, "32": None, 32: None, "bf16-mixed": torch.bfloat16}
LOGGERS = ("", "pytorch_lightning.loggers.CSVLogger", "lightning.pytorch.loggers.CSVLogger")


@dataclass(frozen=True)
class Settings:
    """What the batched trainer reads from the config (every member's is the same)."""

    device: torch.device
    autocast: torch.dtype | None
    max_epochs: int
    patience: int
    eval_batch_size: int
    limit_train_batches: int | float | None
    clip_val: float | None
    clip_algorithm: str
    deterministic: bool | str
    csv_log: bool
    forward: str  # `ensemble.forward` resolved for the device: stacked | members (hightpr.stacked.forward)
    compile: bool  # `ensemble.compile`: torch.compile the stacked network
    checkpoint_every_s: float = 60.0  # resume states at most this often (hightpr.stacked.resume)


def _device(t: dict, gpu: int | None) -> torch.device:
    accelerator, devices = str(t.get("accelerator") or "auto"), t.get("devices", 1)
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        raise NotStackable(f"trainer.accelerator={accelerator} is not supported batched")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise NotStackable(f"trainer.accelerator={accelerator} but no CUDA device")
    if accelerator == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if gpu is not None:
        return torch.device("cuda", gpu)
    if devices in (1, "1", "auto", None, -1, "-1"):
        return torch.device("cuda", torch.cuda.current_device())
    if isinstance(devices, list) and len(devices) == 1:
        return torch.device("cuda", int(devices[0]))
    raise NotStackable(f"trainer.devices={devices} is not supported batched (one device)")


def settings_of(cfg: DictConfig, gpu: int | None = None) -> Settings:
    """The batched trainer's settings, or `NotStackable` naming what it does not reproduce.

    The `ensemble` node's values were checked with every setting (`hightpr.checks.values`), before
    Hydra wrote anything."""
    every_s = float(cfg.ensemble.get("checkpoint_every_s", 60))
    compile = bool(cfg.ensemble.get("compile"))
    forward = cfg.ensemble.get("forward")
    callbacks = OmegaConf.to_container(cfg.get("callbacks") or {}, resolve=True)
    if callbacks != KEY_DEFAULTS["callbacks"]:
        raise NotStackable("callbacks other than the protocol's own (callbacks=default) are not supported "
                           "batched")
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key, value in t.items():
        if key in IGNORED or key in ("accelerator", "devices", "precision", "max_epochs", "patience",
                                     "eval_batch_size", "limit_train_batches", "gradient_clip_val",
                                     "gradient_clip_algorithm", "deterministic"):
            continue
        if key not in DEFAULTS or value not in DEFAULTS[key]:
            raise NotStackable(f"trainer.{key}={value} is not supported batched")
    precision = t.get("precision", "32-true")
    if precision not in PRECISIONS:
        raise NotStackable(f"trainer.precision={precision} is not supported batched")
    limit = t.get("limit_train_batches")
    if limit is not None and (isinstance(limit, bool) or limit <= 0):
        raise NotStackable(f"trainer.limit_train_batches={limit} is not supported batched")
    target = str(cfg.logger.get("_target_") or "") if cfg.get("logger") else ""
    if target not in LOGGERS:
        raise NotStackable(f"logger {target.rsplit('.', 1)[-1]} is not supported batched (csv or none)")
    max_epochs = t.get("max_epochs")
    max_epochs = 1000 if max_epochs is None else int(max_epochs)  # Lightning's default
    if max_epochs < 0:
        raise NotStackable(f"trainer.max_epochs={max_epochs} is not supported batched")
    device = _device(t, gpu)
    return Settings(
        device=device, autocast=PRECISIONS[precision], max_epochs=max_epochs,
        patience=int(t["patience"]), eval_batch_size=int(t.get("eval_batch_size") or 1000),
        limit_train_batches=limit, clip_val=t.get("gradient_clip_val") or None,
        clip_algorithm=str(t.get("gradient_clip_algorithm") or "norm"),
        deterministic=t.get("deterministic") or False, csv_log=bool(target),
        forward=forward_mode(forward, device), compile=compile, checkpoint_every_s=every_s)

