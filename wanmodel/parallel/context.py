"""Context parallelism for the DiT as the report does it (section 4.3.2): Ulysses inside, Ring attention outside.

The token sequence is sharded after patchify (rank ``c`` of the CP group holds tokens ``[c*L/P, (c+1)*L/P)``) and
gathered before unpatchify; everything between is per token except self-attention (cross-attention reads the
replicated text tokens), so self-attention is the only place ranks talk:

- **Ulysses** (inner, ``u`` ranks): an all-to-all turns "my tokens, all heads" into "the tokens of my Ulysses group,
  ``H/u`` heads"; attention runs there; the inverse all-to-all brings the result back.
- **Ring** (outer, ``r`` ranks): each rank keeps its queries and passes its keys and values around the ring; each
  step's block result is merged by log-sum-exp (online softmax). The backward pass sends the key/value gradients
  around the ring with the keys and values, so each arrives back at its owner complete.

2D context parallelism composes them: Ulysses first (within the ranks that share a ring position), then Ring
across the ring positions, on the heads that Ulysses left to this rank. ``apply_context_parallel`` installs this
from outside the model: the self-attention's ``attention_fn`` hook, and the sequence shard/gather around the
model's ``patchify``/``unpatchify`` and its RoPE tables; the model files hold no distributed code.

Gradients: every CP rank computes the same loss on the gathered output, so the gather's backward sums the output
gradient over the CP group; averaging parameter gradients over the ranks of a CP group (FSDP's and DDP's mean does
this) then gives exactly the single-process gradient.
"""
from __future__ import annotations

import math
import types
from typing import Any

import torch
import torch.distributed as dist

from wanmodel.models.attention import attention

__all__ = ["ContextParallel", "apply_context_parallel", "ring_attention", "ulysses_attention"]


