"""perf.sampling and its quality guard (wanmodel.accel.quality): the smoke run writes every mode, the exact modes
are exact, diffusers on the same weights agrees, and the guard's figures are right on inputs with known answers."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wanmodel.accel.quality import (
    OFFLINE_DIMENSIONS,
    bench_dimension_deltas,
    compare_results,
    latent_mse,
    psnr,
)


# ------------------------------------------------------------------------------------------- the guard
def test_psnr_and_mse_known_answers() -> None:
    exact = torch.zeros(2, 3, 4, 5, 6)
    fast = exact + 0.1  # MSE 0.01 on a [-1, 1] video (range 2): 10 log10(4 / 0.01)
    assert latent_mse(fast, exact) == pytest.approx(0.01, rel=1e-6)
    assert psnr(fast, exact) == pytest.approx(10 * math.log10(400), rel=1e-6)
    assert psnr(exact, exact) == math.inf and latent_mse(exact, exact) == 0.0
    frames = np.full((3, 4, 4, 3), 100, np.uint8)
    assert psnr(frames + 1, frames) == pytest.approx(20 * math.log10(255), rel=1e-9)  # uint8: range 255
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(exact[:1], exact)


def test_compare_results_per_sample_and_pooled() -> None:
    latents = torch.zeros(2, 16, 1, 2, 2)
    decoded = torch.zeros(2, 3, 1, 4, 4)
    exact = SimpleNamespace(latents=latents, decoded=decoded, videos=[])
    moved = latents.clone()
    moved[1] += 0.2  # only sample 1 differs: per-sample MSE 0 and 0.04, pooled 0.02
    frames = decoded.clone()
    frames[1] += 0.1
    report = compare_results(SimpleNamespace(latents=moved, decoded=frames, videos=[]), exact)
    assert [s["latent_mse"] for s in report.per_sample] == pytest.approx([0.0, 0.04])
    assert report.latent_mse == pytest.approx(0.02)
    assert report.per_sample[0]["psnr_db"] == math.inf
    assert report.psnr_db == pytest.approx(10 * math.log10(4 / 0.005), rel=1e-6)


def _moving_square(shift: int) -> np.ndarray:
    video = np.zeros((9, 64, 64, 3), np.uint8)
    for t in range(9):
        video[t, 20:36, 4 + shift * t:20 + shift * t] = 255
    return video


def test_bench_dimensions_score_both_sets() -> None:
    """Offline Wan-Bench dimensions: the same videos differ by exactly 0; a still video against a moving one
    scores less large_motion; a one-frame image cannot be scored by a flow dimension and is recorded as skipped."""
    moving, still = _moving_square(3), _moving_square(0)
    same = bench_dimension_deltas([moving], [moving], ["a square"], fps=16)
    assert set(same) == set(OFFLINE_DIMENSIONS)
    assert all(figure["delta"] == 0.0 for figure in same.values()), same
    slower = bench_dimension_deltas([moving], [still], ["a square"], fps=16)
    assert slower["large_motion"]["delta"] < 0 < slower["large_motion"]["exact"]
    image = bench_dimension_deltas([moving[:1]], [moving[:1]], ["a square"], fps=16)
    assert all("needs at least 2 frames" in figure["skipped"] for figure in image.values())


# ------------------------------------------------------------------------------------------- the benchmark
def test_torch_euler_stand_in_equals_the_diffusers_euler_scheduler() -> None:
    """The solver perf.sampling uses where diffusers is absent steps exactly as diffusers' Euler on the same grid."""
    from wanmodel.diffusion.schedulers import TorchFlowEuler, prepare_scheduler

    ours, reference = TorchFlowEuler(6, 3.0), prepare_scheduler("euler", 6, 3.0, spacing="official")
    torch.testing.assert_close(ours.timesteps, reference.timesteps.float(), rtol=1e-6, atol=1e-4)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 2, 2, generator=generator)
    y = x.clone()
    for t in reference.timesteps:
        velocity = torch.randn(x.shape, generator=generator)
        x = ours.step(velocity, t, x)[0]
        y = reference.step(velocity, t, y, return_dict=False)[0]
    torch.testing.assert_close(x, y, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from perf import sampling

    threads, real = torch.get_num_threads(), sampling.benchmark
    out = tmp_path_factory.mktemp("sampling")
    on_disk: list[dict] = []  # sampling.json as each mode left it

    def spied(args, emit=None):  # wraps main's own writer
        def emit_and_read(result: dict) -> None:
            emit(result)
            on_disk.append(json.loads((Path(out) / "sampling.json").read_text()))
        return real(args, emit=emit_and_read)

    sampling.benchmark = spied
    try:
        sampling.main(["--smoke", "--out", str(out)])
    finally:
        sampling.benchmark = real
        torch.set_num_threads(threads)
    result = json.loads((Path(out) / "sampling.json").read_text())
    return {**result, "on_disk": on_disk}


def test_smoke_writes_every_mode(smoke: dict) -> None:
    from perf.sampling_modes import modes

    names = [row["mode"] for row in smoke["cases"]]
    assert names == [mode.name for mode in modes("fp32", device="cpu", reference=True)]
    assert {"plain", "plain-bf16", "diffusers", "combined"} <= set(names)
    for row in smoke["cases"]:
        if not row["available"]:
            assert row["reason"], row  # an absent mode says why
            continue
        assert row["video_s"] > 0 and row["step_s"] > 0 and math.isfinite(row["peak_mb"]), row
        assert row["steps_run"] == smoke["settings"]["num_steps"] == 4 and not row["extrapolated"]
        assert "psnr_db" in row and "latent_mse" in row and row["speedup"] > 0


def test_sampling_json_is_rewritten_after_each_mode(smoke: dict) -> None:
    """A time-out keeps the modes done: after mode k the file on disk holds the first k rows, marked incomplete,
    and the final file is marked complete with all of them."""
    partial = smoke["on_disk"]
    assert [len(result["cases"]) for result in partial] == list(range(1, len(smoke["cases"]) + 1))
    assert not any(result["complete"] for result in partial) and smoke["complete"]
    assert [row["mode"] for row in partial[-1]["cases"]] == [row["mode"] for row in smoke["cases"]]


def test_smoke_exact_modes_are_exact_and_diffusers_agrees(smoke: dict) -> None:
    rows = {row["mode"]: row for row in smoke["cases"] if row["available"]}
    plain = rows["plain"]
    assert plain["latent_mse"] == 0.0 and plain["psnr_db"] == math.inf
    assert plain["dit_passes"] == 2 * 4  # CFG: cond + uncond each of the 4 steps
    for name in ("cache:off", "offload"):  # every cache off / the same weights streamed block by block
        if name in rows:
            assert rows[name]["latent_mse"] == 0.0 and rows[name]["psnr_db"] == math.inf, rows[name]
    reference = rows["diffusers"]  # same weights, same noise, same UniPC grid; measured ~1e-11 and 121 dB
    assert reference["latent_mse"] < 1e-9 and reference["psnr_db"] > 90
    assert reference["dit_passes"] == 8 and reference["vs_diffusers_step"] == 1.0
    assert 30 < rows["plain-bf16"]["psnr_db"] < math.inf  # bf16 deviates, a little


def test_compare_to_exact_on_a_tiny_pipeline() -> None:
    """The pipeline-level helper: the exact run against itself is exact; a bf16 copy of the DiT deviates a little
    (finite PSNR above 30 dB, the level perf.sampling measures for plain-bf16)."""
    import copy

    from perf.sampling_modes import HashedText
    from wanmodel.accel.quality import compare_to_exact
    from wanmodel.models.dit import WanDiT
    from wanmodel.models.random_init import randomize_
    from wanmodel.models.vae import WanVAE
    from wanmodel.pipelines.t2v import WanT2VPipeline
    from wanmodel.pipelines.tiny import tiny_dit_config

    dit = randomize_(WanDiT(tiny_dit_config()), 3).eval()
    vae = randomize_(WanVAE("tiny"), 4).eval()
    pipeline = WanT2VPipeline(dit, vae, HashedText(dit.config.text_dim))
    settings = {"height": 32, "width": 32, "num_frames": 5, "num_steps": 3, "guidance_scale": 4.0,
                "solver": "euler", "negative_prompt": ""}
    prompts, seeds = ["a corgi", "a fox"], [1, 2]
    same = compare_to_exact(pipeline, prompts, seeds, **settings)
    assert same.latent_mse == 0.0 and same.psnr_db == math.inf and len(same.per_sample) == 2
    half = WanT2VPipeline(copy.deepcopy(dit).set_dtype(torch.bfloat16), vae, HashedText(dit.config.text_dim))
    report = compare_to_exact(pipeline, prompts, seeds, fast_pipeline=half, **settings)
    assert 0.0 < report.latent_mse and 30.0 < report.psnr_db < math.inf
