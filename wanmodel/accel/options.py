"""The speed and memory switches of a sampling pipeline, applied to a built pipeline in one place (``wan sample``'s
``--fp8``, ``--attention`` and ``--offload``; the diffusion cache is per call: ``generate(cache=...)``).

- ``fp8``: ``"off"``, ``"fp8"`` (FP8 GEMMs through ``torch._scaled_mm`` where the GPU has them, the plain linear
  elsewhere) or ``"fp8-sim"`` (quantise-dequantise, for measuring the error on any machine); one swap of the
  blocks' linear layers (``wanmodel.accel.fp8.quantize_linears``).
- ``attention``: a backend of the one attention entry point (``sdpa``, ``flash``, ``sage`` = 8-bit QK^T), or None
  to keep the model's.
- ``offload``: ``"none"``; ``"model"``: every model (text encoder, CLIP, DiT, VAE) waits on the CPU and is on the
  compute device only for its stage (``on_device``); ``"blocks"``: the DiT's blocks stream through the device one
  at a time with prefetch (``enable_block_offload``), the text encoder stays on the CPU, the VAE and the DiT's
  small outer layers on the device. Both expect the pipeline to have been loaded on the CPU with ``device`` set to
  the compute device (``load_pipeline_for`` in ``wanmodel.cli_sample`` does this); the sampled latents equal the
  resident pipeline's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["OFFLOAD_MODES", "SpeedOptions", "apply_speed_options"]

OFFLOAD_MODES = ("none", "model", "blocks")
STAGE_MODELS = ("text_encoder", "image_encoder", "dit", "vae")  # the pipeline attributes a stage runs


@dataclass(frozen=True)
class SpeedOptions:
    fp8: str = "off"
    attention: str | None = None
    offload: str = "none"

    def __post_init__(self) -> None:
        from wanmodel.accel.fp8 import FP8_MODES
        from wanmodel.models.attention import BACKENDS

        if self.fp8 not in FP8_MODES:
            raise ValueError(f"fp8 must be one of {FP8_MODES}, got {self.fp8!r}")
        if self.attention is not None and self.attention not in BACKENDS:
            raise ValueError(f"attention must be one of {BACKENDS}, got {self.attention!r}")
        if self.attention is not None:  # a kernel that is not installed fails here, before any model loads
            from wanmodel.models.attention import _INSTALL_HINT, available_backends

            if self.attention in _INSTALL_HINT and self.attention not in available_backends():
                raise ValueError(f"attention backend {self.attention!r} needs {_INSTALL_HINT[self.attention]}, "
                                 f"which is not installed here")
        if self.offload not in OFFLOAD_MODES:
            raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {self.offload!r}")

    @property
    def loads_on_cpu(self) -> bool:
        """Whether the models should be loaded on the CPU (an offload mode moves them itself)."""
        return self.offload != "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_speed_options(pipeline: Any, options: SpeedOptions) -> dict[str, Any]:
    """Apply ``options`` to ``pipeline`` (a ``WanT2VPipeline`` or ``WanI2VPipeline``) in place; returns what was
    done (layers swapped to FP8, the attention backend, the offload mode), for the run's record."""
    from wanmodel.accel.fp8 import quantize_linears, set_attention_backend

    done: dict[str, Any] = options.to_dict()
    if options.attention is not None:
        set_attention_backend(pipeline.dit, options.attention)
    if options.fp8 != "off":
        done["fp8_layers"] = quantize_linears(pipeline.dit, options.fp8)
    device = torch.device(pipeline.device)
    if options.offload == "model":
        pipeline.stage_offload = frozenset(STAGE_MODELS)
    elif options.offload == "blocks":
        from wanmodel.accel.offload import enable_block_offload

        pipeline.vae.to(device)
        pipeline.stage_offload = frozenset({"image_encoder"})  # CLIP runs once per sample: on the device for it
        pipeline.block_offload = enable_block_offload(pipeline.dit, device)
    return done
