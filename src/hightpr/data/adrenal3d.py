"""AdrenalMNIST3D (MedMNIST v2): a real, small, binary 3D set (adrenal mass vs normal), 28^3 or 64^3.

Prepared layout: `<data_dir>/medmnist3d/adrenalmnist3d.npz` (28^3) and `adrenalmnist3d_64.npz`,
the official files with keys `{train,val,test}_{images,labels}` and the official splits.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from hightpr.data.augment import random_flips
from hightpr.data.base import TensorDataModule
from hightpr.data.cifar_files import md5
from hightpr.data.splits import member_split
from hightpr.data.tensors import IndexedTensors
from hightpr.errors import DataMissingError, HightprError

ADRENAL_DIR = "medmnist3d"
FILES = {28: "adrenalmnist3d.npz", 64: "adrenalmnist3d_64.npz"}
OFFICIAL_MD5 = {28: "bbd3c5a5576322bc4cdfea780653b1ce", 64: "17721accfe9fb005146a47d33bc54b2f"}
SPLITS = ("train", "val", "test")


def check_npz(path: Path, size: int) -> dict[str, tuple[int, int]]:
    """Structure of one AdrenalMNIST3D file; returns {split: (n, n_positive)} or raises."""
    try:
        with np.load(path) as z:
            arrays = {key: z[key] for key in z.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataMissingError(f"{path} is not a readable npz ({err})") from err
    counts = {}
    for split in SPLITS:
        x, y = arrays.get(f"{split}_images"), arrays.get(f"{split}_labels")
        if x is None or y is None:
            raise DataMissingError(f"{path} lacks {split}_images / {split}_labels: not AdrenalMNIST3D")
        if x.dtype != np.uint8 or x.shape[1:] != (size,) * 3 or len(y) != len(x):
            raise DataMissingError(f"{path}: {split}_images is {x.dtype}{x.shape}, expected uint8 "
                                   f"[N,{size},{size},{size}] with {len(y)} labels")
        y = y.reshape(-1)
        if not np.isin(y, (0, 1)).all() or len(np.unique(y)) != 2:
            raise DataMissingError(f"{path}: {split}_labels must be binary with both classes present")
        counts[split] = (len(y), int(y.sum()))
    return counts


def prepare_adrenal3d(data_dir: Path, source: Path | None, force: bool = False) -> str:
    """Copy and verify the AdrenalMNIST3D npz files found in `source` into `<data_dir>/medmnist3d`."""
    target = Path(data_dir) / ADRENAL_DIR
    if source is None:
        prepared = {size: target / name for size, name in FILES.items() if (target / name).is_file()}
        if not prepared or force:
            raise HightprError("no AdrenalMNIST3D source: pass --from DIR (the folder with "
                               "adrenalmnist3d*.npz)")
        return "\n".join(f"already prepared: {path} ({_describe(path, size)})"
                         for size, path in prepared.items())
    if not Path(source).is_dir():
        raise HightprError(f"{source} is not a folder; pass --from the folder with adrenalmnist3d*.npz")
    found = {size: Path(source) / name for size, name in FILES.items() if (Path(source) / name).is_file()}
    if not found:
        raise HightprError(f"no {' or '.join(FILES.values())} in {source}; "
                           "pass --from the folder that holds them")
    target.mkdir(parents=True, exist_ok=True)
    lines = []
    for size, src in found.items():
        dst = target / FILES[size]
        state = "already prepared"
        if force or not dst.is_file() or md5(dst) != md5(src):
            check_npz(src, size)  # a broken source never replaces a good copy
            tmp = dst.with_suffix(".tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
            state = "prepared"
        lines.append(f"{state}: {dst} ({_describe(dst, size)})")
    return "\n".join(lines)


def _describe(path: Path, size: int) -> str:
    """Verified counts of one prepared file, and whether it is byte-identical to the official one."""
    counts = check_npz(path, size)
    official = "official MD5" if md5(path) == OFFICIAL_MD5[size] else "MD5 differs from the official release"
    text = ", ".join(f"{s} {n} ({p} pos)" for s, (n, p) in counts.items())
    return f"{size}^3: {text}; {official}"


def missing_message(root: Path, size: int) -> str:
    return (f"AdrenalMNIST3D {size}^3 not found: {root / FILES[size]}. Prepare it with "
            f"`python -m hightpr.data.prepare adrenal3d --from DIR --data-dir "
            f"{root.parent}` (or set paths.data_dir to where it is)")


@lru_cache(maxsize=2)
def load_adrenal3d(root: str, size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{split: (volumes [N,1,S,S,S] uint8, labels [N] int64)}, read once per process."""
    if size not in FILES:
        raise HightprError(f"dataset.size must be one of {sorted(FILES)}, got {size}")
    path = Path(root) / FILES[size]
    if not path.is_file():
        raise DataMissingError(missing_message(Path(root), size))
    check_npz(path, size)
    with np.load(path) as z:
        return {s: (torch.from_numpy(z[f"{s}_images"][:, None].copy()),
                    torch.from_numpy(z[f"{s}_labels"].reshape(-1).astype(np.int64))) for s in SPLITS}


class Adrenal3DDataModule(TensorDataModule):
    """AdrenalMNIST3D with its official train/val/test splits; label 1 (mass) is the critical class.

    `val_split="member"` pools the official train + val and draws member `seed`'s own stratified
    80/20 train/val split (docs/design.md 'Ensembles' for small sets); the test split never moves.
    Sample ids: position in official train, then val, then test (stable across seeds).
    """

    def __init__(self, root: str | Path, size: int = 28, seed: int = 1, val_split: str = "official",
                 val_fraction: float = 0.2, flip_dims: Sequence[int] = (-3, -2, -1), batch_size: int = 64,
                 eval_batch_size: int = 1000, augment: bool = True) -> None:
        super().__init__(batch_size, eval_batch_size, augment)
        if val_split not in ("official", "member"):
            raise HightprError(f"dataset.val_split must be 'official' or 'member', got {val_split!r}")
        self.root, self.size, self.seed = str(root), int(size), int(seed)
        self.val_split, self.val_fraction, self.flip_dims = val_split, val_fraction, tuple(flip_dims)

    def build(self) -> None:
        data = load_adrenal3d(self.root, self.size)
        offsets, start = {}, 0
        for s in SPLITS:
            offsets[s] = start
            start += len(data[s][1])
        self.num_sample_ids = start
        pieces = {s: (data[s][0], data[s][1], torch.arange(len(data[s][1])) + offsets[s]) for s in SPLITS}
        if self.val_split == "member":
            x = torch.cat([data["train"][0], data["val"][0]])
            y = torch.cat([data["train"][1], data["val"][1]])
            ids = torch.arange(len(y))
            tr, va = member_split(y, self.seed, self.val_fraction)
            pieces["train"], pieces["val"] = (x[tr], y[tr], ids[tr]), (x[va], y[va], ids[va])
        for s, (x, y, ids) in pieces.items():
            self.splits[s] = IndexedTensors(x.contiguous(), y.float(), ids)

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        return random_flips(x, self.flip_dims)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 255.0
