"""Where a training step's milliseconds go, in the project's run and in the plain PyTorch loop.

    python scripts/profile_step.py [--epochs 2] [--width 32] [--repeats 1] [--device cpu]

Runs `scripts/plain_loop.py` and `train.py` (the same task, `bench_train.py --mode runs`'s pair),
each in its own process, with the functions both sides call wrapped from outside and timed
(exclusive wall time: a moment is charged to the innermost timed call). Phases: data (batch
indices and gathering), transfer (Lightning's batch move), augment (crop and flip), normalise,
forward, loss, backward, optimizer (Adam's step less the closure it runs), zero_grad; per epoch,
validation (with the evaluators' metrics), checkpoint writes, logging; and *loop*, the rest of the
time inside the training loop (Lightning's loop, hooks and callbacks; the plain loop's own Python).
Everything is shown in milliseconds per training step (epoch-end work spread over the epoch's
steps). Each wrapper costs a few microseconds a call, the same on both sides. Prints a table and,
last, one JSON line. Needs the prepared CIFAR-10 (`make data`).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVAL = ("val", "test")
PHASES = {  # phase -> its row
    "data": "data: batch indices and gathering",
    "transfer": "data: transfer to the device (Lightning)",
    "augment": "data: crop and flip",
    "normalise": "data: normalise",
    "forward": "forward",
    "loss": "loss (and regulariser)",
    "backward": "backward",
    "optimizer": "optimizer step",
    "zero_grad": "zero_grad",
    "loop": "training loop, hooks, callbacks (the rest)",
    "val": "validation, metrics included (per epoch)",
    "checkpoints": "checkpoints (per epoch)",
    "logging": "logging (per epoch)",
}
COMMON = (
    ("hightpr.models.resnet:CifarResNet.forward", "forward"),
    ("torch:Tensor.backward", "backward"),
    ("torch.optim:Adam.step", "optimizer"),
    ("torch.optim:Optimizer.zero_grad", "zero_grad"),
    ("torch.utils.data.dataloader:_BaseDataLoaderIter.__next__", "data"),
)
HOOKS = {  # side -> (where, phase): `loop` marks the training loop, `eval` is val or test by context
    "plain": COMMON + (
        ("plain_loop:fit", "loop"),
        ("plain_loop:gather", "data"),
        ("plain_loop:crop_flip", "augment"),
        ("plain_loop:to_input", "normalise"),
        ("plain_loop:bce", "loss"),
        ("plain_loop:evaluate", "eval"),
        ("plain_loop:keep_best", "checkpoints"),
    ),
    "project": COMMON + (
        ("pytorch_lightning.loops.fit_loop:_FitLoop.run", "loop"),
        ("pytorch_lightning.loops.optimization.automatic:Closure.__call__", "loop"),  # not Adam's time
        ("pytorch_lightning:LightningModule.transfer_batch_to_device", "transfer"),
        ("hightpr.data.augment:crop_flip_draws", "augment"),
        ("hightpr.data.augment:apply_crop_flip", "augment"),
        ("hightpr.data.augment:to_float", "normalise"),
        ("hightpr.module:HighTPRModule.objective", "loss"),
        ("pytorch_lightning.loops.evaluation_loop:_EvaluationLoop.run", "eval"),
        ("pytorch_lightning:Trainer.save_checkpoint", "checkpoints"),
        ("pytorch_lightning.loggers:CSVLogger.log_metrics", "logging"),
        ("pytorch_lightning.loggers:CSVLogger.save", "logging"),
    ),
}


class Clock:
    """Exclusive wall seconds per phase: each moment goes to the innermost timed call; inside a
    validation or test pass everything is that pass's; outside the training loop, `outside`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.stack: list[str] = []
        self.last = time.perf_counter()
        self.steps = 0

    def charge(self) -> None:
        now = time.perf_counter()
        phase = self.stack[-1] if self.stack else "outside"
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now

    def timed(self, fn, phase: str):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            name = phase
            if phase == "eval":
                trainer = getattr(args[0], "trainer", None) if args else None
                testing = getattr(trainer, "testing", False) or "loop" not in self.stack
                name = "test" if testing else "val"
            if any(p in EVAL for p in self.stack) or "loop" not in self.stack and name != "loop":
                return fn(*args, **kwargs)      # inside an evaluation, or outside training: not split
            if name == "backward":
                self.steps += 1
            self.charge()
            self.stack.append(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.charge()
                self.stack.pop()
        return wrapper


def install(side: str, clock: Clock) -> None:
    """Wrap every hook point of `side` (bench_train's lookup and replacement: a vanished hook point
    exits, named)."""
    bench = _bench_train()
    for where, phase in HOOKS[side]:
        owner, name, original = bench._lookup(where)
        bench.replace(owner, name, original, clock.timed(original, phase))


def _bench_train():
    """scripts/bench_train.py as a module (its hook lookup, machine facts)."""
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "scripts" / "bench_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(side: str, out: Path, argv: list[str]) -> int:
    """One side's run in this process, its phases timed; writes {seconds, steps} to `out`."""
    clock = Clock()
    sys.path.insert(0, str(ROOT / "scripts"))
    script = ROOT / ("scripts/plain_loop.py" if side == "plain" else "train.py")
    if side == "project":
        importlib.import_module("hightpr.cli.train")      # what train.py imports, before wrapping
    install(side, clock)
    sys.argv = [str(script), *argv]
    code = 0
    try:
        if side == "plain":
            code = importlib.import_module("plain_loop").main(argv)
        else:
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    clock.charge()
    out.write_text(json.dumps({"seconds": clock.seconds, "steps": clock.steps}))
    return code


def run_side(side: str, args, work: Path) -> dict:
    """One profiled process of `side`; its phases in ms per training step."""
    data = str(Path(args.data_dir).resolve())
    if side == "plain":
        argv = ["--data-dir", data, "--out", str(work / "plain"), "--width", str(args.width),
                "--epochs", str(args.epochs), "--seed", "1", "--device", args.device]
    else:
        argv = [f"model.width={args.width}", f"trainer.max_epochs={args.epochs}", "trainer.patience=99",
                "seed=1", f"paths.data_dir={data}", f"paths.output_root={work / 'outputs'}",
                f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
                "trainer.enable_progress_bar=false"]
    out = work / f"{side}.json"
    log = work / f"{side}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, str(out), "--", *argv]
    with open(log, "w") as handle:
        code = subprocess.run(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"error: the profiled {side} run exited with {code}; its last lines:\n{tail}")
    got = json.loads(out.read_text())
    if not got["steps"]:
        raise SystemExit(f"error: the profiled {side} run made no training step through the hooks: "
                         "update HOOKS in scripts/profile_step.py")
    return {p: 1000 * s / got["steps"] for p, s in got["seconds"].items()} | {"steps": got["steps"]}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], Path(argv[2]), argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="processes per side, alternating (medians)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data-dir", default=os.environ.get("HIGHTPR_DATA_DIR", "data"))
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {"plain": [], "project": []}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="profile_step_") as tmp:
        for i in range(args.repeats):
            for side in ("plain", "project") if i % 2 == 0 else ("project", "plain"):
                work = Path(tmp) / f"{side}{i}"
                work.mkdir()
                runs[side].append(run_side(side, args, work))
                print(f"{side} {i + 1}/{args.repeats}: {runs[side][-1]['steps']} steps", file=sys.stderr,
                      flush=True)
    med = {side: {p: statistics.median(r.get(p, 0.0) for r in rs) for p in PHASES}
           for side, rs in runs.items()}
    bench = _bench_train()
    machine = {"cpu_model": bench.cpu_model(), **bench.machine(args.device)}
    print(f"\nms per training step, ResNet-10 (width {args.width}), binary CIFAR-10 1:100, seed 1, "
          f"{args.epochs} epochs ({runs['plain'][0]['steps']} steps), median of {args.repeats} process(es) "
          f"a side; {machine['cpu_model'] or args.device} ({machine['cpu_count']} CPUs, "
          f"{machine['threads']} threads), load {load_before:.2f}")
    print(f"{'phase':<46}{'plain':>9}{'project':>9}{'extra':>9}")
    for phase, label in PHASES.items():
        a, b = med["plain"][phase], med["project"][phase]
        print(f"{label:<46}{a:>9.2f}{b:>9.2f}{b - a:>+9.2f}")
    total = {side: sum(med[side].values()) for side in med}
    print(f"{'step, all of the above':<46}{total['plain']:>9.2f}{total['project']:>9.2f}"
          f"{total['project'] - total['plain']:>+9.2f}")
    print(json.dumps({"ms_per_step": {s: {p: round(v, 3) for p, v in m.items()} for s, m in med.items()},
                      "step_ms": {s: round(v, 3) for s, v in total.items()}, "epochs": args.epochs,
                      "width": args.width, "repeats": args.repeats, "load_before": round(load_before, 2),
                      **machine}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
