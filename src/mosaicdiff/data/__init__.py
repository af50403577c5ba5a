"""Datasets: the colour pairings of the paper, scikit-learn's 8x8 digits, and user arrays."""

from mosaicdiff.data.base import ImageDataset, load_dataset

__all__ = ["ImageDataset", "load_dataset"]
