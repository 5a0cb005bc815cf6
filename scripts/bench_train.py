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
                         "changed: update the HOOKS list of the profiling script") from err


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
        replace(owner, name, original, _timed(original, timeline, phase, then, hits, where))
    return hits


def replace(owner: object, name: str, original, wrapped) -> None:
    """Put `wrapped` where `owner.name` was, and where a hightpr module imported a module-level
    function by name (`from hightpr.data.augment import to_float`)."""
    setattr(owner, name, wrapped)
    if isinstance(owner, types.ModuleType):
        for module in list(sys.modules.values()):
            ours = getattr(module, "__name__", "").startswith("hightpr")
            if ours and getattr(module, name, None) is original:
                setattr(module, name, wrapped)


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


def train_overrides(args, output_root: Path, epochs: int) -> list[str]:
    """`train.py`'s overrides of one timed project run (a fresh output root: nothing to resume)."""
    return [f"model.width={args.width}", f"trainer.max_epochs={epochs}", "trainer.patience=99",
            "seed=1", f"paths.data_dir={Path(args.data_dir).resolve()}", f"paths.output_root={output_root}",
            f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
            "trainer.enable_progress_bar=false"]


def split_ids(folder: Path) -> dict[str, list[int]]:
    """Validation and test sample ids of a run's saved logits (the same split, sample by sample)."""
    import numpy as np

    return {s: np.load(folder / f"logits_{s}.npz")["ids"].tolist() for s in ("val", "test")}


