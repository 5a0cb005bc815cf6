"""Tiny generated stand-ins of every dataset, for SCALE=smoke (not real images, numbers mean nothing).

Written once under `<data dir>/standins/` in the real layouts (torchvision's CIFAR folders, the
ISIC CSV + JPEGs, the two-modality volume folder), so every table's wiring runs end to end in
seconds, including the cells whose real data is private (MRI) or not here (CIFAR-100).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from hightpr.data.prepare import make_tiny_cifar10, make_tiny_cifar100

FAMILY_DATA = {"cifar10_binary": "cifar10", "cifar10_small": "cifar10", "cifar10_lt": "cifar10",
               "cifar100_binary": "cifar100", "cifar100_lt": "cifar100", "melanoma": "melanoma", "mri": "mri"}


def lesion_jpeg(rng: np.random.Generator, positive: bool, size: int = 32) -> bytes:
    """A skin-coloured square with a lesion: dark and large when positive, light and small if not."""
    img = np.empty((size, size, 3))
    img[:] = (200, 160, 140)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(size * 0.35, size * 0.65, 2)
    r = rng.uniform(9, 12) if positive else rng.uniform(4, 7)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = (60, 35, 30) if positive else (150, 100, 80)
    img += rng.normal(0, 12, img.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_isic_source(folder: Path, n_patients: int = 100, seed: int = 0) -> pd.DataFrame:
    """ISIC 2020 layout: train.csv (image_name, patient_id, target) and a tar of images/<name>.jpg.

    1 to 3 images per patient; about one patient in four has a melanoma (all their images).
    Returns the table written as train.csv.
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(n_patients):
        positive = rng.random() < 0.25
        for _ in range(int(rng.integers(1, 4))):
            rows.append({"image_name": f"ISIC_{len(rows):07d}", "patient_id": f"IP_{p:05d}",
                         "target": int(positive)})
    with tarfile.open(folder / "images.tar", "w") as tar:
        for row in rows:
            data = lesion_jpeg(rng, bool(row["target"]))
            info = tarfile.TarInfo(f"images/{row['image_name']}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    table = pd.DataFrame(rows)
    table.to_csv(folder / "train.csv", index=False)
    return table


def _write(kind: str, root: Path) -> None:
    if kind == "cifar10":
        make_tiny_cifar10(root)
    elif kind == "cifar100":
        make_tiny_cifar100(root)
    elif kind == "mri":
        from hightpr.data.synthetic_mri import write_synthetic_mri

        write_synthetic_mri(root, ratio=2, n_train=45, n_test=24, t2_shape=(8, 16, 16), dwi_shape=(4, 8, 8))
    elif kind == "melanoma":
        from hightpr.data.melanoma import prepare_melanoma

        write_isic_source(root / "melanoma-source")
        prepare_melanoma(root, root / "melanoma-source")


def prepare_standins(root: Path, datasets) -> Path:
    """Write the stand-ins of the paper datasets named (once; a marker file records each)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for kind in sorted({FAMILY_DATA[d] for d in datasets}):
        marker = root / f".standin-{kind}"
        if not marker.is_file():
            _write(kind, root)
            marker.write_text("written by hightpr.tables.standins (synthetic, not real data)\n")
    return root
