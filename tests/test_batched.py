"""Ensemble members trained together (`ensemble.batched`): the same members as one by one, the same files."""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from hightpr.build import build_datamodule, build_module
from hightpr.cli.compare import main as compare_main
from hightpr.cli.ensemble import main as ensemble_main
from hightpr.config import compose_config
from hightpr.data.augment import apply_crop_flip, crop_flip_draws, random_crop_flip
from hightpr.models.resnet import resnet10, resnet32
from hightpr.runs import load_logits
from hightpr.stacked.layers import NotStackable
from hightpr.stacked.model import StackedModel
from hightpr.stacked.selection import BestSoFar, Patience
from hightpr.stacked.streams import MemberStreams
from tests.conftest import run_train

MEMBERS = 3
REGS = {"none": ("reg=none",), "alm": ("reg=alm", "reg.mu0=1e-3"), "rankreg": ("experiment=rankreg/cifar",)}


def member_dirs(result) -> list[Path]:
    """The member dirs of a trained ensemble (its runs.csv row's run dir is the ensemble dir)."""
    return sorted(result.run_dir.glob("member_*"))


@pytest.fixture(scope="module")
def ensembles(tiny_data_dir, tmp_path_factory):
    """`ensembles(reg, batched, forward)`: a 3-member, 2-epoch tiny ensemble, trained once per module."""
    done: dict[tuple, object] = {}

    def get(reg: str, batched: bool, forward: str = "members", *extra: str):
        key = (reg, batched, forward, extra)
        if key not in done:
            work = tmp_path_factory.mktemp(f"ens-{reg}-{batched}-{forward}")
            result = run_train(tiny_data_dir, work, *REGS[reg], f"ensemble.members={MEMBERS}",
                               f"ensemble.batched={str(batched).lower()}", f"ensemble.forward={forward}",
                               *extra)
            assert result.returncode == 0, result.stderr[-2000:]
            done[key] = result
        return done[key]

    return get


def scores_of(dirs: list[Path]) -> list[np.ndarray]:
    return [load_logits(d / "logits_test.npz")["scores"] for d in dirs]


# -- the acceptance test: batched members score the test set as the members trained one by one ------
@pytest.mark.parametrize("forward", ["members", "stacked"])
@pytest.mark.parametrize("reg", sorted(REGS))
def test_batched_members_score_as_sequential_members(ensembles, reg, forward):
    sequential, batched = ensembles(reg, False), ensembles(reg, True, forward)
    assert f"batched ({forward} forward" in batched.stderr
    assert "training members" not in sequential.stderr
    seq_dirs, bat_dirs = member_dirs(sequential), member_dirs(batched)
    assert [d.name for d in seq_dirs] == [d.name for d in bat_dirs] == ["member_01", "member_02", "member_03"]
    for s_dir, b_dir in zip(seq_dirs, bat_dirs, strict=True):
        s, b = load_logits(s_dir / "logits_test.npz"), load_logits(b_dir / "logits_test.npz")
        assert np.array_equal(s["ids"], b["ids"]) and np.array_equal(s["labels"], b["labels"])
        rel = np.abs(s["scores"] - b["scores"]).max() / np.abs(s["scores"]).max()
        assert rel < (1e-6 if forward == "members" else 1e-3), (s_dir.name, rel)
        s_m, b_m = (json.loads((d / "metrics.json").read_text()) for d in (s_dir, b_dir))
        assert (s_m["epochs_trained"], s_m["global_step"]) == (b_m["epochs_trained"], b_m["global_step"])
        assert Path(s_m["best_checkpoint"]).name == Path(b_m["best_checkpoint"]).name
    # the members differ from each other (own draws, own initialisation)
    scores = scores_of(bat_dirs)
    assert not np.allclose(scores[0], scores[1], rtol=1e-2)


