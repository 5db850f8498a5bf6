"""open_clip image and text encoders from local files, and a tiny random-initialised one for tests and the demo.

A model comes from either a folder in open_clip's own layout (``open_clip_config.json`` with ``model_cfg`` and
``preprocess_cfg``, beside ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``: what the hub
repositories of open_clip models hold) or a built-in architecture name (``ViT-L-14``) plus a weights file.
``save_tiny_clip`` writes a random ViT + text tower in the folder layout, so tests name a local path exactly as a
user would.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curation.models import WeightsNotFoundError, require_dir, require_file

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"

TINY_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    # The vocabulary must stay 49408: open_clip's bundled BPE tokenizer emits ids up to 49407.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def save_tiny_clip(out_dir: str | Path, seed: int = 0, model_cfg: dict[str, Any] | None = None) -> Path:
    """Write a random-initialised open_clip model (tiny ViT + text tower by default) to ``out_dir`` in the
    open_clip folder layout; returns the folder. Deterministic in ``seed``."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = json.loads(json.dumps(model_cfg or TINY_MODEL_CFG))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg)
    # Random, not default, values everywhere (default init leaves some projections near-identical across seeds).
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p.shape[-1]) ** 0.5))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(json.dumps({
        "model_cfg": cfg,
        "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                           "resize_mode": "shortest"},
    }, indent=2))
    return out


@dataclass
class ClipEncoder:
    """A loaded open_clip model with its eval preprocessing and tokenizer."""

    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    model_id: str
    embed_dim: int

    def encode_images(self, images_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """L2-normalised image embeddings, ``(N, D)`` float32, of ``(H, W, 3)`` uint8 RGB images."""
        import torch
        from PIL import Image

        if len(images_rgb) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        pixels = torch.stack([self.preprocess(Image.fromarray(im)) for im in images_rgb]).to(self.device)
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            feats = self.model.encode_image(pixels.to(dtype), normalize=True)
        return feats.float().cpu().numpy()

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, ``(N, D)`` float32 (zero-shot prompts)."""
        import torch

        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode():
            feats = self.model.encode_text(tokens, normalize=True)
        return feats.float().cpu().numpy()


def load_clip(path: str | None = None, architecture: str | None = None, weights: str | None = None,
              device: str = "cpu", precision: str = "fp32") -> ClipEncoder:
    """Load an open_clip model from a local folder (``path``) or a built-in ``architecture`` plus a local
    ``weights`` file. Raises ``WeightsNotFoundError`` naming the missing file; never downloads."""
    import open_clip
    import torch

    if path is not None:
        folder = require_dir(path, "open_clip model folder")
        require_file(folder / CONFIG_FILE, "open_clip model config")
        if not any(folder.glob(pat) for pat in ("*.safetensors", "*.bin", "*.pth", "*.pt")):
            raise WeightsNotFoundError(f"open_clip weights: expected {folder / WEIGHTS_FILE} (or a .bin/.pth) "
                                       f"beside {CONFIG_FILE}")
        name, pretrained, model_id = f"local-dir:{folder}", None, str(folder)
    elif architecture is not None and weights is not None:
        if architecture not in open_clip.list_models():
            raise ValueError(f"unknown open_clip architecture {architecture!r}")
        pretrained = str(require_file(weights, f"open_clip weights for {architecture}"))
        name, model_id = architecture, f"{architecture}:{pretrained}"
    else:
        raise ValueError("a CLIP model needs either 'path' (an open_clip folder) or 'architecture' and 'weights'")
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, precision=precision, load_weights=True)
    model.eval()
    tokenizer = open_clip.get_tokenizer(name)
    with torch.inference_mode():
        dim = int(model.encode_text(tokenizer(["a"]).to(device)).shape[-1])
    return ClipEncoder(model, preprocess, tokenizer, device, model_id, dim)
