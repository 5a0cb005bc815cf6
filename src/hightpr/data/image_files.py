"""Image files -> one resized uint8 cache: the decode every file-based dataset and `hightpr-predict` share.

An image of any size and mode is decoded once, converted to RGB and resized to S x S (bilinear;
JPEGs decode small in the DCT domain first). A dataset's images go into one raw uint8 file
[N,3,S,S] that the DataModule memory-maps: an epoch is a gather of rows, never a per-sample
decode. The cache is written to a temporary file and renamed, so the runs of a sweep that start
together never read a half-written one; a key file beside it says which images it holds.
`hightpr-predict` decodes new images with the same `decode_chw`, so a deployed model sees exactly
the pixels its training saw.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hightpr.errors import DataMissingError, HightprError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def decode_image(path: Path, size: int | None = None) -> np.ndarray:
    """One image file -> uint8 [H,W,3]; `size` resizes to size x size (JPEG draft mode: decode small)."""
    with Image.open(path) as img:
        if size is not None:
            img.draft("RGB", (size, size))  # DCT-domain downscale: full-resolution JPEGs stay fast
        img = img.convert("RGB")
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR, reducing_gap=None)
        return np.asarray(img, dtype=np.uint8)


def decode_chw(path: Path | str, size: int) -> np.ndarray:
    """uint8 [3,size,size] of one file; an unreadable or truncated file is one error naming it."""
    try:
        return np.ascontiguousarray(decode_image(Path(path), size).transpose(2, 0, 1))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataMissingError(f"{path}: not a readable image ({err}); remove or replace it") from err


def _decode_job(args: tuple[str, int]) -> np.ndarray:
    return decode_chw(*args)


def cached_images(files: Sequence[Path], size: int, raw: Path, key: Mapping,
                  workers: int | None = None) -> torch.Tensor:
    """uint8 [N,3,size,size] of `files` (in order), memory-mapped from `raw`; built if its key differs.

    `key` (JSON) identifies the images; it is stored beside `raw` (`.json`). Built once (parallel
    decode, `workers` processes, default up to 8; 0 = in this process) into a temporary file and
    renamed; a failed build leaves nothing behind.
    """
    raw, key = Path(raw), dict(key)
    meta = raw.with_suffix(".json")
    n_bytes = len(files) * 3 * size * size
    fresh = raw.is_file() and meta.is_file() and raw.stat().st_size == n_bytes
    if not (fresh and json.loads(meta.read_text()) == key):
        tmp = raw.with_name(f"{raw.name}.{os.getpid()}.tmp")
        try:
            raw.parent.mkdir(parents=True, exist_ok=True)
            out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=(len(files), 3, size, size))
        except OSError as err:
            raise HightprError(f"cannot write the image cache in {raw.parent} ({err}); "
                               "set dataset.cache_dir to a writable folder") from err
        jobs = [(str(f), size) for f in files]
        workers = min(8, os.cpu_count() or 1) if workers is None else workers
        try:
            if workers > 0 and len(jobs) > 1:
                with ProcessPoolExecutor(workers) as pool:
                    for i, img in enumerate(pool.map(_decode_job, jobs, chunksize=64)):
                        out[i] = img
            else:
                for i, job in enumerate(jobs):
                    out[i] = _decode_job(job)
            out.flush()
        except BaseException:
            del out
            tmp.unlink(missing_ok=True)
            raise
        del out
        tmp.replace(raw)
        meta.write_text(json.dumps(key))
    return torch.from_file(str(raw), shared=False, size=n_bytes, dtype=torch.uint8).view(
        len(files), 3, size, size)
