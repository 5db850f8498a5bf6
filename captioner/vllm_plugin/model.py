"""The slow-fast captioner inside vLLM: our ViT and projector, vLLM's own Qwen2, our processor's token layout.

Imported only in a process that has vLLM (through ``captioner.vllm_plugin.register``). What is shared with the
transformers model (``captioner.model``) so both compute the same thing:

- pixels and layouts: ``CaptionProcessor.layout_and_pixels`` (tiling, aspect-ratio padding, frame sampling,
  normalisation) runs in vLLM's multimodal processor on the raw RGB image / frames of each request;
- the placeholder run: a prompt holds one ``<|image_pad|>`` / ``<|video_pad|>`` per item (the collapsed prompt
  of ``CaptionProcessor.prompt_ids``); ``PromptReplacement`` expands it to ``media_placeholder_ids(layout)``,
  and only the pad tokens receive embeddings (``PromptUpdateDetails.select_token_id``), the frame separators
  stay ordinary text tokens;
- the visual embeddings: the same transformers ViT class (``build_vision_tower``), ``vision_features``,
  ``pool_item`` (12x12 adaptive pooling, slow/fast frames) and the two-layer projector, on the same weights.

The language model is vLLM's ``Qwen2ForCausalLM`` (paged attention, continuous batching, tensor parallel).
Checkpoint keys are those of ``SlowFastCaptioner.save_pretrained``: ``vision_tower.*``,
``multi_modal_projector.*``, ``language_model.model.*``, ``language_model.lm_head.*``.

Video items are ``(frames, metadata)`` with ``frames`` a ``(T, H, W, 3)`` uint8 RGB array and ``metadata``
holding ``timestamps`` (seconds, one per frame) or ``fps``: the processor samples them at ``sample_fps`` exactly
as the transformers path does. Images are ``(H, W, 3)`` uint8 RGB arrays (or PIL images).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsMultiModal,
)
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
)

from captioner.config import IMAGE_TOKEN, VIDEO_TOKEN, SlowFastCaptionerConfig
from captioner.model import (
    MultiModalProjector,
    build_vision_tower,
    pool_item,
    vision_features,
)
from captioner.processor import (
    CaptionProcessor,
    ImageInput,
    ImageLayout,
    MediaLayout,
    VideoInput,
    VideoLayout,
    media_placeholder_ids,
    video_token_count,
)

TEXT_ARCHITECTURE = "Qwen2ForCausalLM"
VISION_BATCH_SIZE = 64  # views per ViT call, as SlowFastCaptioner.embed_media


def video_item(frames: np.ndarray, *, timestamps: Sequence[float] | None = None, fps: float | None = None,
               presampled: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """A video for ``multi_modal_data["video"]``: RGB frames with their timestamps or fps, or ``presampled``
    frames (already sampled by ``CaptionProcessor``'s rule, e.g. by the caller's decoder): then every frame is
    kept, in order. Sampling again from the sampled frames' own timestamps would not always keep them all (the
    sampling grid ends at the last timestamp), hence the flag."""
    if presampled:
        return frames, {"presampled": True}
    if timestamps is None and fps is None:
        raise ValueError("a video needs timestamps, fps or presampled=True")
    meta: dict[str, Any] = {"timestamps": [float(t) for t in timestamps]} if timestamps is not None else {}
    if fps is not None:
        meta["fps"] = float(fps)
    return frames, meta


def _video_input(item: Any, sample_fps: float) -> VideoInput:
    frames, meta = item if isinstance(item, tuple) else (item, {})
    meta = meta or {}
    frames = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if meta.get("presampled"):
        # Frames spaced exactly one sampling step apart: the processor's sampling keeps each one.
        return VideoInput(frames, fps=sample_fps)
    if meta.get("timestamps") is not None:
        return VideoInput(frames, timestamps=list(meta["timestamps"]))
    return VideoInput(frames, fps=meta.get("fps"))


def _image_input(item: Any) -> ImageInput:
    if not isinstance(item, np.ndarray):  # a PIL image
        item = np.asarray(item.convert("RGB"))
    return ImageInput(item)


# -------------------------------------------------------------------------------------------- processing
class CaptionerProcessingInfo(BaseProcessingInfo):
    """Config, processor and token budgets of the captioner for vLLM's input pipeline."""

    def get_hf_config(self) -> SlowFastCaptionerConfig:
        return self.ctx.get_hf_config(SlowFastCaptionerConfig)

    @cached_property
    def caption_processor(self) -> CaptionProcessor:
        return CaptionProcessor(self.get_hf_config(), self.get_tokenizer())

    def get_hf_processor(self, **kwargs: object) -> CaptionProcessor:  # type: ignore[override]
        return self.caption_processor

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        return {}  # the processor takes its settings from config.json only

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None, "video": None}

    def get_data_parser(self) -> MultiModalDataParser:
        # Keep each video's metadata (timestamps / fps): frame sampling needs it.
        return MultiModalDataParser(video_needs_metadata=True,
                                    expected_hidden_size=self._get_expected_hidden_size())

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        config = self.get_hf_config()
        return {"image": (config.max_tiles + 1) * config.tokens_per_view,
                "video": video_token_count(config.max_frames, config.slow_stride, config.tokens_per_view)}


