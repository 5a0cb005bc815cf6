"""dataset=images: class folders or a CSV of the user's own images, checked, split, cached, trained.

Images are made here with PIL (16-24 px, several modes and sizes); the expected pixels come from
PIL directly, the expected split sizes from the fractions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from hightpr.data.image_files import decode_chw
from hightpr.data.image_table import SAMPLES
from hightpr.data.images import ImagesDataModule
from hightpr.errors import HightprError
from tests.conftest import run_train, run_train_subprocess

N_POS, N_NEG = 12, 28
IMAGES = ["dataset=images", "dataset.image_size=16", "dataset.decode_workers=0", "dataset.crop_padding=2",
          "trainer.max_epochs=1", "trainer.batch_size=8"]
SUMMARY = {"train_pos": 8, "train_neg": 20, "val_pos": 2, "val_neg": 2, "test_pos": 2, "test_neg": 6}


def write_image(path, label: int, i: int) -> None:
    """A positive is bright, a negative dark; modes and sizes vary (RGB, L, RGBA, P; 16 to 24 px)."""
    rng = np.random.default_rng(i)
    base = 170 if label else 60
    h, w = 16 + i % 3 * 4, 16 + i % 2 * 8
    x = np.clip(rng.normal(base, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(x)
    img = {0: img, 1: img.convert("L"), 2: img.convert("RGBA"), 3: img.convert("P")}[i % 4]
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def image_folders(root, n_pos: int = N_POS, n_neg: int = N_NEG):
    """root/pos/*.png and root/neg/*.png (one in a subfolder)."""
    for i in range(n_pos):
        write_image(root / "pos" / f"p{i:02d}.png", 1, i)
    for i in range(n_neg):
        write_image(root / "neg" / ("sub" if i == 0 else "") / f"n{i:02d}.png", 0, 100 + i)
    return root


@pytest.fixture
def folders(tmp_path):
    return image_folders(tmp_path / "imgs")


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# -- reading and splitting ------------------------------------------------------------------------

def test_class_folders_split_stratified_and_cache_holds_the_pixels(folders, tmp_path):
    dm = ImagesDataModule(root=str(folders), positive="pos", image_size=16, cache_dir=str(tmp_path / "c"),
                          decode_workers=0)
    dm.setup()
    # stratified_group_split: sample k (0-based) of a shuffled class goes to the part whose boundary
    # (0.7, 0.8, 1.0 x its count) k + 1/2 falls before: 12 positives 8/2/2 (8.4, 9.6), 28 negatives 20/2/6
    assert dm.summary() == SUMMARY
    table = dm.table
    assert sorted(table["label"].unique()) == ["neg", "pos"] and len(table) == N_POS + N_NEG
    ids = torch.cat([s.ids for s in dm.splits.values()]).sort().values
    assert torch.equal(ids, torch.arange(N_POS + N_NEG))
    for name, s in dm.splits.items():
        rows = s.ids.numpy()
        assert (table["split"][rows] == name).all()
        assert torch.equal(s.y, torch.tensor((table["label"][rows] == "pos").to_numpy()).float())
        for k in (0, len(s) - 1):  # the cache holds PIL's own RGB conversion and bilinear resize
            img = Image.open(table["path"][rows[k]]).convert("RGB").resize((16, 16), Image.BILINEAR)
            assert torch.equal(s.x[k], torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
    cache = list((tmp_path / "c").glob("*.u8"))
    assert len(cache) == 1 and cache[0].stat().st_size == (N_POS + N_NEG) * 3 * 16 * 16
    stamp = cache[0].stat().st_mtime_ns
    again = ImagesDataModule(root=str(folders), positive="pos", image_size=16, cache_dir=str(tmp_path / "c"))
    again.setup()
    assert cache[0].stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert torch.equal(again.splits["val"].ids, dm.splits["val"].ids)
    other = ImagesDataModule(root=str(folders), positive="pos", image_size=16, split_seed=1,
                             cache_dir=str(tmp_path / "c"))
    other.setup()
    assert not torch.equal(other.splits["test"].ids, dm.splits["test"].ids)
    batch = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert batch["x"].dtype == torch.float32 and batch["x"].shape[1:] == (3, 16, 16)


def test_a_csv_split_column_is_kept_and_paths_are_relative_to_the_csv(folders, tmp_path):
    files = sorted(folders.rglob("*.png"))
    split = ["train", "train", "val", "test"] * 10
    table = pd.DataFrame({"path": [str(p.relative_to(folders)) for p in files],
                          "label": ["1" if p.parent.name == "pos" else "0" for p in files], "split": split})
    table.to_csv(folders / "list.csv", index=False)
    dm = ImagesDataModule(csv=str(folders / "list.csv"), positive="1", image_size=16,
                          cache_dir=str(tmp_path / "c"), decode_workers=0)
    dm.setup()
    for name, s in dm.splits.items():
        assert s.ids.tolist() == [i for i, v in enumerate(split) if v == name]
    expected = table["label"][3::4].astype(int).to_numpy()
    assert torch.equal(dm.splits["test"].y, torch.tensor(expected).float())


@pytest.mark.parametrize("problem, message", [
    ("missing", "line 3: {root}/pos/gone.png does not exist"),
    ("label", "label 'mallignant' ({root}/pos/p01.png) is not one of the classes ['0', '1']"),
    ("third", "has the labels ['0', '1', '2']: list every class with dataset.classes"),
    ("positive", "name the critical class among ['0', '1'] with dataset.positive=NAME (got '7')"),
    ("no_val_pos", "the val split has no positives"),
    ("no_csv", "dataset.csv={root}/nowhere.csv: no such file"),
])
def test_bad_tables_are_refused_naming_the_file_or_value(folders, problem, message):
    files = sorted((folders / "pos").glob("*.png"))[:6] + sorted((folders / "neg").glob("*.png"))[:6]
    table = pd.DataFrame({"path": [str(p) for p in files], "label": ["1"] * 6 + ["0"] * 6,
                          "split": ["train", "val", "test"] * 4})
    positive, classes, csv = "1", None, folders / "list.csv"
    if problem == "missing":
        table.loc[1, "path"] = str(folders / "pos" / "gone.png")
    if problem == "label":
        table.loc[1, "label"], classes = "mallignant", ["0", "1"]
    if problem == "third":
        table.loc[1, "label"] = "2"
    if problem == "positive":
        positive = "7"
    if problem == "no_val_pos":
        table["split"] = ["train", "test"] * 3 + ["train", "val", "test"] * 2
    if problem == "no_csv":
        csv = folders / "nowhere.csv"
    table.to_csv(folders / "list.csv", index=False)
    dm = ImagesDataModule(csv=str(csv), positive=positive, classes=classes, image_size=16)
    with pytest.raises(HightprError) as err:
        dm.setup()
    assert message.format(root=folders) in str(err.value) and "\n" not in str(err.value)


def test_a_truncated_image_is_named_and_leaves_no_cache(folders, tmp_path):
    victim = folders / "neg" / "n05.png"
    truncate(victim)
    with pytest.raises(HightprError, match=f"{victim}: not a readable image"):
        decode_chw(victim, 16)
    dm = ImagesDataModule(root=str(folders), positive="pos", image_size=16, cache_dir=str(tmp_path / "c"),
                          decode_workers=2)  # the error crosses the decode processes
    with pytest.raises(HightprError, match=f"{victim}: not a readable image"):
        dm.setup()
    assert not list((tmp_path / "c").iterdir())


# -- through train.py --------------------------------------------------------------------------

def test_images_train_end_to_end_and_samples_csv_gives_the_same_split(folders, tmp_path):
    r = run_train(tmp_path / "data", tmp_path, *IMAGES, f"dataset.root={folders}", "dataset.positive=pos")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.metrics["data"] == SUMMARY
    run = r.run_dir
    assert OmegaConf.load(run / "config_resolved.yaml").model._target_.endswith("resnet18")
    samples = pd.read_csv(run / SAMPLES)
    assert list(samples.columns) == ["path", "label", "split", "id"] and len(samples) == N_POS + N_NEG
    test_ids = np.sort(np.load(run / "logits_test.npz")["ids"])
    assert test_ids.tolist() == samples["id"][samples["split"] == "test"].tolist()
    again = run_train(tmp_path / "data", tmp_path / "again", *IMAGES, f"dataset.csv={run / SAMPLES}",
                      "dataset.positive=pos")
    assert again.returncode == 0, again.stderr[-3000:]
    with np.load(again.run_dir / "logits_test.npz") as z:
        assert np.sort(z["ids"]).tolist() == test_ids.tolist()
    assert (again.run_dir / SAMPLES).read_text() == (run / SAMPLES).read_text()


def test_a_truncated_png_is_one_error_line_and_nothing_is_written(folders, tmp_path):
    truncate(folders / "pos" / "p03.png")
    r = run_train_subprocess(tmp_path / "data", tmp_path, *IMAGES, f"dataset.root={folders}",
                             "dataset.positive=pos")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {folders}/pos/p03.png: not a readable image (")
    assert errors[0].endswith("); remove or replace it")
    assert not list((tmp_path / "outputs").rglob("metrics.json"))
    assert not [p for p in (tmp_path / "outputs").rglob("*") if p.is_dir() and p.parent.name == "runs"]
    assert not list((tmp_path / "data").rglob("*.u8"))
