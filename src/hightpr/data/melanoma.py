"""Melanoma (RankReg §4.1): ISIC 2020 layout, stratified 70/10/20, resized, ResNet-18 inputs.

Layout read (ISIC 2020, also what `prepare melanoma` writes under `<data_dir>/melanoma`):

    train.csv          image_name, target (0/1) [, patient_id, ...]
    images/<image_name>.jpg     (also accepted: train/ or jpeg/train/, the Kaggle folders)

JPEGs are decoded once, resized to `image_size`, and cached as one raw uint8 file
`cache/images_<size>.u8` ([N,3,S,S], csv row order) beside them. The DataModule memory-maps that
file, so an epoch is a gather of rows, never a per-sample PIL decode; the page cache holds what
fits in RAM (offline set at 256 px: 1.5 GB; ISIC 2020: 6.5 GB) and no split is copied.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from hightpr.data.augment import IMAGENET_MEAN, IMAGENET_STD, normalise, random_crop_flip, random_flips
from hightpr.data.base import TensorDataModule
from hightpr.data.cifar_files import md5
from hightpr.data.image_files import cached_images, decode_image
from hightpr.data.image_table import checked_csv
from hightpr.data.splits import melanoma_split
from hightpr.data.tensors import IndexedRows
from hightpr.errors import DataMissingError, HightprError

MELANOMA_DIR = "melanoma"
MANIFEST = "hightpr_manifest.json"
IMAGE_DIRS = ("images", "train", "jpeg/train")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


# -- the csv and the image folder ------------------------------------------------------------------

def read_table(csv: Path) -> pd.DataFrame:
    """The ISIC 2020 `train.csv`, checked: image_name (unique), target (0/1), optional patient_id."""
    if not csv.is_file():
        raise DataMissingError(f"{csv} not found")
    table = checked_csv(csv, {"image_name", "target"},
                        "the ISIC 2020 layout is image_name, target[, patient_id]",
                        dtype={"image_name": str, "patient_id": str})
    if table["image_name"].isna().any() or table["image_name"].duplicated().any():
        raise DataMissingError(f"{csv}: image_name must be present and unique")
    if not table["target"].isin([0, 1]).all():
        raise DataMissingError(f"{csv}: target must be 0 or 1")
    if len(table) == 0 or table["target"].nunique() != 2:
        raise DataMissingError(f"{csv}: needs both positive and negative images")
    return table.reset_index(drop=True)


def image_dir(root: Path) -> Path:
    """The first of images/, train/, jpeg/train/ that exists under `root`."""
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise DataMissingError(
        f"no image folder ({', '.join(IMAGE_DIRS)}) under {root}. Prepare it with `python -m "
        f"hightpr.data.prepare melanoma --from DIR --data-dir {root.parent}` (DIR: train.csv + archive)"
    )


# -- preparation -----------------------------------------------------------------------------------

def _names_digest(names: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(names).encode()).hexdigest()


def verify_melanoma(root: Path, decode: bool = False) -> str:
    """Check the prepared folder (csv columns, every listed image present; `decode`: and decodable)."""
    table = read_table(root / "train.csv")
    folder = image_dir(root)
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    if manifest is not None and manifest.get("csv_md5") != md5(root / "train.csv"):
        raise DataMissingError(f"{root / 'train.csv'} changed since it was prepared")
    sizes = manifest.get("sizes", {}) if manifest else {}
    for name in table["image_name"]:
        path = folder / f"{name}.jpg"
        if not path.is_file() or (name in sizes and path.stat().st_size != sizes[name]):
            raise DataMissingError(f"{path} is missing or truncated; re-run `python -m hightpr.data.prepare "
                                   "melanoma --force`")
        if decode:
            try:
                decode_image(path)
            except (OSError, ValueError, Image.DecompressionBombError) as err:
                raise DataMissingError(f"{path} does not decode ({err})") from err
    n_pos = int(table["target"].sum())
    patients = f", {table['patient_id'].nunique()} patients" if "patient_id" in table else ""
    return f"{len(table)} images, {n_pos} positive (1:{(len(table) - n_pos) / n_pos:.1f}){patients}"


def _find_archive(source: Path) -> Path | None:
    archives = sorted(p for p in source.iterdir() if p.name.endswith(ARCHIVE_SUFFIXES))
    return archives[0] if archives else None


def _unpack(source: Path, wanted: set[str], out: Path) -> str:
    """Copy the `wanted` images of `source` (tar archive or image folder) to `out`; return the origin."""
    archive = _find_archive(source)
    if archive is not None:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    stem = Path(member.name).stem
                    if member.isfile() and member.name.lower().endswith(".jpg") and stem in wanted:
                        (out / f"{stem}.jpg").write_bytes(tar.extractfile(member).read())
        except (tarfile.TarError, OSError, EOFError) as err:
            raise HightprError(f"cannot read archive {archive}: {err}") from err
        origin = archive.name
    else:
        try:
            folder = image_dir(source)
        except DataMissingError as err:
            raise HightprError(f"no image archive ({', '.join(ARCHIVE_SUFFIXES)}) nor image folder "
                               f"({', '.join(IMAGE_DIRS)}) in {source}") from err
        for name in wanted:
            if (folder / f"{name}.jpg").is_file():
                shutil.copyfile(folder / f"{name}.jpg", out / f"{name}.jpg")
        origin = str(folder)
    lacking = sorted(wanted - {p.stem for p in out.glob("*.jpg")})
    if lacking:
        raise HightprError(f"{len(lacking)} of the {len(wanted)} images named in train.csv are not in "
                           f"{origin} (e.g. {lacking[0]}.jpg)")
    return origin


def prepare_melanoma(data_dir: Path, source: Path | None, force: bool = False) -> str:
    """`<data_dir>/melanoma` from DIR holding `train.csv` and an image archive (tar) or folder.

    Unpacks only the images the csv names, then verifies: csv columns, one image per row, every
    image decodes. Idempotent: an intact prepared folder (manifest sizes, csv checksum) is kept.
    """
    target = Path(data_dir) / MELANOMA_DIR
    if (target / MANIFEST).is_file() and not force:
        try:
            return f"already prepared: {target} ({verify_melanoma(target)})"
        except HightprError:
            pass  # incomplete or corrupt: rebuild below
    if source is None:
        raise HightprError("no Melanoma source: pass --from DIR (train.csv + an image archive or folder)")
    source = Path(source)
    if not (source / "train.csv").is_file():
        raise HightprError(f"{source / 'train.csv'} not found; "
                           "pass --from the folder with train.csv and the images")
    table = read_table(source / "train.csv")
    tmp = target.with_name(MELANOMA_DIR + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        origin = _unpack(source, set(table["image_name"]), tmp / "images")
        shutil.copyfile(source / "train.csv", tmp / "train.csv")
        summary = verify_melanoma(tmp, decode=True)  # before the manifest: every image must decode
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written folder behind
        raise
    manifest = {"source": origin, "csv_md5": md5(tmp / "train.csv"), "count": len(table),
                "positives": int(table["target"].sum()),
                "sizes": {n: (tmp / "images" / f"{n}.jpg").stat().st_size for n in table["image_name"]}}
    (tmp / MANIFEST).write_text(json.dumps(manifest))
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)
    return f"prepared {target} ({summary})"


# -- the resized uint8 cache ----------------------------------------------------------------------

def image_cache(root: Path, names: Sequence[str], size: int, cache_dir: Path | None = None,
                workers: int | None = None) -> torch.Tensor:
    """uint8 [N,3,size,size] of `names` (csv order), memory-mapped from `<cache_dir>/images_<size>.u8`
    (default `<root>/cache`), built once if needed (`hightpr.data.image_files.cached_images`)."""
    folder = image_dir(root)
    cache_dir = Path(cache_dir) if cache_dir else root / "cache"
    key = {"n": len(names), "size": size, "names_sha1": _names_digest(names)}
    return cached_images([folder / f"{n}.jpg" for n in names], size, cache_dir / f"images_{size}.u8", key,
                         workers)


# -- the DataModule ------------------------------------------------------------------------------

class MelanomaDataModule(TensorDataModule):
    """Melanoma vs benign, RankReg's protocol: one fixed stratified 70/10/20 split (`split_seed`),
    grouped by patient when `patient_id` is present, images resized to `image_size`.

    `positive_ratio` subsamples every split's positives to 1:ratio (the paper's ISIC 2020 set is
    1:176, reported as 1:170; the offline HAM10000/ISIC 2018 set is 1:10.3). `seed` drives only
    initialisation and augmentation: the paper trains no ensemble on Melanoma. Sample id = csv row.
    Augmentation (training, on device): random crop after `crop_padding` px zero padding,
    horizontal and vertical flips (a dermoscopy image has no preferred orientation).
    """

    reads_image_files = True  # `hightpr-predict` may apply its runs to image files (`decode_chw`)

    def __init__(self, root: str | Path, image_size: int = 256, positive_ratio: float | None = None,
                 split_seed: int = 0, fractions: Sequence[float] = (0.7, 0.1, 0.2),
                 group_by_patient: bool = True, crop_padding: int = 16, cache_dir: str | None = None,
                 decode_workers: int | None = None, seed: int = 1, batch_size: int = 64,
                 eval_batch_size: int = 1000, augment: bool = True) -> None:
        super().__init__(batch_size, eval_batch_size, augment)
        if len(fractions) != 3:
            raise HightprError(f"dataset.fractions must be [train, val, test], got {list(fractions)}")
        self.root, self.image_size, self.positive_ratio = Path(root), int(image_size), positive_ratio
        self.split_seed, self.fractions = split_seed, tuple(fractions)
        self.group_by_patient = group_by_patient
        self.crop_padding, self.cache_dir, self.decode_workers = crop_padding, cache_dir, decode_workers
        self.seed = seed

    def build(self) -> None:
        csv = self.root / "train.csv"
        if not csv.is_file():
            raise DataMissingError(
                f"Melanoma not found: {csv}. Prepare it with `python -m hightpr.data.prepare melanoma "
                f"--from DIR --data-dir {self.root.parent}` (or set paths.data_dir)")
        table = read_table(csv)
        y = torch.tensor(table["target"].to_numpy(dtype=np.int64))
        groups = None
        if self.group_by_patient and "patient_id" in table:
            patients = table["patient_id"].fillna(table["image_name"])  # unknown patient: its own group
            groups = torch.as_tensor(pd.factorize(patients)[0], dtype=torch.long)
        split = melanoma_split(y, groups, self.split_seed, self.fractions, self.positive_ratio)
        x = image_cache(self.root, list(table["image_name"]), self.image_size, self.cache_dir,
                        self.decode_workers)
        self.num_sample_ids = len(table)
        for name in ("train", "val", "test"):
            rows = getattr(split, name)
            self.splits[name] = IndexedRows(x, rows, y[rows].float(), rows.clone())

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        x = random_crop_flip(x, padding=self.crop_padding, flip=True)
        return random_flips(x, (-2,))

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x, IMAGENET_MEAN, IMAGENET_STD)
