"""What the config asks of this machine: the accelerator exists and the output folder can be written."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig

from hightpr.errors import HightprError


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
