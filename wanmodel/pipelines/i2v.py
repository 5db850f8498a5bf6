"""Image-to-video sampling (report section 5.1): first frame, first + last frame, and video continuation.

The I2V DiT takes, besides the noisy latents, a condition ``y`` = [mask (4 channels), condition latents (16)]:
- the *condition video* has the known frames in place and zeros elsewhere ([3, F, H, W] in [-1, 1]); the VAE
  encodes it (posterior mean, normalised) into the condition latents [16, T, h, w];
- the *mask* marks known frames with 1 per pixel frame, with frame 0 repeated 4 times so F + 3 = 4T, then folded
  to [4, T, h, w] (each latent frame's channel k says whether its k-th source frame is known).
Image-to-video knows frame 0; first-last-frame knows frames 0 and F - 1; continuation knows the first K frames.
The CLIP image features of the first known frame (257 tokens) are the DiT's image context. This is the released
``WanI2V.generate`` (and ``WanFLF2V``'s mask); with the released I2V model use ``I2V_SETTINGS`` (40 steps,
shift 3 at 480p, 5 at 720p) and ``I2V_NEGATIVE_PROMPT``.
With a first-last-frame DiT (``model_type`` ``flf2v``, the released FLF2V-14B) the image context is the CLIP tokens
of both frames, first then last (2 x 257), as the released ``WanFLF2V.generate`` and diffusers'
``WanImageToVideoPipeline`` with ``last_image`` give them; its conditions must then be first-last-frame ones.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from wanmodel.models.vae import WanVAE, normalize_latents
from wanmodel.pipelines.common import (
    I2V_NEGATIVE_PROMPT,
    I2V_SETTINGS,
    GenerationResult,
    SamplingSettings,
    TextEncoder,
    denoise,
    resolve_negative_prompts,
    resolve_seeds,
    validate_prompts,
)
from wanmodel.pipelines.t2v import WanT2VPipeline, load_components

__all__ = ["FrameCondition", "ImageEncoder", "WanI2VPipeline", "i2v_size", "latent_frame_mask", "to_video_tensor"]

ImageLike = np.ndarray | torch.Tensor


class ImageEncoder(Protocol):
    """``encode(images [N, 3, H, W] in [-1, 1]) -> [N, tokens, width]`` (``ClipImageEncoder`` is one)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...


def to_video_tensor(image: ImageLike) -> torch.Tensor:
    """uint8 [H, W, 3] / [F, H, W, 3] arrays, or float tensors [3, H, W] / [3, F, H, W] in [-1, 1], ->
    float32 [3, F, H, W] in [-1, 1]."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
            raise ValueError(f"image arrays must be uint8 [H, W, 3] or [F, H, W, 3], got {image.dtype} {image.shape}")
        frames = torch.from_numpy(np.ascontiguousarray(image)).float() / 127.5 - 1.0
        frames = frames[None] if frames.ndim == 3 else frames
        return frames.permute(3, 0, 1, 2)
    if isinstance(image, torch.Tensor):
        if image.ndim not in (3, 4) or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(f"image tensors must be float [3, H, W] or [3, F, H, W] in [-1, 1], got "
                             f"{image.dtype} {tuple(image.shape)}")
        return (image[:, None] if image.ndim == 3 else image).float()
    raise ValueError(f"an image must be a uint8 numpy array or a float tensor, got {type(image).__name__}")


def _resize(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[3, F, H, W] -> [3, F, height, width] by bicubic interpolation (the official I2V resize)."""
    if frames.shape[-2:] == (height, width):
        return frames
    return F.interpolate(frames.transpose(0, 1), size=(height, width), mode="bicubic",
                         align_corners=False).transpose(0, 1)


