"""The members' data on the training device: uint8 splits, per-member batch order and augmentation.

Training splits are stacked [N, n, ...] on the device; a step is one index gather for all
members. Each member's batch order comes from its own sampler and its augmentation from its own
streams (`MemberStreams`), exactly as in its sequential run; the crop-and-flip of the CIFAR
protocols is then applied to all members' images at once. Evaluation splits shared by all
members (the CIFAR validation and test sets) are held once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hightpr.data.augment import apply_crop_flip, crop_flip_draws
from hightpr.data.cifar import CIFARDataModule
from hightpr.stacked.layers import NotStackable
from hightpr.stacked.streams import MemberStreams, dataloader_iter_draw

CROP_PADDING = 4  # CIFARDataModule.augment_batch = random_crop_flip(x): padding 4, flip
MAX_BYTES = 4 * 2**30  # every member's splits stacked on the device (CIFAR: 10 members, ~0.2 GiB)


def _limit(limit, n_batches: int) -> int:
    """Lightning's `limit_train_batches`: None/1.0 all, an int that many, a fraction of them."""
    if limit is None:
        return n_batches
    if isinstance(limit, float):
        return n_batches if limit == 1.0 else int(n_batches * limit)
    return min(int(limit), n_batches)


class MemberData:
    """Training and evaluation data of N members (the same protocol, each its own draw)."""

    def __init__(self, datamodules: Sequence, streams: MemberStreams, device: torch.device,
                 limit_train_batches=None) -> None:
        self.dms, self.streams, self.device = list(datamodules), streams, device
        self.limit = limit_train_batches
        train = [dm.splits["train"] for dm in self.dms]
        sizes = {len(t) for t in train}
        if len(sizes) > 1:
            raise NotStackable(f"the members' training sets differ in size ({sorted(sizes)})")
        total = sum(len(s) * s[0]["x"].nbytes for dm in self.dms for s in dm.splits.values() if len(s))
        if total > MAX_BYTES:
            raise NotStackable(f"the members' data ({total / 2**30:.1f} GiB) is too large to hold at once")
        self.x = torch.stack([t.x for t in train]).to(device)
        self.y = torch.stack([t.y for t in train]).to(device)
        self.ids = torch.stack([t.ids for t in train]).to(device)
        self.samplers = [dm.batch_sampler(dm.positive_mask("train"), dm.batch_size) for dm in self.dms]
        if len({len(s) for s in self.samplers}) > 1:
            raise NotStackable("the members' epochs differ in number of batches")
        self.eval_splits = {stage: self._eval_split(stage) for stage in ("val", "test")}
        self.split_augment = type(self.dms[0]).augment_batch is CIFARDataModule.augment_batch

    def _eval_split(self, stage: str) -> dict[str, torch.Tensor]:
        """x [S, ...] when every member has the same split, else [N, S, ...]; y and ids [N, S]."""
        splits = [dm.splits[stage] for dm in self.dms]
        if len({len(s) for s in splits}) > 1:
            raise NotStackable(f"the members' {stage} sets differ in size")
        first = splits[0]
        shared = all(torch.equal(s.ids, first.ids) and torch.equal(s.x, first.x) for s in splits[1:])
        x = first.x if shared else torch.stack([s.x for s in splits])
        return {"x": x.to(self.device), "shared": shared,
                "y": torch.stack([s.y for s in splits]).to(self.device),
                "ids": torch.stack([s.ids for s in splits]).to(self.device)}

    # -- training -------------------------------------------------------------------------
    def epoch_batches(self, epoch: int, members: Sequence[int]) -> list[torch.Tensor]:
        """This epoch's batches of the members, each [len(members), b] indices into their training sets.

        Each member draws as its sequential run does at an epoch start: the DataLoader's base seed,
        then its sampler's order.
        """
        orders = []
        for m in members:
            sampler = self.samplers[m]
            target = getattr(sampler, "sampler", sampler)
            if hasattr(target, "set_epoch"):
                target.set_epoch(epoch)
            with self.streams.of(m):
                dataloader_iter_draw()
                orders.append([list(b) for b in sampler])
        lengths = {tuple(len(b) for b in order) for order in orders}
        if len(lengths) > 1:
            raise RuntimeError("the members' batches differ in number or size (equal training sets expected)")
        sizes = list(next(iter(lengths)))[:_limit(self.limit, len(orders[0]))]
        flat = torch.tensor([[i for b in order[:len(sizes)] for i in b] for order in orders],
                            dtype=torch.long)
        flat = flat.to(self.device, non_blocking=True)
        return list(torch.split(flat, sizes, dim=1))

    def batch(self, members: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One gather: x [n, b, ...] (stored dtype), y and ids [n, b], for members (a device index)."""
        rows = members[:, None]
        return self.x[rows, index], self.y[rows, index], self.ids[rows, index]

    def augment(self, x: torch.Tensor, members: Sequence[int]) -> torch.Tensor:
        """Each member's training augmentation of its own batch, from its own streams; x [n, b, ...]."""
        if not self.dms[0].augment:
            return x
        n, b = x.shape[:2]
        if self.split_augment:
            draws = []
            for m in members:
                with self.streams.of(m):
                    draws.append(crop_flip_draws(b, CROP_PADDING, True, x.device))
            merged = {k: torch.cat([d[k] for d in draws]) for k in draws[0]}
            return apply_crop_flip(x.flatten(0, 1), merged, CROP_PADDING).unflatten(0, (n, b))
        out = []
        for i, m in enumerate(members):
            with self.streams.of(m):
                out.append(self.dms[m].augment_batch(x[i]))
        return torch.stack(out)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Stored dtype -> the model's float input, for [n, b, ...] or [b, ...]."""
        lead = x.shape[:2] if x.ndim == self.x.ndim else x.shape[:1]
        return self.dms[0].to_input(x.flatten(0, len(lead) - 1)).unflatten(0, lead)

    def val_iter_draw(self, members: Sequence[int]) -> None:
        """What starting a validation draws in each member's sequential run."""
        for m in members:
            with self.streams.of(m):
                dataloader_iter_draw()

    # -- evaluation -----------------------------------------------------------------------
    def eval_chunks(self, stage: str, members: Sequence[int], eval_batch_size: int):
        """Yield model inputs [n, c, ...] over the split, about `eval_batch_size` images per chunk."""
        split = self.eval_splits[stage]
        size = split["y"].shape[1]
        step = max(1, math.ceil(eval_batch_size / max(len(members), 1)))
        index = torch.as_tensor(list(members), device=self.device)
        for start in range(0, size, step):
            if split["shared"]:
                x = self.to_input(split["x"][start:start + step])
                yield x[None].expand(len(members), *x.shape)
            else:
                yield self.to_input(split["x"][index, start:start + step])

    def eval_targets(self, stage: str, members: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels and sample ids [n, S] of the members' split."""
        split = self.eval_splits[stage]
        index = torch.as_tensor(list(members), device=self.device)
        return split["y"][index], split["ids"][index]