def time_plain(args, work: Path, epochs: int) -> dict:
    """One timed `scripts/plain_loop.py` process: seconds, test AUC, best epoch, data, phases."""
    out = work / "plain"
    launched = time.time()
    cmd = [sys.executable, str(ROOT / "scripts" / "plain_loop.py"),
           "--data-dir", str(Path(args.data_dir).resolve()), "--out", str(out), "--width", str(args.width),
           "--epochs", str(epochs), "--seed", "1", "--device", args.device,
           "--launched-at", repr(launched)]
    seconds, cpu = launch(cmd, work / "plain.log")
    lines = [line for line in (work / "plain.log").read_text().splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    phases = {**result["phases"], "exit": seconds - result["seconds"]}
    return {"seconds": seconds, "cpu_s": cpu, "auc": result["test_auc"], "best_epoch": result["best_epoch"],
            "data": result["data"], "ids": split_ids(out), "phases": phases}


def time_project(args, work: Path, epochs: int, profile: bool = False) -> dict:
    """One timed project process (`train.py`, or the profiled child): seconds, test AUC, best epoch,
    data, and with `profile` its phases."""
    overrides = train_overrides(args, work / "outputs", epochs)
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


def cpu_model() -> str | None:
    """The CPU's model name (Linux), so that figures from different machines are not mixed."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def time_members(args, work: Path, epochs: int, batched: bool) -> dict:
    """One timed `train.py ensemble.members=N` process, batched or one by one: seconds and the
    ensemble's test AUC."""
    overrides = [*train_overrides(args, work / "outputs", epochs), f"ensemble.members={args.members}",
                 f"ensemble.batched={str(batched).lower()}", "ensemble.checkpoint_every_s=0"]
    if args.limit_batches:
        overrides.append(f"trainer.limit_train_batches={args.limit_batches}")
    seconds, cpu = launch([sys.executable, str(ROOT / "train.py"), *overrides], work / "train.log")
    found = sorted((work / "outputs").glob("*/ensembles/*/metrics.json"))
    if len(found) != 1:
        raise SystemExit(f"error: expected one ensemble metrics.json under {work / 'outputs'}, "
                         f"found {len(found)}")
    metrics = json.loads(found[0].read_text())
    return {"seconds": seconds, "cpu_s": cpu, "auc": metrics["test"]["auc"]}


# the two sides of each two-length mode: (name, timer(args, work, epochs) -> result)
SIDES = {
    "runs": (("plain", time_plain), ("project", time_project)),
    "members": (("sequential", functools.partial(time_members, batched=False)),
                ("batched", functools.partial(time_members, batched=True))),
}


def lengths_fit(runs: list[dict], short: int, long: int) -> dict:
    """Per-epoch and fixed seconds of one side from its runs at two lengths: per epoch, the
    difference of the two lengths' median seconds over the epochs between them; fixed, the short
    runs' median less their epochs. The spread is that of each repeat's own per-epoch figure (its
    long run less its short one)."""
    short_s = [r["seconds"] for r in runs if r["epochs"] == short]
    long_s = [r["seconds"] for r in runs if r["epochs"] == long]
    per_epoch = (statistics.median(long_s) - statistics.median(short_s)) / (long - short)
    each = [(b - a) / (long - short) for a, b in zip(short_s, long_s, strict=True)]
    return {"per_epoch_s": round(per_epoch, 3),
            "fixed_s": round(statistics.median(short_s) - short * per_epoch, 3),
            "per_epoch_spread": (round(spread(each), 4) if len(each) > 1 and statistics.median(each) > 0
                                 else None),
            "per_epoch_each_s": [round(v, 3) for v in each],
            "short_s": [round(v, 2) for v in short_s], "long_s": [round(v, 2) for v in long_s],
            "auc_long": round(statistics.median(r["auc"] for r in runs if r["epochs"] == long), 6),
            "cpu_s_long": round(statistics.median(r["cpu_s"] for r in runs if r["epochs"] == long), 2)}


def summarise(args, mode: str, results: dict[str, list[dict]]) -> dict:
    """Each side's per-epoch and fixed seconds, their ratio and difference, the AUC check and the
    machine: one JSON object."""
    (a, _), (b, _) = SIDES[mode]
    short, long = args.lengths
    fits = {side: lengths_fit(runs, short, long) for side, runs in results.items()}
    gap = abs(fits[a]["auc_long"] - fits[b]["auc_long"])
    out = {"mode": mode, "lengths": [short, long], "repeats": args.repeats, **fits,
           # > 1: the second side (the project; batched members) takes less per epoch
           f"per_epoch_{b}_vs_{a}": round(fits[a]["per_epoch_s"] / fits[b]["per_epoch_s"], 4),
           f"fixed_{b}_minus_{a}_s": round(fits[b]["fixed_s"] - fits[a]["fixed_s"], 3),
           "void": gap > AUC_TOLERANCE, "width": args.width, "seed": 1, "ratio": 100,
           "cpu_model": cpu_model(), **machine(args.device)}
    if mode == "runs":
        first = results["project"][0]
        out["same_split"] = all(r["data"] == first["data"] and r["ids"] == first["ids"]
                                for r in results["plain"] + results["project"])
    else:
        out.update(members=args.members, limit_batches=args.limit_batches)
    return out


def report_lengths(summary: dict, profile: tuple[dict, dict] | None) -> None:
    """Per-epoch and fixed seconds of both sides, the profile table (`--profile`), the JSON line last."""
    s = summary
    mode = s["mode"]
    (a, _), (b, _) = SIDES[mode]
    short, long = s["lengths"]
    what = "one run"
    if mode == "members":
        limit = f", {s['limit_batches']} batches an epoch" if s["limit_batches"] else ""
        what = f"{s['members']} members{limit}"
    print(f"\nwhole processes, start to exit, at {short} and {long} epochs: ResNet-10 (width {s['width']}), "
          f"binary CIFAR-10 1:100, seed 1, {what}, {s['repeats']} repeat(s); {s['cpu_model'] or s['device']} "
          f"({s['cpu_count']} CPUs, {s['threads']} threads), torch {s['torch']}")
    print(f"{'side':<12}{'s/epoch':>9}{'spread':>8}{'fixed s':>9}{'test AUC':>10}   {short}-epoch runs (s)"
          f"   {long}-epoch runs (s)")
    for side in (a, b):
        f = s[side]
        spread_cell = "-" if f["per_epoch_spread"] is None else f"{f['per_epoch_spread']:.1%}"
        short_runs, long_runs = (" ".join(f"{v:.1f}" for v in f[k]) for k in ("short_s", "long_s"))
        print(f"{side:<12}{f['per_epoch_s']:>9.2f}{spread_cell:>8}{f['fixed_s']:>9.1f}"
              f"{f['auc_long']:>10.4f}   {short_runs}   {long_runs}")
    print(f"per_epoch_{b}_vs_{a} = {s[f'per_epoch_{b}_vs_{a}']:.3f} ({a} s/epoch over {b} s/epoch; "
          f">1: {b} is faster); fixed_{b}_minus_{a}_s = {s[f'fixed_{b}_minus_{a}_s']:+.1f}")
    if "same_split" in s:
        print(f"same split (data counts, val and test ids): {'yes' if s['same_split'] else 'NO'}")
    print(f"load average {s['load_before']:.2f} before, {s['load_after']:.2f} after "
          "(other processes slow both)")
    if s["void"]:
        print(f"VOID: the {long}-epoch test AUCs differ by more than {AUC_TOLERANCE}: the two sides did not "
              "train the same thing, so their times are not comparable")
    if profile is not None:
        plain_phases, project = profile
        print(f"\nphases of the {long}-epoch runs (plain: median of its runs; project: one profiled run, "
              f"{project['seconds']:.1f} s, test AUC {project['auc']:.4f})")
        print("\n".join(phase_table(plain_phases, project["phases"])))
    print(json.dumps(s))


def lengths_mode(args) -> int:
    """`--mode runs` / `--mode members`: the two sides' processes at two lengths, alternating (the
    order of the sides and lengths turns each repeat, so a drift of the machine's speed reaches both),
    then (`--profile`) one profiled project run at the longer length."""
    base = Path(tempfile.mkdtemp(prefix=f"bench_{args.mode}_", dir=args.keep))
    sides = SIDES[args.mode]
    results: dict[str, list[dict]] = {name: [] for name, _ in sides}
    profiled = None
    load_before = os.getloadavg()[0]
    try:
        for i in range(args.repeats):
            order = [(n, t, e) for e in args.lengths for n, t in sides]
            order = order[i % len(order):] + order[:i % len(order)]
            for name, timer, epochs in order:
                work = base / f"{name}{epochs}-{i + 1}"
                work.mkdir()
                done = {**timer(args, work, epochs), "epochs": epochs}
                results[name].append(done)
                print(f"{name} {epochs} epochs {i + 1}/{args.repeats}: {done['seconds']:.1f} s "
                      f"({done['cpu_s']:.1f} CPU s), test AUC {done['auc']:.4f}", file=sys.stderr, flush=True)
        if args.profile:
            (base / "profile").mkdir()
            profiled = time_project(args, base / "profile", max(args.lengths), profile=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    summary = {**summarise(args, args.mode, results), "load_before": round(load_before, 2),
               "load_after": round(os.getloadavg()[0], 2)}
    plain_phases = None
    if profiled is not None:
        plain_phases = median_phases([r for r in results["plain"] if r["epochs"] == max(args.lengths)])
        summary["profile"] = {"plain": {p: round(v, 3) for p, v in plain_phases.items()},
                              "project": {p: round(v, 3) for p, v in profiled["phases"].items()},
                              "project_profiled_s": round(profiled["seconds"], 2)}
    report_lengths(summary, (plain_phases, profiled) if profiled else None)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--profile-child"]:  # the profiled project run of `--mode runs --profile`
        return profile_child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("cases", "runs", "members"), default="cases",
                        help="cases: (a)-(d) in this process; runs: whole processes at two lengths, plain "
                             "vs train.py; members: whole processes at two lengths, batched vs one by one")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when there is one")
    parser.add_argument("--epochs", type=int, default=1, help="cases: epochs per case")
    parser.add_argument("--lengths", type=_lengths, default=(1, 9),
                        help="runs, members: the two run lengths in epochs, SHORT,LONG (default 1,9: "
                             "a one-epoch short run carries the least per-epoch noise into the fixed figure)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs, members: processes per side and length, alternating")
    parser.add_argument("--profile", action="store_true",
                        help="runs: one more project run, profiled by phase beside the plain script's phases")
    parser.add_argument("--reg", choices=tuple(REGS), default="none")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--width", type=int, default=None,
                        help="ResNet-10 width (default: 64, the papers', for cases; 32 for runs; "
                             "16 for members)")
    parser.add_argument("--ratio", type=int, default=100, help="binary CIFAR-10 imbalance 1:ratio")
    parser.add_argument("--limit-batches", type=int, default=None,
                        help="cases, members: training batches per epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--cases", default="abcd", help="which of a, b, c, d to run (default all)")
    parser.add_argument("--forward", choices=("stacked", "members"), default=None,
                        help="(d)'s forward: one stacked network or each member's model "
                             "(default: stacked on a GPU, members on the CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the stacked network in (d)")
    parser.add_argument("--data-dir", default=os.environ.get("HIGHTPR_DATA_DIR", "data"))
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs' outputs in this folder")
    args = parser.parse_args(argv)
    args.width = args.width or {"cases": 64, "runs": 32, "members": 16}[args.mode]
    args.device = args.device or default_device()
    if args.device == "cuda" and default_device() != "cuda":
        parser.error("--device cuda: no CUDA device")
    if args.profile and args.mode != "runs":
        parser.error("--profile needs --mode runs")
    if args.mode == "runs" and args.limit_batches:
        parser.error("--limit-batches: the plain script of --mode runs trains whole epochs; use it with "
                     "--mode cases or members")
    if args.mode != "cases":
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
        return lengths_mode(args)
    return cases_mode(args)


def _lengths(text: str) -> tuple[int, int]:
    """`SHORT,LONG` epochs, 1 <= SHORT < LONG."""
    try:
        short, long = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give two epoch counts, SHORT,LONG (e.g. 3,9)") from None
    if not 1 <= short < long:
        raise argparse.ArgumentTypeError(f"{text!r}: need 1 <= SHORT < LONG")
    return short, long


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
