"""perf.train's Ray comparison: each weight layout is a valid trainer config for 2 workers, a bad one is refused."""
from __future__ import annotations

import pytest

from perf.train import TrainCase, parse_args
from perf.train_ray import LAYOUTS, _train_config, layout_parallel
from wanmodel.parallel.mesh import ParallelDims

EXPECTED = {"fsdp": (1, 2, True), "zero2": (1, 2, False), "replicate": (2, 1, True)}  # dp_replicate, fsdp, reshard


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_each_layout_is_a_trainer_config_that_fits_two_workers(layout: str) -> None:
    case = TrainCase(config="tiny", layers=None, frames=5, height=32, width=32)
    cfg = _train_config(case, 2, 1, 1e-4, layout_parallel(layout, 2))
    p = cfg.parallel
    dims = ParallelDims(world_size=2, dp_replicate=p.dp_replicate, fsdp=p.fsdp, ulysses=p.ulysses, ring=p.ring)
    assert (dims.dp_replicate, dims.fsdp, p.reshard_after_forward) == EXPECTED[layout]
    assert cfg.global_batch_size == 2 and p.activation_checkpointing


def test_layouts_option_is_checked() -> None:
    assert parse_args(["--ray-layouts", "fsdp,replicate"]).ray_layouts == ("fsdp", "replicate")
    with pytest.raises(SystemExit):
        parse_args(["--ray-layouts", "ddp"])


def test_concurrent_plain_loops_rebuild_the_case() -> None:
    """The baseline of N plain loops at once runs ``perf.train`` itself on the same case, one process each."""
    from perf.train_ray import concurrent_plain

    case = TrainCase(config="tiny", layers=1, frames=1, height=32, width=32, text_tokens=8)
    result = concurrent_plain(case, count=2, threads=1, warmup=0, steps=1, lr=1e-4)
    assert result["processes"] == 2 and len(result["per_process_step_s"]) == 2
    assert result["step_s"] == max(result["per_process_step_s"]) > 0


def test_gradient_accumulation_reaches_the_trainer_and_the_baseline() -> None:
    """``--grad-accum`` splits the batch in the plain loop, the Ray workers' trainer config and the concurrent
    plain loops alike; it must divide the batch."""
    from perf.train_ray import _case_args

    case = TrainCase(config="tiny", layers=1, frames=1, height=32, width=32, batch=4, grad_accum=2)
    assert _train_config(case, 2, 1, 1e-4, layout_parallel("replicate", 2)).grad_accum_steps == 2
    args = parse_args(_case_args(case))
    assert (args.batch, args.grad_accum) == (4, 2)
    with pytest.raises(SystemExit):
        parse_args(["--batch", "4", "--grad-accum", "3"])


@pytest.mark.parametrize("compile_blocks", [False, True])
def test_compile_reaches_the_trainer_and_the_baseline(compile_blocks: bool) -> None:
    """``--compile`` compiles the blocks in the plain loop, the Ray workers' trainer config and the concurrent plain
    loops alike, so the overhead sets compiled against compiled (or eager against eager)."""
    from perf.train_ray import _case_args

    case = TrainCase(config="tiny", layers=1, frames=1, height=32, width=32, batch=4, compile=compile_blocks)
    assert _train_config(case, 2, 1, 1e-4, layout_parallel("fsdp", 2)).parallel.compile is compile_blocks
    assert parse_args(_case_args(case)).compile is compile_blocks


@pytest.mark.parametrize("layout", ["replicate", "fsdp"])
def test_trainer_step_without_ray_runs_on_two_spawned_processes(layout: str) -> None:
    """The no-Ray split of the overhead: the trainer's own distributed step (DDP for replicas, FSDP2 otherwise) on
    2 processes of torch.multiprocessing, both timed, the same loss on both (one global batch)."""
    from perf.train_ray import spawned_case

    case = TrainCase(config="tiny", layers=1, frames=1, height=32, width=32, text_tokens=8, batch=2, grad_accum=2)
    result = spawned_case(case, workers=2, threads=1, warmup=1, steps=2, lr=1e-4, layout=layout)
    workers = result["per_worker"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert result["step_s"] == max(w["step_s"] for w in workers) > 0
    assert all(0 < w["cpu_per_wall"] <= 4 for w in workers)
    assert workers[0]["losses"] == workers[1]["losses"]  # the global-batch loss, all-reduced
    # where the CPU went: the step's own thread does the work; the workers' and other processes' cores add up
    assert all(max(w["thread_cpu_per_wall"], key=w["thread_cpu_per_wall"].get) == "step" for w in workers)
    from perf.train import _cores

    _cores(result)
    assert result["worker_cores"] == pytest.approx(sum(w["cpu_per_wall"] for w in workers))
    assert -0.5 < result["other_cores"] < 4


def test_thread_cpu_tells_the_step_thread_from_the_others_and_the_machine_counts_both() -> None:
    """A thread that spins while the step's thread sleeps: its CPU goes to its own name, not to ``step``, and the
    machine's busy cores over the window include it."""
    import threading
    import time

    from perf.measure import machine_busy_s, thread_cpu_per_wall, thread_cpu_s

    started, done = threading.Event(), threading.Event()

    def spin() -> None:
        started.set()
        while not done.is_set():
            sum(range(1000))

    spinner = threading.Thread(target=spin)
    spinner.start()
    started.wait()
    before, machine, wall = thread_cpu_s(), machine_busy_s(), time.perf_counter()
    time.sleep(0.6)
    after, machine, wall = thread_cpu_s(), machine_busy_s() - machine, time.perf_counter() - wall
    done.set()
    spinner.join()
    shares = thread_cpu_per_wall(before, after, wall)
    assert shares.get("step", 0.0) < 0.2  # the sleeping thread
    assert sum(v for k, v in shares.items() if k != "step") > 0.4  # the spinning one, under the process's name
    assert machine / wall > 0.4
