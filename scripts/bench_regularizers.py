"""Time one training step with the base loss alone vs base loss + a regulariser.

A step is what `HighTPRModule.training_step` does, minus logging: extend the batch, forward the
model (ResNet-10 on 32x32 inputs), base loss (BCE) + regulariser term, backward, `after_step`.
For each batch size and fraction of positives it prints the fastest step time of every case (the
minimum over repeats: the least disturbed by other load on the machine) and its ratio to the base
loss alone, plus the cost of the regulariser alone (its term, backward and
update on a detached score vector), which shows the overhead without the model's timing noise.

A regulariser that appends samples to the batch (RankReg's buffer of 32 positives) makes the model
forward more samples: its step is also compared with the base loss on a batch of that extended
size (`/fwd`: the overhead excluding the buffer's own forward pass), and the buffer's forward
cost is printed separately (base at batch + buffer / base at batch). RankReg's paper setting is
`--batches 32` (batch 32 + buffer 32).

Add a regulariser by adding an entry to `CASES`: a name -> factory(num_sample_ids) -> Regularizer.

    python scripts/bench_regularizers.py --quick           # batch 64 only, a few repeats
    python scripts/bench_regularizers.py                   # batch 32 / 64 / 256 / 1024
    python scripts/bench_regularizers.py --device cuda --reps 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from hightpr.losses import BCE
from hightpr.models import binary_score
from hightpr.models.resnet import resnet10
from hightpr.regularizers import ALMRegularizer, NoRegularizer, RankReg, Regularizer

NUM_SAMPLE_IDS = 60_000  # CIFAR-10 train + test ids, as the binary DataModule numbers them



def rankreg_full_buffer(num_sample_ids: int, size: int = 32) -> RankReg:
    """RankReg as trained (squared ranks, dequeue_max buffer of 32 in the base loss), buffer full.

    The buffered positives get ids past the dataset's so that no batch sample collides with them.
    """
    reg = RankReg(num_sample_ids, buffer={"strategy": "dequeue_max", "size": size, "in_base_loss": True})
    gen = torch.Generator().manual_seed(size)
    reg.buffer.push(torch.randn(size, 3, 32, 32, generator=gen), torch.ones(size),
                    torch.arange(num_sample_ids, num_sample_ids + size), torch.randn(size, generator=gen),
                    torch.ones(size, dtype=torch.bool))
    return reg


CASES: dict[str, Callable[[int], Regularizer]] = {
    "base": lambda n: NoRegularizer(n),
    "alm": lambda n: ALMRegularizer(n, mu0=1e-3, rho=2.0, delta=0.25),
    "rankreg": rankreg_full_buffer,
}


def make_batch(batch: int, pos_frac: float, device: torch.device, gen: torch.Generator) -> dict:
    """Random 32x32 images; max(1, round(frac * batch)) positives; distinct sample ids."""
    n_pos = max(1, round(pos_frac * batch))
    y = torch.zeros(batch)
    y[torch.randperm(batch, generator=gen)[:n_pos]] = 1.0
    x = torch.randn(batch, 3, 32, 32, generator=gen)
    ids = torch.randperm(NUM_SAMPLE_IDS, generator=gen)[:batch]
    return {"x": x.to(device), "y": y.to(device), "id": ids.to(device)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, loss_fn, reg: Regularizer, batch: dict) -> None:
    """One step as the LightningModule runs it (no optimizer update: it is the same for all cases)."""
    batch, n_base = reg.extend_batch(batch)
    logits = model(batch["x"])
    scores = binary_score(logits)
    loss = loss_fn(logits[:n_base], batch["y"][:n_base]) + reg(logits, scores, batch["y"], batch["id"])
    model.zero_grad(set_to_none=True)
    loss.backward()
    reg.after_step(batch, logits.detach(), scores.detach())


def term_only(reg: Regularizer, batch: dict, scores: torch.Tensor) -> None:
    """The regulariser's own cost: extend the batch, its term on a score vector, backward, update."""
    batch, _ = reg.extend_batch(batch)
    s = scores[: len(batch["y"])].detach().requires_grad_(True)
    term = reg(s[:, None], s, batch["y"], batch["id"])
    term.backward()
    reg.after_step(batch, s.detach()[:, None], s.detach())


