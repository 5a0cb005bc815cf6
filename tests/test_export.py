"""hightpr-export: a finished run or ensemble as one .pt2 file that plain PyTorch loads.

The file is checked in a Python where hightpr cannot be imported (`-I -S`: only the environment's
site-packages on the path, so the editable install's path hook is never read): the images are
decoded there by docs/deploy.md's own PIL snippet and scored by the file, and the result is compared
with `hightpr-predict`'s CSV for the same images, with the runs' own `logits_test.npz` and with
the threshold recomputed from `logits_val.npz`.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hightpr.cli.export import main as export_main
from hightpr.cli.predict import main as predict_main
from hightpr.data.image_files import decode_chw
from hightpr.data.image_table import SAMPLES
from hightpr.export import read_metadata
from hightpr.predict import read_predictions
from tests.test_predict import quantile_threshold

ROOT = Path(__file__).resolve().parents[1]

# Runs in the isolated Python: argv[1] is a JSON job {site, decode, jobs: {name: [model, files]}}.
ISOLATED = r"""
import json, sys
job = json.load(open(sys.argv[1]))
sys.path.extend(job["site"])
try:
    import hightpr
except ImportError as err:
    refused = str(err)
else:
    raise SystemExit("hightpr is importable: " + hightpr.__file__)
import torch
exec(job["decode"])
out = {"import hightpr": refused}
for name, (model_path, files) in job["jobs"].items():
    extra = {"hightpr.json": ""}
    model = torch.export.load(model_path, extra_files=extra).module()
    meta = json.loads(extra["hightpr.json"])
    images = torch.stack([decode(f, meta["image_size"]) for f in files])
    with torch.no_grad():
        scores, decisions = model(images)
        first, _ = model(images[:1])
        rest, _ = model(images[1:])
    out[name] = {"meta": meta, "scores": scores.tolist(), "decisions": decisions.tolist(),
                 "dtypes": [str(scores.dtype), str(decisions.dtype)],
                 "split": first.tolist() + rest.tolist(), "threshold": float(model.threshold)}
print(json.dumps(out))
"""


def decode_snippet() -> str:
    """The `decode` function of docs/deploy.md, as a user would copy it."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "deploy.md").read_text(), re.S)
    found = [b for b in blocks if "def decode(" in b]
    assert len(found) == 1
    return found[0]


def run(main, capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def exported(trained_images, tmp_path_factory):
    """The run exported at its quantile threshold (target 0.5), the ensemble at --threshold 0; the
    predictions of both, and what the isolated Python got from the files."""
    folders, run_dir, ens_dir = trained_images
    out = tmp_path_factory.mktemp("export")
    printed, said = {}, {}
    for name, source, args in [("run", run_dir, ["--tpr", "0.5"]), ("ens", ens_dir, ["--threshold", "0"])]:
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            code = export_main([str(source), "--out", str(out / f"{name}.pt2"), *args])
        assert code == 0
        said[name] = stdout.getvalue()
        code = predict_main([str(source), str(folders), "--out", str(out / f"{name}.csv"), *args])
        assert code == 0
        printed[name] = read_predictions(out / f"{name}.csv")
    files = [str(p) for p in printed["run"]["path"]]
    job = {"site": sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}),
           "decode": decode_snippet(),
           "jobs": {name: [str(out / f"{name}.pt2"), files] for name in ("run", "ens")}}
    (out / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATED, str(out / "job.json")],
                          capture_output=True, text=True, cwd=out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.splitlines()[-1])
    return {"run": run_dir, "ens": ens_dir, "out": out, "predicted": printed, "got": got, "said": said}


def test_the_files_are_checked_where_hightpr_cannot_be_imported(exported):
    assert exported["got"]["import hightpr"] == "No module named 'hightpr'"