def test_batched_members_leave_the_files_of_sequential_members(ensembles):
    sequential, batched = ensembles("alm", False), ensembles("alm", True, "stacked")
    for s_dir, b_dir in zip(member_dirs(sequential), member_dirs(batched), strict=True):
        files = {p.relative_to(s_dir).as_posix() for p in s_dir.rglob("*") if p.is_file()}
        assert files == {p.relative_to(b_dir).as_posix() for p in b_dir.rglob("*") if p.is_file()}
        s_m, b_m = (json.loads((d / "metrics.json").read_text()) for d in (s_dir, b_dir))
        assert s_m.keys() == b_m.keys() and s_m["val"].keys() == b_m["val"].keys()
        assert s_m["operating_point"].keys() == b_m["operating_point"].keys()
        assert s_m["data"] == b_m["data"] and s_m["task"] == b_m["task"]
        for stage in ("val", "test"):
            s, b = load_logits(s_dir / f"logits_{stage}.npz"), load_logits(b_dir / f"logits_{stage}.npz")
            assert s.keys() == b.keys() and s["logits"].shape == b["logits"].shape
        s_csv, b_csv = pd.read_csv(s_dir / "csv/metrics.csv"), pd.read_csv(b_dir / "csv/metrics.csv")
        assert list(s_csv.columns) == list(b_csv.columns) and len(s_csv) == len(b_csv)
        assert s_csv[["epoch", "step"]].equals(b_csv[["epoch", "step"]])
        np.testing.assert_allclose(b_csv["val/auc"].dropna(), s_csv["val/auc"].dropna(), atol=0.05)
    rows = pd.read_csv(batched.runs_csv)
    assert list(rows["kind"]) == ["member"] * MEMBERS + ["ensemble"]
    assert list(rows["member"].iloc[:MEMBERS]) == [1, 2, 3]
    assert list(rows["seed"].iloc[:MEMBERS]) == [1, 2, 3]
    seq_rows = pd.read_csv(sequential.runs_csv)
    assert set(rows.columns) == set(seq_rows.columns)


def test_a_batched_checkpoint_is_tested_by_lightning_as_a_sequential_one(ensembles, tiny_data_dir, tmp_path):
    batched = ensembles("rankreg", True, "stacked")
    run_dir = member_dirs(batched)[1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = compose_config([f"paths.data_dir={tiny_data_dir}", f"paths.output_root={tmp_path}",
                          "dataset=tiny", "model.width=8", "experiment=rankreg/cifar", "seed=2"])
    datamodule, facts = build_datamodule(cfg)
    module = build_module(cfg, datamodule, facts)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.test(module, datamodule=datamodule, ckpt_path=metrics["best_checkpoint"], verbose=False)
    saved = load_logits(run_dir / "logits_test.npz")
    np.testing.assert_allclose(module.outputs["test"]["scores"], saved["scores"], rtol=1e-5, atol=1e-6)
    last = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=False)
    assert last["global_step"] == metrics["global_step"] and last["optimizer_states"]


def test_downstream_tools_read_batched_ensembles(ensembles, capsys):
    sequential, batched = ensembles("none", False), ensembles("none", True, "stacked")
    seq_dir, bat_dir = member_dirs(sequential)[0].parent, member_dirs(batched)[0].parent
    assert ensemble_main([str(bat_dir), "--no-csv"]) == 0
    assert "3 members (1, 2, 3)" in capsys.readouterr().out
    assert compare_main([str(seq_dir), str(bat_dir)]) == 0
    out = capsys.readouterr().out
    # each line shows the AUC of that ensemble's saved test scores (Mann-Whitney, a tie counts half)
    aucs = []
    for label, run in (("A", seq_dir), ("B", bat_dir)):
        saved = load_logits(run / "logits_test.npz")
        pos, neg = saved["scores"][saved["labels"] == 1], saved["scores"][saved["labels"] == 0]
        wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
        aucs.append(wins / (len(pos) * len(neg)))
        shown = re.search(rf"^{label}  \S+\s+AUC (\d\.\d{{4}})   \({re.escape(str(run))}\)$", out, re.M)
        assert shown and float(shown[1]) == pytest.approx(aucs[-1], abs=5e-5), (label, aucs[-1], out)
    test = re.search(r"^DeLong, two-sided: AUC A - B = ([+-]\d\.\d{4}) \(SE (\d\.\d{4})\), "
                     r"z = (\S+), p = (\S+)$", out, re.M)
    assert test, out
    assert float(test[1]) == pytest.approx(aucs[0] - aucs[1], abs=5e-5)
    z, p = float(test[3]), float(test[4])
    assert 0.0 <= p <= 1.0
    assert p == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), abs=1e-3)  # two-sided normal p of z


