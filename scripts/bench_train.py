"""Training speed: the project's run against a plain PyTorch loop, and ensembles one by one vs batched.

Two modes. `--mode cases` (default) times, in this process, on the same model (ResNet-10,
`--width`) and the same data (binary CIFAR-10 1:100, `--ratio`), each case from the prepared data
to its test evaluation:

    (a) a plain PyTorch loop written here: data on the device, augmentation on the device, the
        project's model, loss and regulariser objects, Adam; validation every epoch, test at the end
    (b) the project's training of one run (`hightpr.training.train_run`: Lightning, checkpoints, outputs)
    (c) `--members` members one after another (`ensemble.batched=false`)
    (d) the same members batched (`ensemble.batched=true`, `hightpr.stacked`)

Throughput is training images per second (training-set samples drawn, epochs x batches x batch;
RankReg's re-scored buffer not counted). Every run trains exactly `--epochs` epochs (no early
stopping). The table is followed, as the last line, by one JSON object with
`project_vs_plain` = (b)/(a) and `batched_vs_sequential` = (d)/(c).

`--mode runs` times whole processes, from launch to exit, alternating `--repeats` times:
`python scripts/plain_loop.py` (the task in plain PyTorch, no Lightning) and the project's command
`python train.py model.width=W trainer.max_epochs=E trainer.patience=99 seed=1 ...` (a fresh output
root each run, so nothing is resumed). It reports each case's median and spread ((max - min) /
median), `project_vs_plain` = plain median / project median (>1: the project is faster) and both
test AUCs; AUCs more than 0.03 apart make the comparison void. `--profile` adds one project run
in a child process that times its phases by wrapping the project's and Lightning's functions from
outside (`HOOKS`), shown beside the plain script's phases. This process never imports Lightning.

    python scripts/bench_train.py --device cpu --width 16 --limit-batches 20   # a few minutes, 2 cores
    python scripts/bench_train.py --device cuda --epochs 5                     # one GPU
    python scripts/bench_train.py --device cuda --epochs 100 --cases d         # the 10-member protocol
    python scripts/bench_train.py --device cuda --reg alm                      # none | alm | rankreg
    python scripts/bench_train.py --mode runs --device cpu --epochs 1 --repeats 1     # a quick look
    python scripts/bench_train.py --mode runs --device cpu --width 32 --epochs 8 --repeats 3
    python scripts/bench_train.py --mode runs --device cpu --repeats 1 --profile      # phases too

Needs the prepared CIFAR-10 under --data-dir (default $HIGHTPR_DATA_DIR, else ./data; `make data`).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import functools
import importlib
import json
import logging
import os
import re
import resource
import runpy
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `--mode runs` stays free of Lightning
    import torch

REGS = {"none": ["reg=none"], "alm": ["reg=alm"], "rankreg": ["experiment=rankreg/cifar"]}
CASES = {"a": "plain PyTorch loop", "b": "project, one run", "c": "members one by one",
         "d": "members batched"}


def overrides(args, device: str) -> list[str]:
    """The config of every project run of the benchmark."""
    out = ["dataset=cifar10_binary", f"dataset.ratio={args.ratio}", f"paths.data_dir={args.data_dir}",
           f"model.width={args.width}", f"trainer.max_epochs={args.epochs}",
           f"trainer.patience={args.epochs + 1}",
           "trainer.enable_progress_bar=false", "logger=csv", *REGS[args.reg]]
    out += ["trainer=gpu"] if device == "cuda" else ["trainer.accelerator=cpu"]
    if args.limit_batches:
        out.append(f"trainer.limit_train_batches={args.limit_batches}")
    if args.threads:
        out.append(f"trainer.num_threads={args.threads}")
    return out


def images_per_run(cfg) -> int:
    """Training-set samples one run draws: epochs x (batches, limited) x batch size."""
    from hightpr.build import build_datamodule

    n_train = len(build_datamodule(cfg)[0].splits["train"])
    batch = int(cfg.trainer.batch_size)
    batches = -(-n_train // batch)
    limit = cfg.trainer.get("limit_train_batches")
    if limit:
        batches = min(batches, int(limit))
        return int(cfg.trainer.max_epochs) * min(batches * batch, n_train)
    return int(cfg.trainer.max_epochs) * n_train


# -- (a) a plain PyTorch loop ------------------------------------------------------------------
def _auc(model, x: torch.Tensor, y: torch.Tensor, to_input, autocast, chunk: int = 1000) -> float:
    import torch

    from hightpr.metrics import roc_auc

    model.eval()
    with torch.inference_mode(), autocast():
        logits = torch.cat([model(to_input(x[i:i + chunk])) for i in range(0, len(x), chunk)]).float()
    model.train()
    scores = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
    return roc_auc(scores.cpu().numpy(), y.cpu().numpy())


def plain_loop(cfg, device: torch.device) -> float:
    """Train one model with a hand-written loop; returns its test AUC (a sanity check of the loop)."""
    import pytorch_lightning as pl
    import torch

    from hightpr.build import (
        build,
        build_datamodule,
        build_loss,
        build_model,
        build_regularizer,
        sample_input,
    )
    from hightpr.data.augment import random_crop_flip

    pl.seed_everything(int(cfg.seed), verbose=False)
    dm, facts = build_datamodule(cfg)  # the same splits: decoded uint8 images and labels
    loss = build_loss(cfg, facts)
    model = build_model(cfg, facts, loss, sample_input(dm)).to(device)
    reg = build_regularizer(cfg, facts).to(device)
    optimizer = build(cfg.optimizer, "optimizer")(model.parameters())
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def to_input(x):
        x = dm.to_input(x)
        return x.contiguous(memory_format=torch.channels_last) if cuda else x

    split = {s: (dm.splits[s].x.to(device), dm.splits[s].y.to(device), dm.splits[s].ids.to(device))
             for s in ("train", "val", "test")}
    x_tr, y_tr, id_tr = split["train"]
    batch, n = int(cfg.trainer.batch_size), len(y_tr)
    n_batches = -(-n // batch)
    if cfg.trainer.get("limit_train_batches"):
        n_batches = min(n_batches, int(cfg.trainer.limit_train_batches))
    best, best_state = -1.0, None
    for epoch in range(int(cfg.trainer.max_epochs)):
        reg.on_train_epoch_start(epoch)
        order = torch.randperm(n, device=device)
        for b in range(n_batches):
            idx = order[b * batch:(b + 1) * batch]
            data = {"x": to_input(random_crop_flip(x_tr[idx])), "y": y_tr[idx], "id": id_tr[idx]}
            with autocast():
                data, n_base = reg.extend_batch(data)
                logits = model(data["x"])
                scores = facts.task.score(logits)
                value = loss(logits[:n_base], data["y"][:n_base], data["id"][:n_base])
                value = value + reg(logits, scores, data["y"], data["id"])
                reg.after_step(data, logits.detach(), scores.detach())
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
        auc = _auc(model, *split["val"][:2], to_input, autocast)
        reg.on_validation_end(auc)
        if auc > best:
            best, best_state = auc, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return _auc(model, *split["test"][:2], to_input, autocast)


# -- the cases ---------------------------------------------------------------------------------
def run_case(case: str, args, device: str, out: Path) -> tuple[int, float, str]:
    """(training images, seconds, note) of one case."""
    import torch

    from hightpr.config import compose_config
    from hightpr.training import train

    base = overrides(args, device)
    name = f"case_{case}"
    common = [*base, f"paths.output_root={out}", f"name={name}"]
    if case == "a":
        cfg = compose_config([*common, "seed=1"])
        images = images_per_run(cfg)
        start = time.perf_counter()
        auc = plain_loop(cfg, torch.device(device))
        return images, time.perf_counter() - start, f"test AUC {auc:.3f}"
    if case == "b":
        cfg = compose_config([*common, "seed=1"])
        images = images_per_run(cfg)
        start = time.perf_counter()
        metrics = train(cfg)
        return images, time.perf_counter() - start, f"test AUC {metrics['test']['auc']:.3f}"
    batched = "true" if case == "d" else "false"
    ensemble = [f"ensemble.members={args.members}", f"ensemble.batched={batched}"]
    if case == "d":
        ensemble += [f"ensemble.forward={args.forward or 'null'}",
                     f"ensemble.compile={str(args.compile).lower()}"]
    cfg = compose_config([*common, *ensemble])
    images = images_per_run(cfg) * args.members
    start = time.perf_counter()
    metrics = train(cfg)
    note = (f"members' test AUC {metrics['member_mean']['test_auc']:.3f} ± "
            f"{metrics['member_std']['test_auc']:.3f}, ensemble {metrics['test']['auc']:.3f}")
    return images, time.perf_counter() - start, note


def batched_forward(forward: str | None, device: str) -> str:
    """(d)'s forward: `--forward`, else the automatic one of `ensemble.forward=null` on `device`."""
    import torch

    from hightpr.stacked.forward import forward_mode

    return forward_mode(forward, torch.device(device))


