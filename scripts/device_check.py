"""The device check: speed, memory and correctness of training on one accelerator, as one JSON line.

Runs in at most `--budget-s` seconds (default 480) and always ends by printing one JSON object as
the last line of stdout and writing it to `--out`. Each part runs in its own process with its own
time box (a part that overruns is stopped and recorded as `timeout`, with what it had measured so
far; a part that fails is recorded as `error` with the error line); the others go on:

    versions     device and versions: torch, CUDA, cuDNN, GPU, Lightning, Python
    prepare      CIFAR-10 under --data-dir, prepared from --source-archive when missing
    protocol     a 10-member ResNet-10 (width 64) ensemble on binary CIFAR-10 1:100, stacked forward
                 (bf16 on CUDA): images/s and the 100-epoch wall time extrapolated from a few epochs,
                 batched and member by member; peak GPU memory
    correctness  2 members x 2 epochs batched vs one by one: largest differences of test scores and AUCs
    bench        scripts/bench_train.py on the device, 1 epoch: project_vs_plain, batched_vs_sequential
    table        if time remains: the BCE row of RankReg Table 1 at SCALE=paper with an epoch limit
                 chosen from the protocol's measured epoch time, rendered; its numbers

    PYTHONPATH=src python3 scripts/device_check.py --device cuda --source-archive cifar10-jpg.tar.gz
    make device-check DEVICE=cpu QUICK=1      # the wiring on a CPU: every part shrunk, a few minutes

docs/speed.md says what every key means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("versions", "prepare", "protocol", "correctness", "bench", "table")  # the most wanted first
# each part's time box in seconds (full, --quick); a box never reaches past the overall budget
# (a part is stopped at its box; what it measured until then, written at every epoch, is kept)
BOXES = {"versions": (60, 60), "prepare": (120, 120), "protocol": (150, 300), "correctness": (70, 200),
         "bench": (110, 240), "table": (None, None)}
RESERVE_S = 15  # kept for writing the result
MIN_PART_S = 20  # a part with less time left than this is skipped
# the keys every part's result holds (None when not measured), so a reader finds them all
KEYS = {
    "versions": ("python", "torch", "cuda", "cudnn", "gpu", "gpu_count", "gpu_memory_gb", "capability",
                 "bf16", "lightning", "lightning_fabric", "torchmetrics", "torchvision", "numpy",
                 "hydra", "omegaconf", "cpu_count", "torch_threads", "platform"),
    "prepare": ("data_dir", "prepared", "seconds", "summary"),
    "bench": ("project_vs_plain", "batched_vs_sequential", "images_per_s", "seconds", "notes", "setup"),
    "protocol": ("members", "width", "precision", "forward", "epochs_timed", "train_images_per_member",
                 "batched_epoch_s", "batched_images_per_s", "batched_wall_s", "batched_100_epochs_s",
                 "sequential_members_timed", "sequential_epoch_s", "sequential_images_per_s",
                 "sequential_wall_s", "sequential_100_epochs_s", "batched_vs_sequential",
                 "peak_memory_gb", "sequential_peak_memory_gb", "setup"),
    "correctness": ("members", "epochs", "precision", "max_abs_score_diff", "max_rel_score_diff",
                    "max_abs_auc_diff", "auc_batched", "auc_sequential", "setup"),
    "table": ("name", "scale", "rows", "epochs", "epoch_rule", "overrides", "seconds", "rendered",
              "markdown"),
}


# -- plumbing ----------------------------------------------------------------------------------
def _import_path() -> None:
    """hightpr from this checkout when it is not installed (run with or without PYTHONPATH=src)."""
    try:
        import hightpr  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "scripts"))


def _clean(value):
    """JSON-safe: non-finite floats become null, numpy scalars plain numbers, paths strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        with contextlib.suppress(Exception):
            value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path: Path, data: dict) -> None:
    """Atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data)) + "\n")
    os.replace(tmp, path)


def _error_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300] if str(err).strip() else ''}"


class Part:
    """What a part's process writes: its result so far, rewritten at every step (kept on a kill)."""

    def __init__(self, path: Path) -> None:
        self.path, self.result = path, {}

    def update(self, **values) -> None:
        self.result.update(values)
        _write_json(self.path, self.result)


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("hightpr").setLevel(logging.INFO)
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("PL_DISABLE_FORK", "1")


