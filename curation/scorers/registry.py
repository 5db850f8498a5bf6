"""Registry of the classical scorers: stage name -> module holding ``STAGE``, ``VERSION``, a config model and
``score(clip: ClipFrames, cfg) -> dict``. All of them share one decode per clip (see ``curation.stages.analyze``).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from pydantic import BaseModel

# Order matters only for reports; every scorer sees the same frames.
SCORER_MODULES: dict[str, str] = {
    "duration_resolution": "curation.scorers.duration_resolution",
    "borders": "curation.scorers.borders",
    "exposure": "curation.scorers.exposure",
    "blur": "curation.scorers.blur",
    "motion": "curation.scorers.motion",
    "watermark": "curation.scorers.watermark",
    "phash": "curation.scorers.phash",
}


@dataclass(frozen=True)
class Scorer:
    name: str
    version: str
    config_cls: type[BaseModel]
    score: Callable[[Any, Any], dict[str, object]]


def _config_class(mod: ModuleType) -> type[BaseModel]:
    found = [
        v for v in vars(mod).values()
        if isinstance(v, type) and issubclass(v, BaseModel) and v.__module__ == mod.__name__
        and v.__name__.endswith("Config")
    ]
    if len(found) != 1:
        raise ImportError(f"{mod.__name__} must define exactly one *Config model, found {[c.__name__ for c in found]}")
    return found[0]


def _load(name: str, module: str) -> Scorer:
    mod = importlib.import_module(module)
    if mod.STAGE != name:
        raise ImportError(f"{module}.STAGE is {mod.STAGE!r}, expected {name!r}")
    return Scorer(name, str(mod.VERSION), _config_class(mod), mod.score)


SCORERS: dict[str, Scorer] = {name: _load(name, module) for name, module in SCORER_MODULES.items()}
SCORER_CONFIGS: dict[str, type[BaseModel]] = {name: s.config_cls for name, s in SCORERS.items()}
