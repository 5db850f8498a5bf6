"""Typed configuration of the curation job: one model per stage, validated before any work starts.

Every model forbids unknown keys, so a typo (``treshold``) is an error that names the key instead of a setting
silently ignored. ``load_config`` turns pydantic's report into one ``ConfigError`` message.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from curation.jobconfig import ConfigError, Strict, config_hash, load_yaml_config, validate
from curation.scorers.motion_rules import MotionTierRules
from curation.scorers.registry import SCORER_CONFIGS

__all__ = ["ConfigError", "Strict", "config_hash", "load_config", "parse_config"]

MODEL_STAGES = ("ocr", "embed", "aesthetic", "nsfw", "experts")
"""Model-backed stages (Ray Data actor pools over keyframes or embeddings), in dependency order."""

EMBEDDING_STAGES = ("cluster", "quality", "semantic_dedup", "category")
"""Stages over the stored CLIP embeddings (``curation.embeddings``), after the model stages."""

STAGE_ORDER = ("ingest", "shots", *SCORER_CONFIGS.keys(), "dedup", *MODEL_STAGES, *EMBEDDING_STAGES, "select",
               "split")
"""Every stage, in the order a run executes them."""

MOTION_TIERS = ("optimal", "medium", "static", "camera_driven", "low_quality", "shaky")


def known_motion_tiers(tiers: list[str]) -> list[str]:
    """``tiers`` unchanged, or ValueError naming the unknown ones (every config field that lists motion tiers)."""
    bad = [t for t in tiers if t not in MOTION_TIERS]
    if bad:
        raise ValueError(f"unknown motion tier(s) {bad}; known: {list(MOTION_TIERS)}")
    return tiers


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


class ModelStageConfig(Strict):
    """How a model-backed stage runs: a Ray Data actor pool, the model loaded once per actor."""

    batch_size: int = Field(default=16, ge=1, le=4096)  # clips per model call
    concurrency: int = Field(default=1, ge=1, le=4096)  # actors in the pool
    num_gpus: float = Field(default=0.0, ge=0, le=16)  # per actor; 0 runs on CPU
    num_cpus: float = Field(default=1.0, gt=0, le=256)  # per actor; also the model's inference threads


class OcrConfig(ModelStageConfig):
    """Text coverage and recognised text per keyframe (PP-OCR)."""

    backend: Literal["rapidocr", "paddleocr"] = "rapidocr"
    recognize: bool = True  # False: detection only (coverage, no texts), faster
    min_text_score: float = Field(default=0.5, ge=0, le=1)  # boxes recognised below this are dropped
    min_text_chars: int = Field(default=2, ge=1, le=100)  # shorter texts are scene shapes (a rectangle reads 口)
    unclip_ratio: float = Field(default=1.5, ge=1.0, le=4.0)  # DB box expansion (PaddleOCR's default)
    box_thresh: float = Field(default=0.5, ge=0, le=1)
    det_model: str | None = None  # rapidocr: local ONNX files replacing the ones it ships
    rec_model: str | None = None
    cls_model: str | None = None
    paddle_det_model_dir: str | None = None  # paddleocr: local model folders (required for that backend)
    paddle_rec_model_dir: str | None = None
    paddle_lang: str = "ch"


class ClipModelConfig(Strict):
    """An open_clip model from local files: ``path`` (a folder with open_clip_config.json and weights), or a
    built-in ``architecture`` (``ViT-L-14``) with a ``weights`` file."""

    path: str | None = None
    architecture: str | None = None
    weights: str | None = None
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"

    @model_validator(mode="after")
    def _one_source(self) -> "ClipModelConfig":
        folder = self.path is not None
        named = self.architecture is not None or self.weights is not None
        if folder == named or (named and (self.architecture is None or self.weights is None)):
            raise ValueError("give either 'path' (an open_clip folder) or both 'architecture' and 'weights'")
        return self


class EmbedConfig(ModelStageConfig):
    """CLIP image embeddings of every clip (mean of its keyframes), the input of every head-based stage."""

    clip: ClipModelConfig | None = None  # required when the stage runs


class AestheticConfig(ModelStageConfig):
    """LAION aesthetic predictor on the stored CLIP embeddings (ViT-L/14 for the released head)."""

    batch_size: int = Field(default=256, ge=1, le=1_000_000)
    weights: str | None = None  # .pth / .safetensors; required when the stage runs


class NsfwConfig(ModelStageConfig):
    """NSFW score per clip: max over keyframes. ``nudenet`` runs on keyframes, ``clip_head`` on embeddings."""

    backend: Literal["nudenet", "clip_head"] = "nudenet"
    nudenet_model: str | None = None  # default: the 320n.onnx the nudenet package ships
    labels: list[str] = Field(default_factory=lambda: ["FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
                                                       "FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED", "ANUS_EXPOSED"])
    head: str | None = None  # clip_head: a binary head (.safetensors) from `wan curate train-expert`

    @field_validator("labels")
    @classmethod
    def _known_labels(cls, v: list[str]) -> list[str]:
        from curation.models.nsfw import NUDENET_LABELS

        bad = [lb for lb in v if lb not in NUDENET_LABELS]
        if bad or not v:
            raise ValueError(f"unknown NudeNet label(s) {bad}; known: {list(NUDENET_LABELS)}")
        return v


class ExpertsConfig(ModelStageConfig):
    """Trained expert heads (synthetic image, overexposure, ...) applied to every embedded clip."""

    batch_size: int = Field(default=1024, ge=1, le=1_000_000)
    heads: dict[str, str] = Field(default_factory=dict)  # name -> head .safetensors; required when it runs

    @field_validator("heads")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [n for n in v if not n.replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"expert names must be letters, digits and '_': {bad}")
        return v


# --- stages over the stored embeddings (report 3.1 "Visual quality", 3.2) ---------------------------------------

# The report's 12 major post-training categories: it names technology, animals, arts, humans and vehicles; the
# other seven are common subjects of web video. Each category is described by a few phrases for CLIP prompts.
DEFAULT_CATEGORIES: dict[str, list[str]] = {
    "technology": ["computers, phones and electronic devices", "robots and machines"],
    "animals": ["animals", "pets, wild animals or birds"],
    "arts": ["a painting, sculpture or artwork", "a music or dance performance"],
    "humans": ["people", "a person's face"],
    "vehicles": ["cars, trucks or motorcycles", "trains, boats or airplanes"],
    "food": ["food or a meal", "cooking or drinks"],
    "nature": ["a natural landscape", "mountains, forests, rivers or the sea"],
    "architecture": ["buildings or architecture", "a city street or skyline"],
    "sports": ["sports", "athletes playing a game"],
    "plants": ["plants or flowers", "trees in a garden"],
    "fashion": ["clothing and fashion", "jewelry or accessories"],
    "household": ["household objects or furniture", "a room interior"],
}
DEFAULT_STYLES: dict[str, list[str]] = {
    "photo": ["a realistic photograph", "a live-action video frame"],
    "animation": ["a cartoon or anime", "an illustration"],
    "painting": ["a painting or drawing"],
    "render": ["a 3D computer rendering", "a video game scene"],
}


class ClusterConfig(ModelStageConfig):
    """k-means on CLIP embeddings: fitted on a sample, assigned to every clip by an actor pool."""

    batch_size: int = Field(default=4096, ge=1, le=1_000_000)
    n_clusters: int = Field(default=100, ge=2, le=100_000)
    sample_size: int = Field(default=200_000, ge=2, le=100_000_000)  # rows the centroids are fitted on
    niter: int = Field(default=20, ge=1, le=1000)
    n_init: int = Field(default=1, ge=1, le=100)
    max_swaps: int = Field(default=10, ge=0, le=1000)  # centroid swaps that rescue merged small clusters
    backend: Literal["auto", "faiss", "torch"] = "auto"
    seed: int = 0
    refit: bool = False  # fit anew even when centroids of the same settings are stored

    @model_validator(mode="after")
    def _sample_holds_clusters(self) -> "ClusterConfig":
        if self.sample_size < self.n_clusters:
            raise ValueError(f"sample_size ({self.sample_size}) is below n_clusters ({self.n_clusters})")
        return self


class QualityConfig(ModelStageConfig):
    """The quality expert: ratings asked per cluster (``ratings_todo``), a regression head trained on the
    ``ratings`` table (or a trained ``head``), then a quality score (1-5 scale) for every embedded clip."""

    batch_size: int = Field(default=4096, ge=1, le=1_000_000)
    ratings_per_cluster: int = Field(default=20, ge=0, le=1_000_000)  # 0: write no ratings_todo
    min_ratings: int = Field(default=50, ge=2, le=100_000_000)  # rated clips needed before training
    head: str | None = None  # a trained quality head (.safetensors): used as is, nothing is trained
    head_out: str | None = None  # where a trained head is written; default <lake>/models/quality_head.safetensors
    hidden: int = Field(default=64, ge=0, le=4096)  # 0: a linear head
    epochs: int = Field(default=300, ge=1, le=100_000)
    seed: int = 0


class SemanticDedupConfig(Strict):
    """Near-duplicates by CLIP cosine similarity within each cluster; the best-quality member is kept."""

    threshold: float = Field(default=0.95, gt=0, le=1)
    concurrency: int | None = Field(default=None, ge=1)  # Ray tasks at once; None: one per CPU


def _check_labels(kind: str, labels: dict[str, list[str]]) -> dict[str, list[str]]:
    if not labels:
        raise ValueError(f"at least one {kind} is needed")
    bad = [n for n in labels if not n or not n.replace("_", "").isalnum()]
    if bad:
        raise ValueError(f"{kind} names must be letters, digits and '_': {bad}")
    empty = [n for n, d in labels.items() if not d or any(not x.strip() for x in d)]
    if empty:
        raise ValueError(f"{kind}(s) {empty} need at least one non-empty description")
    return labels


class CategoryConfig(ModelStageConfig):
    """Zero-shot category and style of every embedded clip from CLIP text prompts (the ``embed`` model)."""

    batch_size: int = Field(default=4096, ge=1, le=1_000_000)
    categories: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_CATEGORIES.items()})
    styles: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_STYLES.items()})
    templates: list[str] = Field(default_factory=lambda: ["a photo of {}.", "a video frame showing {}."],
                                 min_length=1)

    @field_validator("categories")
    @classmethod
    def _categories(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        return _check_labels("category", v)

    @field_validator("styles")
    @classmethod
    def _styles(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        return _check_labels("style", v)

    @field_validator("templates")
    @classmethod
    def _templates(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if t.count("{}") != 1]
        if bad:
            raise ValueError(f"each template needs exactly one '{{}}' where the description goes: {bad}")
        return v


class SplitConfig(Strict):
    """After select: semantic duplicates out, per-cluster quotas for the pretraining set, and the post-training
    subsets (top fraction by quality per category/style, videos split by motion, category-balanced)."""

    reject_semantic_duplicates: bool = True
    max_per_cluster: int | None = Field(default=None, ge=1)  # pretraining: at most this many kept clips a cluster
    pretrain_budget: int | None = Field(default=None, ge=1)  # pretraining: kept clips in all, spread over clusters
    top_fraction: float = Field(default=0.2, gt=0, le=1)
    group_by: list[Literal["category", "style"]] = Field(default_factory=lambda: ["category", "style"])
    simple_motion_tiers: list[str] = Field(default_factory=lambda: ["optimal"])
    complex_motion_tiers: list[str] = Field(default_factory=lambda: ["medium"])
    max_images: int | None = Field(default=None, ge=1)
    max_simple_videos: int | None = Field(default=None, ge=1)
    max_complex_videos: int | None = Field(default=None, ge=1)
    seed: int = 0

    @field_validator("simple_motion_tiers", "complex_motion_tiers")
    @classmethod
    def _known_tiers(cls, v: list[str]) -> list[str]:
        return known_motion_tiers(v)

    @model_validator(mode="after")
    def _disjoint(self) -> "SplitConfig":
        both = sorted(set(self.simple_motion_tiers) & set(self.complex_motion_tiers))
        if both:
            raise ValueError(f"motion tier(s) {both} are listed as both simple and complex")
        return self


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
    motion_tiers: MotionTierRules = Field(default_factory=MotionTierRules)  # tier rules over stages/motion stats
    watermark_min_score: float = Field(default=0.5, ge=0, le=1)  # a watermark when watermark_score >= this
    reject_watermark: bool = False  # the report crops watermarks rather than dropping the clip
    near_margin: float = Field(default=0.15, ge=0, le=1)  # report: statistics within 15 % of a deciding threshold
    reject_near_duplicates: bool = True
    images_skip_duration: bool = True
    # Model-backed scores (applied only when their stage table exists; null switches a threshold off).
    max_text_coverage: float | None = Field(default=0.2, ge=0, le=1)  # OCR text area / frame area, max keyframe
    min_aesthetic: float | None = Field(default=None, ge=0, le=10)  # LAION predictor scale (about 1-10)
    max_nsfw: float | None = Field(default=0.5, ge=0, le=1)
    max_expert_score: dict[str, float] = Field(default_factory=dict)  # expert name -> max probability

    @field_validator("max_expert_score")
    @classmethod
    def _probabilities(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: x for k, x in v.items() if not 0 <= x <= 1}
        if bad:
            raise ValueError(f"expert thresholds are probabilities in [0, 1]: {bad}")
        return v

    @model_validator(mode="after")
    def _duration_range(self) -> "SelectConfig":
        if self.max_duration_s is not None and self.max_duration_s <= self.min_duration_s:
            raise ValueError(f"max_duration_s ({self.max_duration_s}) must exceed min_duration_s "
                             f"({self.min_duration_s})")
        return self

    @field_validator("exclude_tiers")
    @classmethod
    def _known_tiers(cls, v: list[str]) -> list[str]:
        return known_motion_tiers(v)

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
    ocr: OcrConfig = Field(default_factory=OcrConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    aesthetic: AestheticConfig = Field(default_factory=AestheticConfig)
    nsfw: NsfwConfig = Field(default_factory=NsfwConfig)
    experts: ExpertsConfig = Field(default_factory=ExpertsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    semantic_dedup: SemanticDedupConfig = Field(default_factory=SemanticDedupConfig)
    category: CategoryConfig = Field(default_factory=CategoryConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
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


def parse_config(data: dict[str, Any]) -> Any:
    """Validate a config dict; raises ``ConfigError`` naming every bad key."""
    return validate(CurateConfig, data)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """Read a YAML config (relative ``lake``/``input`` paths resolve against the working directory)."""
    return load_yaml_config(path, CurateConfig, overrides)
