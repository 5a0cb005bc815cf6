"""Apply a deployed run or ensemble (`hightpr.deployed`) to image files: one row per image.

Inputs are image files, folders (every image under them, recursively, sorted) or CSVs with a
`path` column (relative paths from the CSV's folder). Images are decoded exactly as the run's
training cache decoded them (`decode_chw` at the run's `image_size`), in batches, on the device
given. The output CSV starts with `#` lines stating the threshold, its rule and promise, then
`path,score,decision`; it is written to a temporary file and renamed, so a failure writes nothing.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from hightpr.data.image_files import IMAGE_SUFFIXES, decode_chw
from hightpr.data.image_table import image_files
from hightpr.deployed import Deployed
from hightpr.errors import HightprError

PROGRESS_FROM = 512  # images: fewer finish before a bar would help


def input_files(inputs: Sequence[Path | str]) -> list[Path]:
    """The image files named by files, folders and CSVs of paths, in the order given."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = image_files(item)
            if not found:
                raise HightprError(f"{item} holds no image ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif item.suffix.lower() == ".csv" and item.is_file():
            try:
                table = pd.read_csv(item, dtype=str, keep_default_na=False, comment=None)
            except (OSError, ValueError, pd.errors.ParserError) as err:
                raise HightprError(f"{item} is not a readable csv ({err})") from err
            if "path" not in table:
                raise HightprError(f"{item} has no `path` column (it has {list(table.columns)})")
            for line, value in enumerate(table["path"], start=2):
                path = Path(value) if Path(value).is_absolute() else item.parent / value
                if not value or not path.is_file():
                    raise HightprError(f"{item} line {line}: {path} does not exist")
                files.append(path)
        elif item.is_file():
            files.append(item)
        else:
            raise HightprError(f"{item}: no such file or folder")
    if not files:
        raise HightprError("no input images: give image files, folders or a CSV with a path column")
    return files


def predict_scores(deployed: Deployed, files: Sequence[Path], batch_size: int = 64,
                   device: torch.device | str = "cpu", progress: bool | None = None) -> np.ndarray:
    """Scores of `files` in order, decoded and batched; a bar on long inputs (`progress` None: on a
    terminal from PROGRESS_FROM images)."""
    if batch_size < 1:
        raise HightprError(f"--batch-size must be >= 1, got {batch_size}")
    deployed.to(device)
    show = progress if progress is not None else len(files) >= PROGRESS_FROM and sys.stderr.isatty()
    out = []
    with tqdm(total=len(files), unit="img", disable=not show, file=sys.stderr) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            batch = torch.from_numpy(np.stack([decode_chw(f, deployed.image_size) for f in chunk]))
            out.append(deployed.scores(batch.to(device)))
            bar.update(len(chunk))
    return np.concatenate(out)


def write_predictions(out: Path, files: Sequence[Path], scores: np.ndarray, deployed: Deployed) -> Path:
    """`# ` lines (the source and its threshold), then path,score,decision (1: score >= threshold),
    written atomically."""
    out = Path(out)
    threshold = deployed.threshold.value
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            for line in header(deployed):
                f.write(f"# {line}\n")
            writer = csv.writer(f)
            writer.writerow(["path", "score", "decision"])
            for path, score in zip(files, scores, strict=True):
                writer.writerow([str(path), repr(float(score)), int(score >= threshold)])
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise HightprError(f"cannot write {out} ({err}); give --out a writable path") from err
    os.replace(tmp, out)
    return out


def header(deployed: Deployed) -> list[str]:
    """What the predictions rest on: the run or ensemble, and its threshold with rule and promise."""
    n = len(deployed.runs)
    single = n == 1 and deployed.runs[0] == deployed.path
    what = "run" if single else f"ensemble of {n} members (logits averaged)"
    return [f"model: {deployed.path} ({what})", *deployed.threshold.describe()]


def read_predictions(path: Path) -> pd.DataFrame:
    """A predictions file back as a table (its leading `# ` lines skipped)."""
    skip = 0
    with open(path) as f:
        for line in f:
            if not line.startswith("# "):
                break
            skip += 1
    return pd.read_csv(path, skiprows=skip)
