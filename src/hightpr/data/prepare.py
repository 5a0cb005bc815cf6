"""Turn a data source into the layouts the loaders read: `python -m hightpr.data.prepare NAME`.

    python -m hightpr.data.prepare cifar10 --from cifar10-jpg.tar.gz   # offline JPEG archive
    python -m hightpr.data.prepare cifar10 --download                   # torchvision, online
    python -m hightpr.data.prepare tiny                                 # synthetic smoke-test set
    python -m hightpr.data.prepare cifar100 --download                  # torchvision, online
    python -m hightpr.data.prepare cifar100 --from cifar-100-python.tar.gz   # or its folder
    python -m hightpr.data.prepare tiny-cifar100                        # synthetic CIFAR-100 format
    python -m hightpr.data.prepare melanoma --from DIR     # DIR: train.csv + image tar
    python -m hightpr.data.prepare adrenal3d --from DIR     # DIR: AdrenalMNIST3D npz
    python -m hightpr.data.prepare synthetic-mri [--ratio 2|8]          # SYNTHETIC MRI-style volumes

The data dir defaults to $HIGHTPR_DATA_DIR, else ./data. Every target is verified after writing
and is idempotent: an already prepared, intact target is left alone (use --force to rebuild).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from hightpr.data.cifar_files import (
    CIFAR10_CLASSES,
    CIFAR10_DIR,
    CIFAR100_DIR,
    CIFAR100_FILES,
    MANIFEST,
    load_cifar,
    verify_cifar,
    write_cifar10,
    write_cifar100,
    write_manifest,
)
from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter

TINY_DIR = "tiny-cifar10"
TINY_CIFAR100_DIR = "tiny-cifar100"


def default_data_dir() -> Path:
    return Path(os.environ.get("HIGHTPR_DATA_DIR", "./data"))


def read_jpeg_archive(archive: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode `{train,test}/<class>/<name>.jpg` from a tar(.gz) into uint8 arrays, sorted by path."""
    if not archive.is_file():
        raise HightprError(f"archive {archive} not found; pass the CIFAR-10 JPEG archive with --from")
    index = {name: i for i, name in enumerate(CIFAR10_CLASSES)}
    found: dict[str, list[tuple[str, int, np.ndarray]]] = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) < 3 or not parts[-1].endswith(".jpg"):
                    continue
                split, cls = parts[-3], parts[-2]
                if split not in found or cls not in index:
                    continue
                data = tar.extractfile(member).read()
                img = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
                if img.shape != (32, 32, 3):
                    raise HightprError(f"{member.name}: expected a 32x32 RGB image, got {img.shape}")
                found[split].append((member.name, index[cls], img))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise HightprError(f"cannot read archive {archive}: {err}") from err
    out = {}
    for split, items in found.items():
        items.sort(key=lambda t: t[0])
        x = np.stack([t[2] for t in items]) if items else np.zeros((0, 32, 32, 3), np.uint8)
        out[split] = (x, np.array([t[1] for t in items], dtype=np.int64))
    return out


def _prepare_cifar(
    which: str,
    data_dir: Path,
    download: bool,
    force: bool,
    expect_per_class: tuple[int, int] | None,
    build: Callable[[], None] | None,
    no_source: str,
) -> str:
    """Shared steps of the CIFAR targets: keep an intact target, else download (torchvision) or
    `build` from a local source, then verify what was written. Returns a summary line."""
    target = data_dir / {"cifar10": CIFAR10_DIR, "cifar100": CIFAR100_DIR}[which]
    if target.is_dir() and not force:
        try:
            return f"already prepared: {target} ({verify_cifar(data_dir, which, expect_per_class)})"
        except HightprError:
            pass  # incomplete or corrupt: rebuild below
    (target / MANIFEST).unlink(missing_ok=True)  # a stale manifest would fail the new files
    if download:
        from torchvision.datasets import CIFAR10, CIFAR100

        dataset = {"cifar10": CIFAR10, "cifar100": CIFAR100}[which]
        try:
            for train in (True, False):
                dataset(root=str(data_dir), train=train, download=True)
        except (OSError, RuntimeError) as err:  # urllib's URLError is an OSError
            raise HightprError(f"could not download {which} ({err}); offline? prepare it from a local copy "
                               f"with --from ARCHIVE instead") from err
    elif build is not None:
        build()
    else:
        raise HightprError(no_source)
    load_cifar.cache_clear()  # the files changed under the per-process cache
    return f"prepared {target} ({verify_cifar(data_dir, which, expect_per_class)})"


