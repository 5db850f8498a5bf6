"""Model side of the encode job: the Wan-VAE and umT5 actors (one model load per actor, GPU when asked).

``LatentEncoder`` turns rows of bucket pixels into posterior mean and logvar (``WanVAE.encode``), a bucket's clips
batched together; ``TextEncoder`` turns distinct captions into umT5 embeddings ([tokens, dim], no padding). Both
return bytes + shape + dtype (``tensor_bytes``). Weights come from local folders (``load_vae``, ``UMT5TextEncoder``);
the tiny random models of ``wanmodel.pipelines.tiny`` stand in for tests and the demo.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from curation.lake.schemas import STATUS_ERROR, STATUS_OK

if TYPE_CHECKING:
    import torch

__all__ = ["ENCODED", "EmbedSettings", "LatentEncoder", "TextEncoder", "VAESettings"]

ENCODED = pa.schema([
    pa.field("latent_id", pa.string(), nullable=False),
    pa.field("mean", pa.large_binary()),
    pa.field("logvar", pa.large_binary()),
    pa.field("shape", pa.list_(pa.int32())),
    pa.field("dtype", pa.string()),
    pa.field("latents_mean", pa.list_(pa.float32())),  # the encoding VAE's latent statistics (VAEConfig)
    pa.field("latents_std", pa.list_(pa.float32())),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("encoded_at", pa.timestamp("us", tz="UTC")),
])
"""What ``LatentEncoder`` returns: one row per clip; the driver adds the clip's caption and lineage."""


def _device(on_gpu: bool) -> str:
    import torch

    if on_gpu and not torch.cuda.is_available():
        raise RuntimeError("num_gpus > 0 but this actor sees no CUDA device")
    return "cuda" if on_gpu else "cpu"


@dataclass(frozen=True)
class VAESettings:
    """What ``LatentEncoder`` needs (picklable)."""

    path: str
    store_dtype: str
    batch_size: int
    on_gpu: bool
    compute_dtype: str = "float32"


class LatentEncoder:
    """VAE actor: rows of bucket pixels -> posterior mean/logvar rows (errors passed through as error rows)."""

    def __init__(self, settings: VAESettings) -> None:
        import torch

        from wanmodel.models.vae_adapters import load_vae

        self.settings = settings
        self.device = _device(settings.on_gpu)
        self.dtype = getattr(torch, settings.compute_dtype)
        self.vae = load_vae(settings.path, device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self.stats = {"latents_mean": list(self.vae.config.latents_mean),  # written into every row
                      "latents_std": list(self.vae.config.latents_std)}

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.Table.from_pylist(self.encode_rows(batch.to_pylist()), schema=ENCODED)

    def encode_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = dt.datetime.now(dt.UTC)
        out: dict[str, dict[str, Any]] = {}
        by_bucket: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["error"] is not None:
                out[row["latent_id"]] = {"latent_id": row["latent_id"], "status": STATUS_ERROR,
                                         "error": row["error"], "encoded_at": now}
            else:
                by_bucket[row["bucket"]].append(row)
        for group in by_bucket.values():
            for start in range(0, len(group), self.settings.batch_size):
                chunk = group[start:start + self.settings.batch_size]
                for r in self._encode(chunk):
                    out[r["latent_id"]] = {**r, "encoded_at": now}
        return [out[r["latent_id"]] for r in rows]

    def _encode(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import torch

        from wanmodel.data.tensor_bytes import to_bytes

        try:
            video = torch.stack([pixels_to_video(r["pixels"], r["shape"]) for r in rows])
            with torch.no_grad():
                post = self.vae.encode(video.to(self.device, self.dtype))
        except Exception as e:  # noqa: BLE001 - a batch the VAE refuses is an error row per clip
            return [{"latent_id": r["latent_id"], "status": STATUS_ERROR, "error": f"vae: {type(e).__name__}: {e}"}
                    for r in rows]
        out = []
        for r, mean, logvar in zip(rows, post.mean, post.logvar):
            m, shape, dtype = to_bytes(mean, self.settings.store_dtype)
            lv, _, _ = to_bytes(logvar, self.settings.store_dtype)
            out.append({"latent_id": r["latent_id"], "mean": m, "logvar": lv, "shape": shape, "dtype": dtype,
                        **self.stats, "status": STATUS_OK, "error": None})
        return out


def pixels_to_video(data: bytes, shape: list[int]) -> torch.Tensor:
    """RGB uint8 (T, H, W, 3) bytes -> the VAE's input (3, T, H, W) float32 in [-1, 1]."""
    import torch

    frames = np.frombuffer(data, np.uint8).reshape(shape)
    return torch.from_numpy(frames.copy()).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


@dataclass(frozen=True)
class EmbedSettings:
    """What ``TextEncoder`` needs (picklable)."""

    model: str
    tokenizer: str | None
    encoder_id: str
    text_len: int
    store_dtype: str
    on_gpu: bool


class TextEncoder:
    """umT5 actor: rows of (text_key, text) -> ``text_embeddings`` rows."""

    def __init__(self, settings: EmbedSettings) -> None:
        from wanmodel.text.umt5 import UMT5TextEncoder

        self.settings = settings
        self.encoder = UMT5TextEncoder(settings.model, settings.tokenizer, text_len=settings.text_len,
                                       device=_device(settings.on_gpu))

    def __call__(self, batch: pa.Table) -> pa.Table:
        from curation.lake.schemas import schema_for

        return pa.Table.from_pylist(self.embed_rows(batch.to_pylist()), schema=schema_for("text_embeddings"))

    def embed_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from wanmodel.data.tensor_bytes import to_bytes

        base = [{"text_key": r["text_key"], "text": r["text"], "encoder_id": self.settings.encoder_id} for r in rows]
        try:
            embeddings = self.encoder.encode([r["text"] for r in rows])
        except Exception as e:  # noqa: BLE001 - recorded per caption
            return [{**b, "status": STATUS_ERROR, "error": f"umt5: {type(e).__name__}: {e}"} for b in base]
        out = []
        for b, emb in zip(base, embeddings):
            data, shape, dtype = to_bytes(emb, self.settings.store_dtype)
            out.append({**b, "embedding": data, "shape": shape, "dtype": dtype, "status": STATUS_OK, "error": None})
        return out