def i2v_size(image_height: int, image_width: int, max_area: int = 480 * 832, stride: int = 8, patch: int = 2
             ) -> tuple[int, int]:
    """(height, width) of the released I2V: the image's aspect ratio at about ``max_area`` pixels, snapped down to
    multiples of ``stride * patch``."""
    aspect = image_height / image_width
    lat_h = round(math.sqrt(max_area * aspect) // stride // patch * patch)
    lat_w = round(math.sqrt(max_area / aspect) // stride // patch * patch)
    if lat_h < patch or lat_w < patch:
        raise ValueError(f"max_area {max_area} is too small for a {image_height}x{image_width} image")
    return lat_h * stride, lat_w * stride


def latent_frame_mask(known: Sequence[bool] | torch.Tensor, lat_h: int, lat_w: int, temporal: int = 4
                      ) -> torch.Tensor:
    """Per-pixel-frame known flags [F] (F = 1 + 4k) -> the DiT's mask channels [4, T, lat_h, lat_w]."""
    known = torch.as_tensor(known, dtype=torch.float32).flatten()
    if (known.numel() - 1) % temporal:
        raise ValueError(f"the frame mask needs 1 + {temporal}k frames, got {known.numel()}")
    folded = torch.cat([known[:1].repeat(temporal), known[1:]])
    folded = folded.view(-1, temporal).transpose(0, 1)  # [4, T]
    return folded[:, :, None, None].expand(-1, -1, lat_h, lat_w).contiguous()


@dataclass
class FrameCondition:
    """Known frames of one video to generate: ``frames`` [3, K, H, W] in [-1, 1] placed at ``indices`` (K of
    them, in the output's frame numbering; negative counts from the end)."""

    frames: torch.Tensor
    indices: list[int]

    @classmethod
    def first_frame(cls, image: ImageLike) -> FrameCondition:
        """Image-to-video: ``image`` is frame 0."""
        return cls(to_video_tensor(image)[:, :1], [0])

    @classmethod
    def first_last(cls, first: ImageLike, last: ImageLike) -> FrameCondition:
        """First-last-frame-to-video: ``first`` is frame 0 and ``last`` the final frame."""
        first_t, last_t = to_video_tensor(first)[:, :1], to_video_tensor(last)[:, :1]
        if last_t.shape[-2:] != first_t.shape[-2:]:
            last_t = _resize(last_t, *first_t.shape[-2:])
        return cls(torch.cat([first_t, last_t], dim=1), [0, -1])

    @classmethod
    def continuation(cls, frames: ImageLike) -> FrameCondition:
        """Video continuation: ``frames`` (uint8 [K, H, W, 3] or [3, K, H, W]) are the first K output frames."""
        video = to_video_tensor(frames)
        return cls(video, list(range(video.shape[1])))

    def build(self, num_frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(condition video [3, num_frames, height, width] with zeros where unknown, known flags [num_frames])."""
        if len(self.indices) != self.frames.shape[1]:
            raise ValueError(f"{self.frames.shape[1]} condition frames but {len(self.indices)} indices")
        frames = _resize(self.frames, height, width)
        video = torch.zeros(3, num_frames, height, width)
        known = torch.zeros(num_frames, dtype=torch.bool)
        for column, index in enumerate(self.indices):
            position = index + num_frames if index < 0 else index
            if not 0 <= position < num_frames:
                raise ValueError(f"condition frame index {index} is outside a {num_frames}-frame video")
            video[:, position] = frames[:, column]
            known[position] = True
        return video, known


class WanI2VPipeline(WanT2VPipeline):
    """Image(s) + text -> video with an i2v (or flf2v) Wan DiT, the Wan-VAE, a text encoder and a CLIP image
    encoder."""

    task = "i2v"
    default_negative_prompt = I2V_NEGATIVE_PROMPT
    default_settings = I2V_SETTINGS

    def __init__(self, dit: torch.nn.Module, vae: WanVAE, text_encoder: TextEncoder, image_encoder: ImageEncoder,
                 **kwargs: Any) -> None:
        if getattr(getattr(dit, "config", None), "model_type", None) == "flf2v":
            self.task = "flf2v"  # the DiT model_type this pipeline drives: the first-last-frame one
        super().__init__(dit, vae, text_encoder, **kwargs)
        self.image_encoder = image_encoder

    @property
    def first_last_frame(self) -> bool:
        """True with a first-last-frame (flf2v) DiT: the image context is both frames' CLIP tokens."""
        return self.task == "flf2v"

    @classmethod
    def from_pretrained(cls, dit: str | Path, vae: str | Path, text_encoder: str | Path, *,
                        image_encoder: str | Path, tokenizer: str | Path | None = None,
                        clip_model: str | dict | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, text_device: str | torch.device | None = None,
                        **kwargs: Any) -> WanI2VPipeline:
        """Load every component from local paths; ``image_encoder`` is an open_clip or official CLIP checkpoint."""
        from wanmodel.text.clip_image import ClipImageEncoder

        dit_, vae_, text = load_components(dit, vae, text_encoder, tokenizer=tokenizer, device=device, dtype=dtype,
                                           text_device=text_device)
        clip = ClipImageEncoder.from_pretrained(image_encoder, model=clip_model, device=device)
        return cls(dit_, vae_, text, clip, device=device, **kwargs)

    def condition_latents(self, conditions: Sequence[FrameCondition], settings: SamplingSettings) -> torch.Tensor:
        """y [B, 4 + 16, T, h, w]: mask channels and normalised VAE latents of each condition video."""
        lat_h, lat_w = settings.height // 8, settings.width // 8
        vae_device = next(self.vae.parameters()).device
        vae_dtype = next(self.vae.parameters()).dtype
        ys = []
        for cond in conditions:
            video, known = cond.build(settings.num_frames, settings.height, settings.width)
            with torch.no_grad():
                latents = self.vae.encode(video[None].to(device=vae_device, dtype=vae_dtype)).mean
            latents = normalize_latents(latents.float(), self.vae.config.latent_stats)[0].to(self.device)
            ys.append(torch.cat([latent_frame_mask(known, lat_h, lat_w).to(self.device), latents]))
        return torch.stack(ys)

    def image_features(self, conditions: Sequence[FrameCondition]) -> torch.Tensor:
        """CLIP tokens [B, N, D] of each condition's first known frame (at its own resolution); with an flf2v DiT
        [B, 2N, D]: the first frame's tokens, then the last frame's (each condition must know exactly 2 frames)."""
        if not self.first_last_frame:
            features = [self.image_encoder.encode(cond.frames[:, 0][None].to(self.device)) for cond in conditions]
            return torch.cat(features).to(self.device)
        features = []
        for number, cond in enumerate(conditions):
            if cond.frames.shape[1] != 2:
                raise ValueError(f"an flf2v DiT needs first-last-frame conditions (2 known frames; pass "
                                 f"last_images), condition {number} has {cond.frames.shape[1]}")
            pair = self.image_encoder.encode(cond.frames.transpose(0, 1).to(self.device))  # [2, N, D]
            features.append(pair.reshape(1, -1, pair.shape[-1]))
        return torch.cat(features).to(self.device)

    def generate(self, prompts: str | Sequence[str], images: ImageLike | FrameCondition |
                 Sequence[ImageLike | FrameCondition] | None = None, *, last_images: Sequence[ImageLike] | None = None,
                 seed: int | Sequence[int] | None = 0, negative_prompt: str | Sequence[str] | None = None,
                 latents: torch.Tensor | None = None, max_area: int | None = None,
                 clip_features: torch.Tensor | None = None, keep_decoded: bool = False,
                 progress: Callable[[int, int], None] | None = None, cache: Any = None,
                 **settings: Any) -> GenerationResult:
        """Videos for ``prompts`` conditioned on ``images`` (one per prompt: an image -> first frame, or a
        ``FrameCondition``); ``last_images`` turns images into first-last-frame conditions.

        ``max_area``: size the video like the released I2V (the first image's aspect ratio at about this many
        pixels) instead of ``height``/``width``. ``clip_features`` [B, N, D]: use these instead of encoding
        (flf2v DiT: [B, 2N, D], first frame's tokens then last frame's).
        Other arguments as ``WanT2VPipeline.generate``.
        """
        prompts_ = validate_prompts(prompts)
        if images is None:
            raise ValueError("image-to-video needs one condition image per prompt")
        items = [images] if isinstance(images, (np.ndarray, torch.Tensor, FrameCondition)) else list(images)
        if len(items) != len(prompts_):
            raise ValueError(f"got {len(items)} condition images for {len(prompts_)} prompts")
        if last_images is not None:
            if len(last_images) != len(items):
                raise ValueError(f"got {len(last_images)} last images for {len(items)} first images")
            items = [FrameCondition.first_last(first, last) for first, last in zip(items, last_images)]
        conditions = [item if isinstance(item, FrameCondition) else FrameCondition.first_frame(item)
                      for item in items]
        if max_area is not None:
            settings["height"], settings["width"] = i2v_size(*conditions[0].frames.shape[-2:], max_area=max_area)
        settings_ = self.settings(**settings)
        _, used = self.prepare_prompts(prompts_)
        seeds = resolve_seeds(seed, len(prompts_))
        negative = resolve_negative_prompts(negative_prompt, len(prompts_), self.negative_prompt)
        noise = self._noise(latents, seeds, settings_)
        with self.stage("vae"):
            y = self.condition_latents(conditions, settings_)
        if clip_features is None:
            with self.stage("image_encoder"):
                clip = self.image_features(conditions)
        elif clip_features.ndim != 3 or clip_features.shape[0] != len(prompts_):
            raise ValueError(f"clip_features must be [B = {len(prompts_)}, N, D], got {tuple(clip_features.shape)}")
        else:
            clip = clip_features.to(self.device)
        with self.stage("text_encoder"):
            context, negative_context = self.encode_text(used, negative if settings_.guidance_scale > 1 else None)
        with self.stage("dit"):
            result = denoise(self.dit, noise, context, negative_context, settings_, clip_fea=clip, y=y,
                             progress=progress, cache=cache)
        with self.stage("vae"):
            return self._finish(result, prompts_, used, seeds, settings_, keep_decoded)

    __call__ = generate