class CaptionerDummyInputsBuilder(BaseDummyInputsBuilder[CaptionerProcessingInfo]):
    """The largest inputs (for vLLM's memory profiling): a 1 x max_tiles image and a max_frames video."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_TOKEN * mm_counts.get("image", 0) + VIDEO_TOKEN * mm_counts.get("video", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int],
                          mm_options: MultiModalDummyOptions) -> dict[str, Any]:
        config = self.info.get_hf_config()
        tile = config.tile_size
        image = np.full((tile, tile * config.max_tiles, 3), 255, np.uint8)
        frames = np.full((config.max_frames, tile, tile, 3), 255, np.uint8)
        video = video_item(frames, presampled=True)
        return {"image": [image] * mm_counts.get("image", 0), "video": [video] * mm_counts.get("video", 0)}


class CaptionerMultiModalProcessor(BaseMultiModalProcessor[CaptionerProcessingInfo]):
    """Runs our processor on each item and expands each pad token to the item's placeholder run."""

    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        processor = self.info.caption_processor
        out: dict[str, torch.Tensor] = {}
        images = list(hf_data.get("images") or [])
        if images:
            layouts, pixels = zip(*(processor.image_layout_and_pixels(_image_input(im)) for im in images))
            out["pixel_values_images"] = torch.cat(pixels)
            out["image_num_views"] = torch.tensor([lay.num_views for lay in layouts])
            out["image_grid"] = torch.tensor([[lay.rows, lay.cols, int(lay.padded)] for lay in layouts])
        videos = list(hf_data.get("videos") or [])
        if videos:
            layouts, pixels = zip(*(processor.video_layout_and_pixels(_video_input(v, processor.config.sample_fps)) for v in videos))
            out["pixel_values_videos"] = torch.cat(pixels)
            out["video_num_frames"] = torch.tensor([lay.num_views for lay in layouts])
        return BatchFeature(out)

    def _get_mm_fields_config(self, hf_inputs: BatchFeature,
                              hf_processor_mm_kwargs: Mapping[str, object]) -> Mapping[str, MultiModalFieldConfig]:
        image_views = hf_inputs.get("image_num_views", torch.empty(0, dtype=torch.long))
        video_frames = hf_inputs.get("video_num_frames", torch.empty(0, dtype=torch.long))
        return {
            "pixel_values_images": MultiModalFieldConfig.flat_from_sizes("image", image_views),
            "image_num_views": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            "image_grid": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            "pixel_values_videos": MultiModalFieldConfig.flat_from_sizes("video", video_frames),
            "video_num_frames": MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        }

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        config = self.info.get_hf_config()
        data = out_mm_kwargs.get_data()
        grids = data.get("image_grid")
        frames = data.get("video_num_frames")

        def image_run(item_idx: int) -> PromptUpdateDetails:
            rows, cols, padded = (int(x) for x in grids[item_idx])
            layout = ImageLayout(rows, cols, config.tokens_per_view, bool(padded))
            return PromptUpdateDetails.select_token_id(media_placeholder_ids(layout, config), config.image_token_id)

        def video_run(item_idx: int) -> PromptUpdateDetails:
            layout = _video_layout(int(frames[item_idx]), config)
            return PromptUpdateDetails.select_token_id(media_placeholder_ids(layout, config), config.video_token_id)

        return [PromptReplacement(modality="image", target=[config.image_token_id], replacement=image_run),
                PromptReplacement(modality="video", target=[config.video_token_id], replacement=video_run)]


