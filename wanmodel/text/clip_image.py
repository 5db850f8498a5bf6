"""CLIP image encoder for image-to-video (report section 5.1.1): the condition image -> 257 feature tokens.

Wan-I2V conditions on the ViT-H/14 image tower of open-clip's XLM-RoBERTa-large CLIP: the image (in [-1, 1]) is
resized to 224 x 224 (bicubic), mapped to [0, 1], normalised with the OpenAI CLIP mean/std, and the tokens after
the penultimate transformer block are returned (class token + 16 x 16 patches = 257 tokens of width 1280, no final
LayerNorm); the DiT projects them with its image MLP. This is official ``CLIPModel.visual(..., use_31_block=True)``
and the same as ``hidden_states[-2]`` of a transformers ``CLIPVisionModel`` with those weights.

The tower is open_clip's ``VisionTransformer``, built from an open_clip model config (``ViT-H-14`` by default; the
XLM-RoBERTa CLIP has the same image tower) and loaded from a local file only:
- an open_clip checkpoint (``open_clip_pytorch_model.bin`` / ``open_clip_model.safetensors``, full model or
  image tower only), or a folder holding one;
- the official Wan release ``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth`` (keys mapped here).
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipImageEncoder", "build_vision_tower", "official_to_open_clip",
           "preprocess_images"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_NAME = "open_clip_config.json"
CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors")

_OFFICIAL_TOP = {
    "patch_embedding.weight": "conv1.weight",
    "cls_embedding": "class_embedding",
    "pos_embedding": "positional_embedding",
    "pre_norm.weight": "ln_pre.weight",
    "pre_norm.bias": "ln_pre.bias",
    "post_norm.weight": "ln_post.weight",
    "post_norm.bias": "ln_post.bias",
    "head": "proj",
}
_OFFICIAL_BLOCK = {
    "norm1": "ln_1", "norm2": "ln_2", "attn.to_qkv.weight": "attn.in_proj_weight",
    "attn.to_qkv.bias": "attn.in_proj_bias", "attn.proj": "attn.out_proj", "mlp.0": "mlp.c_fc", "mlp.2": "mlp.c_proj",
}
_OFFICIAL_BLOCK_KEY = re.compile(r"transformer\.(\d+)\.(.+)\.(weight|bias)")


def official_to_open_clip(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Image tower of an official Wan CLIP state dict (``visual.patch_embedding``...) -> open_clip
    ``VisionTransformer`` keys (``conv1``...). Text-tower keys are dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not key.startswith("visual."):
            continue
        rest = key[len("visual."):]
        if rest in _OFFICIAL_TOP:
            if rest == "cls_embedding":
                value = value.reshape(-1)  # [1, 1, D] -> [D]
            elif rest == "pos_embedding":
                value = value.reshape(value.shape[-2], value.shape[-1])  # [1, N, D] -> [N, D]
            out[_OFFICIAL_TOP[rest]] = value
        elif (match := _OFFICIAL_BLOCK_KEY.fullmatch(rest)):
            index, name, kind = match.groups()
            full = f"{name}.{kind}"
            if full in _OFFICIAL_BLOCK:
                out[f"transformer.resblocks.{index}.{_OFFICIAL_BLOCK[full]}"] = value
            elif name in _OFFICIAL_BLOCK:
                out[f"transformer.resblocks.{index}.{_OFFICIAL_BLOCK[name]}.{kind}"] = value
            else:
                raise ValueError(f"unknown official CLIP key {key!r}")
        else:
            raise ValueError(f"unknown official CLIP key {key!r}")
    return out


def build_vision_tower(model: str | Mapping[str, Any] = "ViT-H-14") -> torch.nn.Module:
    """An open_clip ``VisionTransformer`` from a bundled open_clip config name or a config dict
    (``{"embed_dim": ..., "vision_cfg": {...}}``), randomly initialised (no download)."""
    import open_clip
    from open_clip.model import _build_vision_tower

    config = open_clip.get_model_config(model) if isinstance(model, str) else dict(model)
    if config is None:
        raise ValueError(f"unknown open_clip model config {model!r}")
    return _build_vision_tower(config["embed_dim"], config["vision_cfg"], quick_gelu=config.get("quick_gelu", False))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        for name in CHECKPOINT_NAMES:
            if (path / name).is_file():
                return _read_state_dict(path / name)
        raise FileNotFoundError(f"no CLIP checkpoint in {path} (looked for {', '.join(CHECKPOINT_NAMES)})")
    if not path.is_file():
        raise FileNotFoundError(f"CLIP image encoder weights not found at {path} (expected an open_clip checkpoint "
                                "or the official models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    return loaded


def _vision_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whatever layout -> open_clip VisionTransformer keys."""
    if "visual.patch_embedding.weight" in state_dict:
        return official_to_open_clip(state_dict)
    if "visual.conv1.weight" in state_dict:
        return {k[len("visual."):]: v for k, v in state_dict.items() if k.startswith("visual.")}
    if "conv1.weight" in state_dict:
        return dict(state_dict)
    raise ValueError("not a CLIP image-tower checkpoint: found neither official (visual.patch_embedding) nor "
                     "open_clip (visual.conv1 / conv1) keys")


