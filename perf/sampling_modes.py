"""The pieces of ``perf.sampling``: its shapes, its modes (each a way of sampling whose module may not have landed:
then the mode is recorded as not available, with the reason), the stand-in text encoder, the torch-only Euler
solver used where diffusers is absent, diffusers' ``WanPipeline`` on our weights, and the toy DiT trained on planted
latents (``--train-toy``). ``perf.sampling``'s docstring says what each one is for.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wanmodel.models.dit import DiTConfig, WanDiT
from wanmodel.models.random_init import randomize_
from wanmodel.models.vae import WanVAE

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PROMPTS = ("a corgi surfing a wave at sunset", "a red fox walking through fresh snow in a quiet forest",
           "close-up of rain drops on a window, city lights", "a boat chasing dolphins in the sea")
TOY_PROMPTS = tuple(f"a {colour} scene" for colour in ("red", "yellow", "green", "cyan", "blue", "magenta"))
PROMPT_SETS = {"default": PROMPTS, "toy": TOY_PROMPTS}  # toy: the captions of ``wan demo``'s toy world
SEED = 7


@dataclass(frozen=True)
class Shape:
    name: str
    config: str
    layers: int | None
    frames: int
    height: int
    width: int
    steps: int
    vae: str  # WanVAE preset
    guidance_scale: float = 5.0
    shift: float = 5.0
    text_dim: int | None = None  # override (tiny: the tiny umT5's width)

    def dit_config(self) -> DiTConfig:
        overrides: dict[str, Any] = {} if self.text_dim is None else {"text_dim": self.text_dim}
        if self.layers is not None:
            overrides["num_layers"] = self.layers
        return DiTConfig.named(self.config, **overrides)


SHAPES = {
    "tiny": Shape("tiny", "tiny", None, 9, 32, 48, 10, "tiny", text_dim=32),
    "1.3B-few-layers": Shape("1.3B-few-layers", "1.3B", 2, 5, 64, 64, 6, "tiny"),
    "1.3B": Shape("1.3B", "1.3B", None, 81, 480, 832, 50, "wan2.1"),
}


@dataclass
class Mode:
    """One way of sampling: the DiT's dtype, a cache preset, fp8, offload, or diffusers' pipeline."""

    name: str
    dtype: str
    cache: str | None = None
    fp8: str | None = None  # quantize_linears mode: "fp8" (CUDA kernel, bf16 fallback elsewhere) or "fp8-sim"
    attention: str | None = None  # attention backend ("sage": SageAttention's 8-bit attention)
    offload: bool = False
    diffusers: bool = False
    available: bool = True
    reason: str = ""


# ------------------------------------------------------------------------------------------------ text
class HashedText:
    """A stand-in text encoder: prompt -> Gaussian [L, dim], L = 1 + its word count (<= 512), seeded by CRC32."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def encode(self, prompts: Sequence[str], device: torch.device | str | None = None) -> list[torch.Tensor]:
        out = []
        for prompt in prompts:
            generator = torch.Generator().manual_seed(zlib.crc32(prompt.encode()))
            length = min(1 + len(prompt.split()), 512)
            out.append(torch.randn(length, self.dim, generator=generator).to(device or "cpu"))
        return out


# ------------------------------------------------------------------------------------------------ solver
def install_solver() -> str:
    """'unipc' when diffusers is importable; else 'euler-torch': the settings then ask for Euler, which
    ``wanmodel.diffusion.schedulers.prepare_scheduler`` runs in torch and numpy alone (``TorchFlowEuler``)."""
    from wanmodel.diffusion.schedulers import have_diffusers

    return "unipc" if have_diffusers() else "euler-torch"


# ------------------------------------------------------------------------------------------------ modes
def _module(name: str) -> tuple[Any | None, str]:
    try:
        return importlib.import_module(name), ""
    except Exception as error:  # noqa: BLE001 - not landed yet, or a dependency missing on this machine
        return None, f"{name} not importable: {type(error).__name__}: {error}"


def cache_presets() -> tuple[list[str], str]:
    config, reason = _module("wanmodel.accel.cache_config")
    if config is None or _module("wanmodel.accel.cache")[0] is None:
        return [], reason or "wanmodel.accel.cache not importable"
    return list(config.preset_names()), ""