def test_members_that_stop_early_are_frozen_while_the_others_go_on(ensembles):
    extra = ("trainer.max_epochs=6", "trainer.patience=1")
    sequential = ensembles("none", False, "members", *extra)
    batched = ensembles("none", True, "stacked", *extra)
    seq_epochs, bat_epochs = [], []
    for s_dir, b_dir in zip(member_dirs(sequential), member_dirs(batched), strict=True):
        s_m, b_m = (json.loads((d / "metrics.json").read_text()) for d in (s_dir, b_dir))
        seq_epochs.append(s_m["epochs_trained"])
        bat_epochs.append(b_m["epochs_trained"])
        s, b = (load_logits(d / "logits_test.npz")["scores"] for d in (s_dir, b_dir))
        assert np.abs(s - b).max() / np.abs(s).max() < 1e-3
    assert seq_epochs == bat_epochs
    assert min(bat_epochs) < 6 and len(set(bat_epochs)) > 1, bat_epochs  # stopped at different epochs


def test_each_member_keeps_its_own_schedule_sampler_loss_and_clipping(ensembles):
    extra = ("loss=ldam", "scheduler=plateau", "sampler=dual", "optimizer=sgd",
             "trainer.gradient_clip_val=1.0")
    sequential = ensembles("none", False, "members", *extra)
    batched = ensembles("none", True, "stacked", *extra)
    assert "batched (stacked forward" in batched.stderr
    for s_dir, b_dir in zip(member_dirs(sequential), member_dirs(batched), strict=True):
        s, b = (load_logits(d / "logits_test.npz")["scores"] for d in (s_dir, b_dir))
        assert np.abs(s - b).max() / np.abs(s).max() < 1e-3


# -- choosing batched or sequential -------------------------------------------------------------
def test_an_unsupported_setting_trains_the_members_one_by_one_with_one_log_line(train):
    result = train("ensemble.members=2", "trainer.accumulate_grad_batches=2")
    assert result.returncode == 0
    lines = [line for line in result.stderr.splitlines() if "ensemble.batched" in line]
    assert lines == ["ensemble.batched: trainer.accumulate_grad_batches=2 is not supported batched; "
                     "training the members one after another"]
    assert "training member 2 (seed 2)" in result.stderr


class Killed(BaseException):
    """A kill in the middle of a step (not an error any boundary catches)."""


