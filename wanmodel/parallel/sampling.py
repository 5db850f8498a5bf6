"""Multi-rank sampling of a DiT (report section 4.4): context parallelism, CFG parallelism and FSDP inference, all
applied from outside the model with the training code of ``wanmodel.parallel`` (no second copy of any of it).

Layout (``sampling_dims``): ``world = cfg x ring x ulysses``. The context-parallel ranks (Ulysses inside Ring,
``apply_context_parallel``) share one DiT call and each holds 1/cp of its tokens; the ``cfg`` groups of cp ranks
(the mesh's flattened ``data`` dimension) each compute one part of the batch. With guidance the denoising loop
(``wanmodel.pipelines.common.denoise``) batches the conditional and unconditional passes into one call of 2B, so
with ``cfg = 2`` group 0 computes the conditional half and group 1 the unconditional one; ``BatchParallel`` takes
this group's part of every batch-dim input and all-gathers the outputs, so the loop is unchanged and every rank ends
with the same latents. ``fsdp=True`` shards the blocks' weights over all ranks (FSDP2 ``fully_shard``,
``shard_blocks``), for models whose weights do not fit one device (the 14B); each block's parameters are gathered
for its forward and freed after it.

Conventions: ``torch.distributed`` is initialised by the caller (``sample_launch`` does it from torchrun's
environment); nothing here decodes or writes: only rank 0 should (``is_leader``). Only torch is imported eagerly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from wanmodel.parallel.context import ContextParallel, apply_context_parallel
from wanmodel.parallel.mesh import ParallelConfigError, ParallelDims, ParallelMesh

__all__ = ["BatchParallel", "SamplingLayout", "is_leader", "prepare_sampling_dit", "sampling_dims",
           "sampling_mesh", "shard_blocks"]

CFG_SIZES = (1, 2)


@dataclass(frozen=True)
class SamplingLayout:
    """Requested sizes: ``ulysses=None`` takes whatever the world leaves after ``ring`` and ``cfg``."""

    ulysses: int | None = None
    ring: int = 1
    cfg: int = 1
    fsdp: bool = False

    def dims(self, world_size: int) -> ParallelDims:
        return sampling_dims(world_size, ulysses=self.ulysses, ring=self.ring, cfg=self.cfg, fsdp=self.fsdp)


def sampling_dims(world_size: int, *, ulysses: int | None = None, ring: int = 1, cfg: int = 1,
                  fsdp: bool = False) -> ParallelDims:
    """``ParallelDims`` of a sampling layout; ``world_size`` must equal ``cfg x ring x ulysses``.

    The ``data`` dimension (dp_replicate x dp_shard) is the CFG dimension: without FSDP each CFG group holds a
    replica (dp_replicate = cfg); with FSDP one group shards over every rank (dp_shard = cfg).
    """
    if cfg not in CFG_SIZES:
        raise ParallelConfigError(f"cfg_parallel must be 1 or 2 (conditional and unconditional passes), got {cfg}")
    for name, value in (("world size", world_size), ("ring", ring), ("ulysses", ulysses)):
        if value is not None and value < 1:
            raise ParallelConfigError(f"{name} must be at least 1, got {value}")
    if ulysses is None:
        if world_size % (ring * cfg):
            raise ParallelConfigError(f"world size {world_size} does not factor into ring ({ring}) x cfg_parallel "
                                      f"({cfg}) x ulysses: {world_size} is not a multiple of {ring * cfg}")
        ulysses = world_size // (ring * cfg)
    if ulysses * ring * cfg != world_size:
        raise ParallelConfigError(f"world size {world_size} does not factor into the requested sizes: ulysses "
                                  f"({ulysses}) x ring ({ring}) x cfg_parallel ({cfg}) = {ulysses * ring * cfg}")
    if fsdp:
        return ParallelDims(world_size, dp_replicate=1, fsdp=world_size, ulysses=ulysses, ring=ring)
    return ParallelDims(world_size, dp_replicate=cfg, fsdp=ulysses * ring, ulysses=ulysses, ring=ring)


def sampling_mesh(layout: SamplingLayout, device_type: str = "cpu") -> ParallelMesh:
    """The ``ParallelMesh`` of ``layout`` over the initialised ``torch.distributed`` world."""
    if not dist.is_initialized():
        raise RuntimeError("sampling_mesh needs torch.distributed initialised (init_process_group) first")
    return ParallelMesh(layout.dims(dist.get_world_size()), device_type=device_type)


def is_leader() -> bool:
    """True on the rank that decodes and writes (rank 0, or the only process)."""
    return not dist.is_initialized() or dist.get_rank() == 0


class BatchParallel(nn.Module):
    """Split every DiT call's batch over the ranks of ``group`` and all-gather the outputs (CFG parallelism: the
    denoising loop's batch of 2B is cond then uncond, so with 2 ranks each computes one pass).

    Inputs whose first dimension is the batch (x, timestep, context, clip_fea, y) are split; a batch that does
    not divide the group size (one prompt without guidance) runs whole on every rank, which gives the same result.
    """

    def __init__(self, module: nn.Module, group: Any) -> None:
        super().__init__()
        self.module = module
        self.group = group
        self.size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def __getattr__(self, name: str) -> Any:
        """The wrapped DiT's attributes (``config``, ``patch_embedding``, ``blocks``: what the loop and caches
        read)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["module"], name)

    def _part(self, value: Any, batch: int) -> Any:
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
            part = batch // self.size
            return value.narrow(0, self.rank * part, part)
        return value

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                **extra: Any) -> torch.Tensor:
        batch = x.shape[0]
        if self.size == 1 or batch % self.size:
            return self.module(x, timestep, context, **extra)
        out = self.module(*(self._part(v, batch) for v in (x, timestep, context)),
                          **{k: self._part(v, batch) for k, v in extra.items()}).contiguous()
        parts = [torch.empty_like(out) for _ in range(self.size)]
        dist.all_gather(parts, out, group=self.group)
        return torch.cat(parts)