# ---------------------------------------------------------------------------------------------- Ulysses
def _seq_to_head(x: torch.Tensor, group: Any) -> torch.Tensor:
    """[B, Ls, H, D] (my tokens, all heads) -> [B, u*Ls, H/u, D] (the group's tokens, my heads)."""
    u = dist.get_world_size(group)
    b, ls, h, d = x.shape
    send = x.reshape(b, ls, u, h // u, d).permute(2, 0, 1, 3, 4).contiguous()  # [u(dest), B, Ls, H/u, D]
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[i]: tokens of rank i, my heads
    return recv.permute(1, 0, 2, 3, 4).reshape(b, u * ls, h // u, d)


def _head_to_seq(x: torch.Tensor, group: Any) -> torch.Tensor:
    """The inverse of ``_seq_to_head``: [B, u*Ls, H/u, D] -> [B, Ls, H, D]."""
    u = dist.get_world_size(group)
    b, lu, hu, d = x.shape
    send = x.reshape(b, u, lu // u, hu, d).permute(1, 0, 2, 3, 4).contiguous()  # [u(dest), B, Ls, H/u, D]
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[i]: my tokens, heads of rank i
    return recv.permute(1, 2, 0, 3, 4).reshape(b, lu // u, u * hu, d)


class _SeqToHead(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return _seq_to_head(x, group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _head_to_seq(grad.contiguous(), ctx.group), None


class _HeadToSeq(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return _head_to_seq(x, group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _seq_to_head(grad.contiguous(), ctx.group), None


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: Any, *, backend: str = "auto",
                      inner: Any = None) -> torch.Tensor:
    """Attention of sequence-sharded q, k, v [B, Ls, H, D] over the whole sequence of ``group``'s ranks;
    ``inner(q, k, v)`` attends the head-sharded tensors (default: the model's ``attention``)."""
    if dist.get_world_size(group) == 1:
        return inner(q, k, v) if inner is not None else attention(q, k, v, backend=backend)
    q, k, v = (_SeqToHead.apply(t, group) for t in (q, k, v))
    out = inner(q, k, v) if inner is not None else attention(q, k, v, backend=backend)
    return _HeadToSeq.apply(out, group)


# ------------------------------------------------------------------------------------------------- Ring
def _block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One block of exact attention in float32: output [B, Lq, H, D] and log-sum-exp [B, Lq, H]."""
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.einsum("bhqk,bkhd->bqhd", torch.exp(scores - lse.unsqueeze(-1)), v.float())
    return out, lse.transpose(1, 2)


def _merge(out: torch.Tensor | None, lse: torch.Tensor | None, block_out: torch.Tensor,
           block_lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if out is None or lse is None:
        return block_out, block_lse
    new_lse = torch.logaddexp(lse, block_lse)
    out = out * torch.exp(lse - new_lse).unsqueeze(-1) + block_out * torch.exp(block_lse - new_lse).unsqueeze(-1)
    return out, new_lse


def _rotate(tensors: list[torch.Tensor], group: Any) -> list[torch.Tensor]:
    """Send ``tensors`` to the next rank of the ring, receive the previous rank's."""
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    nxt, prev = dist.get_global_rank(group, (rank + 1) % size), dist.get_global_rank(group, (rank - 1) % size)
    received = [torch.empty_like(t) for t in tensors]
    ops = [dist.P2POp(dist.isend, t.contiguous(), nxt, group) for t in tensors]
    ops += [dist.P2POp(dist.irecv, r, prev, group) for r in received]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    return received


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: Any,
                scale: float) -> torch.Tensor:
        size = dist.get_world_size(group)
        out = lse = None
        kv = [k, v]
        for step in range(size):
            block_out, block_lse = _block(q, kv[0], kv[1], scale)
            out, lse = _merge(out, lse, block_out, block_lse)
            if step < size - 1:
                kv = _rotate(kv, group)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.group, ctx.scale = group, scale
        return out.to(v.dtype)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q, k, v, out, lse = ctx.saved_tensors
        group, scale = ctx.group, ctx.scale
        size = dist.get_world_size(group)
        grad_out = grad_out.float()
        delta = (grad_out * out).sum(-1).transpose(1, 2).unsqueeze(-1)  # [B, H, Lq, 1]
        lse_t = lse.transpose(1, 2).unsqueeze(-1)
        qf = q.float()
        grad_q = torch.zeros_like(qf)
        kv = [k, v]
        grad_kv = [torch.zeros_like(k, dtype=torch.float32), torch.zeros_like(v, dtype=torch.float32)]
        for step in range(size):
            kf, vf = kv[0].float(), kv[1].float()
            probs = torch.exp(torch.einsum("bqhd,bkhd->bhqk", qf, kf) * scale - lse_t)
            grad_kv[1] = grad_kv[1] + torch.einsum("bhqk,bqhd->bkhd", probs, grad_out)
            grad_scores = probs * (torch.einsum("bqhd,bkhd->bhqk", grad_out, vf) - delta)
            grad_q = grad_q + torch.einsum("bhqk,bkhd->bqhd", grad_scores, kf) * scale
            grad_kv[0] = grad_kv[0] + torch.einsum("bhqk,bqhd->bkhd", grad_scores, qf) * scale
            # The gradients travel with their keys/values; one more hop brings them home after the last step.
            if step < size - 1:
                moved = _rotate([*kv, *grad_kv], group)
                kv, grad_kv = moved[:2], moved[2:]
            else:
                grad_kv = _rotate(grad_kv, group)
        return grad_q.to(q.dtype), grad_kv[0].to(k.dtype), grad_kv[1].to(v.dtype), None, None


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: Any, *,
                   scale: float | None = None) -> torch.Tensor:
    """Exact attention of this rank's queries [B, Lq, H, D] over the keys and values of every rank of ``group``
    (each [B, Lk, H, D]), passed around the ring."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return _RingAttention.apply(q, k, v, group, scale)


# ------------------------------------------------------------------------------------------- 2D and model
class _GatherSequence(torch.autograd.Function):
    """All-gather token shards in CP-rank order; backward sums the output gradient over the group and keeps
    this rank's shard (every CP rank computed the same loss from the gathered output)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group, ctx.rank, ctx.length = group, dist.get_rank(group), x.shape[1]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[:, ctx.rank * ctx.length:(ctx.rank + 1) * ctx.length], None


class _ShardedRope:
    """The model's RoPE cache, returning this rank's rows of the tables."""

    def __init__(self, inner: Any, cp: ContextParallel) -> None:
        self.inner, self.cp = inner, cp

    def get(self, grid: tuple[int, int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.inner.get(grid, device)
        return self.cp.shard(cos, dim=0), self.cp.shard(sin, dim=0)


class ContextParallel:
    """The 2D context-parallel layout of one rank: its Ulysses and Ring groups and its shard of the tokens."""

    def __init__(self, ulysses_group: Any, ring_group: Any, cp_group: Any) -> None:
        self.ulysses_group, self.ring_group, self.cp_group = ulysses_group, ring_group, cp_group
        self.ulysses = dist.get_world_size(ulysses_group)
        self.ring = dist.get_world_size(ring_group)
        self.size = dist.get_world_size(cp_group)
        self.rank = dist.get_rank(cp_group)
        if self.size != self.ulysses * self.ring:
            raise ValueError(f"cp group of {self.size} ranks is not ulysses {self.ulysses} x ring {self.ring}")
        expected = dist.get_rank(ring_group) * self.ulysses + dist.get_rank(ulysses_group)
        if self.rank != expected:
            raise ValueError(f"cp rank {self.rank} is not ring rank x ulysses + ulysses rank = {expected}: build the "
                             "groups from one mesh with dims (ring, ulysses)")

    @classmethod
    def from_mesh(cls, mesh: Any) -> ContextParallel:
        """From a ``ParallelMesh`` (its ``ulysses``, ``ring`` and flattened ``cp`` dimensions)."""
        return cls(mesh.group("ulysses"), mesh.group("ring"), mesh.group("cp"))

    def shard(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's contiguous 1/size of ``x`` along ``dim`` (the length must divide evenly)."""
        length = x.shape[dim]
        if length % self.size:
            raise ValueError(f"context parallelism over {self.size} ranks needs a token count divisible by "
                             f"{self.size}; this clip has {length} tokens (choose a latent grid whose F*H*W/patch "
                             "is a multiple of the CP size)")
        part = length // self.size
        return x.narrow(dim, self.rank * part, part)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's tokens [B, L, ...] from the shards [B, L/size, ...]."""
        return _GatherSequence.apply(x, self.cp_group) if self.size > 1 else x

    @torch.compiler.disable  # compiled blocks (parallel.compile) run the collectives eagerly, between their graphs
    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "auto",
                  scale: float | None = None) -> torch.Tensor:
        """Self-attention of sharded q, k, v over the whole sequence: Ulysses inside, Ring outside."""
        if self.ring == 1:
            inner = None
        else:
            def inner(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
                return ring_attention(q, k, v, self.ring_group, scale=scale)
        return ulysses_attention(q, k, v, self.ulysses_group, backend=backend, inner=inner)


def apply_context_parallel(model: Any, cp: ContextParallel) -> Any:
    """Shard ``model``'s (a ``WanDiT``) token sequence over ``cp`` from outside: tokens after patchify, RoPE rows
    to match, self-attention through ``cp.attention``, tokens gathered before unpatchify. Returns the model."""
    if cp.size == 1:
        return model
    if model.config.num_heads % cp.ulysses:
        raise ValueError(f"ulysses={cp.ulysses} must divide the model's {model.config.num_heads} attention heads")
    patchify, unpatchify = model.patchify, model.unpatchify

    def sharded_patchify(self: Any, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        tokens, grid = patchify(x)
        return cp.shard(tokens, dim=1), grid

    def gathered_unpatchify(self: Any, tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        return unpatchify(cp.gather(tokens), grid)

    model.patchify = types.MethodType(sharded_patchify, model)
    model.unpatchify = types.MethodType(gathered_unpatchify, model)
    model.rope = _ShardedRope(model.rope, cp)
    for block in model.blocks:
        block.self_attn.attention_fn = cp.attention
    return model
