"""Wan DiT checkpoint layouts: ours, the official release, diffusers ``WanTransformer3DModel``; save and load.

Our module names are the official ones, so the official state dict *is* ours (``to_official`` /
``from_official`` are the identity, apart from stripping a ``model.diffusion_model.`` prefix some tools add).
Diffusers renames modules; ``to_diffusers_state_dict`` / ``from_diffusers_state_dict`` map every key both ways:

    official / ours                                   diffusers
    text_embedding.{0,2}                              condition_embedder.text_embedder.linear_{1,2}
    time_embedding.{0,2}                              condition_embedder.time_embedder.linear_{1,2}
    time_projection.1                                 condition_embedder.time_proj
    img_emb.proj.{0,1,3,4}                            condition_embedder.image_embedder.{norm1, ff.net.0.proj,
                                                          ff.net.2, norm2}
    img_emb.emb_pos (flf2v)                           condition_embedder.image_embedder.pos_embed
    head.head, head.modulation                        proj_out, scale_shift_table
    blocks.N.self_attn / cross_attn                   blocks.N.attn1 / attn2
        .q .k .v .o                                       .to_q .to_k .to_v .to_out.0
        .k_img .v_img .norm_k_img                         .add_k_proj .add_v_proj .norm_added_k
    blocks.N.norm3 (cross-attention norm, affine)     blocks.N.norm2
    blocks.N.ffn.{0,2}                                blocks.N.ffn.net.0.proj, ffn.net.2
    blocks.N.modulation                               blocks.N.scale_shift_table

On disk, each layout is safetensors + config.json, one file or shards with an index json:
ours ``model.safetensors`` (config ``_class_name: WanDiT``), official and diffusers
``diffusion_pytorch_model.safetensors`` (``_class_name`` ``WanModel`` / ``WanTransformer3DModel``).
The first-last-frame model (FLF2V) is ``model_type: flf2v`` in the official config and ``pos_embed_seq_len`` (the
length of ``emb_pos``, 2 x 257) in the diffusers one.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    UnknownKeyError,
    check_state_dict,
    cpu_state_dict,
    first_keys,
    load_weights,
    read_config,
    read_state_dict,
    rename_keys,
    require_weight_files,
    write_config,
    write_weights,
)
from .dit import FP32_PARAMETERS, MODEL_TYPES, DiTConfig, WanDiT

__all__ = [
    "DIFFUSERS_CLASS",
    "LAYOUTS",
    "OFFICIAL_CLASS",
    "OUR_CLASS",
    "check_keys",
    "config_from_diffusers",
    "config_from_official",
    "config_to_diffusers",
    "config_to_official",
    "detect_layout",
    "from_diffusers_state_dict",
    "from_official_state_dict",
    "infer_config",
    "load_dit",
    "read_state_dict",
    "save_dit",
    "to_diffusers_state_dict",
    "to_official_state_dict",
]

OUR_CLASS = "WanDiT"
OFFICIAL_CLASS = "WanModel"
DIFFUSERS_CLASS = "WanTransformer3DModel"
WEIGHTS_STEM = {"ours": "model", "official": "diffusion_pytorch_model", "diffusers": "diffusion_pytorch_model"}
LAYOUTS = tuple(WEIGHTS_STEM)
COMFY_PREFIX = "model.diffusion_model."

# (ours, diffusers) name prefixes; a prefix ending without "." matches the whole remaining key
_TOP = (
    ("patch_embedding.", "patch_embedding."),
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("img_emb.proj.0.", "condition_embedder.image_embedder.norm1."),
    ("img_emb.proj.1.", "condition_embedder.image_embedder.ff.net.0.proj."),
    ("img_emb.proj.3.", "condition_embedder.image_embedder.ff.net.2."),
    ("img_emb.proj.4.", "condition_embedder.image_embedder.norm2."),
    ("img_emb.emb_pos", "condition_embedder.image_embedder.pos_embed"),
    ("head.head.", "proj_out."),
    ("head.modulation", "scale_shift_table"),
)
_ATTENTION = (("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("o.", "to_out.0."), ("norm_q.", "norm_q."),
              ("norm_k.", "norm_k."), ("k_img.", "add_k_proj."), ("v_img.", "add_v_proj."),
              ("norm_k_img.", "norm_added_k."))
_BLOCK = (
    *((f"self_attn.{ours}", f"attn1.{theirs}") for ours, theirs in _ATTENTION[:6]),
    *((f"cross_attn.{ours}", f"attn2.{theirs}") for ours, theirs in _ATTENTION),
    ("norm3.", "norm2."),
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
    ("modulation", "scale_shift_table"),
)
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")
# diffusers drops these on load (``_keys_to_ignore_on_load_unexpected``); some converted checkpoints carry them
_DIFFUSERS_IGNORED = re.compile(r"blocks\.\d+\.attn2\.norm_added_q\..+")


def _rename(name: str, pairs: Iterable[tuple[str, str]], key: str) -> str:
    for old, new in pairs:
        if name == old or (old.endswith(".") and name.startswith(old)):
            return new + name[len(old):]
    raise UnknownKeyError(key)


def _convert_key(key: str, to_diffusers: bool) -> str:
    flip = (lambda pairs: pairs) if to_diffusers else (lambda pairs: tuple((b, a) for a, b in pairs))
    match = _BLOCK_KEY.fullmatch(key)
    if match:
        return f"blocks.{match.group(1)}.{_rename(match.group(2), flip(_BLOCK), key)}"
    return _rename(key, flip(_TOP), key)


def _convert(state_dict: Mapping[str, torch.Tensor], to_diffusers: bool) -> dict[str, torch.Tensor]:
    if not to_diffusers:
        state_dict = {key: value for key, value in state_dict.items() if not _DIFFUSERS_IGNORED.fullmatch(key)}
    source = "our/official" if to_diffusers else "diffusers"
    return rename_keys(state_dict, lambda key: _convert_key(key, to_diffusers), f"{source} Wan DiT")


def to_diffusers_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our (= official) state dict -> diffusers ``WanTransformer3DModel`` keys (same tensors)."""
    return _convert(state_dict, to_diffusers=True)


