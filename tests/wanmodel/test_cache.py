"""Diffusion caches (``wanmodel.accel.cache``) on the tiny random-weight pipelines: every cache switched off gives
the exact sampler's result bit for bit, each one on deviates by a bounded, non-zero amount, FasterCache-style
compensation beats plain reuse of the unconditional output, the DiT runs exactly as the schedule says, presets and
bad settings, MagCache calibration, preset tuning, and ``wan sample --cache``.

Random weights give unrealistic trajectories: the bounds here are measured on them (each a little above the
measured value), they say nothing about quality on a trained model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from jobs.cli import main as wan
from wanmodel.accel import (
    AttentionCacheConfig,
    CacheConfig,
    CFGCacheConfig,
    DiffusionCache,
    MagCacheConfig,
    TeaCacheConfig,
    build_cache,
    cache_preset,
    calibrate_magcache,
    calibrate_teacache,
    load_presets,
    preset_names,
    tune_cache,
)
from wanmodel.accel.cache import interpolate_ratios
from wanmodel.pipelines import WanI2VPipeline, WanT2VPipeline
from wanmodel.pipelines.tiny import build_tiny_models

SETTINGS = {"height": 32, "width": 48, "num_frames": 9, "num_steps": 10, "guidance_scale": 4.0, "shift": 3.0}
PROMPTS = ["a corgi surfing a wave", "a red fox walking through fresh snow in a quiet forest at dusk"]
FLAT = tuple([1.0] * 10)  # MagCache ratios of 1: the error estimate stays 0, so only max_skips limits skipping


@pytest.fixture(scope="module")
def exact(t2v: WanT2VPipeline) -> torch.Tensor:
    return t2v.generate(PROMPTS, seed=[1, 2], **SETTINGS).latents


def _run(pipeline: WanT2VPipeline, cache, **overrides) -> tuple[torch.Tensor, DiffusionCache]:
    step_cache = build_cache(cache)
    latents = pipeline.generate(PROMPTS, seed=[1, 2], cache=step_cache, **{**SETTINGS, **overrides}).latents
    return latents, step_cache


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean())


# ------------------------------------------------------------------------------------------------ exactness
OFF = {
    "preset off": "off",
    "attention period 1": CacheConfig(attention=AttentionCacheConfig(period=1, modules=("self_attn", "cross_attn"))),
    "cfg period 1": CacheConfig(cfg=CFGCacheConfig(period=1, start=0.0, compensation="fft")),
    "magcache threshold 0": CacheConfig(magcache=MagCacheConfig(threshold=0.0, ratios=FLAT)),
    "teacache threshold 0": CacheConfig(teacache=TeaCacheConfig(threshold=0.0)),
    "all off": CacheConfig(attention=AttentionCacheConfig(period=1), cfg=CFGCacheConfig(period=1, start=0.0),
                           magcache=MagCacheConfig(threshold=0.0)),
}


@pytest.mark.parametrize("name", list(OFF))
def test_cache_switched_off_is_bitwise_exact(t2v: WanT2VPipeline, exact: torch.Tensor, name: str) -> None:
    latents, step_cache = _run(t2v, OFF[name])
    assert torch.equal(latents, exact)
    stats = step_cache.stats
    assert stats.computed_passes == stats.exact_passes == 20 and stats.dit_calls == 10 and stats.skipped_steps == 0


def test_i2v_cache_off_is_exact_and_on_passes_the_conditions(tiny: Path) -> None:
    paths = build_tiny_models(tiny, "i2v")
    pipeline = WanI2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder, image_encoder=paths.clip)
    image = torch.rand(3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    settings = {**SETTINGS, "num_steps": 6}
    run = lambda cache: pipeline.generate(["waves"], images=[image], seed=5, cache=cache, **settings).latents
    reference = run(None)
    assert torch.equal(run(CacheConfig(cfg=CFGCacheConfig(period=1, start=0.0))), reference)
    # the CFG cache's cond-only calls take the cond rows of clip_fea and y (the model checks their batch)
    cached = run(CacheConfig(cfg=CFGCacheConfig(period=2, start=0.0), attention=AttentionCacheConfig(period=2)))
    assert 0 < _mse(cached, reference) < 0.065  # measured 0.043
    # TeaCache's indicator patchifies the latents with y, as the model does
    teacache = build_cache(CacheConfig(teacache=TeaCacheConfig(threshold=0.6)))
    run(teacache)
    assert teacache.stats.skipped == [2, 4]


# ------------------------------------------------------------------------------------------------ deviation
ON = {  # name: (cache, measured latent MSE against the exact sampler; the bound is 1.5x it)
    "attention": (CacheConfig(attention=AttentionCacheConfig(period=2, start=0.2, end=0.9)), 3.0e-4),
    "attention+cross": (CacheConfig(attention=AttentionCacheConfig(period=3, modules=("self_attn", "cross_attn"))),
                        7.0e-3),
    "cfg fft": (CacheConfig(cfg=CFGCacheConfig(period=2, start=0.3)), 0.0162),
    "magcache": (CacheConfig(magcache=MagCacheConfig(threshold=0.1, ratios=FLAT)), 0.108),
    "teacache": (CacheConfig(teacache=TeaCacheConfig(threshold=0.5)), 0.0231),
}


@pytest.mark.parametrize("name", list(ON))
def test_cache_on_deviates_by_a_bounded_nonzero_amount(t2v: WanT2VPipeline, exact: torch.Tensor,
                                                       name: str) -> None:
    cache, measured = ON[name]
    latents, _ = _run(t2v, cache)
    assert 0 < _mse(latents, exact) < 1.5 * measured


# measured latent MSE of each stored preset at SETTINGS (10 steps; the presets were tuned at 20)
PRESET_MSE = {"attention": 0.0105, "cfg": 0.0373, "magcache-slow": 0.0618, "magcache-fast": 0.157, "teacache": 0.108,
              "combined": 0.180}


@pytest.mark.parametrize("name", [n for n in preset_names() if n != "off"])
def test_presets_deviate_by_a_bounded_amount_and_save_work(t2v: WanT2VPipeline, exact: torch.Tensor,
                                                           name: str) -> None:
    latents, step_cache = _run(t2v, name)
    measured = PRESET_MSE[name]
    assert 0 < _mse(latents, exact) < 1.5 * measured
    assert step_cache.stats.flops_speedup > 1.0


def test_cfg_compensation_beats_plain_reuse(t2v: WanT2VPipeline, exact: torch.Tensor) -> None:
    deviation = {mode: _mse(_run(t2v, CacheConfig(cfg=CFGCacheConfig(period=3, start=0.3, compensation=mode,
                                                                      alpha=0.1)))[0], exact)
                 for mode in ("plain", "delta", "fft")}
    # measured: plain 1.09, delta 0.041, fft 0.048
    assert 0 < deviation["fft"] < deviation["plain"] / 10 and 0 < deviation["delta"] < deviation["plain"] / 10


# ------------------------------------------------------------------------------------------------ counting
class _Counter:
    """Real DiT forward calls (batch rows each) and real self/cross-attention computations (their q projection)."""

    def __init__(self, dit: torch.nn.Module) -> None:
        self.rows: list[int] = []
        self.self_attn = self.cross_attn = 0
        self.handles = [dit.register_forward_hook(lambda m, args, out: self.rows.append(args[0].shape[0]))]
        for block in dit.blocks:
            self.handles.append(block.self_attn.q.register_forward_hook(lambda *a: self._add("self_attn")))
            self.handles.append(block.cross_attn.q.register_forward_hook(lambda *a: self._add("cross_attn")))

    def _add(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _count(pipeline: WanT2VPipeline, cache) -> tuple[_Counter, DiffusionCache]:
    counter = _Counter(pipeline.dit)
    try:
        _, step_cache = _run(pipeline, cache)
    finally:
        counter.close()
    return counter, step_cache


def test_cfg_cache_runs_the_unconditional_pass_on_schedule(t2v: WanT2VPipeline) -> None:
    counter, step_cache = _count(t2v, CacheConfig(cfg=CFGCacheConfig(period=2, start=0.5)))
    # steps 5..9 are in range; 5, 7, 9 refresh (both passes, 4 rows), 6 and 8 run the cond pass only (2 rows)
    assert counter.rows == [4] * 6 + [2, 4, 2, 4]
    stats = step_cache.stats
    assert (stats.dit_calls, stats.cond_passes, stats.uncond_passes, stats.uncond_estimated) == (10, 10, 8, 2)
    assert stats.speedup == pytest.approx(20 / 18)


def test_magcache_skips_on_schedule(t2v: WanT2VPipeline) -> None:
    cache = CacheConfig(magcache=MagCacheConfig(threshold=0.01, max_skips=2, retention=0.2, keep_last=1, ratios=FLAT))
    counter, step_cache = _count(t2v, cache)
    # steps 0, 1 retained; then 2 skips, a compute, ...; step 9 (keep_last) computes
    assert step_cache.stats.skipped == [2, 3, 5, 6, 8]
    assert counter.rows == [4] * 5 and step_cache.stats.dit_calls == 5 and step_cache.stats.speedup == 2.0


def test_attention_cache_recomputes_every_period_and_unhooks(t2v: WanT2VPipeline) -> None:
    blocks = len(t2v.dit.blocks)
    counter, step_cache = _count(t2v, CacheConfig(attention=AttentionCacheConfig(period=3, start=0.0, end=1.0)))
    # computed at steps 0, 3, 6, 9; the cross-attention is not cached and runs every step
    assert counter.self_attn == 4 * blocks and counter.cross_attn == 10 * blocks
    assert (step_cache.stats.attention_computed, step_cache.stats.attention_reused) == (4 * blocks, 6 * blocks)
    assert step_cache.stats.computed_passes == 20 and step_cache.stats.flops_speedup > 1.0
    assert all("forward" not in block.self_attn.__dict__ for block in t2v.dit.blocks)


def test_combined_caches_count(t2v: WanT2VPipeline) -> None:
    cache = CacheConfig(attention=AttentionCacheConfig(period=2), cfg=CFGCacheConfig(period=2, start=0.5),
                        magcache=MagCacheConfig(threshold=0.01, max_skips=1, ratios=FLAT))
    counter, step_cache = _count(t2v, cache)
    stats = step_cache.stats
    assert stats.dit_calls == len(counter.rows) == 10 - stats.skipped_steps and stats.skipped_steps > 0
    assert sum(counter.rows) == 2 * stats.computed_passes and stats.uncond_estimated > 0
    assert stats.attention_reused > 0


# ------------------------------------------------------------------------------------------------ presets, errors
def test_presets_file() -> None:
    data = load_presets()
    assert {"off", "attention", "cfg", "magcache-fast", "magcache-slow", "teacache", "combined"} <= set(preset_names())
    assert "tiny" in data["chosen_on"] and data["note"]
    assert not cache_preset("off").active
    assert all(cache_preset(name).active for name in preset_names() if name != "off")
    assert cache_preset("combined").name == "combined"


@pytest.mark.parametrize(("make", "message"), [
    (lambda: cache_preset("turbo"), "unknown cache preset 'turbo'"),
    (lambda: build_cache("turbo"), "choose from"),
    (lambda: build_cache(3), "preset name"),
    (lambda: CacheConfig.from_dict({"cfg": {"period": 0}}), "cfg.period"),
    (lambda: CacheConfig.from_dict({"cfg": {"periods": 2}}), "unknown cfg cache setting"),
    (lambda: CacheConfig.from_dict({"fastcache": {}}), "unknown cache section"),
    (lambda: TeaCacheConfig(threshold=-0.5), "teacache.threshold"),
    (lambda: TeaCacheConfig(coefficients=(1.0, float("nan"))), "teacache.coefficients"),
    (lambda: CFGCacheConfig(compensation="magic"), "cfg.compensation"),
    (lambda: CFGCacheConfig(start=0.9, end=0.5), "must not be after"),
    (lambda: AttentionCacheConfig(period=2, modules=("ffn",)), "attention.modules"),
    (lambda: MagCacheConfig(threshold=-1), "magcache.threshold"),
    (lambda: MagCacheConfig(ratios=(1.0, -2.0)), "magcache.ratios"),
])
def test_bad_cache_settings_are_clear_errors(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_preset_in_generate_is_an_error(t2v: WanT2VPipeline) -> None:
    with pytest.raises(ValueError, match="unknown cache preset 'fast'"):
        t2v.generate(PROMPTS, cache="fast", **SETTINGS)
    uncalibrated = CacheConfig(magcache=MagCacheConfig(threshold=0.1, calibration="1.3B"))
    with pytest.raises(ValueError, match="no MagCache calibration named '1.3B'"):
        t2v.generate(PROMPTS, cache=uncalibrated, **SETTINGS)
    assert all("forward" not in block.self_attn.__dict__ for block in t2v.dit.blocks)


def test_interpolate_ratios() -> None:
    assert interpolate_ratios([1.0, 2.0, 3.0], 3) == [1.0, 2.0, 3.0]
    assert interpolate_ratios([1.0, 3.0], 5) == pytest.approx([1.0, 1.5, 2.0, 2.5, 3.0])


# ------------------------------------------------------------------------------------------------ calibration, tuning
def test_calibrate_magcache_then_skip(t2v: WanT2VPipeline, exact: torch.Tensor) -> None:
    ratios = calibrate_magcache(t2v, PROMPTS, seed=[1, 2], **SETTINGS)
    assert len(ratios) == 10 and ratios[0] == 1.0 and all(0.5 < r < 2.0 for r in ratios)
    assert len(set(ratios)) > 2  # measured, not a constant
    latents, step_cache = _run(t2v, CacheConfig(magcache=MagCacheConfig(threshold=0.1, ratios=tuple(ratios))))
    assert step_cache.stats.skipped_steps > 0 and 0 < _mse(latents, exact) < 1.0


def test_teacache_skips_on_its_indicator_and_calibrates(t2v: WanT2VPipeline, exact: torch.Tensor) -> None:
    _, raw = _run(t2v, CacheConfig(teacache=TeaCacheConfig(threshold=0.8)))
    # retention 0.2 keeps steps 0, 1 and keep_last step 9; the raw relative change (~0.2-0.4 a step on random
    # weights) lets about two steps accumulate
    assert raw.stats.skipped == [2, 3, 5, 6, 8]
    coefficients = calibrate_teacache(t2v, PROMPTS, seed=[1, 2], **SETTINGS)
    assert len(coefficients) == 3 and coefficients != (0.0, 1.0, 0.0)
    latents, fitted = _run(t2v, CacheConfig(teacache=TeaCacheConfig(threshold=0.8, coefficients=coefficients)))
    assert fitted.stats.skipped == [2, 4, 6, 8] and 0 < _mse(latents, exact) < 0.09  # measured 0.058
    # with MagCache too, a step is skipped only when both agree
    _, both = _run(t2v, CacheConfig(teacache=TeaCacheConfig(threshold=0.8),
                                    magcache=MagCacheConfig(threshold=0.1, max_skips=1, ratios=FLAT)))
    assert 0 < both.stats.skipped_steps < raw.stats.skipped_steps
    assert set(both.stats.skipped) <= set(raw.stats.skipped)


def test_tune_cache_keeps_the_fastest_within_the_floor(t2v: WanT2VPipeline) -> None:
    candidates = [CacheConfig(name="off"),
                  CacheConfig(cfg=CFGCacheConfig(period=2, start=0.5), name="cfg"),
                  CacheConfig(magcache=MagCacheConfig(threshold=0.5, max_skips=4, ratios=FLAT), name="greedy")]
    best, trials = tune_cache(t2v, PROMPTS, candidates, psnr_floor=20.0, seed=[1, 2], **SETTINGS)
    by_name = {trial.config.name: trial for trial in trials}
    assert by_name["off"].psnr == float("inf") and by_name["off"].speedup == 1.0
    assert by_name["greedy"].speedup > by_name["cfg"].speedup > 1.0
    assert by_name["greedy"].psnr < by_name["cfg"].psnr < float("inf")
    passing = [t for t in trials if t.psnr >= 20.0]
    assert best is max(passing, key=lambda t: t.flops_speedup)
    strict, _ = tune_cache(t2v, PROMPTS, candidates[1:], psnr_floor=200.0, seed=[1, 2], **SETTINGS)
    assert strict is None


# ------------------------------------------------------------------------------------------------ CLI
def test_wan_sample_cache_end_to_end(tiny: Path, t2v: WanT2VPipeline, tmp_path: Path) -> None:
    out = tmp_path / "cached"
    assert wan(["sample", "--random-tiny", "--tiny-dir", str(tiny), "--prompt", PROMPTS[0], "--out", str(out),
                "--size", "32x48", "--frames", "9", "--steps", "10", "--guidance", "4", "--shift", "3",
                "--cache", "combined"]) == 0
    summary = json.loads((out / "samples.json").read_text())
    expected = build_cache("combined")
    t2v.generate([PROMPTS[0]], seed=0, cache=expected, **SETTINGS)
    assert summary["cache"]["preset"] == "combined"
    for key in ("dit_calls", "computed_passes", "skipped", "attention_reused"):
        assert summary["cache"][key] == expected.stats.to_dict()[key]
    assert summary["cache"]["speedup"] > 1.0 and len(summary["samples"]) == 1


def test_wan_sample_bad_cache_preset(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        wan(["sample", "--random-tiny", "--tiny-dir", str(tiny), "--prompt", "a cat", "--out", str(tmp_path),
             "--cache", "warp"])
    assert exit_info.value.code == 2 and "unknown cache preset 'warp'" in capsys.readouterr().err


def test_batch_sample_job_cache_key(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from curation.lake import Lake
    from wanmodel.pipelines.batch import SampleJobConfig, run_sampling, sample_items

    def config(**overrides) -> SampleJobConfig:
        return SampleJobConfig(lake=str(tmp_path / "lake"), prompts=["a lighthouse at night"], seeds=[3],
                               models={"random_tiny": True, "tiny_dir": str(tmp_path / "tiny")}, torch_threads=1,
                               sampling={"height": 32, "width": 32, "num_frames": 5, "num_steps": 4}, **overrides)

    with pytest.raises(ValidationError, match="unknown cache preset 'warp'"):
        config(cache="warp")
    cached, exact = config(cache="magcache-fast"), config()
    lake = Lake(cached.lake)
    assert sample_items(cached, lake)[0]["sample_id"] != sample_items(exact, lake)[0]["sample_id"]
    run_sampling(cached, backend="local")
    assert [row["status"] for row in lake.read("samples").to_pylist()] == ["ok"]
