"""Apply the parallel layout of a ``ParallelMesh`` to a ``WanDiT`` from outside (torchtitan's ``parallelize``).

Order matters and is fixed here: context parallelism (sequence sharding, distributed self-attention), then
activation checkpointing per block, then ``torch.compile`` per block when the plan asks (regional compilation, as
torchtitan compiles: one graph per block shape, reused by every block; the checkpoint wraps the compiled block, so
the backward recomputes the compiled forward; context-parallel attention runs eagerly between graphs), then FSDP2
``fully_shard`` per block and on the root. Pure data parallelism (every rank a full replica: ``fsdp`` 1, no context
parallelism) takes DDP instead (composable ``replicate``, as torchtitan does): plain parameters, no gather or
copy-in around each forward and backward, the gradients all-reduced in buckets while the backward still runs (and
only after the last micro-batch of gradient accumulation); the forward then runs in the autocast dtype on float32
weights. Under FSDP2, mixed precision is FSDP2's: parameters gathered in ``param_dtype`` (bf16 for training),
gradients reduced in ``reduce_dtype`` (float32), the sharded master weights and the optimizer state in float32. The
model's float32 islands stay float32: the root unit (patch, text and time embeddings, time projection, head: small,
and the time MLP is read directly by the model rather than called) gathers its parameters in float32; only the
blocks run in ``param_dtype``, where each block's modulation is added to the float32 time embedding in float32.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from wanmodel.parallel.context import ContextParallel, apply_context_parallel
from wanmodel.parallel.mesh import ParallelMesh


@dataclass(frozen=True)
class ParallelPlan:
    """What to apply besides the mesh's sizes."""

    activation_checkpointing: bool = True  # recompute each block in backward
    offload_activations: bool = False  # keep the saved activations in CPU memory (``activation_offload``)
    param_dtype: torch.dtype = torch.bfloat16
    reduce_dtype: torch.dtype = torch.float32
    reshard_after_forward: bool = True  # FSDP's ZeRO-3; False keeps gathered blocks for backward (ZeRO-2-like)
    compile: bool = False  # torch.compile each block (inductor: fuses the norms, modulation and RoPE around the matmuls)


def parallelize_dit(model: Any, mesh: ParallelMesh | None, plan: ParallelPlan = ParallelPlan()) -> Any:
    """``model`` with context parallelism, activation checkpointing and FSDP2 applied as ``mesh`` and ``plan``
    say (``mesh=None``: one process, checkpointing only). Returns the same module."""
    if plan.activation_checkpointing:
        model.gradient_checkpointing = True
    if mesh is not None:
        mesh.dims.check_model(model.config.num_heads)
        if mesh.dims.cp > 1:
            apply_context_parallel(model, ContextParallel.from_mesh(mesh))
    if plan.compile:
        compile_blocks(model)
    if mesh is None:
        return model
    if mesh.dims.fsdp == 1:
        _apply_ddp(model, mesh)
    else:
        _apply_fsdp(model, mesh.fsdp_mesh, plan)
    return model


def compile_blocks(model: Any) -> None:
    """``torch.compile`` each block in place (``nn.Module.compile``: the module keeps its class and its parameter
    names, so checkpoints and FSDP see the same model); compiled lazily, at the first step."""
    for block in model.blocks:
        block.compile()


def _apply_ddp(model: Any, mesh: ParallelMesh) -> None:
    """Full replicas with DDP's bucketed gradient all-reduce over the data ranks; the module keeps its class
    (``set_requires_gradient_sync`` turns the reduction off for the micro-batches before the last)."""
    from torch.distributed._composable.replicate import replicate

    device = next(model.parameters()).device
    replicate(model, device_id=device, process_group=mesh.group("data"), gradient_as_bucket_view=True)


def _apply_fsdp(model: Any, fsdp_mesh: Any, plan: ParallelPlan) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mixed = MixedPrecisionPolicy(param_dtype=plan.param_dtype, reduce_dtype=plan.reduce_dtype)
    fp32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    for i, block in enumerate(model.blocks):
        fully_shard(block, mesh=fsdp_mesh, mp_policy=mixed,
                    reshard_after_forward=_block_reshards(plan.reshard_after_forward, i, len(model.blocks)))
    fully_shard(model, mesh=fsdp_mesh, mp_policy=fp32, reshard_after_forward=False)


def _block_reshards(reshard_after_forward: bool, index: int, count: int) -> bool:
    """Whether block ``index`` of ``count`` frees its gathered weights after its forward: as the plan says, except
    the last block, whose weights the backward needs again at once."""
    return reshard_after_forward and index < count - 1


def set_micro_batch(model: Any, *, last: bool, reshard_after_forward: bool = True) -> None:
    """Gradient accumulation under FSDP2 or DDP; call before each micro-batch's forward (a no-op on one process).

    The micro-batches before the last keep their gradients local and unreduced, and under FSDP2 the gathered
    weights too (no reshard after their forward or backward): each block is gathered for the first forward and
    once more for the last backward, not twice per micro-batch. The last one reduces the gradients and reshards
    as the plan says (``_block_reshards``; the root never does)."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last)
    if hasattr(model, "set_reshard_after_backward"):
        model.set_reshard_after_backward(last)
        for i, block in enumerate(model.blocks):
            block.set_reshard_after_forward(last and _block_reshards(reshard_after_forward, i, len(model.blocks)))


@contextlib.contextmanager
def activation_offload(enabled: bool) -> Iterator[None]:
    """Keep tensors saved for backward in (pinned, where CUDA is present) CPU memory during the forward pass."""
    if not enabled:
        yield
        return
    with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
        yield