def from_diffusers_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diffusers ``WanTransformer3DModel`` state dict -> ours (same tensors)."""
    return _convert(state_dict, to_diffusers=False)


def to_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Ours -> official release keys: the identity (our module names are the released ones)."""
    return dict(state_dict)


def from_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official release keys -> ours: the identity, after stripping a ``model.diffusion_model.`` prefix."""
    return {key.removeprefix(COMFY_PREFIX): value for key, value in state_dict.items()}


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"diffusers"`` or ``"official"`` (= ours) from the key names."""
    if any(key.startswith(("condition_embedder.", "proj_out.")) for key in state_dict):
        return "diffusers"
    if any(key.removeprefix(COMFY_PREFIX).startswith(("text_embedding.", "time_projection.", "head."))
           for key in state_dict):
        return "official"
    raise ValueError(f"not a Wan DiT state dict (neither official nor diffusers key names): {first_keys(state_dict)}")


# ------------------------------------------------------------------------------------------------- configs
_OFFICIAL_KEYS = ("model_type", "patch_size", "text_len", "in_dim", "dim", "ffn_dim", "freq_dim", "text_dim",
                  "out_dim", "num_heads", "num_layers", "qk_norm", "cross_attn_norm", "eps")


def config_to_official(config: DiTConfig) -> dict[str, Any]:
    """DiTConfig -> an official ``WanModel`` config.json dict (the official loader ignores the keys it does not
    store itself, such as text_dim; ours reads them back)."""
    data = {"_class_name": OFFICIAL_CLASS, **{key: getattr(config, key) for key in _OFFICIAL_KEYS},
            "window_size": [-1, -1]}
    data["patch_size"] = list(config.patch_size)
    if config.is_i2v:
        data["image_dim"] = config.image_dim
    if config.is_flf2v:
        data["flf_image_tokens"] = config.flf_image_tokens
    return data


