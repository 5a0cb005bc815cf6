"""Every setting is read or refused, before anything is built or written.

`check_keys` refuses a key that nothing reads (`checks.keys`, naming the nearest valid one) and a
value of the wrong type or range (`checks.values`, the `ensemble` node's included);
`check_machine` what this machine cannot do (`checks.machine`); `hydra_errors` turns Hydra's
composition errors into one line (`checks.hydra_messages`); `config_errors` a bad value met while
building (`checks.build_errors`). Nothing here imports torch or Lightning: the trainer's arguments
are read from Lightning's source (`checks.trainer_source`) and the keys, the seed, the trainer's
and the ensemble's values are checked first, so such a refusal (like `--help` and `--cfg job`)
answers at once. The components' settings and the threshold rule come after: they import the
class (or the metrics) that reads them.
"""

from __future__ import annotations

from omegaconf import DictConfig

from hightpr.checks.build_errors import config_errors
from hightpr.checks.hydra_messages import composition_message, hydra_errors
from hightpr.checks.keys import TRAINER_OWN, check_component_keys, check_unknown_keys, trainer_arguments
from hightpr.checks.machine import check_machine, check_writable
from hightpr.checks.trainer_source import trainer_signature
from hightpr.checks.values import check_component_values, check_quick_values

__all__ = ["TRAINER_OWN", "check_keys", "check_machine", "check_writable", "composition_message",
           "config_errors", "hydra_errors", "trainer_arguments", "trainer_signature"]


def check_keys(cfg: DictConfig) -> None:
    """Every setting read or refused: a key that nothing reads (naming the nearest valid one), then
    a value of the wrong type or range (naming what is allowed)."""
    check_unknown_keys(cfg)
    check_quick_values(cfg)  # the seed, trainer and ensemble: before any component's class is imported
    check_component_keys(cfg)
    check_component_values(cfg)