def _round(x, digits: int = 3):
    return None if x is None else round(float(x), digits)


# -- the scale of every part ---------------------------------------------------------------------
def _setup(args) -> dict:
    """Model, members, epochs and batches of the parts: the protocol's, or tiny ones with --quick."""
    if args.quick:
        return {"width": 8, "members": 2, "epochs": 2, "seq_members": 1, "limit": 3, "bench_members": 2,
                "bench_limit": 2, "check_members": 2, "check_epochs": 2, "check_width": 8}
    return {"width": 64, "members": 10, "epochs": 3, "seq_members": 2, "limit": None, "bench_members": 10,
            "bench_limit": None, "check_members": 2, "check_epochs": 2, "check_width": 64}


def _device_overrides(device: str) -> list[str]:
    """bf16 and the stacked forward on CUDA (trainer=gpu); the CPU in fp32."""
    return ["trainer=gpu"] if device == "cuda" else ["trainer.accelerator=cpu"]


def _common(args, out: Path, width: int, epochs: int, limit) -> list[str]:
    over = ["dataset=cifar10_binary", "dataset.ratio=100", f"paths.data_dir={args.data_dir}",
            f"paths.output_root={out}", f"model.width={width}",
            f"trainer.max_epochs={epochs}", f"trainer.patience={epochs + 1}",
            "trainer.enable_progress_bar=false", "logger=csv", *_device_overrides(args.device)]
    if limit:
        over.append(f"trainer.limit_train_batches={limit}")
    return over


def _drop_checkpoints(folder: Path) -> None:
    """The runs' metrics and logits stay; their checkpoints (tens of MB each) go."""
    for path in Path(folder).rglob("*.ckpt"):
        path.unlink(missing_ok=True)


