"""Runs the curation stages named in a config, in order: a loop over ``curation.stages.registry``.

Each step is ``run(lake, config) -> StageResult`` and records its own ``runs`` row through the lake driver; this
loop checks each step's input tables first (a missing one names the stage to run first), runs it, and collects
the counts for the summary and the report.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from curation.lake.tables import Lake
from curation.ray_runtime import ensure_ray
from curation.stages import embedding_stages
from curation.stages.model_stages import preflight
from curation.stages.registry import STAGES, analysis_settings, check_inputs, outputs, plan

log = logging.getLogger(__name__)

__all__ = ["CurationSummary", "analysis_settings", "run_curation"]


@dataclass
class CurationSummary:
    """What a run did, stage by stage, and where its report is."""

    lake: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    report_dir: str | None = None

    def text(self) -> str:
        lines = [f"lake: {self.lake}"]
        for stage, info in self.stages.items():
            lines.append(f"  {stage:<20} " + ", ".join(f"{k}={v}" for k, v in info.items()))
        if self.report_dir:
            lines.append(f"report: {self.report_dir}")
        return "\n".join(lines)


def _summarise(summary: CurationSummary, step: str, res: Any, wall: float) -> None:
    if step == "scorers":  # one line per scorer
        summary.stages.update({name: info for name, info in res.extra.items()})
        return
    counts = dict(res.counts)
    if step == "shots":
        counts["videos_in"] = counts.pop("in")
    counts["wall_s"] = round(wall, 2)
    summary.stages[step] = counts
    log.info("stage %s: %s", step, counts)


def run_curation(cfg: Any, report: bool = True,
                 before_stage: dict[str, Callable[[], None]] | None = None) -> CurationSummary:
    """Run the configured stages over the lake; returns per-stage counts (and writes the report).

    ``before_stage`` maps a stage to a function run just before it (the demo trains expert heads on the
    embeddings written by then); that stage's weight files are checked after its hook instead of up front."""
    hooks = before_stage or {}
    preflight(cfg, [s for s in cfg.stages if s not in hooks])  # model settings and weight files, before any work
    embedding_stages.preflight(cfg, [s for s in cfg.stages if s not in hooks])
    lake = Lake(cfg.lake)
    summary = CurationSummary(lake.root)
    steps = plan(list(cfg.stages))
    produced: set[str] = set()
    for step in steps:  # every input is there (or made earlier in this run) before any work starts
        check_inputs(lake, step, cfg, produced)
        produced |= outputs(step, cfg)
    if cfg.execution.backend == "ray":
        ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
    for step in steps:
        if step in hooks:
            hooks[step]()
            preflight(cfg, [step])
            embedding_stages.preflight(cfg, [step])
        log.info("stage %s: starting", step)
        t0 = time.perf_counter()
        res = STAGES[step].run(lake, cfg)
        _summarise(summary, step, res, time.perf_counter() - t0)
    if report and "select" in cfg.stages and cfg.report.html:
        from curation.report import write_report

        summary.report_dir = write_report(lake, cfg.report)
    return summary