@pytest.mark.parametrize("reg", ["alm", "rankreg"])
def test_batched_training_killed_mid_epoch_resumes_to_the_uninterrupted_scores(
        ensembles, reg, tiny_data_dir, tmp_path, monkeypatch):
    from hightpr.stacked import trainer

    real_step = trainer._step

    def dying_step(*args, **kwargs):  # dies in the first step after a resume state was written
        if list(tmp_path.rglob("batched.json")):
            raise Killed
        return real_step(*args, **kwargs)

    overrides = (*REGS[reg], f"ensemble.members={MEMBERS}", "ensemble.checkpoint_every_s=0",
                 "ensemble.forward=members")
    monkeypatch.setattr(trainer, "_step", dying_step)
    with pytest.raises(Killed):
        run_train(tiny_data_dir, tmp_path, *overrides)
    edir = next((tmp_path / "outputs" / "test" / "ensembles").iterdir())
    assert not (edir / "member_01" / "metrics.json").exists()
    assert json.loads((edir / "member_02" / "checkpoints" / "batched.json").read_text())["next_epoch"] == 1
    monkeypatch.setattr(trainer, "_step", real_step)
    resumed = run_train(tiny_data_dir, tmp_path, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming members [1, 2, 3] batched at epoch 2 of 2 (0 stopped early)" in resumed.stderr
    assert [line.split(" (")[0] for line in resumed.stderr.splitlines() if line.startswith("epoch ")] == \
        ["epoch 2/2"]
    dirs = member_dirs(resumed)
    assert not any((d / "checkpoints" / "batched.json").exists() for d in dirs)
    reference = member_dirs(ensembles(reg, True, "members"))
    for got, want in zip(scores_of(dirs), scores_of(reference), strict=True):
        np.testing.assert_array_equal(got, want)   # exactly the uninterrupted run's scores
    logs = [pd.read_csv(d / "csv" / "metrics.csv") for d in (dirs[0], reference[0])]
    pd.testing.assert_frame_equal(*logs)


def test_killed_after_a_member_stopped_early_all_resume_together(ensembles, tiny_data_dir, tmp_path,
                                                                  monkeypatch):
    from hightpr.stacked import trainer

    extra = ("trainer.max_epochs=6", "trainer.patience=1")
    real_step = trainer._step

    def dying_step(*args, **kwargs):  # dies once a member has stopped and its stop was written
        marks = [json.loads(p.read_text()) for p in tmp_path.rglob("batched.json")]
        if any(not m["running"] for m in marks):
            raise Killed
        return real_step(*args, **kwargs)

    overrides = (f"ensemble.members={MEMBERS}", "ensemble.checkpoint_every_s=0", "ensemble.forward=members",
                 *extra)
    monkeypatch.setattr(trainer, "_step", dying_step)
    with pytest.raises(Killed):
        run_train(tiny_data_dir, tmp_path, *overrides)
    edir = next((tmp_path / "outputs" / "test" / "ensembles").iterdir())
    marks = [json.loads(p.read_text()) for p in sorted(edir.glob("member_*/checkpoints/batched.json"))]
    assert len(marks) == MEMBERS
    assert len({m["next_epoch"] for m in marks}) == 1 and not all(m["running"] for m in marks), marks
    monkeypatch.setattr(trainer, "_step", real_step)
    resumed = run_train(tiny_data_dir, tmp_path, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming members [1, 2, 3] batched" in resumed.stderr
    reference = member_dirs(ensembles("none", True, "members", *extra))
    for got, want in zip(member_dirs(resumed), reference, strict=True):
        np.testing.assert_array_equal(*scores_of([got, want]))
        assert json.loads((got / "metrics.json").read_text())["epochs_trained"] == \
            json.loads((want / "metrics.json").read_text())["epochs_trained"]


def test_a_member_with_a_batched_checkpoint_trained_on_its_own_starts_over(train):
    first = train("ensemble.members=2", "ensemble.checkpoint_every_s=0")
    mdir = first.run_dir / "member_02"
    (mdir / "metrics.json").unlink()   # as if killed after its last checkpoint, before its outputs
    result = train("ensemble.members=2", "ensemble.batched=false")
    assert result.returncode == 0
    said = "was written by batched training (ensemble.batched): a run trained on its own starts"
    assert said in result.stderr


@pytest.mark.parametrize("override", ["ensemble.checkpoint_every_s=-1", "ensemble.forward=fast",
                                      "ensemble.compile=maybe", "ensemble.batched=maybe"])
def test_a_bad_ensemble_setting_is_one_error_line_before_anything_is_written(train, tmp_path, override):
    result = train("ensemble.members=2", override)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {override.split('=')[0]}="), result.stderr
    assert not (tmp_path / "outputs").exists()


def test_forward_and_compile_change_no_run_or_ensemble_key(tiny_data_dir):
    from hightpr.identity import ensemble_key, execution_only, run_key

    base = [f"paths.data_dir={tiny_data_dir}", "dataset=tiny", "ensemble.members=3"]
    plain = compose_config(base)
    for extra in (["ensemble.forward=stacked", "ensemble.compile=true"], ["ensemble.forward=members"]):
        cfg = compose_config([*base, *extra])
        assert (run_key(cfg), ensemble_key(cfg)) == (run_key(plain), ensemble_key(plain))
        assert all(execution_only(o) for o in extra)


# -- the stacked network ------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: resnet10(width=4), lambda: resnet32(width=2, num_logits=3),
                                  lambda: resnet10(width=4, num_logits=2, normed_head=True)],
                         ids=["resnet10", "resnet32-option-A", "resnet10-cosine-head"])
def test_stacked_network_computes_each_members_outputs_and_gradients(make):
    torch.manual_seed(0)
    models = [make() for _ in range(3)]
    refs = [copy.deepcopy(m) for m in models]
    stacked = StackedModel(models)
    stacked.alias(models)
    x = torch.randn(3, 5, 3, 32, 32)
    out = stacked(x)
    (out.square().sum()).backward()
    for m, ref in enumerate(refs):
        want = ref(x[m])
        want.square().sum().backward()
        torch.testing.assert_close(out[m], want, rtol=1e-4, atol=1e-5)
        for (name, p), q in zip(models[m].named_parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)
        for (name, b), c in zip(models[m].named_buffers(), ref.buffers(), strict=True):
            if not name.endswith("num_batches_tracked"):
                torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-6, msg=name)