def prepare_sampling_dit(model: nn.Module, mesh: ParallelMesh | None, *, fsdp: bool = False) -> nn.Module:
    """``model`` (a ``WanDiT`` in eval mode) ready for sampling on ``mesh``: context parallelism over its ``cp``
    ranks (``apply_context_parallel``), the blocks' weights sharded over all ranks when ``fsdp``
    (``shard_blocks``), then ``BatchParallel`` over its ``data`` (CFG) ranks. Returns the module to give the
    denoising loop (``mesh=None``: ``model`` itself)."""
    if mesh is None:
        return model
    dims = mesh.dims
    dims.check_model(model.config.num_heads)
    if dims.cp > 1:
        apply_context_parallel(model, ContextParallel.from_mesh(mesh))
    if fsdp:
        if dims.dp_replicate != 1:
            raise ParallelConfigError(f"FSDP sampling shards over the whole world; this mesh has dp_replicate "
                                      f"{dims.dp_replicate} (build it with sampling_dims(..., fsdp=True))")
        shard_blocks(model, mesh.fsdp_mesh)
    if dims.data_parallel > 1:
        return BatchParallel(model, mesh.group("data"))
    return model


def shard_blocks(model: nn.Module, fsdp_mesh: Any) -> list[nn.Module]:
    """FSDP2 ``fully_shard`` for inference: each block (nearly all of the weights) is one unit, gathered in its
    own dtype for its forward and freed after it; returns the units.

    FSDP2 needs one dtype per unit, and a bf16 inference DiT keeps its modulation float32 (``WanDiT.set_dtype``),
    so a block of mixed dtypes is sharded child by child, its small float32 ``modulation`` staying replicated.
    Unlike training's ``parallelize_dit`` (float32 master weights gathered in bf16) no parameter changes dtype, so
    the result is that of one process. The root's own layers (embeddings, time MLP, head: read directly by the
    model's forward, about 3% of the 14B) stay replicated.
    """
    from torch.distributed.fsdp import fully_shard

    units: list[nn.Module] = []

    def shard(module: nn.Module) -> None:
        dtypes = {p.dtype for p in module.parameters()}
        if len(dtypes) == 1:
            units.append(fully_shard(module, mesh=fsdp_mesh, reshard_after_forward=True))
            return
        for child in module.children():
            if any(True for _ in child.parameters()):
                shard(child)

    for block in model.blocks:
        shard(block)
    return units