def prepare_cifar10(
    data_dir: Path,
    source: Path | None,
    download: bool,
    force: bool,
    expect_per_class: tuple[int, int] | None = (5000, 1000),
) -> str:
    """Write torchvision's `cifar-10-batches-py` under `data_dir` (from a JPEG archive or online)."""

    def build() -> None:
        splits = read_jpeg_archive(source)
        write_cifar10(data_dir, splits["train"], splits["test"], source=f"jpeg:{source.name}",
                      origin=str(source.resolve()))

    return _prepare_cifar("cifar10", data_dir, download, force, expect_per_class,
                          build if source is not None else None,
                          "no CIFAR-10 source: pass --from ARCHIVE (JPEG tar) or --download")


def make_tiny_cifar10(
    data_dir: Path, train_per_class: int = 150, test_per_class: int = 40, seed: int = 0
) -> Path:
    """A small synthetic CIFAR-10 in torchvision's format, learnable (class = colour + pattern).

    Not real images: it exists so the full training path can be smoke-tested in seconds.
    """
    rng = np.random.default_rng(seed)
    root = data_dir / TINY_DIR
    write_cifar10(root, synthetic_split(rng, train_per_class, 10),
                  synthetic_split(rng, test_per_class, 10), source="synthetic-tiny")
    return root