def modes(dtype: str, *, device: str = "cpu", reference: bool, only: Sequence[str] | None = None) -> list[Mode]:
    """Every mode of the run, the unavailable ones marked with the reason. fp8 runs the FP8 kernel on CUDA and
    ``fp8-sim`` (the quantisation error, float32 matmuls) on the CPU, where the kernel would fall back to bf16."""
    out = [Mode("plain", dtype)]
    if dtype == "fp32":
        out.append(Mode("plain-bf16", "bf16"))
    presets, reason = cache_presets()
    out += [Mode(f"cache:{name}", dtype, cache=name) for name in presets]
    if not presets:
        out.append(Mode("cache", dtype, available=False, reason=reason))
    fp8, fp8_reason = _module("wanmodel.accel.fp8")
    fp8_mode = "fp8" if device.startswith("cuda") else "fp8-sim"
    out.append(Mode(fp8_mode, "bf16", fp8=fp8_mode, available=fp8 is not None, reason=fp8_reason))
    sage = fp8 is not None and "sage" in importlib.import_module("wanmodel.models.attention").available_backends()
    out.append(Mode("sage", "bf16", attention="sage", available=sage,
                    reason="" if sage else "SageAttention not installed (or wanmodel.accel.fp8 absent)"))
    offload, offload_reason = _module("wanmodel.accel.offload")
    out.append(Mode("offload", dtype, offload=True, available=offload is not None, reason=offload_reason))
    if offload is not None and presets:
        out.append(Mode("combined-lowmem", "bf16" if device.startswith("cuda") else dtype, cache="combined" if "combined" in presets else presets[0],
                        fp8="fp8" if fp8 is not None and device.startswith("cuda") else None, offload=True))
    combine = "combined" if "combined" in presets else next((p for p in presets if p != "off"), None)
    if combine is not None:
        out.append(Mode("combined", "bf16" if fp8 is not None and device.startswith("cuda") else dtype, cache=combine,
                        fp8="fp8" if fp8 is not None and device.startswith("cuda") else None,
                        attention="sage" if sage else None))
    else:
        out.append(Mode("combined", dtype, available=False, reason="no cache presets: " + reason))
    if reference:
        have = importlib.util.find_spec("diffusers") is not None
        out.append(Mode("diffusers", dtype, diffusers=True, available=have, reason="" if have else
                        "diffusers not installed"))
    if only:
        out = [m for m in out if m.name in only or m.name == "plain"]
    return out


def prepare_dit(base: WanDiT, mode: Mode, device: str) -> torch.nn.Module:
    """A copy of ``base`` set up for ``mode`` on ``device``: dtype (``set_dtype``), FP8 linears and the attention
    kernel (``wanmodel.accel.fp8``), then sequential block offload (``wanmodel.accel.offload``: blocks stay on the
    CPU, two at a time on the device) or the whole model moved."""
    model = copy.deepcopy(base).eval()
    model.set_dtype(DTYPES[mode.dtype])
    if mode.fp8:
        importlib.import_module("wanmodel.accel.fp8").quantize_linears(model, mode.fp8)
    if mode.attention:
        importlib.import_module("wanmodel.accel.fp8").set_attention_backend(model, mode.attention)
    if mode.offload:
        importlib.import_module("wanmodel.accel.offload").enable_block_offload(model, device)
        return model
    return model.to(device)


def diffusers_pipeline(dit: WanDiT, vae: WanVAE, dtype: str, device: str, settings: Any, tmp: Path) -> Any:
    """diffusers' ``WanPipeline`` with our weights (``to_diffusers_state_dict``, ``save_vae(layout='diffusers')``)."""
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel

    from wanmodel.diffusion.schedulers import make_scheduler
    from wanmodel.models.dit_adapters import (
        config_to_diffusers,
        to_diffusers_state_dict,
    )
    from wanmodel.models.vae_adapters import save_vae

    config = config_to_diffusers(dit.config)
    config.pop("_class_name")
    transformer = WanTransformer3DModel(**config).eval()
    transformer.load_state_dict(to_diffusers_state_dict(dit.state_dict()), strict=True)
    save_vae(vae, tmp / "vae_diffusers", layout="diffusers")
    ref_vae = AutoencoderKLWan.from_pretrained(str(tmp / "vae_diffusers"), low_cpu_mem_usage=False).eval()
    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer.to(device, DTYPES[dtype]),
                       vae=ref_vae.to(device), scheduler=make_scheduler(settings.solver, settings.shift))
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------------ toy model
def train_toy(config: DiTConfig, shape: Shape, *, steps: int = 300, seed: int = 0) -> WanDiT:
    """The tiny DiT trained briefly (AdamW, flow matching) on planted latents: each prompt of ``PROMPTS`` owns one
    smooth latent clip (a random low-frequency pattern), so sampling with that prompt follows a real, learned
    trajectory rather than random weights' one. float32, CPU; ~a minute for 300 steps at the tiny shape."""
    from wanmodel.diffusion.flow_matching import flow_matching_loss
    from wanmodel.pipelines.common import latent_shape
    from wanmodel.text.umt5 import pad_embeddings

    generator = torch.Generator().manual_seed(seed)
    settings = sampling_settings(shape, shape.steps)
    c, t, h, w = latent_shape(settings)
    coarse = torch.randn(len(PROMPTS), c, t, 2, 2, generator=generator)
    clips = torch.nn.functional.interpolate(coarse, size=(t, h, w), mode="trilinear", align_corners=True)
    text = pad_embeddings(HashedText(config.text_dim).encode(PROMPTS))
    torch.manual_seed(seed)
    model = WanDiT(config)
    randomize_(model, seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(steps):
        index = torch.randint(len(PROMPTS), (4,), generator=generator)
        loss = flow_matching_loss(model, clips[index], generator=generator, context=text[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


# ------------------------------------------------------------------------------------------------ settings
def sampling_settings(shape: Shape, steps: int, have_diffusers: bool = True, **changes: Any) -> Any:
    """The shape's settings with ``changes`` (None ignored); diffusers' own step grid when diffusers is here (so its
    pipeline is an agreement check), else the torch Euler solver on the official grid."""
    from wanmodel.pipelines.common import SamplingSettings

    values = {"height": shape.height, "width": shape.width, "num_frames": shape.frames, "num_steps": steps,
              "guidance_scale": shape.guidance_scale, "shift": shape.shift, "solver": "unipc",
              "spacing": "diffusers" if have_diffusers else "official"}
    values.update({key: value for key, value in changes.items() if value is not None})
    if not have_diffusers:
        values["solver"] = "euler"
    return SamplingSettings(**values).validate()


