"""Datasets and LightningDataModules; every split rule lives in `splits.py`."""

from hightpr.data.cifar_binary import BinaryCIFARDataModule
from hightpr.data.splits import BinarySplit, binary_split

__all__ = ["BinaryCIFARDataModule", "BinarySplit", "binary_split"]