def synthetic_split(rng: np.random.Generator, n_per_class: int, num_classes: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`n_per_class` noisy 32x32 images per class, the class coded by a colour and a stripe frequency."""
    y = np.repeat(np.arange(num_classes), n_per_class)
    base = rng.normal(110, 60, size=(len(y), 32, 32, 3))
    hue = np.stack([np.sin(y * 0.7), np.cos(y * 1.3), np.sin(y * 2.1 + 1)], axis=1)
    base += 12 * hue[:, None, None, :]
    stripes = np.sin(np.arange(32) * (0.2 + 0.15 * y[:, None]))  # [N,32] class frequency
    base += 6 * stripes[:, :, None, None]
    x = np.clip(base, 0, 255).astype(np.uint8)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def make_tiny_cifar100(
    data_dir: Path, train_per_class: int = 30, test_per_class: int = 10, seed: int = 0
) -> Path:
    """A small synthetic CIFAR-100 written in torchvision's exact `cifar-100-python` format.

    Not real images (CIFAR-100 is not available offline): it lets the CIFAR-100 protocols be
    tested, and users smoke-test an install, without the real data. Fine classes are named
    `fine_00`..`fine_99`; coarse class = fine // 5 (synthetic, not CIFAR-100's map).
    """
    rng = np.random.default_rng(seed)
    root = data_dir / TINY_CIFAR100_DIR
    write_cifar100(
        root, synthetic_split(rng, train_per_class, 100), synthetic_split(rng, test_per_class, 100),
        source="synthetic-tiny", fine_names=tuple(f"fine_{i:02d}" for i in range(100)),
        coarse_names=tuple(f"coarse_{i:02d}" for i in range(20)),
        fine_to_coarse=tuple(i // 5 for i in range(100)),
    )
    return root


def _copy_cifar100(source: Path, data_dir: Path) -> None:
    """torchvision's `cifar-100-python` from its tar(.gz) or a folder (the folder itself or its parent)."""
    target = data_dir / CIFAR100_DIR
    if source.is_dir():
        folder = source if (source / "train").is_file() else source / CIFAR100_DIR
        missing = [n for n in CIFAR100_FILES if not (folder / n).is_file()]
        if missing:
            raise HightprError(f"{source} is not torchvision's CIFAR-100 folder (no {folder / missing[0]}); "
                               "pass cifar-100-python.tar.gz or the folder that holds train, test, meta")
        target.mkdir(parents=True, exist_ok=True)
        for name in CIFAR100_FILES:
            shutil.copyfile(folder / name, target / name)
        return
    if not source.is_file():
        raise HightprError(f"{source} not found; pass cifar-100-python.tar.gz or its folder with --from")
    try:
        with tarfile.open(source, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar
                       if m.isfile() and Path(m.name).name in CIFAR100_FILES
                       and Path(m.name).parent.name == CIFAR100_DIR}
            missing = [n for n in CIFAR100_FILES if n not in members]
            if missing:
                raise HightprError(f"{source} holds no {CIFAR100_DIR}/{missing[0]}: not torchvision's "
                                   "CIFAR-100 archive (cifar-100-python.tar.gz)")
            target.mkdir(parents=True, exist_ok=True)
            for name, member in members.items():
                with tar.extractfile(member) as src, open(target / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise HightprError(f"cannot read archive {source}: {err}") from err


def prepare_cifar100(
    data_dir: Path,
    source: Path | None,
    download: bool,
    force: bool,
    expect_per_class: tuple[int, int] | None = (500, 100),
) -> str:
    """Write torchvision's `cifar-100-python` under `data_dir` (from its tar / folder or online)."""
    target = data_dir / CIFAR100_DIR

    def build() -> None:
        _copy_cifar100(source, data_dir)
        load_cifar.cache_clear()
        counts = {split: len(load_cifar(str(data_dir), split == "train", "cifar100")[1])
                  for split in ("train", "test")}
        write_manifest(target, CIFAR100_FILES, f"torchvision:{source}", counts, origin=str(source.resolve()))

    return _prepare_cifar("cifar100", data_dir, download, force, expect_per_class,
                          build if source is not None else None,
                          "no CIFAR-100 source (the images are not in the offline data): pass "
                          "--download, or --from cifar-100-python.tar.gz / its folder")


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m hightpr.data.prepare`; returns 2 with one `error:` line on a problem."""
    parser = argparse.ArgumentParser(prog="python -m hightpr.data.prepare", description=__doc__,
                                     formatter_class=HelpFormatter)
    parser.add_argument("dataset", choices=["cifar10", "tiny", "cifar100", "tiny-cifar100",
                                            "melanoma", "adrenal3d", "synthetic-mri"])
    parser.add_argument("--from", dest="source", type=Path, help="local source archive")
    parser.add_argument("--download", action="store_true", help="download with torchvision")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="target data dir (default: $HIGHTPR_DATA_DIR, else ./data)")
    parser.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    parser.add_argument("--ratio", type=int, choices=[2, 8], default=2,
                        help="synthetic-mri: 1:ratio positives (ALM-v1: 2 or 8)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic-mri: generator seed")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    if args.dataset == "cifar10":
        print(prepare_cifar10(data_dir, args.source, args.download, args.force))
    elif args.dataset == "cifar100":
        print(prepare_cifar100(data_dir, args.source, args.download, args.force))
    elif args.dataset == "tiny-cifar100":
        root = make_tiny_cifar100(data_dir)
        print(f"prepared {root / CIFAR100_DIR} (synthetic, {MANIFEST} written)")
    elif args.dataset == "melanoma":
        from hightpr.data.melanoma import prepare_melanoma

        print(prepare_melanoma(data_dir, args.source, args.force))
    elif args.dataset == "adrenal3d":
        from hightpr.data.adrenal3d import prepare_adrenal3d

        print(prepare_adrenal3d(data_dir, args.source, args.force))
    elif args.dataset == "synthetic-mri":
        from hightpr.data.synthetic_mri import write_synthetic_mri

        print(write_synthetic_mri(data_dir, ratio=args.ratio, seed=args.seed, force=args.force))
    else:
        root = make_tiny_cifar10(data_dir)
        print(f"prepared {root / CIFAR10_DIR} (synthetic, {MANIFEST} written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
