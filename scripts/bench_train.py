"""Training throughput: a plain PyTorch loop, the project's run, and ensembles trained one by one vs batched.

On the same model (ResNet-10, `--width`) and the same data (binary CIFAR-10 1:100, `--ratio`),
each case trains from the prepared data to its test evaluation and is timed end to end:

    (a) a plain PyTorch loop written here: data on the device, augmentation on the device, the
        project's model, loss and regulariser objects, Adam; validation every epoch, test at the end
    (b) the project's training of one run (`hightpr.cli.train.run`: Lightning, checkpoints, outputs)
    (c) `--members` members one after another (`ensemble.batched=false`)
    (d) the same members batched (`ensemble.batched=true`, `hightpr.stacked`)

Throughput is training images per second (training-set samples drawn, epochs x batches x batch;
RankReg's re-scored buffer not counted). Every run trains exactly `--epochs` epochs (no early
stopping). The table is followed, as the last line, by one JSON object with
`project_vs_plain` = (b)/(a) and `batched_vs_sequential` = (d)/(c).

    python scripts/bench_train.py --device cpu --width 16 --limit-batches 20   # a few minutes, 2 cores
    python scripts/bench_train.py --device cuda --epochs 5                     # one GPU
    python scripts/bench_train.py --device cuda --epochs 100 --cases d         # the 10-member protocol
    python scripts/bench_train.py --device cuda --reg alm                      # none | alm | rankreg

Needs the prepared CIFAR-10 under --data-dir (default $HIGHTPR_DATA_DIR, else ./data; `make data`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from hightpr.build import build, build_datamodule, build_loss, build_model, build_regularizer, first_input
from hightpr.cli.train import compose_config, train
from hightpr.data.augment import random_crop_flip
from hightpr.metrics import roc_auc

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
    model.eval()
    with torch.inference_mode(), autocast():
        logits = torch.cat([model(to_input(x[i:i + chunk])) for i in range(0, len(x), chunk)]).float()
    model.train()
    scores = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
    return roc_auc(scores.cpu().numpy(), y.cpu().numpy())


def plain_loop(cfg, device: torch.device) -> float:
    """Train one model with a hand-written loop; returns its test AUC (a sanity check of the loop)."""
    pl.seed_everything(int(cfg.seed), verbose=False)
    dm, facts = build_datamodule(cfg)  # the same splits: decoded uint8 images and labels
    loss = build_loss(cfg, facts)
    model = build_model(cfg, facts, loss, first_input(dm)).to(device)
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
    from hightpr.stacked.forward import forward_mode

    return forward_mode(forward, torch.device(device))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--reg", choices=tuple(REGS), default="none")
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--width", type=int, default=64, help="ResNet-10 width (64: the papers')")
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
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
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
