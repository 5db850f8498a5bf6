"""Small trainable heads on CLIP embeddings: the report's expert classifiers (synthetic images, overexposure)
and its quality regressor (1-5 human ratings).

``train_head(embeddings, targets, kind)`` fits a logistic (``hidden=0``) or one-hidden-layer MLP head with AdamW,
early-stopped on a held-out split whose metrics travel with the head. Inputs are standardised with the training
set's per-dimension mean and std (kept in the head), which matters for embeddings that all sit in a narrow cone.
A head is saved as ``<name>.safetensors`` (weights and the standardisation) plus ``<name>.json`` (kind, sizes,
target scaling, metrics) and loads with ``load_head``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from curation.models import require_file

HeadKind = Literal["binary", "regression"]
FORMAT_VERSION = 1


def _module(input_dim: int, hidden: int, dropout: float) -> nn.Sequential:
    if hidden <= 0:
        return nn.Sequential(nn.Linear(input_dim, 1))
    return nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))


@dataclass
class Head:
    """A trained head: ``predict`` gives probabilities (binary) or target-scale values (regression)."""

    kind: HeadKind
    net: nn.Sequential
    input_mean: np.ndarray
    input_std: np.ndarray
    hidden: int = 0
    target_mean: float = 0.0
    target_std: float = 1.0
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # free-form: name, embed model, training table

    @property
    def input_dim(self) -> int:
        return int(self.input_mean.shape[0])

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Scores of ``(N, D)`` embeddings: float32 ``(N,)``."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"head expects (N, {self.input_dim}) embeddings, got {x.shape}")
        z = torch.from_numpy((x - self.input_mean) / self.input_std)
        self.net.eval()
        with torch.inference_mode():
            out = self.net(z).squeeze(-1)
        if self.kind == "binary":
            return torch.sigmoid(out).numpy().astype(np.float32)
        return (out.numpy() * self.target_std + self.target_mean).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.safetensors``) and the ``.json`` beside it; returns the weights path."""
        from safetensors.torch import save_file

        out = Path(path)
        if out.suffix != ".safetensors":
            out = out.with_name(out.name + ".safetensors")
        out.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.detach().contiguous().clone() for k, v in self.net.state_dict().items()}
        tensors["input_mean"] = torch.from_numpy(self.input_mean.astype(np.float32))
        tensors["input_std"] = torch.from_numpy(self.input_std.astype(np.float32))
        meta = json.dumps({
            "format_version": FORMAT_VERSION, "kind": self.kind, "input_dim": self.input_dim, "hidden": self.hidden,
            "target_mean": self.target_mean, "target_std": self.target_std, "metrics": self.metrics,
            "info": self.info,
        }, indent=2, sort_keys=True)
        # Each file is written under a temporary name and renamed into place, so a run killed mid-write leaves
        # the previous head (or none), never a cut-off file that every later run fails to read.
        partial = out.with_name(out.name + ".partial")
        save_file(tensors, str(partial))
        partial_meta = out.with_name(out.stem + ".json.partial")
        partial_meta.write_text(meta)
        partial_meta.replace(out.with_suffix(".json"))
        partial.replace(out)
        return out


def load_head(path: str | Path) -> Head:
    """A head saved by ``Head.save`` (the ``.safetensors`` path; its ``.json`` must sit beside it)."""
    from safetensors.torch import load_file

    weights = require_file(path, "expert head weights")
    meta_path = require_file(weights.with_suffix(".json"), "expert head config")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") not in ("binary", "regression"):
        raise ValueError(f"{meta_path}: not an expert head config (format_version {FORMAT_VERSION})")
    tensors = load_file(str(weights))
    net = _module(int(meta["input_dim"]), int(meta["hidden"]), 0.0)
    net.load_state_dict({k[len("net."):]: v for k, v in tensors.items() if k.startswith("net.")})
    return Head(meta["kind"], net.eval(), tensors["input_mean"].numpy(), tensors["input_std"].numpy(),
                int(meta["hidden"]), float(meta["target_mean"]), float(meta["target_std"]), meta.get("metrics", {}),
                meta.get("info", {}))


