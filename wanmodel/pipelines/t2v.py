"""Text-to-video and text-to-image sampling with a Wan DiT (report sections 4.2 and 4.4).

    pipeline = WanT2VPipeline.from_pretrained(dit="ckpt/dit", vae="Wan2.1_VAE.pth", text_encoder="ckpt/umt5",
                                              device="cuda", dtype=torch.bfloat16)
    result = pipeline.generate(["a corgi surfing a wave"], seed=0, num_frames=81, height=480, width=832)
    write_mp4("corgi.mp4", result.videos[0], fps=16)
    images = pipeline.generate_images(["a red fox in snow"], seed=1, height=512, width=512)

The steps are those of the released ``WanT2V.generate``: optional prompt rewriting, umT5 embeddings of the prompts
and negative prompts, seeded Gaussian latents, the UniPC (or Euler) flow solver with classifier-free guidance,
VAE decoding. Text-to-image is the same model with one frame (the report trains images and videos jointly).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wanmodel.models.vae import WanVAE
from wanmodel.pipelines.common import (
    DEFAULT_NEGATIVE_PROMPT,
    GenerationResult,
    SamplingSettings,
    TextEncoder,
    decode_latents,
    denoise,
    initial_noise,
    latent_shape,
    resolve_negative_prompts,
    resolve_seeds,
    to_uint8_frames,
    validate_prompts,
)
from wanmodel.text.rewrite import PromptRewriter

__all__ = ["WanT2VPipeline", "load_components"]


def load_components(dit: str | Path, vae: str | Path, text_encoder: str | Path, *,
                    tokenizer: str | Path | None = None, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32, text_device: str | torch.device | None = None,
                    text_dtype: torch.dtype | None = None) -> tuple[torch.nn.Module, WanVAE, TextEncoder]:
    """DiT, VAE and umT5 encoder from local paths (each loader names the file it expected when one is missing).

    The VAE runs in float32 (its decode is cheap next to the DiT and bf16 costs detail); the DiT in ``dtype``
    with its time/modulation parameters kept float32; the text encoder in ``text_dtype`` (default ``dtype``) on
    ``text_device`` (default ``device``; ``"cpu"`` keeps the 11 GB bf16 XXL encoder off the GPU).
    """
    from wanmodel.models.dit_adapters import load_dit
    from wanmodel.models.vae_adapters import load_vae
    from wanmodel.text.umt5 import UMT5TextEncoder

    for name, path in (("DiT", dit), ("VAE", vae), ("umT5 text encoder", text_encoder)):
        if not Path(path).expanduser().exists():
            raise FileNotFoundError(f"{name} weights not found at {path}")
    model = load_dit(dit, device=device, dtype=dtype)
    # umT5 in the DiT's dtype unless told otherwise (the release runs it in bf16, on the CPU too with --t5_cpu);
    # prompts cut to the DiT's text length (512 in the releases, the umT5 default; shorter for a DiT trained so)
    encoder = UMT5TextEncoder(text_encoder, tokenizer, text_len=model.config.text_len, device=text_device or device,
                              dtype=text_dtype or dtype)
    return model.eval(), load_vae(vae, device=device, dtype=torch.float32), encoder


class WanT2VPipeline:
    """Text -> video (and one-frame images) with a t2v Wan DiT, a Wan-VAE and a text encoder."""

    task = "t2v"  # the DiT model_type this pipeline drives
    default_negative_prompt = DEFAULT_NEGATIVE_PROMPT
    default_settings = SamplingSettings()
    # Models (attribute names) that wait on the CPU and are on ``device`` only for their stage (model offload,
    # set by ``wanmodel.accel.options.apply_speed_options``).
    stage_offload: frozenset[str] = frozenset()

    def __init__(self, dit: torch.nn.Module, vae: WanVAE, text_encoder: TextEncoder, *,
                 device: str | torch.device = "cpu", rewriter: PromptRewriter | None = None,
                 negative_prompt: str | None = None, defaults: SamplingSettings | None = None) -> None:
        config = getattr(dit, "config", None)
        if config is not None and getattr(config, "model_type", self.task) != self.task:
            raise ValueError(f"{type(self).__name__} needs a DiT with model_type {self.task!r}, got "
                             f"{config.model_type!r}")
        self.dit = dit.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.device = torch.device(device)
        self.rewriter = rewriter
        self.negative_prompt = self.default_negative_prompt if negative_prompt is None else negative_prompt
        self.defaults = defaults or self.default_settings

    @classmethod
    def from_pretrained(cls, dit: str | Path, vae: str | Path, text_encoder: str | Path, *,
                        tokenizer: str | Path | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, text_device: str | torch.device | None = None,
                        **kwargs: Any) -> WanT2VPipeline:
        """Load every component from local paths (see ``load_components``)."""
        components = load_components(dit, vae, text_encoder, tokenizer=tokenizer, device=device, dtype=dtype,
                                     text_device=text_device)
        return cls(*components, device=device, **kwargs)

    # ------------------------------------------------------------------------------------------------ steps
    def stage(self, name: str) -> contextlib.AbstractContextManager[Any]:
        """The context the stage that runs model ``name`` (``text_encoder``, ``image_encoder``, ``dit``, ``vae``)
        runs in: on ``device`` for the stage alone when the model is in ``stage_offload``, else as it is."""
        if name not in self.stage_offload:
            return contextlib.nullcontext()
        from wanmodel.accel.offload import on_device

        return on_device(getattr(self, name), self.device)

    def settings(self, **overrides: Any) -> SamplingSettings:
        """The pipeline's defaults with ``overrides``, validated (ValueError naming the bad field)."""
        return self.defaults.updated(**overrides).validate()

    def prepare_prompts(self, prompts: str | Sequence[str]) -> tuple[list[str], list[str]]:
        """(prompts as given, prompts the model will see: rewritten when a rewriter is set)."""
        prompts = validate_prompts(prompts)
        used = self.rewriter.rewrite(prompts) if self.rewriter is not None else list(prompts)
        if len(used) != len(prompts):
            raise RuntimeError(f"the prompt rewriter returned {len(used)} prompts for {len(prompts)}")
        return prompts, used

    def encode_text(self, prompts: Sequence[str], negative: Sequence[str] | None
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Per-prompt embeddings for prompts and (when guiding) negative prompts, in one encoder call."""
        texts = list(prompts) + (list(negative) if negative is not None else [])
        embeddings = self.text_encoder.encode(texts, device=self.device)
        return embeddings[: len(prompts)], (embeddings[len(prompts):] if negative is not None else None)

    def _noise(self, latents: torch.Tensor | None, seeds: list[int], settings: SamplingSettings) -> torch.Tensor:
        shape = latent_shape(settings, channels=self.vae.config.z_dim)
        if latents is None:
            return initial_noise(shape, seeds, self.device)
        if tuple(latents.shape) != (len(seeds), *shape):
            raise ValueError(f"latents must have shape {(len(seeds), *shape)} for these settings, "
                             f"got {tuple(latents.shape)}")
        return latents.to(device=self.device, dtype=torch.float32)

    def _finish(self, latents: torch.Tensor, prompts: list[str], used: list[str], seeds: list[int],
                settings: SamplingSettings, keep_decoded: bool) -> GenerationResult:
        decoded = decode_latents(self.vae, latents)
        return GenerationResult(videos=to_uint8_frames(decoded), prompts=prompts, used_prompts=used, seeds=seeds,
                                settings=settings, latents=latents.float().cpu(),
                                decoded=decoded if keep_decoded else None)

    # ---------------------------------------------------------------------------------------------- public
    def generate(self, prompts: str | Sequence[str], *, seed: int | Sequence[int] | None = 0,
                 negative_prompt: str | Sequence[str] | None = None, latents: torch.Tensor | None = None,
                 keep_decoded: bool = False, progress: Callable[[int, int], None] | None = None,
                 cache: Any = None, **settings: Any) -> GenerationResult:
        """Videos for ``prompts`` (one per prompt, all in one batch).

        ``seed``: one int for every prompt, one per prompt, or None (random, reported in the result).
        ``negative_prompt``: default the released Chinese negative prompt; "" for none. ``latents``: start from
        these [B, 16, T, h, w] instead of seeded noise. ``settings``: any ``SamplingSettings`` field (height,
        width, num_frames, num_steps, guidance_scale, shift, solver, spacing, fps). ``keep_decoded``: also return
        the float video (before uint8 rounding). ``cache``: a diffusion-cache preset name (``off``, ``attention``,
        ``cfg``, ``magcache-fast``, ``magcache-slow``, ``teacache``, ``combined``), ``CacheConfig`` or
        ``StepCache`` (``wanmodel.accel.cache``); None samples exactly.
        """
        settings_ = self.settings(**settings)
        prompts_, used = self.prepare_prompts(prompts)
        seeds = resolve_seeds(seed, len(prompts_))
        negative = resolve_negative_prompts(negative_prompt, len(prompts_), self.negative_prompt)
        noise = self._noise(latents, seeds, settings_)
        with self.stage("text_encoder"):
            context, negative_context = self.encode_text(used, negative if settings_.guidance_scale > 1 else None)
        with self.stage("dit"):
            result = denoise(self.dit, noise, context, negative_context, settings_, progress=progress, cache=cache)
        with self.stage("vae"):
            return self._finish(result, prompts_, used, seeds, settings_, keep_decoded)

    __call__ = generate

    def generate_images(self, prompts: str | Sequence[str], **kwargs: Any) -> list[np.ndarray]:
        """Text-to-image: ``generate`` with one frame; returns uint8 [H, W, 3] per prompt."""
        if kwargs.get("num_frames", 1) != 1:
            raise ValueError("generate_images makes single frames; use generate for videos")
        kwargs["num_frames"] = 1
        return self.generate(prompts, **kwargs).images