def config_from_official(data: Mapping[str, Any]) -> DiTConfig:
    """An official ``WanModel`` config.json dict -> DiTConfig (missing keys take the release defaults)."""
    model_type = data.get("model_type", "t2v")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"official config has model_type={model_type!r}; supported: {MODEL_TYPES}")
    if list(data.get("window_size", [-1, -1])) != [-1, -1]:
        raise ValueError(f"official config has window_size={data['window_size']}; only global attention (-1, -1) "
                         f"is supported")
    return DiTConfig(**{key: data[key] for key in (*_OFFICIAL_KEYS, "image_dim", "flf_image_tokens") if key in data})


def config_to_diffusers(config: DiTConfig) -> dict[str, Any]:
    """DiTConfig -> a diffusers ``WanTransformer3DModel`` config.json dict."""
    if not config.qk_norm:
        raise ValueError("diffusers' WanTransformer3DModel always has q/k norm; qk_norm=False cannot be exported")
    if config.text_len != 512:
        raise ValueError(f"diffusers' WanTransformer3DModel assumes 512 text tokens; text_len={config.text_len}")
    return {
        "_class_name": DIFFUSERS_CLASS, "patch_size": list(config.patch_size), "num_attention_heads": config.num_heads,
        "attention_head_dim": config.head_dim, "in_channels": config.in_dim, "out_channels": config.out_dim,
        "text_dim": config.text_dim, "freq_dim": config.freq_dim, "ffn_dim": config.ffn_dim,
        "num_layers": config.num_layers, "cross_attn_norm": config.cross_attn_norm,
        "qk_norm": "rms_norm_across_heads", "eps": config.eps,
        "image_dim": config.image_dim if config.is_i2v else None,
        "added_kv_proj_dim": config.dim if config.is_i2v else None,
        "rope_max_seq_len": 1024, "pos_embed_seq_len": config.image_tokens,
    }


def config_from_diffusers(data: Mapping[str, Any]) -> DiTConfig:
    """A diffusers ``WanTransformer3DModel`` config.json dict -> DiTConfig (``pos_embed_seq_len`` set: flf2v);
    Wan 2.2 variants rejected."""
    heads, head_dim = data.get("num_attention_heads", 40), data.get("attention_head_dim", 128)
    dim = heads * head_dim
    if data.get("qk_norm", "rms_norm_across_heads") != "rms_norm_across_heads":
        raise ValueError(f"diffusers config has qk_norm={data['qk_norm']!r}; only 'rms_norm_across_heads' is "
                         f"supported")
    added = data.get("added_kv_proj_dim")
    if added is not None and added != dim:
        raise ValueError(f"diffusers config has added_kv_proj_dim={added}; the Wan 2.1 I2V layout needs {dim}")
    if (added is None) != (data.get("image_dim") is None):
        raise ValueError("diffusers config needs image_dim and added_kv_proj_dim both set (i2v) or both unset")
    extra = {"model_type": "i2v", "image_dim": data["image_dim"]} if added is not None else {}
    if data.get("pos_embed_seq_len") is not None:
        if not extra:
            raise ValueError("diffusers config has pos_embed_seq_len (first-last-frame model) but no image_dim")
        extra.update(model_type="flf2v", flf_image_tokens=data["pos_embed_seq_len"])
    return DiTConfig(patch_size=tuple(data.get("patch_size", (1, 2, 2))), in_dim=data.get("in_channels", 16),
                     out_dim=data.get("out_channels") or data.get("in_channels", 16), dim=dim,
                     ffn_dim=data.get("ffn_dim", 13824), freq_dim=data.get("freq_dim", 256),
                     text_dim=data.get("text_dim", 4096), num_heads=heads, num_layers=data.get("num_layers", 40),
                     eps=data.get("eps", 1e-6), cross_attn_norm=data.get("cross_attn_norm", True), **extra)


