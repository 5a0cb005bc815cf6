"""The GPU code paths of batched training, run on the CPU: stacked forward in bf16, channels-last,
compile, and what only a device can break (placement, host reads) checked on the `meta` device.

What cannot run here at all (cuDNN autotuning, the CUDA random streams, bf16 kernels of the GPU)
is listed in docs/speed.md and measured by scripts/device_check.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from hightpr.build import build_datamodule, build_module
from hightpr.config import compose_config
from hightpr.models.resnet import resnet10
from hightpr.runs import load_logits
from hightpr.stacked.data import MemberData
from hightpr.stacked.forward import StackedNetwork
from hightpr.stacked.layers import StackedConv
from hightpr.stacked.model import StackedModel
from hightpr.stacked.streams import MemberStreams
from tests.conftest import ROOT, run_train

MEMBERS = 3
STACKED = (f"ensemble.members={MEMBERS}", "ensemble.forward=stacked", "reg=alm", "reg.mu0=1e-3")
BF16 = "trainer.precision=bf16-mixed"
# bf16 keeps 8 bits of mantissa: each product is rounded to a relative 2^-9 ~ 2e-3, and two epochs of
# training let those roundings move the weights apart. Measured on this test (tiny data, width 8,
# 2 epochs, ALM): the largest test-score difference to the fp32 stacked run, relative to the largest
# score, is 3e-2 to 6e-2 by member. 0.25 leaves room for other CPUs' kernels and still fails a wrong
# cast or a member mix-up (differences of the order of the scores); `rel > 0` fails a missing autocast.
BF16_REL_TOL = 0.25


def _dirs(result) -> list[Path]:
    return sorted(result.run_dir.glob("member_*"))


def _scores(dirs: list[Path]) -> list[np.ndarray]:
    return [load_logits(d / "logits_test.npz")["scores"] for d in dirs]


def _files(run_dir: Path) -> set[str]:
    return {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def stacked_runs(tiny_data_dir, tmp_path_factory):
    """`stacked_runs(precision)`: a 3-member, 2-epoch tiny ensemble, stacked forward, trained once."""
    done: dict[str, object] = {}

    def get(precision: str):
        if precision not in done:
            work = tmp_path_factory.mktemp(f"stacked-{precision}")
            result = run_train(tiny_data_dir, work, *STACKED, f"trainer.precision={precision}")
            assert result.returncode == 0, result.stderr[-2000:]
            done[precision] = result
        return done[precision]

    return get


def test_bf16_stacked_members_score_within_bf16_rounding_of_fp32(stacked_runs):
    fp32, bf16 = stacked_runs("32-true"), stacked_runs("bf16-mixed")
    assert "batched (stacked forward" in bf16.stderr
    for f_dir, b_dir in zip(_dirs(fp32), _dirs(bf16), strict=True):
        f, b = (load_logits(d / "logits_test.npz") for d in (f_dir, b_dir))
        assert np.array_equal(f["ids"], b["ids"]) and b["scores"].dtype == f["scores"].dtype
        assert np.isfinite(b["scores"]).all()
        rel = np.abs(f["scores"] - b["scores"]).max() / np.abs(f["scores"]).max()
        assert 0 < rel < BF16_REL_TOL, (f_dir.name, rel)  # > 0: autocast did run in bf16
        f_m, b_m = (json.loads((d / "metrics.json").read_text()) for d in (f_dir, b_dir))
        assert abs(f_m["test"]["auc"] - b_m["test"]["auc"]) < 0.1
        assert f_m["global_step"] == b_m["global_step"]
        assert _files(f_dir) == _files(b_dir)


class Killed(BaseException):
    """A kill in the middle of a step."""


def test_bf16_stacked_training_killed_resumes_to_the_uninterrupted_scores(stacked_runs, tiny_data_dir,
                                                                          tmp_path, monkeypatch):
    from hightpr.stacked import trainer

    real_step = trainer._step

    def dying_step(*args, **kwargs):  # dies in the first step after a resume state was written
        if list(tmp_path.rglob("batched.json")):
            raise Killed
        return real_step(*args, **kwargs)

    overrides = (*STACKED, BF16, "ensemble.checkpoint_every_s=0")
    monkeypatch.setattr(trainer, "_step", dying_step)
    with pytest.raises(Killed):
        run_train(tiny_data_dir, tmp_path, *overrides)
    monkeypatch.setattr(trainer, "_step", real_step)
    resumed = run_train(tiny_data_dir, tmp_path, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming members [1, 2, 3] batched at epoch 2 of 2" in resumed.stderr
    reference = _dirs(stacked_runs("bf16-mixed"))
    for got, want in zip(_dirs(resumed), reference, strict=True):
        np.testing.assert_array_equal(*_scores([got, want]))
        assert _files(got) == _files(want)


@pytest.mark.slow
def test_compiled_stacked_members_score_as_the_uncompiled(stacked_runs, tiny_data_dir, tmp_path):
    compiled = run_train(tiny_data_dir, tmp_path, *STACKED, "ensemble.compile=true")
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    for got, want in zip(_dirs(compiled), _dirs(stacked_runs("32-true")), strict=True):
        g, w = _scores([got, want])
        assert np.abs(g - w).max() / np.abs(w).max() < 1e-3


# -- channels-last (the stacked layout on a GPU), here on the CPU ----------------------------------
def test_channels_last_stacked_network_steps_its_members_in_place():
    torch.manual_seed(0)
    models = [resnet10(width=4) for _ in range(2)]
    x = torch.randn(2, 3, 3, 32, 32)
    forward = StackedNetwork(models, channels_last=True, check=x[0])  # make_forward on a CUDA sample
    # the CPU's per-member stem is NCHW only (in channels-last its backward corrupted the heap)
    assert not any(m.per_member for m in forward.stacked.modules() if isinstance(m, StackedConv))
    out = forward.train(x)
    for m, model in enumerate(models):
        torch.testing.assert_close(out[m], model(x[m]), rtol=1e-3, atol=1e-4)
    forward.zero_grad()
    forward.train(x).square().sum().backward()
    weight = forward.stacked.net.stem[0].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    before = weight.detach().clone()
    optimizer = torch.optim.Adam(models[1].parameters(), lr=0.1)
    optimizer.step()
    assert torch.equal(weight[:4], before[:4]) and not torch.equal(weight[4:], before[4:])
    assert models[1].stem[0].weight.data_ptr() == weight[4:].data_ptr()


# -- the meta device: device placement and host reads, without a device ----------------------------
def _member_modules(tiny_data_dir: Path, reg: tuple[str, ...]):
    cfgs, modules, dms = [], [], []
    streams = MemberStreams(torch.device("meta"))
    for seed in (1, 2):
        cfg = compose_config([f"paths.data_dir={tiny_data_dir}", "dataset=tiny", "model.width=4",
                              f"seed={seed}", *reg])
        pl.seed_everything(seed, verbose=False)
        dm, facts = build_datamodule(cfg)
        modules.append(build_module(cfg, dm, facts))
        streams.capture()
        cfgs.append(cfg)
        dms.append(dm)
    return modules, dms, streams


@pytest.mark.parametrize("reg", [("reg=alm",), ("experiment=rankreg/cifar",)], ids=["alm", "rankreg"])
def test_every_tensor_a_step_uses_moves_to_the_training_device(tiny_data_dir, reg):
    """A tensor kept as a plain attribute (not a parameter or buffer) stays on the CPU when the module
    moves: on a GPU that fails in the first step. On `meta`, every such tensor is found here."""
    modules, _, _ = _member_modules(tiny_data_dir, reg)
    for module in modules:
        module.to("meta")
        for name, sub in module.named_modules():
            for key, value in vars(sub).items():
                if isinstance(value, torch.Tensor) and key not in ("_parameters", "_buffers"):
                    assert value.device.type == "meta", f"{name}.{key} stays on {value.device}"
        assert all(t.device.type == "meta" for t in [*module.parameters(), *module.buffers()])


def test_the_members_data_path_reads_nothing_back_to_the_host(tiny_data_dir):
    """On `meta` a tensor has no values: a step's data path that read one back (`.item()`, `.tolist()`,
    a Python `if` on a tensor) would raise here, as it would stall a GPU step."""
    _, dms, streams = _member_modules(tiny_data_dir, ())
    data = MemberData(dms, streams, torch.device("meta"), limit_train_batches=2)
    assert data.x.device.type == "meta" and data.eval_splits["test"]["x"].device.type == "meta"
    rows = torch.as_tensor([0, 1], device="meta")
    batches = data.epoch_batches(0, [0, 1])
    assert len(batches) == 2 and all(b.device.type == "meta" for b in batches)
    x, y, ids = data.batch(rows, batches[0])
    out = data.to_input(data.augment(x, [0, 1]))
    assert out.device.type == "meta" and out.shape == (2, len(batches[0][0]), 3, 32, 32)
    assert out.dtype == torch.float32 and y.device.type == ids.device.type == "meta"
    chunk = next(iter(data.eval_chunks("test", [0, 1], 64)))
    assert chunk.device.type == "meta" and chunk.shape[:2] == (2, 32)


def test_a_single_runs_splits_live_on_the_training_device_and_batches_gather_there(tiny_data_dir):
    """The Lightning path holds every split on the training device (uint8 images included), so a
    step copies nothing from the host; checked on `meta`, where any host tensor would show."""
    from hightpr.data.tensors import IndexedRows

    cfg = compose_config([f"paths.data_dir={tiny_data_dir}", "dataset=tiny"])
    dm, _ = build_datamodule(cfg)
    dm.setup()
    mask = dm.positive_mask()                             # samplers get a host mask, before and after
    dm.to_device("meta")
    assert dm.positive_mask().device.type == "cpu" and dm.positive_mask().sum() == mask.sum()
    for split in dm.splits.values():
        assert {t.device.type for t in (split.x, split.y, split.ids)} == {"meta"}
        assert split.x.dtype == torch.uint8                # stored as uint8: 1/4 of float32
    batch = next(iter(dm.train_dataloader()))
    assert all(v.device.type == "meta" for v in batch.values()) and len(batch["y"]) == cfg.trainer.batch_size
    # splits that share one source (Melanoma's image cache) share one copy on the device
    source = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
    a = IndexedRows(source, torch.arange(5), torch.zeros(5), torch.arange(5))
    b = IndexedRows(source, torch.arange(5, 10), torch.zeros(5), torch.arange(5, 10))
    dm.splits = {"train": a, "val": b}
    dm.to_device("meta")
    assert a.source is b.source and a.source.device.type == "meta"


def test_the_stacked_network_runs_on_meta():
    models = [resnet10(width=4).to("meta") for _ in range(3)]
    stacked = StackedModel(models, channels_last=True)
    stacked.alias(models)
    out = stacked(torch.empty(3, 5, 3, 32, 32, device="meta"))
    assert out.shape == (3, 5, 1) and out.device.type == "meta"


# -- the device check itself --------------------------------------------------------------------------
@pytest.mark.slow
def test_device_check_quick_on_the_cpu_ends_with_one_json_line_of_every_part(tmp_path):
    data_dir = Path(os.environ.get("HIGHTPR_DATA_DIR", ROOT / "data"))
    if not (data_dir / "cifar-10-batches-py" / "data_batch_1").is_file():
        pytest.skip("needs the prepared CIFAR-10 ($HIGHTPR_DATA_DIR)")
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "device_check.py"), "--device", "cpu", "--quick",
         "--results", str(tmp_path / "results"), "--data-dir", str(data_dir), "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=1800,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    last = proc.stdout.strip().splitlines()[-1]
    report = json.loads(last)
    assert report == json.loads(out.read_text())
    assert proc.returncode == 0, proc.stderr[-3000:]
    for part in ("versions", "bench", "protocol", "correctness", "table"):
        assert report["parts"][part]["status"] in ("ok", "timeout", "skipped"), report["parts"][part]
    assert report["parts"]["versions"]["status"] == "ok"
    for key in ("torch", "cuda", "cudnn", "gpu", "lightning", "python"):
        assert key in report["versions"]
    for key in ("project_vs_plain", "batched_vs_sequential"):
        assert key in report["bench"]
    for key in ("batched_images_per_s", "batched_100_epochs_s", "sequential_images_per_s",
                "sequential_100_epochs_s", "batched_vs_sequential", "peak_memory_gb"):
        assert key in report["protocol"]
    for key in ("max_abs_score_diff", "max_abs_auc_diff"):
        assert key in report["correctness"]
    assert "rendered" in report["table"]
