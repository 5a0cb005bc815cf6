"""Reading and writing torchvision's CIFAR layout (`cifar-10-batches-py`, `cifar-100-python`).

Files written by `hightpr.data.prepare` are byte-compatible with torchvision's readers, but not
with its MD5 table (the offline source is re-encoded JPEG), so integrity is checked against the
manifest that the prepare step writes beside them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from hightpr.errors import DataMissingError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR100_FILES = ("train", "test", "meta")
MANIFEST = "hightpr_manifest.json"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


class _ManifestChecked:
    """Replace torchvision's fixed-MD5 check by 'every file present' (content checked by prepare)."""

    def _check_integrity(self) -> bool:  # noqa: D401 - torchvision hook
        base = Path(self.root) / self.base_folder
        return all((base / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:  # torchvision checks the meta file's fixed MD5 here
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        if not path.is_file():
            raise RuntimeError(f"{path} not found")
        with open(path, "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class PreparedCIFAR10(_ManifestChecked, CIFAR10):
    """torchvision CIFAR-10 that also accepts files made by `hightpr.data.prepare`."""


class PreparedCIFAR100(_ManifestChecked, CIFAR100):
    """torchvision CIFAR-100 that also accepts files made by `hightpr.data.prepare`."""


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_cifar10(
    out_dir: Path,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    source: str,
    classes: tuple[str, ...] = CIFAR10_CLASSES,
    origin: str | None = None,
) -> Path:
    """Write images [N,32,32,3] uint8 + labels [N] as torchvision's CIFAR-10 pickles (`origin`: the
    source's full path, recorded for the repair command)."""
    folder = Path(out_dir) / CIFAR10_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (x_tr, y_tr), (x_te, y_te) = train, test
    chunks = np.array_split(np.arange(len(x_tr)), len(TRAIN_FILES))
    parts = [(name, x_tr[idx], y_tr[idx]) for name, idx in zip(TRAIN_FILES, chunks, strict=True)]
    parts.append(("test_batch", x_te, y_te))
    for name, x, y in parts:
        entry = {
            "batch_label": name,
            "labels": [int(v) for v in y],
            "data": np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1),
            "filenames": [f"{i:05d}.png" for i in range(len(x))],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=4)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(classes), "num_cases_per_batch": len(chunks[0])}, f)
    write_manifest(folder, tuple(name for name, *_ in parts), source,
                   {"train": int(len(x_tr)), "test": int(len(x_te))}, origin)
    return folder


def write_manifest(folder: Path, names: tuple[str, ...], source: str, counts: dict[str, int],
                   origin: str | None = None) -> None:
    """Record the files' checksums beside them (what loading and `verify_*` check later)."""
    manifest = {"source": source, "counts": counts, "md5": {n: md5(folder / n) for n in names}}
    if origin:
        manifest["from"] = origin
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


DEFAULT_SOURCES = {"cifar10": "data-sources/cifar10"}  # where README and `make data` keep the archive


def repair_command(root: Path, which: str) -> str:
    """The prepare command that rebuilds the data under `root` (a tiny set, or CIFAR from its source)."""
    root = Path(root)
    if root.name.startswith("tiny"):  # the synthetic stand-ins: written under <data dir>/tiny-*
        name = "tiny" if which == "cifar10" else "tiny-cifar100"
        return f"python -m hightpr.data.prepare {name} --data-dir {root.parent}"
    manifest = _manifest(root / _LAYOUT[which][0])
    origin, source = manifest.get("from"), str(manifest.get("source", ""))
    if origin and Path(origin).exists():
        fix = f"--from {origin}"
    elif source.startswith("jpeg:"):
        archive = Path(DEFAULT_SOURCES.get(which, ".")) / Path(source.removeprefix("jpeg:")).name
        fix = f"--from {archive}" + ("" if archive.is_file() else " (where that archive is; or --download)")
    elif source.startswith("torchvision:") and Path(source.removeprefix("torchvision:")).exists():
        fix = f"--from {source.removeprefix('torchvision:')}"
    else:
        fix = "--download"
    return f"python -m hightpr.data.prepare {which} --force {fix} --data-dir {root}"


_CHECKED: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, md5) already hashed here
VERIFIED = ".hightpr_verified.json"   # beside the manifest: {name: [size, mtime_ns, md5]} hashed before


