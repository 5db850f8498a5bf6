"""Text-to-video sampling: time per video, per-step time, DiT passes and peak memory of every fast mode (step-cache
presets, FP8 linears, block offload, their combination) next to our plain sampler and diffusers' ``WanPipeline`` on
the same weights, with the quality guard (latent MSE, PSNR of decoded frames against OUR exact plain sampler) in
one run.

    python -m perf.sampling [--smoke] [--shape tiny|1.3B-few-layers|1.3B] [--out DIR]
    options: [--device cpu|cuda] [--dtype fp32|bf16] [--steps N] [--timed-steps K] [--prompts N]
             [--prompt-set default|toy] [--guidance G] [--shift S] [--solver unipc|euler] [--frames F]
             [--height H] [--width W] [--dit PATH --vae PATH [--text-encoder PATH]] [--train-toy [--train-steps N]]
             [--bench-dims] [--no-reference] [--modes a,b,...] [--repeat N] [--no-warmup] [--threads N]

The toy table (issue 14): the demo's trained toy DiT at its own sampling settings,
    python -m perf.sampling --dit out/demo/toy/dit/export/ours --vae out/demo/toy/vae/step_000120 \\
        --text-encoder out/demo/toy/models/umt5 --prompt-set toy --prompts 6 --frames 1 --height 32 --width 32 \\
        --steps 20 --solver euler --shift 1 --guidance 1
(the VAE folder is the step that ``toy/vae/latest`` names) or, without a demo run, ``--train-toy`` (the tiny DiT
trained here on planted latents).

- Shapes (``SHAPES``): ``tiny`` (tiny DiT and VAE, 9 frames of 32x48, seconds), ``1.3B-few-layers`` (the 1.3B's
  width with 2 blocks, 5 frames of 64x64, CPU) and ``1.3B`` (480p x 81 frames x 50 steps, the Wan2.1 VAE; a GPU).
  Weights are random (fan-in scaled, ``randomize_``) unless ``--dit/--vae`` name a checkpoint (the toy DiT of
  ``wan demo``, say); ``--train-toy`` first trains the tiny DiT briefly on planted latents
  (``perf.sampling_modes.train_toy``), so the trajectories are real. PSNR against the exact sampler on random
  weights is not the quality of a trained model.
- Bench (``--bench-dims``): the Wan-Bench dimensions that run offline (``wanmodel.accel.quality``) on the exact and
  each mode's videos, and their difference; skipped with the reason where ``bench`` does not import.
- Text: a fixed prompt set; embeddings from ``--text-encoder`` (umT5 folder) or, by default, a deterministic
  stand-in (``HashedText``: per-prompt Gaussian [L, text_dim] seeded by the prompt's CRC32), so the GPU box needs
  torch only. diffusers gets the same embeddings zero-padded to 512 tokens (what its umT5 path gives).
- Modes (``perf.sampling_modes.modes``): ``plain`` (the exact sampler, in ``--dtype``; the reference of the
  quality guard), ``plain-bf16`` when the run is fp32, ``cache:<preset>`` per preset of
  ``wanmodel.accel.cache_config`` (``cache:off`` must equal plain), ``fp8`` on CUDA / ``fp8-sim`` on the CPU
  (``wanmodel.accel.fp8.quantize_linears``; sim = the FP8 quantisation error with float32 matmuls), ``sage``
  (8-bit attention, where installed), ``offload`` (``wanmodel.accel.offload``), ``combined`` (the ``combined``
  cache preset + FP8 + SageAttention where each exists; bf16 on CUDA), ``combined-lowmem`` (the same + block
  offload) and ``diffusers``. A mode whose module has not landed or whose dependency is missing is recorded with
  ``available: false`` and the reason; one whose run raised (an out-of-memory) with ``failed: true``.
- Schedule: every mode samples the same noise with UniPC (``--solver``) on diffusers' own step grid
  (``spacing="diffusers"``), so diffusers vs ``plain`` is an agreement check. Without diffusers installed (the GPU box) a torch-only flow Euler
  solver stands in (``solver: euler-torch`` in the JSON); the DiT dominates the step time either way.
- Time: one untimed warm-up sample per mode (``--no-warmup`` skips it; the GPU step does, its 3 steps drop the
  first), then the fastest of ``--repeat`` samples
  (a shared CPU spreads single timings widely); per video = text + denoise + VAE decode;
  ``step_s`` = denoise time / steps (mean; cached steps are cheaper), ``step_median_s`` the median step.
  ``--timed-steps K`` stops each run after K steps and extrapolates (mean step after the first x steps + decode;
  the decode runs only for plain and the offload modes, the others use plain's): how the 1.3B at 50 steps fits a
  GPU step budget; then the quality guard is not measured, and a cache whose savings come after step K is not
  credited.
- DiT passes per video: rows through the DiT's forward (a forward pre-hook) / batch: 2 per step with CFG, fewer
  with the CFG cache or MagCache. Speed-up = plain's time / the mode's; ``vs_diffusers_step`` = step_s /
  diffusers' step_s (at most 0.5 is the issue's target on a GPU).
- Peak memory: CUDA ``max_memory_allocated`` over the sample, everything on the device (the mode's weights, VAE,
  activations; the base model stays on the CPU): the figure of "8 GB in the low-memory mode"; CPU the process's
  resident-set peak (``VmHWM`` after a ``/proc/self/clear_refs`` reset) minus the resident set before, after
  ``gc`` + ``malloc_trim``: includes allocator slack, so noisy at tiny sizes.
"""
from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from perf.measure import machine, proc_status_kb, release_freed_memory, write_result
from perf.sampling_modes import (
    DTYPES,
    PROMPT_SETS,
    SEED,
    SHAPES,
    HashedText,
    Mode,
    Shape,
    diffusers_pipeline,
    install_solver,
    modes,
    prepare_dit,
    sampling_settings,
    train_toy,
)
from wanmodel.accel.quality import bench_dimension_deltas, latent_mse, psnr
from wanmodel.models.dit import WanDiT
from wanmodel.models.random_init import randomize_
from wanmodel.models.vae import WanVAE


