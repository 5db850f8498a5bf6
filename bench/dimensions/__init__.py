"""Wan-Bench dimensions: one module each, registered in ``DIMENSIONS`` (see ``bench.dimensions.base``)."""
from bench.dimensions.base import GROUPS, BenchVideo, Dimension, DimensionScore

__all__ = ["GROUPS", "BenchVideo", "Dimension", "DimensionScore"]
