"""The results site (`make site`) and run status (`make status`): built from the committed CPU
results, checked as HTML and, when Chromium is installed, in a real headless browser."""

from __future__ import annotations

import fcntl
import json
import re
import time
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest

from hightpr.site.build import build_site
from hightpr.site.status import PoolReader, first_error
from hightpr.tables.specs import all_specs
from tests.browser import Browser, find_chromium

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
T1_CSV = RESULTS / "tables" / "cpu" / "rankreg-t1.csv"
NUMBER_COLUMNS = ("paper", "ours", "ours_ci_low", "ours_ci_high")


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()
        self.imgs: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.refs.append(a["href"])
        if tag in ("img", "link") and (a.get("src") or a.get("href")):
            self.refs.append(a.get("src") or a["href"])
        if tag == "img":
            self.imgs.append(a)


def _parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text())
    return p


def broken_refs(page: Path, refs: list[str]) -> list[str]:
    """Relative links of a page that do not resolve to a file or folder (or a missing #id)."""
    bad = []
    for ref in refs:
        url = urlsplit(ref)
        if url.scheme and url.scheme != "file":
            bad.append(f"{ref}: not a local link")
            continue
        target = Path(unquote(url.path)) if url.scheme == "file" else (page.parent / unquote(url.path)
                                                                        if url.path else page)
        if not target.exists():
            bad.append(f"{ref}: {target} does not exist")
        elif url.fragment and target.suffix == ".html" and url.fragment not in _parse(target).ids:
            bad.append(f"{ref}: no #{url.fragment} in {target.name}")
    return bad


def csv_numbers(path: Path) -> set[str]:
    csv = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {v for c in NUMBER_COLUMNS if c in csv for v in csv[c] if v}


# -- status ----------------------------------------------------------------------------------------
def _finished(edir: Path, members: int) -> None:
    edir.mkdir(parents=True)
    (edir / "metrics.json").write_text(json.dumps({"num_members": members, "test": {"auc": 0.9}}))
    np.savez(edir / "logits_test.npz", scores=np.zeros(2), labels=np.array([0, 1]), ids=np.arange(2))


def test_run_states_from_the_pool(tmp_path):
    """finished / running (a live run.lock) / failed (first error line, log) / missing."""
    pool = tmp_path / "runs" / "cpu"
    _finished(pool / "ensembles" / "done", 3)
    running = pool / "ensembles" / "busy" / "member_01"
    running.mkdir(parents=True)
    (running / "run.lock").write_text("host h pid 1 since now\n")
    crashed = pool / "ensembles" / "broken" / "member_01"
    crashed.mkdir(parents=True)
    (crashed / "run.lock").write_text("host h pid 2\n")
    job = pool / "runs" / "job1"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- loss=bce\n- ensemble.key=broken\n")
    (job / "train.log").write_text("[INFO] start\nTraceback (most recent call last):\n"
                                   "RuntimeError: CUDA error: out of memory\n")
    stopped = pool / "ensembles" / "stopped" / "member_02" / "csv"
    stopped.mkdir(parents=True)
    (stopped / "metrics.csv").write_text("epoch,step\n0,10\n4,50\n")
    with open(running / "run.lock") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)     # a live process trains it
        reader = PoolReader(pool)
        states = {k: reader.state(k, 3) for k in ("done", "busy", "broken", "stopped", "absent")}
        probed = PoolReader(pool)
        probed.held = None                      # the flock probe used where /proc/locks is absent
        assert probed.state("busy", 3)[0] == "running"
    assert states["done"][0] == "finished"
    assert states["busy"][0] == "running" and "pid 1" in states["busy"][2]
    assert states["broken"][:3] == ("failed", 0, "RuntimeError: CUDA error: out of memory")
    assert states["broken"][3] == job / "train.log"
    assert states["stopped"][0] == "failed" and "after epoch 5" in states["stopped"][2]
    assert states["stopped"][3] == stopped / "metrics.csv"
    assert states["absent"][0] == "missing"
    assert PoolReader(pool).state("busy", 3)[0] == "failed"   # the lock died with its holder


