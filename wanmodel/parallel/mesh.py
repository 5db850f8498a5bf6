"""One mesh object for every parallel layout of the DiT: data parallel, FSDP, and 2D context parallelism.

The report's layout (section 4.3.2, Fig. 11): the innermost dimension is context parallelism (CP), itself two
dimensions, Ulysses (all-to-all over heads) inside Ring attention; FSDP shards the model over a group that contains
the CP group; plain data parallelism (replicas) is outermost. With 128 GPUs: Ulysses 8 x Ring 2 = CP 16, FSDP 32
(so 32 / 16 = 2 different micro-batches inside one FSDP group), DP 4: 8 micro-batches in all.

``ParallelDims`` holds the sizes, derives the missing one, checks that they multiply to the world size, and builds
one named ``DeviceMesh`` with dims ``("dp_replicate", "dp_shard", "ring", "ulysses")`` and the flattened views the
rest of ``wanmodel.parallel`` needs: ``fsdp`` (dp_shard x ring x ulysses: the group that shards parameters),
``cp`` (ring x ulysses: the ranks that share one micro-batch) and ``data`` (dp_replicate x dp_shard: the ranks that
see different micro-batches).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any


class ParallelConfigError(ValueError):
    """Parallel sizes that do not fit the world size or the model; the message says which and why."""


@dataclass(frozen=True)
class ParallelDims:
    """Sizes of each parallel dimension. ``fsdp`` counts every rank of one sharding group, CP ranks included
    (the report's convention); ``dp_replicate`` is how many such groups hold a full replica each."""

    world_size: int
    dp_replicate: int = 1
    fsdp: int | None = None  # None: whatever is left of the world after dp_replicate
    ulysses: int = 1
    ring: int = 1

    def __post_init__(self) -> None:
        for name in ("world_size", "dp_replicate", "ulysses", "ring"):
            if getattr(self, name) < 1:
                raise ParallelConfigError(f"parallel size {name} must be at least 1, got {getattr(self, name)}")
        if self.fsdp is None:
            if self.world_size % self.dp_replicate:
                raise ParallelConfigError(f"dp_replicate={self.dp_replicate} does not divide the world size "
                                          f"{self.world_size}")
            object.__setattr__(self, "fsdp", self.world_size // self.dp_replicate)
        if self.fsdp < 1:
            raise ParallelConfigError(f"parallel size fsdp must be at least 1, got {self.fsdp}")
        if self.dp_replicate * self.fsdp != self.world_size:
            raise ParallelConfigError(
                f"parallel sizes do not multiply to the world size: dp_replicate ({self.dp_replicate}) x fsdp "
                f"({self.fsdp}) = {self.dp_replicate * self.fsdp}, world size {self.world_size}")
        if self.fsdp % self.cp:
            raise ParallelConfigError(
                f"the FSDP group must contain whole context-parallel groups: fsdp ({self.fsdp}) is not a multiple "
                f"of cp = ulysses ({self.ulysses}) x ring ({self.ring}) = {self.cp}")

    @property
    def cp(self) -> int:
        """Ranks that share one micro-batch, each holding 1/cp of its tokens."""
        return self.ulysses * self.ring

    @property
    def dp_shard(self) -> int:
        """Different micro-batches inside one FSDP group."""
        return self.fsdp // self.cp

    @property
    def data_parallel(self) -> int:
        """Different micro-batches in the whole world (the data loader's number of shards)."""
        return self.dp_replicate * self.dp_shard

    def check_model(self, num_heads: int) -> None:
        """Ulysses splits the attention heads: their number must be divisible by its size."""
        if num_heads % self.ulysses:
            raise ParallelConfigError(f"ulysses={self.ulysses} must divide the model's {num_heads} attention heads")

    def describe(self) -> str:
        return (f"world {self.world_size} = dp_replicate {self.dp_replicate} x fsdp {self.fsdp} "
                f"(fsdp = dp_shard {self.dp_shard} x ring {self.ring} x ulysses {self.ulysses})")


class ParallelMesh:
    """The named ``DeviceMesh`` of a ``ParallelDims``, built once (``torch.distributed`` must be initialised)."""

    DIMS = ("dp_replicate", "dp_shard", "ring", "ulysses")

    def __init__(self, dims: ParallelDims, device_type: str = "cpu") -> None:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        if not dist.is_initialized():
            raise RuntimeError("ParallelMesh needs torch.distributed initialised (init_process_group) first")
        if dist.get_world_size() != dims.world_size:
            raise ParallelConfigError(f"the parallel sizes are for {dims.world_size} ranks but torch.distributed "
                                      f"has {dist.get_world_size()}")
        self.dims = dims
        shape = (dims.dp_replicate, dims.dp_shard, dims.ring, dims.ulysses)
        self.mesh = init_device_mesh(device_type, shape, mesh_dim_names=self.DIMS)
        self.flattened = {  # kept here: slicing a flattened dim from the root mesh is going away in torch
            "fsdp": self.mesh[("dp_shard", "ring", "ulysses")]._flatten("fsdp"),
            "cp": self.mesh[("ring", "ulysses")]._flatten("cp"),
            "data": self.mesh[("dp_replicate", "dp_shard")]._flatten("data"),
        }

    def __getitem__(self, name: str | tuple[str, ...]) -> Any:
        if isinstance(name, str) and name in self.flattened:
            return self.flattened[name]
        return self.mesh[name]

    def group(self, name: str) -> Any:
        """The process group of one (possibly flattened) dimension."""
        return self[name].get_group()

    def rank(self, name: str) -> int:
        """This rank's coordinate along one (possibly flattened) dimension."""
        return self[name].get_local_rank()

    @cached_property
    def fsdp_mesh(self) -> Any:
        """The mesh FSDP2 shards over: 1D ``fsdp``, or 2D (``dp_replicate``, ``fsdp``) for hybrid sharding."""
        if self.dims.dp_replicate == 1:
            return self.flattened["fsdp"]
        return self.mesh[("dp_replicate", "fsdp")]