def _stamps(folder: Path) -> dict:
    try:
        return json.loads((folder / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}


def _write_stamps(folder: Path, stamps: dict) -> None:
    """Keep what was hashed for the next process; a folder it cannot write to is hashed every time."""
    tmp = folder / f"{VERIFIED}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(stamps, indent=1))
        tmp.replace(folder / VERIFIED)
    except OSError:
        tmp.unlink(missing_ok=True)


def check_checksums(root: Path, which: str, rehash: bool = False) -> None:
    """Every file listed in the manifest is there and has its recorded MD5. A file is hashed once,
    and again only when its size or modification time changed: in this process, and across
    processes through `VERIFIED` beside the manifest (what a grid of runs on one data folder saves:
    0.3 s a run for CIFAR-10). `rehash` hashes every file whatever was recorded (`verify_*`). A
    damaged file is refused, naming it and the command that repairs it."""
    folder = Path(root) / _LAYOUT[which][0]
    stamps = {} if rehash else _stamps(folder)
    hashed = False
    for name, digest in _manifest(folder).get("md5", {}).items():
        path = folder / name
        try:
            stat = path.stat()
        except OSError:
            fix = repair_command(root, which)
            raise DataMissingError(f"{path} is missing or corrupt (not there); repair with `{fix}`") from None
        key = (stat.st_size, stat.st_mtime_ns)
        seen = None if rehash else _CHECKED.get(str(path))
        if seen is None or seen[:2] != key:
            stamp = stamps.get(name)
            if isinstance(stamp, list) and len(stamp) == 3 and tuple(stamp[:2]) == key:
                seen = (*key, str(stamp[2]))
            else:
                seen, hashed = (*key, md5(path)), True
                stamps[name] = list(seen)
            _CHECKED[str(path)] = seen
        if seen[2] != digest:
            raise DataMissingError(f"{path} is missing or corrupt (its MD5 differs from {MANIFEST}); "
                                   f"repair with `{repair_command(root, which)}`")
    if hashed:
        _write_stamps(folder, stamps)


def write_cifar100(
    out_dir: Path,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    source: str,
    fine_names: tuple[str, ...],
    coarse_names: tuple[str, ...],
    fine_to_coarse: tuple[int, ...],
) -> Path:
    """Write images [N,32,32,3] uint8 + fine labels [N] as torchvision's CIFAR-100 pickles.

    The exact layout of `cifar-100-python/{train,test,meta}` (keys `data`, `fine_labels`,
    `coarse_labels`, `filenames`, `batch_label`; meta `fine_label_names`, `coarse_label_names`).
    """
    folder = Path(out_dir) / CIFAR100_DIR
    folder.mkdir(parents=True, exist_ok=True)
    coarse_of = np.asarray(fine_to_coarse, dtype=np.int64)
    for name, (x, y) in (("train", train), ("test", test)):
        entry = {
            "filenames": [f"{i:05d}.png" for i in range(len(x))],
            "batch_label": f"{name} batch 1 of 1",
            "fine_labels": [int(v) for v in y],
            "coarse_labels": [int(v) for v in coarse_of[np.asarray(y, dtype=np.int64)]],
            "data": np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f, protocol=4)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(fine_names), "coarse_label_names": list(coarse_names)}, f)
    write_manifest(folder, CIFAR100_FILES, source, {"train": int(len(train[0])), "test": int(len(test[0]))})
    return folder


_LAYOUT = {"cifar10": (CIFAR10_DIR, 10), "cifar100": (CIFAR100_DIR, 100)}


def verify_cifar(root: Path, which: str, expect_per_class: tuple[int, int] | None) -> str:
    """Check presence, shapes, labels, per-class counts and (with a manifest) checksums.

    Returns a summary like "train 50000, test 10000"; any problem is one `DataMissingError`
    that names the prepare command.
    """
    subdir, n_classes = _LAYOUT[which]
    folder = Path(root) / subdir
    check_checksums(Path(root), which, rehash=True)
    summary = []
    for train in (True, False):
        split = "train" if train else "test"
        x, y = load_cifar(str(root), train=train, which=which)
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, 32, 32) or x.dtype != torch.uint8:
            raise DataMissingError(f"unexpected {which.upper()} image array {tuple(x.shape)} in {folder}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise DataMissingError(f"{which.upper()} labels outside 0..{n_classes - 1} in {folder}")
        counts = torch.bincount(y, minlength=n_classes)
        if expect_per_class is not None:
            want = expect_per_class[0 if train else 1]
            if not bool((counts == want).all()):
                raise DataMissingError(
                    f"{which.upper()} {split} split has per-class counts from {int(counts.min())} "
                    f"to {int(counts.max())}, expected {want} each"
                )
        summary.append(f"{split} {len(y)}")
    return ", ".join(summary)


def verify_cifar10(root: Path, expect_per_class: tuple[int, int] | None = (5000, 1000)) -> str:
    """`verify_cifar` for CIFAR-10 (full set: 5000 train / 1000 test images per class)."""
    return verify_cifar(root, "cifar10", expect_per_class)


def missing_message(root: Path, which: str) -> str:
    name = which.lower()
    source = {"cifar100": " --download (or --from cifar-100-python.tar.gz)"}.get(name, "")
    command = f"python -m hightpr.data.prepare {name}{source} --data-dir {root}"
    if Path(root).name.startswith("tiny"):
        command = repair_command(Path(root), name)
    return (
        f"{name.upper()} not found under {root} (looked for torchvision's layout). "
        f"Prepare it with `{command}` "
        "(or set HIGHTPR_DATA_DIR / paths.data_dir to where it is)."
    )


@lru_cache(maxsize=8)
def load_cifar(root: str, train: bool, which: str = "cifar10") -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N,3,32,32] uint8 and labels [N] int64, decoded once per process."""
    cls = {"cifar10": PreparedCIFAR10, "cifar100": PreparedCIFAR100}[which]
    check_checksums(Path(root), which)
    try:
        ds = cls(root=root, train=train, download=False)
    except RuntimeError as err:
        raise DataMissingError(missing_message(Path(root), which)) from err
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as err:
        raise DataMissingError(
            f"{which.upper()} files under {root} are corrupt ({err}); repair with "
            f"`{repair_command(Path(root), which)}`"
        ) from err
    x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    y = torch.as_tensor(ds.targets, dtype=torch.int64)
    return x, y