def test_a_members_optimizer_steps_its_part_of_the_stacked_network():
    torch.manual_seed(0)
    models = [resnet10(width=4) for _ in range(2)]
    stacked = StackedModel(models)
    stacked.alias(models)
    weight = stacked.net.stem[0].conv.weight
    stacked(torch.randn(2, 4, 3, 32, 32)).sum().backward()
    before = weight.detach().clone()
    torch.optim.SGD(models[1].parameters(), lr=0.1).step()
    assert torch.equal(weight[:4], before[:4])  # member 1's block untouched
    torch.testing.assert_close(weight[4:], before[4:] - 0.1 * weight.grad[4:])
    assert models[1].stem[0].weight.data_ptr() == weight[4:].data_ptr()


def test_a_layer_that_mixes_members_is_refused():
    class Mixer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.scale

    with pytest.raises(NotStackable, match="holds its own tensors"):
        StackedModel([Mixer(), Mixer()])


# -- each member's own random streams ------------------------------------------------------------
def test_member_streams_draw_what_each_member_draws_alone():
    streams = MemberStreams(torch.device("cpu"))
    for seed in (3, 4):
        torch.manual_seed(seed)
        torch.randn(7)  # what building the member drew
        streams.capture()
    outer = torch.get_rng_state()
    got = {0: [], 1: []}
    for i in (0, 1, 1, 0):
        with streams.of(i):
            got[i].append(torch.randint(0, 9, (5,)))
    assert torch.equal(torch.get_rng_state(), outer)
    for i, seed in enumerate((3, 4)):
        torch.manual_seed(seed)
        torch.randn(7)
        assert all(torch.equal(a, torch.randint(0, 9, (5,))) for a in got[i])


def test_crop_flip_draws_then_applies_what_random_crop_flip_does():
    x = torch.randint(0, 255, (6, 3, 8, 8), dtype=torch.uint8)
    draws = crop_flip_draws(6, 2, True, "cpu", torch.Generator().manual_seed(5))
    out = random_crop_flip(x, 2, True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out, apply_crop_flip(x, draws, 2))
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):  # the crop and flip of each sample, one by one
        oy, ox = int(draws["oy"][i]), int(draws["ox"][i])
        want = padded[i, :, oy:oy + 8, ox:ox + 8]
        assert torch.equal(out[i], want.flip(-1) if draws["flip"][i] else want)


# -- best epoch and early stopping ---------------------------------------------------------------
def test_best_epoch_breaks_ties_by_the_lower_validation_loss_and_keeps_the_earlier_on_nan():
    best = BestSoFar()
    assert best.improves(0.9, 0.5)
    best.keep(0.9, 0.5, 0, 10, {})
    assert not best.improves(0.8, 0.1) and best.improves(0.95, 9.0)
    assert best.improves(0.9, 0.4) and not best.improves(0.9, 0.5) and not best.improves(0.9, None)
    assert best.improves(0.9 + 1e-9, 0.4) and not best.improves(0.9 + 1e-9, 0.6)  # float32: a tie


def test_early_stopping_waits_patience_epochs_without_improvement():
    stop = Patience(patience=2)
    assert [stop.should_stop(v) for v in (0.5, 0.6, 0.6, 0.59)] == [False, False, False, True]
    assert Patience(patience=5).should_stop(float("nan"))


def test_batched_training_logs_nothing_it_does_not_say(ensembles):
    result = ensembles("none", True, "members")
    batched_lines = [line for line in result.stderr.splitlines() if "batched" in line]
    assert batched_lines == ["training members [1, 2, 3] batched (members forward of CifarResNet) on cpu"]
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(" (")[0] for line in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert re.search(r"val auc by member 1:0\.\d{4} 2:0\.\d{4} 3:0\.\d{4}$", epochs[-1]), epochs
    assert logging.getLogger("hightpr").level == logging.NOTSET
