"""Dense optical flow for the motion scorer: OpenCV DIS (default), Farneback, or torchvision's RAFT-small from a
local weights file (torch imported only for that backend)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = ["pair_flows"]


_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
_RAFT_CACHE: dict[str, Any] = {}


def _flows_dis(gray: np.ndarray, pairs: list[tuple[int, int]], preset: str, finest: int) -> list[np.ndarray]:
    dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset])
    dis.setFinestScale(finest)
    return [dis.calc(gray[a], gray[b], None) for a, b in pairs]


def _flows_farneback(gray: np.ndarray, pairs: list[tuple[int, int]]) -> list[np.ndarray]:
    return [
        cv2.calcOpticalFlowFarneback(gray[a], gray[b], None, 0.5, 3, 13, 3, 5, 1.1, 0) for a, b in pairs
    ]


def _raft_model(path: str) -> Any:
    if path in _RAFT_CACHE:
        return _RAFT_CACHE[path]
    import torch  # lazy: only the RAFT backend needs torch
    from torchvision.models.optical_flow import raft_small

    model = raft_small(weights=None, progress=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    model.load_state_dict(state)
    model.eval()
    _RAFT_CACHE[path] = model
    return model


def _flows_raft(gray: np.ndarray, pairs: list[tuple[int, int]], weights: str | None, iters: int) -> list[np.ndarray]:
    if weights is None:
        raise FileNotFoundError("motion flow_backend 'raft' needs raft_weights: a local raft_small state dict path")
    if not Path(weights).is_file():
        raise FileNotFoundError(f"RAFT weights not found: {weights}")
    import torch
    import torch.nn.functional as F

    model = _raft_model(str(weights))
    h, w = gray.shape[1:]
    # RAFT downsamples by 8 and its correlation pyramid needs >= 16 cells a side: work at >= 128 px, multiple of 8
    up = max(1.0, 128.0 / min(h, w))
    rh, rw = int(math.ceil(h * up / 8) * 8), int(math.ceil(w * up / 8) * 8)
    x = torch.from_numpy(gray).float().div_(127.5).sub_(1.0)[:, None]
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
    x = x.expand(-1, 3, -1, -1)
    a = torch.stack([x[i] for i, _ in pairs])
    b = torch.stack([x[j] for _, j in pairs])
    out = []
    with torch.inference_mode():
        for s in range(0, len(pairs), 16):
            flow = model(a[s : s + 16].contiguous(), b[s : s + 16].contiguous(), num_flow_updates=iters)[-1]
            if (rh, rw) != (h, w):
                flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
                flow = flow * torch.tensor([w / rw, h / rh]).view(1, 2, 1, 1)
            out.extend(f.permute(1, 2, 0).numpy().astype(np.float32) for f in flow)
    return out


def pair_flows(gray: np.ndarray, pairs: list[tuple[int, int]], cfg: Any) -> list[np.ndarray]:
    """Dense flow ``(H, W, 2)`` float32 (px, from frame a to frame b) for each pair of ``gray`` (N, H, W) uint8.

    ``cfg``: a ``MotionConfig`` (``flow_backend``, ``dis_preset``, ``dis_finest_scale``, ``raft_weights``,
    ``raft_iters``)."""
    if cfg.flow_backend == "dis":
        return _flows_dis(gray, pairs, cfg.dis_preset, cfg.dis_finest_scale)
    if cfg.flow_backend == "farneback":
        return _flows_farneback(gray, pairs)
    return _flows_raft(gray, pairs, cfg.raft_weights, cfg.raft_iters)
