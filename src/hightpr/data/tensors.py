"""In-memory (or memory-mapped) tensor datasets whose batches are one index operation."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


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
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.y.device)
        return {"x": self.x[idx], "y": self.y[idx], "id": self.ids[idx]}

    def to(self, device: torch.device | str, moved: dict | None = None) -> IndexedTensors:
        """Hold the split on `device` (one copy; batches are then gathered there)."""
        self.x, self.y, self.ids = (t.to(device) for t in (self.x, self.y, self.ids))
        return self


class IndexedRows(Dataset):
    """A split as row indices into one shared tensor: no copy of the images per split.

    Melanoma keeps one memory-mapped cache of every image; each split only holds its rows.
    """

    def __init__(self, source: torch.Tensor, rows: torch.Tensor, y: torch.Tensor, ids: torch.Tensor) -> None:
        if not (len(rows) == len(y) == len(ids)):
            raise ValueError("rows, y and ids must have the same length")
        self.source, self.rows, self.y, self.ids = source, rows, y, ids

    @property
    def x(self) -> torch.Tensor:
        """The split's inputs, gathered (a copy: for inspection, not for training loops)."""
        return self.source[self.rows]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.source[self.rows[i]], "y": self.y[i], "id": self.ids[i]}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.rows.device)
        return {"x": self.source[self.rows[idx]], "y": self.y[idx], "id": self.ids[idx]}

    def to(self, device: torch.device | str, moved: dict | None = None) -> IndexedRows:
        """Hold the split's rows of the shared source on `device`; `moved` (id -> copy) lets the
        splits that share one source share its one copy there."""
        moved = {} if moved is None else moved
        if id(self.source) not in moved:
            moved[id(self.source)] = self.source.to(device)
        self.source = moved[id(self.source)]
        self.rows, self.y, self.ids = (t.to(device) for t in (self.rows, self.y, self.ids))
        return self