# -- --mode runs: whole processes, the project's command against the plain script ---------------
ROOT = Path(__file__).resolve().parent.parent
AUC_TOLERANCE = 0.03  # test AUCs further apart: the two runs did not train the same thing
PHASES = {  # phase -> its row in the profile table (the plain script reports the same names)
    "imports": "interpreter start and imports",
    "config": "config composition and checks",
    "data": "data setup (read, decode, split)",
    "model": "model, optimizer and trainer setup",
    "train": "training epochs",
    "val": "validation",
    "checkpoints": "checkpoints (plain: best weights copied)",
    "logging": "metric logging",
    "test": "test",
    "outputs": "writing outputs",
    "exit": "interpreter exit and the rest",
}
# (where, phase, ambient phase after it returns, required): the functions a profiled project run
# times, looked up by name; `eval` is `val` or `test` by the trainer's state. A required one that
# is missing or never called fails the profile, naming it.
HOOKS = (
    ("hightpr.build:build_datamodule", "data", "model", True),
    ("pytorch_lightning:Trainer.fit", "model", "val", True),
    ("pytorch_lightning.loops.fit_loop:_FitLoop.run", "train", None, True),
    ("pytorch_lightning.loops.evaluation_loop:_EvaluationLoop.run", "eval", None, True),
    ("pytorch_lightning:Trainer.validate", "val", None, False),
    ("pytorch_lightning:Trainer.test", "test", "outputs", True),
    ("pytorch_lightning:Trainer.save_checkpoint", "checkpoints", None, True),
    ("pytorch_lightning.trainer.connectors.checkpoint_connector:"
     "_CheckpointConnector._restore_modules_and_callbacks", "checkpoints", None, False),
    ("pytorch_lightning.loggers:CSVLogger.log_metrics", "logging", None, False),
    ("pytorch_lightning.loggers:CSVLogger.save", "logging", None, False),
    ("hightpr.runs:save_logits", "outputs", None, True),
    ("hightpr.runs:save_metrics", "outputs", None, True),
    ("hightpr.runs:append_run", "outputs", None, True),
)


