"""`dataset=images`: a binary classifier on the user's own images (class folders or a CSV).

The table (`hightpr.data.image_table`) gives path, label and maybe split; the split is the CSV's
`split` column when present, else a stratified, seeded train/val/test split (`split`, `split_seed`;
the same for every seed and member, so an ensemble shares its validation set). Images are decoded
once into one resized uint8 cache (`hightpr.data.image_files`, as Melanoma's) under `cache_dir`,
named by what it holds, so every run of a sweep shares it. A run records its samples in
`samples.csv` (path, label, split, id): given back as `dataset.csv`, it gives the same split and ids.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hightpr.data.augment import IMAGENET_MEAN, IMAGENET_STD, normalise, random_crop_flip, random_flips
from hightpr.data.base import TensorDataModule
from hightpr.data.image_files import cached_images
from hightpr.data.image_table import SAMPLES, SPLITS, binary_labels, check_splits, csv_table, folder_table
from hightpr.data.splits import stratified_group_split
from hightpr.data.tensors import IndexedRows
from hightpr.errors import HightprError


def cache_key(paths: Sequence[str], size: int) -> dict:
    """What a cache holds: the files (path, byte size, modification time) and the image size."""
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return {"n": len(paths), "size": int(size), "files_sha1": h.hexdigest()}


class ImagesDataModule(TensorDataModule):
    """Images of `positive` (label 1) vs every other class, resized to `image_size`, ImageNet-normalised.

    Augmentation (training, on device): random crop after `crop_padding` px zero padding and flips
    along `flip_dims` (-1: horizontal; add -2 where images have no preferred orientation).
    """

    reads_image_files = True  # `hightpr-predict` may apply its runs to image files (`decode_chw`)

    def __init__(self, root: str | None = None, csv: str | None = None, positive: str | None = None,
                 classes: Sequence[str] | None = None, split: Sequence[float] = (0.7, 0.1, 0.2),
                 split_seed: int = 0, image_size: int = 224, crop_padding: int = 16,
                 flip_dims: Sequence[int] = (-1,), cache_dir: str | None = None,
                 decode_workers: int | None = None, seed: int = 1, batch_size: int = 64,
                 eval_batch_size: int = 128, augment: bool = True) -> None:
        super().__init__(batch_size, eval_batch_size, augment)
        if len(split) != 3:
            raise HightprError(f"dataset.split must be [train, val, test] fractions, got {list(split)}")
        self.root, self.csv = (Path(root) if root else None), (Path(csv) if csv else None)
        self.positive = None if positive is None else str(positive)
        self.classes = None if classes is None else [str(c) for c in classes]
        self.fractions, self.split_seed = tuple(float(f) for f in split), int(split_seed)
        self.image_size, self.crop_padding = int(image_size), int(crop_padding)
        self.flip_dims = tuple(flip_dims)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.decode_workers, self.seed = decode_workers, seed
        self.table: pd.DataFrame | None = None

    @property
    def source(self) -> str:
        return f"dataset.csv={self.csv}" if self.csv else f"dataset.root={self.root}"

    def read_table(self) -> pd.DataFrame:
        """path, label, split, target of every image, in sample-id order (checked)."""
        if self.root is None and self.csv is None:
            raise HightprError("dataset=images needs dataset.root=DIR (one folder per class) or "
                               "dataset.csv=FILE (columns path,label[,split])")
        table = csv_table(self.csv, self.root) if self.csv else folder_table(self.root)
        classes = self.classes if self.classes is not None or self.csv else sorted(table["label"].unique())
        table["target"] = binary_labels(table, self.positive, classes, self.source)
        if "split" not in table:
            parts = stratified_group_split(torch.tensor(table["target"].to_numpy()), self.fractions,
                                           self.split_seed)
            split = np.empty(len(table), dtype=object)
            for name, idx in zip(SPLITS, parts, strict=True):
                split[idx.numpy()] = name
            table["split"] = split
        parts = {name: np.flatnonzero(table["split"].to_numpy() == name) for name in SPLITS}
        check_splits(table["target"].to_numpy(), parts, self.source)
        return table

    def build(self) -> None:
        table = self.table = self.read_table()
        paths = list(table["path"])
        key = cache_key(paths, self.image_size)
        folder = self.cache_dir or (self.csv.parent if self.csv else self.root) / ".hightpr_cache"
        raw = folder / f"images_{self.image_size}_{key['files_sha1'][:16]}.u8"
        x = cached_images(paths, self.image_size, raw, key, self.decode_workers)
        y = torch.tensor(table["target"].to_numpy(dtype=np.int64))
        self.num_sample_ids = len(table)
        for name in SPLITS:
            rows = torch.as_tensor(np.flatnonzero(table["split"].to_numpy() == name))
            self.splits[name] = IndexedRows(x, rows, y[rows].float(), rows.clone())

    def record(self, run_dir: Path) -> Path:
        """`samples.csv` in the run dir: path, label, split, id of every image (a valid dataset.csv)."""
        self.setup()
        path = Path(run_dir) / SAMPLES
        tmp = path.with_suffix(".csv.tmp")
        out = self.table[["path", "label", "split"]].assign(id=np.arange(len(self.table)))
        out.to_csv(tmp, index=False)
        os.replace(tmp, path)
        return path

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        x = random_crop_flip(x, padding=self.crop_padding, flip=False)
        return random_flips(x, self.flip_dims)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x, IMAGENET_MEAN, IMAGENET_STD)