def infer_config(state_dict: Mapping[str, torch.Tensor], *, num_heads: int | None = None) -> DiTConfig:
    """Read a DiTConfig off an official/our-layout state dict. Head count is not stored in the weights: it is
    ``num_heads`` if given, else guessed as dim // 128 (every released Wan 2.1 model has head dim 128) with a
    warning."""
    try:
        patch = state_dict["patch_embedding.weight"]
        text = state_dict["text_embedding.0.weight"]
        time = state_dict["time_embedding.0.weight"]
        ffn = state_dict["blocks.0.ffn.0.weight"]
        head = state_dict["head.head.weight"]
    except KeyError as missing:
        raise ValueError(f"cannot infer the DiT config: key {missing} is missing") from None
    dim = patch.shape[0]
    num_heads = num_heads if num_heads is not None else _guess_num_heads(dim)
    patch_size = tuple(patch.shape[2:])
    layers = {int(m.group(1)) for key in state_dict if (m := _BLOCK_KEY.fullmatch(key))}
    i2v = "img_emb.proj.1.weight" in state_dict
    extra = {"model_type": "i2v", "image_dim": state_dict["img_emb.proj.1.weight"].shape[1]} if i2v else {}
    if i2v and "img_emb.emb_pos" in state_dict:
        extra.update(model_type="flf2v", flf_image_tokens=state_dict["img_emb.emb_pos"].shape[1])
    return DiTConfig(patch_size=patch_size, in_dim=patch.shape[1], out_dim=head.shape[0] // (
        patch_size[0] * patch_size[1] * patch_size[2]), dim=dim, ffn_dim=ffn.shape[0], freq_dim=time.shape[1],
        text_dim=text.shape[1], num_heads=num_heads, num_layers=max(layers) + 1,
        qk_norm="blocks.0.self_attn.norm_q.weight" in state_dict,
        cross_attn_norm="blocks.0.norm3.weight" in state_dict, **extra)


def _guess_num_heads(dim: int) -> int:
    """dim // 128 (every released Wan 2.1 model has head dim 128), with a warning: the weights do not say."""
    if dim % 128:
        raise ValueError(f"cannot infer num_heads for dim {dim} (not a multiple of 128); pass a config")
    warnings.warn(f"the DiT head count is not stored in the weights: guessed num_heads = {dim // 128} for dim {dim} "
                  f"(head dim 128, as in every Wan 2.1 release); pass a config if this model differs",
                  UserWarning, stacklevel=3)
    return dim // 128


# -------------------------------------------------------------------------------------------- files
def _layout_of_config(data: Mapping[str, Any], path: Path) -> str:
    name = data.get("_class_name")
    if name == OUR_CLASS:
        return "ours"
    if name == DIFFUSERS_CLASS:
        return "diffusers"
    if name == OFFICIAL_CLASS or (name is None and "num_heads" in data and "dim" in data):
        return "official"
    raise ValueError(f"{path} is not a Wan DiT config (_class_name {name!r}; expected {OUR_CLASS}, "
                     f"{OFFICIAL_CLASS} or {DIFFUSERS_CLASS})")


def _config_for(layout: str, data: dict[str, Any]) -> DiTConfig:
    if layout == "ours":
        return DiTConfig.from_dict({key: value for key, value in data.items() if key != "_class_name"})
    if layout == "diffusers":
        return config_from_diffusers(data)
    return config_from_official(data)


def _with_weights_text_dim(config: DiTConfig, stored: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
                           ) -> DiTConfig:
    """A folder config without ``text_dim`` (the official release configs leave it out): read it off the text
    embedding's weight instead of assuming umT5's 4096."""
    weight = state_dict.get("text_embedding.0.weight")
    if "text_dim" in stored or weight is None:
        return config
    return replace(config, text_dim=weight.shape[1])