def test_a_run_file_scores_as_predict_and_as_its_test_logits(exported):
    got, predicted, run = exported["got"]["run"], exported["predicted"]["run"], exported["run"]
    scores = np.array(got["scores"])
    assert len(scores) == 40 and got["dtypes"] == ["torch.float32", "torch.bool"]
    assert np.max(np.abs(scores - predicted["score"].to_numpy())) <= 1e-5
    np.testing.assert_allclose(got["split"], got["scores"], rtol=0, atol=1e-6)  # batches of 1 and 39
    samples = pd.read_csv(run / SAMPLES)
    with np.load(run / "logits_test.npz") as z:
        expected = dict(zip(z["ids"].tolist(), z["scores"].tolist(), strict=True))
    by_path = dict(zip(predicted["path"], scores, strict=True))
    test = samples[samples["split"] == "test"]
    diffs = [abs(by_path[p] - expected[i]) for p, i in zip(test["path"], test["id"], strict=True)]
    assert len(diffs) == 8 and max(diffs) <= 1e-5
    threshold = quantile_threshold(run, 0.5)
    meta = got["meta"]
    assert got["threshold"] == meta["threshold"] == pytest.approx(threshold, abs=0)
    np.testing.assert_array_equal(got["decisions"], scores >= threshold)
    np.testing.assert_array_equal(got["decisions"], predicted["decision"].to_numpy() == 1)
    assert (meta["rule"], meta["target_tpr"], meta["image_size"]) == ("quantile", 0.5, 16)
    assert meta["kind"] == "run"
    assert meta["promise"].startswith("none") and "exchangeable" in meta["assumptions"]
    assert "Image.BILINEAR" in meta["decode"] and "(16, 16)" in meta["decode"]
    said = exported["said"]["run"]
    assert f"threshold {threshold:.9g}: rule quantile" in said and "max |score difference| 0" in said
    assert sorted(p.name for p in exported["out"].iterdir()) == ["ens.csv", "ens.pt2", "job.json", "run.csv",
                                                                 "run.pt2"]  # no temporary file left


def test_an_ensemble_file_averages_its_members_at_an_overridden_threshold(exported):
    got, predicted, ens = exported["got"]["ens"], exported["predicted"]["ens"], exported["ens"]
    scores = np.array(got["scores"])
    assert np.max(np.abs(scores - predicted["score"].to_numpy())) <= 1e-5
    samples = pd.read_csv(ens / "member_01" / SAMPLES)
    with np.load(ens / "logits_test.npz") as z:  # the ensemble's own aggregate: mean member logits
        expected = dict(zip(z["ids"].tolist(), z["scores"].tolist(), strict=True))
    by_path = dict(zip(predicted["path"], scores, strict=True))
    test = samples[samples["split"] == "test"]
    assert max(abs(by_path[p] - expected[i]) for p, i in zip(test["path"], test["id"], strict=True)) <= 1e-5
    np.testing.assert_array_equal(got["decisions"], scores >= 0)
    meta = got["meta"]
    assert meta["kind"] == "ensemble" and meta["members"] == ["member_01", "member_02"]
    assert read_metadata(exported["out"] / "ens.pt2") == meta  # readable without torch, as a zip
    assert meta["threshold"] == 0 and meta["rule"] is None and meta["promise"] is None
    assert "no promise" in meta["threshold_text"][0]


def test_the_docs_decode_is_hightprs_decode(tmp_path):
    """The snippet gives decode_chw's pixels, JPEGs (decoded small by draft) and odd modes included."""
    space: dict = {}
    exec(decode_snippet(), space)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (96, 80, 3), dtype=np.uint8))
    cases = {"a.jpg": img, "b.png": img.convert("P"), "c.png": img.convert("LA"), "d.bmp": img.convert("L"),
             "e.png": img.resize((16, 16))}
    for name, image in cases.items():
        image.save(tmp_path / name)
        for size in (16, 24):
            np.testing.assert_array_equal(space["decode"](tmp_path / name, size).numpy(),
                                          decode_chw(tmp_path / name, size))


def test_refusals_are_one_error_line_and_write_nothing(trained_images, tmp_path, capsys):
    _, run_dir, _ = trained_images
    multi = tmp_path / "multi"
    shutil.copytree(run_dir, multi, ignore=shutil.ignore_patterns("checkpoints"))
    metrics = json.loads((multi / "metrics.json").read_text())
    metrics["task"] = {"kind": "multiclass", "num_classes": 10, "critical_classes": [9]}
    (multi / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.pt2").write_bytes(b"an earlier export")
    (out / "folder.pt2").mkdir()
    cases = [
        ([tmp_path / "empty", "--out", out / "m.pt2"], "holds no finished run"),
        ([multi, "--out", out / "m.pt2"], "is a multi-class run"),
        ([run_dir, "--out", out / "m.pth"], "an exported program is a .pt2 file"),
        ([run_dir, "--out", out / "folder.pt2"], "is a folder"),
        ([run_dir, "--out", tmp_path / "missing" / "m.pt2"], f"no folder {tmp_path / 'missing'}"),
        ([run_dir, "--out", out / "old.pt2", "--tpr", "0.9"], "evaluated at target TPRs 0.5, 0.95, not 0.9"),
    ]
    for argv, says in cases:
        code, _, err = run(export_main, capsys, *argv)
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and says in lines[0], err
        assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["folder.pt2", "old.pt2"]
    assert (out / "old.pt2").read_bytes() == b"an earlier export"
    assert not (tmp_path / "missing").exists()
