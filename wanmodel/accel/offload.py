"""Memory modes for sampling: model offload between stages, sequential block offload with prefetch, and an
analytical estimate of the peak device memory under each mode.

- ``on_device(module, device)``: a context manager that moves a model (an ``nn.Module``, or an object holding one
  as ``.model`` with a ``.device`` attribute, such as ``UMT5TextEncoder``) to the compute device for one stage
  and back to where it was afterwards (the CPU), emptying the CUDA cache; so the text encoder, DiT and VAE are
  each on the GPU only while used. (umT5 on the CPU for good is ``text_device="cpu"`` in
  ``wanmodel.pipelines.t2v.load_components``; nothing here duplicates it.)
- ``enable_block_offload(model, device)``: the DiT's blocks live on the CPU (in pinned memory when the device is
  CUDA); everything else moves to ``device``. A forward pre-hook on block i gives it device copies of its
  parameters and buffers (waiting for the prefetch, or copying now) and starts copying block i+1 on a side CUDA
  stream; a forward hook points block i back at its CPU tensors, dropping the device copies (weights are not
  written during inference, so nothing is copied back). At most two blocks are on the device. On a CPU-only
  machine the same hooks run with ``device="cpu"`` (the copies are plain CPU copies, no stream), so tests check
  the outputs and the hook order. Returns a ``BlockOffload`` handle; ``remove()`` (or leaving its ``with``)
  takes the hooks off and leaves the blocks on the CPU. For inference (no gradients through swapped weights).
- ``estimate_peak_memory(mode, ...)``: peak device bytes of a Wan sampling run (default the 1.3B at 480p x 81
  frames: 21 x 30 x 52 = 32760 tokens, CFG batch 2) under ``MEMORY_MODES``, from weights resident, the live
  activations of one block, the attention workspace and the VAE's chunked decode; the formulas are in the
  docstrings of the ``_`` helpers. An estimate, not a measurement: ``perf/sampling.py`` measures the GPU peak.

Conventions: byte counts are ints; ``dtype_bytes`` is the size of the compute dtype (2 for bf16).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any, Self

import torch
from torch import nn

from wanmodel.models.dit import FP32_PARAMETERS, DiTConfig, WanDiT
from wanmodel.models.vae import CACHE_T
from wanmodel.models.vae_config import VAEConfig

__all__ = ["MEMORY_MODES", "UMT5_XXL_ENCODER_PARAMS", "BlockOffload", "MemoryEstimate", "enable_block_offload",
           "estimate_peak_memory", "memory_table", "on_device"]

MEMORY_MODES = ("resident", "text-cpu", "model-offload", "block-offload")
# umT5-XXL encoder: 256384 x 4096 embeddings + 24 layers of (4 x 4096^2 attention + 3 x 4096 x 10240 gated FFN);
# the released models_t5_umt5-xxl-enc-bf16.pth is 11.4 GB.
UMT5_XXL_ENCODER_PARAMS = 5_680_000_000
GIB = 2**30


# ------------------------------------------------------------------------------------------- model offload
def _module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def on_device(model: Any, device: torch.device | str) -> Iterator[Any]:
    """Move ``model`` to ``device`` for the ``with`` body, then back to the device it was on (its first
    parameter's); yields ``model``. Takes an ``nn.Module`` or an object with an ``nn.Module`` ``.model`` and a
    ``.device`` (the text encoder wrappers), whose ``.device`` follows. Not for a model under
    ``enable_block_offload`` (its blocks must stay on the CPU)."""
    module = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if not isinstance(module, nn.Module):
        raise TypeError(f"on_device takes an nn.Module or an object with an nn.Module .model, "
                        f"got {type(model).__name__}")
    if getattr(module, "_block_offload", None) is not None:
        raise ValueError("this model has block offload enabled; its blocks stay on the CPU (remove() it first)")
    device = torch.device(device)
    home = _module_device(module)
    wrapper_device = getattr(model, "device", None) if module is not model else None
    module.to(device)
    if module is not model:
        model.device = device
    try:
        yield model
    finally:
        module.to(home)
        if module is not model:
            model.device = wrapper_device
        if device.type == "cuda":
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- block offload
@dataclass
class _Slot:
    """One parameter or buffer of a block: where it hangs and its CPU copy."""

    owner: nn.Module
    name: str
    is_parameter: bool
    store: torch.Tensor

    def point_at(self, tensor: torch.Tensor) -> None:
        if self.is_parameter:
            self.owner._parameters[self.name].data = tensor
        else:
            self.owner._buffers[self.name] = tensor


def _block_slots(block: nn.Module, pin: bool) -> list[_Slot]:
    slots = []
    for module in block.modules():
        for table, is_parameter in ((module._parameters, True), (module._buffers, False)):
            for name, tensor in table.items():
                if tensor is None:
                    continue
                store = tensor.detach().to("cpu")
                if pin and not store.is_pinned():
                    store = store.pin_memory()
                slot = _Slot(module, name, is_parameter, store)
                slot.point_at(store)
                slots.append(slot)
    return slots


@dataclass
class BlockOffload:
    """Handle of ``enable_block_offload``. ``events`` logs ``("fetch", i)`` (a copy of block i started),
    ``("enter", i)`` (block i runs on device copies) and ``("release", i)`` (its copies dropped)."""

    model: nn.Module
    device: torch.device
    prefetch: bool
    slots: list[list[_Slot]]
    events: list[tuple[str, int]] = field(default_factory=list)
    _hooks: list[Any] = field(default_factory=list)
    _pending: dict[int, tuple[list[torch.Tensor], Any]] = field(default_factory=dict)
    _stream: Any = None

    def _fetch(self, index: int) -> None:
        """Start copying block ``index``'s tensors to the device (on the side stream when there is one)."""
        self.events.append(("fetch", index))
        stream = self._stream
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            copies = [torch.empty_like(slot.store, device=self.device).copy_(slot.store, non_blocking=True)
                      for slot in self.slots[index]]
            done = torch.cuda.Event() if stream is not None else None
            if done is not None:
                done.record(stream)
        self._pending[index] = (copies, done)

    def _before(self, index: int, module: nn.Module, args: Any) -> None:
        if index not in self._pending:
            self._fetch(index)
        copies, done = self._pending.pop(index)
        if done is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(done)
            for tensor in copies:
                tensor.record_stream(compute)  # the side stream's memory is not reused while compute reads it
        for slot, tensor in zip(self.slots[index], copies):
            slot.point_at(tensor)
        self.events.append(("enter", index))
        following = index + 1
        if self.prefetch and following < len(self.slots) and following not in self._pending:
            self._fetch(following)

    def _after(self, index: int, module: nn.Module, args: Any, output: Any) -> None:
        for slot in self.slots[index]:
            slot.point_at(slot.store)
        self.events.append(("release", index))

    def remove(self) -> None:
        """Take the hooks off; every block is left on its CPU tensors. Safe to call twice."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._pending.clear()
        for slots in self.slots:
            for slot in slots:
                slot.point_at(slot.store)
        if getattr(self.model, "_block_offload", None) is self:
            self.model._block_offload = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def enable_block_offload(model: nn.Module, device: torch.device | str, *, blocks: str = "blocks",
                         prefetch: bool = True, pin_memory: bool | None = None) -> BlockOffload:
    """Sequential block offload of ``model`` (a ``WanDiT``, or any module whose ``blocks`` attribute is a list
    of modules called in order) onto ``device``; see the module docstring. ``pin_memory`` defaults to whether
    ``device`` is CUDA. Returns the handle (also usable as a context manager)."""
    device = torch.device(device)
    layers = getattr(model, blocks, None)
    if not isinstance(layers, (nn.ModuleList, nn.Sequential)) or len(layers) == 0:
        raise ValueError(f"{type(model).__name__}.{blocks} must be a non-empty ModuleList of blocks, "
                         f"got {type(layers).__name__}")
    if getattr(model, "_block_offload", None) is not None:
        raise ValueError("block offload is already enabled on this model; remove() the first handle")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    pin = device.type == "cuda" if pin_memory is None else pin_memory
    for name, child in model.named_children():
        if name != blocks:
            child.to(device)
    for param in model._parameters.values():
        if param is not None:
            param.data = param.data.to(device)
    for name, buffer in model._buffers.items():
        if buffer is not None:
            model._buffers[name] = buffer.to(device)
    stream = torch.cuda.Stream(device) if device.type == "cuda" and prefetch else None
    handle = BlockOffload(model, device, prefetch, [_block_slots(layer, pin) for layer in layers], _stream=stream)
    for index, layer in enumerate(layers):
        handle._hooks.append(layer.register_forward_pre_hook(partial(handle._before, index)))
        handle._hooks.append(layer.register_forward_hook(partial(handle._after, index), always_call=True))
    model._block_offload = handle
    return handle


# ------------------------------------------------------------------------------------------ memory estimate
@dataclass(frozen=True)
class MemoryEstimate:
    """Peak device bytes of one sampling run under ``mode``: ``stages`` the bytes while each stage (text, dit,
    vae) runs, ``terms`` the named parts they are built from."""

    mode: str
    peak_bytes: int
    peak_stage: str
    stages: dict[str, int]
    terms: dict[str, int]

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB


@cache
def _dit_weight_bytes(config: DiTConfig, dtype_bytes: int, fp8: bool, released: bool = False) -> tuple[int, int]:
    """(bytes outside the blocks, bytes of one block): ``FP32_PARAMETERS`` at 4 bytes, the rest at
    ``dtype_bytes``; ``fp8`` adds one byte per block-linear weight (the e4m3 copy) and its float32 scale,
    ``released`` (with ``fp8``) drops the original block-linear weights (``release_weights``)."""
    model = WanDiT.from_config(config, device="meta")
    rest, block = 0, 0
    for name, param in model.named_parameters():
        size = param.numel() * (4 if any(part in name for part in FP32_PARAMETERS) else dtype_bytes)
        if name.startswith("blocks.0."):
            if fp8 and param.ndim == 2:  # a block linear's weight: its e4m3 copy and float32 scale, the original
                size = (0 if released else size) + param.numel() + 4
            block += size
        elif not name.startswith("blocks."):
            rest += size
    return rest, block


def _dit_activation_bytes(config: DiTConfig, tokens: int, batch: int, dtype_bytes: int, fp8: bool,
                          attention: str) -> dict[str, int]:
    """Live activations of one block (no grad), counted from ``WanBlock.forward``, n = batch * tokens, a =
    dtype_bytes, d = dim, f = ffn_dim (the tests measure a real block's live bytes and find these within 10 %):
    - self-attention stage: the float32 block input (4nd), the modulated input, q, k, v (4a nd), and up to
      four float32 [n, d] temporaries of RMSNorm + RoPE on k (16nd);
    - FFN stage: the block input (4nd, still held by the caller's loop) and the new float32 residual (4nd), the
      FFN input and the cross-attention output (2a nd), the hidden and its GELU (2a nf), with fp8 their e4m3
      copies (nd + nf);
    - attention workspace: flash / sage keep the output (a nd) and the log-sum-exp (4 n heads), sage its int8
      q, k (2nd); ``"math"`` (torch's sdpa fallback) holds the score matrix, a * batch * heads * tokens^2;
    - the padded text context (batch * text_len * d * a) and the latent state (noise, latents, velocity, the
      guided velocity: 4 x 4 bytes per latent element) live across blocks."""
    n, d, f, a = batch * tokens, config.dim, config.ffn_dim, dtype_bytes
    heads = config.num_heads
    attention_stage = (4 + 4 * a + 16) * n * d
    ffn_stage = (8 + 2 * a) * n * d + 2 * a * n * f + ((n * d + n * f) if fp8 else 0)
    workspace = {"flash": a * n * d + 4 * n * heads, "sage": a * n * d + 4 * n * heads + 2 * n * d,
                 "math": a * batch * heads * tokens**2 + a * n * d}
    if attention not in workspace:
        raise ValueError(f"unknown attention workspace {attention!r}; choose from {sorted(workspace)}")
    latent_elements = batch * tokens * math.prod(config.patch_size) * config.out_dim
    return {"dit_block_activations": max(attention_stage + workspace[attention], ffn_stage),
            "attention_workspace": workspace[attention],
            "dit_context": batch * config.text_len * d * a,
            "latent_state": 4 * 4 * latent_elements}


def _vae_decode_bytes(config: VAEConfig, height: int, width: int, frames: int, dtype_bytes: int
                      ) -> dict[str, int]:
    """Chunked decode (one latent frame per call, 4 video frames after the two temporal upsamples), from the
    ``Decoder3d`` layout: channels per stage ``base_dim * dim_mult`` reversed (halved after each upsample),
    spatial size doubling per stage from H/8 x W/8.
    - feature cache: every kernel-3 causal convolution keeps ``CACHE_T`` frames of its input;
    - workspace: live tensors of the widest stage's residual block (input, norm, padded conv input of
      T + CACHE_T frames, conv output, shortcut), 4 * C * (T + CACHE_T) * h * w (3.7 measured on real decodes;
      the tests check cache + workspace against a real chunk's live bytes);
    - output: the decoded video (3 channels, float32) and its concatenation (2x)."""
    dims = [config.base_dim * m for m in (config.dim_mult[-1], *config.dim_mult[::-1])]
    upsample_time = config.temperal_downsample[::-1]
    h, w, t = height // config.spatial_factor, width // config.spatial_factor, 1
    cache = CACHE_T * (config.z_dim + 2 * 2 * dims[0]) * h * w  # conv1, two middle residual blocks
    workspace = 4 * dims[0] * (t + CACHE_T) * h * w
    for stage in range(len(dims) - 1):
        in_dim, out_dim = dims[stage] // (2 if stage else 1), dims[stage + 1]
        for _ in range(config.num_res_blocks + 1):
            cache += CACHE_T * (in_dim + out_dim) * h * w  # its two causal convolutions
            workspace = max(workspace, 4 * max(in_dim, out_dim) * (t + CACHE_T) * h * w)
            in_dim = out_dim
        if stage != len(dims) - 2:
            if upsample_time[stage]:
                cache += CACHE_T * out_dim * h * w  # the time convolution of upsample3d
                t *= 2
            h, w = h * 2, w * 2
    cache += CACHE_T * dims[-1] * h * w  # head convolution
    return {"vae_feature_cache": cache * dtype_bytes, "vae_workspace": workspace * dtype_bytes,
            "video_output": 2 * 3 * frames * height * width * 4}


@cache
def _vae_weight_bytes(config: VAEConfig, dtype_bytes: int) -> int:
    from wanmodel.models.vae import WanVAE

    with torch.device("meta"):
        vae = WanVAE(config)
    return sum(p.numel() for p in vae.parameters()) * dtype_bytes


def estimate_peak_memory(mode: str = "block-offload", *, dit: DiTConfig | str = "1.3B", vae: VAEConfig | str = "wan2.1",
                         frames: int = 81, height: int = 480, width: int = 832, dtype_bytes: int = 2,
                         vae_dtype_bytes: int = 2, cfg_batch: int = 2, fp8: bool = False,
                         fp8_release_weights: bool = False, attention: str = "flash",
                         text_encoder_params: int = UMT5_XXL_ENCODER_PARAMS) -> MemoryEstimate:
    """Peak device memory of sampling one video under ``mode`` (one of ``MEMORY_MODES``, each adding to the last):
    - ``resident``: text encoder, DiT and VAE all on the device throughout;
    - ``text-cpu``: the text encoder on the CPU (``text_device="cpu"``);
    - ``model-offload``: also the DiT and VAE on the device only during their stage (``on_device``);
    - ``block-offload``: also the DiT's blocks streamed (``enable_block_offload``: two blocks resident).
    ``cfg_batch`` 2 is conditional and unconditional passes in one DiT call (the pipelines' default); ``fp8``
    adds the blocks' e4m3 weights, ``fp8_release_weights`` drops their originals (``quantize_linears``)."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"unknown memory mode {mode!r}; choose from {MEMORY_MODES}")
    config = DiTConfig.named(dit) if isinstance(dit, str) else dit
    vae_config = VAEConfig.preset(vae) if isinstance(vae, str) else vae
    if frames < 1 or (frames - 1) % vae_config.temporal_factor or height % 16 or width % 16:
        raise ValueError(f"frames must be 1 + 4k and height, width multiples of 16; got {frames}, {height}x{width}")
    latent_frames = (frames - 1) // vae_config.temporal_factor + 1
    pt, ph, pw = config.patch_size
    tokens = (latent_frames // pt) * (height // vae_config.spatial_factor // ph) * \
        (width // vae_config.spatial_factor // pw)
    rest, block = _dit_weight_bytes(config, dtype_bytes, fp8, fp8 and fp8_release_weights)
    terms = {"text_encoder_weights": text_encoder_params * dtype_bytes,
             "dit_weights": rest + config.num_layers * block, "dit_streamed_weights": rest + 2 * block,
             "vae_weights": _vae_weight_bytes(vae_config, vae_dtype_bytes), "tokens": tokens,
             **_dit_activation_bytes(config, tokens, cfg_batch, dtype_bytes, fp8, attention),
             **_vae_decode_bytes(vae_config, height, width, frames, vae_dtype_bytes)}
    dit_work = terms["dit_block_activations"] + terms["dit_context"] + terms["latent_state"]
    vae_work = terms["vae_feature_cache"] + terms["vae_workspace"] + terms["video_output"]
    level = MEMORY_MODES.index(mode)
    text_resident = terms["text_encoder_weights"] if level == 0 else 0
    dit_weights = terms["dit_streamed_weights"] if level >= 3 else terms["dit_weights"]
    if level >= 2:
        stages = {"text": 0, "dit": dit_weights + dit_work, "vae": terms["vae_weights"] + vae_work}
    else:
        resident = text_resident + dit_weights + terms["vae_weights"]
        stages = {"text": resident, "dit": resident + dit_work, "vae": resident + vae_work}
    peak_stage = max(stages, key=stages.__getitem__)
    return MemoryEstimate(mode, stages[peak_stage], peak_stage, stages, terms)


def memory_table(**kwargs: Any) -> list[MemoryEstimate]:
    """``estimate_peak_memory`` for every mode in ``MEMORY_MODES`` (same keyword arguments)."""
    return [estimate_peak_memory(mode, **kwargs) for mode in MEMORY_MODES]
