"""SYNTHETIC MRI-style subjects (not patient data): exercises the volumes protocol end to end.

`python -m hightpr.data.prepare synthetic-mri [--ratio 2|8]` writes `<data_dir>/synthetic-mri-1to<R>/`
in the layout `hightpr.data.volumes` reads: `labels.csv` (subject, label, split) and one
`<subject>.npz` per subject with `dwi` [3 b-values, D, H, W] and `t2` [1, D, H, W] (the DWI on a
coarser grid than the T2, as in real scans, so the loader's resampling is exercised).

Each subject has a gland-like ellipsoid with smooth intensity variation and noise. A positive
subject has a lesion-like blob visible in BOTH modalities: dark on T2, and restricted diffusion
(low ADC) so that it is bright at high b-values (S_b = S0 exp(-b ADC)). Half of all subjects
(either class) also carry a decoy blob visible in only ONE modality (T2-dark with normal ADC, or
low ADC with normal T2), so a model has to combine the two paths to separate the classes.
Seeded per subject: the same seed writes byte-identical folders.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from hightpr.data.cifar_files import md5
from hightpr.errors import DataMissingError, HightprError

MANIFEST = "hightpr_manifest.json"
B_VALUES = (100.0, 600.0, 1000.0)  # s/mm^2, ALM-v1 §5.1
ADC_TISSUE, ADC_LESION = 1.6e-3, 0.7e-3  # mm^2/s


def synthetic_dir_name(ratio: int) -> str:
    return f"synthetic-mri-1to{ratio}"


def _grid(shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel-centre coordinates in [-1, 1]^3, [3, D, H, W]: one physical space for every grid."""
    axes = [(np.arange(n) + 0.5) / n * 2 - 1 for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def _blob(coords: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    d2 = ((coords - centre[:, None, None, None]) ** 2).sum(0)
    return np.exp(-d2 / (2 * radius**2))


def _subject(rng: np.random.Generator, positive: bool, t2_shape, dwi_shape) -> dict[str, np.ndarray]:
    radii = rng.uniform(0.55, 0.75, 3)
    centre = rng.uniform(-0.1, 0.1, 3)
    waves = rng.normal(0, 1, (3, 3))  # low-frequency intensity variation of the gland
    lesion = (centre + rng.uniform(-0.5, 0.5, 3) * radii, rng.uniform(0.12, 0.22))  # drawn for both
    lesion = lesion if positive else None  # classes: a negative is its positive twin minus the lesion
    decoy = None
    if rng.random() < 0.5:
        decoy = (centre + rng.uniform(-0.5, 0.5, 3) * radii, rng.uniform(0.12, 0.22), rng.random() < 0.5)

    def render(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        c = _grid(shape)
        r = np.sqrt((((c - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0))
        gland = 1 / (1 + np.exp((r - 1) * 12))
        texture = 1 + 0.08 * sum(np.cos(3 * (w[:, None, None, None] * c).sum(0) + k)
                                 for k, w in enumerate(waves))
        t2_dark = np.zeros(shape)
        low_adc = np.zeros(shape)
        if lesion is not None:
            b = _blob(c, *lesion) * gland
            t2_dark, low_adc = t2_dark + b, low_adc + b
        if decoy is not None:
            b = _blob(c, decoy[0], decoy[1]) * gland
            if decoy[2]:
                t2_dark = t2_dark + b
            else:
                low_adc = low_adc + b
        return gland, texture, (np.clip(t2_dark, 0, 1), np.clip(low_adc, 0, 1))

    gland, texture, (dark, _) = render(t2_shape)
    t2 = (0.15 + 0.75 * gland * texture) * (1 - 0.45 * dark)
    t2 = t2 + rng.normal(0, 0.06, t2.shape)
    gland, texture, (_, low) = render(dwi_shape)
    s0 = 0.1 + 0.9 * gland * texture
    adc = ADC_TISSUE + (ADC_LESION - ADC_TISSUE) * low
    dwi = np.stack([s0 * np.exp(-b * adc) for b in B_VALUES])
    dwi = np.abs(dwi + rng.normal(0, 0.03, dwi.shape))  # magnitude images: Rician-like floor
    return {"dwi": dwi.astype(np.float16), "t2": t2[None].astype(np.float16),
            "bvalues": np.asarray(B_VALUES, dtype=np.float32)}


def _params(ratio: int, n_train: int, n_test: int, t2_shape, dwi_shape, seed: int) -> dict:
    return {"synthetic": True, "ratio": int(ratio), "n_train": int(n_train), "n_test": int(n_test),
            "t2_shape": list(t2_shape), "dwi_shape": list(dwi_shape), "seed": int(seed)}


def verify_synthetic_mri(root: Path, params: dict | None = None) -> str:
    """Manifest parameters, labels.csv checksum, every subject file and its arrays' shapes."""
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise DataMissingError(f"{manifest_path} not found")
    manifest = json.loads(manifest_path.read_text())
    if params is not None and manifest.get("params") != params:
        raise DataMissingError(f"{root} was written with other parameters")
    if md5(root / "labels.csv") != manifest.get("labels_md5"):
        raise DataMissingError(f"{root / 'labels.csv'} is missing or changed")
    p = manifest["params"]
    table = pd.read_csv(root / "labels.csv", dtype={"subject": str})
    for subject in table["subject"]:
        try:
            with np.load(root / f"{subject}.npz") as z:
                ok = (z["dwi"].shape == (len(B_VALUES), *p["dwi_shape"])
                      and z["t2"].shape == (1, *p["t2_shape"]))
        except (OSError, KeyError, ValueError, EOFError) as err:
            raise DataMissingError(f"{root / subject}.npz is missing or corrupt ({err})") from err
        if not ok:
            raise DataMissingError(f"{root / subject}.npz has unexpected shapes")
    parts = []
    for split in ("train", "test"):
        y = table.loc[table["split"] == split, "label"]
        parts.append(f"{split} {len(y)} ({int(y.sum())} pos)")
    return "SYNTHETIC, " + ", ".join(parts)


def write_synthetic_mri(
    data_dir: Path,
    ratio: int = 2,
    n_train: int = 300,
    n_test: int = 100,
    t2_shape: tuple[int, int, int] = (16, 32, 32),
    dwi_shape: tuple[int, int, int] = (8, 16, 16),
    seed: int = 0,
    force: bool = False,
) -> str:
    """Write (or keep, when intact and written with the same parameters) the synthetic folder.

    Positives per cohort: round(n / (ratio + 1)), i.e. 100 / 200 of 300 at 1:2, 33 / 267 at 1:8.
    """
    if ratio < 1:
        raise HightprError(f"--ratio must be >= 1 (1:ratio positives:negatives), got {ratio}")
    root = Path(data_dir) / synthetic_dir_name(ratio)
    params = _params(ratio, n_train, n_test, t2_shape, dwi_shape, seed)
    if root.is_dir() and not force:
        try:
            return f"already prepared: {root} ({verify_synthetic_mri(root, params)})"
        except (HightprError, OSError, KeyError, ValueError):
            pass  # other parameters, incomplete or corrupt: rebuild below
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = []
    for cohort, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        n_pos = round(n / (ratio + 1))
        labels = np.zeros(n, dtype=np.int64)
        labels[:n_pos] = 1
        labels = np.random.default_rng([seed, cohort]).permutation(labels)
        for i, label in enumerate(labels):
            subject = f"synth-{split}-{i:04d}"
            rng = np.random.default_rng([seed, cohort, i, 1])
            np.savez_compressed(tmp / f"{subject}.npz", **_subject(rng, bool(label), t2_shape, dwi_shape))
            rows.append({"subject": subject, "label": int(label), "split": split})
    pd.DataFrame(rows).to_csv(tmp / "labels.csv", index=False)
    (tmp / "README.txt").write_text(
        "SYNTHETIC data written by `python -m hightpr.data.prepare synthetic-mri`: procedurally generated\n"
        "MRI-style volumes (not patient data) to exercise the volumes protocol and the dual-path model.\n"
    )
    (tmp / MANIFEST).write_text(json.dumps({"params": params, "labels_md5": md5(tmp / "labels.csv")}))
    summary = verify_synthetic_mri(tmp, params)
    shutil.rmtree(root, ignore_errors=True)
    tmp.replace(root)
    return f"prepared {root} ({summary})"