def _peak_reset(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None


# -- a. versions ---------------------------------------------------------------------------------
def part_versions(args, part: Part) -> None:
    import importlib

    import torch

    def version(module: str) -> str | None:
        try:
            return getattr(importlib.import_module(module), "__version__", "?")
        except Exception as err:  # noqa: BLE001 - a missing package is a finding, not a failure here
            return f"missing ({_error_line(err)})"

    cuda = torch.cuda.is_available()
    props = torch.cuda.get_device_properties(0) if cuda else None
    part.update(
        python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if cuda else None,
        gpu=torch.cuda.get_device_name(0) if cuda else None, gpu_count=torch.cuda.device_count(),
        gpu_memory_gb=round(props.total_memory / 2**30, 1) if props else None,
        capability=".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        bf16=torch.cuda.is_bf16_supported() if cuda else None,
        lightning=version("pytorch_lightning"), lightning_fabric=version("lightning_fabric"),
        torchmetrics=version("torchmetrics"), torchvision=version("torchvision"), numpy=version("numpy"),
        hydra=version("hydra"), omegaconf=version("omegaconf"), cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(), platform=platform.platform())
    if args.device == "cuda" and not cuda:
        raise RuntimeError("--device cuda: torch sees no CUDA device")
    import hightpr  # noqa: F401 - the project imports here (hydra and omegaconf included)
    from hightpr.config import compose_config  # noqa: F401


# -- prepare -------------------------------------------------------------------------------------
def part_prepare(args, part: Part) -> None:
    from hightpr.data.prepare import prepare_cifar10

    data_dir = Path(args.data_dir)
    part.update(data_dir=str(data_dir))
    start = time.perf_counter()
    source = Path(args.source_archive) if args.source_archive else None
    if source is None and not (data_dir / "cifar-10-batches-py").is_dir():
        raise RuntimeError(f"no prepared CIFAR-10 under {data_dir} and no --source-archive")
    summary = prepare_cifar10(data_dir, source, download=False, force=False)
    part.update(prepared=not summary.startswith("already"), seconds=round(time.perf_counter() - start, 1),
                summary=summary)


# -- b. bench_train -----------------------------------------------------------------------------
def part_bench(args, part: Part) -> None:
    import bench_train

    s = _setup(args)
    bench = argparse.Namespace(device=args.device, epochs=1, reg="none", members=s["bench_members"],
                               width=s["width"], ratio=100, limit_batches=s["bench_limit"], threads=None,
                               forward="stacked" if args.device == "cuda" else None, compile=False,
                               data_dir=str(args.data_dir))
    part.update(setup={k: v for k, v in vars(bench).items() if k != "data_dir"})
    out = args.scratch / "bench"
    rates, seconds, notes = {}, {}, {}
    for case in "abdc":  # (d) before (c): the batched figure first, should time run out
        images, secs, note = bench_train.run_case(case, bench, args.device, out)
        rates[case], seconds[case], notes[case] = round(images / secs, 1), round(secs, 1), note
        ratio = {"project_vs_plain": ("b", "a"), "batched_vs_sequential": ("d", "c")}
        part.update(images_per_s=rates, seconds=seconds, notes=notes,
                    **{k: round(rates[x] / rates[y], 3) if x in rates and y in rates else None
                       for k, (x, y) in ratio.items()})
        _drop_checkpoints(out)


# -- c. the protocol: 10 members x 100 epochs, extrapolated -------------------------------------
class _EpochLog:
    """Times of the batched trainer's log lines (its start and each epoch's end), as they come."""

    def __init__(self, on_epoch) -> None:
        import logging

        self.times: list[float] = []
        self.on_epoch = on_epoch
        self.handler = logging.Handler()
        self.handler.emit = self._emit

    def _emit(self, record) -> None:
        message = record.getMessage()
        if message.startswith("training members") or (message.startswith("epoch ") and self.times):
            self.times.append(record.created)
            if len(self.times) > 1:
                self.on_epoch(self.durations())

    def durations(self) -> list[float]:
        return [round(b - a, 3) for a, b in zip(self.times, self.times[1:], strict=False)]

    def __enter__(self):
        import logging

        logging.getLogger("hightpr").addHandler(self.handler)
        return self

    def __exit__(self, *exc) -> None:
        import logging

        logging.getLogger("hightpr").removeHandler(self.handler)


@contextlib.contextmanager
def _lightning_epoch_clock(sink: list[float]):
    """Each Lightning epoch's wall time (training and its validation) appended to `sink`."""
    import pytorch_lightning as pl

    import hightpr.training as training

    class Clock(pl.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            sink.append(round(time.perf_counter() - self.start, 3))

    real = training.build_trainer

    def build_trainer(*a, **k):
        trainer = real(*a, **k)
        trainer.callbacks.append(Clock())
        return trainer

    training.build_trainer = build_trainer
    try:
        yield
    finally:
        training.build_trainer = real


def _steady(durations: list[float]) -> float | None:
    """An epoch's time once warm: the mean after the first epoch (cuDNN autotuning, allocations)."""
    later = durations[1:] or durations
    return sum(later) / len(later) if later else None


def part_protocol(args, part: Part) -> None:
    import bench_train
    import torch

    from hightpr.config import compose_config
    from hightpr.training import train

    s = _setup(args)
    members, epochs, out = s["members"], s["epochs"], args.scratch / "protocol"
    common = _common(args, out, s["width"], epochs, s["limit"])
    cfg = compose_config([*common, "seed=1"])
    per_member = bench_train.images_per_run(cfg) // epochs
    precision = str(cfg.trainer.precision)
    part.update(members=members, width=s["width"], precision=precision, forward="stacked",
                epochs_timed=epochs, train_images_per_member=per_member,
                setup={"dataset": "cifar10_binary", "ratio": 100, "limit_train_batches": s["limit"],
                       "extrapolation": "wall + (100 - epochs) x mean epoch after the first"})

    def batched_progress(durations: list[float]) -> None:
        steady = _steady(durations)
        part.update(batched_epoch_s=durations,
                    batched_images_per_s=_round(members * per_member / steady, 1) if steady else None)

    _peak_reset(args.device)
    start = time.perf_counter()
    with _EpochLog(batched_progress) as clock:
        train(compose_config([*common, "name=protocol_batched", f"ensemble.members={members}",
                              "ensemble.forward=stacked"]))
    wall = time.perf_counter() - start
    steady = _steady(clock.durations())
    batched_100 = wall + (100 - epochs) * steady if steady else None
    part.update(batched_wall_s=round(wall, 1), batched_100_epochs_s=_round(batched_100, 1),
                peak_memory_gb=_peak_gb(args.device))
    _drop_checkpoints(out)
    if args.device == "cuda":
        torch.cuda.empty_cache()

    seq, sink = s["seq_members"], []
    _peak_reset(args.device)
    start = time.perf_counter()
    with _lightning_epoch_clock(sink):
        train(compose_config([*common, "name=protocol_sequential", f"ensemble.members={seq}",
                              "ensemble.batched=false"]))
    wall = time.perf_counter() - start
    steady_seq = _steady(sink)
    seq_100 = (wall + seq * (100 - epochs) * steady_seq) * members / seq if steady_seq else None
    part.update(sequential_members_timed=seq, sequential_epoch_s=sink, sequential_wall_s=round(wall, 1),
                sequential_images_per_s=_round(per_member / steady_seq, 1) if steady_seq else None,
                sequential_100_epochs_s=_round(seq_100, 1),
                batched_vs_sequential=_round(seq_100 / batched_100) if seq_100 and batched_100 else None,
                sequential_peak_memory_gb=_peak_gb(args.device))
    _drop_checkpoints(out)


# -- d. correctness: batched vs one by one ---------------------------------------------------------
def part_correctness(args, part: Part) -> None:
    import numpy as np

    from hightpr.config import compose_config
    from hightpr.runs import load_logits
    from hightpr.training import train

    s = _setup(args)
    n, epochs, out = s["check_members"], s["check_epochs"], args.scratch / "correctness"
    common = _common(args, out, s["check_width"], epochs, s["limit"])
    cfg = compose_config(common)
    part.update(members=n, epochs=epochs, precision=str(cfg.trainer.precision),
                setup={"width": s["check_width"], "limit_train_batches": s["limit"], "forward": "stacked"})
    runs = {}
    for kind, extra in (("batched", ["ensemble.batched=true", "ensemble.forward=stacked"]),
                        ("sequential", ["ensemble.batched=false"])):
        train(compose_config([*common, f"name=correctness_{kind}", f"ensemble.members={n}", *extra]))
        runs[kind] = sorted((out / f"correctness_{kind}" / "ensembles").glob("*/member_*"))
        _drop_checkpoints(out)
    score_diff, rel_diff, auc = [], [], {"batched": [], "sequential": []}
    for b_dir, s_dir in zip(runs["batched"], runs["sequential"], strict=True):
        b, q = (load_logits(d / "logits_test.npz") for d in (b_dir, s_dir))
        if not np.array_equal(b["ids"], q["ids"]):
            raise RuntimeError(f"{b_dir.name}: batched and sequential test ids differ")
        diff = float(np.abs(b["scores"] - q["scores"]).max())
        score_diff.append(diff)
        rel_diff.append(diff / max(float(np.abs(q["scores"]).max()), 1e-12))
        for kind, d in (("batched", b_dir), ("sequential", s_dir)):
            auc[kind].append(round(json.loads((d / "metrics.json").read_text())["test"]["auc"], 5))
    part.update(max_abs_score_diff=_round(max(score_diff), 6), max_rel_score_diff=_round(max(rel_diff), 6),
                max_abs_auc_diff=_round(max(abs(a - b) for a, b in zip(auc["batched"], auc["sequential"],
                                                                        strict=True)), 6),
                auc_batched=auc["batched"], auc_sequential=auc["sequential"])


# -- e. a paper table block with an epoch limit ------------------------------------------------------
def part_table(args, part: Part) -> None:
    import csv

    from hightpr.cli.tables import main as tables_main

    results = args.scratch / "tables"
    overrides = [f"trainer.max_epochs={args.table_epochs}"]
    if args.quick:
        overrides += ["model.width=8", "trainer.limit_train_batches=2"]
    part.update(name="rankreg-t1", scale="paper", rows=args.table_rows, epochs=args.table_epochs,
                epoch_rule=args.table_rule, overrides=overrides)
    argv = ["run", "rankreg-t1", "--scale", "paper", "--rows", args.table_rows, "--results", str(results),
            "--paper", str(ROOT / "results" / "paper"), "--data-dir", str(args.data_dir), "--no-progress"]
    for o in overrides:
        argv += ["--override", o]
    start = time.perf_counter()
    code = tables_main(argv)
    part.update(seconds=round(time.perf_counter() - start, 1))
    _drop_checkpoints(results)
    if code:
        raise RuntimeError(f"the table run ended with exit code {code}")
    table = results / "tables" / "paper" / "rankreg-t1"
    with open(table.with_suffix(".csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("ours")]
    rendered: dict[str, dict] = {}
    for r in rows:  # {row: {metric: ours, ..., "paper": {metric: paper}, "members": n}}
        row = "+".join(x for x in (r["base_loss"], r["reg"]) if x and x != "none") + \
            (f":{r['variant']}" if r.get("variant") else "")
        cell = rendered.setdefault(row, {"members": r.get("members"), "paper": {}})
        cell[r["metric"]] = float(r["ours"])
        if r.get("paper"):
            cell["paper"][r["metric"]] = float(r["paper"])
    part.update(rendered=rendered, markdown=str(table.with_suffix(".md")))


RUNNERS = {"versions": part_versions, "prepare": part_prepare, "bench": part_bench, "protocol": part_protocol,
           "correctness": part_correctness, "table": part_table}


def run_part(args) -> int:
    """The child process of one part: its result written to --part-out as it goes."""
    part = Part(Path(args.part_out))
    try:
        _import_path()
        _quiet()
        import torch

        if args.device == "cuda":
            torch.set_num_threads(os.cpu_count() or 1)  # data preparation and host work: every core
        RUNNERS[args.part](args, part)
    except BaseException as err:  # noqa: BLE001 - recorded, the parent goes on with the next part
        traceback.print_exc()
        part.update(error=_error_line(err))
        return 1
    return 0


# -- the parent: every part in its own process, in its own time box ----------------------------------
def _table_epochs(args, protocol: dict, left: float) -> tuple[int, str]:
    """Epochs for the table within the time left: from the protocol's measured batched epoch (x2: the
    paper scale trains in fp32), else --table-epochs."""
    if args.table_epochs:
        return args.table_epochs, "--table-epochs"
    if args.quick:
        return 1, "quick: 1 epoch"
    epoch = _steady(protocol.get("batched_epoch_s") or [])
    if not epoch:
        return 5, "no measured epoch time: 5"
    usable = left - 60  # building 10 members, the test pass, rendering
    epochs = int(max(1, min(30, usable / (2 * epoch))))
    return epochs, f"(time left {left:.0f} s - 60 s) / (2 x measured batched epoch {epoch:.1f} s), 1..30"


def _run_child(args, name: str, box: float, out: Path, log: Path, extra: list[str]) -> tuple[str, str | None]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-out", str(out),
           "--device", args.device, "--results", str(args.results), "--data-dir", str(args.data_dir),
           "--scratch", str(args.scratch), "--table-rows", args.table_rows, *extra]
    if args.quick:
        cmd.append("--quick")
    if args.source_archive:
        cmd += ["--source-archive", str(args.source_archive)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if not (ROOT / "src" / "hightpr").is_dir():
        raise RuntimeError("run from a checkout of the project")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=box)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return "timeout", f"stopped after its time box of {box:.0f} s"
    if code == 0:
        return "ok", None
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [f"exit code {code}"]
    return "error", tail[0][:300]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="every part shrunk (the wiring, on a CPU)")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="the runs go under <results>/device_check/<device>[-quick]/ (default ./results)")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON file (default $DEVICE_CHECK_OUT, else <--out-dir>/device_check.json)")
    p.add_argument("--out-dir", type=Path, default=None, help="folder of device_check.json (default: .)")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("HIGHTPR_DATA_DIR", "data")))
    p.add_argument("--source-archive", type=Path, default=None,
                   help="the CIFAR-10 JPEG archive, prepared under --data-dir when no data is there")
    p.add_argument("--budget-s", type=float, default=None,
                   help="the whole check's wall-clock budget (default 480 s; --quick 900 s)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--table-rows", default="bce", help="rows of RankReg Table 1 (default the BCE row)")
    p.add_argument("--table-epochs", type=int, default=None,
                   help="the table's epoch limit (default: what the time left allows)")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--part-out", help=argparse.SUPPRESS)
    p.add_argument("--scratch", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--table-rule", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.data_dir = args.data_dir.resolve()
    args.scratch = (args.scratch or args.results / "device_check" /
                    f"{args.device}{'-quick' if args.quick else ''}").resolve()
    if args.part:
        return run_part(args)

    clock = time.perf_counter()
    args.budget_s = args.budget_s or (900.0 if args.quick else 480.0)
    deadline = clock + args.budget_s
    out = args.out or (Path(os.environ["DEVICE_CHECK_OUT"]) if os.environ.get("DEVICE_CHECK_OUT") else None) \
        or (args.out_dir or Path(".")) / "device_check.json"
    args.scratch.mkdir(parents=True, exist_ok=True)
    wanted = [x.strip() for x in args.parts.split(",") if x.strip()]
    report: dict = {"check": "hightpr device check", "device": args.device, "quick": args.quick,
                    "budget_s": args.budget_s, "scratch": str(args.scratch), "parts": {},
                    **{name: dict.fromkeys(KEYS[name]) for name in PARTS}}
    for name in PARTS:
        left = deadline - time.perf_counter() - RESERVE_S
        box = BOXES[name][args.quick]
        box = left if box is None else min(box, left)
        status, error, extra = "skipped", None, []
        if name not in wanted:
            error = "not in --parts"
        elif box < MIN_PART_S:
            error = f"{left:.0f} s left of the budget"
        else:
            if name == "table":
                epochs, rule = _table_epochs(args, report["protocol"], box)
                extra = ["--table-epochs", str(epochs), "--table-rule", rule]
            part_out = args.scratch / f"part-{name}.json"
            part_out.unlink(missing_ok=True)
            start = time.perf_counter()
            print(f"device check: {name} (time box {box:.0f} s) ...", file=sys.stderr, flush=True)
            try:
                log = args.scratch / f"part-{name}.log"
                status, error = _run_child(args, name, box, part_out, log, extra)
            except Exception as err:  # noqa: BLE001 - the check always ends with its JSON
                status, error = "error", _error_line(err)
            with contextlib.suppress(Exception):
                got = json.loads(part_out.read_text())
                child_error = got.pop("error", None)  # on a timeout: the stop's own message
                error = error if status == "timeout" else child_error or error
                report[name].update(got)
            report["parts"][name] = {"status": status, "seconds": round(time.perf_counter() - start, 1),
                                     "budget_s": round(box)}
            print(f"device check: {name} {status} in {report['parts'][name]['seconds']} s"
                  f"{f': {error}' if error else ''}", file=sys.stderr, flush=True)
        report["parts"].setdefault(name, {"status": status, "seconds": 0.0, "budget_s": round(max(box, 0))})
        report["parts"][name]["error"] = error
        report["wall_s"] = round(time.perf_counter() - clock, 1)
        _write_json(out, report)  # after every part: a kill of this process keeps what was measured
    report["ok"] = all(report["parts"][k]["status"] == "ok" for k in wanted)
    report["wall_s"] = round(time.perf_counter() - clock, 1)
    _write_json(out, report)
    _write_json(args.scratch / "device_check.json", report)
    print(json.dumps(_clean(report)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
