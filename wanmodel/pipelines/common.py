"""What the text-to-video and image-to-video samplers share: settings and their validation, seeded noise, the
denoising loop with classifier-free guidance, VAE decoding to uint8 frames, and mp4 / image writing.

Conventions (the released pipelines'): latents are normalised (``normalize_latents``) [B, 16, 1 + (F - 1)/4, H/8,
W/8]; the DiT gets ``timestep = scheduler.timesteps[i]`` and returns a velocity; guidance is
``uncond + g * (cond - uncond)``, with the conditional and unconditional passes batched into one DiT call.
Noise for each prompt comes from its own CPU ``torch.Generator`` seeded with that prompt's seed, so a (prompt, seed)
gives the same video whatever else is in the batch and on whatever device the DiT runs.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from wanmodel.diffusion.schedulers import SOLVERS, SPACINGS, prepare_scheduler
from wanmodel.models.vae import WanVAE, denormalize_latents
from wanmodel.text.umt5 import pad_embeddings

__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "I2V_NEGATIVE_PROMPT",
    "GenerationResult",
    "SamplingSettings",
    "TextEncoder",
    "decode_latents",
    "denoise",
    "initial_noise",
    "latent_shape",
    "mp4_bytes",
    "resolve_negative_prompts",
    "resolve_seeds",
    "to_uint8_frames",
    "validate_prompts",
    "write_image",
    "write_mp4",
]

# The released default negative prompt (official ``wan/configs/shared_config.py``): garish colours, overexposure,
# static, blurry details, subtitles, worst/low quality, JPEG artefacts, deformed hands and faces, fused fingers,
# still frames, cluttered background, three legs, crowded background, walking backwards.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
# I2V adds "camera shake" in front (official ``wan/configs/wan_i2v_14B.py``).
I2V_NEGATIVE_PROMPT = "镜头晃动，" + DEFAULT_NEGATIVE_PROMPT

MAX_SEED = 2**63 - 1


@runtime_checkable
class TextEncoder(Protocol):
    """What the pipelines call (``UMT5TextEncoder`` is one): per-prompt embeddings [L_i, text_dim], cut to each
    prompt's length."""

    def encode(self, prompts: Sequence[str], device: torch.device | str | None = None) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class SamplingSettings:
    """Every knob of one sampling run. Defaults are the released T2V ones (480p, 81 frames, 50 UniPC steps,
    guidance 5, shift 5); ``I2V_SETTINGS`` has the released 480p I2V ones (40 steps, shift 3)."""

    height: int = 480
    width: int = 832
    num_frames: int = 81
    num_steps: int = 50
    guidance_scale: float = 5.0
    shift: float = 5.0
    solver: str = "unipc"
    spacing: str = "official"
    fps: int = 16

    def validate(self, spatial_multiple: int = 16, temporal_factor: int = 4) -> SamplingSettings:
        """Raise ValueError naming the first bad field; returns self."""
        def positive_int(name: str) -> int:
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            return int(value)

        frames = positive_int("num_frames")
        if (frames - 1) % temporal_factor:
            lower = 1 + (frames - 1) // temporal_factor * temporal_factor
            raise ValueError(f"num_frames must be 1 + {temporal_factor}k (1, 5, 9, ..., 81), got {frames}; "
                             f"use {lower} or {lower + temporal_factor}")
        for name in ("height", "width"):
            if positive_int(name) % spatial_multiple:
                raise ValueError(f"{name} must be a multiple of {spatial_multiple} (VAE stride 8 x patch 2), "
                                 f"got {getattr(self, name)}")
        positive_int("num_steps")
        positive_int("fps")
        if not isinstance(self.guidance_scale, (int, float)) or not self.guidance_scale >= 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 disables classifier-free guidance), "
                             f"got {self.guidance_scale!r}")
        if not isinstance(self.shift, (int, float)) or not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.spacing not in SPACINGS:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {self.spacing!r}")
        return self

    def updated(self, **changes: Any) -> SamplingSettings:
        """A copy with ``changes`` (None values ignored); an unknown name is a ValueError listing the known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown sampling setting(s) {unknown}; known: {sorted(known)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


I2V_SETTINGS = SamplingSettings(num_steps=40, shift=3.0)


@dataclass
class GenerationResult:
    """Output of one ``generate`` call, one entry per prompt."""

    videos: list[np.ndarray]  # uint8 [F, H, W, 3]
    prompts: list[str]  # as given
    used_prompts: list[str]  # after rewriting (== prompts when rewriting is off)
    seeds: list[int]
    settings: SamplingSettings
    latents: torch.Tensor  # final normalised latents [B, 16, T, h, w] (float32, CPU)
    decoded: torch.Tensor | None = field(default=None, repr=False)  # float video [B, 3, F, H, W] in [-1, 1]

    @property
    def images(self) -> list[np.ndarray]:
        """First frame of each video, uint8 [H, W, 3] (text-to-image results)."""
        return [video[0] for video in self.videos]


# ------------------------------------------------------------------------------------------- validation
def validate_prompts(prompts: str | Sequence[str], what: str = "prompt") -> list[str]:
    """One string or a non-empty list of non-empty strings -> list."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError(f"need at least one {what}; got an empty list")
    out = []
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"{what} {index} must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError(f"{what} {index} is empty")
        out.append(prompt)
    return out


