"""What every DataModule shares: splits held as tensors, whole-batch loaders, device-side transforms.

A protocol subclass fills `self.splits` (train/val/test datasets with `.y` and `.ids`) and
`self.num_sample_ids` in `build()`, and says how a stored batch is augmented and turned into
the model's input. Batches are dicts {"x", "y", "id"}; one batch is one gather.
"""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler

from hightpr.data.tensors import IndexedRows, IndexedTensors

BatchSamplerFactory = Callable[[torch.Tensor, int], Sampler[list[int]]]


def random_batches(positive: torch.Tensor, batch_size: int) -> Sampler[list[int]]:
    """The papers' protocol: a fresh shuffle of the training set every epoch (`sampler=random`)."""
    return BatchSampler(RandomSampler(range(len(positive))), batch_size, drop_last=False)


def _identity(batch):
    return batch


class TensorDataModule(pl.LightningDataModule):
    """Base DataModule. `batch_sampler` (set from the `sampler=` config) builds the training batches
    from the training split's positive mask and the batch size; evaluation batches are in order.
    """

    critical_classes: list[int] | None = None  # multi-class protocols name their rare classes

    def __init__(self, batch_size: int = 64, eval_batch_size: int = 1000, augment: bool = True) -> None:
        super().__init__()
        self.batch_size, self.eval_batch_size, self.augment = batch_size, eval_batch_size, augment
        self.splits: dict[str, IndexedTensors | IndexedRows] = {}
        self._host_labels: dict[str, torch.Tensor] = {}   # labels of splits moved to a device
        self.num_sample_ids = 0
        self.batch_sampler: BatchSamplerFactory = random_batches

    # -- protocol hooks --------------------------------------------------------------------
    def build(self) -> None:
        """Fill `self.splits` and `self.num_sample_ids`."""
        raise NotImplementedError

    def augment_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Training-time augmentation of the stored dtype (uint8 images, float16 volumes)."""
        return x

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Stored dtype -> the float32 input of the model."""
        return x.float()

    # -- data ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.build()
        device = self._accelerator()
        if device is not None:
            self.to_device(device)

    def _accelerator(self) -> torch.device | None:
        """The device of the Lightning trainer this module is attached to, unless it is the CPU."""
        trainer = self.trainer if self._trainer_attached() else None
        device = trainer.strategy.root_device if trainer is not None else None
        return device if device is not None and device.type != "cpu" else None

    def _trainer_attached(self) -> bool:
        try:
            return self.trainer is not None
        except RuntimeError:        # Lightning: "not attached to a Trainer"
            return False

    def to_device(self, device: torch.device | str) -> None:
        """Every split held on `device` (uint8 images and all): batches are gathered there, so a
        step copies nothing from the host; augmentation and normalisation run there too
        (`on_after_batch_transfer`). Lightning's setup does it for a GPU run."""
        moved: dict = {}                    # splits that share one source tensor share its copy
        for name, split in self.splits.items():
            if split.y.device.type == "cpu":
                self._host_labels[name] = split.y   # samplers and counts keep reading the host copy
            split.to(device, moved)

    def positive_mask(self, split: str = "train") -> torch.Tensor:
        """Which samples of a split belong to the rare class(es) (binary: label 1), on the host."""
        self.setup()
        y = self._host_labels.get(split, self.splits[split].y)
        if self.critical_classes is None:
            return y > 0.5
        return torch.isin(y, torch.tensor(self.critical_classes))

    @property
    def class_counts(self) -> list[int]:
        """Training samples per class [negatives, positives] (handed to imbalance-aware losses)."""
        n_pos = int(self.positive_mask().sum())
        return [len(self.splits["train"]) - n_pos, n_pos]

    def summary(self) -> dict[str, int]:
        """Positives and negatives per split."""
        self.setup()
        out = {}
        for name in self.splits:
            n_pos = int(self.positive_mask(name).sum())
            out[f"{name}_pos"], out[f"{name}_neg"] = n_pos, len(self.splits[name]) - n_pos
        return out

    # -- loaders ---------------------------------------------------------------------------
    def _loader(self, split: str, **kwargs) -> DataLoader:
        return DataLoader(self.splits[split], collate_fn=_identity, num_workers=0, **kwargs)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        sampler = self.batch_sampler(self.positive_mask("train"), self.batch_size)
        return self._loader("train", batch_sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", batch_size=self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Augment (training only) and normalise on the device the batch now lives on."""
        x = batch["x"]
        if self.augment and self.trainer is not None and self.trainer.training:
            x = self.augment_batch(x)
        return {**batch, "x": self.to_input(x)}