def test_first_error_line(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("epoch 1\nerror: dataset.ratio=0: must be positive\nValueError: later\n")
    assert first_error(log) == "error: dataset.ratio=0: must be positive"


def test_status_cli_lists_each_planned_run(capsys):
    from hightpr.cli.status import main

    assert main(["rankreg-t1", "--scale", "cpu", "--results", str(RESULTS)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rankreg-t1 [cpu]: ")
    csv = pd.read_csv(T1_CSV, dtype=str, keep_default_na=False)
    for key in set(csv["run"]) - {""}:
        assert re.search(rf"(finished|partial \d+/10)\s+{key}", out), key
    assert "cifar10_binary.main@100/s_ml+alm" in out and "missing" in out


# -- the site --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_site(tmp_path_factory) -> Path:
    """The index, status and two table pages (one with runs, one without), from the committed results."""
    out = tmp_path_factory.mktemp("site")
    build_site(out, RESULTS, pages=["rankreg-t1", "rankreg-t2"])
    return out


def test_site_index_covers_every_table_and_scale(small_site):
    html = (small_site / "index.html").read_text()
    for name in all_specs():
        assert f'href="tables/{name}.html' in html, name
    assert len(all_specs()) == 35
    for scale in ("smoke", "cpu", "paper"):
        assert f"<th>{scale}</th>" in html
    assert "cpu</strong>:" in html and "runnable cells have a finished run of ours" in html


def test_site_table_page_shows_the_rendered_numbers(small_site):
    page = small_site / "tables" / "rankreg-t1.html"
    text = page.read_text()
    shown = set(re.findall(r"[-+]?\d+(?:\.\d+)?", re.sub(r"<[^>]+>", " ", text)))
    missing = sorted(csv_numbers(T1_CSV) - shown)
    assert not missing, f"numbers of {T1_CSV.name} not on the page: {missing[:10]}"
    assert "python train.py " in text and "make table-rankreg-t1 SCALE=cpu ROWS=" in text
    refs = _parse(page)
    assert not broken_refs(page, refs.refs)
    assert refs.imgs and all(len(i.get("alt", "")) > 40 for i in refs.imgs)
    assert any(r.endswith("-roc.svg") for r in refs.refs) and any(r.endswith("-fpr.svg") for r in refs.refs)
    assert (small_site / "data" / "cpu" / "rankreg-t1.csv").read_text() == T1_CSV.read_text() or \
        "rendered now" in text
    assert "Nothing of ours has been run" in (small_site / "tables" / "rankreg-t2.html").read_text()
    for other in ("index.html", "status.html", "tables/rankreg-t2.html"):
        p = small_site / other
        written = [r for r in _parse(p).refs
                   if not re.search(r"tables/[\w-]+\.html", r) or re.search(r"tables/rankreg-t[12]\.html", r)]
        assert not broken_refs(p, written)


@pytest.mark.slow
def test_site_in_a_browser(tmp_path):
    """Every page of the full site in headless Chromium: no console errors, every link and image
    resolves, the rankreg-t1 page carries the numbers of results/tables/cpu/rankreg-t1.csv;
    screenshots under tmp_path/shots."""
    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium; .ci/run installs it)")
    site, shots = tmp_path / "site", tmp_path / "shots"
    shots.mkdir()
    start = time.perf_counter()
    report = build_site(site, RESULTS)
    built = time.perf_counter() - start
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == len(all_specs()) + 2 == len(report.pages)
    browser = Browser(binary, tmp_path / "profile")
    problems: list[str] = []
    try:
        for page in pages:
            facts, errors = browser.open(page.as_uri())
            problems += [f"{page.name}: {e}" for e in errors]
            problems += [f"{page.name}: {b}" for b in broken_refs(page, facts["links"])]
            for image in facts["images"]:
                if not image["ok"]:
                    problems.append(f"{page.name}: image {image['src']} did not load")
                if not image["alt"]:
                    problems.append(f"{page.name}: image {image['src']} without alt text")
            if page.name in ("index.html", "rankreg-t1.html", "status.html", "rankreg-t2.html"):
                browser.screenshot(shots / f"{page.stem}.png", full=True, height=facts["height"])
            if page.name == "rankreg-t1.html":
                shown = set(re.findall(r"[-+]?\d+(?:\.\d+)?", facts["text"]))
                missing = sorted(csv_numbers(T1_CSV) - shown)
                problems += [f"rankreg-t1.html: {T1_CSV.name} number {n} not shown" for n in missing]
    finally:
        browser.close()
    assert not problems, "\n".join(problems[:30])
    assert (shots / "index.png").stat().st_size > 10_000
    print(f"site built in {built:.1f} s; {len(pages)} pages opened; screenshots in {shots}")


# -- the site reads the renderer's JSON ------------------------------------------------------------
def _results_copy(tmp_path: Path, *names: str, suffixes=(".md", ".csv", ".json")) -> Path:
    """A results folder sharing the committed runs and papers, with copies of these cpu tables' files."""
    results = tmp_path / "results"
    (results / "tables" / "cpu").mkdir(parents=True)
    for sub in ("runs", "paper"):
        (results / sub).symlink_to(RESULTS / sub)
    for name in names:
        for suffix in suffixes:
            src = RESULTS / "tables" / "cpu" / f"{name}{suffix}"
            (results / "tables" / "cpu" / src.name).write_bytes(src.read_bytes())
    return results


def test_a_verdict_changed_in_the_json_shows_on_the_page(tmp_path):
    """The page words and colours a verdict from the table's JSON value, not from the markdown."""
    from hightpr.tables.claims import sentence

    results = _results_copy(tmp_path, "rankreg-t1")
    path = results / "tables" / "cpu" / "rankreg-t1.json"
    data = json.loads(path.read_text())
    line = next(v for c in data["claims"]["claims"] for v in c["lines"]
                if v["kind"] == "better" and v["outcome"] == "not_distinguishable" and v["level"] == 0)
    before = sentence(line)
    line.update(outcome="supported", significant=line["ours"][1])   # flipped in the data only
    after = sentence(line)
    assert after.endswith(": supported") and after != before
    path.write_text(json.dumps(data))
    report = build_site(tmp_path / "site", results, scales=("cpu",), pages=["rankreg-t1"])
    assert not report.rendered_now and not report.notes
    html = (tmp_path / "site" / "tables" / "rankreg-t1.html").read_text()
    shown = re.compile(r'<li class="verdict-line ([\w -]+)" data-outcome="(\w+)">([^<]*)</li>')
    lines = {unescape(text): (cls, outcome) for cls, outcome, text in shown.findall(html)}
    assert lines[after] == ("supported", "supported")
    assert before not in lines
    assert "results/tables/cpu/rankreg-t1.json" in html


def test_a_missing_or_older_json_is_named_with_the_command_that_writes_it(tmp_path):
    results = _results_copy(tmp_path, "alm-t12", suffixes=(".md", ".csv"))
    report = build_site(tmp_path / "site", results, scales=("cpu",), pages=["alm-t12"])
    assert "results/tables/cpu/alm-t12.json is missing: `make tables` writes it" in report.lines()
    html = (tmp_path / "site" / "tables" / "alm-t12.html").read_text()
    assert "alm-t12.json is missing" in html and "<code>make tables</code> writes it" in html
    (results / "tables" / "cpu" / "alm-t12.json").write_text(json.dumps({"table": "alm-t12", "rows": []}))
    again = build_site(tmp_path / "site", results, scales=("cpu",), pages=["alm-t12"])   # cached render
    assert any("an older hightpr wrote it): `make tables` writes it again" in n for n in again.notes)
