"""Melanoma, AdrenalMNIST3D and MRI-style volumes: splits, prepare commands, models, end-to-end runs.

Fast tests run on tiny generated data in the exact source layouts; the `slow` ones train on the
real offline sets in ../shared/data (skipped when absent).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from hightpr.data.adrenal3d import FILES, Adrenal3DDataModule, prepare_adrenal3d
from hightpr.data.augment import normalise, random_flips
from hightpr.data.melanoma import MANIFEST, MelanomaDataModule, prepare_melanoma
from hightpr.data.prepare import main as prepare_main
from hightpr.data.splits import melanoma_split, member_split, stratified_group_split, subsample_positives
from hightpr.data.synthetic_mri import synthetic_dir_name, write_synthetic_mri
from hightpr.data.volumes import VolumesDataModule
from hightpr.errors import HightprError
from hightpr.models.cnn3d import cnn3d, cnn3d_dual
from hightpr.models.resnet18 import resnet18
from hightpr.tables.standins import lesion_jpeg, write_isic_source
from tests.conftest import ROOT, run_train

SOURCE = Path(os.environ.get("HIGHTPR_SOURCE_DATA", ROOT.parent / "shared" / "data"))
MRI_SHAPES = dict(t2_shape=(8, 16, 16), dwi_shape=(4, 8, 8))


def as_set(t: torch.Tensor) -> set[int]:
    return set(t.tolist())


# -- tiny sources in the real layouts --------------------------------------------------------------

def write_adrenal_source(folder: Path, counts=None, size: int = 28, seed: int = 0) -> None:
    """AdrenalMNIST3D's npz keys and dtypes; a positive is a large sphere, a negative a small one."""
    counts = counts or {"train": (60, 20), "val": (16, 6), "test": (24, 8)}
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.mgrid[:size, :size, :size]).astype(float)
    arrays = {}
    for split, (n, n_pos) in counts.items():
        y = rng.permutation(np.r_[np.ones(n_pos), np.zeros(n - n_pos)]).astype(np.uint8)
        x = np.zeros((n, size, size, size), np.uint8)
        for i, label in enumerate(y):
            c = rng.uniform(size * 0.4, size * 0.6, 3)
            r = rng.uniform(7, 9) if label else rng.uniform(4, 6)
            x[i][((grid - c[:, None, None, None]) ** 2).sum(0) < r**2] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None]
    np.savez_compressed(folder / FILES[size], **arrays)