# ------------------------------------------------------------------------------------------------ measuring
class StopSampling(Exception):
    """Raised from the step callback after ``--timed-steps`` steps."""


class PassCounter:
    """Rows through a module's forward (its first input's batch) while installed."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.rows = 0
        self.calls = 0
        self._handle = module.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else next(iter(kwargs.values()))
        self.rows += x.shape[0]
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()


class Memory:
    """Peak memory of the block run inside it: CUDA all device memory allocated (the mode's weights included: the
    base model stays on the CPU); CPU the resident-set peak above the resident set at its start."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.peak_mb = float("nan")

    def __enter__(self) -> Memory:  # noqa: PYI034 - a plain class
        release_freed_memory()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._before = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
            self._before = proc_status_kb("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.peak_mb = (proc_status_kb("VmHWM") * 1024 - self._before) / 2**20


@dataclass
class Sample:
    latents: torch.Tensor
    decoded: torch.Tensor | None
    step_times: list[float]
    seconds: float  # text + denoise + decode
    decode_s: float
    passes: float
    peak_mb: float
    steps_run: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sample_ours(dit: torch.nn.Module, vae: WanVAE, text: Any, prompts: list[str], noise: torch.Tensor,
                settings: Any, *, device: str, cache: str | None, timed_steps: int | None, decode: bool = True) -> Sample:
    from wanmodel.pipelines.common import decode_latents, denoise

    marks: list[float] = []
    state: dict[str, torch.Tensor] = {}

    def progress(done: int, total: int) -> None:
        _sync(device)
        marks.append(time.perf_counter())
        if timed_steps is not None and done >= timed_steps:
            raise StopSampling

    counter = PassCounter(dit)
    kwargs = {} if cache is None else {"cache": cache}
    try:
        with Memory(device) as memory:
            start = time.perf_counter()
            context = text.encode(prompts, device=device)
            negative = text.encode([""] * noise.shape[0], device=device)
            marks.append(time.perf_counter())
            try:
                state["latents"] = denoise(dit, noise.to(device), context, negative, settings, progress=progress,
                                           **kwargs)
            except StopSampling:
                state["latents"] = noise.to(device)  # decode is timed on the noise: same cost
            decode_start = time.perf_counter()
            decoded = decode_latents(vae, state["latents"]) if decode else None
            _sync(device)
            end = time.perf_counter()
    finally:
        counter.remove()
    steps = [b - a for a, b in itertools.pairwise(marks)]
    return Sample(state["latents"].float().cpu(), decoded, steps, end - start,
                  end - decode_start if decode else float("nan"),
                  counter.rows / noise.shape[0], memory.peak_mb, len(steps))


def sample_diffusers(pipe: Any, text: Any, prompts: list[str], noise: torch.Tensor, settings: Any, *, device: str,
                     timed_steps: int | None) -> Sample:
    marks: list[float] = []
    state: dict[str, torch.Tensor] = {}
    batch = noise.shape[0]

    def pad(embeddings: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([torch.nn.functional.pad(e, (0, 0, 0, 512 - e.shape[0])) for e in embeddings])

    def callback(pipeline: Any, step: int, timestep: Any, kwargs: dict) -> dict:
        _sync(device)
        marks.append(time.perf_counter())
        state["latents"] = kwargs["latents"].float().cpu()
        if timed_steps is not None and step + 1 >= timed_steps:
            pipeline._interrupt = True  # remaining steps skipped; decode still runs
        return kwargs

    counter = PassCounter(pipe.transformer)
    try:
        with Memory(device) as memory:
            start = time.perf_counter()
            context = pad(text.encode(prompts, device=device))
            negative = pad(text.encode([""] * batch, device=device))
            marks.append(time.perf_counter())
            frames = pipe(prompt_embeds=context, negative_prompt_embeds=negative, height=settings.height,
                          width=settings.width, num_frames=settings.num_frames,
                          num_inference_steps=settings.num_steps, guidance_scale=settings.guidance_scale,
                          latents=noise.clone().to(device), output_type="pt",
                          callback_on_step_end=callback).frames
            _sync(device)
            end = time.perf_counter()
    finally:
        counter.remove()
    steps = [b - a for a, b in itertools.pairwise(marks)]
    decoded = frames.float().cpu().permute(0, 2, 1, 3, 4) * 2 - 1  # [B, F, 3, H, W] in [0, 1] -> ours
    return Sample(state["latents"], decoded, steps, end - start, end - marks[-1],
                  counter.rows / batch, memory.peak_mb, len(steps))


# ------------------------------------------------------------------------------------------------ the run
def build_models(shape: Shape, args: argparse.Namespace) -> tuple[WanDiT, WanVAE, Any]:
    """(DiT float32 CPU, VAE float32 on the device, text encoder)."""
    from wanmodel.models.dit_adapters import load_dit
    from wanmodel.models.vae_adapters import load_vae

    if args.dit:
        dit = load_dit(args.dit, device="cpu").eval()
    elif args.train_toy:
        dit = train_toy(shape.dit_config(), shape, steps=args.train_steps)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            dit = randomize_(WanDiT(shape.dit_config()), 3).eval()
    if args.vae:
        vae = load_vae(args.vae, device=args.device)
    else:
        vae = randomize_(WanVAE(shape.vae), 4).eval().to(args.device)
    if args.text_encoder:
        from wanmodel.text.umt5 import UMT5TextEncoder

        text: Any = UMT5TextEncoder(args.text_encoder, None, text_len=dit.config.text_len, device=args.device,
                                    dtype=torch.float32)
    else:
        text = HashedText(dit.config.text_dim)
    return dit, vae, text


def run_mode(mode: Mode, base: WanDiT, vae: WanVAE, text: Any, noise: torch.Tensor, settings: Any,
             args: argparse.Namespace, tmp: Path) -> Sample:
    if mode.diffusers:
        pipe = diffusers_pipeline(base, vae, mode.dtype, args.device, settings, tmp)

        def run(k: int | None) -> Sample:
            return sample_diffusers(pipe, text, args.prompt_list, noise, settings, device=args.device, timed_steps=k)
    else:
        dit = prepare_dit(base, mode, args.device)
        # a timed-steps run decodes only where the decode's time or memory differs: plain and the offload modes
        decode = args.timed_steps is None or mode.name == "plain" or mode.offload

        def run(k: int | None) -> Sample:
            return sample_ours(dit, vae, text, args.prompt_list, noise, settings, device=args.device,
                               cache=mode.cache, timed_steps=k, decode=decode)
    if args.warmup:  # a whole untimed sample: the first mode otherwise pays the process's first-use costs
        run(args.timed_steps)
    return min((run(args.timed_steps) for _ in range(args.repeat)), key=lambda sample: sample.seconds)


def row_of(mode: Mode, sample: Sample | None, exact: Sample | None, settings: Any, error: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"mode": mode.name, "available": mode.available and not error, "dtype": mode.dtype,
                           "cache": mode.cache, "fp8": mode.fp8, "attention": mode.attention,
                           "offload": mode.offload}
    if not mode.available or error:
        row["reason"] = mode.reason or error
        row["failed"] = bool(error)  # the mode exists but its run raised (an out-of-memory, say)
        return row
    assert sample is not None
    steps, times = settings.num_steps, sample.step_times
    extrapolated = sample.steps_run < steps
    if not extrapolated:
        step_s, video_s, passes = sum(times) / steps, sample.seconds, sample.passes
    else:  # the first step carries the warm-up; the decode is this run's or else plain's
        timed = times[1:] or times
        step_s = sum(timed) / len(timed)
        decode_s = sample.decode_s if math.isfinite(sample.decode_s) or exact is None else exact.decode_s
        text_s = sample.seconds - sum(times) - (sample.decode_s if math.isfinite(sample.decode_s) else 0.0)
        video_s, passes = text_s + step_s * steps + decode_s, sample.passes * steps / sample.steps_run
    row.update(steps_run=sample.steps_run, extrapolated=extrapolated, step_s=step_s,
               step_median_s=statistics.median(times) if times else None, video_s=video_s,
               decode_s=sample.decode_s if math.isfinite(sample.decode_s) else None, dit_passes=passes,
               peak_mb=sample.peak_mb)
    if exact is not None and not extrapolated and exact.steps_run == steps:
        row["latent_mse"] = latent_mse(sample.latents, exact.latents)
        row["psnr_db"] = psnr(sample.decoded, exact.decoded)
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """speedup / dit_speedup against plain, vs_diffusers_step against diffusers' per-step time."""
    by_name = {row["mode"]: row for row in rows if row.get("available")}
    plain, reference = by_name.get("plain"), by_name.get("diffusers")
    for row in by_name.values():
        if plain is not None:
            row["speedup"] = plain["video_s"] / row["video_s"]
            row["dit_speedup"] = plain["dit_passes"] / row["dit_passes"] if row["dit_passes"] else None
        if reference is not None:
            row["vs_diffusers_step"] = row["step_s"] / reference["step_s"]


def benchmark(args: argparse.Namespace, emit: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every mode's row; ``emit`` gets the result so far after each mode (``complete`` false until the last)."""
    shape = SHAPES[args.shape]
    solver = install_solver()
    steps = args.steps or shape.steps
    settings = sampling_settings(shape, steps, solver == "unipc", guidance_scale=args.guidance, shift=args.shift,
                                 solver=args.solver, height=args.height, width=args.width, num_frames=args.frames)
    base, vae, text = build_models(shape, args)
    from wanmodel.pipelines.common import initial_noise, latent_shape

    noise = initial_noise(latent_shape(settings, channels=vae.config.z_dim), [SEED + i for i in range(args.prompts)])
    rows, exact = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes(args.dtype, device=args.device, reference=not args.no_reference,
                          only=args.modes.split(",") if args.modes else None):
            if mode.diffusers and solver != "unipc":
                mode.available, mode.reason = False, "diffusers not installed"
            sample, error = None, ""
            if mode.available:
                try:
                    sample = run_mode(mode, base, vae, text, noise, settings, args, Path(tmp))
                except Exception as exc:  # noqa: BLE001 - an out-of-memory or a mode's own failure is a row, not the end
                    error = f"{type(exc).__name__}: {exc}"
            if mode.name == "plain":
                exact = sample
            row = row_of(mode, sample, exact, settings, error)
            if args.bench_dims and sample is not None and exact is not None and mode.name != "plain" \
                    and "psnr_db" in row:
                row["bench"] = bench_dimension_deltas(_uint8(exact.decoded), _uint8(sample.decoded),
                                                      args.prompt_list, fps=float(settings.fps))
            rows.append(row)
            print(_line(row), flush=True)
            add_ratios(rows)
            if emit is not None:
                emit(result_of(args, shape, settings, solver, rows, complete=False))
    return result_of(args, shape, settings, solver, rows, complete=True)


def result_of(args: argparse.Namespace, shape: Any, settings: Any, solver: str, rows: list[dict[str, Any]], *,
              complete: bool) -> dict[str, Any]:
    return {"complete": complete, "shape": asdict(shape), "settings": settings.to_dict(),
            "solver": settings.solver if solver == "unipc" else solver, "device": args.device,
            "dtype": args.dtype, "prompts": args.prompt_list, "seeds": [SEED + i for i in
                                                                                     range(args.prompts)],
            "weights": args.dit or ("trained toy (train_toy)" if args.train_toy else "random"),
            "memory": "CUDA max_memory_allocated over the sample (the mode's weights and the VAE included)"
            if args.device.startswith("cuda") else
            "CPU VmHWM (clear_refs reset) - VmRSS before, after gc + malloc_trim",
            "machine": machine(args.device), "torch": torch.__version__, "cases": rows}


def _uint8(video: torch.Tensor) -> list[Any]:
    from wanmodel.pipelines.common import to_uint8_frames

    return to_uint8_frames(video)


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    return "inf" if isinstance(value, float) and math.isinf(value) else format(value, spec)


def _columns(row: dict[str, Any]) -> str:
    """A measured mode's time, passes, memory and quality columns (the progress line's and the table's)."""
    return (f"{row['mode']:<18} {row['video_s']:>9.3f} {row['step_s']:>9.4f} {row['dit_passes']:>7.1f} "
            f"{row['peak_mb']:>9.1f} {_fmt(row.get('latent_mse'), '.3g'):>10} {_fmt(row.get('psnr_db'), '.2f'):>8}")


def _line(row: dict[str, Any]) -> str:
    if not row["available"]:
        return f"{row['mode']:<18} not available: {row['reason']}"
    return _columns(row) + ("  (extrapolated)" if row["extrapolated"] else "")


def print_table(result: dict[str, Any]) -> None:
    settings = result["settings"]
    print(f"\nsampling {result['shape']['name']}: {settings['num_frames']}x{settings['height']}x{settings['width']}, "
          f"{settings['num_steps']} steps ({result['solver']}, {settings['spacing']} grid), guidance {settings['guidance_scale']}, "
          f"{len(result['prompts'])} prompts, {result['device']} {result['dtype']}, weights {result['weights']}")
    print(f"{'mode':<18} {'video s':>9} {'step s':>9} {'passes':>7} {'peak MB':>9} {'lat MSE':>10} {'PSNR':>8} "
          f"{'speedup':>8} {'DiT x':>6} {'/diffusers step':>15}")
    for row in result["cases"]:
        if not row["available"]:
            print(f"{row['mode']:<18} not available: {row['reason'][:90]}")
            continue
        print(f"{_columns(row)} {_fmt(row.get('speedup'), '.2f'):>8} {_fmt(row.get('dit_speedup'), '.2f'):>6} "
              f"{_fmt(row.get('vs_diffusers_step'), '.2f'):>15}")
        for name, figure in (row.get("bench") or {}).items():
            print(f"{'':<18} bench {name}: " + (f"skipped ({figure['skipped'][:70]})" if "skipped" in figure else
                                                f"exact {figure['exact']:.3f} fast {figure['fast']:.3f} "
                                                f"delta {figure['delta']:+.3f}"))
    extrapolated = [row for row in result["cases"] if row.get("extrapolated")]
    if extrapolated:
        print(f"extrapolated: {extrapolated[0]['steps_run']} of {settings['num_steps']} steps run per mode (step s "
              "= mean after the first); no quality guard, and caches whose savings come later are not credited")
    print("quality guard against 'plain' (our exact sampler, same noise); PSNR of decoded frames in dB (inf: equal); "
          "speedup = plain video s / mode's; DiT x = plain DiT passes / mode's")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shape, 4 steps, 1 prompt: seconds")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="plain's dtype (CPU fp32, CUDA bf16)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--timed-steps", type=int, default=None, help="stop after K steps and extrapolate")
    parser.add_argument("--prompts", type=int, default=2, help="how many of the prompt set (at most its size)")
    parser.add_argument("--prompt-set", choices=sorted(PROMPT_SETS), default="default",
                        help="toy: the colour captions the demo's toy DiT was trained on")
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--shift", type=float, default=None)
    parser.add_argument("--solver", choices=("unipc", "euler"), default=None, help="default unipc (euler without "
                        "diffusers)")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--dit", default=None, help="a trained DiT folder (e.g. the demo's toy/dit/export/ours)")
    parser.add_argument("--vae", default=None, help="a trained VAE folder")
    parser.add_argument("--text-encoder", default=None, help="a umT5 folder (else hashed stand-in embeddings)")
    parser.add_argument("--train-toy", action="store_true", help="train the tiny DiT on planted latents first")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--bench-dims", action="store_true", help="Wan-Bench offline dimensions, exact vs fast")
    parser.add_argument("--no-reference", action="store_true", help="skip diffusers' WanPipeline")
    parser.add_argument("--modes", default=None, help="comma-separated mode names (plain always runs)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--repeat", type=int, default=1, help="timed samples per mode; the fastest is kept")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="perf/results/sampling", help="folder for sampling.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.shape, args.steps, args.prompts = "tiny", args.steps or 4, 1
    if not 1 <= args.prompts <= len(PROMPT_SETS[args.prompt_set]):
        parser.error(f"--prompts must be 1..{len(PROMPT_SETS[args.prompt_set])} for the {args.prompt_set} set")
    args.prompt_list = list(PROMPT_SETS[args.prompt_set][: args.prompts])
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.shape == "1.3B" and not args.device.startswith("cuda"):
        parser.error("--shape 1.3B needs a GPU (--device cuda); use 1.3B-few-layers on the CPU")
    if args.dit and args.train_toy:
        parser.error("--dit and --train-toy exclude each other")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or (1 if args.device == "cpu" else torch.get_num_threads()))
    path = Path(args.out) / "sampling.json"
    # written after each mode too (whole, by write_result): a time-out keeps the modes done
    result = benchmark(args, emit=lambda partial: write_result(path, partial))
    write_result(path, result)
    print_table(result)
    return result


if __name__ == "__main__":
    main()
