"""Turn a data source into the layouts the loaders read: `python -m hightpr.data.prepare NAME`.

    python -m hightpr.data.prepare cifar10 --from cifar10-jpg.tar.gz   # offline JPEG archive
    python -m hightpr.data.prepare cifar10 --download                   # torchvision, online
    python -m hightpr.data.prepare tiny                                 # synthetic smoke-test set

The data dir defaults to $HIGHTPR_DATA_DIR, else ./data. Every target is verified after writing
and is idempotent: an already prepared, intact target is left alone (use --force to rebuild).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from hightpr.data.cifar_files import (
    CIFAR10_CLASSES,
    CIFAR10_DIR,
    MANIFEST,
    verify_cifar10,
    write_cifar10,
)
from hightpr.errors import HightprError

TINY_DIR = "tiny-cifar10"


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


def prepare_cifar10(
    data_dir: Path,
    source: Path | None,
    download: bool,
    force: bool,
    expect_per_class: tuple[int, int] | None = (5000, 1000),
) -> str:
    """Write torchvision's `cifar-10-batches-py` under `data_dir`; return a summary line."""
    target = data_dir / CIFAR10_DIR
    if target.is_dir() and not force:
        try:
            return f"already prepared: {target} ({verify_cifar10(data_dir, expect_per_class)})"
        except HightprError:
            pass  # incomplete or corrupt: rebuild below
    if download:
        from torchvision.datasets import CIFAR10

        CIFAR10(root=str(data_dir), train=True, download=True)
        CIFAR10(root=str(data_dir), train=False, download=True)
    elif source is not None:
        splits = read_jpeg_archive(source)
        write_cifar10(data_dir, splits["train"], splits["test"], source=f"jpeg:{source.name}")
    else:
        raise HightprError("no CIFAR-10 source: pass --from ARCHIVE (JPEG tar) or --download")
    return f"prepared {target} ({verify_cifar10(data_dir, expect_per_class)})"


def make_tiny_cifar10(
    data_dir: Path, train_per_class: int = 150, test_per_class: int = 40, seed: int = 0
) -> Path:
    """A small synthetic CIFAR-10 in torchvision's format, learnable (class = colour + pattern).

    Not real images: it exists so the full training path can be smoke-tested in seconds.
    """
    rng = np.random.default_rng(seed)

    def split(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), n_per_class)
        base = rng.normal(110, 60, size=(len(y), 32, 32, 3))
        hue = np.stack([np.sin(y * 0.7), np.cos(y * 1.3), np.sin(y * 2.1 + 1)], axis=1)
        base += 12 * hue[:, None, None, :]
        stripes = np.sin(np.arange(32) * (0.2 + 0.15 * y[:, None]))  # [N,32] class frequency
        base += 6 * stripes[:, :, None, None]
        x = np.clip(base, 0, 255).astype(np.uint8)
        perm = rng.permutation(len(y))
        return x[perm], y[perm]

    root = data_dir / TINY_DIR
    write_cifar10(root, split(train_per_class), split(test_per_class), source="synthetic-tiny")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hightpr.data.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=["cifar10", "tiny"])
    parser.add_argument("--from", dest="source", type=Path, help="local source archive")
    parser.add_argument("--download", action="store_true", help="download with torchvision")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="target data dir (default: $HIGHTPR_DATA_DIR, else ./data)")
    parser.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    try:
        if args.dataset == "cifar10":
            print(prepare_cifar10(data_dir, args.source, args.download, args.force))
        else:
            root = make_tiny_cifar10(data_dir)
            print(f"prepared {root / CIFAR10_DIR} (synthetic, {MANIFEST} written)")
    except HightprError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