def _read_folder(path: Path) -> tuple[dict[str, torch.Tensor], DiTConfig]:
    """A checkpoint folder of any layout -> (state dict in our keys, the config it stores)."""
    stored = read_config(path, "DiT")
    layout = _layout_of_config(stored, path / "config.json")
    config = _config_for(layout, stored)
    # read lazily: each tensor is read, cast and moved to the target device on its own by load_weights
    files = require_weight_files(path, WEIGHTS_STEM[layout], "DiT")
    state_dict = _to_ours(read_state_dict(files, what="DiT", lazy=True), layout)
    return state_dict, _with_weights_text_dim(config, stored, state_dict)


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    """A bare state-dict file in the official or diffusers layout -> state dict in our keys."""
    state_dict = read_state_dict([path], what="DiT", lazy=True)
    return _to_ours(state_dict, detect_layout(state_dict))


def _to_ours(state_dict: Mapping[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    return from_diffusers_state_dict(state_dict) if layout == "diffusers" else from_official_state_dict(state_dict)


# -------------------------------------------------------------------------------------------- save / load
def save_dit(model: WanDiT, directory: str | Path, layout: str = "ours",
             max_shard_bytes: int | None = None) -> Path:
    """Write ``model`` as safetensors + config.json in ``layout`` (``ours``, ``official`` or ``diffusers``; the
    diffusers folder loads with ``WanTransformer3DModel.from_pretrained``). With ``max_shard_bytes``, weights
    larger than that are split into ``<stem>-0000i-of-0000n.safetensors`` shards plus ``<stem>.safetensors.index
    .json``, as both releases do."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state_dict = cpu_state_dict(model)
    if layout == "diffusers":
        state_dict, config = to_diffusers_state_dict(state_dict), config_to_diffusers(model.config)
    elif layout == "official":
        state_dict, config = to_official_state_dict(state_dict), config_to_official(model.config)
    else:
        config = {"_class_name": OUR_CLASS, **model.config.to_dict()}
    write_weights(state_dict, directory, WEIGHTS_STEM[layout], max_shard_bytes)
    write_config(directory, config)
    return directory


def load_dit(path: str | Path, config: DiTConfig | str | None = None, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = torch.float32, attention_backend: str = "auto") -> WanDiT:
    """Load a Wan DiT (eval mode) from any of:

    - our folder (``model.safetensors`` + config.json from ``save_dit``);
    - an official release folder (``diffusion_pytorch_model*.safetensors`` + its config.json, ``WanModel``);
    - a diffusers ``WanTransformer3DModel`` folder (sharded with ``diffusion_pytorch_model.safetensors.index.json``
      or one file);
    - a single state-dict file (``.safetensors``/``.pth``/``.pt``/``.bin``) in the official or diffusers layout,
      with ``config`` given or read off the weights (``infer_config``; the head count is then a guess, with a
      warning).

    A folder config without ``text_dim`` (as released) takes it from the weights. The model is built on the meta
    device and takes the checkpoint tensors one at a time (``checkpoint.load_weights``; cast to ``dtype``,
    ``dtype=None`` keeps the stored dtypes), so no memory is spent on a throw-away init. A bf16/fp16 ``dtype`` keeps
    the time MLP and modulation in float32 (``WanDiT.set_dtype``). Missing or unexpected keys and shape mismatches
    raise ValueError naming the first few.
    """
    path = Path(path)
    if isinstance(config, str):
        config = DiTConfig.named(config)
    state_dict, stored_config = _read_folder(path) if path.is_dir() else (_read_file(path), None)
    config = config or stored_config or infer_config(state_dict)
    model = WanDiT.from_config(config, device="meta", attention_backend=attention_backend)
    return load_weights(model, state_dict, what="Wan DiT", device=device, dtype=dtype, keep_fp32=FP32_PARAMETERS)


def check_keys(model: WanDiT, state_dict: Mapping[str, torch.Tensor]) -> None:
    """ValueError naming (a few of) the missing and unexpected keys and shape mismatches, if any."""
    check_state_dict(model, state_dict, "Wan DiT")
