"""The Wan 2.1 diffusion transformer (report sections 4.2.1 and 5.1.1): text-, image- and first-last-frame-to-video.

A noisy latent video [B, 16, F, H, W] is cut into (1, 2, 2) patches by a 3D convolution, giving F * H/2 * W/2
tokens. Each block runs self-attention with 3D RoPE and q/k RMSNorm, cross-attention to the umT5 text tokens
(and, for I2V, separately projected CLIP image tokens whose attention output is added), and a GELU MLP. One time
MLP shared by all blocks predicts six modulation vectors (shift, scale, gate for attention and MLP); each block
adds its own learned bias to them. The head un-patches to the velocity [B, 16, F, H, W]. The first-last-frame model
(``flf2v``, the released FLF2V-14B) is the I2V model whose image tokens are the CLIP tokens of both frames, first
then last (2 x 257), with a learned positional embedding ``img_emb.emb_pos`` added before the image MLP.

Module and parameter names are those of the official release (``wan/modules/model.py``), so released checkpoints
load without renaming; ``dit_adapters`` maps the diffusers layout.

Precision follows the official code: the time embedding is computed in float64 -> float32, the time MLP,
modulation, gates, norms, head and RoPE run in float32 even under bf16 autocast, and the residual stream is kept in
float32. Linear layers run in the autocast dtype if autocast is on, else in their weights' dtype.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import BACKENDS, attention
from .rope import RopeCache, RopeTables, apply_rope, axis_dims

__all__ = ["DIT_CONFIGS", "FP32_PARAMETERS", "MODEL_TYPES", "DiTConfig", "WanDiT", "sinusoidal_embedding"]


# --------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DiTConfig:
    """Shape of a Wan DiT. Field names follow the official ``WanModel`` arguments."""

    model_type: Literal["t2v", "i2v", "flf2v"] = "t2v"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    in_dim: int = 16
    out_dim: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    num_heads: int = 12
    num_layers: int = 30
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    image_dim: int = 1280
    # flf2v only: image tokens of the first and last frames together (the official FIRST_LAST_FRAME_CONTEXT_TOKEN_
    # NUMBER = 2 * 257, diffusers' pos_embed_seq_len), the length of the learned ``img_emb.emb_pos``
    flf_image_tokens: int = 2 * 257

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"DiTConfig.model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"DiTConfig.patch_size needs 3 positive ints, got {self.patch_size}")
        for name in ("in_dim", "out_dim", "dim", "ffn_dim", "freq_dim", "text_dim", "text_len", "num_heads",
                     "num_layers", "image_dim", "flf_image_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"DiTConfig.{name} must be a positive int, got {value!r}")
        if self.flf_image_tokens % 2:
            raise ValueError(f"DiTConfig.flf_image_tokens (2 frames' tokens) must be even, got {self.flf_image_tokens}")
        if self.freq_dim % 2:
            raise ValueError(f"DiTConfig.freq_dim must be even, got {self.freq_dim}")
        if self.dim % self.num_heads:
            raise ValueError(f"DiTConfig.dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        try:
            axis_dims(self.head_dim)
        except ValueError as error:
            raise ValueError(f"DiTConfig: dim / num_heads = {self.head_dim} does not fit 3D RoPE: {error}") from None
        if not 0.0 < float(self.eps) < 1.0:
            raise ValueError(f"DiTConfig.eps must be in (0, 1), got {self.eps!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def is_i2v(self) -> bool:
        """Image-conditioned (i2v or flf2v): CLIP image tokens, ``img_emb`` and the image k/v projections."""
        return self.model_type in ("i2v", "flf2v")

    @property
    def is_flf2v(self) -> bool:
        """First-last-frame model: image tokens of two frames with the learned ``img_emb.emb_pos``."""
        return self.model_type == "flf2v"

    @property
    def image_tokens(self) -> int | None:
        """Image tokens per sample when fixed (flf2v: ``flf_image_tokens``), else None."""
        return self.flf_image_tokens if self.is_flf2v else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["patch_size"] = list(self.patch_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiTConfig:
        """Build from a dict; an unknown key is an error that names it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown DiTConfig key(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def named(cls, name: str, **overrides: Any) -> DiTConfig:
        """A named config: ``1.3B``, ``14B``, ``i2v-14B``, ``flf2v-14B`` (the releases), ``tiny``, ``tiny-i2v``,
        ``tiny-flf2v`` (CPU tests; ``tiny-flf2v`` takes 2 x 17 image tokens, the tiny CLIP tower's)."""
        try:
            config = DIT_CONFIGS[name]
        except KeyError:
            raise ValueError(f"unknown DiT config {name!r}; choose from {sorted(DIT_CONFIGS)}") from None
        return replace(config, **overrides) if overrides else config


MODEL_TYPES = ("t2v", "i2v", "flf2v")
_TINY = DiTConfig(dim=64, ffn_dim=128, num_heads=4, num_layers=2, text_dim=32)
DIT_CONFIGS: dict[str, DiTConfig] = {
    "1.3B": DiTConfig(),
    "14B": DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    "i2v-14B": DiTConfig(model_type="i2v", in_dim=36, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    "tiny": _TINY,
    "flf2v-14B": DiTConfig(model_type="flf2v", in_dim=36, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    "tiny-i2v": replace(_TINY, model_type="i2v", in_dim=36),
    "tiny-flf2v": replace(_TINY, model_type="flf2v", in_dim=36, flf_image_tokens=2 * 17),
}

# Parameters that stay float32 when the model is cast for inference (``WanDiT.set_dtype``): they feed the
# modulation, which the official code computes in float32.
FP32_PARAMETERS = ("time_embedding.", "time_projection.", "modulation")


# ------------------------------------------------------------------------------------------------- helpers
def sinusoidal_embedding(dim: int, position: torch.Tensor) -> torch.Tensor:
    """[N] positions -> [N, dim] float32: cos then sin of position * 10000^(-i / (dim/2)), computed in float64."""
    half = dim // 2
    device = position.device if position.device.type != "mps" else torch.device("cpu")  # MPS has no float64
    position = position.to(device=device, dtype=torch.float64)
    angles = torch.outer(position, torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=device) / half))
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


def _fp32_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The layer in float32 whatever its weights' dtype (call with autocast off)."""
    bias = None if layer.bias is None else layer.bias.float()
    return F.linear(x.float(), layer.weight.float(), bias)


def _to_weight_dtype(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Input cast for a layer: its weights' dtype (autocast, when on, then picks the compute dtype)."""
    return x.to(layer.weight.dtype)


def _modulate(normed: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """normed * (1 + scale) + shift in float32; shift, scale [B, dim] broadcast over tokens."""
    return torch.addcmul(shift.unsqueeze(1), normed, 1 + scale.unsqueeze(1))


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with its gain, in one float32 op; float32 result (q/k go on to RoPE in float32).
    The official WanRMSNorm rounds the normalised values to the activation dtype before the gain: the same in
    float32, one rounding less under bf16."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (float32 result: the residual stream is float32)."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = False) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


# ---------------------------------------------------------------------------------------------- attention
class SelfAttention(nn.Module):
    """Self-attention over all video tokens: q/k RMSNorm across the whole dim, then 3D RoPE (float32).

    ``attention_fn`` (default: ``attention``) is the one place the video tokens attend to each other: context
    parallelism (``wanmodel.parallel``) swaps in its distributed attention here, from outside the model."""

    attention_fn: Callable[..., torch.Tensor] | None = None

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1))

    def forward(self, x: torch.Tensor, rope: RopeTables, backend: str = "auto") -> torch.Tensor:
        x = _to_weight_dtype(x, self.q)
        v = self._heads(self.v(x))
        q = apply_rope(self._heads(self.norm_q(self.q(x))), *rope).to(v.dtype)
        k = apply_rope(self._heads(self.norm_k(self.k(x))), *rope).to(v.dtype)
        return self.o((self.attention_fn or attention)(q, k, v, backend=backend).flatten(2))


