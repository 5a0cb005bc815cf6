"""A finished run or ensemble as one file that plain PyTorch loads: `torch.export`'s `.pt2`.

The exported program is the whole model in use (`ScoringModel`): a uint8 batch [B,3,S,S] of
images decoded as hightpr decodes them (`hightpr.data.image_files.decode_image`: RGB, resized to
S x S), the run's own normalisation (its DataModule's `to_input`), every member network, the mean
of the members' logits (as `hightpr.ensemble.average_logits` averages them), the task's binary
score (`hightpr.task.Task.score`), and the decision at the deployed threshold. Its `forward`
returns `(scores, decisions)`: float32 [B] and bool [B] (score >= threshold). The batch size is
dynamic; the image size is fixed.

What the numbers mean travels inside the file: the threshold (also a float64 buffer of the
program, `threshold`), its rule, target TPR, delta and promise, the image size and the decode
recipe, as JSON in the archive's extra file `hightpr.json` (`torch.export.load(path,
extra_files={"hightpr.json": ""})` fills it in; `read_metadata` reads it with the zipfile module).
Before anything is written the program is checked against hightpr's own scoring of a batch
(`Deployed.scores`); the file is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
import torch
from torch import nn

from hightpr.deployed import Deployed, load_deployed
from hightpr.errors import HightprError
from hightpr.metrics.thresholds import RULES

FORMAT = "hightpr-export/1"
METADATA = "hightpr.json"  # the extra file of the .pt2 archive that holds `metadata(...)`
SUFFIX = ".pt2"
CHECK_TOLERANCE = 1e-5  # max |score difference| between the loaded file and hightpr's own scoring
DECODE_RECIPE = (
    "PIL: img = Image.open(path); img.draft('RGB', ({S}, {S})); img = img.convert('RGB'); "
    "if img.size != ({S}, {S}): img = img.resize(({S}, {S}), Image.BILINEAR, reducing_gap=None); "
    "numpy uint8 [{S},{S},3] -> transposed to [3,{S},{S}]; stacked to [B,3,{S},{S}] "
    "(hightpr.data.image_files.decode_image)")


class ScoringModel(nn.Module):
    """uint8 images [B,3,S,S] -> (scores float32 [B], decisions bool [B]): normalise, every member's
    logits, their mean, the binary score, score >= threshold."""

    def __init__(self, networks: Sequence[nn.Module], to_input: Callable[[torch.Tensor], torch.Tensor],
                 score: Callable[[torch.Tensor], torch.Tensor], threshold: float) -> None:
        super().__init__()
        self.members = nn.ModuleList(networks)
        self.to_input = to_input
        self.score = score
        self.register_buffer("threshold", torch.tensor(float(threshold), dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, decisions) of a uint8 batch [B,3,S,S]."""
        x = self.to_input(images)
        logits = torch.stack([net(x).float() for net in self.members]).mean(dim=0)
        scores = self.score(logits)
        return scores, scores.double() >= self.threshold


def scoring_model(deployed: Deployed) -> ScoringModel:
    """The deployed run or ensemble as one module, in eval mode on the CPU."""
    deployed.to("cpu")
    model = ScoringModel(deployed.networks, deployed.datamodule.to_input, deployed.task.score,
                         deployed.threshold.value)
    return model.eval()


def metadata(deployed: Deployed) -> dict:
    """What the exported file records of itself: input, preprocessing, members, threshold and promise."""
    t = deployed.threshold
    rule = None if t.overridden else RULES[t.rule]
    size = deployed.image_size
    single = len(deployed.runs) == 1 and deployed.runs[0] == deployed.path
    dm = type(deployed.datamodule)
    return {
        "format": FORMAT,
        "model": deployed.path.name,
        "kind": "run" if single else "ensemble",
        "members": [deployed.path.name] if single else [r.name for r in deployed.runs],
        "input": {"dtype": "uint8", "shape": ["B", 3, size, size], "channels": "RGB", "layout": "NCHW",
                  "range": "0..255"},
        "image_size": size,
        "decode": DECODE_RECIPE.format(S=size),
        "pillow": PIL.__version__,  # of the exporting environment: the decode's resize is Pillow's
        "preprocessing": f"{dm.__module__}.{dm.__qualname__}.to_input (inside the program)",
        "score": "mean of the members' logits, then the binary score (the logit of a 1-logit head, "
                 "z1 - z0 of a 2-logit head)",
        "outputs": ["scores: float32 [B]", "decisions: bool [B], True when score >= threshold"],
        "threshold": t.value,
        "rule": None if rule is None else rule.name,
        "rule_title": "given by --threshold" if rule is None else rule.title,
        "target_tpr": t.target_tpr,
        "delta": t.delta if rule is not None and rule.uses_delta else None,
        "promise": t.promise(),
        "assumptions": None if rule is None else (
            "deployment images exchangeable with the validation images; the validation set also chose "
            "the epoch, so the promise is slightly optimistic"),
        "threshold_text": t.describe(),
        "torch": torch.__version__,
    }


