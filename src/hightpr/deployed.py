"""A finished run or ensemble as a model in use: its networks, its preprocessing, its threshold.

Everything comes from the folder, nothing is re-typed: the networks from each run's best checkpoint
and `config_resolved.yaml` (model and loss settings give the head), the preprocessing from the
run's dataset (its decode size and its `to_input`), and the deployed threshold from `metrics.json`'s
operating point of the run's rule (`evaluation.threshold_rule`, `evaluation.delta`) at a target TPR.
An ensemble's members' logits are averaged as its evaluation averages them (`average_logits`),
then scored by the task's one rule (`Task.scores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from hightpr.build import instantiate_node
from hightpr.ensemble import average_logits, task_of_run
from hightpr.errors import HightprError
from hightpr.metrics.thresholds import RULES
from hightpr.runs import (
    checkpoint_dir,
    config_path,
    finished_members,
    is_finished,
    metrics_path,
    read_metrics,
)
from hightpr.task import Task

EXCHANGEABLE = ", if deployment images are exchangeable with the validation images"


@dataclass(frozen=True)
class Threshold:
    """The decision rule: positive when score >= value; what it promises and under which rule."""

    value: float
    rule: str
    target_tpr: float | None
    delta: float | None
    overridden: bool = False

    def promise(self) -> str | None:
        """The rule's promise with its target TPR and delta filled in; None when overridden."""
        if self.overridden:
            return None
        rule = RULES[self.rule]
        promise = rule.promise.replace("target", f"{self.target_tpr:g}")
        if rule.uses_delta:
            promise = promise.replace("delta", f"{self.delta:g}")
        return promise

    def describe(self) -> list[str]:
        """The lines a prediction file and its command print about the threshold."""
        if self.overridden:
            return [f"threshold {self.value:.9g} given by --threshold: no promise on the TPR "
                    "(the run's rule and validation set do not back it)"]
        rule = RULES[self.rule]
        return [f"threshold {self.value:.9g}: rule {self.rule} ({rule.title}), target TPR "
                f"{self.target_tpr:g}" + (f", delta {self.delta:g}" if rule.uses_delta else ""),
                f"promise: {self.promise()}" + ("" if self.rule == "quantile" else EXCHANGEABLE),
                "decision 1 = positive (score >= threshold)"]


@dataclass
class Deployed:
    """The networks of a run (one) or an ensemble (its finished members), with what applies them."""

    path: Path
    runs: list[Path]
    networks: list[torch.nn.Module]
    datamodule: object  # the run's DataModule, not set up: `image_size` and `to_input`
    task: Task
    threshold: Threshold

    @property
    def image_size(self) -> int:
        return int(self.datamodule.image_size)

    def to(self, device: torch.device | str) -> Deployed:
        self.networks = [n.to(device) for n in self.networks]
        return self

    @torch.inference_mode()
    def scores(self, images: torch.Tensor) -> np.ndarray:
        """Scores of a uint8 batch [B,3,S,S]: each network's logits, averaged, scored by the task."""
        x = self.datamodule.to_input(images)
        outputs = [{"ids": np.arange(len(x)), "labels": np.zeros(len(x)),
                    "logits": net(x).float().cpu().numpy()} for net in self.networks]
        mean = average_logits(outputs, [r.name for r in self.runs])["logits"].astype(np.float32)
        return self.task.scores(mean)


def runs_of(path: Path) -> list[Path]:
    """The run dirs behind a folder: itself (a finished run) or an ensemble's finished members."""
    path = Path(path)
    if not path.is_dir():
        raise HightprError(f"{path}: no such folder; give a finished run or ensemble folder")
    members = finished_members(path)
    if members:
        return list(members.values())
    if is_finished(path):
        return [path]
    raise HightprError(f"{path} holds no finished run (metrics.json, logits_test.npz) nor finished "
                       "members (member_XX/): give a run or ensemble folder whose training ended")


def run_config(run_dir: Path) -> DictConfig:
    path = config_path(run_dir)
    if not path.is_file():
        raise HightprError(f"{path} not found: the folder is not a run written by hightpr")
    return OmegaConf.load(path)


def load_network(run_dir: Path, task: Task) -> torch.nn.Module:
    """The run's model with its best checkpoint's weights, in eval mode on the CPU."""
    cfg = run_config(run_dir)
    best = read_metrics(run_dir).get("best_checkpoint")
    ckpt = checkpoint_dir(run_dir) / Path(best).name if best else None
    if ckpt is None or not ckpt.is_file():
        raise HightprError(f"{run_dir}: its best checkpoint {ckpt or '(none recorded)'} is missing; "
                           "re-run that run")
    loss_cls = get_class(str(cfg.loss._target_))
    node = cfg.model.copy()
    with open_dict(node):
        if "pretrained_path" in node:
            node.pretrained_path = None  # the checkpoint holds every weight
        node.pop("num_logits", None)
    num_logits = cfg.model.get("num_logits") or loss_cls.logits_for(task.num_classes)
    net = instantiate_node(node, "model", num_logits=num_logits, normed_head=loss_cls.normed_head)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    return net.eval()


def deployed_threshold(path: Path, first_run: Path, tpr: float, override: float | None) -> Threshold:
    """The run's (or ensemble's) threshold of its own rule at target `tpr`, or `override`."""
    settings = run_config(first_run).get("evaluation") or {}
    rule, delta = str(settings.get("threshold_rule", "np")), settings.get("delta")
    if override is not None:
        return Threshold(float(override), rule, None, None, overridden=True)
    points = read_metrics(path).get("operating_point") if metrics_path(path).is_file() else None
    if not points:
        raise HightprError(f"{metrics_path(path)} records no operating point (an ensemble whose members do "
                           "not share validation, or a multi-class run): pass --threshold (no promise)")
    point = points.get(f"{round(tpr * 100):d}tpr")
    if point is None:
        targets = ", ".join(f"{p['target_tpr']:g}" for p in points.values())
        raise HightprError(f"{path} was evaluated at target TPRs {targets}, not {tpr:g}: pass --tpr one of "
                           "them (or train with evaluation.operating_tprs=[...])")
    value = point.get(f"{rule}_threshold")
    if value is None:
        note = point.get(f"{rule}_note", "no threshold recorded")
        raise HightprError(f"{path}: no {rule} threshold at TPR {tpr:g} ({note}): pass a lower --tpr, "
                           "or --threshold (no promise)")
    return Threshold(float(value), rule, float(point["target_tpr"]), None if delta is None else float(delta))


def load_deployed(path: Path, tpr: float = 0.95, threshold: float | None = None) -> Deployed:
    """A finished run or ensemble folder, ready to score images."""
    path = Path(path)
    runs = runs_of(path)
    task = task_of_run(runs[0])
    if not task.binary:
        raise HightprError(f"{path} is a multi-class run: hightpr-predict and hightpr-export apply "
                           "binary runs")
    cfg = run_config(runs[0])
    datamodule = instantiate_node(cfg.dataset, "dataset")
    if not getattr(datamodule, "reads_image_files", False):
        raise HightprError(f"{path} was trained on {cfg.dataset._target_}, not on image files: "
                           "hightpr-predict and hightpr-export apply runs of dataset=images (or melanoma)")
    networks = [load_network(r, task) for r in runs]
    return Deployed(path, runs, networks, datamodule, task, deployed_threshold(path, runs[0], tpr, threshold))
