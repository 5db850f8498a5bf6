"""Training metrics of the DiT: the analytic FLOP count, MFU, and the writers (JSON lines, TensorBoard, tqdm).

FLOPs count multiply-adds as 2 and include every matrix product of the forward pass: patch embedding, text and
time MLPs, per block the self-attention projections and its ``QK^T`` and ``AV`` products, the cross-attention
(queries from the video tokens, keys and values from the ``text_len`` text tokens the model pads to), the MLP,
and the head. A training step is 3 forward passes (backward = 2x forward); activation checkpointing recomputes a
forward more, which MFU, by convention, does not count (it is model FLOPs utilisation).
"""
from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

from wanmodel.models.flops import dit_forward_flops

__all__ = ["MetricsWriter", "dit_forward_flops", "dit_train_flops", "logged_losses", "peak_flops_per_device",
           "peak_memory_bytes"]

H100_BF16_DENSE = 790e12  # measured bf16 dense matmul ceiling on the lent H100 (notes/ENVIRONMENT.md)
def dit_train_flops(config: Any, latent_shape: tuple[int, int, int, int]) -> int:
    """Model FLOPs of one sample's training step: forward + backward (2x forward)."""
    return 3 * dit_forward_flops(config, latent_shape)


def _measure_cpu_flops(size: int = 512, repeats: int = 8) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def peak_flops_per_device(device: torch.device, configured_tflops: float | None) -> float:
    """The ceiling MFU is measured against: configured, else the H100's measured bf16 dense rate on CUDA, else
    a float32 matmul measured here on CPU."""
    if configured_tflops is not None:
        return configured_tflops * 1e12
    if device.type == "cuda":
        return H100_BF16_DENSE
    return _measure_cpu_flops()


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this worker: allocated device memory on CUDA, the process's peak resident set on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class MetricsWriter:
    """Rank 0's metrics: ``metrics.jsonl`` (one object per logged step), TensorBoard events under ``tb/``, a tqdm
    bar when stderr is a terminal. Other ranks get a writer that does nothing."""

    def __init__(self, directory: str | None, *, total: int, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.jsonl = self.tb = self.bar = None
        if not enabled:
            return
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.jsonl = open(Path(directory) / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
            self.tb = _tensorboard(Path(directory) / "tb")
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def progress(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if math.isfinite(loss):
                self.bar.set_postfix(loss=f"{loss:.4f}")

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.jsonl is not None:
            self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
            self.jsonl.flush()
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
                    self.tb.add_scalar(f"train/{key}", value, step)
            self.tb.flush()

    def close(self) -> None:
        for item in (self.jsonl, self.tb, self.bar):
            if item is not None:
                item.close()


def logged_losses(directory: str | None) -> tuple[dict[int, float], dict[int, float]]:
    """(step -> training loss, step -> held-out loss) from a run's ``metrics.jsonl``, over all its processes (a
    step logged again after a resume holds the same value, bit for bit)."""
    path = Path(directory) / "metrics.jsonl" if directory else None
    if path is None or not path.is_file():
        return {}, {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return ({r["step"]: r["loss"] for r in records if "loss" in r},
            {r["step"]: r["val_loss"] for r in records if "val_loss" in r})


def _tensorboard(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: JSON lines only
        return None
    return SummaryWriter(str(directory))
