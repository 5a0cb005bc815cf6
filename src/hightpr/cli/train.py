"""`python train.py` / `hightpr-train`: one training run, an ensemble, or a Hydra multirun grid.

A thin command: Hydra composes the config, `Preflight` checks it and the machine before Hydra
writes anything, `hightpr.training.train` trains. Torch and Lightning are imported only when a
run starts, so `--help`, `--cfg job` and a refused override answer at once.
"""

from __future__ import annotations

import gc
import os
import shutil
import warnings
from pathlib import Path

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from hightpr.checks import check_keys, check_machine, check_writable, hydra_errors
from hightpr.config import CONFIG_MODULE, without_hydra
from hightpr.errors import HightprError, user_errors


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    os.environ.setdefault("PL_DISABLE_FORK", "1")


class Preflight(Callback):
    """Hydra callback (`hydra.callbacks.preflight`): the config and the machine are checked before
    Hydra writes anything (a run's folder, a grid's multirun.yaml); a problem is one `error:` line.
    Under `hydra/launcher=slurm`: SLURM's commands are here and the run is one SLURM can be asked for.

    Hydra turns a callback's exceptions into warnings, so the boundary (`user_errors`) is here.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with user_errors(exit_when_debugging=True):
            cfg = without_hydra(config)
            check_keys(cfg)
            check_machine(cfg, Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        """A grid: the settings it does not sweep, the launcher and the sweep folder, before any job."""
        with user_errors(exit_when_debugging=True):
            check_keys(without_hydra(config))  # the swept values are checked in each job
            target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
            if target.endswith("SlurmLauncher"):
                missing = [cmd for cmd in ("sbatch", "srun", "sacct") if shutil.which(cmd) is None]
                if missing:
                    raise HightprError(f"hydra/launcher=slurm needs SLURM, but {' and '.join(missing)} "
                                       "cannot be found here: use hydra/launcher=local (this machine) "
                                       "or run from a SLURM login node")
                from hightpr.jobs import slurm_request

                slurm_request(without_hydra(config))  # a run SLURM cannot be asked for is refused here
            check_writable(Path(str(config.hydra.sweep.dir)), "the sweep folder")


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    _quiet_libraries()
    with user_errors():
        from hightpr.training import train, validation_objective

        return validation_objective(train(cfg))


def main() -> float | None:
    """`python train.py` / `hightpr-train`: a user error, Hydra's included, ends as one `error:` line
    and exit code 2. Returns the validation objective (for sweepers such as Optuna)."""
    with user_errors(), hydra_errors():
        return _hydra_main()


def run() -> None:
    """The `python train.py` / `hightpr-train` process: `main()`, then an exit without the
    interpreter's last garbage-collection walk over every object torch and Lightning made
    (`gc.freeze()`; docs/speed.md). Files are closed and exit handlers run as before; only
    objects held in reference cycles are left to the operating system, as the process ends."""
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    run()
