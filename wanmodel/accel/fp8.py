"""FP8 (e4m3) GEMM for the DiT's linear layers, and the switch of its attention kernel.

Quantisation (``torch.float8_e4m3fn``: 1 sign, 4 exponent, 3 mantissa bits, largest finite 448):
- weights: one float32 scale per tensor, ``amax(|W|) / 448``, so the largest weight maps to 448;
- activations: one float32 scale per token (per row of the [tokens, features] matrix), ``amax(|x_row|) / 448``.
``quantize`` divides by the scale, clamps to +-448 and rounds to e4m3 (round to nearest even); ``dequantize``
multiplies back in float32. A zero row or tensor gets scale 1 (all its values quantise to 0 exactly).

``FP8Linear`` replaces an ``nn.Linear`` (built by ``FP8Linear.from_linear``; it keeps the *same* weight and bias
parameters, plus the e4m3 weight and its scale as buffers). Its ``mode``:
- ``"fp8"``: where ``fp8_kernel_available`` holds (a CUDA device of compute capability >= 8.9, both feature
  sizes multiples of 16), the activations are quantised per token and multiplied with ``torch._scaled_mm``
  (row-wise scales: ``scale_a`` [M, 1], ``scale_b`` [1, N], bf16 out, the row-major [N, K] e4m3 weight passed
  transposed, i.e. column-major); the bias is added in bf16 and the result is cast to the dtype the plain layer
  would give. Everywhere else (CPU, older GPUs, odd sizes) it FALLS BACK to the plain linear on the original
  weight: ``F.linear(x, weight, bias)``, bit-identical to the ``nn.Linear`` it replaced (bf16 under autocast or
  with bf16 weights, else the input dtype).
- ``"fp8-sim"``: quantise and dequantise activations and weight, then matmul in float32 (autocast off). It runs
  anywhere and gives the FP8 path's quantisation error (not its speed), so CPU tests can measure it.
The original weight is kept so the fallback stays exact; on an FP8 GPU ``release_weight`` (``quantize_linears(...,
release_weights=True)``) drops it to save its memory, and the fallback then uses the dequantised e4m3 weight.
torchao is not used (not required; ``torch._scaled_mm`` is the kernel torchao's float8 linear calls too).

``quantize_linears(model, mode)`` is the one linear-layer swap: it replaces the ``nn.Linear`` layers inside the
DiT's blocks (self- and cross-attention q/k/v/o, I2V's k_img/v_img, the FFN) and leaves everything else alone:
the float32 time MLP and modulation (``FP32_PARAMETERS``), the patch/text/image embeddings and the head.
``mode="off"`` swaps the layers back to ``nn.Linear``. Quantise after casting the model (``set_dtype``): a later
``model.to(dtype)`` would also cast the scale buffers. The e4m3 buffers are not in the state dict (it stays the
plain model's, so checkpoints save and load unchanged); quantise after loading weights.

``set_attention_backend(model, name)`` switches the kernel of the model's one attention entry point
(``WanDiT.attention_backend``; ``"sage"`` is SageAttention's 8-bit attention), checking it is installed.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from wanmodel.models.attention import BACKENDS, available_backends
from wanmodel.models.dit import FP32_PARAMETERS

__all__ = ["E4M3", "E4M3_MAX", "FP8_MODES", "FP8Linear", "dequantize", "fp8_kernel_available", "fp8_linear",
           "quantize", "quantize_linears", "quantize_per_row", "quantize_per_tensor", "set_attention_backend",
           "tensor_scale"]

E4M3 = torch.float8_e4m3fn
E4M3_MAX = float(torch.finfo(E4M3).max)  # 448
FP8_MODES = ("off", "fp8", "fp8-sim")
_LINEAR_MODES = ("fp8", "fp8-sim")
# Only linears whose qualified name contains this are swapped: the transformer blocks.
_BLOCK_SCOPE = "blocks."


# --------------------------------------------------------------------------------------------- quantiser
def tensor_scale(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """float32 scale amax(|x|) / 448, over the whole tensor (``dim=None``, a 0-d tensor) or along ``dim`` (kept as
    size 1); an all-zero slice gets scale 1."""
    amax = x.detach().abs().amax() if dim is None else x.detach().abs().amax(dim=dim, keepdim=True)
    amax = amax.float()
    return torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))


def quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale, clamped to +-448, rounded to e4m3 (``scale`` broadcasts against ``x``)."""
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q * scale computed in float32, returned in ``dtype``."""
    return (q.float() * scale).to(dtype)


def quantize_per_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 tensor, 0-d float32 scale): one scale for the whole tensor (weights)."""
    scale = tensor_scale(w)
    return quantize(w, scale), scale


