"""Context parallelism (Ulysses, Ring, 2D) and the parallel mesh: equal to one process, gradients included.

Each case runs in 2 or 4 CPU processes (gloo). Every rank also computes the single-process result itself (same
seed, same weights, no parallelism) and reports its largest difference, so the comparison is exact per rank.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from wanmodel.parallel.mesh import ParallelConfigError, ParallelDims

TOL = 1e-5
LAYOUTS = {2: [(2, 1, 1), (1, 2, 1)], 4: [(4, 1, 1), (1, 4, 1), (2, 2, 1), (2, 1, 2)]}
"""world size -> (ulysses, ring, micro-batches inside the FSDP group) layouts run in one spawn."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"x": torch.randn(2, 16, 3, 8, 8, generator=g), "t": torch.tensor([100.0, 700.0]),
            "context": torch.randn(2, 7, 32, generator=g), "q": torch.randn(2, 24, 4, 16, generator=g),
            "k": torch.randn(2, 24, 4, 16, generator=g), "v": torch.randn(2, 24, 4, 16, generator=g),
            "w": torch.randn(2, 24, 4, 16, generator=g)}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference, relative to the reference's scale where that exceeds 1 (float32 rounding scales)."""
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1.0))


def _attention_case(cp, data: dict[str, torch.Tensor]) -> dict[str, float]:
    from wanmodel.models.attention import attention

    full = {n: data[n].clone().requires_grad_(True) for n in "qkv"}
    expected = attention(full["q"], full["k"], full["v"], backend="sdpa")
    (expected * data["w"]).sum().backward()
    shards = {n: cp.shard(data[n]).clone().requires_grad_(True) for n in "qkv"}
    out = cp.attention(shards["q"], shards["k"], shards["v"], backend="sdpa")
    (out * cp.shard(data["w"])).sum().backward()
    errors = {"attention_out": _max_diff(out, cp.shard(expected))}
    for n in "qkv":
        errors[f"attention_grad_{n}"] = _max_diff(shards[n].grad, cp.shard(full[n].grad))
    return errors