class Timeline:
    """Exclusive wall seconds per phase: every moment is charged to the innermost timed call, or
    to the ambient phase between calls; CUDA work is finished before each reading."""

    def __init__(self, start: float) -> None:
        self.seconds: dict[str, float] = {}
        self.stack: list[str] = []
        self.ambient, self.last = "imports", start

    def _charge(self) -> None:
        cuda = getattr(sys.modules.get("torch"), "cuda", None)
        if cuda is not None and cuda.is_initialized():
            cuda.synchronize()
        now = time.time()
        phase = self.stack[-1] if self.stack else self.ambient
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now

    def enter(self, phase: str) -> None:
        self._charge()
        self.stack.append(phase)

    def leave(self, then: str | None = None) -> None:
        self._charge()
        self.stack.pop()
        if then and not self.stack:
            self.ambient = then

    def switch(self, ambient: str) -> None:
        self._charge()
        self.ambient = ambient


def _lookup(where: str) -> tuple[object, str, object]:
    """(owner, attribute, function) of `module:Name.attr`; a vanished hook point exits, named."""
    module_name, _, path = where.partition(":")
    *owners, name = path.split(".")
    try:
        owner = importlib.import_module(module_name)
        for part in owners:
            owner = getattr(owner, part)
        return owner, name, getattr(owner, name)
    except (ImportError, AttributeError) as err:
        raise SystemExit(f"error: profile hook point {where} is gone ({err}); the project or Lightning "
                         "changed: update HOOKS in scripts/bench_train.py") from err


