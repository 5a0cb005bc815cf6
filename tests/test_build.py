"""The wiring (`hightpr.build`) and the task's one scoring rule (`hightpr.task`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hightpr.build import DataFacts, build_loss, check_input
from hightpr.checks import check_keys, trainer_arguments
from hightpr.config import compose_config
from hightpr.ensemble import task_of_run
from hightpr.errors import HightprError
from hightpr.losses import BaseLoss
from hightpr.metrics.evaluators import BinaryEvaluator
from hightpr.metrics.multiclass import MulticlassEvaluator
from hightpr.models import resnet10
from hightpr.regularizers import ALMRegularizer, MultiClassALMRegularizer, NoRegularizer, RankReg
from hightpr.runs import save_metrics
from hightpr.task import Task

LOGITS = {
    1: np.array([[0.3], [-1.2], [2.0]], dtype=np.float32),
    2: np.array([[0.5, 1.5], [2.0, -1.0], [0.0, 0.0]], dtype=np.float32),
    4: np.array([[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 2.0, 0.5], [0.0, 3.0, -2.0, 1.0]], dtype=np.float32),
}


# -- one scoring rule ------------------------------------------------------------------------------
@pytest.mark.parametrize("num_logits, expected", [(1, [0.3, -1.2, 2.0]), (2, [1.0, -3.0, 0.0])])
def test_binary_score_by_hand(num_logits, expected):
    task = Task()
    assert task.scores(LOGITS[num_logits]).tolist() == pytest.approx(expected)
    torch_scores = task.score(torch.from_numpy(LOGITS[num_logits]))
    assert torch_scores.tolist() == pytest.approx(expected)
    assert BinaryEvaluator(task=task).scores(LOGITS[num_logits]).tolist() == pytest.approx(expected)


def test_multiclass_score_is_the_first_critical_logit_everywhere():
    task = Task(4, (3, 1))
    assert task.scores(LOGITS[4]).tolist() == pytest.approx([0.4, 0.5, 1.0])
    assert MulticlassEvaluator([3, 1], task=task).scores(LOGITS[4]).tolist() == pytest.approx([0.4, 0.5, 1.0])
    assert MulticlassEvaluator([3, 1]).scores(LOGITS[4]).tolist() == pytest.approx([0.4, 0.5, 1.0])


def test_task_round_trips_and_is_what_ensembles_use(tmp_path):
    task = Task(10, (9, 8))
    assert Task.from_dict(task.to_dict()) == task and task.kind == "multiclass"
    save_metrics(tmp_path, {"task": task.to_dict()})
    assert task_of_run(tmp_path) == task
    (tmp_path / "binary").mkdir()
    save_metrics(tmp_path / "binary", {"task": Task().to_dict()})
    assert task_of_run(tmp_path / "binary") == Task()
    with pytest.raises(HightprError, match="--critical"):  # nothing recorded: guessed never
        task_of_run(tmp_path / "nothing-recorded")


def test_task_refuses_heads_that_cannot_express_it():
    with pytest.raises(HightprError, match="data is binary"):
        Task().check_logits(10)
    with pytest.raises(HightprError, match="10 classes but the model 1 logits"):
        Task(10, (9,)).check_logits(1)
    Task(10, (9,)).check_logits(10)
    Task().check_logits(2)


# -- regularisers and tasks ------------------------------------------------------------------------
def test_binary_regularisers_refuse_multiclass_tasks():
    binary, multi = Task(), Task(10, (9,))
    assert ALMRegularizer(num_sample_ids=5).handles(binary)
    assert not ALMRegularizer(num_sample_ids=5).handles(multi)
    assert MultiClassALMRegularizer(num_sample_ids=5, critical_classes=[9]).handles(multi)
    assert NoRegularizer().handles(multi)
    assert RankReg(critical_classes=[9]).handles(multi) and not RankReg().handles(multi)


def test_reg_alm_on_long_tailed_data_names_the_multiclass_variants(train):
    r = train("dataset=tiny_cifar10_lt", "loss=ce", "reg=alm")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "reg=alm is binary" in line and "reg=alm_m1" in line and "reg=alm_m2" in line


# -- losses declare what they need -----------------------------------------------------------------
class NeedsIds(BaseLoss):
    data_facts = ("num_sample_ids",)
    required_sampler = "hightpr.data.samplers.DualBatchSampler"

    def __init__(self, num_sample_ids: int = 0, class_counts=None) -> None:
        super().__init__(class_counts)
        self.num_sample_ids = num_sample_ids


def test_a_loss_gets_exactly_the_data_facts_it_declares(monkeypatch):
    import tests.test_build as here

    facts = DataFacts([90, 10], 1234, Task())
    cfg = compose_config(["sampler=dual"])
    cfg.loss = {"_target_": f"{here.__name__}.NeedsIds"}
    loss = build_loss(cfg, facts)
    assert loss.num_sample_ids == 1234 and loss.class_counts is None  # class_counts not declared
    cfg.sampler = compose_config([]).sampler  # sampler=random: a factory function, not the class
    with pytest.raises(HightprError, match="add sampler=dual"):
        build_loss(cfg, facts)


# -- every key read or refused ---------------------------------------------------------------------
# components whose `_target_` takes **kwargs: `check_keys` cannot tell a key they ignore from one
# they read, so each is named here with its reason (a new one must be added with its own)
UNCHECKED_NODES = {
    "logger": "logger=wandb: WandbLogger hands any further key (group, tags) on to wandb.init (**kwargs)",
    "optimizer": "optimizer=pesg: LibAUC's PESG takes **kwargs",
}


def test_every_default_key_is_read(monkeypatch):
    import sys

    from omegaconf import DictConfig

    checks = sys.modules["hightpr.checks.keys"]
    unread: set[str] = set()
    # `check_keys` refuses each key nothing reads through `_refuse`: collect them all instead
    monkeypatch.setattr(checks, "_refuse", lambda path, key, valid: unread.add(f"{path}.{key}".lstrip(".")))
    check_keys(compose_config(["+model.widht=8", "+trainer.patiense=3", "+loss.margn=1"]))
    assert unread == {"model.widht", "trainer.patiense", "loss.margn"}  # the collector sees unread keys
    unread.clear()
    unchecked = set()
    for overrides in ([], ["reg=rankreg"], ["experiment=rankreg/melanoma"], ["dataset=volumes"],
                      ["logger=wandb"], ["sampler=dual", "loss=libauc_aucm", "optimizer=pesg"]):
        cfg = compose_config(overrides)
        check_keys(cfg)
        for group in cfg:
            if isinstance(cfg.get(group), DictConfig):
                unchecked |= {path for path, node in checks.target_nodes(str(group), cfg[group])
                              if checks.target_params(str(node._target_)) is None}
    assert unread == set()
    assert unchecked == set(UNCHECKED_NODES)


def test_trainer_arguments_are_lightnings_own_names():
    names = trainer_arguments()
    assert {"limit_train_batches", "fast_dev_run", "max_epochs", "batch_size", "patience"} <= set(names)
    assert "callbacks" not in names and "logger" not in names


def test_the_model_check_names_the_models_that_fit():
    model = resnet10(width=8)
    check_input(model, torch.zeros(1, 3, 32, 32), "resnet10", "tiny")
    with pytest.raises(HightprError, match=r"use model=cnn3d, cnn3d_dual"):
        check_input(model, torch.zeros(1, 1, 8, 8, 8), "resnet10", "adrenal3d")
    assert model.training  # the check leaves the model as it found it
