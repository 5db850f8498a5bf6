"""Configuration of the slow-fast captioner: one Hugging Face config that holds the ViT, the LLM and the
pre-processing settings, so a saved model folder (``config.json``) describes the whole path.

``SlowFastCaptionerConfig`` is a ``transformers`` ``PreTrainedConfig`` with ``model_type = "slowfast_captioner"``,
a ``vision_config`` (SigLIP or CLIP vision) and a ``text_config`` (Qwen2). Serving code (the vLLM plugin) registers
it with ``AutoConfig.register(MODEL_TYPE, SlowFastCaptionerConfig)`` and reads the LLM part with
``config.get_text_config()``. It is written to work with the transformers 5.x of both virtual environments
(the main one and the vLLM one).

The placeholder and separator tokens are named here (``SPECIAL_TOKENS``); their ids are resolved from the
tokenizer once, when a model is built, and stored in the config (``image_token_id`` ...).
"""
from __future__ import annotations

from dataclasses import field
from typing import Any

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.clip.configuration_clip import CLIPVisionConfig
from transformers.models.qwen2.configuration_qwen2 import Qwen2Config
from transformers.models.siglip.configuration_siglip import SiglipVisionConfig

try:  # transformers >= 5.2x: composite configs declare sub-config specs
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # older 5.x (the vLLM environment): a plain class mapping
    SubConfigSpec = None  # type: ignore[assignment,misc]

MODEL_TYPE = "slowfast_captioner"
ARCHITECTURE = "SlowFastCaptioner"

# Chat markers (Qwen's) and the visual tokens. `IMAGE`/`VIDEO` pads are the positions that receive visual
# embeddings; `FRAME` separates video frames; `VISION_START`/`VISION_END` wrap every media item.
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
FRAME_TOKEN = "<|frame_sep|>"
SPECIAL_TOKENS: tuple[str, ...] = (END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_TOKEN,
                                   VIDEO_TOKEN, FRAME_TOKEN)
# config attribute holding each special token's id
TOKEN_ID_FIELDS: dict[str, str] = {
    IM_START: "im_start_token_id", IM_END: "im_end_token_id", END_OF_TEXT: "pad_token_id",
    VISION_START: "vision_start_token_id", VISION_END: "vision_end_token_id", IMAGE_TOKEN: "image_token_id",
    VIDEO_TOKEN: "video_token_id", FRAME_TOKEN: "frame_token_id",
}

VISION_CONFIGS: dict[str, type[PreTrainedConfig]] = {"siglip_vision_model": SiglipVisionConfig,
                                                     "clip_vision_model": CLIPVisionConfig}
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _as_config(value: Any, default_type: str, mapping: dict[str, type[PreTrainedConfig]]) -> PreTrainedConfig:
    if isinstance(value, PreTrainedConfig):
        return value
    data = dict(value or {})
    model_type = data.pop("model_type", default_type)
    if model_type not in mapping:
        raise ValueError(f"unsupported model_type {model_type!r}; expected one of {sorted(mapping)}")
    return mapping[model_type](**data)


class SlowFastCaptionerConfig(PreTrainedConfig):
    """ViT + 2-layer MLP + Qwen2 LLM, and how images and videos become visual tokens.

    Pre-processing settings (the report's section 3.3.3): images are split into at most ``max_tiles`` tiles of
    the ViT's ``image_size`` plus one global view; every view's patch grid is adaptively average-pooled to
    ``pool_grid x pool_grid`` tokens. Videos are sampled at ``sample_fps`` (at most ``max_frames``); every
    ``slow_stride``-th sampled frame (0, 4, 8, ...) keeps its pooled grid, the others are averaged to one token.
    Images whose long/short side ratio exceeds ``max_aspect_ratio`` are padded to it (``aspect_policy="pad"``)
    or rejected (``"reject"``).
    """

    model_type = MODEL_TYPE
    if SubConfigSpec is not None:
        sub_configs_defaults = {"text_config": SubConfigSpec(AutoConfig, model_type="qwen2"),
                                "vision_config": SubConfigSpec(AutoConfig, model_type="siglip_vision_model")}
    else:
        sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    vision_feature_layer: int = -1  # index into the ViT's hidden states; -1 = final output (after its last norm)
    projector_hidden_act: str = "gelu"
    pool_grid: int = 12
    max_tiles: int = 7
    sample_fps: float = 3.0
    max_frames: int = 129
    slow_stride: int = 4
    max_aspect_ratio: float = 7.0
    aspect_policy: str = "pad"
    image_mean: list[float] = field(default_factory=lambda: list(SIGLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(SIGLIP_STD))
    system_prompt: str = "You are a helpful assistant that describes images and videos in detail."
    im_start_token_id: int | None = None
    im_end_token_id: int | None = None
    vision_start_token_id: int | None = None
    vision_end_token_id: int | None = None
    image_token_id: int | None = None
    video_token_id: int | None = None
    frame_token_id: int | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs: Any) -> None:
        self.vision_config = _as_config(self.vision_config, "siglip_vision_model", VISION_CONFIGS)
        self.text_config = _as_config(self.text_config, "qwen2", {"qwen2": Qwen2Config})
        if getattr(self.vision_config, "model_type", "") == "siglip_vision_model":
            self.vision_config.vision_use_head = False  # the MAP pooling head is unused: keep no dead weights
        self.tie_word_embeddings = bool(self.text_config.tie_word_embeddings)
        super().__post_init__(**kwargs)
        self.validate_settings()

    def validate_settings(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        checks = {
            "pool_grid": self.pool_grid >= 1, "max_tiles": self.max_tiles >= 1, "sample_fps": self.sample_fps > 0,
            "max_frames": self.max_frames >= 1, "slow_stride": self.slow_stride >= 1,
            "max_aspect_ratio": self.max_aspect_ratio >= 1.0, "aspect_policy": self.aspect_policy in ("pad", "reject"),
            "image_mean": len(self.image_mean) == 3, "image_std": len(self.image_std) == 3 and min(self.image_std) > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"SlowFastCaptionerConfig.{name}: bad value {getattr(self, name)!r}")

    @property
    def tile_size(self) -> int:
        """Side of one ViT view in pixels (the ViT's ``image_size``)."""
        size = self.vision_config.image_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def tokens_per_view(self) -> int:
        return self.pool_grid * self.pool_grid

    def missing_token_ids(self) -> list[str]:
        return [f for f in TOKEN_ID_FIELDS.values() if getattr(self, f, None) is None]


def register_auto_config() -> None:
    """Make ``AutoConfig.from_pretrained`` read our ``config.json`` (idempotent)."""
    try:
        AutoConfig.register(MODEL_TYPE, SlowFastCaptionerConfig)
    except ValueError:  # already registered
        pass
