"""Distributed code of the DiT, applied from outside the model (torchtitan's ``parallelize`` style).

- ``mesh``: ``ParallelDims`` (data parallel, FSDP, Ulysses and Ring sizes, checked against the world size) and
  ``ParallelMesh`` (one named ``DeviceMesh``).
- ``context``: 2D context parallelism, Ulysses inside Ring, through the self-attention's one entry point.
- ``parallelize``: ``parallelize_dit`` applies context parallelism, activation checkpointing and FSDP2 (bf16
  blocks, float32 root and reductions); ``activation_offload`` keeps saved activations in CPU memory.
- ``sampling``: the same pieces for N-rank sampling (context parallel, CFG parallel, FSDP inference);
  ``sample_launch`` is ``wan sample`` under torchrun.
"""
from wanmodel.parallel.mesh import ParallelConfigError, ParallelDims, ParallelMesh

__all__ = ["ParallelConfigError", "ParallelDims", "ParallelMesh"]
