"""Every option of every config group composes, resolves, and documents itself."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import typing

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

import hightpr.losses
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


# the groups that configure one component each (`ensemble` holds plain settings, no component)
COMPONENTS = ("dataset", "model", "loss", "reg", "optimizer", "scheduler", "sampler", "logger", "trainer")
LOSS_CLASSES = [getattr(hightpr.losses, n) for n in hightpr.losses.__all__]


def expected_type(target: str) -> type:
    """What a `_target_` builds: the class itself, or what a factory function is annotated to return."""
    obj = get_object(target)
    if isinstance(obj, type):
        return obj
    hint = typing.get_type_hints(obj)["return"]
    return typing.get_origin(hint) or hint


def build_component(cfg, group: str, tmp_path):
    """`instantiate` of the group's node, given what the wiring (`hightpr.build`) gives it, with small
    stand-ins for the data (class counts, sample ids, a positive mask) and for a missing GPU; a partial
    (optimizer, scheduler, sampler) is called as the wiring calls it. Returns (component, its type)."""
    node = cfg[group]
    if group == "trainer":
        own = inspect.signature(pl.Trainer.__init__).parameters
        args = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k in own}
        if args.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
            args.update(accelerator="cpu", devices=1)  # stands in for the GPU this machine lacks
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, default_root_dir=str(tmp_path), **args)
        assert (trainer.max_epochs, trainer.precision) == (node.max_epochs, node.precision)
        return trainer, pl.Trainer
    if not node or node.get("_target_") is None:  # logger=none, scheduler=none: nothing to build
        return None, type(None)
    target = str(node._target_)
    if group == "loss":
        critical = cfg.dataset.get("critical_classes")
        counts = [500 - 4 * c for c in range(100)] if critical else [90, 10]  # 100 classes or binary
        facts = {"class_counts": counts, "num_sample_ids": sum(counts)}
        loss = instantiate(node, **{f: facts[f] for f in get_object(target).data_facts})
        return loss, expected_type(target)
    if group == "model":
        return instantiate(node, num_logits=2, normed_head=False), expected_type(target)
    if group == "reg":
        return instantiate(node, num_sample_ids=100), expected_type(target)
    if group == "logger":
        cls = get_object(target)
        assert issubclass(cls, pl.loggers.Logger)
        extra = {"WandbLogger": "wandb"}.get(cls.__name__)
        if extra and importlib.util.find_spec(extra) is None:  # an optional extra not installed here:
            return cls, type                                   # its class is checked, not built
        return instantiate(node, save_dir=str(tmp_path)), cls
    built = instantiate(node)
    if node.get("_partial_"):
        assert isinstance(built, functools.partial) and built.func is get_object(target)
    if group == "optimizer":  # the model's weights, and what a loss prescribing it hands over (PESG)
        prescribing = [c for c in LOSS_CLASSES if c.required_optimizer == target]
        extra = prescribing[0]().optimizer_kwargs() if prescribing else {}
        built = built([torch.nn.Parameter(torch.zeros(3))], **extra)
    elif group == "scheduler":
        built = built(torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1))
    elif group == "sampler":
        built = built(torch.tensor([1, 0, 0, 0, 1, 0, 0, 0]), 4)  # the training positives, the batch size
        batches = [list(batch) for batch in built]
        assert batches and all(0 < len(b) <= 4 and set(b) <= set(range(8)) for b in batches), batches
    return built, expected_type(target)


def components_of(group: str, cfg) -> list[str]:
    """The components an option sets: its own group's, or for an experiment every component it
    changes from the default composition."""
    head = group.split("/")[0]  # reg/buffer: RankReg's buffer is built by RankReg
    if head in COMPONENTS:
        return [head]
    if head == "hparams_search":  # a sweep over keys of other options (checked in the test), no component
        return []
    default = composed()
    return [g for g in COMPONENTS if cfg.get(g) != default.get(g)]


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_resolves(group, option, tmp_path):
    if option.startswith("optuna"):
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="pip install 'hightpr[optuna]'")
    cfg = composed(*NEEDS.get(group, []), selector(group, option))
    for key in RESOLVED:
        if cfg.get(key) is not None:
            OmegaConf.to_container(cfg[key], resolve=True)
    if group == "hparams_search":  # it sweeps settings of the components
        swept = OmegaConf.load(CONF / group / f"{option}.yaml").hydra.sweeper.params
        assert swept and {str(k).split(".")[0] for k in swept} <= {*COMPONENTS, "seed"}, dict(swept)
    for component in components_of(group, cfg):
        built, kind = build_component(cfg, component, tmp_path)
        assert isinstance(built, kind), (component, type(built), kind)
        if component == "reg" and group == "reg/buffer":  # the buffer the option names, or none
            b = cfg.reg.buffer
            named = (b.strategy, b.size) if b.strategy != "none" and b.size > 0 else None
            assert (None if built.buffer is None else (built.buffer.strategy, built.buffer.size)) == named


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
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hightpr_slurm.slurm_launcher.SlurmLauncher"
    # resources follow the run (hightpr.jobs.slurm_request); time-outs requeue
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.mem_gb) == (None, None, None)
    assert launcher.max_num_timeout >= 1 and launcher.partition is None


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
