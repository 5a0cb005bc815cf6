"""`hydra/launcher=slurm`'s class (`_target_`), where Hydra looks for plugins; its code is
`hightpr.slurm.HightprSlurmLauncher`. Hydra imports every module of `hydra_plugins` at start-up,
so without the `slurm` extra (hydra-submitit-launcher) this module defines nothing."""

from __future__ import annotations

import importlib.util

if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None:
    from hightpr.slurm import HightprSlurmLauncher

    class SlurmLauncher(HightprSlurmLauncher):
        """hydra-submitit-launcher's SLURM launcher with hightpr's resources, skips and error lines."""
