"""Wan-VAE checkpoint layouts: ours, the official release, diffusers ``AutoencoderKLWan``; save and load.

Our module names are the official ones, so the official layout (``Wan2.1_VAE.pth``) *is* our state dict. The
diffusers layout renames and regroups modules. ``diffusers_key`` is the one key table (ours -> diffusers);
``from_diffusers`` uses its inverse, derived over every key of the model's shape (``checkpoint.invert_keys``):

    official / ours                                   diffusers
    conv1, conv2                                      quant_conv, post_quant_conv
    {encoder,decoder}.conv1                           {encoder,decoder}.conv_in
    {enc,dec}.middle.{0,1,2}                          {enc,dec}.mid_block.{resnets.0, attentions.0, resnets.1}
    {enc,dec}.head.{0,2}                              {enc,dec}.{norm_out, conv_out}
    encoder.downsamples.N                             encoder.down_blocks.N            (same flat order)
    decoder.upsamples.N  (flat: per stage            decoder.up_blocks.S.resnets.J /
        num_res_blocks + 1 blocks, then a Resample)       decoder.up_blocks.S.upsamplers.0
    residual.{0,2,3,6}, shortcut  (in a block)        norm1, conv1, norm2, conv2, conv_shortcut
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .checkpoint import (
    UnknownKeyError,
    cpu_state_dict,
    invert_keys,
    load_weights,
    read_config,
    read_state_dict,
    rename_keys,
    require_weight_files,
    write_config,
    write_weights,
)
from .vae import VAEConfig, WanVAE

__all__ = [
    "DIFFUSERS_CONFIG",
    "DIFFUSERS_WEIGHTS",
    "OUR_CONFIG",
    "OUR_WEIGHTS",
    "config_from_diffusers",
    "config_to_diffusers",
    "diffusers_key",
    "from_diffusers",
    "from_official",
    "infer_config",
    "load_vae",
    "save_vae",
    "to_diffusers",
    "to_official",
]

OUR_WEIGHTS = "model.safetensors"
OUR_CONFIG = "config.json"
MODEL_TYPE = "wan-vae"
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
DIFFUSERS_CONFIG = "config.json"
DIFFUSERS_CLASS = "AutoencoderKLWan"

_RESBLOCK_TO_DIFFUSERS = {"residual.0.": "norm1.", "residual.2.": "conv1.", "residual.3.": "norm2.",
                          "residual.6.": "conv2.", "shortcut.": "conv_shortcut."}
_MIDDLE_TO_DIFFUSERS = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}
_HEAD_TO_DIFFUSERS = {"0": "norm_out", "2": "conv_out"}
_TOP_TO_DIFFUSERS = {"conv1": "quant_conv", "conv2": "post_quant_conv"}


def _rename_prefix(rest: str, table: Mapping[str, str], key: str) -> str:
    for old, new in table.items():
        if rest.startswith(old):
            return new + rest[len(old):]
    raise UnknownKeyError(key)


def _resblock_or_resample(rest: str, table: Mapping[str, str]) -> str:
    """Inside a down/up block: rename residual-block parts; Resample parts (resample.*, time_conv.*) keep names."""
    if rest.startswith(("resample.", "time_conv.")):
        return rest
    return _rename_prefix(rest, table, rest)


def diffusers_key(key: str, num_res_blocks: int) -> str:
    """One official/our key -> its diffusers name."""
    top, _, rest = key.partition(".")
    if top in _TOP_TO_DIFFUSERS:
        return f"{_TOP_TO_DIFFUSERS[top]}.{rest}"
    if top not in ("encoder", "decoder"):
        raise UnknownKeyError(key)
    part, _, rest = rest.partition(".")
    try:
        if part == "conv1":
            return f"{top}.conv_in.{rest}"
        if part == "head":
            index, _, rest = rest.partition(".")
            return f"{top}.{_HEAD_TO_DIFFUSERS[index]}.{rest}"
        if part == "middle":
            index, _, rest = rest.partition(".")
            inner = rest if index == "1" else _rename_prefix(rest, _RESBLOCK_TO_DIFFUSERS, key)
            return f"{top}.mid_block.{_MIDDLE_TO_DIFFUSERS[index]}.{inner}"
        if part == "downsamples" and top == "encoder":
            index, _, rest = rest.partition(".")
            return f"encoder.down_blocks.{int(index)}.{_resblock_or_resample(rest, _RESBLOCK_TO_DIFFUSERS)}"
        if part == "upsamples" and top == "decoder":
            index, _, rest = rest.partition(".")
            stage, within = divmod(int(index), num_res_blocks + 2)
            if within <= num_res_blocks:
                return f"decoder.up_blocks.{stage}.resnets.{within}.{_rename_prefix(rest, _RESBLOCK_TO_DIFFUSERS, key)}"
            return f"decoder.up_blocks.{stage}.upsamplers.0.{rest}"
    except (KeyError, ValueError):
        raise UnknownKeyError(key) from None
    raise UnknownKeyError(key)


def _our_keys(config: VAEConfig) -> tuple[str, ...]:
    """Every key of a Wan-VAE of this shape (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        return tuple(WanVAE(config).state_dict())


@functools.lru_cache(maxsize=8)
def _official_key_for(config: VAEConfig) -> Callable[[str], str]:
    """diffusers key -> official/our key: ``diffusers_key`` inverted over every key of this shape."""
    return invert_keys(_our_keys(config), lambda key: diffusers_key(key, config.num_res_blocks))


def to_diffusers(state_dict: Mapping[str, torch.Tensor], config: VAEConfig) -> dict[str, torch.Tensor]:
    """Our (= official) state dict -> diffusers ``AutoencoderKLWan`` keys (same tensors)."""
    return rename_keys(state_dict, lambda key: diffusers_key(key, config.num_res_blocks), "Wan-VAE")


def from_diffusers(state_dict: Mapping[str, torch.Tensor], config: VAEConfig | None = None
                   ) -> dict[str, torch.Tensor]:
    """Diffusers ``AutoencoderKLWan`` state dict -> ours (same tensors), by the inverse of ``to_diffusers``'s key
    table over the keys of ``config``'s shape (read off the weights when not given)."""
    config = config or infer_config(state_dict, layout="diffusers")
    return rename_keys(state_dict, _official_key_for(config), "diffusers Wan-VAE")


def to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ours -> official release layout: the identity (module names are kept as released)."""
    return dict(state_dict)


def from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official release layout -> ours: the identity."""
    return dict(state_dict)


def is_diffusers_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith(("quant_conv.", "post_quant_conv.", "encoder.conv_in.")) for key in state_dict)


