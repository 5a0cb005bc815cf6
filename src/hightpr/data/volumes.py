"""MRI-style volumes with two modalities (ALM-v1 §5: 300 train / 100 test subjects, 1:2 or 1:8).

Layout read (`root`):

    labels.csv        subject, label (0/1), split (train | test)
    <subject>.npz     dwi [b-values, D, H, W] (diffusion), t2 [1, D, H, W] (or [D, H, W])

Every modality is resampled (trilinear) to one grid and z-scored per subject and channel (MRI
intensities have no absolute scale), then both are stacked into ONE tensor [C_dwi + C_t2, D, H, W]
held in memory as float16. The dual-path model splits the channels again (`model.in_channels`).
One tensor rather than a pair keeps batch gathers, device-side flips and RankReg's buffer
(which concatenates `x`) unchanged; the cost is that both modalities share one grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from hightpr.data.augment import random_flips
from hightpr.data.base import TensorDataModule
from hightpr.data.splits import member_split, subsample_positives
from hightpr.data.tensors import IndexedTensors
from hightpr.errors import DataMissingError, HightprError


def _modality(path: Path, arrays, key: str) -> torch.Tensor:
    if key not in arrays:
        raise DataMissingError(f"{path} has no array {key!r} (has {list(arrays.keys())})")
    v = torch.from_numpy(np.asarray(arrays[key], dtype=np.float32))
    if v.ndim == 3:
        v = v[None]
    if v.ndim != 4:
        raise DataMissingError(f"{path}: {key} must be [C, D, H, W] or [D, H, W], got {tuple(v.shape)}")
    return v


def _standardise(v: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Resample [C, D, H, W] to `grid`, z-score each channel over its volume, clip at +-6."""
    if tuple(v.shape[1:]) != grid:
        v = F.interpolate(v[None], size=grid, mode="trilinear", align_corners=False)[0]
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    std = v.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return ((v - mean) / std).clamp(-6, 6)


def read_labels(root: Path) -> pd.DataFrame:
    csv = root / "labels.csv"
    if not csv.is_file():
        raise DataMissingError(
            f"no volumes folder at {root} (looked for labels.csv). Write the synthetic one with "
            f"`python -m hightpr.data.prepare synthetic-mri --data-dir {root.parent}`, or set dataset.root "
            "to a folder of <subject>.npz + labels.csv (subject, label, split)")
    table = pd.read_csv(csv, dtype={"subject": str})
    missing = {"subject", "label", "split"} - set(table.columns)
    if missing:
        raise DataMissingError(f"{csv} lacks the column(s) {sorted(missing)} (needs subject, label, split)")
    if not table["label"].isin([0, 1]).all() or not table["split"].isin(["train", "test"]).all():
        raise DataMissingError(f"{csv}: label must be 0/1 and split train/test")
    if table["subject"].duplicated().any():
        raise DataMissingError(f"{csv}: subjects must be unique")
    for split in ("train", "test"):
        if table.loc[table["split"] == split, "label"].nunique() != 2:
            raise DataMissingError(f"{csv}: the {split} cohort needs positive and negative subjects")
    return table.reset_index(drop=True)


@lru_cache(maxsize=2)
def load_volumes(root: str, modalities: tuple[str, ...], grid: tuple[int, int, int] | None):
    """(x [N, C, D, H, W] float16, labels [N], is_test [N] bool, channels per modality), once per process."""
    table = read_labels(Path(root))
    volumes, channels = [], None
    for subject in table["subject"]:
        path = Path(root) / f"{subject}.npz"
        try:
            with np.load(path) as z:
                parts = [_modality(path, z, key) for key in modalities]
        except (OSError, ValueError, EOFError) as err:
            raise DataMissingError(f"{path} is missing or corrupt ({err})") from err
        if grid is None:
            grid = tuple(parts[-1].shape[1:])  # default: the last modality's grid (T2: the finest)
        counts = tuple(p.shape[0] for p in parts)
        if channels is None:
            channels = counts
        elif counts != channels:
            raise DataMissingError(f"{path}: channels {counts} differ from the first subject's {channels}")
        volumes.append(torch.cat([_standardise(p, grid) for p in parts]).half())
    y = torch.tensor(table["label"].to_numpy(dtype=np.int64))
    is_test = torch.tensor((table["split"] == "test").to_numpy(dtype=bool))
    return torch.stack(volumes), y, is_test, channels


class VolumesDataModule(TensorDataModule):
    """Two-modality subjects: a train cohort split per member, a fixed test cohort.

    Member `seed` draws its own stratified (1 - val_fraction) / val_fraction train/val split of the
    train cohort (ALM-v1 §5.2: 20% as validation, 10 members). `positive_ratio` subsamples the
    positives of both cohorts (fixed by `split_seed`) to induce 1:ratio (ALM-v1 induced 1:8 from 1:2).
    Sample id = row of labels.csv. Flips along `flip_dims` (default left-right only: anatomy).
    """

    def __init__(self, root: str | Path, modalities: Sequence[str] = ("dwi", "t2"),
                 grid: Sequence[int] | None = None, positive_ratio: float | None = None, seed: int = 1,
                 split_seed: int = 0, val_fraction: float = 0.2, flip_dims: Sequence[int] = (-1,),
                 batch_size: int = 64, eval_batch_size: int = 1000, augment: bool = True) -> None:
        super().__init__(batch_size, eval_batch_size, augment)
        if grid is not None and len(grid) != 3:
            raise HightprError(f"dataset.grid must be [D, H, W] or null, got {list(grid)}")
        self.root, self.modalities = str(root), tuple(modalities)
        self.grid = tuple(int(g) for g in grid) if grid is not None else None
        self.positive_ratio, self.seed, self.split_seed = positive_ratio, int(seed), int(split_seed)
        self.val_fraction, self.flip_dims = val_fraction, tuple(flip_dims)
        self.channels: tuple[int, ...] = ()

    def build(self) -> None:
        x, y, is_test, self.channels = load_volumes(self.root, self.modalities, self.grid)
        rows = torch.arange(len(y))
        pool = subsample_positives(y, rows[~is_test], self.positive_ratio, self.split_seed * 1000 + 1)
        test = subsample_positives(y, rows[is_test], self.positive_ratio, self.split_seed * 1000 + 2)
        tr, va = member_split(y[pool], self.seed, self.val_fraction)
        for name, idx in (("train", pool[tr]), ("val", pool[va]), ("test", test)):
            idx = idx.sort().values
            self.splits[name] = IndexedTensors(x[idx].contiguous(), y[idx].float(), idx)
        self.num_sample_ids = len(y)

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        return random_flips(x, self.flip_dims)
