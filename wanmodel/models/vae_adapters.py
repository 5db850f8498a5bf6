"""Wan-VAE checkpoint layouts: ours, the official release, diffusers ``AutoencoderKLWan``; save and load.

Our module names are the official ones, so the official layout (``Wan2.1_VAE.pth``) *is* our state dict. The
diffusers layout renames and regroups modules; ``to_diffusers`` / ``from_diffusers`` map every key both ways:

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

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .state_dict_check import check_state_dict, first_keys
from .vae import VAEConfig, WanVAE

__all__ = [
    "DIFFUSERS_CONFIG",
    "DIFFUSERS_WEIGHTS",
    "OUR_CONFIG",
    "OUR_WEIGHTS",
    "config_from_diffusers",
    "config_to_diffusers",
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
_RESBLOCK_FROM_DIFFUSERS = {v: k for k, v in _RESBLOCK_TO_DIFFUSERS.items()}
_MIDDLE_TO_DIFFUSERS = {"0": "resnets.0", "1": "attentions.0", "2": "resnets.1"}
_MIDDLE_FROM_DIFFUSERS = {v: k for k, v in _MIDDLE_TO_DIFFUSERS.items()}
_HEAD_TO_DIFFUSERS = {"0": "norm_out", "2": "conv_out"}
_TOP_TO_DIFFUSERS = {"conv1": "quant_conv", "conv2": "post_quant_conv"}
_TOP_FROM_DIFFUSERS = {v: k for k, v in _TOP_TO_DIFFUSERS.items()}


class UnknownKeyError(KeyError):
    pass


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


_UP_BLOCK = re.compile(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.+)")


def official_key(key: str, num_res_blocks: int) -> str:
    """One diffusers key -> its official/our name (inverse of ``diffusers_key``)."""
    top, _, rest = key.partition(".")
    if top in _TOP_FROM_DIFFUSERS:
        return f"{_TOP_FROM_DIFFUSERS[top]}.{rest}"
    if top not in ("encoder", "decoder"):
        raise UnknownKeyError(key)
    part, _, rest = rest.partition(".")
    try:
        if part == "conv_in":
            return f"{top}.conv1.{rest}"
        if part == "norm_out":
            return f"{top}.head.0.{rest}"
        if part == "conv_out":
            return f"{top}.head.2.{rest}"
        if part == "mid_block":
            kind, index, rest = rest.split(".", 2)
            slot = _MIDDLE_FROM_DIFFUSERS[f"{kind}.{index}"]
            inner = rest if kind == "attentions" else _rename_prefix(rest, _RESBLOCK_FROM_DIFFUSERS, key)
            return f"{top}.middle.{slot}.{inner}"
        if part == "down_blocks" and top == "encoder":
            index, _, rest = rest.partition(".")
            return f"encoder.downsamples.{int(index)}.{_resblock_or_resample(rest, _RESBLOCK_FROM_DIFFUSERS)}"
        match = _UP_BLOCK.fullmatch(key)
        if match:
            stage, _, within, rest = match.groups()
            base = int(stage) * (num_res_blocks + 2)
            if within is None:
                return f"decoder.upsamples.{base + num_res_blocks + 1}.{rest}"
            if int(within) > num_res_blocks:
                raise UnknownKeyError(key)
            return f"decoder.upsamples.{base + int(within)}.{_rename_prefix(rest, _RESBLOCK_FROM_DIFFUSERS, key)}"
    except (KeyError, ValueError):
        raise UnknownKeyError(key) from None
    raise UnknownKeyError(key)


def _convert(state_dict: Mapping[str, torch.Tensor], rename) -> dict[str, torch.Tensor]:
    converted, unknown = {}, []
    for key, value in state_dict.items():
        try:
            converted[rename(key)] = value
        except UnknownKeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} key(s) not in the Wan-VAE layout: {first_keys(unknown)}")
    return converted


def to_diffusers(state_dict: Mapping[str, torch.Tensor], config: VAEConfig) -> dict[str, torch.Tensor]:
    """Our (= official) state dict -> diffusers ``AutoencoderKLWan`` keys."""
    return _convert(state_dict, lambda key: diffusers_key(key, config.num_res_blocks))


def from_diffusers(state_dict: Mapping[str, torch.Tensor], config: VAEConfig | None = None
                   ) -> dict[str, torch.Tensor]:
    """Diffusers ``AutoencoderKLWan`` state dict -> ours. ``config`` only supplies num_res_blocks (else inferred)."""
    num_res_blocks = config.num_res_blocks if config is not None else _diffusers_num_res_blocks(state_dict)
    return _convert(state_dict, lambda key: official_key(key, num_res_blocks))


def to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ours -> official release layout: the identity (module names are kept as released)."""
    return dict(state_dict)


