"""Paper tables as make targets (hightpr.tables, docs/tables.md).

Fast: the specs cover every paper table; Avg.Δ D1 against hand-computed values and the paper's
own rows; DRY composes and validates without training; grid steps select on validation, never
on test; a failed run names its run dir and leaves the rest; three tables rendered end to end at
SCALE=smoke on the generated stand-ins, every paper number present and unchanged, ours in
>= 90% of the cells, and a second render byte-identical. Slow: every table and figure at smoke,
DRY of every table at every scale.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hightpr.errors import HightprError
from hightpr.tables.cells import Cell, paper_cells
from hightpr.tables.output import json_text
from hightpr.tables.publish import render_output, render_table
from hightpr.tables.render import d1, tables_dir
from hightpr.tables.results import Outcome, deployed, ensemble_path
from hightpr.tables.runner import Context, dry_run, failure_message, format_listing, run_table
from hightpr.tables.specs import all_specs, get_scale, get_spec, grid_preset, short_name, table_names

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "results" / "paper"


def context(tmp_path: Path, scale: str = "smoke", data_dir: Path | None = None, extra=()) -> Context:
    return Context(get_scale(scale).with_overrides(extra), results_dir=tmp_path / "results",
                   data_dir=data_dir or tmp_path / "data", paper_root=PAPER)


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """One data dir for every smoke test: the stand-ins are written into it once."""
    return tmp_path_factory.mktemp("tables-data")


# -- specs ----------------------------------------------------------------------------------------
def test_every_paper_table_and_both_figures_are_declared():
    stems = sorted(p.stem for p in PAPER.glob("*__t*.csv"))
    assert len(stems) == 33
    assert sorted(table_names()) == sorted(short_name(s) for s in stems)
    assert table_names(figures=True) == ["rankreg-f3", "rankreg-f4"]
    assert get_spec("almv1-t8").paper == "alm-arxiv-v1__t8"
    assert get_spec("alm-t16").paper == "alm-neurips2021__t16"
    with pytest.raises(HightprError, match="did you mean rankreg-t1"):
        get_spec("rankreg-t01")


def test_grid_presets_are_hydra_sweeps():
    assert grid_preset("alm_mu") == {"reg.mu0": [1e-7, 1e-6, 1e-5, 1e-4, 1e-3], "reg.rho": [2, 3]}
    assert grid_preset("almv1_delta") == {"reg.delta": [1.0, 1.5, 2.0]}


def test_cells_follow_the_paper_rows_plus_extras_and_references():
    t1 = paper_cells(get_spec("rankreg-t1"), PAPER)
    assert [c.row for c in t1[:3]] == ["bce", "bce+alm", "bce+rankreg"]
    assert len([c for c in t1 if not c.extra]) == 24
    assert {c.row for c in t1 if c.extra} == {"bce:sampler=dual", "bce+rankreg:sampler=dual",
                                              "libauc_pauc_dro_hightpr", "bce:optimizer=sgd",
                                              "bce:optimizer=sgd_official", "bce:batch_size=32",
                                              "bce+alm:mu0=1e-3", "bce+rankreg:rank_weight=0"}
    t12 = paper_cells(get_spec("alm-t12"), PAPER)      # ALM rows + hidden base rows for DeLong
    assert sum(c.hidden for c in t12) == 16 and all(c.reg == "none" for c in t12 if c.hidden)


# -- Avg.Δ, definition D1 ---------------------------------------------------------------------------
def test_avg_delta_d1_hand_computed():
    # BCE: best of base 80 / +ALM 70 is 70, RankReg 60 -> +10; S-ML: best 50, RankReg 52 -> -2.
    fpr = {("bce", "none"): 80.0, ("bce", "alm"): 70.0, ("bce", "rankreg"): 60.0,
           ("s_ml", "none"): 50.0, ("s_ml", "alm"): 55.0, ("s_ml", "rankreg"): 52.0, ("a_ml", "none"): 1.0}
    assert d1(fpr, "fpr@98tpr") == (4.0, 2)          # a_ml lacks +ALM and +RankReg: left out
    # AUC, higher is better: BCE best 91 -> 92 gives +1; S-ML best 88 -> 86 gives -2.
    auc = {("bce", "none"): 90.0, ("bce", "alm"): 91.0, ("bce", "rankreg"): 92.0,
           ("s_ml", "none"): 88.0, ("s_ml", "alm"): 87.0, ("s_ml", "rankreg"): 86.0}
    assert d1(auc, "auc") == (-0.5, 2)
    assert d1({("bce", "none"): 1.0}, "auc") is None


def test_d1_reproduces_the_printed_avg_delta_of_rankreg_table_1():
    table = pd.read_csv(PAPER / "rankreg-cvpr2023__t1.csv", dtype=str, keep_default_na=False)
    printed = {r.metric: float(r.value) for r in table.itertuples() if r.base_loss == ""}
    rows = table[table.base_loss != ""]
    for avg, metric in (("avg_delta@98tpr", "fpr@98tpr"), ("avg_delta@95tpr", "fpr@95tpr"),
                        ("avg_delta@92tpr", "fpr@92tpr"), ("avg_delta_auc", "auc")):
        values = {(r.base_loss, r.reg): float(r.value) for r in rows.itertuples() if r.metric == metric}
        mean, n = d1(values, metric)
        assert n == 8 and round(mean, 1) == printed[avg]        # INDEX.md: 6.013, 9.688, 2.837, 2.300


# -- DRY ----------------------------------------------------------------------------------------------
def test_claim_verdicts_tell_a_tie_from_a_significant_reversal():
    from hightpr.tables.claims import Family, Test, _verdict

    lower_fpr = Test({"diff": -2.0, "lo": -3.0, "hi": -1.0, "p": 0.01}, "fpr@95tpr", p_adj=0.01)
    assert lower_fpr.favours() and not lower_fpr.favours(-1)       # a - b in FPR < 0: a better
    worse_auc = Test({"diff": -2.0, "lo": -3.0, "hi": -1.0, "p": 0.01}, "auc", p_adj=0.01)
    assert not worse_auc.favours() and worse_auc.favours(-1)
    assert not Test({"diff": -2.0, "lo": -3.0, "hi": -1.0, "p": 0.01}, "auc", p_adj=0.06).favours(-1)
    assert _verdict(2, 3, 2) == "supported"                          # most pairs significant
    assert _verdict(2, 3, 1) == "not distinguishable at this budget (ours in the claimed direction)"  # 1 of 3
    assert _verdict(1, 3, 0, equivalent=2) == "NOT supported (equivalent within the margin)"
    assert _verdict(0, 1, 0, 1) == "NOT supported (1 significantly the other way)"
    assert _verdict(0, 1, 0, 0) == "not distinguishable at this budget (ours the other way or tied)"
    assert _verdict(0, 0, 0) == "not run"
    same = Test({"diff": 0.3, "lo": -1.0, "hi": 1.6, "p": 0.6, "p_equiv": 0.01, "margin": 5.0}, "fpr@95tpr",
                p_adj=1.0, p_equiv_adj=0.02)
    assert same.equivalent() and same.word() == "equivalent within ±5"
    undecided = Test({"diff": 0.3, "lo": -9.0, "hi": 9.6, "p": 0.9, "p_equiv": 0.3, "margin": 5.0}, "auc",
                     p_adj=1.0, p_equiv_adj=0.6)
    assert not undecided.equivalent() and undecided.word() == "not distinguishable at this budget"
    assert "TOST ±5 Holm 0.6" in undecided.text() and "p 0.9, Holm 1" in undecided.text()
    assert _verdict(0, 0, 0, 0, uninformative=1) == "not informative (regulariser inactive)"
    # one family per table, Holm-adjusted together: 0.01, 0.03, 0.04 -> 0.03, 0.06, 0.06
    family = Family(view=None)
    tests = [family.add({"diff": -1.0, "lo": -2.0, "hi": -0.5, "p": p}, "fpr@95tpr")
             for p in (0.01, 0.03, 0.04)]
    family.add(None, "auc")                                          # not comparable: outside the family
    family.adjust()
    assert [round(t.p_adj, 6) for t in tests] == [0.03, 0.06, 0.06]
    assert [t.favours() for t in tests] == [True, False, False]


def test_a_control_is_judged_on_every_metric_and_its_sentence_names_what_was_equivalent():
    from hightpr.tables.claims import _control_outcome, sentence

    assert _control_outcome(["equivalent"] * 4) == "control_equivalent"
    assert _control_outcome(["equivalent", "not_distinguishable"]) == "undecided"
    assert _control_outcome(["worse", "not_distinguishable"]) == "control_worse"
    assert _control_outcome(["better", "equivalent"]) == "control_better"      # never "undecided"
    assert _control_outcome(["better", "worse"]) == "control_mixed"
    assert _control_outcome([]) == "not_run"

    def test(outcome, margin):
        return {"outcome": outcome, "statistic": "Δ", "diff": 0.1, "lo": -1.0, "hi": 1.2, "p": 0.8,
                "p_holm": 1.0, "margin": margin, "p_equiv": 0.01, "p_equiv_holm": 0.03}
    metrics = [{"metric": "fpr@95tpr", "ours": [14.9, 12.7], "test": test("not_distinguishable", 5)},
               {"metric": "auc", "ours": [97.5, 97.5], "test": test("equivalent", 1.5)}]
    line = {"kind": "controls", "outcome": "undecided", "control": "C", "method": "M", "worse": 0,
            "better": 0, "metrics": metrics}
    text = sentence(line)
    assert "FPR@95%TPR 14.9 vs 12.7" in text and "AUC 97.5 vs 97.5" in text
    assert "equivalent within ±1.5" in text
    assert text.endswith("**equivalent to M within the margin on AUC only, not distinguishable on the "
                         "rest at this budget: whether the simpler change explains the method's gain is "
                         "not decided**")
    better = sentence({**line, "outcome": "control_better", "better": 1})
    assert "significantly better than M on 1 of 2 metrics" in better


def test_dry_composes_and_validates_every_run_and_trains_nothing(tmp_path, monkeypatch):
    import hightpr.checks

    checked = []
    real = hightpr.checks.check_keys
    monkeypatch.setattr(hightpr.checks, "check_keys",
                        lambda cfg: (checked.append(cfg.loss._target_), real(cfg)))
    ctx = context(tmp_path)
    spec = get_spec("rankreg-t1")
    listing = dry_run(spec, ctx, rows="bce*,libauc*")
    assert len(checked) == len(listing) == 11                  # 10 BCE rows + the LibAUC peer
    assert {x.status for x in listing} == {"missing"}
    assert not (tmp_path / "results").exists() and not (tmp_path / "data").exists()
    text = format_listing(spec, ctx, listing)
    assert text.startswith("rankreg-t1 [smoke]: 11 cells, 11 runs (0 exist, 11 to train)")
    assert "[rankreg_gamma: reg.interpolation=2]" in text and "[libauc_lambda: loss.Lambda=0.1]" in text


def test_dry_reports_unavailable_data_and_bad_configs(tmp_path):
    listing = dry_run(get_spec("rankreg-t2"), context(tmp_path, "cpu"), rows="bce")
    assert [x.status for x in listing] == ["unavailable: needs the CIFAR-100 images "
                                           "(python -m hightpr.data.prepare cifar100 --download)"]
    mri = dry_run(get_spec("alm-t14"), context(tmp_path, "paper"), rows="bce+alm")
    assert mri[0].status.startswith("unavailable: the papers' in-house prostate MRI is private")
    with pytest.raises(HightprError, match=r"cifar10_binary.main@100/bce: .*trainer.max_epoks"):
        dry_run(get_spec("rankreg-t1"), context(tmp_path, extra=["+trainer.max_epoks=1"]), rows="bce")


def test_execution_only_overrides_stay_out_of_run_keys(tmp_path):
    spec = get_spec("rankreg-t1")

    def key(*extra, validate=False):
        return dry_run(spec, context(tmp_path, extra=extra), rows="bce", validate=validate)[0].run.key

    assert key() == key("trainer.num_threads=2", "ensemble.batched=false") == key("trainer.num_threads=2",
                                                                                 validate=True)
    assert key("trainer.max_epochs=2") != key()
    scale = get_scale("cpu").with_overrides(["trainer.num_threads=2", "trainer.max_epochs=2"])
    assert scale.execution == ("trainer.num_threads=2",) and scale.budget.endswith("extra overrides: "
                                                                                   "trainer.max_epochs=2")


def test_rows_select_blocks_and_patterns():
    from hightpr.tables.runner import select_rows

    spec = get_spec("rankreg-t1")
    cells = paper_cells(spec, PAPER)
    assert [c.row for c in select_rows(cells, spec, "acceptance")] == [
        "bce", "bce+alm", "bce+rankreg", "bce:sampler=dual", "bce+rankreg:rank_weight=0", "bce:optimizer=sgd",
        "bce:optimizer=sgd_official", "bce:batch_size=32", "bce+alm:mu0=1e-3"]
    assert len(select_rows(cells, spec, "bce*")) == 10
    assert len(select_rows(cells, spec, "cifar10_binary.main@100/*+alm")) == 8
    with pytest.raises(HightprError, match="matches no row of rankreg-t1"):
        select_rows(cells, spec, "nonsense")


# -- runner logic with a fake trainer (no Lightning) ----------------------------------------------
def fake_train(val_auc_of=None, fail_on: str | None = None, reg_ratio: dict | None = None):
    """A train function that writes what a finished ensemble leaves: metrics.json, test logits, one
    member with its config. Validation AUC is `val_auc_of(overrides)`; the test set is made to
    disagree with validation, so a selection that peeked at test would pick another point."""

    def train(plan, run, ctx):
        edir = ensemble_path(ctx.pool, run.key)
        member = edir / "member_01"
        member.mkdir(parents=True, exist_ok=True)
        if fail_on and plan.cell.row == fail_on:
            raise RuntimeError("boom: the loss went NaN")
        val = val_auc_of(run.overrides) if val_auc_of else 0.8
        rng = np.random.default_rng(abs(hash(run.key)) % 2**32)
        labels = np.r_[np.ones(50), np.zeros(50)].astype(np.int64)
        scores = rng.normal(size=100) + labels * (2.0 - val)        # better on val = worse on test
        test = {"auc": float(np.mean(scores[:50, None] > scores[None, 50:]))}
        np.savez(edir / "logits_test.npz", scores=scores.astype(np.float32), labels=labels,
                 ids=np.arange(100), logits=scores[:, None].astype(np.float32))
        metrics = {"num_members": plan.members, "val": {"auc": val}, "test": test,
                   "member_mean": {"test_auc": test["auc"]}, "member_std": {"test_auc": 0.0}}
        (edir / "metrics.json").write_text(json.dumps(metrics))
        (member / "metrics.json").write_text(json.dumps({"test": test, "task": {}}))
        (member / "logits_test.npz").write_bytes((edir / "logits_test.npz").read_bytes())
        (member / "config_resolved.yaml").write_text("loss: {}\nreg: {}\n")
        ratio = (reg_ratio or {}).get(plan.cell.reg)
        if ratio is not None:                         # the member's log: base loss 1, the term = ratio
            (member / "csv").mkdir(exist_ok=True)
            (member / "csv" / "metrics.csv").write_text(
                "epoch,step,train/base_loss,train/reg_term\n" + f"0,9,1.0,{ratio / 2}\n1,19,1.0,{ratio}\n")

    return train


def _interp(overrides) -> float:
    return next(float(o.split("=")[1]) for o in overrides if o.startswith("reg.interpolation="))


def test_grid_steps_select_on_validation_never_on_test(tmp_path):
    data = tmp_path / "data"
    (data / "cifar-10-batches-py").mkdir(parents=True)
    (data / "cifar-10-batches-py" / "data_batch_1").write_text("")    # the cell counts as available
    ctx = context(tmp_path, "paper", data)
    spec = get_spec("rankreg-t4")
    by_gamma = {2.0: 0.70, 10.0: 0.90, 50.0: 0.80}
    summary = run_table(spec, ctx, rows="cifar10_binary.main@100/bce+rankreg:penalty=cubed",
                        train_fn=fake_train(lambda ov: by_gamma[_interp(ov)]), progress=False)
    assert (summary.trained, summary.reused, summary.failures) == (3, 0, {})
    md, csv = render_table(spec, ctx)
    row = csv[(csv.variant == "penalty=cubed") & (csv.dataset == "cifar10_binary") & (csv.metric == "auc")]
    assert row.selected.iloc[0] == "reg.interpolation=10" and row.members.iloc[0] == "10"
    assert "- BCE + RankReg [penalty=cubed]: γ (reg.interpolation) = 10" in md
    again = run_table(spec, ctx, rows="cifar10_binary.main@100/bce+rankreg:penalty=cubed",
                      train_fn=fake_train(lambda ov: 1 / 0), progress=False)
    assert (again.trained, again.reused) == (0, 3)                  # finished runs are never retrained


def test_an_inactive_regulariser_is_marked_and_its_claims_get_no_verdict(tmp_path):
    ctx = context(tmp_path)
    spec = get_spec("rankreg-t1")
    run_table(spec, ctx, rows="bce,bce+alm,bce+rankreg", progress=False,
              train_fn=fake_train(reg_ratio={"alm": 0.009, "rankreg": 0.5}))
    md, csv = render_table(spec, ctx)
    assert "| BCE + ALM ◦ |" in md and "| BCE + RankReg |" in md
    assert "BCE + ALM 0.9% ◦ inactive; BCE + RankReg 50%" in md
    auc = csv[(csv.metric == "auc") & (csv.ours != "")]
    assert auc.set_index("reg").reg_active.to_dict() == {"none": "", "alm": "false", "rankreg": "true"}
    claims = md.split("## Claims")[1]
    assert "Holm-corrected" in claims and "standard error over members" in claims and "α = 0.05" in claims
    alm_claim = claims.split("+ALM improves on the base loss alone")[1].split("- **")[0]
    # (the fake runs report AUC only)
    assert "AUC: paper 7/8; ours: not informative (regulariser inactive ◦)" in alm_claim
    assert "supported" not in alm_claim
    data = json.loads((tables_dir(ctx) / "rankreg-t1.json").read_text())     # the same verdicts, as values
    from hightpr.tables.claims import markdown
    assert md.rstrip().endswith("\n".join(markdown(data["claims"])))
    alm = next(c for c in data["claims"]["claims"] if c["text"].startswith("+ALM improves on the base"))
    assert {v["metric"]: v["outcome"] for v in alm["lines"] if v["level"] == 0}["auc"] == "inactive"
    rankreg_claim = claims.split("+RankReg improves on the base loss alone")[1].split("- **")[0]
    assert "Holm" in rankreg_claim and "not informative" not in rankreg_claim


def test_a_failed_cell_names_its_run_dir_and_the_rest_finishes(tmp_path):
    ctx = context(tmp_path)
    spec = get_spec("rankreg-t1")
    summary = run_table(spec, ctx, rows="bce,bce+alm", train_fn=fake_train(fail_on="bce+alm"), progress=False)
    assert summary.trained == 1 and len(summary.failures) == 1
    message = failure_message(summary)
    failed = ensemble_path(ctx.pool, next(iter(summary.failures))) / "member_01"
    assert "cifar10_binary.main@100/bce+alm: RuntimeError: boom" in message and f"run dir {failed}" in message
    md, csv = render_table(spec, ctx)                # the finished cell still renders
    assert csv[(csv.base_loss == "bce") & (csv.reg == "none") & (csv.metric == "auc")].ours.iloc[0] != ""


def test_cli_run_fails_with_the_run_dir_and_renders_the_rest(tmp_path, monkeypatch, capsys):
    import hightpr.tables.runner as runner
    from hightpr.cli.tables import main

    monkeypatch.setattr(runner, "train_in_process", fake_train(fail_on="bce+alm"))
    args = ["run", "rankreg-t1", "--results", str(tmp_path / "results"), "--paper", str(PAPER),
            "--data-dir", str(tmp_path / "data"), "--scale", "smoke", "--rows", "bce,bce+alm",
            "--no-progress"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert "1 run(s) failed" in err and "member_01)" in err
    assert "rankreg-t1 [smoke]: 2 runs: 1 trained, 0 reused, 1 failed" in out
    assert (tmp_path / "results" / "tables" / "smoke" / "rankreg-t1.md").is_file()


def _no_data_cpu_context(tmp_path: Path) -> Context:
    return Context(get_scale("cpu"), results_dir=ROOT / "results", data_dir=tmp_path / "no-data",
                   paper_root=PAPER)


def test_the_committed_cpu_runs_are_read_without_any_data(tmp_path):
    """A fresh clone has results/ but no data dir: the saved runs are what a table shows."""
    from hightpr.tables.render import TableView, has_ours

    ctx = _no_data_cpu_context(tmp_path)
    assert has_ours(get_spec("rankreg-t1"), ctx)
    view = TableView(get_spec("rankreg-t1"), ctx)
    done = {c.row for c, out in view.outcomes.items() if out is not None}
    assert {"bce", "bce+alm", "bce+rankreg", "bce:sampler=dual", "bce:optimizer=sgd"} <= done, done


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "results" / "tables" / "cpu").glob("*.md")))
def test_committed_markdown_is_a_view_of_the_committed_json(name):
    """Each committed table's JSON is current, and its markdown prints what the JSON holds: the
    claims block is `claims.markdown` of its verdict values, the header, the notes and every Δ."""
    from hightpr.tables import claims
    from hightpr.tables.output import read_data

    path = ROOT / "results" / "tables" / "cpu" / f"{name}.md"
    data, problem = read_data(path.with_suffix(".json"))
    assert data is not None, problem
    md = path.read_text()
    assert data["table"] == name and data["header"] in md
    if data["claims"] is not None:
        block = "\n".join(["## Claims", "", *claims.markdown(data["claims"])])
        assert md.rstrip().endswith(block)
        assert {v["outcome"] for c in data["claims"]["claims"] for v in c["lines"]} <= set(claims.OUTCOMES)
    for section in data["sections"]:
        assert section["notes"] in md.split(f"## {section['name']}\n", 1)[1]
    csv = pd.read_csv(path.with_suffix(".csv"), dtype=str, keep_default_na=False)
    assert csv.to_dict(orient="records") == [{c: r[c] for c in data["columns"]} for r in data["rows"]]
    for r in (r for r in data["rows"] if r["delta"]):
        assert f"| {r['delta']} |" in md, r


@pytest.mark.slow  # ~12 s a table (1000 bootstrap replicates per run)
@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "results" / "tables" / "cpu").glob("*.md")))
def test_committed_cpu_tables_render_to_the_same_bytes_without_any_data(name, tmp_path):
    """`make tables` on a fresh clone (no data dir at all) reproduces the committed tables."""
    path = ROOT / "results" / "tables" / "cpu" / f"{name}.md"
    out = render_output(get_spec(name), _no_data_cpu_context(tmp_path), write=False)
    assert out.md == path.read_text()
    assert out.csv.to_csv(index=False, lineterminator="\n") == path.with_suffix(".csv").read_text()
    assert json_text(out.data) == path.with_suffix(".json").read_text()


def test_training_under_the_bar_shows_its_epochs_and_warnings_only(caplog):
    from hightpr.tables.runner import _quiet

    log, status = logging.getLogger("hightpr"), []
    caplog.set_level(logging.INFO)
    with _quiet(status.append):
        log.info("epoch %d/%d (%.0f s): val auc by member %s", 3, 15, 240.4, "1:0.9000")
        log.info("member 1 data ...")
        log.warning("something to see")
    assert status == ["epoch 3/15 (240 s)"]
    assert [r.getMessage() for r in caplog.records if r.name == "hightpr"] == ["something to see"]
    log.info("after")                              # the logger is as it was
    assert caplog.records[-1].getMessage() == "after"


# -- end to end at SCALE=smoke ----------------------------------------------------------------------
def _check_rendered(ctx: Context, name: str, rows: str | None = None) -> pd.DataFrame:
    """Every paper number present and unchanged, ours in >= 90% of the cells run, same bytes again."""
    spec = get_spec(name)
    out = tables_dir(ctx)
    md = (out / f"{name}.md").read_text()
    csv = pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False)
    paper = pd.read_csv(PAPER / f"{spec.paper}.csv", dtype=str, keep_default_na=False)
    keys = ["dataset", "classes", "ratio", "base_loss", "reg", "variant", "metric"]
    ours_rows = csv[csv.ours_only == ""]
    assert ours_rows[keys + ["paper"]].reset_index(drop=True).equals(
        paper[keys + ["value"]].rename(columns={"value": "paper"}).reset_index(drop=True))
    picked = ours_rows
    if rows:
        from hightpr.tables.runner import select_rows

        ids = {c.id for c in select_rows(paper_cells(spec, PAPER), spec, rows)}
        picked = ours_rows[[Cell(r.dataset, r.classes, r.ratio, r.base_loss, r.reg, r.variant).id in ids
                            for r in ours_rows.itertuples()]]
    picked = picked[picked.paper != ""]                     # cells where the paper printed a number
    assert (picked.ours != "").mean() >= 0.9, picked[picked.ours == ""]
    assert (csv.scale == "smoke").all() and "**Scale: smoke**" in md
    before = [(out / f"{name}.{ext}").read_bytes() for ext in ("md", "csv")]
    render_table(spec, context_like(ctx))
    assert [(out / f"{name}.{ext}").read_bytes() for ext in ("md", "csv")] == before
    return csv


def context_like(ctx: Context) -> Context:
    return Context(ctx.scale, results_dir=ctx.results_dir, data_dir=ctx.data_dir, paper_root=ctx.paper_root)


@pytest.fixture(scope="session")
def smoke_ctx(tmp_path_factory, smoke_data) -> Context:
    """One smoke pool for the session: tables that share runs (as in results/) reuse them."""
    return context(tmp_path_factory.mktemp("tables-smoke"), data_dir=smoke_data)


def test_smoke_rankreg_table_1_bce_block_and_figure_3(smoke_ctx):
    ctx, rows = smoke_ctx, "bce,bce+alm,bce+rankreg"
    summary = run_table(get_spec("rankreg-t1"), ctx, rows=rows, progress=False)
    assert summary.failures == {} and summary.trained + summary.reused == 3
    render_table(get_spec("rankreg-t1"), ctx)
    csv = _check_rendered(ctx, "rankreg-t1", rows)
    assert csv[csv.metric == "avg_delta@98tpr"].ours.iloc[0] != ""          # D1 over the one complete loss
    md = (tables_dir(ctx) / "rankreg-t1.md").read_text()
    assert ("| Avg.Δ (D1: RankReg vs the better of base, +ALM; over the 1 of 8 losses we ran, the paper's D1 "
            "over the same) |") in md
    assert "| Avg.Δ as printed (the paper's mean over its 8 losses) |" in md
    assert "| **47.1** |" in md                                             # the paper's bold, kept
    assert "tiny synthetic CIFAR-10 stand-in" in md and "+RankReg improves on +ALM" in md
    assert "| Δ | deployed | FPR@95%TPR ours |" in md                      # beside every FPR@TPR
    assert "FPR@98%TPR at δ=0.05: needs >= 149 validation positives, has 20" in md
    deployed_rows = csv[csv.metric.str.startswith("deployed_")]
    assert set(deployed_rows.ours_only) == {"deployed"} and len(deployed_rows) == 3 * 2 * 3
    # Fig. 3 is these three runs: reused, nothing trained.
    summary = run_table(get_spec("rankreg-f3"), ctx, progress=False)
    assert (summary.trained, summary.reused) == (0, 3)
    render_table(get_spec("rankreg-f3"), ctx)
    assert (tables_dir(ctx) / "rankreg-f3.png").stat().st_size > 10_000


def _write_logits(path: Path, stage: str, pos: list[float], neg: list[float]) -> None:
    scores = np.array(pos + neg)
    labels = np.array([1] * len(pos) + [0] * len(neg))
    np.savez(path / f"logits_{stage}.npz", scores=scores, labels=labels, ids=np.arange(scores.size),
             logits=scores[:, None])


def test_deployed_is_the_guaranteed_threshold_on_validation_judged_on_test(tmp_path):
    # 59 validation positives at (95%, δ 0.05): only the lowest positive score qualifies, since
    # P(TPR < 0.95) = 0.95^59 = 0.0485 <= 0.05 for it and P = 1 - 0.95^59 - 59*0.05*0.95^58 > 0.05 for the
    # second lowest. Threshold 0.01; on test 3 of 4 positives reach it (75%, short of 95%: ✗) and
    # 3 of 5 negatives (60%).
    _write_logits(tmp_path, "val", [0.01 * i for i in range(1, 60)], [0.0, 0.5])
    _write_logits(tmp_path, "test", [0.005, 0.02, 0.5, 0.9], [0.0, 0.011, 0.3, 0.001, 0.2])
    out = Outcome("k", {"test": {"auc": 0.5}}, {}, 1, tmp_path)
    got = deployed(out, "fpr@95tpr")
    assert got["fpr"] == pytest.approx(60.0) and got["tpr"] == pytest.approx(75.0) and got["held"] is False
    assert deployed(out, "auc") is None
    # 98% needs 149 positives; 59 is refused with the reason, not a number
    assert deployed(out, "fpr@98tpr") == {"note": "needs >= 149 validation positives, has 59", "delta": 0.05,
                                          "rule": "np"}
    # a run configured with another rule is deployed with it: conformal risk control, n = 59, target
    # 0.95: (misses + 1) / (n + 1) <= 0.05 allows 2 misses, so the threshold is the 3rd lowest
    # positive, 0.03: test TPR 2/4 (0.5, 0.9), FPR 2/5 (0.3, 0.2)
    member = tmp_path / "member_01"
    member.mkdir()
    (member / "metrics.json").write_text("{}")
    (member / "logits_test.npz").write_bytes((tmp_path / "logits_test.npz").read_bytes())
    (member / "config_resolved.yaml").write_text("evaluation: {threshold_rule: crc, delta: 0.1}\n")
    crc = deployed(Outcome("k-crc", {"test": {"auc": 0.5}}, {}, 1, tmp_path), "fpr@95tpr")
    assert crc["rule"] == "crc" and crc["delta"] == 0.1
    assert crc["fpr"] == pytest.approx(40.0) and crc["tpr"] == pytest.approx(50.0) and crc["held"] is False
    (tmp_path / "logits_val.npz").unlink()          # members with validation sets of their own
    assert deployed(Outcome("k2", {"test": {"auc": 0.5}}, {}, 1, tmp_path), "fpr@95tpr") is None


def test_smoke_alm_table_12_delong_against_the_base_loss(smoke_ctx):
    ctx = smoke_ctx
    summary = run_table(get_spec("alm-t12"), ctx, rows="cifar10_binary.main@100/bce+alm", progress=False)
    assert summary.failures == {} and summary.trained + summary.reused == 2   # + the hidden BCE reference
    render_table(get_spec("alm-t12"), ctx)
    csv = _check_rendered(ctx, "alm-t12", "cifar10_binary.main@100/bce+alm")
    flag = csv[(csv.ratio == "100") & (csv.base_loss == "bce") & (csv.metric == "delong_significant")]
    assert flag.ours.iloc[0] in ("0", "1") and flag.paper.iloc[0] == "1"
    md = (tables_dir(ctx) / "alm-t12.md").read_text()
    assert "DeLong p vs base (ours)" in md and "ALM's AUC gain passes the DeLong test" in md


@pytest.mark.slow  # ~10 s; three other tables render at SCALE=smoke in the fast suite
def test_smoke_rankreg_table_5_cifar100_and_melanoma_stand_ins(smoke_ctx):
    ctx = smoke_ctx
    summary = run_table(get_spec("rankreg-t5"), ctx, progress=False)
    assert summary.failures == {}
    render_table(get_spec("rankreg-t5"), ctx)
    _check_rendered(ctx, "rankreg-t5")
    md = (tables_dir(ctx) / "rankreg-t5.md").read_text()
    assert "tiny synthetic ISIC-layout Melanoma stand-in" in md and "Dequeue Max is the best strategy" in md


def test_smoke_rankreg_table_7_long_tailed_ce(smoke_ctx):
    ctx = smoke_ctx
    summary = run_table(get_spec("rankreg-t7"), ctx, rows="ce", progress=False)
    assert summary.failures == {} and summary.trained + summary.reused == 1  # 1:100, 1:200: one stand-in
    render_table(get_spec("rankreg-t7"), ctx)
    csv = _check_rendered(ctx, "rankreg-t7", "ce")
    assert set(csv.metric) == {"err@80tpr", "err@90tpr", "acc"}
    assert "tiny synthetic long-tailed CIFAR-10" in (tables_dir(ctx) / "rankreg-t7.md").read_text()


def test_makefile_targets_honour_scale_rows_dry_launcher_and_venv():
    def make(*args):
        done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return " ".join(done.stdout.split())

    out = make("table-rankreg-t1", "SCALE=smoke", "DRY=1", "ROWS=bce*", "LAUNCHER=local", "VENV=/opt/env")
    assert ("/opt/env/bin/python -m hightpr.cli.tables run rankreg-t1 --results results --scale smoke --dry "
            "--launcher local --rows 'bce*'") in out
    out = make("tables")
    assert "hightpr.cli.tables render --results results" in out and "--scale" not in out
    out = make("figure-rankreg-f4", "SCALE=paper")
    assert "run rankreg-f4 --results results --scale paper" in out


# -- slow: everything --------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", list(all_specs()))
def test_every_table_and_figure_end_to_end_at_smoke(name, tmp_path, smoke_data):
    ctx = context(tmp_path, data_dir=smoke_data)
    summary = run_table(get_spec(name), ctx, progress=False)
    assert summary.failures == {}, failure_message(summary)
    render_table(get_spec(name), ctx)
    if not get_spec(name).is_figure:
        csv = _check_rendered(ctx, name)
        assert len(csv) >= len(pd.read_csv(PAPER / f"{get_spec(name).paper}.csv"))


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["paper", "cpu"])
@pytest.mark.parametrize("name", list(all_specs()))
def test_dry_every_table_at_every_scale(name, scale, tmp_path):
    data = Path(__import__("os").environ.get("HIGHTPR_DATA_DIR", tmp_path))
    listing = dry_run(get_spec(name), context(tmp_path, scale, data))
    assert listing and all(x.run is not None or x.status.startswith("unavailable") for x in listing)


def test_cell_ids_are_stable():
    cell = Cell("cifar10_binary", "main", "100", "bce", "rankreg", "penalty=cubed")
    assert cell.id == "cifar10_binary.main@100/bce+rankreg:penalty=cubed"
    assert cell.label == "BCE + RankReg [penalty=cubed]"


def test_a_best_row_whose_regulariser_never_acted_gets_no_verdict(tmp_path):
    ctx = context(tmp_path)
    spec = get_spec("rankreg-t6")
    run_table(spec, ctx, progress=False, train_fn=fake_train(reg_ratio={"rankreg": 0.001}))
    md, _ = render_table(spec, ctx)
    best = md.split("a buffer of 32 is the best size")[1].split("- **")[0]
    assert "ours not informative (regulariser inactive ◦)" in best and "vs " not in best