def quantize_per_row(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 tensor, float32 scales [..., 1]): one scale per row of the last dim (per token, activations)."""
    scale = tensor_scale(x, dim=-1)
    return quantize(x, scale), scale


# ---------------------------------------------------------------------------------------------- kernels
def fp8_kernel_available(x: torch.Tensor, in_features: int, out_features: int) -> bool:
    """Whether ``torch._scaled_mm`` runs this layer on ``x``'s device: CUDA of compute capability >= 8.9 (Ada,
    Hopper, later) and both feature sizes multiples of 16 (the kernel's alignment rule)."""
    if not x.is_cuda or in_features % 16 or out_features % 16:
        return False
    return torch.cuda.get_device_capability(x.device) >= (8, 9)


def fp8_linear(x: torch.Tensor, weight_fp8: torch.Tensor, weight_scale: torch.Tensor,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ W^T + bias through ``torch._scaled_mm``, bf16 result [..., N].

    x is quantised per token; ``weight_fp8`` is the row-major [N, K] e4m3 weight with its per-tensor scale
    (expanded to the row-wise [1, N] the kernel takes with a [M, 1] ``scale_a``). Runs wherever
    ``torch._scaled_mm`` has an e4m3 kernel (CUDA >= 8.9; recent CPU builds too, which the tests use)."""
    rows = x.reshape(-1, x.shape[-1])
    q_x, scale_x = quantize_per_row(rows)
    out_features = weight_fp8.shape[0]
    scale_w = weight_scale.float().reshape(1, 1).expand(1, out_features).contiguous()
    out = torch._scaled_mm(q_x, weight_fp8.to(E4M3).t(), scale_a=scale_x.contiguous(), scale_b=scale_w,
                           out_dtype=torch.bfloat16)
    if bias is not None:
        out = out + bias.to(torch.bfloat16)
    return out.reshape(*x.shape[:-1], out_features)


def _plain_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The result dtype ``F.linear(x, weight)`` has: the autocast dtype when autocast is on for x's device."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return torch.promote_types(x.dtype, weight.dtype)


class FP8Linear(nn.Module):
    """An ``nn.Linear`` with an e4m3 copy of its weight; see the module docstring for ``mode``.

    ``weight`` and ``bias`` are the original layer's parameters (same objects), ``weight_fp8`` [N, K] e4m3 and
    ``weight_scale`` (0-d float32) the quantised weight."""

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None, mode: str = "fp8") -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = weight
        self.bias = bias
        q, scale = quantize_per_tensor(weight.detach())
        # not in the state dict: a quantised model saves and loads as the plain one (quantise after loading)
        self.register_buffer("weight_fp8", q, persistent=False)
        self.register_buffer("weight_scale", scale, persistent=False)
        self.mode = _check_linear_mode(mode)

    @classmethod
    def from_linear(cls, linear: nn.Linear, mode: str = "fp8") -> FP8Linear:
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"FP8Linear.from_linear takes an nn.Linear, got {type(linear).__name__}")
        return cls(linear.weight, linear.bias, mode)

    @property
    def weight_released(self) -> bool:
        """Whether ``release_weight`` dropped the original weight."""
        return "weight" in self._buffers

    def release_weight(self) -> None:
        """Drop the original weight, keeping only the e4m3 copy and its scale (saves 2 bytes per weight in bf16;
        for GPUs that run the FP8 kernel). ``weight`` becomes an empty tensor of the old dtype and device (the
        model reads the compute dtype from it); the fallback then multiplies by the dequantised weight, so it
        is no longer bit-identical to the plain layer, the layer can no longer be turned back into one, and its
        state dict lacks the weight (save checkpoints before releasing)."""
        if self.weight_released:
            return
        marker = torch.empty(0, dtype=self.weight.dtype, device=self.weight.device)
        del self.weight
        self.register_buffer("weight", marker, persistent=False)

    def to_linear(self) -> nn.Linear:
        """The plain layer back, on the same parameters (not after ``release_weight``)."""
        if self.weight_released:
            raise ValueError("this FP8Linear released its original weight (release_weight); it cannot be turned "
                             "back into an nn.Linear")
        with torch.device("meta"):
            linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        linear.weight = self.weight
        linear.bias = self.bias
        return linear

    def uses_fp8_kernel(self, x: torch.Tensor) -> bool:
        """Whether ``forward(x)`` runs ``torch._scaled_mm`` (mode ``"fp8"`` and the kernel available)."""
        return self.mode == "fp8" and fp8_kernel_available(x, self.in_features, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fp8-sim":
            return self._simulated(x)
        if self.uses_fp8_kernel(x):
            out_dtype = _plain_dtype(x, self.weight)
            return fp8_linear(x, self.weight_fp8, self.weight_scale, self.bias).to(out_dtype)
        if self.weight_released:
            return F.linear(x, dequantize(self.weight_fp8.to(E4M3), self.weight_scale.float(), self.weight.dtype),
                            self.bias)
        return F.linear(x, self.weight, self.bias)

    def _simulated(self, x: torch.Tensor) -> torch.Tensor:
        out_dtype = _plain_dtype(x, self.weight)
        with torch.autocast(x.device.type, enabled=False):
            q_x, scale_x = quantize_per_row(x)
            weight = dequantize(self.weight_fp8.to(E4M3), self.weight_scale.float())
            bias = None if self.bias is None else self.bias.float()
            return F.linear(dequantize(q_x, scale_x), weight, bias).to(out_dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, mode={self.mode!r}, weight_released={self.weight_released}"


# ------------------------------------------------------------------------------------------------- swaps
def _check_linear_mode(mode: str) -> str:
    if mode not in _LINEAR_MODES:
        raise ValueError(f"unknown FP8Linear mode {mode!r}; choose from {_LINEAR_MODES}")
    return mode


def _swappable(name: str, skip: tuple[str, ...]) -> bool:
    return _BLOCK_SCOPE in name and not any(part in name for part in (*FP32_PARAMETERS, *skip))


def _set_child(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def quantize_linears(model: nn.Module, mode: str = "fp8", skip: Iterable[str] = (), *,
                     release_weights: bool = False) -> int:
    """The one linear-layer swap: turn the DiT blocks' ``nn.Linear`` layers into ``FP8Linear`` (``"fp8"``,
    ``"fp8-sim"``; an existing ``FP8Linear`` just changes mode) or back to ``nn.Linear`` (``"off"``).

    Only layers whose qualified name contains ``"blocks."`` are touched, never the float32 time/modulation
    layers (``FP32_PARAMETERS``), nor names containing any substring in ``skip`` (e.g. ``("cross_attn.",)``).
    ``release_weights`` also drops the original weights of the FP8 layers (``FP8Linear.release_weight``: for an
    FP8 GPU, where only the e4m3 copy is used; the swap can then not be undone). Returns how many layers were
    swapped or changed mode."""
    if mode not in FP8_MODES:
        raise ValueError(f"unknown FP8 mode {mode!r}; choose from {FP8_MODES}")
    if isinstance(skip, str):
        raise TypeError(f"skip takes an iterable of name substrings, got the string {skip!r}; use ({skip!r},)")
    skip = tuple(skip)
    if mode == "off":
        released = [name for name, module in model.named_modules()
                    if isinstance(module, FP8Linear) and module.weight_released and _swappable(name, skip)]
        if released:
            raise ValueError(f"{len(released)} FP8 layers ({released[0]}, ...) released their original weights; "
                             f"mode 'off' cannot restore them")
    count = 0
    for name, module in list(model.named_modules()):
        if not _swappable(name, skip):
            continue
        if isinstance(module, FP8Linear):
            if mode == "off":
                _set_child(model, name, module.to_linear())
                count += 1
            elif module.mode != mode:
                module.mode = mode
                count += 1
        elif type(module) is nn.Linear and mode != "off":
            module = FP8Linear.from_linear(module, mode)
            _set_child(model, name, module)
            count += 1
        if release_weights and isinstance(module, FP8Linear) and mode != "off":
            module.release_weight()
    return count


def set_attention_backend(model: nn.Module, name: str) -> str:
    """Switch the attention kernel of every module with an ``attention_backend`` attribute (``WanDiT``) to
    ``name`` (one of ``BACKENDS``; ``"sage"`` = SageAttention's 8-bit attention). A backend whose package is not
    installed is an error now rather than at the first forward. Returns the previous backend."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose from {BACKENDS}")
    if name != "auto" and name not in available_backends():
        from wanmodel.models.attention import _INSTALL_HINT

        raise ValueError(f"attention backend {name!r} needs {_INSTALL_HINT[name]}, which is not installed here "
                         f"(available: {available_backends()})")
    owners = [module for module in model.modules() if hasattr(module, "attention_backend")]
    if not owners:
        raise ValueError(f"{type(model).__name__} has no attention_backend attribute to set")
    previous = owners[0].attention_backend
    for module in owners:
        module.attention_backend = name
    return previous
