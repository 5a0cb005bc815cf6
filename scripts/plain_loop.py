"""One run of the default task in plain PyTorch, timed by phase: the baseline of `bench_train.py --mode runs`.

The same task as `python train.py model.width=32 trainer.max_epochs=8 trainer.patience=99 seed=1`:
binary CIFAR-10 (class 0 negatives vs class 1 positives at 1:100, the project's split, re-implemented
here from `hightpr.data.splits.binary_split`), random crop (4 px zero padding) + horizontal flip,
batch 64, BCE on the one logit, Adam (lr 1e-3, no weight decay), the project's ResNet-10, validation
AUC every epoch, the best epoch kept (ties to the lower validation loss), its test AUC at the end.
The random streams are drawn in the project's order (seed, initialisation, a DataLoader's shuffle,
augmentation, one draw per evaluation loader) and the loss is rounded as the project's, so on the
CPU the run reproduces the project's bit for bit (the same validation loss every epoch).

No Lightning, Hydra or metrics library: from hightpr only the model class. The data are read from
the prepared CIFAR-10 pickles (`hightpr.data.prepare`, torchvision's layout) and decoded once.
Writes logits_{val,test}.npz, metrics.json and epochs.csv to --out, as a project run does; prints one
JSON line: test AUC, best epoch, seconds (from --launched-at, else from the script's first line) and
the wall seconds of each phase.

    python scripts/plain_loop.py --data-dir data --out /tmp/plain --width 32 --epochs 8 --seed 1
"""

from __future__ import annotations

import time

START = time.time()  # the imports below are a timed phase

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from hightpr.models.resnet import resnet10  # noqa: E402

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
NEGATIVE, POSITIVE = 0, 1        # dataset.negative_class / positive_class
VAL_PER_CLASS, NEG_FRACTION, SPLIT_SEED = 100, 0.9, 0   # dataset.val_per_class, negative_fraction, split_seed
BATCH, EVAL_BATCH, LR = 64, 1000, 1e-3   # trainer.batch_size, trainer.eval_batch_size, optimizer.lr
TEST_ID_OFFSET = 50_000          # test sample ids follow the 50,000 of the source train split


class Phases:
    """Wall seconds per phase (CUDA work finished before each reading)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {}

    def clock(self) -> float:
        """time.time(), after the device's queued work is done."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.time()

    def add(self, phase: str, since: float) -> float:
        """Add the time since `since` to `phase`; returns now."""
        now = self.clock()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - since
        return now