# ------------------------------------------------------------------------------------------------- configs
def infer_config(state_dict: Mapping[str, torch.Tensor], dropout: float = 0.0, *, layout: str = "ours"
                 ) -> VAEConfig:
    """Read a VAEConfig off a state dict in our (= official) or the diffusers ``layout`` (dropout is not stored;
    pass it if not 0). Only encoder keys are read, whose diffusers names do not depend on num_res_blocks."""
    if layout not in ("ours", "diffusers"):
        raise ValueError(f"layout must be 'ours' or 'diffusers', got {layout!r}")
    name = (lambda key: key) if layout == "ours" else (lambda key: diffusers_key(key, 1))

    def tensor(key: str) -> torch.Tensor:
        try:
            return state_dict[name(key)]
        except KeyError:
            raise ValueError(f"cannot infer the VAE config: key {name(key)!r} is missing") from None

    base_dim, z_dim = tensor("encoder.conv1.weight").shape[0], tensor("conv2.weight").shape[0]
    stage_blocks, stage_out, temporal = [0], [base_dim], []
    for index in itertools.count():
        prefix = f"encoder.downsamples.{index}."
        if name(prefix + "residual.6.weight") in state_dict:
            stage_blocks[-1] += 1
            stage_out[-1] = tensor(prefix + "residual.6.weight").shape[0]
        elif name(prefix + "resample.1.weight") in state_dict:
            temporal.append(name(prefix + "time_conv.weight") in state_dict)
            stage_blocks.append(0)
            stage_out.append(stage_out[-1])
        else:
            break
    if len(set(stage_blocks)) != 1 or any(out % base_dim for out in stage_out):
        raise ValueError(f"cannot infer the VAE config: irregular encoder stages {stage_blocks} / {stage_out}")
    return VAEConfig(base_dim=base_dim, z_dim=z_dim, dim_mult=tuple(out // base_dim for out in stage_out),
                     num_res_blocks=stage_blocks[0], temperal_downsample=tuple(temporal), dropout=dropout)


def config_from_diffusers(config: Mapping[str, object]) -> VAEConfig:
    """A diffusers ``AutoencoderKLWan`` config.json dict -> VAEConfig; Wan 2.2 variants are rejected."""
    unsupported = {"is_residual": False, "patch_size": None, "in_channels": 3, "out_channels": 3}
    for key, wanted in unsupported.items():
        if config.get(key, wanted) != wanted:
            raise ValueError(f"diffusers VAE config has {key}={config[key]!r}; only the Wan 2.1 layout "
                             f"({key}={wanted!r}) is supported")
    if config.get("attn_scales"):
        raise ValueError(f"diffusers VAE config has attn_scales={config['attn_scales']!r}; only [] is supported")
    decoder_base = config.get("decoder_base_dim")
    if decoder_base is not None and decoder_base != config.get("base_dim", 96):
        raise ValueError(f"diffusers VAE config has decoder_base_dim={decoder_base}; must equal base_dim")
    defaults = VAEConfig()
    return VAEConfig(**{name: config.get(name, getattr(defaults, name)) for name in defaults.to_dict()})


def config_to_diffusers(config: VAEConfig) -> dict[str, object]:
    """VAEConfig -> a diffusers ``AutoencoderKLWan`` config.json dict."""
    return {"_class_name": DIFFUSERS_CLASS, **config.to_dict(), "attn_scales": [], "is_residual": False,
            "in_channels": 3, "out_channels": 3, "patch_size": None}


# -------------------------------------------------------------------------------------------- save / load
def save_vae(model: WanVAE, directory: str | Path, *, layout: str = "ours", max_shard_bytes: int | None = None
             ) -> Path:
    """Write ``model`` as safetensors + config.json. ``layout="diffusers"`` writes a folder that
    ``AutoencoderKLWan.from_pretrained`` reads; ``"ours"`` (default) writes model.safetensors in our keys. With
    ``max_shard_bytes``, larger weights are split into shards with an index json (``checkpoint.write_weights``)."""
    directory = Path(directory)
    state_dict = cpu_state_dict(model)
    if layout == "ours":
        stem, config = OUR_WEIGHTS, {"model_type": MODEL_TYPE, **model.config.to_dict()}
    elif layout == "diffusers":
        stem, config = DIFFUSERS_WEIGHTS, config_to_diffusers(model.config)
        state_dict = to_diffusers(state_dict, model.config)
    else:
        raise ValueError(f"layout must be 'ours' or 'diffusers', got {layout!r}")
    directory.mkdir(parents=True, exist_ok=True)
    write_weights(state_dict, directory, stem.removesuffix(".safetensors"), max_shard_bytes)
    write_config(directory, config)
    return directory


def load_vae(path: str | Path, *, config: VAEConfig | str | None = None,
             dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> WanVAE:
    """Load a Wan-VAE (in eval mode, float32 unless ``dtype`` is given) from any of:

    - our directory (``model.safetensors`` + ``config.json`` from ``save_vae``; or shards + index json);
    - a diffusers ``AutoencoderKLWan`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``);
    - a single state-dict file (``.pth``/``.pt``/``.bin``/``.safetensors``) in the official or diffusers layout,
      e.g. the released ``Wan2.1_VAE.pth``; its config is ``config`` if given, else read off the weights.

    The model is built on the meta device and takes the tensors one at a time (``checkpoint.load_weights``).
    Missing or unexpected keys, and shape mismatches, raise ValueError naming the first few.
    """
    path = Path(path)
    if isinstance(config, str):
        config = VAEConfig.preset(config)
    state_dict, stored_config = _read_folder(path) if path.is_dir() else _read_file(path)
    config = config or stored_config or infer_config(state_dict)
    with torch.device("meta"):
        model = WanVAE(config)
    return load_weights(model, state_dict, what="Wan-VAE", device=device, dtype=dtype or torch.float32)


def _read_folder(path: Path) -> tuple[dict[str, torch.Tensor], VAEConfig]:
    """Our or a diffusers folder -> (state dict in our keys, the config it stores)."""
    stored = read_config(path, "VAE")
    if stored.get("_class_name") == DIFFUSERS_CLASS:
        files = require_weight_files(path, DIFFUSERS_WEIGHTS.removesuffix(".safetensors"), "VAE")
        return from_diffusers(read_state_dict(files, what="VAE", lazy=True)), config_from_diffusers(stored)
    if stored.get("model_type") == MODEL_TYPE:
        files = require_weight_files(path, OUR_WEIGHTS.removesuffix(".safetensors"), "VAE")
        stored.pop("model_type")
        return read_state_dict(files, what="VAE", lazy=True), VAEConfig.from_dict(stored)
    raise ValueError(f"{path / OUR_CONFIG} is neither a Wan-VAE config (model_type={MODEL_TYPE!r}) "
                     f"nor a diffusers {DIFFUSERS_CLASS} config")


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], None]:
    """A bare state-dict file in either layout -> (state dict in our keys, no config)."""
    if not path.is_file():
        raise FileNotFoundError(f"no VAE checkpoint at {path}")
    state_dict = read_state_dict([path], what="VAE", lazy=True)
    return (from_diffusers(state_dict) if is_diffusers_layout(state_dict) else from_official(state_dict)), None
