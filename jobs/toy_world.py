"""The toy world of ``wan demo``: from the curated demo lake to a tiny DiT that visibly learns, on the jobs' own code.

    caption  -> the generator's reference captions (one dominant colour each) into ``captions`` (model_id
                ``reference``) through the lake driver, or the caption job when a captioner is configured
    vae      -> the tiny Wan-VAE trained briefly on the curated lake (``python -m jobs.train_vae``'s entry point):
                an image phase, then the inflated video phase, as the report trains it
    encode   -> ``latents`` + ``text_embeddings`` with that VAE and the tiny umT5 (the encode job), for the training
                lake and for a validation lake that holds the held-out clips' captions only
    train    -> the tiny DiT on the training caches (the DiT trainer, in this process)
    figures  -> validation flow-matching loss (held-out clips, fixed noise and sigmas) of the untrained and the
                trained model; samples of both (same seeds, prompts naming colours): colour-histogram distance to
                the training clips and the rate at which a sample's dominant colour is the prompt's

Held-out clips: every ``holdout_every``-th kept clip (in ``clip_id`` order) is captioned in a copy of the lake
(``toy/val_lake``: the ``videos``, ``clips`` and ``curated`` tables) instead of the demo lake, so the training
caches never contain it. Settings: ``jobs/configs/toy_world.yaml``. The figures are printed and written to
``toy/figures.json``.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.jobconfig import Strict, apply_overrides, load_yaml_config, read_yaml
from curation.lake import Lake
from jobs.toy_bench import RUNS, BenchSection, bench_text, run_toy_bench
from jobs.toy_figures import (
    latent_figures,
    load_dit_cpu,
    sample_figures,
    sample_images,
    save_grid,
    training_histogram,
    training_latents,
    validation_loss,
)

CONFIGS = Path(__file__).resolve().parent / "configs"
REFERENCE_MODEL_ID = "reference"


class SampleSection(Strict):
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3])
    num_steps: int = Field(20, ge=1)
    shift: float = Field(1.0, gt=0)
    solver: str = "euler"
    guidance_scale: float = Field(1.0, ge=1.0)
    size: int = Field(32, ge=16)  # the tiny stage's image bucket


class ToyWorldConfig(Strict):
    holdout_every: int = Field(5, ge=2)
    # the VAE's phases in order (the report's image stage, then video), each from the checkpoint of the one before
    vae_configs: list[str] = Field(default_factory=lambda: [str(CONFIGS / "toy_vae_image.yaml"),
                                                            str(CONFIGS / "toy_vae.yaml")], min_length=1)
    encode_config: str = str(CONFIGS / "toy_encode.yaml")
    train_config: str = str(CONFIGS / "toy_train.yaml")
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per step: vae / encode / train
    val_sigmas: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    val_seed: int = 1234
    val_every: int = Field(250, gt=0)  # the trainer's held-out loss (its `validation`) every this many steps
    sample: SampleSection = Field(default_factory=SampleSection)
    bench: BenchSection = Field(default_factory=BenchSection)
    # torch threads of the steps that run in this process (encode, DiT, figures, bench): float sums follow the
    # thread count, so without it the figures follow whatever count the process inherits (a pytest session gave
    # this process 1 thread: held-out loss 63 % there against 50 % with 2, the same run otherwise)
    torch_threads: int = Field(2, ge=1)


def load_toy_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ToyWorldConfig:
    return load_yaml_config(path, ToyWorldConfig, overrides)


@dataclass
class ToyFigures:
    val_loss_start: float
    val_loss_end: float
    hist_distance_untrained: float
    hist_distance_trained: float
    colour_rate_untrained: float
    colour_rate_trained: float
    chance: float
    colours: list[str]
    latent_distance_untrained: float  # mean RMS distance to the nearest training clip's first latent frame
    latent_distance_trained: float
    latent_rate_untrained: float  # nearest training clip has the prompt's colour
    latent_rate_trained: float
    timings: dict[str, float] = field(default_factory=dict)
    bench: dict[str, Any] | None = None  # jobs.toy_bench.run_toy_bench's result
    val_curve: dict[int, float] = field(default_factory=dict)  # step -> the trainer's held-out loss (val_loss)

    @property
    def val_ratio(self) -> float:
        return self.val_loss_end / self.val_loss_start

    @property
    def val_lowest(self) -> tuple[int, float]:
        """(step, held-out loss as a fraction of step 0's) where the training curve is lowest (it needs step 0)."""
        step = min(self.val_curve, key=lambda s: self.val_curve[s])
        return step, self.val_curve[step] / self.val_curve[0]

    def text(self) -> str:
        loss = (f"[toy] validation flow-matching loss (held-out clips, fixed noise and sigmas): "
                f"{self.val_loss_start:.4f} untrained -> {self.val_loss_end:.4f} trained "
                f"({100 * self.val_ratio:.0f} % of the start)")
        if self.val_curve and 0 not in self.val_curve:
            loss += ("\n[toy] held-out loss during training: not logged from step 0 in this output folder (its DiT was "
                     "trained before the trainer validated); remove its toy/dit folder to train the DiT again")
        elif self.val_curve:
            first = self.val_curve[0]
            step, lowest = self.val_lowest
            points = ", ".join(f"{s}: {100 * v / first:.0f}" for s, v in sorted(self.val_curve.items()))
            loss += (f"\n[toy] held-out loss during training (the trainer's val_loss, % of step 0's, by step): "
                     f"{points}; lowest {100 * lowest:.0f} % at step {step} (target <= 60 %: "
                     f"{'met' if lowest <= 0.6 else 'MISSED'}), the exported weights {100 * self.val_ratio:.0f} %")
        hist = (f"[toy] colour-histogram distance of samples to the training clips (total variation over 6 hue "
                f"bins + grey, lower is closer): untrained {self.hist_distance_untrained:.3f}, trained "
                f"{self.hist_distance_trained:.3f}")
        rate = (f"[toy] samples whose dominant colour is the prompt's ({', '.join(self.colours)}): untrained "
                f"{100 * self.colour_rate_untrained:.0f} %, trained {100 * self.colour_rate_trained:.0f} % "
                f"(chance {100 * self.chance:.0f} %)")
        latent = (f"[toy] in latent space (normalised, per element): RMS distance of a sample to the nearest training "
                  f"clip's first latent frame: untrained {self.latent_distance_untrained:.3f}, trained "
                  f"{self.latent_distance_trained:.3f}; "
                  f"nearest clip has the prompt's colour: untrained {100 * self.latent_rate_untrained:.0f} %, "
                  f"trained {100 * self.latent_rate_trained:.0f} % (chance {100 * self.chance:.0f} %)")
        times = "[toy] times: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items())
        return f"{loss}\n{hist}\n{rate}\n{latent}\n{times}"


@dataclass
class ToyPaths:
    root: Path
    lake: str  # the curated demo lake (training captions and caches)

    @property
    def val_lake(self) -> str:
        return str(self.root / "val_lake")

    @property
    def models(self) -> Path:
        return self.root / "models"


# ------------------------------------------------------------------------------------------------- captions
def _match_labels(clips: list[dict[str, Any]], labels: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each clip with the label segment of its file that it overlaps most."""
    by_file: dict[str, list[dict[str, Any]]] = {}
    for seg in labels:
        by_file.setdefault(seg["file"], []).append(seg)
    out = {}
    for c in clips:
        segs = by_file.get(os.path.basename(c["uri"]), [])
        overlap = [min(s["end_frame"], c["end_frame"]) - max(s["start_frame"], c["start_frame"]) for s in segs]
        if segs and max(overlap) > 0:
            out[c["clip_id"]] = segs[int(np.argmax(overlap))]
    return out


def kept_clips(lake: Lake) -> list[dict[str, Any]]:
    cols = ["clip_id", "uri", "media_type", "start_frame", "end_frame"]
    return sorted(lake.read("curated", columns=cols, filter="keep = true").to_pylist(), key=lambda r: r["clip_id"])


def reference_captions(lake: Lake, labels: pa.Table) -> dict[str, tuple[str, str, str]]:
    """clip_id -> (caption, colour, media_type) for every kept clip the generator's labels describe."""
    from curation.synth.captions import reference_caption

    clips = kept_clips(lake)
    matched = _match_labels(clips, labels.to_pylist())
    return {c["clip_id"]: (*reference_caption(matched[c["clip_id"]]), c["media_type"])
            for c in clips if c["clip_id"] in matched}


def split_holdout(clip_ids: list[str], every: int) -> tuple[list[str], list[str]]:
    """(training, held-out): every ``every``-th clip in sorted order is held out."""
    ordered = sorted(clip_ids)
    return ([c for i, c in enumerate(ordered) if i % every != every - 1],
            [c for i, c in enumerate(ordered) if i % every == every - 1])


def write_reference_captions(lake: Lake, captions: dict[str, tuple[str, str, str]]) -> int:
    """Append ``captions`` rows (model_id ``reference``) for the clips not captioned yet, via the lake driver."""
    from curation.lake.driver import LakeJob
    from curation.lake.schemas import STATUS_OK

    job = LakeJob(lake, "caption_reference", ["captions"], commit_every=64)
    done = job.done()
    now = dt.datetime.now(dt.UTC)
    rows = [{"clip_id": cid, "media_type": media, "caption": text, "model_id": REFERENCE_MODEL_ID,
             "prompt_version": "synth-colour-1", "template": media, "num_frames": None, "num_visual_tokens": 0,
             "backend": None, "status": STATUS_OK, "error": None, "captioned_at": now}
            for cid, (text, _, media) in sorted(captions.items()) if cid not in done]
    if rows:
        job.add({"captions": rows}, items=len(rows))
    job.finish(len(captions), inputs=["curated"])
    return len(rows)


def make_val_lake(src: Lake, dst: str) -> Lake:
    """A lake with the demo lake's ``videos``, ``clips`` and ``curated`` tables (copied once)."""
    for table in ("videos", "clips", "curated"):
        target = Path(dst) / f"{table}.lance"
        if not target.exists():
            shutil.copytree(src.uri(table), target)
    return Lake(dst)


def caption_step(cfg: ToyWorldConfig, paths: ToyPaths, labels: pa.Table) -> dict[str, tuple[str, str, str]]:
    """Caption the kept clips (training ones in the demo lake, held-out ones in the validation lake)."""
    lake = Lake(paths.lake)
    captions = reference_captions(lake, labels)
    train, held = split_holdout(list(captions), cfg.holdout_every)
    n = write_reference_captions(lake, {c: captions[c] for c in train})
    m = write_reference_captions(make_val_lake(lake, paths.val_lake), {c: captions[c] for c in held})
    print(f"[toy] captions: no captioner configured (the tiny one writes random text), so the generator's "
          f"reference captions (model_id "
          f"'{REFERENCE_MODEL_ID}'): {len(train)} training clips ({n} new), {len(held)} held out ({m} new); "
          f"e.g. {captions[train[0]][0]!r}")
    return captions


# ------------------------------------------------------------------------------------------- VAE, caches, DiT
def _step_overrides(cfg: ToyWorldConfig, step: str, base: dict[str, Any]) -> dict[str, Any]:
    return {**base, **cfg.overrides.get(step, {})}


def train_vae_step(cfg: ToyWorldConfig, paths: ToyPaths) -> str:
    """The tiny VAE on the curated lake through the VAE job's entry point, phase after phase (each from the last
    one's checkpoint); returns the last phase's checkpoint folder."""
    previous: str | None = None
    for i, config in enumerate(cfg.vae_configs):
        data = read_yaml(config)
        phase = data.get("phase", "video")
        base = {"lake": paths.lake, "checkpoint_dir": str(paths.root / "vae" / f"{i}_{phase}"),
                **({"init_checkpoint": previous} if previous else {})}
        previous = _train_vae_phase(apply_overrides(data, _step_overrides(cfg, "vae", base)),
                                    paths.root / f"vae_{i}_{phase}.yaml")
    assert previous is not None
    return previous


def _train_vae_phase(data: dict[str, Any], resolved: Path) -> str:
    import yaml

    from jobs.train_vae import main as train_vae_main

    resolved.parent.mkdir(parents=True, exist_ok=True)
    resolved.write_text(yaml.safe_dump(data, sort_keys=False))
    latest = Path(data["checkpoint_dir"]) / "latest"
    if latest.is_file():  # a finished earlier run of the demo: its VAE made the cached latents
        return str(latest.parent / latest.read_text().strip())
    if train_vae_main(["--config", str(resolved)]) != 0:
        raise RuntimeError(f"VAE training failed (config {resolved})")
    if not latest.is_file():
        raise RuntimeError(f"VAE training left no checkpoint: {latest} is missing")
    return str(latest.parent / latest.read_text().strip())


def encode_step(cfg: ToyWorldConfig, paths: ToyPaths, vae: str) -> None:
    """``latents`` + ``text_embeddings`` of the training lake and the validation lake (the encode job)."""
    from wanmodel.data.encode import load_encode_config, run_encode_job

    for lake in (paths.lake, paths.val_lake):
        enc = load_encode_config(cfg.encode_config, _step_overrides(
            cfg, "encode", {"lake": lake, "vae": vae, "random_tiny": str(paths.models)}))
        summary = run_encode_job(enc, progress=False)
        print(f"[toy] encode ({enc.execution}) {lake}: {summary.clips} captioned clips, {summary.written} encoded "
              f"now ({summary.ok} ok, {summary.failed} failed), the rest cached before")


def empty_prompt_key(cfg: ToyWorldConfig, paths: ToyPaths, vae: str) -> str:
    """The empty prompt's row in the training lake's ``text_embeddings`` (written once, by the encode job's own
    umT5 actor class and key): what caption dropout trains on and classifier-free guidance samples with."""
    from curation.lake.driver import LakeJob
    from wanmodel.data.encode import load_encode_config
    from wanmodel.data.encode_models import EmbedSettings, TextEncoder
    from wanmodel.data.tensor_bytes import text_key

    enc = load_encode_config(cfg.encode_config, _step_overrides(
        cfg, "encode", {"lake": paths.lake, "vae": vae, "random_tiny": str(paths.models)}))
    vae_path, text_path, tokenizer = enc.model_paths()
    encoder_id = enc.ids(vae_path, text_path)[1]
    key = text_key(encoder_id, "")
    job = LakeJob(Lake(paths.lake), "encode_text_empty", ["text_embeddings"], commit_every=1)
    if key not in job.done():
        settings = EmbedSettings(text_path, tokenizer, encoder_id, enc.text_len, enc.store_dtype, False)
        job.add({"text_embeddings": TextEncoder(settings).embed_rows([{"text_key": key, "text": ""}])}, items=1)
    job.finish(1, inputs=["captions"])
    return key


def train_config(cfg: ToyWorldConfig, paths: ToyPaths, **extra: Any) -> Any:
    from wanmodel.train.dit_config import load_dit_train_config

    dit = paths.root / "dit"
    base = {"lake": paths.lake, "curriculum": str(CONFIGS / "curriculum.yaml"),
            "checkpoint_dir": str(dit / "ckpt"), "metrics_dir": str(dit / "metrics"), "export_dir": str(dit / "export")}
    return load_dit_train_config(cfg.train_config, _step_overrides(cfg, "train", {**base, **extra}))


def train_dit_step(cfg: ToyWorldConfig, paths: ToyPaths, vae: str) -> tuple[Any, str, dict[int, float]]:
    """The tiny DiT on the training caches, its held-out loss logged along the way; returns (its config, the
    exported ``ours`` folder, the held-out loss by step)."""
    from wanmodel.train.dit import train_dit, train_dit_ray
    from wanmodel.train.metrics import logged_losses

    validation = {"lake": paths.val_lake, "every": cfg.val_every, "sigmas": cfg.val_sigmas, "seed": cfg.val_seed}
    tcfg = train_config(cfg, paths, empty_text_key=empty_prompt_key(cfg, paths, vae), validation=validation)
    print(f"[toy] DiT: {tcfg.steps} steps of {tcfg.global_batch_size} on stage '{tcfg.stage}', "
          f"caption dropout {tcfg.caption_dropout:g}, "
          + ("Ray Train" if tcfg.ray else "in this process (no Ray start-up on a 2-core machine)"))
    result = train_dit_ray(tcfg) if tcfg.ray else train_dit(tcfg)
    losses = [v for v in result.losses.values() if np.isfinite(v)]
    if losses:
        k = max(1, len(losses) // 10)
        print(f"[toy] DiT training loss: first {k} steps {np.mean(losses[:k]):.4f}, last {k} "
              f"{np.mean(losses[-k:]):.4f} (skipped {result.skipped})")
    exported = Path(tcfg.export_dir) / "ours"
    if not (exported / "config.json").is_file():
        raise RuntimeError(f"the trainer exported no model to {exported}")
    # the run's whole curve, from every process that trained it (a demo run again resumes at the last step)
    return tcfg, str(exported), logged_losses(tcfg.metrics_dir)[1]


def untrained_model(tcfg: Any, out: Path) -> str:
    """The trainer's initial weights (same seed, same constructor), saved like the trained export."""
    import torch

    from wanmodel.models.dit_adapters import save_dit
    from wanmodel.train.dit import Runtime, build_model

    if not (out / "config.json").is_file():
        model = build_model(tcfg, Runtime(torch.device("cpu"), 0, 1, None))
        save_dit(model, out)
    return str(out)


def _timed(timings: dict[str, float], name: str, fn: Any, *args: Any) -> Any:
    t0 = time.perf_counter()
    value = fn(*args)
    timings[name] = time.perf_counter() - t0
    return value


def run_toy_world(out: str, lake: str, labels: pa.Table, config: str | None = None,
                  overrides: dict[str, Any] | None = None) -> ToyFigures:
    """Every toy-world step on the curated ``lake`` (outputs under ``out/toy``); prints and returns the figures."""
    import torch

    cfg = load_toy_config(config or CONFIGS / "toy_world.yaml", overrides)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)
    try:
        return _run_steps(cfg, ToyPaths(Path(out).resolve() / "toy", lake), labels, out)
    finally:
        torch.set_num_threads(threads)


def _run_steps(cfg: ToyWorldConfig, paths: ToyPaths, labels: pa.Table, out: str) -> ToyFigures:
    timings: dict[str, float] = {}
    captions = _timed(timings, "caption", caption_step, cfg, paths, labels)
    vae = _timed(timings, "vae", train_vae_step, cfg, paths)
    print(f"[toy] VAE: trained briefly, checkpoint {vae}")
    _timed(timings, "encode", encode_step, cfg, paths, vae)
    tcfg, trained, curve = _timed(timings, "dit", train_dit_step, cfg, paths, vae)
    untrained = untrained_model(tcfg, paths.root / "dit" / "untrained")
    figures = _timed(timings, "figures", figures_step, cfg, paths, captions, vae, untrained, trained, timings)
    figures.val_curve = curve
    if cfg.bench.enabled:
        figures.bench = _timed(timings, "bench", bench_step, cfg, paths, Path(out).resolve() / "bench",
                               figures.colours, vae, untrained, trained)
        print(bench_text(figures.bench))
    (paths.root / "figures.json").write_text(json.dumps(asdict(figures), indent=1, default=str))
    return figures


def bench_step(cfg: ToyWorldConfig, paths: ToyPaths, report: Path, colours: list[str], vae: str, untrained: str,
               trained: str) -> dict[str, Any]:
    """Both models sampled with the figures' prompts and seeds into the lake's ``samples``, scored by Wan-Bench
    (``jobs.toy_bench``) and compared in ``report``."""
    return run_toy_bench(paths.lake, report, dict(zip(RUNS, (untrained, trained))), vae, str(paths.models / "umt5"),
                         [f"a {c} scene" for c in colours], cfg.sample.seeds, cfg.sample, cfg.bench)


def figures_step(cfg: ToyWorldConfig, paths: ToyPaths, captions: dict[str, tuple[str, str, str]], vae: str,
                 untrained: str, trained: str, timings: dict[str, float]) -> ToyFigures:
    train_ids, _ = split_holdout(list(captions), cfg.holdout_every)
    losses = [validation_loss(load_dit_cpu(p), paths.val_lake, sigmas=cfg.val_sigmas, seed=cfg.val_seed)
              for p in (untrained, trained)]
    colours = sorted({captions[c][1] for c in train_ids} - {"grey"})
    prompts = {f"a {c} scene": c for c in colours}
    train_hist = training_histogram(Lake(paths.lake), train_ids)
    umt5 = str(paths.models / "umt5")
    train_latents = training_latents(Lake(paths.lake), {c: captions[c] for c in train_ids})
    figs = []
    for name, model in (("untrained", untrained), ("trained", trained)):
        samples = sample_images(model, vae, umt5, list(prompts), cfg.sample)
        save_grid(samples.images, paths.root / f"samples_{name}.png")
        figs.append((*sample_figures(samples.images, prompts, train_hist),
                     *latent_figures(samples, prompts, train_latents)))
    (u_hist, u_rate, u_lat, u_lrate), (t_hist, t_rate, t_lat, t_lrate) = figs
    figures = ToyFigures(losses[0], losses[1], u_hist, t_hist, u_rate, t_rate, 1 / len(colours), colours,
                         u_lat, t_lat, u_lrate, t_lrate, timings)
    print(f"[toy] samples: {len(prompts)} prompts x seeds {cfg.sample.seeds}, {cfg.sample.size}x{cfg.sample.size}"
          f" images, {cfg.sample.num_steps} {cfg.sample.solver} steps; grids in {paths.root}/samples_*.png")
    return figures
