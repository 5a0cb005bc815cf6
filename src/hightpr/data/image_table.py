"""The user's own images as one table (path, label, split): class folders or a CSV, checked.

Two layouts (`dataset=images`, docs/datasets.md 'Your own images'):

    ROOT/<class>/.../*.png|jpg|...    one folder per class; `positive` names the critical one
    FILE.csv: path,label[,split]      relative paths from `root` if given, else from the CSV's folder

A row's sample id is its position: folders sorted by class then path, a CSV in its own order.
Every problem found here is one error naming the file, row or value, before anything is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hightpr.data.image_files import IMAGE_SUFFIXES
from hightpr.errors import DataMissingError, HightprError

SPLITS = ("train", "val", "test")
SAMPLES = "samples.csv"  # what a run records of its data: path, label, split, id (a valid dataset.csv)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(folder: Path) -> list[Path]:
    """Every image file under `folder` (recursive, hidden names skipped), sorted."""
    return sorted(p for p in Path(folder).rglob("*") if _is_image(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def folder_table(root: Path) -> pd.DataFrame:
    """path (absolute), label (the class folder's name) of every image under `root/<class>/`."""
    root = Path(root)
    if not root.is_dir():
        raise DataMissingError(f"dataset.root={root}: no such folder (one subfolder of images per class)")
    rows = [(str(p.resolve()), d.name) for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") for p in image_files(d)]
    if not rows:
        raise DataMissingError(f"dataset.root={root} holds no class folder with images "
                               f"({', '.join(IMAGE_SUFFIXES)}): put each class's images in ROOT/<class>/")
    return pd.DataFrame(rows, columns=["path", "label"])


def checked_csv(csv: Path, required: set[str], layout: str, **read) -> pd.DataFrame:
    """A CSV read with pandas (`read`: its options) that has the `required` columns; one clear
    error naming the file otherwise (`layout` says what the file should hold)."""
    try:
        table = pd.read_csv(csv, **read)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise DataMissingError(f"{csv} is not a readable csv ({err})") from err
    missing = required - set(table.columns)
    if missing:
        raise DataMissingError(f"{csv} lacks the column(s) {sorted(missing)}; {layout}; it has "
                               f"{list(table.columns)}")
    return table


def csv_table(csv: Path, root: Path | None) -> pd.DataFrame:
    """path (absolute), label [, split] of a CSV; every path must exist."""
    csv = Path(csv)
    if not csv.is_file():
        raise DataMissingError(f"dataset.csv={csv}: no such file (columns path,label[,split])")
    table = checked_csv(csv, {"path", "label"}, "it needs path,label[,split]", dtype=str,
                        keep_default_na=False)
    if len(table) == 0:
        raise DataMissingError(f"{csv} lists no images")
    base = Path(root) if root is not None else csv.parent
    paths = []
    for row, value in enumerate(table["path"].str.strip(), start=2):  # line 1 is the header
        path = Path(value) if Path(value).is_absolute() else base / value
        if not value or not path.is_file():
            raise DataMissingError(f"{csv} line {row}: {path} does not exist")
        paths.append(str(path.resolve()))
    out = pd.DataFrame({"path": paths, "label": table["label"].str.strip()})
    if out["path"].duplicated().any():
        raise DataMissingError(f"{csv}: {out['path'][out['path'].duplicated()].iloc[0]} is listed twice")
    if "split" in table:
        out["split"] = table["split"].str.strip()
        bad = out.index[~out["split"].isin(SPLITS)]
        if len(bad):
            raise DataMissingError(f"{csv} line {bad[0] + 2}: split {out['split'][bad[0]]!r} is not one of "
                                   f"{', '.join(SPLITS)}")
    return out


def binary_labels(table: pd.DataFrame, positive: str | None, classes: Sequence[str] | None,
                  source: str) -> np.ndarray:
    """0/1 per row: 1 for the `positive` class. Every label must be one of `classes` (default: the
    labels found, which must then be two: a third label, say a typo, would silently be a negative)."""
    found = sorted(table["label"].unique())
    if classes is not None:
        classes = [str(c) for c in classes]
        bad = table.index[~table["label"].isin(classes)]
        if len(bad):
            raise DataMissingError(f"{source}: label {table['label'][bad[0]]!r} ({table['path'][bad[0]]}) is "
                                   f"not one of the classes {classes} (dataset.classes)")
    elif len(found) != 2:
        raise HightprError(f"{source} has the labels {found}: list every class with dataset.classes=[...] "
                           "when there are more than two (the others than dataset.positive are negatives)")
    names = classes or found
    if positive is None or str(positive) not in names:
        raise HightprError(f"name the critical class among {names} with dataset.positive=NAME"
                           + ("" if positive is None else f" (got {positive!r})"))
    return (table["label"] == str(positive)).to_numpy(dtype=np.int64)


def check_splits(y: np.ndarray, parts: dict[str, np.ndarray], source: str) -> None:
    """Every split needs positives and negatives (validation picks the epoch and the threshold)."""
    for name in SPLITS:
        labels = y[parts[name]]
        for value, what in ((1, "positives"), (0, "negatives")):
            if not (labels == value).any():
                raise HightprError(f"{source}: the {name} split has no {what} ({len(labels)} images); "
                                   "add images or change dataset.split / the split column")