def _dit_case(cp, data: dict[str, torch.Tensor]) -> dict[str, float]:
    import torch.distributed as dist

    from wanmodel.models.dit import WanDiT
    from wanmodel.parallel.context import apply_context_parallel

    torch.manual_seed(0)
    reference = WanDiT("tiny", attention_backend="sdpa")
    for p in reference.parameters():  # the released init zeroes the head: give every weight a gradient path
        torch.nn.init.normal_(p, std=0.2)
    model = WanDiT("tiny", attention_backend="sdpa")
    model.load_state_dict(reference.state_dict())
    expected = reference(data["x"], data["t"], data["context"])
    expected.square().mean().backward()
    apply_context_parallel(model, cp)
    out = model(data["x"], data["t"], data["context"])
    out.square().mean().backward()
    errors = {"dit_out": _max_diff(out, expected), "dit_grad": 0.0}
    for (name, p), (_, ref) in zip(model.named_parameters(), reference.named_parameters()):
        grad = p.grad.clone()
        dist.all_reduce(grad, group=cp.cp_group)  # what FSDP's mean over the CP ranks does
        errors["dit_grad"] = max(errors["dit_grad"], _max_diff(grad / cp.size, ref.grad))
    return errors


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from wanmodel.parallel.context import ContextParallel
    from wanmodel.parallel.mesh import ParallelMesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    results = {}
    for ulysses, ring, batches in LAYOUTS[world]:
        mesh = ParallelMesh(ParallelDims(world, ulysses=ulysses, ring=ring))
        cp = ContextParallel.from_mesh(mesh)
        data = _inputs(seed=mesh.rank("data"))  # ranks of one CP group share a micro-batch
        assert mesh.dims.data_parallel == batches
        results[f"u{ulysses}r{ring}"] = {**_attention_case(cp, data), **_dit_case(cp, data)}
    Path(out_dir, f"{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_context_parallel_equals_one_process(world: int, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    for rank in range(world):
        for layout, errors in json.loads((tmp_path / f"{rank}.json").read_text()).items():
            worst = max(errors, key=errors.get)
            assert errors[worst] <= TOL, f"rank {rank}, {layout}: {worst} differs by {errors[worst]:.2e}"


def _train_losses(model, batches, steps: int = 3) -> list[float]:
    """AdamW steps of the flow-matching-like MSE on fixed batches; the loss of each step (before its update)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        x, t, context, target = batches(step)
        loss = (model(x, t, context) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def _global_batch(step: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(100 + step)
    return (torch.randn(4, 16, 3, 8, 8, generator=g), torch.rand(4, generator=g) * 1000,
            torch.randn(4, 7, 32, generator=g), torch.randn(4, 16, 3, 8, 8, generator=g))


def _fsdp_worker(rank: int, world: int, port: int, out_dir: str, ulysses: int) -> None:
    import torch.distributed as dist

    from wanmodel.models.dit import WanDiT
    from wanmodel.parallel.mesh import ParallelMesh
    from wanmodel.parallel.parallelize import ParallelPlan, parallelize_dit

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    reference = WanDiT("tiny", attention_backend="sdpa")
    torch.nn.init.normal_(reference.head.head.weight, std=0.02)  # a head that is not zero: every layer learns
    model = WanDiT("tiny", attention_backend="sdpa")
    model.load_state_dict(reference.state_dict())
    expected = _train_losses(reference, _global_batch)
    mesh = ParallelMesh(ParallelDims(world, ulysses=ulysses))
    parallelize_dit(model, mesh, ParallelPlan(param_dtype=torch.float32))
    shards, index = mesh.dims.data_parallel, mesh.rank("data")

    def local(step: int) -> tuple[torch.Tensor, ...]:
        return tuple(t.chunk(shards)[index] for t in _global_batch(step))

    losses = torch.tensor(_train_losses(model, local))
    dist.all_reduce(losses)  # the global-batch loss is the mean of the data shards' losses (each rank counted once
    losses /= world           # per CP group member: CP ranks of one shard hold the same loss)
    Path(out_dir, f"{rank}.json").write_text(json.dumps({"expected": expected, "got": losses.tolist()}))
    dist.destroy_process_group()


@pytest.mark.parametrize("world,ulysses", [(2, 1), (4, 2)])
def test_fsdp_and_context_parallel_train_like_one_process(world: int, ulysses: int, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_fsdp_worker, args=(world, _free_port(), str(tmp_path), ulysses), nprocs=world, join=True)
    result = json.loads((tmp_path / "0.json").read_text())
    assert result["got"] == pytest.approx(result["expected"], abs=1e-4)
    assert result["expected"][-1] < result["expected"][0]  # the steps did something


def test_parallel_sizes_must_multiply_to_the_world_size() -> None:
    dims = ParallelDims(128, dp_replicate=4, fsdp=32, ulysses=8, ring=2)  # the report's Fig. 11
    assert (dims.cp, dims.dp_shard, dims.data_parallel) == (16, 2, 8)
    assert ParallelDims(8, ulysses=2).fsdp == 8
    with pytest.raises(ParallelConfigError, match=r"dp_replicate \(2\) x fsdp \(3\) = 6, world size 8"):
        ParallelDims(8, dp_replicate=2, fsdp=3)
    with pytest.raises(ParallelConfigError, match="fsdp \\(4\\) is not a multiple of cp"):
        ParallelDims(4, ulysses=8)
    with pytest.raises(ParallelConfigError, match="does not divide the world size"):
        ParallelDims(6, dp_replicate=4)
    with pytest.raises(ParallelConfigError, match="ulysses=8 must divide the model's 12 attention heads"):
        ParallelDims(8, ulysses=8).check_model(12)