# -- data --------------------------------------------------------------------------------------
def read_cifar10(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train x, train y, test x, test y): uint8 [N,3,32,32] and int64 labels from the pickles."""
    folder = root / "cifar-10-batches-py"

    def read(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in names:
            with open(folder / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(entry["labels"])
        return torch.from_numpy(np.concatenate(xs)), torch.tensor(ys, dtype=torch.int64)

    return *read([f"data_batch_{i}" for i in range(1, 6)]), *read(["test_batch"])


def perm(n: int, seed: int) -> torch.Tensor:
    """A seeded permutation from its own generator (the split never touches the global stream)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def binary_split(y_train: torch.Tensor, y_test: torch.Tensor, ratio: float, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) indices of the binary 1:ratio protocol, as the project draws them."""
    val, pools = [], []
    for offset, cls in enumerate((NEGATIVE, POSITIVE)):
        idx = torch.nonzero(y_train == cls).flatten()
        idx = idx[perm(len(idx), SPLIT_SEED * 1000 + offset)]
        val.append(idx[:VAL_PER_CLASS])
        pools.append(idx[VAL_PER_CLASS:])
    draw = torch.Generator().manual_seed(seed)
    n_neg = round(NEG_FRACTION * len(pools[0]))
    n_pos = max(1, round(n_neg / ratio))
    train = [pools[0][torch.randperm(len(pools[0]), generator=draw)[:n_neg]],
             pools[1][torch.randperm(len(pools[1]), generator=draw)[:n_pos]]]
    test = torch.nonzero(torch.isin(y_test, torch.tensor([NEGATIVE, POSITIVE]))).flatten()
    return torch.cat(train).sort().values, torch.cat(val).sort().values, test


def load_splits(root: Path, ratio: float, seed: int, device: torch.device) -> dict[str, tuple]:
    """Split name -> (uint8 images, 0/1 float labels, sample ids), held on `device`."""
    x_tr, y_tr, x_te, y_te = read_cifar10(root)
    train, val, test = binary_split(y_tr, y_te, ratio, seed)
    out = {}
    for name, x, y, idx, offset in (("train", x_tr, y_tr, train, 0), ("val", x_tr, y_tr, val, 0),
                                    ("test", x_te, y_te, test, TEST_ID_OFFSET)):
        target = (y[idx] == POSITIVE).float()
        out[name] = tuple(t.to(device) for t in (x[idx].contiguous(), target, idx + offset))
    return out


def summary(splits: dict[str, tuple]) -> dict[str, int]:
    """Positives and negatives per split (the project's `data` entry)."""
    out = {}
    for name, (_, y, _) in splits.items():
        n_pos = int((y > 0.5).sum())
        out[f"{name}_pos"], out[f"{name}_neg"] = n_pos, len(y) - n_pos
    return out


# -- augmentation and input ----------------------------------------------------------------------
def crop_flip(x: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Per-sample random crop after zero padding, then a random horizontal flip, on [B,C,H,W]."""
    b, c, h, w = x.shape
    oy = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
    flip = torch.rand(b, device=x.device) < 0.5
    padded = F.pad(x, (padding,) * 4)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    x = padded[batch, chans, rows, cols]
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> normalised float32 (CIFAR-10 channel mean and std)."""
    m = torch.tensor(CIFAR_MEAN, device=x.device)[None, :, None, None]
    s = torch.tensor(CIFAR_STD, device=x.device)[None, :, None, None]
    return (x.float() / 255.0 - m) / s


# -- metrics -----------------------------------------------------------------------------------
def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic, ties counted 1/2."""
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy on the one logit (per-sample terms, then their mean: the project's
    rounding, which `reduction="mean"` does not reproduce bit for bit)."""
    return F.binary_cross_entropy_with_logits(logits[:, 0], y, reduction="none").mean()


# -- training ----------------------------------------------------------------------------------
def gather(split: tuple, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's images and labels, gathered on the data's device."""
    x, y, _ = split
    idx = idx.to(x.device)
    return x[idx], y[idx]


def train_epoch(model, optimizer, split: tuple, loader: DataLoader) -> None:
    """One pass over a fresh shuffle of the training set, augmented on the data's device."""
    model.train()
    for idx in loader:
        x, y = gather(split, idx)
        loss = bce(model(to_input(crop_flip(x))), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.inference_mode()
def evaluate(model, split: tuple) -> dict:
    """Logits of a whole split in eval mode; its AUC and mean BCE."""
    x, y, ids = split
    model.eval()
    loader = DataLoader(range(len(y)), batch_size=EVAL_BATCH)  # in order, as the project's
    logits = torch.cat([model(to_input(x[idx.to(x.device)])) for idx in loader]).float()
    loss = float(bce(logits, y))
    logits, labels = logits.cpu().numpy(), y.cpu().numpy()
    scores = logits[:, 0]
    return {"auc": roc_auc(scores, labels), "loss": loss, "scores": scores, "labels": labels,
            "ids": ids.cpu().numpy().astype(np.int64), "logits": logits}


def better(report: dict, best: dict | None) -> bool:
    """A higher validation AUC, or the same (as float32) with a lower validation loss."""
    if best is None:
        return True
    auc, best_auc = np.float32(report["auc"]), np.float32(best["auc"])
    return bool(auc > best_auc or (auc == best_auc and np.float32(report["loss"]) < np.float32(best["loss"])))


def keep_best(model) -> dict:
    """A copy of the weights of the best epoch so far (the plain loop's checkpoint)."""
    return copy.deepcopy(model.state_dict())


def fit(model, splits: dict, epochs: int, phases: Phases) -> tuple[dict, int, list[dict]]:
    """Train `epochs` epochs, keeping the best validation epoch's weights; (its validation report,
    its epoch, the per-epoch log)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=0.0)
    loader = DataLoader(range(len(splits["train"][1])), batch_size=BATCH, shuffle=True)
    best, best_epoch, best_state, history = None, -1, None, []
    for epoch in range(epochs):
        t = phases.clock()
        train_epoch(model, optimizer, splits["train"], loader)
        t = phases.add("train", t)
        report = evaluate(model, splits["val"])
        t = phases.add("val", t)
        history.append({"epoch": epoch, "val_auc": report["auc"], "val_loss": report["loss"]})
        if better(report, best):
            best, best_epoch, best_state = report, epoch, keep_best(model)
        phases.add("checkpoints", t)
    model.load_state_dict(best_state)
    return best, best_epoch, history


# -- outputs -----------------------------------------------------------------------------------
def write_outputs(out: Path, reports: dict, metrics: dict, history: list[dict]) -> None:
    """logits_{val,test}.npz, metrics.json and the per-epoch log, as a project run writes them."""
    out.mkdir(parents=True, exist_ok=True)
    for stage, report in reports.items():
        np.savez_compressed(out / f"logits_{stage}.npz",
                            **{k: report[k] for k in ("scores", "labels", "ids", "logits")})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    lines = ["epoch,val_auc,val_loss"] + [f"{h['epoch']},{h['val_auc']},{h['val_loss']}" for h in history]
    (out / "epochs.csv").write_text("\n".join(lines) + "\n")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The run's settings (the project's defaults)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("HIGHTPR_DATA_DIR", "data")))
    parser.add_argument("--out", type=Path, required=True, help="folder for logits, metrics and the log")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ratio", type=float, default=100)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--launched-at", type=float, default=None,
                        help="time.time() when the process was launched: imports are counted from it")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    imported = time.time()
    args = parse(argv)
    start = args.launched_at or START
    device = torch.device(args.device)
    phases = Phases(device)
    phases.seconds["imports"] = imported - start
    t = phases.add("config", imported)
    torch.manual_seed(args.seed)  # before the model: its initialisation is the project's
    splits = load_splits(args.data_dir, args.ratio, args.seed, device)
    t = phases.add("data", t)
    model = resnet10(width=args.width, num_logits=1).to(device)
    phases.add("model", t)
    val, best_epoch, history = fit(model, splits, args.epochs, phases)
    t = phases.clock()
    test = evaluate(model, splits["test"])
    t = phases.add("test", t)
    metrics = {"val": {"auc": val["auc"], "loss": val["loss"]},
               "test": {"auc": test["auc"], "loss": test["loss"]}, "best_epoch": best_epoch,
               "epochs_trained": args.epochs, "data": summary(splits)}
    write_outputs(args.out, {"val": val, "test": test}, metrics, history)
    end = phases.add("outputs", t)
    print(json.dumps({"test_auc": test["auc"], "val_auc": val["auc"], "best_epoch": best_epoch,
                      "seconds": end - start, "phases": phases.seconds, "data": metrics["data"],
                      "device": args.device, "threads": torch.get_num_threads()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
