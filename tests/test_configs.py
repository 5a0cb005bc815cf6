"""Every option of every config group composes, resolves, and documents itself."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONF_PATH

CONF = CONF_PATH
GROUPS = sorted({str(f.parent.relative_to(CONF)) for f in CONF.rglob("*.yaml")} - {".", "hydra/launcher"})
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]
NEEDS = {"reg/buffer": ["reg=rankreg"]}  # the buffer is a node of RankReg
RESOLVED = ("dataset", "model", "loss", "reg", "optimizer", "scheduler", "sampler", "trainer", "ensemble")


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def selector(group: str, option: str) -> str:
    """The override that picks an option: `reg/buffer=fifo`, but `experiment=rankreg/cifar`."""
    head, _, rest = group.partition("/")
    return f"{head}={rest}/{option}" if head == "experiment" and rest else f"{group}={option}"


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(group, option):
    if option.startswith("optuna"):
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'hightpr[optuna]'")
    cfg = composed(*NEEDS.get(group, []), selector(group, option))
    for key in RESOLVED:
        if cfg.get(key) is not None:
            OmegaConf.to_container(cfg[key], resolve=True)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_file_starts_with_a_comment(group, option):
    first = (CONF / group / f"{option}.yaml").read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"conf/{group}/{option}.yaml needs a header comment saying what it is"


def test_defaults_are_the_papers_main_setup():
    cfg = composed()
    assert cfg.dataset.ratio == 100 and (cfg.dataset.negative_class, cfg.dataset.positive_class) == (0, 1)
    assert cfg.model._target_.endswith("resnet10") and cfg.loss._target_.endswith("BCE")
    assert cfg.reg._target_.endswith("NoRegularizer") and cfg.trainer.batch_size == 64
    assert cfg.trainer.max_epochs == 100 and cfg.trainer.patience == 30


def test_slurm_launcher_config():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher not installed (pip install -e '.[slurm]')")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 1


def test_rankreg_melanoma_preset_is_the_papers_setup():
    cfg = composed("experiment=rankreg/melanoma")
    assert cfg.model._target_.endswith("resnet18") and cfg.model.num_logits == 2
    assert cfg.dataset._target_.endswith("MelanomaDataModule") and cfg.trainer.batch_size == 32
    buffer = cfg.reg.buffer
    assert (buffer.strategy, buffer.size, buffer.in_base_loss) == ("dequeue_max", 32, False)
    assert "buffer" not in cfg


def test_cbbce_uses_the_official_raw_weights_by_default():
    assert composed("loss=cbbce").loss.normalize is False


def test_plain_rankreg_is_not_the_papers_setup():
    cfg = composed("reg=rankreg")
    assert cfg.trainer.batch_size == 64 and cfg.model.num_logits is None
    cifar = composed("experiment=rankreg/cifar")
    assert cifar.trainer.batch_size == 32 and cifar.model.num_logits == 2 and cifar.reg.buffer.in_base_loss