def preprocess_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] -> CLIP input [N, 3, size, size]: bicubic resize, to [0, 1], normalise."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [N, 3, H, W], got shape {tuple(images.shape)}")
    images = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False)
    images = images * 0.5 + 0.5
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


class ClipImageEncoder:
    """CLIP image tower returning penultimate-block tokens; ``encode(images)`` -> [N, 1 + patches, width]."""

    def __init__(self, tower: torch.nn.Module, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.tower = tower.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = dtype
        size = tower.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    @classmethod
    def from_pretrained(cls, weights: str | Path, *, model: str | Mapping[str, Any] | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> ClipImageEncoder:
        """Load the tower of open_clip config ``model`` from a local checkpoint (see module docstring).

        ``model``: an open_clip config name or dict; default the folder's ``open_clip_config.json`` (as open_clip
        checkpoints ship it) when there is one, else ``ViT-H-14``.
        """
        weights = Path(weights).expanduser()
        state_dict = _vision_state_dict(_read_state_dict(weights))
        if model is None:
            config_file = weights / CONFIG_NAME
            model = json.loads(config_file.read_text())["model_cfg"] if config_file.is_file() else "ViT-H-14"
        tower = build_vision_tower(model)
        expected = tower.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        # The projection head and final norm are unused here; tolerate checkpoints that drop them.
        missing = [k for k in missing if not k.startswith(("proj", "ln_post"))]
        if missing:
            raise ValueError(f"{weights}: CLIP image tower keys missing: {missing[:5]}")
        state_dict = {k: v for k, v in state_dict.items() if k in expected}
        for key, value in state_dict.items():
            if value.shape != expected[key].shape:
                raise ValueError(f"{weights}: {key} has shape {tuple(value.shape)}, the {model!r} config expects "
                                 f"{tuple(expected[key].shape)}")
        tower.load_state_dict(state_dict, strict=False)
        return cls(tower, device=device, dtype=dtype)

    @property
    def width(self) -> int:
        return int(self.tower.conv1.out_channels)

    @property
    def model(self) -> torch.nn.Module:
        """The tower (the ``.model`` / ``.device`` pair that ``wanmodel.accel.offload.on_device`` moves)."""
        return self.tower

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] in [-1, 1] (any size) -> penultimate tokens [N, 1 + (224/14)^2, width], float32."""
        pixels = preprocess_images(images.to(self.device), self.image_size).to(self.dtype)
        tokens = self.tower._embeds(pixels)
        blocks = self.tower.transformer.resblocks
        if not self.tower.transformer.batch_first:  # pragma: no cover - open_clip 3 is batch-first
            tokens = tokens.transpose(0, 1)
        for block in blocks[:-1]:
            tokens = block(tokens)
        if not self.tower.transformer.batch_first:  # pragma: no cover
            tokens = tokens.transpose(0, 1)
        return tokens.float()

    __call__ = encode