def _split(n: int, val_fraction: float, rng: np.random.Generator, targets: np.ndarray,
           kind: HeadKind) -> tuple[np.ndarray, np.ndarray]:
    """Train / validation indices; stratified by class for binary heads so both splits hold both classes."""
    if kind == "binary":
        train, val = [], []
        for c in (0.0, 1.0):
            idx = rng.permutation(np.flatnonzero(targets == c))
            k = round(len(idx) * val_fraction) if len(idx) > 1 else 0
            val.append(idx[:k])
            train.append(idx[k:])
        return np.concatenate(train), np.concatenate(val)
    idx = rng.permutation(n)
    k = round(n * val_fraction)
    return idx[k:], idx[:k]


def _metrics(kind: HeadKind, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    if len(target) == 0:
        return {}
    if kind == "binary":
        out = {"accuracy": float(((pred >= 0.5) == (target >= 0.5)).mean()), "n": float(len(target))}
        pos, neg = pred[target >= 0.5], pred[target < 0.5]
        if len(pos) and len(neg):  # AUC: probability a positive outranks a negative
            out["auc"] = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
        return out
    err = pred - target
    out = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())), "n": float(len(target))}
    if len(target) > 2 and target.std() > 0 and pred.std() > 0:
        out["pearson"] = float(np.corrcoef(pred, target)[0, 1])
    return out


def train_head(embeddings: np.ndarray, targets: np.ndarray, kind: HeadKind = "binary", *, hidden: int = 64,
               epochs: int = 300, lr: float = 3e-3, weight_decay: float = 1e-3, dropout: float = 0.1,
               val_fraction: float = 0.2, patience: int = 30, seed: int = 0,
               info: dict[str, Any] | None = None) -> Head:
    """Fit a head on ``(N, D)`` embeddings. ``kind="binary"``: targets 0/1, BCE loss, sigmoid output.
    ``kind="regression"``: real targets (e.g. 1-5 ratings), MSE on standardised targets. Full-batch AdamW,
    early stopping on the held-out ``val_fraction`` (the best epoch's weights are kept); held-out metrics go
    to ``Head.metrics``."""
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(targets, dtype=np.float32).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"need (N, D) embeddings and N targets with N >= 2, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("embeddings or targets hold NaN/inf")
    if kind == "binary":
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("binary head targets must be 0 or 1")
        if len(np.unique(y)) < 2:
            raise ValueError("binary head needs examples of both classes")
    elif kind != "regression":
        raise ValueError(f"kind must be 'binary' or 'regression', got {kind!r}")
    rng = np.random.default_rng(seed)
    tr, va = _split(len(y), val_fraction, rng, y, kind)
    mean = x[tr].mean(0)
    std = x[tr].std(0) + 1e-6
    t_mean, t_std = (float(y[tr].mean()), float(y[tr].std() + 1e-6)) if kind == "regression" else (0.0, 1.0)
    z = torch.from_numpy((x - mean) / std)
    yt = torch.from_numpy((y - t_mean) / t_std)
    torch.manual_seed(seed)
    net = _module(x.shape[1], hidden, dropout)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if kind == "binary" else nn.MSELoss()
    tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
    best, best_state, since = float("inf"), None, 0
    for _ in range(epochs):
        net.train()
        opt.zero_grad()
        loss = loss_fn(net(z[tr_t]).squeeze(-1), yt[tr_t])
        loss.backward()
        opt.step()
        if len(va) == 0:
            continue
        net.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(net(z[va_t]).squeeze(-1), yt[va_t]))
        if val_loss < best - 1e-6:
            best, best_state, since = val_loss, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            since += 1
            if since >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    head = Head(kind, net.eval(), mean, std, hidden, t_mean, t_std, {}, dict(info or {}))
    head.metrics = {f"val_{k}": v for k, v in _metrics(kind, head.predict(x[va]), y[va]).items()}
    head.metrics.update({f"train_{k}": v for k, v in _metrics(kind, head.predict(x[tr]), y[tr]).items()})
    return head