def resolve_seeds(seed: int | Sequence[int] | None, count: int) -> list[int]:
    """One seed per prompt: a single int is used for every prompt (each prompt gets its own generator), a list
    must have one entry per prompt, None draws a random seed per prompt (returned, so the run is repeatable)."""
    if seed is None:
        return [int.from_bytes(os.urandom(8), "little") & MAX_SEED for _ in range(count)]
    seeds = [seed] * count if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else list(seed)
    if len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for {count} prompts")
    for value in seeds:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
            raise ValueError(f"seeds must be integers in [0, 2**63 - 1], got {value!r}")
    return [int(s) for s in seeds]


def resolve_negative_prompts(negative: str | Sequence[str] | None, count: int, default: str) -> list[str]:
    """One negative prompt per prompt (None: ``default``; "" is allowed and means an empty negative prompt)."""
    if negative is None:
        return [default] * count
    if isinstance(negative, str):
        return [negative] * count
    negative = list(negative)
    if len(negative) != count or not all(isinstance(n, str) for n in negative):
        raise ValueError(f"need one negative prompt string per prompt ({count}), got {len(negative)}")
    return negative


# ------------------------------------------------------------------------------------------- sampling
def latent_shape(settings: SamplingSettings, channels: int = 16, temporal: int = 4, spatial: int = 8
                 ) -> tuple[int, int, int, int]:
    """(C, T, h, w) of one sample's latents."""
    return (channels, (settings.num_frames - 1) // temporal + 1, settings.height // spatial,
            settings.width // spatial)


def initial_noise(shape: Sequence[int], seeds: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """[len(seeds), *shape] float32 Gaussian noise, sample i from a CPU generator seeded with seeds[i]."""
    samples = [torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(s), dtype=torch.float32)
               for s in seeds]
    return torch.stack(samples).to(device)


def denoise(
    dit: torch.nn.Module,
    latents: torch.Tensor,
    context: Sequence[torch.Tensor],
    negative_context: Sequence[torch.Tensor] | None,
    settings: SamplingSettings,
    *,
    clip_fea: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    dit_dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
    cache: Any = None,
) -> torch.Tensor:
    """Run the solver from ``latents`` (the noise, float32 [B, 16, T, h, w]) to the clean latents.

    ``context`` / ``negative_context``: per-sample text embeddings [L_i, D]; with ``guidance_scale > 1`` both
    passes go through the DiT as one batch of 2B. ``clip_fea`` [B, N, D_img] and ``y`` [B, 20, T, h, w] are the
    I2V conditions (shared by both passes). Scheduler arithmetic stays float32; the DiT runs in ``dit_dtype``.
    ``cache``: a diffusion-cache preset name, ``CacheConfig`` or ``StepCache`` (``wanmodel.accel.cache``) that
    decides per step what the DiT computes; None runs every pass of every step.
    """
    batch = latents.shape[0]
    guided = settings.guidance_scale > 1.0
    if guided and negative_context is None:
        raise ValueError("guidance_scale > 1 needs negative (unconditional) context")
    device = latents.device
    if dit_dtype is None:  # the dtype of the DiT's matmuls (its time MLP may stay float32)
        weight = getattr(getattr(dit, "patch_embedding", None), "weight", None)
        dit_dtype = weight.dtype if weight is not None else next(dit.parameters()).dtype
    texts = list(context) + (list(negative_context) if guided else [])
    text = pad_embeddings([t.to(device) for t in texts]).to(dit_dtype)
    extra: dict[str, torch.Tensor] = {}
    if clip_fea is not None:
        extra["clip_fea"] = torch.cat([clip_fea, clip_fea]) if guided else clip_fea
    if y is not None:
        extra["y"] = torch.cat([y, y]) if guided else y
    extra = {k: v.to(device=device, dtype=dit_dtype) for k, v in extra.items()}
    scheduler = prepare_scheduler(settings.solver, settings.num_steps, settings.shift, spacing=settings.spacing,
                                  device=device)
    latents = latents.float()
    if cache is not None:
        return _denoise_cached(cache, dit, latents, text, extra, settings, scheduler, dit_dtype, progress)
    with torch.no_grad():
        for index, t in enumerate(scheduler.timesteps):
            model_input = latents.to(dit_dtype)
            if guided:
                model_input = torch.cat([model_input, model_input])
            timestep = t.to(device=device, dtype=torch.float32).expand(model_input.shape[0])
            velocity = dit(model_input, timestep, text, **extra).float()
            if guided:
                cond, uncond = velocity[:batch], velocity[batch:]
                velocity = uncond + settings.guidance_scale * (cond - uncond)
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
            if progress is not None:
                progress(index + 1, len(scheduler.timesteps))
    return latents


def _denoise_cached(cache: Any, dit: torch.nn.Module, latents: torch.Tensor, text: torch.Tensor,
                    extra: dict[str, torch.Tensor], settings: SamplingSettings, scheduler: Any,
                    dit_dtype: torch.dtype, progress: Callable[[int, int], None] | None) -> torch.Tensor:
    """``denoise``'s loop with a ``StepCache`` choosing each step's guided velocity."""
    from wanmodel.accel.cache import DiTPasses, build_cache

    step_cache = build_cache(cache)
    runner = DiTPasses(dit, text, extra, latents.shape[0], settings.guidance_scale, dit_dtype)
    total = len(scheduler.timesteps)
    step_cache.begin(runner, total)
    try:
        with torch.no_grad():
            for index, t in enumerate(scheduler.timesteps):
                velocity = step_cache.velocity(index, t, latents)
                latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
                if progress is not None:
                    progress(index + 1, total)
    finally:
        step_cache.end()
    return latents


def decode_latents(vae: WanVAE, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> video [B, 3, F, H, W] in [-1, 1] (float32), decoded one sample at a time."""
    vae_dtype = next(vae.parameters()).dtype
    vae_device = next(vae.parameters()).device
    videos = []
    with torch.no_grad():
        for sample in latents:
            raw = denormalize_latents(sample[None].to(device=vae_device, dtype=torch.float32), vae.config.latent_stats)
            videos.append(vae.decode(raw.to(vae_dtype), clamp=True).float().cpu())
    return torch.cat(videos)


def to_uint8_frames(video: torch.Tensor) -> list[np.ndarray]:
    """[B, 3, F, H, W] in [-1, 1] -> list of uint8 [F, H, W, 3]."""
    pixels = ((video.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return [sample.permute(1, 2, 3, 0).contiguous().numpy() for sample in pixels.cpu()]


# ------------------------------------------------------------------------------------------------ writing
def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 16) -> Path:
    """uint8 [F, H, W, 3] -> H.264 mp4 at ``fps`` (the VAE CLI's writer)."""
    from wanmodel.cli_vae import write_video

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames [F, H, W, 3], got {frames.dtype} {frames.shape}")
    write_video(path, frames, Fraction(fps).limit_denominator(1001))
    return Path(path)


def mp4_bytes(frames: np.ndarray, fps: float = 16) -> bytes:
    """The mp4 of ``write_mp4`` as bytes (for the ``samples`` table)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mp4(Path(tmp) / "sample.mp4", frames, fps)
        return path.read_bytes()


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """uint8 [H, W, 3] RGB -> PNG/JPEG by extension."""
    import cv2

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
        raise ValueError(f"could not write image {path} (unknown extension?)")
    return Path(path)
