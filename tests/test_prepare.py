"""Data preparation: JPEG archive -> torchvision CIFAR-10 layout, verified and idempotent."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from hightpr.data.cifar_files import CIFAR10_CLASSES, CIFAR10_DIR, load_cifar, verify_cifar10
from hightpr.data.prepare import main, prepare_cifar10, read_jpeg_archive
from hightpr.errors import DataMissingError, HightprError


@pytest.fixture
def jpeg_archive(tmp_path):
    """3 train + 2 test JPEGs per class in the archive's layout; returns (path, pixels by name)."""
    rng = np.random.default_rng(0)
    path, pixels = tmp_path / "cifar10-jpg.tar.gz", {}
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", 3), ("test", 2)):
            for cls in CIFAR10_CLASSES:
                for i in range(n):
                    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(img).save(buf, format="JPEG", quality=75)
                    name = f"{split}/{cls}/{i:04d}.jpg"
                    info = tarfile.TarInfo(name)
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
                    buf.seek(0)
                    pixels[name] = np.asarray(Image.open(buf).convert("RGB"))
    return path, pixels


def test_archive_becomes_torchvision_layout(jpeg_archive, tmp_path):
    archive, pixels = jpeg_archive
    data_dir = tmp_path / "data"
    splits = read_jpeg_archive(archive)
    assert splits["train"][0].shape == (30, 32, 32, 3) and splits["test"][0].shape == (20, 32, 32, 3)
    from hightpr.data.cifar_files import write_cifar10

    write_cifar10(data_dir, splits["train"], splits["test"], source="test")
    assert verify_cifar10(data_dir, expect_per_class=(3, 2)) == "train 30, test 20"
    x, y = load_cifar(str(data_dir), True, "cifar10")
    assert x.shape == (30, 3, 32, 32)
    # Sorted by path: the first train image is train/airplane/0000.jpg, decoded exactly.
    assert y[0] == 0 and np.array_equal(x[0].permute(1, 2, 0).numpy(), pixels["train/airplane/0000.jpg"])
    assert y[-1] == 9 and np.array_equal(x[-1].permute(1, 2, 0).numpy(), pixels["train/truck/0002.jpg"])


def test_full_count_check_rejects_a_partial_archive(jpeg_archive, tmp_path):
    with pytest.raises(HightprError, match="expected 5000 each"):
        prepare_cifar10(tmp_path / "data", jpeg_archive[0], download=False, force=False)


def test_prepare_is_idempotent_and_rebuilds_corrupt_files(jpeg_archive, tmp_path):
    data_dir, archive = tmp_path / "data", jpeg_archive[0]
    kw = dict(download=False, force=False, expect_per_class=(3, 2))
    assert prepare_cifar10(data_dir, archive, **kw).startswith("prepared")
    batch = data_dir / CIFAR10_DIR / "data_batch_1"
    before = batch.stat().st_mtime_ns
    assert prepare_cifar10(data_dir, archive, **kw).startswith("already prepared")
    assert batch.stat().st_mtime_ns == before
    batch.write_bytes(b"garbage")
    assert prepare_cifar10(data_dir, archive, **kw).startswith("prepared")
    assert load_cifar.__wrapped__(str(data_dir), True, "cifar10")[0].shape == (30, 3, 32, 32)


def test_corrupt_file_is_named(tmp_path):
    from hightpr.data.prepare import make_tiny_cifar10

    root = make_tiny_cifar10(tmp_path)
    with open(root / CIFAR10_DIR / "data_batch_2", "r+b") as f:
        f.write(b"garbage")
    with pytest.raises(DataMissingError, match="data_batch_2 is missing or corrupt"):
        verify_cifar10(root, expect_per_class=None)


def test_a_file_hashed_by_an_earlier_process_is_not_hashed_again_until_it_changes(tmp_path, monkeypatch):
    import os

    from hightpr.data import cifar_files
    from hightpr.data.prepare import make_tiny_cifar10

    root = make_tiny_cifar10(tmp_path)
    monkeypatch.setattr(cifar_files, "_CHECKED", {})
    cifar_files.check_checksums(root, "cifar10")                 # hashes every file, records them
    assert (root / CIFAR10_DIR / cifar_files.VERIFIED).is_file()
    hashed = []
    real_md5 = cifar_files.md5
    monkeypatch.setattr(cifar_files, "md5", lambda path: hashed.append(path.name) or real_md5(path))
    monkeypatch.setattr(cifar_files, "_CHECKED", {})             # as a new process
    cifar_files.check_checksums(root, "cifar10")
    assert hashed == []
    batch = root / CIFAR10_DIR / "data_batch_2"
    before = batch.stat()
    with open(batch, "r+b") as f:                                # same size, new modification time
        f.write(b"garbage")
    monkeypatch.setattr(cifar_files, "_CHECKED", {})
    with pytest.raises(DataMissingError, match="data_batch_2 is missing or corrupt"):
        cifar_files.check_checksums(root, "cifar10")
    assert hashed == ["data_batch_2"]
    monkeypatch.setattr(cifar_files, "_CHECKED", {})
    with pytest.raises(DataMissingError, match="data_batch_2 is missing or corrupt"):
        cifar_files.check_checksums(root, "cifar10")             # the failed hash was not recorded
    os.utime(batch, ns=(before.st_atime_ns, before.st_mtime_ns))  # damaged in place, its time put back:
    monkeypatch.setattr(cifar_files, "_CHECKED", {})
    cifar_files.check_checksums(root, "cifar10")                 # loading trusts size and time ...
    with pytest.raises(DataMissingError, match="data_batch_2 is missing or corrupt"):
        verify_cifar10(root, expect_per_class=None)              # verify hashes whatever was recorded


def test_missing_data_names_the_prepare_command(tmp_path):
    with pytest.raises(DataMissingError, match="python -m hightpr.data.prepare cifar10"):
        load_cifar(str(tmp_path / "nowhere"), True, "cifar10")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["cifar10", "--from", str(tmp_path / "missing.tar.gz"), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
    assert main(["cifar10", "--data-dir", str(tmp_path)]) == 2
    assert "--download" in capsys.readouterr().err


def test_cli_tiny(tmp_path, capsys):
    assert main(["tiny", "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "tiny-cifar10" / CIFAR10_DIR / "test_batch").is_file()