def from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official release layout -> ours: the identity."""
    return dict(state_dict)


def _diffusers_num_res_blocks(state_dict: Mapping[str, torch.Tensor]) -> int:
    blocks = {int(m.group(3)) for key in state_dict if (m := _UP_BLOCK.fullmatch(key)) and m.group(1) == "0"
              and m.group(3) is not None}
    if not blocks:
        raise ValueError("cannot infer num_res_blocks: no decoder.up_blocks.0.resnets.* keys in the state dict")
    return max(blocks)  # decoder stages hold num_res_blocks + 1 residual blocks


def is_diffusers_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith(("quant_conv.", "post_quant_conv.", "encoder.conv_in.")) for key in state_dict)


# ------------------------------------------------------------------------------------------------- configs
def infer_config(state_dict: Mapping[str, torch.Tensor], dropout: float = 0.0) -> VAEConfig:
    """Read a VAEConfig off an official/our-layout state dict (dropout is not stored; pass it if not 0)."""
    try:
        base_dim = state_dict["encoder.conv1.weight"].shape[0]
        z_dim = state_dict["conv2.weight"].shape[0]
    except KeyError as missing:
        raise ValueError(f"cannot infer the VAE config: key {missing} is missing") from None
    indices = sorted({int(key.split(".")[2]) for key in state_dict if key.startswith("encoder.downsamples.")})
    stage_blocks, stage_out, temporal = [0], [base_dim], []
    for index in indices:
        prefix = f"encoder.downsamples.{index}."
        if prefix + "residual.6.weight" in state_dict:
            stage_blocks[-1] += 1
            stage_out[-1] = state_dict[prefix + "residual.6.weight"].shape[0]
        elif prefix + "resample.1.weight" in state_dict:
            temporal.append(prefix + "time_conv.weight" in state_dict)
            stage_blocks.append(0)
            stage_out.append(stage_out[-1])
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
def save_vae(model: WanVAE, directory: str | Path, *, layout: str = "ours") -> Path:
    """Write ``model`` as safetensors + config.json. ``layout="diffusers"`` writes a folder that
    ``AutoencoderKLWan.from_pretrained`` reads; ``"ours"`` (default) writes model.safetensors in our keys."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    if layout == "ours":
        save_file(state_dict, directory / OUR_WEIGHTS, metadata={"format": "pt"})
        config = {"model_type": MODEL_TYPE, **model.config.to_dict()}
    elif layout == "diffusers":
        save_file(to_diffusers(state_dict, model.config), directory / DIFFUSERS_WEIGHTS, metadata={"format": "pt"})
        config = config_to_diffusers(model.config)
    else:
        raise ValueError(f"layout must be 'ours' or 'diffusers', got {layout!r}")
    (directory / OUR_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_vae(path: str | Path, *, config: VAEConfig | str | None = None,
             dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> WanVAE:
    """Load a Wan-VAE (in eval mode) from any of:

    - our directory (``model.safetensors`` + ``config.json`` from ``save_vae``);
    - a diffusers ``AutoencoderKLWan`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``);
    - a single state-dict file (``.pth``/``.pt``/``.bin``/``.safetensors``) in the official or diffusers layout,
      e.g. the released ``Wan2.1_VAE.pth``; its config is ``config`` if given, else read off the weights.

    Missing or unexpected keys, and shape mismatches, raise ValueError naming the first few.
    """
    path = Path(path)
    if isinstance(config, str):
        config = VAEConfig.preset(config)
    if path.is_dir():
        config_path = path / OUR_CONFIG
        if not config_path.is_file():
            raise FileNotFoundError(f"no VAE config at {config_path} (expected {OUR_CONFIG} in the checkpoint folder)")
        stored = json.loads(config_path.read_text())
        if stored.get("_class_name") == DIFFUSERS_CLASS:
            state_dict = from_diffusers(_read_safetensors(path / DIFFUSERS_WEIGHTS), config_from_diffusers(stored))
            config = config or config_from_diffusers(stored)
        elif stored.get("model_type") == MODEL_TYPE:
            stored.pop("model_type")
            state_dict = _read_safetensors(path / OUR_WEIGHTS)
            config = config or VAEConfig.from_dict(stored)
        else:
            raise ValueError(f"{config_path} is neither a Wan-VAE config (model_type={MODEL_TYPE!r}) "
                             f"nor a diffusers {DIFFUSERS_CLASS} config")
    else:
        state_dict = _read_state_dict_file(path)
        if is_diffusers_layout(state_dict):
            state_dict = from_diffusers(state_dict, config)
        config = config or infer_config(state_dict)
    model = WanVAE(config)
    _check_keys(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise FileNotFoundError(f"no VAE weights at {file}")
    return load_file(str(file))


def _read_state_dict_file(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise FileNotFoundError(f"no VAE checkpoint at {file}")
    if file.suffix == ".safetensors":
        return load_file(str(file))
    loaded = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise TypeError(f"{file} does not hold a state dict (got {type(loaded).__name__})")
    return loaded


def _check_keys(model: WanVAE, state_dict: Mapping[str, torch.Tensor]) -> None:
    """ValueError naming (a few of) the missing and unexpected keys and shape mismatches, if any."""
    check_state_dict(model, state_dict, "Wan-VAE")