class CrossAttention(SelfAttention):
    """Attention from video tokens to the text tokens; for I2V a second attention to the image tokens with its
    own k/v projections (``k_img``, ``v_img``, ``norm_k_img``), summed before the output projection."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = True, eps: float = 1e-6,
                 image: bool = False) -> None:
        super().__init__(dim, num_heads, qk_norm, eps)
        if image:
            self.k_img = nn.Linear(dim, dim)
            self.v_img = nn.Linear(dim, dim)
            self.norm_k_img = RMSNorm(dim, eps=eps) if qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_img: torch.Tensor | None = None,
                backend: str = "auto") -> torch.Tensor:
        x = _to_weight_dtype(x, self.q)
        context = _to_weight_dtype(context, self.k)
        v = self._heads(self.v(context))
        q = self._heads(self.norm_q(self.q(x))).to(v.dtype)
        k = self._heads(self.norm_k(self.k(context))).to(v.dtype)
        out = attention(q, k, v, backend=backend)
        if context_img is not None:
            context_img = _to_weight_dtype(context_img, self.k_img)
            v_img = self._heads(self.v_img(context_img))
            k_img = self._heads(self.norm_k_img(self.k_img(context_img))).to(v_img.dtype)
            out = out + attention(q, k_img, v_img, backend=backend)
        return self.o(out.flatten(2))


# ------------------------------------------------------------------------------------------------- blocks
class WanBlock(nn.Module):
    """One transformer block (report Fig. 10). ``norm1``/``norm2`` precede self-attention/MLP and are modulated;
    ``norm3`` (affine) precedes cross-attention. Names follow the official release."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim = config.dim
        self.norm1 = LayerNorm(dim, config.eps)
        self.self_attn = SelfAttention(dim, config.num_heads, config.qk_norm, config.eps)
        self.norm3 = LayerNorm(dim, config.eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, config.num_heads, config.qk_norm, config.eps, image=config.is_i2v)
        self.norm2 = LayerNorm(dim, config.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(config.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def modulation_terms(self, e0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Shift, scale, gate (self-attention) and shift, scale, gate (MLP), each [B, dim] float32."""
        with torch.autocast(e0.device.type, enabled=False):
            return (self.modulation.float() + e0.float()).unbind(dim=1)

    def forward(self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, context_img: torch.Tensor | None,
                rope: RopeTables, backend: str = "auto") -> torch.Tensor:
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = self.modulation_terms(e0)
        attended = self.self_attn(_modulate(self.norm1(x), shift_sa, scale_sa), rope, backend)
        x = torch.addcmul(x, attended.float(), gate_sa.unsqueeze(1))
        x = x + self.cross_attn(self.norm3(x), context, context_img, backend).float()
        hidden = self.ffn(_to_weight_dtype(_modulate(self.norm2(x), shift_ff, scale_ff), self.ffn[0]))
        return torch.addcmul(x, hidden.float(), gate_ff.unsqueeze(1))


class Head(nn.Module):
    """Final modulated LayerNorm and linear projection to patch pixels, all in float32 (the official head runs
    under float32 autocast); its modulation adds the time embedding without the SiLU the blocks see."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim = config.dim
        self.norm = LayerNorm(dim, config.eps)
        self.head = nn.Linear(dim, math.prod(config.patch_size) * config.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            shift, scale = (self.modulation.float() + e.float().unsqueeze(1)).unbind(dim=1)
            return _fp32_linear(self.head, _modulate(self.norm(x), shift, scale))


class MLPProj(nn.Module):
    """CLIP image features -> image context tokens: LayerNorm, Linear, GELU, Linear, LayerNorm (official
    ``MLPProj``, torch's default LayerNorm eps 1e-5; the report's "three-layer MLP"). Norms in float32.

    With ``pos_tokens`` (flf2v) a learned positional embedding ``emb_pos`` [1, pos_tokens, in_dim] (zeros at init,
    as released) is added to the features first; they must then be [B, pos_tokens, in_dim], the first frame's
    tokens followed by the last frame's (the official module views [2B, N, D] as [B, 2N, D]: the same layout)."""

    def __init__(self, in_dim: int, out_dim: int, pos_tokens: int | None = None) -> None:
        super().__init__()
        self.proj = nn.Sequential(LayerNorm(in_dim, 1e-5, elementwise_affine=True), nn.Linear(in_dim, in_dim),
                                  nn.GELU(), nn.Linear(in_dim, out_dim),
                                  LayerNorm(out_dim, 1e-5, elementwise_affine=True))
        if pos_tokens is not None:
            self.emb_pos = nn.Parameter(torch.zeros(1, pos_tokens, in_dim))

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        emb_pos = getattr(self, "emb_pos", None)
        if emb_pos is not None:
            image_features = image_features.float() + emb_pos.float()
        norm_in, fc1, gelu, fc2, norm_out = self.proj
        hidden = gelu(fc1(_to_weight_dtype(norm_in(image_features), fc1)))
        return norm_out(fc2(hidden))


# -------------------------------------------------------------------------------------------------- model
class WanDiT(nn.Module):
    """Wan 2.1 DiT. ``forward(x, timestep, context, clip_fea=None, y=None)`` -> flow-matching velocity.

    ``attention_backend`` (``auto``/``sdpa``/``flash``/``sage``, see ``attention``) may be changed at any time;
    ``gradient_checkpointing = True`` recomputes each block in backward.
    """

    def __init__(self, config: DiTConfig | str = "1.3B", *, attention_backend: str = "auto") -> None:
        super().__init__()
        if isinstance(config, str):
            config = DiTConfig.named(config)
        if attention_backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {attention_backend!r}; choose from {BACKENDS}")
        self.config = config
        self.attention_backend = attention_backend
        self.gradient_checkpointing = False
        dim = config.dim
        self.patch_embedding = nn.Conv3d(config.in_dim, dim, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim * 6))
        self.blocks = nn.ModuleList(WanBlock(config) for _ in range(config.num_layers))
        self.head = Head(config)
        if config.is_i2v:
            self.img_emb = MLPProj(config.image_dim, dim, pos_tokens=config.image_tokens)
        self.rope = RopeCache(config.head_dim)
        self.init_weights()

    @classmethod
    def from_config(cls, config: DiTConfig | str, *, device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None, attention_backend: str = "auto") -> WanDiT:
        """Build on ``device``; ``device="meta"`` allocates nothing (load weights with
        ``load_state_dict(state_dict, assign=True)``), so a 14B model costs no memory before its weights."""
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = cls(config, attention_backend=attention_backend)
        return model if dtype is None else model.to(dtype)

    def init_weights(self) -> None:
        """The official initialisation: Xavier-uniform linears with zero biases, N(0, 0.02) text/time
        embeddings, zero output projection (a no-op on the meta device)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for module in (*self.text_embedding.modules(), *self.time_embedding.modules()):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)

    def set_dtype(self, dtype: torch.dtype) -> WanDiT:
        """Cast parameters to ``dtype`` for inference, keeping ``FP32_PARAMETERS`` (time MLP, modulation) in
        float32; returns self."""
        with torch.no_grad():
            for name, param in self.named_parameters():
                wanted = torch.float32 if any(part in name for part in FP32_PARAMETERS) else dtype
                if param.is_floating_point() and param.dtype != wanted:
                    param.data = param.data.to(wanted)
        return self

    # ------------------------------------------------------------------------------------------ pieces
    def time_embed(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timestep [B] -> (e [B, dim], e0 [B, 6, dim]), float32 even under autocast: e feeds the head, e0 the
        blocks' modulation."""
        with torch.autocast(timestep.device.type, enabled=False):
            freq = sinusoidal_embedding(self.config.freq_dim, timestep).to(timestep.device)
            e = _fp32_linear(self.time_embedding[2], F.silu(_fp32_linear(self.time_embedding[0], freq)))
            e0 = _fp32_linear(self.time_projection[1], F.silu(e)).unflatten(1, (6, self.config.dim))
        return e, e0

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """[B, L, text_dim] with L <= text_len -> [B, text_len, dim]: zero-padded to text_len *before* the MLP, so
        padding tokens carry its bias and are attended to, as in the official model."""
        padded = F.pad(context, (0, 0, 0, self.config.text_len - context.shape[1]))
        return self.text_embedding(_to_weight_dtype(padded, self.text_embedding[0]))

    def patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """[B, in_dim, F, H, W] -> (float32 tokens [B, L, dim], grid (F', H', W'))."""
        tokens = self.patch_embedding(_to_weight_dtype(x, self.patch_embedding))
        grid = tuple(tokens.shape[2:])
        return tokens.flatten(2).transpose(1, 2).float().contiguous(), grid

    def unpatchify(self, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, L, prod(patch) * out_dim] -> [B, out_dim, F, H, W]."""
        (frames, height, width), (pt, ph, pw) = grid, self.config.patch_size
        video = tokens.view(tokens.shape[0], frames, height, width, pt, ph, pw, self.config.out_dim)
        video = video.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return video.reshape(tokens.shape[0], self.config.out_dim, frames * pt, height * ph, width * pw)

    def _check_inputs(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                      clip_fea: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor:
        config = self.config
        if x.ndim != 5:
            raise ValueError(f"x must be [B, C, F, H, W], got shape {tuple(x.shape)}")
        batch = x.shape[0]
        if config.is_i2v:
            if clip_fea is None or y is None:
                raise ValueError(f"an {config.model_type} model needs clip_fea [B, N, image_dim] and y "
                                 f"[B, C_y, F, H, W]")
            if y.ndim != 5 or y.shape[0] != batch or y.shape[2:] != x.shape[2:]:
                raise ValueError(f"y must be [B, C_y, F, H, W] matching x {tuple(x.shape)}, got {tuple(y.shape)}")
            tokens = "N" if config.image_tokens is None else config.image_tokens
            if (clip_fea.ndim != 3 or clip_fea.shape[0] != batch or clip_fea.shape[2] != config.image_dim
                    or clip_fea.shape[1] != (config.image_tokens or clip_fea.shape[1])):
                raise ValueError(f"clip_fea must be [{batch}, {tokens}, {config.image_dim}]"
                                 + (" (the first and the last frame's CLIP tokens, concatenated)"
                                    if config.is_flf2v else "") + f", got {tuple(clip_fea.shape)}")
            channels = x.shape[1] + y.shape[1]
        else:
            if clip_fea is not None or y is not None:
                raise ValueError("clip_fea and y are for i2v/flf2v models; this model is t2v")
            channels = x.shape[1]
        if channels != config.in_dim:
            raise ValueError(f"the model takes {config.in_dim} input channels (x and y together), got {channels}")
        for axis, size, patch in zip("FHW", x.shape[2:], config.patch_size):
            if size % patch:
                raise ValueError(f"latent {axis} = {size} is not divisible by the patch size {patch} "
                                 f"(patch_size {config.patch_size})")
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        if timestep.shape != (batch,):
            raise ValueError(f"timestep must be [B] = [{batch}] (or a scalar), got shape {tuple(timestep.shape)}")
        if context.ndim != 3 or context.shape[0] != batch or context.shape[2] != config.text_dim:
            raise ValueError(f"context must be [{batch}, L, {config.text_dim}], got {tuple(context.shape)}")
        if not 0 < context.shape[1] <= config.text_len:
            raise ValueError(f"context length {context.shape[1]} must be in [1, text_len = {config.text_len}]")
        return timestep

    # ---------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                clip_fea: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity [B, out_dim, F, H, W] in ``x``'s dtype.

        x: noisy latents [B, C, F, H, W] (H, W divisible by the patch); timestep: [B] in [0, 1000];
        context: text embeddings [B, L, text_dim], L <= text_len; i2v only: clip_fea [B, N, image_dim] and y
        [B, C_y, F, H, W] (mask + image latents, concatenated to x on channels).
        """
        timestep = self._check_inputs(x, timestep, context, clip_fea, y)
        out_dtype = x.dtype
        if y is not None:
            x = torch.cat([x, y.to(x.dtype)], dim=1)
        tokens, grid = self.patchify(x)
        e, e0 = self.time_embed(timestep)
        context = self.embed_text(context)
        context_img = self.img_emb(clip_fea) if clip_fea is not None else None
        rope = self.rope.get(grid, tokens.device)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, e0, context, context_img, rope, self.attention_backend,
                                    use_reentrant=False)
            else:
                tokens = block(tokens, e0, context, context_img, rope, self.attention_backend)
        return self.unpatchify(self.head(tokens, e), grid).to(out_dtype)