def _batch(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def _export(model: ScoringModel, size: int) -> torch.export.ExportedProgram:
    """The traced program, its batch dimension dynamic (traced on 2 images, valid from 1)."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        try:
            return torch.export.export(model, (_batch(2, size, 0),), dynamic_shapes={"images": {0: batch}})
        except Exception as err:  # noqa: BLE001 - any tracing failure is reported with its cause
            first = str(err).splitlines()[0] if str(err) else ""
            raise HightprError(f"torch.export could not trace this model ({type(err).__name__}: "
                               f"{first})") from err


def _check(program: torch.export.ExportedProgram, deployed: Deployed) -> float:
    """Max |score difference| of the program against hightpr's own scoring (`Deployed.scores`) of a
    random batch of another size than the traced one; refused above CHECK_TOLERANCE or where a
    decision differs."""
    batch = _batch(5, deployed.image_size, 1)
    with torch.no_grad():
        scores, decisions = program.module()(batch)
    expected = deployed.scores(batch)
    diff = float(np.max(np.abs(scores.numpy() - expected)))
    if not diff <= CHECK_TOLERANCE:
        raise HightprError(f"the exported program scores differently from the run (max |difference| "
                           f"{diff:.3g} > {CHECK_TOLERANCE:g}); nothing written")
    if not torch.equal(decisions, torch.from_numpy(expected >= deployed.threshold.value)):
        raise HightprError("the exported program decides differently from the run; nothing written")
    return diff


@dataclass(frozen=True)
class Exported:
    """What `export` wrote: the file, its metadata and the check's max |score difference|."""

    path: Path
    metadata: dict
    check_diff: float


def check_out(out: Path) -> Path:
    """A writable `.pt2` path whose folder exists; refused with one line otherwise."""
    out = Path(out)
    if out.suffix != SUFFIX:
        raise HightprError(f"--out {out}: an exported program is a {SUFFIX} file (torch.export.save); "
                           f"name it e.g. model{SUFFIX}")
    if out.is_dir():
        raise HightprError(f"--out {out} is a folder; give a file name ending in {SUFFIX}")
    if not out.parent.is_dir():
        raise HightprError(f"--out {out}: no folder {out.parent}; create it first")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise HightprError(f"--out {out}: not writable; give --out a writable path")
    return out


def export(path: Path, out: Path, tpr: float = 0.95, threshold: float | None = None) -> Exported:
    """Export a finished run or ensemble folder to `out` (.pt2), checked, then written atomically."""
    out = check_out(out)
    deployed = load_deployed(Path(path), tpr, threshold)
    meta = metadata(deployed)
    program = _export(scoring_model(deployed), deployed.image_size)
    diff = _check(program, deployed)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{SUFFIX}")
    try:
        with open(tmp, "wb") as f:
            torch.export.save(program, f, extra_files={METADATA: json.dumps(meta, indent=1)})
        os.replace(tmp, out)
    except OSError as err:
        raise HightprError(f"cannot write {out} ({err}); give --out a writable path") from err
    finally:
        tmp.unlink(missing_ok=True)
    return Exported(out, meta, diff)


def read_metadata(path: Path) -> dict:
    """The metadata JSON inside an exported file (no torch needed: the archive's extra file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith(f"extra/{METADATA}"))
            return json.loads(archive.read(name))
    except (OSError, zipfile.BadZipFile, StopIteration, ValueError) as err:
        raise HightprError(f"{path}: not a file written by hightpr-export ({err})") from err
