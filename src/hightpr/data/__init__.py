"""Datasets and LightningDataModules; every split rule lives in `splits.py`."""

from hightpr.data.cifar import CIFARDataModule
from hightpr.data.cifar_binary import BinaryCIFARDataModule
from hightpr.data.cifar_lt import LongTailCIFARDataModule
from hightpr.data.cifar_small import SmallCIFARDataModule
from hightpr.data.splits import SplitIndices, binary_split

__all__ = [
    "BinaryCIFARDataModule", "SplitIndices", "CIFARDataModule", "LongTailCIFARDataModule",
    "SmallCIFARDataModule", "binary_split",
]