@pytest.fixture(scope="module")
def melanoma_data(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    base = tmp_path_factory.mktemp("melanoma")
    table = write_isic_source(base / "source")
    prepare_melanoma(base / "data", base / "source")
    return base, table


@pytest.fixture(scope="module")
def adrenal_data(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("adrenal")
    write_adrenal_source(base / "source")
    prepare_adrenal3d(base / "data", base / "source")
    return base


@pytest.fixture(scope="module")
def mri_data(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("mri")
    write_synthetic_mri(data_dir, ratio=2, n_train=45, n_test=24, **MRI_SHAPES)
    return data_dir


# -- split rules --------------------------------------------------------------------------------

def test_stratified_split_without_groups_is_exact_and_disjoint():
    y = (torch.arange(1000) % 11 == 0).long()  # 91 positives
    parts = stratified_group_split(y, (0.7, 0.1, 0.2), seed=3)
    assert [len(p) for p in parts] == [700, 100, 200]
    assert [int(y[p].sum()) for p in parts] == [64, 9, 18]  # 0.7 / 0.1 / 0.2 of 91, rounded
    assert sorted(torch.cat(parts).tolist()) == list(range(1000))
    again = stratified_group_split(y, (0.7, 0.1, 0.2), seed=3)
    assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True))
    other = stratified_group_split(y, (0.7, 0.1, 0.2), seed=4)
    assert not torch.equal(parts[0], other[0])


def test_melanoma_split_groups_patients_and_keeps_the_ratio():
    """Real-sized: 6834 negatives, 662 positives, 1 to 4 images per patient (positives by patient)."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 5, 3000)
    groups = torch.as_tensor(np.repeat(np.arange(3000), sizes))
    positive_patient = torch.as_tensor(rng.random(3000) < 0.088)
    y = positive_patient[groups].long()
    s = melanoma_split(y, groups, split_seed=0)
    n, n_pos = len(y), int(y.sum())
    for part, frac in ((s.train, 0.7), (s.val, 0.1), (s.test, 0.2)):
        assert abs(len(part) / n - frac) < 0.005
        assert abs(int(y[part].sum()) / n_pos - frac) < 0.02  # stratified: the same share of positives
    g = [as_set(groups[p]) for p in (s.train, s.val, s.test)]
    assert not (g[0] & g[1] or g[0] & g[2] or g[1] & g[2])  # no patient in two splits
    assert sorted(torch.cat([s.train, s.val, s.test]).tolist()) == list(range(n))
    again = melanoma_split(y, groups, split_seed=0)
    assert torch.equal(s.test, again.test) and torch.equal(s.train, again.train)
    assert not torch.equal(s.test, melanoma_split(y, groups, split_seed=1).test)


def test_positive_ratio_subsamples_every_split():
    y = torch.cat([torch.zeros(6834), torch.ones(662)]).long()
    s = melanoma_split(y, None, positive_ratio=170)
    for part in (s.train, s.val, s.test):
        n_neg = int((y[part] == 0).sum())
        assert int(y[part].sum()) == round(n_neg / 170)
    assert int((y[s.train] == 0).sum()) == 4784  # negatives are all kept (0.7 x 6834)
    with pytest.raises(HightprError, match="needs .* positives"):
        subsample_positives(y, torch.arange(len(y)), ratio=2, seed=0)


def test_member_split_is_the_papers_stratified_80_20():
    y = torch.as_tensor([1] * 100 + [0] * 200)  # 300 subjects at 1:2
    splits = [member_split(y, seed) for seed in range(1, 11)]
    for tr, va in splits:
        assert (len(tr), int(y[tr].sum()), len(va), int(y[va].sum())) == (240, 80, 60, 20)
        assert not as_set(tr) & as_set(va) and len(as_set(tr) | as_set(va)) == 300
    assert len({tuple(va.tolist()) for _, va in splits}) == 10  # each member its own split
    assert torch.equal(member_split(y, 1)[1], splits[0][1])


# -- augmentation and models --------------------------------------------------------------------

def test_3d_flips_are_per_sample_and_lossless():
    torch.manual_seed(0)
    x = torch.arange(16 * 2 * 3 * 4 * 5, dtype=torch.float32).view(16, 2, 3, 4, 5)
    out = random_flips(x, (-3, -2, -1))
    for i in range(16):
        candidates = [x[i].flip(dims) if dims else x[i] for dims in
                      [(), (-3,), (-2,), (-1,), (-3, -2), (-3, -1), (-2, -1), (-3, -2, -1)]]
        assert any(torch.equal(out[i], c) for c in candidates)
    assert not torch.equal(out, x) and not all(torch.equal(out[i], out[0].flip(-1)) for i in range(16))
    assert normalise(torch.full((2, 3, 4, 4, 4), 255, dtype=torch.uint8), (0.5,) * 3, (0.5,) * 3).eq(1).all()


def test_resnet18_is_torchvision_with_our_head(tmp_path):
    model = resnet18(num_logits=2)
    assert sum(p.numel() for p in model.parameters()) == 11_177_538  # 11 176 512 trunk + 512x2 + 2
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)
    narrow = resnet18(width=8)
    assert narrow(torch.randn(2, 3, 32, 32)).shape == (2, 1)
    weights = resnet18().state_dict()
    torch.save({k: torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()},
               tmp_path / "resnet18.pth")
    loaded = resnet18(pretrained_path=str(tmp_path / "resnet18.pth"))
    ref = torch.load(tmp_path / "resnet18.pth")
    assert torch.equal(loaded.conv1.weight, ref["conv1.weight"])
    assert torch.equal(loaded.layer4[1].bn2.running_var, ref["layer4.1.bn2.running_var"])
    with pytest.raises(HightprError, match="never downloaded"):
        resnet18(pretrained_path=str(tmp_path / "missing.pth"))


def test_3d_cnns_one_and_two_paths():
    assert cnn3d(width=4)(torch.randn(3, 1, 28, 28, 28)).shape == (3, 1)
    dual = cnn3d_dual(in_channels=(3, 1), width=4, num_logits=2)
    x = torch.randn(2, 4, 8, 16, 16, requires_grad=True)
    dual(x).sum().backward()
    assert [type(m) for m in dual.paths[0].modules()][1:] == [type(m) for m in dual.paths[1].modules()][1:]
    assert dual.paths[0].features[0].in_channels == 3 and dual.paths[1].features[0].in_channels == 1
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dual.paths.parameters())
    assert x.grad[:, :3].abs().sum() > 0 and x.grad[:, 3:].abs().sum() > 0  # both modalities used
    with pytest.raises(ValueError, match="expects 4"):
        dual(torch.randn(2, 5, 8, 16, 16))


# -- prepare commands ---------------------------------------------------------------------------

def test_prepare_melanoma_verifies_and_is_idempotent(melanoma_data, capsys):
    base, table = melanoma_data
    target = base / "data" / "melanoma"
    assert len(list((target / "images").glob("*.jpg"))) == len(table)
    manifest = json.loads((target / MANIFEST).read_text())
    assert (manifest["count"], manifest["positives"]) == (len(table), int(table["target"].sum()))
    some = target / "images" / f"{table['image_name'][0]}.jpg"
    before = some.stat().st_mtime_ns
    assert prepare_main(["melanoma", "--data-dir", str(base / "data")]) == 0
    assert capsys.readouterr().out.startswith("already prepared")
    assert some.stat().st_mtime_ns == before


def test_prepare_melanoma_rebuilds_a_truncated_image(tmp_path):
    write_isic_source(tmp_path / "src", n_patients=12)
    prepare_melanoma(tmp_path / "data", tmp_path / "src")
    victim = next((tmp_path / "data" / "melanoma" / "images").glob("*.jpg"))
    victim.write_bytes(victim.read_bytes()[:50])
    assert prepare_melanoma(tmp_path / "data", tmp_path / "src").startswith("prepared")
    Image.open(victim).load()  # decodes again


def test_prepare_melanoma_errors(tmp_path, capsys):
    assert prepare_main(["melanoma", "--from", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "train.csv" in err and err.count("\n") == 1
    table = write_isic_source(tmp_path / "src", n_patients=12)
    table.drop(columns="target").to_csv(tmp_path / "src" / "train.csv", index=False)
    with pytest.raises(HightprError, match=r"lacks the column\(s\) \['target'\]"):
        prepare_melanoma(tmp_path / "data", tmp_path / "src")
    table.to_csv(tmp_path / "src" / "train.csv", index=False)
    with tarfile.open(tmp_path / "src" / "images.tar", "w") as tar:  # one image is not a JPEG
        for i, name in enumerate(table["image_name"]):
            data = b"not a jpeg" if i == 3 else lesion_jpeg(np.random.default_rng(i), False)
            info = tarfile.TarInfo(f"images/{name}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(HightprError, match=f"{table['image_name'][3]}.jpg does not decode"):
        prepare_melanoma(tmp_path / "data", tmp_path / "src")
    assert not (tmp_path / "data" / "melanoma").exists()  # nothing half-written left as prepared


def test_prepare_adrenal3d(adrenal_data, capsys, tmp_path):
    data_dir = adrenal_data / "data"
    args = ["adrenal3d", "--from", str(adrenal_data / "source"), "--data-dir", str(data_dir)]
    assert prepare_main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("already prepared") and "train 60 (20 pos), val 16 (6 pos), test 24 (8 pos)" in out
    assert "differs from the official" in out
    assert prepare_main(["adrenal3d", "--from", str(tmp_path), "--data-dir", str(tmp_path)]) == 2
    assert "no adrenalmnist3d.npz or adrenalmnist3d_64.npz in" in capsys.readouterr().err
    np.savez(tmp_path / FILES[28], train_images=np.zeros((2, 28, 28, 28), np.uint8))
    with pytest.raises(HightprError, match="lacks train_images / train_labels"):
        prepare_adrenal3d(tmp_path / "data", tmp_path)


def test_synthetic_mri_counts_determinism_and_idempotence(tmp_path, capsys):
    small = dict(t2_shape=(4, 8, 8), dwi_shape=(2, 4, 4))
    for ratio, pos in ((2, (100, 33)), (8, (33, 11))):
        write_synthetic_mri(tmp_path / "a", ratio=ratio, **small)
        table = pd.read_csv(tmp_path / "a" / synthetic_dir_name(ratio) / "labels.csv")
        for split, n, n_pos in (("train", 300, pos[0]), ("test", 100, pos[1])):
            part = table[table["split"] == split]
            assert (len(part), int(part["label"].sum())) == (n, n_pos)
    write_synthetic_mri(tmp_path / "b", ratio=2, **small)
    a, b = (tmp_path / d / synthetic_dir_name(2) for d in "ab")
    assert (a / "labels.csv").read_bytes() == (b / "labels.csv").read_bytes()
    with np.load(a / "synth-train-0007.npz") as za, np.load(b / "synth-train-0007.npz") as zb:
        assert za["dwi"].shape == (3, 2, 4, 4) and za["t2"].shape == (1, 4, 8, 8)
        assert np.array_equal(za["dwi"], zb["dwi"]) and np.array_equal(za["t2"], zb["t2"])
    before = (a / "labels.csv").stat().st_mtime_ns
    assert write_synthetic_mri(tmp_path / "a", ratio=2, **small).startswith("already prepared")
    assert (a / "labels.csv").stat().st_mtime_ns == before
    (a / "synth-test-0003.npz").unlink()
    assert write_synthetic_mri(tmp_path / "a", ratio=2, **small).startswith("prepared")
    assert "SYNTHETIC" in (a / "README.txt").read_text()


def test_synthetic_lesions_show_in_both_modalities():
    """A positive differs from its negative twin (same draws) only by a blob, at one physical place,
    that is dark on T2 and bright at b = 1000 (low ADC)."""
    from hightpr.data.synthetic_mri import _grid, _subject

    for i in range(5):
        pos, neg = (_subject(np.random.default_rng([9, i]), label, (12, 24, 24), (6, 12, 12))
                    for label in (True, False))
        d_t2 = pos["t2"][0].astype(float) - neg["t2"][0].astype(float)
        d_b1000 = pos["dwi"][2].astype(float) - neg["dwi"][2].astype(float)
        assert d_t2.min() < -0.15 and d_t2.max() < 0.01
        assert d_b1000.max() > 0.1
        where_t2 = _grid((12, 24, 24)).reshape(3, -1)[:, d_t2.argmin()]
        where_dwi = _grid((6, 12, 12)).reshape(3, -1)[:, d_b1000.argmax()]
        assert np.abs(where_t2 - where_dwi).max() < 0.4  # same lesion in both modalities


# -- DataModules --------------------------------------------------------------------------------

def test_melanoma_datamodule(melanoma_data):
    base, table = melanoma_data
    root = base / "data" / "melanoma"
    dm = MelanomaDataModule(root, image_size=32, decode_workers=0, batch_size=8)
    dm.setup()
    n, s = len(table), dm.splits
    assert sum(len(d) for d in s.values()) == n and dm.num_sample_ids == n
    ids = [as_set(d.ids) for d in s.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    patients = [set(table["patient_id"][sorted(i)]) for i in ids]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    for name, d in s.items():
        assert torch.equal(d.y, torch.as_tensor(table["target"].to_numpy()[d.ids.numpy()]).float()), name
    assert abs(len(s["train"]) / n - 0.7) < 0.05 and abs(len(s["test"]) / n - 0.2) < 0.05
    cache = root / "cache" / "images_32.u8"
    assert cache.stat().st_size == n * 3 * 32 * 32
    stamp = cache.stat().st_mtime_ns
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (8, 3, 32, 32) and batch["x"].dtype == torch.uint8
    first = s["test"].ids[0].item()
    img = np.asarray(Image.open(root / "images" / f"{table['image_name'][first]}.jpg").convert("RGB"))
    assert torch.equal(s["test"].x[0], torch.from_numpy(img.copy()).permute(2, 0, 1))  # 32 px: no resize
    x = dm.to_input(dm.augment_batch(batch["x"]))
    assert x.dtype == torch.float32 and x.shape == (8, 3, 32, 32)
    again = MelanomaDataModule(root, image_size=32, decode_workers=0)
    again.setup()
    assert cache.stat().st_mtime_ns == stamp  # the cache is reused, not rebuilt
    assert torch.equal(again.splits["val"].ids, s["val"].ids)
    resized = MelanomaDataModule(root, image_size=24, decode_workers=2, positive_ratio=6,
                                 cache_dir=str(base / "elsewhere"))  # a process pool builds it
    resized.setup()
    assert resized.splits["train"].x.shape[1:] == (3, 24, 24)
    assert (base / "elsewhere" / "images_24.u8").is_file() and not (root / "cache" / "images_24.u8").exists()
    for d in resized.splits.values():
        assert int(d.y.sum()) == round(int((d.y == 0).sum()) / 6)


def test_adrenal_datamodule_official_and_member_splits(adrenal_data):
    root = adrenal_data / "data" / "medmnist3d"
    dm = Adrenal3DDataModule(root, size=28)
    assert dm.summary() == {"train_pos": 20, "train_neg": 40, "val_pos": 6, "val_neg": 10,
                            "test_pos": 8, "test_neg": 16}
    assert dm.splits["train"].x.shape == (60, 1, 28, 28, 28) and dm.num_sample_ids == 100
    assert torch.equal(torch.cat([d.ids for d in dm.splits.values()]), torch.arange(100))
    a, b = (Adrenal3DDataModule(root, val_split="member", seed=s) for s in (1, 2))
    a.setup(), b.setup()
    assert (len(a.splits["train"]), len(a.splits["val"])) == (61, 15)  # 80/20 of the 76 pooled
    assert int(a.splits["val"].y.sum()) == 5  # stratified: 26 positives x 0.2, rounded
    assert not torch.equal(a.splits["val"].ids, b.splits["val"].ids)
    assert torch.equal(a.splits["test"].ids, dm.splits["test"].ids)
    assert not as_set(a.splits["train"].ids) & as_set(a.splits["val"].ids)
    with pytest.raises(HightprError, match="prepare adrenal3d"):
        Adrenal3DDataModule(root, size=64).setup()


def test_volumes_datamodule(mri_data):
    root = mri_data / synthetic_dir_name(2)
    dm = VolumesDataModule(root, seed=1)
    dm.setup()
    assert dm.channels == (3, 1)
    assert dm.splits["train"].x.shape[1:] == (4, 8, 16, 16)  # DWI resampled to the T2 grid
    assert dm.summary() == {"train_pos": 12, "train_neg": 24, "val_pos": 3, "val_neg": 6,
                            "test_pos": 8, "test_neg": 16}
    other = VolumesDataModule(root, seed=2)
    other.setup()
    assert not torch.equal(dm.splits["val"].ids, other.splits["val"].ids)
    assert torch.equal(dm.splits["test"].ids, other.splits["test"].ids)
    ids = [as_set(d.ids) for d in dm.splits.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    same = VolumesDataModule(root, seed=1)
    same.setup()
    assert torch.equal(same.splits["train"].ids, dm.splits["train"].ids)
    grid = VolumesDataModule(root, grid=(4, 8, 8))
    grid.setup()
    assert grid.splits["test"].x.shape[1:] == (4, 4, 8, 8)
    with pytest.raises(HightprError, match="prepare synthetic-mri"):
        VolumesDataModule(mri_data / "nowhere").setup()


# -- end to end through train.py ---------------------------------------------------------------

def _ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r.metrics


def _model_of(run_dir: Path) -> str:
    return OmegaConf.load(run_dir / "config_resolved.yaml").model._target_


def test_melanoma_trains_end_to_end(melanoma_data, tmp_path):
    r = run_train(melanoma_data[0] / "data", tmp_path, "dataset=melanoma",
                      "dataset.image_size=32", "dataset.crop_padding=4", "dataset.decode_workers=0",
                  "trainer.batch_size=16")
    m = _ok(r)
    assert _model_of(r.run_dir).endswith("resnet18")  # the dataset brings its paper's model
    assert m["data"]["train_pos"] + m["data"]["train_neg"] > 2 * (m["test"]["n_pos"] + m["test"]["n_neg"])
    assert 0.0 <= m["test"]["auc"] <= 1.0


def test_adrenal3d_trains_end_to_end(adrenal_data, tmp_path):
    r = run_train(adrenal_data / "data", tmp_path, "dataset=adrenal3d", "trainer.batch_size=16")
    m = _ok(r)
    assert _model_of(r.run_dir) == "hightpr.models.cnn3d.cnn3d"
    assert (m["test"]["n_pos"], m["test"]["n_neg"]) == (8, 16) and "fpr@0fn" in m["test"]


def test_volumes_trains_end_to_end_with_rankreg_buffer(mri_data, tmp_path):
    """The dual-path input is one tensor, so RankReg's buffer concatenation works unchanged."""
    r = run_train(mri_data, tmp_path, "dataset=volumes", "reg=rankreg", "model.num_logits=2",
                  "trainer.batch_size=8", "reg.buffer.size=4")
    m = _ok(r)
    assert _model_of(r.run_dir) == "hightpr.models.cnn3d.cnn3d_dual"
    assert (m["test"]["n_pos"], m["test"]["n_neg"]) == (8, 16)
    assert all(f"fpr@{k}fn" in m["test"] for k in (0, 1, 2, 5))


@pytest.mark.parametrize("model, fits", [("resnet10", "model=cnn3d, cnn3d_dual"),
                                         ("cnn3d", "model=cnn3d, cnn3d_dual or adjust")])
def test_a_model_that_cannot_take_the_data_is_refused(mri_data, tmp_path, model, fits):
    r = run_train(mri_data, tmp_path, "dataset=volumes", f"model={model}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"model={model} cannot take the inputs of dataset=volumes" in r.stderr and fits in r.stderr


def test_missing_data_is_one_clear_message(tmp_path):
    r = run_train(tmp_path, tmp_path, "dataset=melanoma")
    assert r.returncode != 0 and "prepare melanoma --from" in r.stderr and "Traceback" not in r.stderr


# -- real offline data (slow) ---------------------------------------------------------------------

needs_melanoma = pytest.mark.skipif(not (SOURCE / "melanoma" / "train.csv").is_file(),
                                    reason="no offline Melanoma source")
needs_adrenal = pytest.mark.skipif(not (SOURCE / "medmnist3d" / FILES[28]).is_file(),
                                   reason="no offline AdrenalMNIST3D source")


@needs_melanoma
@pytest.mark.slow
def test_real_melanoma_protocol_trains(tmp_path):
    data_dir = tmp_path / "data"
    assert prepare_melanoma(data_dir, SOURCE / "melanoma").startswith("prepared")
    dm = MelanomaDataModule(data_dir / "melanoma", image_size=64)
    assert dm.summary() == {"train_pos": 463, "train_neg": 4784, "val_pos": 67, "val_neg": 683,
                            "test_pos": 132, "test_neg": 1367}
    r = run_train(data_dir, tmp_path, "dataset=melanoma", "model.width=16",
                  "dataset.image_size=64", "trainer.max_epochs=1", "dataset.positive_ratio=50")
    m = _ok(r)
    assert (m["test"]["n_pos"], m["test"]["n_neg"]) == (27, 1367)
    assert m["test"]["auc"] > 0.6


@needs_adrenal
@pytest.mark.slow
def test_real_adrenal3d_protocol_trains(tmp_path):
    data_dir = tmp_path / "data"
    prepare_adrenal3d(data_dir, SOURCE / "medmnist3d")
    m = _ok(run_train(data_dir, tmp_path, "dataset=adrenal3d", "trainer.max_epochs=10",
                      "trainer.patience=10"))
    assert m["data"] == {"train_pos": 259, "train_neg": 929, "val_pos": 22, "val_neg": 76,
                         "test_pos": 69, "test_neg": 229}
    assert m["test"]["auc"] > 0.7
