"""Wan-Bench dimensions: one module each, registered in ``DIMENSIONS`` (see ``bench.dimensions.base``).

``DIMENSIONS[name](section)`` builds a dimension from its config section (a dict or None); modules that need
torch, transformers or ultralytics import them only when a dimension is built.
"""
from bench.dimensions.base import (
        GROUPS,
        BenchVideo,
        Dimension,
        DimensionFactory,
        DimensionScore,
)
from bench.dimensions.camera_control import CameraControl
from bench.dimensions.human_artifacts import HumanArtifacts
from bench.dimensions.id_consistency import IdConsistency
from bench.dimensions.image_quality import ImageQuality, SceneQuality
from bench.dimensions.judged import (
        ActionFollowing,
        PhysicalPlausibility,
        Smoothness,
        Stylization,
)
from bench.dimensions.motion_dims import LargeMotion, PixelStability
from bench.dimensions.objects import MultipleObjects, SingleObject, SpatialPosition

_ALL = (LargeMotion, HumanArtifacts, PhysicalPlausibility, Smoothness, PixelStability, IdConsistency,
        ImageQuality, SceneQuality, Stylization, SingleObject, MultipleObjects, SpatialPosition, CameraControl,
        ActionFollowing)

WANBENCH_DIMENSIONS: tuple[str, ...] = tuple(cls.name for cls in _ALL)
"""The 14 dimensions of the report's Table 2, in the report's order."""

DIMENSIONS: dict[str, DimensionFactory] = {cls.name: cls for cls in _ALL}
"""Every registered dimension by name: the report's 14, plus any a user module registers."""

__all__ = ["DIMENSIONS", "GROUPS", "WANBENCH_DIMENSIONS", "BenchVideo", "Dimension", "DimensionFactory", "DimensionScore"]