def _video_layout(num_frames: int, config: SlowFastCaptionerConfig) -> VideoLayout:
    """The layout facts the tokens depend on (frame count, slow stride); times do not change the tokens."""
    return VideoLayout(tuple(range(num_frames)), (0.0,) * num_frames, config.tokens_per_view, config.slow_stride)


def _ints(value: Any) -> list[int]:
    """Per-item integers of a batched field (a tensor, or a list of 0-d tensors)."""
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.flatten().tolist()]
    return [int(v) for v in value]


def _rows(value: Any) -> list[list[int]]:
    """Per-item integer rows of a batched field (an ``(N, K)`` tensor, or a list of ``(K,)`` tensors)."""
    if isinstance(value, torch.Tensor):
        return [[int(x) for x in row] for row in value.reshape(-1, value.shape[-1]).tolist()]
    return [[int(x) for x in (row.tolist() if isinstance(row, torch.Tensor) else row)] for row in value]


# -------------------------------------------------------------------------------------------------- model
@MULTIMODAL_REGISTRY.register_processor(CaptionerMultiModalProcessor, info=CaptionerProcessingInfo,
                                        dummy_inputs=CaptionerDummyInputsBuilder)
class VllmSlowFastCaptioner(nn.Module, SupportsMultiModal):
    """ViT + projector (ours) feeding vLLM's Qwen2 through merged input embeddings."""

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_TOKEN
        if modality.startswith("video"):
            return VIDEO_TOKEN
        raise ValueError(f"unsupported modality {modality!r}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: SlowFastCaptionerConfig = vllm_config.model_config.hf_config
        self.config = config
        self.configure_mm_token_handling(vocab_size=config.text_config.vocab_size,
                                         mm_token_ids=[config.image_token_id, config.video_token_id])
        with self._mark_tower_model(vllm_config, {"image", "video"}):
            self.vision_tower = build_vision_tower(config.vision_config)
            self.multi_modal_projector = MultiModalProjector(config.vision_config.hidden_size,
                                                             config.text_config.hidden_size,
                                                             config.projector_hidden_act)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(vllm_config=vllm_config, hf_config=config.text_config,
                                                             prefix=maybe_prefix(prefix, "language_model"),
                                                             architectures=[TEXT_ARCHITECTURE])
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    # ---- visual path (the computation of SlowFastCaptioner.embed_media)
    def _embed_items(self, pixel_values: torch.Tensor, layouts: Sequence[MediaLayout]) -> list[torch.Tensor]:
        dtype = self.multi_modal_projector.linear_1.weight.dtype
        pixel_values = pixel_values.to(dtype)
        features = torch.cat([vision_features(self.vision_tower, chunk, self.config.vision_feature_layer)
                              for chunk in pixel_values.split(VISION_BATCH_SIZE)])
        items, start = [], 0
        for layout in layouts:
            tokens = pool_item(features[start:start + layout.num_views], layout, self.config.pool_grid)
            items.append(self.multi_modal_projector(tokens))
            start += layout.num_views
        return items

    def _image_embeddings(self, kwargs: Mapping[str, Any]) -> list[torch.Tensor]:
        pixels = kwargs["pixel_values_images"]
        grids = _rows(kwargs["image_grid"])
        layouts = [ImageLayout(int(r), int(c), self.config.tokens_per_view, bool(p)) for r, c, p in grids]
        if isinstance(pixels, (list, tuple)):
            pixels = torch.cat(list(pixels))
        return self._embed_items(pixels, layouts)

    def _video_embeddings(self, kwargs: Mapping[str, Any]) -> list[torch.Tensor]:
        pixels = kwargs["pixel_values_videos"]
        layouts = [_video_layout(n, self.config) for n in _ints(kwargs["video_num_frames"])]
        if isinstance(pixels, (list, tuple)):
            pixels = torch.cat(list(pixels))
        return self._embed_items(pixels, layouts)

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        """One ``(num_visual_tokens, hidden)`` tensor per item, modality groups in the order vLLM gives them."""
        embeddings: list[torch.Tensor] = []
        for key in kwargs:  # kwargs keep the modalities' order
            if key == "pixel_values_images":
                embeddings += self._image_embeddings(kwargs)
            elif key == "pixel_values_videos":
                embeddings += self._video_embeddings(kwargs)
        return embeddings

    # ---- language model
    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor, intermediate_tensors=None,
                inputs_embeds: torch.Tensor | None = None, **kwargs: object) -> torch.Tensor:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights)