def timed(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def bench(batch: int, pos_frac: float, args, device: torch.device) -> dict[str, tuple[float, float, int]]:
    """Fastest (step s, regulariser-only s, samples forwarded) per case, interleaved round by round.

    For every extended size (batch + buffer) a case forwards, `base@<size>` times the base loss
    alone on a batch of that size.
    """
    gen = torch.Generator().manual_seed(batch)
    model = resnet10(width=args.width, num_logits=1).to(device).train()
    loss_fn = BCE().to(device)
    regs = {name: make(NUM_SAMPLE_IDS).to(device) for name, make in CASES.items()}
    data = {name: make_batch(batch, pos_frac, device, gen) for name in regs}
    forwarded = {name: len(reg.extend_batch(data[name])[0]["y"]) for name, reg in regs.items()}
    for size in sorted(set(forwarded.values()) - {batch}):
        regs[f"base@{size}"] = NoRegularizer(NUM_SAMPLE_IDS).to(device)
        data[f"base@{size}"] = make_batch(size, pos_frac, device, gen)
        forwarded[f"base@{size}"] = size
    scores = torch.randn(max(forwarded.values()), generator=gen).to(device)
    steps: dict[str, list[float]] = {name: [] for name in regs}
    terms: dict[str, list[float]] = {name: [] for name in regs}
    for rep in range(args.warmup + args.reps):
        for name, reg in regs.items():
            step_s = timed(lambda reg=reg, name=name: train_step(model, loss_fn, reg, data[name]), device)
            term_s = min(timed(lambda reg=reg, name=name: term_only(reg, data[name], scores), device)
                         for _ in range(5))
            if rep >= args.warmup:
                steps[name].append(step_s)
                terms[name].append(term_s)
    return {name: (min(steps[name]), statistics.median(terms[name]), forwarded[name]) for name in regs}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64, 256, 1024])
    parser.add_argument("--pos-fracs", type=float, nargs="+", default=[0.01, 0.1, 0.5])
    parser.add_argument("--width", type=int, default=64, help="ResNet-10 width (64: the papers')")
    parser.add_argument("--reps", type=int, default=2, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per case")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="batch 64, 1%% and 50%% positives, 3 reps")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.pos_fracs, args.reps = [64], [0.01, 0.5], 3
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    others = [name for name in CASES if name != "base"]
    print(f"device={device} threads={torch.get_num_threads()} resnet10 width={args.width} "
          f"reps={args.reps} (fastest step: forward + base loss + term + backward + after_step)")
    print("  <reg>/base: step vs the base loss on the same batch; <reg>/fwd: vs the base loss on as many\n"
          "  forwarded samples (excludes a buffer's forward pass); only/base: the regulariser alone;\n"
          "  buffer fwd: the base loss on batch + buffer vs on the batch (a buffer's own forward cost)")
    header = f"{'batch':>6} {'pos%':>5} {'base ms':>9}"
    for name in others:
        header += (f" {name + ' ms':>11} {name + '/base':>12} {name + '/fwd':>11}"
                   f" {name + ' only ms':>15} {'only/base':>9}")
    header += f" {'buffer fwd':>10}"
    print(header)
    for batch in args.batches:
        for frac in args.pos_fracs:
            res = bench(batch, frac, args, device)
            base = res["base"][0]
            line = f"{batch:>6} {100 * frac:>5.0f} {1e3 * base:>9.2f}"
            extra = []
            for name in others:
                step_s, term_s, n_fwd = res[name]
                same_fwd = res[f"base@{n_fwd}"][0] if n_fwd != batch else base
                line += f" {1e3 * step_s:>11.2f} {step_s / base:>12.3f} {step_s / same_fwd:>11.3f}"
                line += f" {1e3 * term_s:>15.3f} {term_s / base:>9.4f}"
                if n_fwd != batch:
                    extra.append(f"{batch}+{n_fwd - batch}: {same_fwd / base:.3f}")
            print(line + f" {', '.join(extra) or '-':>10}", flush=True)


if __name__ == "__main__":
    main()
