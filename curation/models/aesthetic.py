"""The LAION aesthetic predictor: an MLP on L2-normalised CLIP ViT-L/14 image embeddings (the "improved
aesthetic predictor", ``sac+logos+ava1-l14-linearMSE.pth``), scoring roughly 1 (worst) to 10 (best).

The released head is ``layers`` = Linear(768, 1024), Dropout, Linear(1024, 128), Dropout, Linear(128, 64),
Dropout, Linear(64, 16), Linear(16, 1): no activations, so the module names and the state-dict keys
(``layers.0``, ``layers.2``, ``layers.4``, ``layers.6``, ``layers.7``) match the release and its ``.pth`` loads
as is. The original linear LAION-5B predictor (one ``Linear(768, 1)``, keys ``weight``/``bias``) loads too. The
input width is read from the file, so a head built for a tiny test CLIP loads the same way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from curation.models import require_file

HIDDEN = (1024, 128, 64, 16)


class AestheticMLP(nn.Module):
    """The released layer stack; ``input_dim`` 768 for CLIP ViT-L/14."""

    def __init__(self, input_dim: int = 768) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.layers = nn.Sequential(
            nn.Linear(input_dim, HIDDEN[0]), nn.Dropout(0.2),
            nn.Linear(HIDDEN[0], HIDDEN[1]), nn.Dropout(0.2),
            nn.Linear(HIDDEN[1], HIDDEN[2]), nn.Dropout(0.1),
            nn.Linear(HIDDEN[2], HIDDEN[3]),
            nn.Linear(HIDDEN[3], 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).squeeze(-1)


class AestheticLinear(nn.Module):
    """The first LAION-5B aesthetic predictor: one linear layer on the normalised embedding."""

    def __init__(self, input_dim: int = 768) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.linear = nn.Linear(input_dim, 1)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(embeddings).squeeze(-1)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_aesthetic_head(path: str | Path) -> nn.Module:
    """The aesthetic head in ``path`` (``.pth`` / ``.pt`` / ``.safetensors``), in eval mode."""
    file = require_file(path, "aesthetic predictor weights")
    state = _read_state_dict(file)
    if "layers.0.weight" in state:
        head: nn.Module = AestheticMLP(int(state["layers.0.weight"].shape[1]))
        state = {k: v for k, v in state.items() if k.startswith("layers.")}
    elif set(state) >= {"weight", "bias"}:
        head = AestheticLinear(int(state["weight"].shape[1]))
        state = {f"linear.{k}": v for k, v in state.items() if k in ("weight", "bias")}
    else:
        raise ValueError(f"{file}: not an aesthetic predictor state dict (keys: {sorted(state)[:6]}...)")
    head.load_state_dict(state)
    return head.eval()


def save_random_aesthetic_head(path: str | Path, input_dim: int, seed: int = 0) -> Path:
    """A random-initialised head with the released layer sizes on ``input_dim`` inputs, as safetensors."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    head = AestheticMLP(input_dim)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(out))
    return out


def aesthetic_scores(head: nn.Module, embeddings: np.ndarray) -> np.ndarray:
    """Scores of L2-normalised embeddings ``(N, D)``; float32 ``(N,)``."""
    if embeddings.shape[-1] != head.input_dim:
        raise ValueError(f"aesthetic head expects {head.input_dim}-d CLIP embeddings (ViT-L/14: 768), got "
                         f"{embeddings.shape[-1]}-d: the embed stage must use the CLIP model the head was trained on")
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
        return head(x).float().numpy()
