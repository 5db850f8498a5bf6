"""Wan-Bench closes the toy world's loop (``wan demo``): the untrained and the trained toy DiT are sampled with the
same prompts and seeds into the demo lake's ``samples`` table (the sample job, ``wanmodel.pipelines.batch``, in this
process), each model's samples are scored as one bench run (``bench.job``, in this process) and the two runs are
compared (``bench.report``: the Table 2 text, the HTML page and the VBench-style JSON in ``<out>/bench``).

Dimensions: those that run offline on the CPU with the toy's own weights. ``large_motion`` and
``pixel_stability`` (optical flow), ``id_consistency`` with its deterministic colour-histogram feature, and
``prompt_colour``, registered here for the toy world: the fraction of a sample's frames whose dominant colour
(``curation.synth.captions.dominant_colour``) is the colour its prompt names (prompts ``"a <colour> scene"``); it is
the toy's instruction-following dimension. The CLIP- and judge-backed dimensions would score the demo's tiny random
CLIP and judge (noise), so they are left out. Weights: uniform (no human preferences fitted for the toy).
Run names: ``toy-untrained`` and ``toy-trained``; a re-run of the demo samples and scores only what is missing.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from bench.dimensions import DIMENSIONS
from bench.dimensions.base import BenchVideo, DimensionScore
from curation.jobconfig import Strict

RUNS = ("toy-untrained", "toy-trained")


class PromptColour:
    """Instruction following for the toy world: the share of frames whose dominant colour is the prompt's."""

    name: ClassVar[str] = "prompt_colour"
    group: ClassVar[str] = "instruction_following"
    needs: ClassVar[frozenset[str]] = frozenset({"frames", "prompt"})

    def __init__(self, section: Any = None) -> None:
        if section:
            raise ValueError(f"prompt_colour takes no settings, got {section}")

    def score(self, video: BenchVideo) -> DimensionScore:
        from curation.synth.captions import COLOURS, dominant_colour

        named = [c for c in COLOURS if re.search(rf"\b{c}\b", video.prompt.lower())]
        if len(named) != 1:
            raise ValueError(f"prompt_colour needs a prompt naming one of {list(COLOURS)}, got {video.prompt!r}")
        found = [dominant_colour(f) for f in video.frames]
        hits = sum(c == named[0] for c in found)
        return DimensionScore(hits / len(found), {"prompt_colour": named[0], "frame_colours": found})


DIMENSIONS.setdefault(PromptColour.name, PromptColour)


class BenchSection(Strict):
    """``bench`` of ``jobs/configs/toy_world.yaml``."""

    enabled: bool = True
    dimensions: list[str] = Field(default_factory=lambda: ["large_motion", "pixel_stability", "id_consistency",
                                                           "prompt_colour"])
    dimension_config: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"id_consistency": {"feature": "colour_histogram"}})
    num_frames: int = Field(5, ge=1)  # the tiny stage's video length (1 + 4k)
    fps: int = Field(8, ge=1)


def sample_job(lake: str, run: str, dit: str, vae: str, text_encoder: str, prompts: list[str], seeds: list[int],
               sampling: dict[str, Any]) -> Any:
    """The sample job config of one model: every prompt with every seed into ``<lake>/samples``."""
    from wanmodel.pipelines.batch import SampleJobConfig

    return SampleJobConfig(lake=lake, task="t2v", prompts=prompts, seeds=seeds, negative_prompt="",
                           models={"dit": dit, "vae": vae, "text_encoder": text_encoder}, sampling=sampling,
                           batch_size=len(prompts), commit_every=len(prompts) * len(seeds))


def bench_job(lake: str, run: str, model: str, section: BenchSection) -> Any:
    """The bench job config that scores the samples whose ``model`` column is ``model`` as the run ``run``."""
    from bench.job import BenchJobConfig

    return BenchJobConfig(lake=lake, run=run, samples_model=model, dimensions=section.dimensions,
                          dimension_config={k: v for k, v in section.dimension_config.items()
                                            if k in section.dimensions},
                          dimension_modules=[__name__], execution="local", max_frames=section.num_frames,
                          max_side=64, commit_every=64, torch_threads=None)


def run_toy_bench(lake: str, out: Path, models: dict[str, str], vae: str, text_encoder: str, prompts: list[str],
                  seeds: list[int], sample: Any, section: BenchSection) -> dict[str, Any]:
    """Sample and score each of ``models`` (run name -> DiT folder), write the comparison report into ``out``;
    returns ``{"text": the Table 2 text, "totals": {run: weighted total}, "report": paths}``."""
    from bench.job import run_bench
    from bench.report import comparison_text, write_report
    from curation.lake import Lake
    from wanmodel.pipelines.batch import run_sampling

    sampling = {"height": sample.size, "width": sample.size, "num_frames": section.num_frames,
                "num_steps": sample.num_steps, "guidance_scale": sample.guidance_scale, "shift": sample.shift,
                "solver": sample.solver, "fps": section.fps}
    totals = {}
    for run, dit in models.items():
        scfg = sample_job(lake, run, dit, vae, text_encoder, prompts, seeds, sampling)
        done = run_sampling(scfg, backend="local")
        if done.status.get("error"):
            raise RuntimeError(f"sampling {run} ({dit}): {done.status['error']} samples failed; see the "
                               f"samples table of {lake}")
        result = run_bench(bench_job(lake, run, scfg.models.identity("t2v"), section))
        if result["errors"]:
            raise RuntimeError(f"bench {run}: " + "; ".join(result["errors"][:3]))
        totals[run] = result["summary"].total
    runs = list(models)
    paths = write_report(lake, runs, out)
    return {"text": comparison_text(Lake(lake), runs), "totals": totals, "report": paths}


def bench_text(result: dict[str, Any]) -> str:
    totals = ", ".join(f"{run} {100 * t:.1f} %" if t is not None else f"{run} -"
                       for run, t in result["totals"].items())
    return (f"[toy] Wan-Bench (uniform weights) weighted totals: {totals}\n{result['text']}\n"
            f"[toy] bench report: {result['report']['html']} (VBench-style JSON: {result['report']['json']})")

