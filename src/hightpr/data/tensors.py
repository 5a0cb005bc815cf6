"""In-memory tensor datasets whose batches are one index operation, not per-sample Python."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


class IndexedTensors(Dataset):
    """Images (uint8), labels and stable sample ids held in memory; batches gathered at once."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> None:
        if not (len(x) == len(y) == len(ids)):
            raise ValueError("x, y and ids must have the same length")
        self.x, self.y, self.ids = x, y, ids

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "id": self.ids[i]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"x": self.x[idx], "y": self.y[idx], "id": self.ids[idx]}


def _identity(batch):
    return batch


def batch_loader(ds: IndexedTensors, batch_size: int, shuffle: bool, drop_last: bool = False):
    """A DataLoader that hands whole gathered batches through (no per-sample collate)."""
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      collate_fn=_identity, num_workers=0)
