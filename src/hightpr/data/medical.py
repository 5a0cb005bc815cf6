"""What the Melanoma, AdrenalMNIST3D and MRI-style volume DataModules share.

Same conventions as `BinaryCIFARDataModule`: in-memory (or memory-mapped) tensors whose batches
are one gather, batch dict {"x", "y" (float 0/1), "id" (int64 stable sample id)}, augmentation
and normalisation on the device in `on_after_batch_transfer`.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from hightpr.data.tensors import IndexedTensors, batch_loader


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
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"x": self.source[self.rows[idx]], "y": self.y[idx], "id": self.ids[idx]}


class BinarySplitsDataModule(pl.LightningDataModule):
    """Base: subclasses fill `self.splits` (train/val/test) and `self.num_sample_ids` in `build()`,
    and define `augment_batch` / `to_input` for their device-side transforms.
    """

    def __init__(self, batch_size: int = 64, eval_batch_size: int = 1000, augment: bool = True) -> None:
        super().__init__()
        self.batch_size, self.eval_batch_size, self.augment = batch_size, eval_batch_size, augment
        self.splits: dict[str, IndexedTensors | IndexedRows] = {}
        self.num_sample_ids = 0

    def build(self) -> None:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.build()

    @property
    def class_counts(self) -> list[int]:
        """Training samples per class [negatives, positives] (handed to imbalance-aware losses)."""
        self.setup()
        y = self.splits["train"].y
        n_pos = int(y.sum())
        return [len(y) - n_pos, n_pos]

    def summary(self) -> dict[str, int]:
        self.setup()
        out = {}
        for name, ds in self.splits.items():
            n_pos = int(ds.y.sum())
            out[f"{name}_pos"], out[f"{name}_neg"] = n_pos, len(ds) - n_pos
        return out

    def train_dataloader(self):
        return batch_loader(self.splits["train"], self.batch_size, shuffle=True)

    def val_dataloader(self):
        return batch_loader(self.splits["val"], self.eval_batch_size, shuffle=False)

    def test_dataloader(self):
        return batch_loader(self.splits["test"], self.eval_batch_size, shuffle=False)

    def predict_dataloader(self):
        return self.test_dataloader()

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time augmentation of the stored dtype (uint8 images, float16 volumes)."""
        return x

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Stored dtype -> the float32 input of the model."""
        return x.float()

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Augment (training only) and normalise on the device the batch now lives on."""
        x = batch["x"]
        if self.augment and self.trainer is not None and self.trainer.training:
            x = self.augment_batch(x)
        return {**batch, "x": self.to_input(x)}