def _timed(fn, timeline: Timeline, phase: str, then: str | None, hits: dict, where: str):
    """`fn` charging its time to `phase` (`eval`: val or test, by the trainer's state)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        name = phase
        if phase == "eval":
            name = "test" if getattr(args[0].trainer, "testing", False) else "val"
        hits[where] += 1
        timeline.enter(name)
        try:
            return fn(*args, **kwargs)
        finally:
            timeline.leave(then)

    return wrapper


def install_hooks(timeline: Timeline) -> dict[str, int]:
    """Wrap every hook point (a project function also where it was imported by name); calls per hook."""
    hits: dict[str, int] = {}
    for where, phase, then, required in HOOKS:
        try:
            owner, name, original = _lookup(where)
        except SystemExit:
            if required:
                raise
            continue
        hits[where] = 0
        wrapped = _timed(original, timeline, phase, then, hits, where)
        setattr(owner, name, wrapped)
        if isinstance(owner, types.ModuleType):
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith("hightpr") and \
                        getattr(module, name, None) is original:
                    setattr(module, name, wrapped)
    return hits


def entry_modules(script: Path) -> list[str]:
    """The modules a script imports at its top level (what `python train.py` loads first)."""
    names = []
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return names


def watch_imports(timeline: Timeline) -> None:
    """Charge every later first import of a module to `imports`, wherever the run makes it."""
    bootstrap = importlib._bootstrap  # what `import` calls for a module not yet in sys.modules
    original = bootstrap._find_and_load

    @functools.wraps(original)
    def timed(*args, **kwargs):
        timeline.enter("imports")
        try:
            return original(*args, **kwargs)
        finally:
            timeline.leave()

    bootstrap._find_and_load = timed


def profile_child(argv: list[str]) -> int:
    """`--profile-child PHASES.json LAUNCHED -- OVERRIDES`: run `train.py OVERRIDES` in this process,
    its phases timed from outside. Imports: train.py's own, those of the hooked modules (torch,
    Lightning, the project's wiring), and any module the run imports later."""
    out, launched, overrides = Path(argv[0]), float(argv[1]), argv[3:]
    timeline = Timeline(launched)
    entry = ROOT / "train.py"
    for module in entry_modules(entry):
        importlib.import_module(module)
    hits = install_hooks(timeline)
    watch_imports(timeline)
    timeline.switch("config")
    sys.path[0], sys.argv = str(ROOT), [str(entry), *overrides]
    code = 0
    try:
        runpy.run_path(str(entry), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    timeline.switch("exit")
    required = {where for where, *_, needed in HOOKS if needed}
    silent = sorted(where for where, n in hits.items() if n == 0 and where in required)
    out.write_text(json.dumps({"phases": timeline.seconds, "end": time.time(), "calls": hits}))
    if silent and code == 0:
        print(f"error: the run never called {', '.join(silent)}: the project's run no longer goes "
              "through it; update HOOKS in scripts/bench_train.py", file=sys.stderr)
        return 3
    return code


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def launch(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run `cmd` from the repository root, its output to `log`; (wall seconds from start to exit,
    its CPU seconds: well under wall x threads when other processes share the cores)."""
    with open(log, "w") as handle:
        cpu, start = children_cpu(), time.perf_counter()
        code = subprocess.run(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode
        seconds, cpu = time.perf_counter() - start, children_cpu() - cpu
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise SystemExit(f"error: `{' '.join(cmd[:2])} ...` exited with {code}; its last lines:\n{tail}")
    return seconds, cpu


def train_overrides(args, output_root: Path) -> list[str]:
    """`train.py`'s overrides of one timed project run (a fresh output root: nothing to resume)."""
    return [f"model.width={args.width}", f"trainer.max_epochs={args.epochs}", "trainer.patience=99",
            "seed=1", f"paths.data_dir={Path(args.data_dir).resolve()}", f"paths.output_root={output_root}",
            f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
            "trainer.enable_progress_bar=false"]


def split_ids(folder: Path) -> dict[str, list[int]]:
    """Validation and test sample ids of a run's saved logits (the same split, sample by sample)."""
    import numpy as np

    return {s: np.load(folder / f"logits_{s}.npz")["ids"].tolist() for s in ("val", "test")}


def time_plain(args, work: Path) -> dict:
    """One timed `scripts/plain_loop.py` process: seconds, test AUC, best epoch, data, phases."""
    out = work / "plain"
    launched = time.time()
    cmd = [sys.executable, str(ROOT / "scripts" / "plain_loop.py"),
           "--data-dir", str(Path(args.data_dir).resolve()), "--out", str(out), "--width", str(args.width),
           "--epochs", str(args.epochs), "--seed", "1", "--device", args.device,
           "--launched-at", repr(launched)]
    seconds, cpu = launch(cmd, work / "plain.log")
    lines = [line for line in (work / "plain.log").read_text().splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    phases = {**result["phases"], "exit": seconds - result["seconds"]}
    return {"seconds": seconds, "cpu_s": cpu, "auc": result["test_auc"], "best_epoch": result["best_epoch"],
            "data": result["data"], "ids": split_ids(out), "phases": phases}


def time_project(args, work: Path, profile: bool = False) -> dict:
    """One timed project process (`train.py`, or the profiled child): seconds, test AUC, best epoch,
    data, and with `profile` its phases."""
    overrides = train_overrides(args, work / "outputs")
    launched = time.time()
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides]
    if profile:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--profile-child", str(work / "phases.json"),
               repr(launched), "--", *overrides]
    seconds, cpu = launch(cmd, work / "train.log")
    found = sorted((work / "outputs").glob("*/runs/*/metrics.json"))
    if len(found) != 1:
        raise SystemExit(f"error: expected one metrics.json under {work / 'outputs'}, found {len(found)}")
    metrics = json.loads(found[0].read_text())
    epoch = re.search(r"epoch(\d+)", Path(str(metrics.get("best_checkpoint") or "")).name)
    result = {"seconds": seconds, "cpu_s": cpu, "auc": metrics["test"]["auc"], "data": metrics["data"],
              "best_epoch": int(epoch[1]) if epoch else None, "ids": split_ids(found[0].parent)}
    if profile:
        child = json.loads((work / "phases.json").read_text())
        phases = child["phases"]
        phases["exit"] = phases.get("exit", 0.0) + launched + seconds - child["end"]
        result["phases"] = phases
    return result


def spread(values: list[float]) -> float:
    """(max - min) / median."""
    return (max(values) - min(values)) / statistics.median(values)


def median_phases(runs: list[dict]) -> dict[str, float]:
    """Each phase's median over runs."""
    return {p: statistics.median(r["phases"].get(p, 0.0) for r in runs) for p in runs[0]["phases"]}


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def phase_table(plain: dict[str, float], project: dict[str, float]) -> list[str]:
    """The two runs' phases side by side, with the project's extra seconds."""
    lines = [f"{'phase':<42}{'plain s':>9}{'project s':>11}{'extra s':>9}"]
    for phase, label in PHASES.items():
        a, b = plain.get(phase), project.get(phase)
        extra = f"{(b or 0.0) - (a or 0.0):+.1f}" if a is not None or b is not None else ""
        lines.append(f"{label:<42}{_cell(a):>9}{_cell(b):>11}{extra:>9}")
    total_a, total_b = sum(plain.values()), sum(project.values())
    lines.append(f"{'total':<42}{total_a:>9.1f}{total_b:>11.1f}{total_b - total_a:>+9.1f}")
    return lines


def machine(device: str) -> dict:
    """CPU count, torch version and GPU name (torch imported here; Lightning never)."""
    import torch

    return {"device": device, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": sys.version.split()[0],
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None}


def summarise(args, plain: list[dict], project: list[dict]) -> dict:
    """Medians, spreads, the speed ratio and the AUC check of the timed runs."""
    plain_s = statistics.median(r["seconds"] for r in plain)
    project_s = statistics.median(r["seconds"] for r in project)
    auc_plain = statistics.median(r["auc"] for r in plain)
    auc_project = statistics.median(r["auc"] for r in project)
    spreads = {"plain": spread([r["seconds"] for r in plain]),
               "project": spread([r["seconds"] for r in project])}
    first = project[0]
    same_split = all(r["data"] == first["data"] and r["ids"] == first["ids"] for r in plain + project)
    return {"mode": "runs", "plain_s": round(plain_s, 2), "project_s": round(project_s, 2),
            "spread": round(max(spreads.values()), 4), "spread_plain": round(spreads["plain"], 4),
            "spread_project": round(spreads["project"], 4), "project_vs_plain": round(plain_s / project_s, 4),
            "auc_plain": round(auc_plain, 6), "auc_project": round(auc_project, 6),
            "void": abs(auc_plain - auc_project) > AUC_TOLERANCE, "same_split": same_split,
            "best_epoch_plain": plain[0]["best_epoch"], "best_epoch_project": project[0]["best_epoch"],
            "plain_cpu_s": round(statistics.median(r["cpu_s"] for r in plain), 2),
            "project_cpu_s": round(statistics.median(r["cpu_s"] for r in project), 2),
            "plain_runs_s": [round(r["seconds"], 2) for r in plain],
            "project_runs_s": [round(r["seconds"], 2) for r in project],
            "width": args.width, "epochs": args.epochs, "repeats": args.repeats, "seed": 1,
            "ratio": 100, **machine(args.device)}


def report_runs(summary: dict, profile: tuple[dict, dict] | None) -> None:
    """The comparison, the profile table (with `--profile`), and the JSON line last."""
    s = summary
    print(f"\nwhole runs, start to exit: ResNet-10 (width {s['width']}), binary CIFAR-10 1:100, seed 1, "
          f"{s['epochs']} epochs, {s['repeats']} repeat(s), {s['device']} ({s['cpu_count']} CPUs), "
          f"torch {s['torch']}")
    print(f"{'case':<10}{'median s':>10}{'spread':>9}{'test AUC':>10}{'best epoch':>12}   runs (s)")
    for case in ("plain", "project"):
        runs = " ".join(f"{v:.1f}" for v in s[f"{case}_runs_s"])
        print(f"{case:<10}{s[f'{case}_s']:>10.1f}{s[f'spread_{case}']:>9.1%}{s[f'auc_{case}']:>10.4f}"
              f"{s[f'best_epoch_{case}']!s:>12}   {runs}")
    print(f"project_vs_plain = plain / project = {s['project_vs_plain']:.3f} (>1: the project is faster)")
    print(f"same split (data counts, val and test ids): {'yes' if s['same_split'] else 'NO'}")
    print(f"CPU seconds (median): plain {s['plain_cpu_s']:.1f}, project {s['project_cpu_s']:.1f}; "
          f"load average {s['load_before']:.2f} before, {s['load_after']:.2f} after"
          " (other processes slow both cases)")
    if s["void"]:
        gap = abs(s["auc_plain"] - s["auc_project"])
        print(f"VOID: the test AUCs differ by {gap:.3f} > {AUC_TOLERANCE}: the two runs did not train "
              "the same thing, so their times are not comparable")
    if profile is not None:
        plain_phases, project = profile
        print(f"\nphases (plain: median of its runs; project: one profiled run, {project['seconds']:.1f} s, "
              f"test AUC {project['auc']:.4f})")
        print("\n".join(phase_table(plain_phases, project["phases"])))
    print(json.dumps(s))


def run_mode(args) -> int:
    """`--mode runs`: alternate plain and project processes, then (`--profile`) one profiled project run."""
    base = Path(tempfile.mkdtemp(prefix="bench_runs_", dir=args.keep))
    plain, project, profiled = [], [], None
    load_before = os.getloadavg()[0]
    try:
        for i in range(args.repeats):
            for case, timer, runs in (("plain", time_plain, plain), ("project", time_project, project)):
                work = base / f"{case}{i + 1}"
                work.mkdir()
                runs.append(timer(args, work))
                done = runs[-1]
                print(f"{case} {i + 1}/{args.repeats}: {done['seconds']:.1f} s ({done['cpu_s']:.1f} CPU s), "
                      f"test AUC {done['auc']:.4f}", file=sys.stderr, flush=True)
        if args.profile:
            (base / "profile").mkdir()
            profiled = time_project(args, base / "profile", profile=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    summary = {**summarise(args, plain, project), "load_before": round(load_before, 2),
               "load_after": round(os.getloadavg()[0], 2)}
    if profiled is not None:
        summary["profile"] = {"plain": {p: round(v, 3) for p, v in median_phases(plain).items()},
                              "project": {p: round(v, 3) for p, v in profiled["phases"].items()},
                              "project_profiled_s": round(profiled["seconds"], 2)}
    report_runs(summary, (median_phases(plain), profiled) if profiled else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profile-child"]:  # the profiled project run of `--mode runs --profile`
        return profile_child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("cases", "runs"), default="cases",
                        help="cases: (a)-(d) in this process; runs: whole processes, plain vs train.py")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when there is one")
    parser.add_argument("--epochs", type=int, default=None, help="default: 1 (cases), 8 (runs)")
    parser.add_argument("--repeats", type=int, default=3, help="runs: processes per case, alternating")
    parser.add_argument("--profile", action="store_true",
                        help="runs: one more project run, profiled by phase beside the plain script's phases")
    parser.add_argument("--reg", choices=tuple(REGS), default="none")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--width", type=int, default=None,
                        help="ResNet-10 width (default: 64, the papers', for cases; 32 for runs)")
    parser.add_argument("--ratio", type=int, default=100, help="binary CIFAR-10 imbalance 1:ratio")
    parser.add_argument("--limit-batches", type=int, default=None, help="training batches per epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cases", default="abcd", help="which of a, b, c, d to run (default all)")
    parser.add_argument("--forward", choices=("stacked", "members"), default=None,
                        help="(d)'s forward: one stacked network or each member's model "
                             "(default: stacked on a GPU, members on the CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the stacked network in (d)")
    parser.add_argument("--data-dir", default=os.environ.get("HIGHTPR_DATA_DIR", "data"))
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs' outputs in this folder")
    args = parser.parse_args(argv)
    runs = args.mode == "runs"
    args.width = args.width or (32 if runs else 64)
    args.epochs = args.epochs or (8 if runs else 1)
    args.device = args.device or default_device()
    if args.device == "cuda" and default_device() != "cuda":
        parser.error("--device cuda: no CUDA device")
    if args.profile and not runs:
        parser.error("--profile needs --mode runs")
    if runs:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
        return run_mode(args)
    return cases_mode(args)


def default_device() -> str:
    """cuda when a CUDA device is visible, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cases_mode(args) -> int:
    """`--mode cases`: (a)-(d) in this process, their throughput and the two ratios."""
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("hightpr").setLevel(logging.WARNING)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("PL_DISABLE_FORK", "1")

    out = args.keep or Path(tempfile.mkdtemp(prefix="bench_train_"))
    results = {}
    try:
        for case in args.cases:
            images, seconds, note = run_case(case, args, args.device, out)
            results[case] = (images, seconds, note)
            print(f"({case}) {CASES[case]:<22} {images:>8d} images {seconds:>9.1f} s "
                  f"{images / seconds:>9.1f} images/s   {note}", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)

    rate = {c: r[0] / r[1] for c, r in results.items()}
    forward = batched_forward(args.forward, args.device)
    print(f"\nResNet-10 (width {args.width}), binary CIFAR-10 1:{args.ratio}, {args.epochs} epoch(s)"
          f"{f', {args.limit_batches} batches each' if args.limit_batches else ''}, reg={args.reg}, "
          f"{args.members} members, {args.device} ({torch.get_num_threads()} threads), (d) {forward} forward")
    print(f"{'case':<26}{'images':>9}{'seconds':>10}{'images/s':>10}")
    for case, (images, seconds, _) in results.items():
        print(f"({case}) {CASES[case]:<22}{images:>9d}{seconds:>10.1f}{rate[case]:>10.1f}")

    def ratio(a: str, b: str) -> float | None:
        return round(rate[a] / rate[b], 3) if a in rate and b in rate else None

    summary = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
               "threads": torch.get_num_threads(), "epochs": args.epochs, "reg": args.reg,
               "members": args.members,
               "width": args.width, "ratio": args.ratio, "limit_batches": args.limit_batches,
               "batched_forward": forward, "compile": args.compile,
               **{f"{c}_images_per_s": round(r, 1) for c, r in rate.items()},
               **{f"{c}_seconds": round(results[c][1], 1) for c in results},
               "project_vs_plain": ratio("b", "a"), "batched_vs_sequential": ratio("d", "c"),
               "torch": torch.__version__, "numpy": np.__version__}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
