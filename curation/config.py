"""Typed configuration of the curation job: one model per stage, validated before any work starts.

Every model forbids unknown keys, so a typo (``treshold``) is an error that names the key instead of a setting
silently ignored. ``load_config`` turns pydantic's report into one ``ConfigError`` message.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from curation.scorers.registry import SCORER_CONFIGS

STAGE_ORDER = ("ingest", "shots", *SCORER_CONFIGS.keys(), "dedup", "select")
"""Every stage, in the order a run executes them."""

MOTION_TIERS = ("optimal", "medium", "static", "camera_driven", "low_quality", "shaky")


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the offending key."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputConfig(Strict):
    """Where media come from: folders (walked recursively), single files, or text files listing URIs."""

    paths: list[str] = Field(min_length=1)
    uri_lists: list[str] = Field(default_factory=list)
    recursive: bool = True


class RayConfig(Strict):
    address: str | None = None  # None: the embedded local Ray; "auto" or "ray://..." for a cluster
    num_cpus: int | None = Field(default=None, ge=1)  # the embedded local Ray only

    @model_validator(mode="after")
    def _cpus_only_local(self) -> "RayConfig":
        if self.address is not None and self.num_cpus is not None:
            raise ValueError("num_cpus sizes the embedded local Ray; a cluster (address set) has its own")
        return self


class ExecutionConfig(Strict):
    """How work is cut and committed: items per Ray block, and rows per Lance commit."""

    backend: Literal["ray", "local"] = "ray"  # "local": in-process, for debugging and per-core benchmarks
    items_per_task: int = Field(default=2, ge=1, le=10_000)
    commit_every: int = Field(default=16, ge=1, le=1_000_000)
    concurrency: int | None = Field(default=None, ge=1)  # None: one task per CPU


class IngestConfig(Strict):
    min_side: int = Field(default=16, ge=1, le=8192)
    hash_chunk_mb: int = Field(default=4, ge=1, le=1024)


class ShotsConfig(Strict):
    """Shot splitting (PySceneDetect on tiny frames) and the shared analysis decode."""

    detector: Literal["adaptive", "content"] = "adaptive"
    adaptive_threshold: float = Field(default=3.0, gt=0, le=100)  # adaptive: score / neighbours' mean
    window_width: int = Field(default=2, ge=1, le=30)
    min_content_val: float = Field(default=15.0, ge=0, le=255)
    threshold: float = Field(default=27.0, gt=0, le=255)  # content detector only
    min_shot_s: float = Field(default=0.5, ge=0, le=60)
    max_clip_s: float = Field(default=60.0, gt=0.5, le=3600)
    detect_width: int = Field(default=64, ge=16, le=640)
    analysis_max_side: int = Field(default=384, ge=64, le=2048)
    # 6 fps: motion tiers were as accurate or better than at 8 fps on three generated seeds, at 3/4 the cost.
    sample_fps: float = Field(default=6.0, gt=0, le=120)
    decode_threads: int = Field(default=1, ge=0, le=64)  # 1: one core per Ray task; 0: FFmpeg decides
    keyframes: int = Field(default=3, ge=1, le=16)

    @model_validator(mode="after")
    def _lengths(self) -> "ShotsConfig":
        if self.max_clip_s < self.min_shot_s:
            raise ValueError(f"max_clip_s ({self.max_clip_s}) is below min_shot_s ({self.min_shot_s})")
        return self
    jpeg_quality: int = Field(default=85, ge=10, le=100)


class DedupConfig(Strict):
    max_distance: int = Field(default=8, ge=0, le=20)


class SelectConfig(Strict):
    """Thresholds applied to stored scores (re-run select alone to change them; nothing is recomputed)."""

    min_duration_s: float = Field(default=4.0, ge=0, le=3600)
    max_duration_s: float | None = Field(default=None, gt=0)
    train_stage: str = "stage1_256p"
    min_short_side: dict[str, int] = Field(
        default_factory=lambda: {"stage1_256p": 256, "stage2_480p": 480, "stage3_720p": 720}
    )
    max_border_fraction: float = Field(default=0.5, ge=0, le=1)
    max_overexposure: float = Field(default=0.5, ge=0, le=1)
    max_blur: float = Field(default=0.5, ge=0, le=1)
    exclude_tiers: list[str] = Field(default_factory=lambda: ["low_quality", "shaky"])
    reject_watermark: bool = False  # the report crops watermarks rather than dropping the clip
    reject_near_duplicates: bool = True
    images_skip_duration: bool = True

    @model_validator(mode="after")
    def _duration_range(self) -> "SelectConfig":
        if self.max_duration_s is not None and self.max_duration_s <= self.min_duration_s:
            raise ValueError(f"max_duration_s ({self.max_duration_s}) must exceed min_duration_s "
                             f"({self.min_duration_s})")
        return self

    @field_validator("exclude_tiers")
    @classmethod
    def _known_tiers(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t not in MOTION_TIERS]
        if bad:
            raise ValueError(f"unknown motion tier(s) {bad}; known: {list(MOTION_TIERS)}")
        return v

    @model_validator(mode="after")
    def _stage_known(self) -> "SelectConfig":
        if self.train_stage not in self.min_short_side:
            raise ValueError(f"train_stage {self.train_stage!r} not in min_short_side {sorted(self.min_short_side)}")
        if any(v < 1 for v in self.min_short_side.values()):
            raise ValueError("min_short_side values must be >= 1")
        return self


class ReportConfig(Strict):
    html: bool = True
    out_dir: str | None = None  # default: <lake>/reports (local lake) or ./curation_report
    thumbnails_per_group: int = Field(default=12, ge=0, le=200)


def _scorer_fields() -> dict[str, Any]:
    return {name: (cls, Field(default_factory=cls)) for name, cls in SCORER_CONFIGS.items()}


class _CurateBase(Strict):
    lake: str
    input: InputConfig | None = None
    stages: list[str] = Field(default_factory=lambda: list(STAGE_ORDER))
    ray: RayConfig = Field(default_factory=RayConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    shots: ShotsConfig = Field(default_factory=ShotsConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in STAGE_ORDER]
        if bad:
            raise ValueError(f"unknown stage(s) {bad}; known: {list(STAGE_ORDER)}")
        if len(set(v)) != len(v):
            raise ValueError("a stage is listed twice")
        return sorted(v, key=STAGE_ORDER.index)

    @model_validator(mode="after")
    def _input_for_ingest(self) -> "_CurateBase":
        if "ingest" in self.stages and self.input is None:
            raise ValueError("stage 'ingest' needs an 'input' section with 'paths'")
        return self


CurateConfig = create_model("CurateConfig", __base__=_CurateBase, **_scorer_fields())
"""The whole job: lake, input, stages to run, one section per stage."""


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"unknown key '{loc}'")
        else:
            lines.append(f"'{loc}': {e['msg']}")
    return "invalid config: " + "; ".join(lines)


def parse_config(data: dict[str, Any]) -> Any:
    """Validate a config dict; raises ``ConfigError`` naming every bad key."""
    if not isinstance(data, dict):
        raise ConfigError("invalid config: the top level must be a mapping")
    try:
        return CurateConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """Read a YAML config (relative ``lake``/``input`` paths resolve against the working directory)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config: {path} must hold a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"invalid override '{dotted}': '{'.'.join(parents[:i + 1])}' is not a section")
        node[leaf] = value
    return parse_config(data)


def config_hash(section: BaseModel) -> str:
    """Stable short hash of a config section, recorded in ``runs``."""
    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]

