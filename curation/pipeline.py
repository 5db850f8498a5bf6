"""Runs the curation stages named in a config, in order, recording each run in the lake's ``runs`` table."""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from curation.config import EMBEDDING_STAGES, MODEL_STAGES, STAGE_ORDER, config_hash
from curation.lake.tables import KeyedWriter, Lake
from curation.scorers.registry import SCORERS
from curation.stages import embedding_stages
from curation.stages.analyze import AnalysisSettings, run_scorers
from curation.stages.dedup import run_dedup
from curation.stages.ingest import run_ingest
from curation.stages.model_runner import run_model_stage
from curation.stages.model_stages import build_spec, preflight
from curation.ray_runtime import ensure_ray
from curation.stages.runner import StageResult
from curation.stages.select import run_select
from curation.stages.shots import ShotSettings, run_shots

log = logging.getLogger(__name__)


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


def analysis_settings(cfg: Any) -> AnalysisSettings:
    """Scorers requested by the config, with their configs and the shared sampling plan."""
    names = tuple(s for s in cfg.stages if s in SCORERS)
    return AnalysisSettings(names, {n: getattr(cfg, n) for n in names}, cfg.shots.analysis_max_side,
                            cfg.shots.sample_fps, cfg.shots.decode_threads)


def _record(lake: Lake, stage: str, section: Any, inputs: list[str], counts: dict[str, int], wall: float,
            started: dt.datetime) -> None:
    KeyedWriter(lake, "runs").append([{
        "run_id": uuid.uuid4().hex, "stage": stage, "config_hash": config_hash(section),
        "input_versions": json.dumps(lake.versions(inputs)), "count_in": counts.get("in", 0),
        "count_ok": counts.get("ok", 0), "count_kept": counts.get("kept", 0),
        "count_rejected": counts.get("rejected", 0), "count_failed": counts.get("failed", 0), "wall_s": wall,
        "started_at": started,
    }])


def _counts_from(result: StageResult, lake: Lake, table: str) -> dict[str, int]:
    written = result.written.get(table, 0)
    by_status = result.status.get(table, {})
    return {"in": result.count_in, "written": written, "ok": by_status.get("ok", 0),
            "failed": by_status.get("error", 0), "duplicate": by_status.get("duplicate", 0)}


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
    ex = cfg.execution
    exec_kwargs = dict(backend=ex.backend, items_per_task=ex.items_per_task, commit_every=ex.commit_every,
                       concurrency=ex.concurrency)
    if ex.backend == "ray":
        ensure_ray(cfg.ray.address, cfg.ray.num_cpus)
    settings = analysis_settings(cfg)
    scorers_done = False
    for stage in cfg.stages:
        if stage in hooks:
            hooks[stage]()
            preflight(cfg, [stage])
            embedding_stages.preflight(cfg, [stage])
        started, t0 = dt.datetime.now(dt.timezone.utc), time.perf_counter()
        log.info("stage %s: starting", stage)
        if stage == "ingest":
            res = run_ingest(lake, cfg.input, cfg.ingest, **exec_kwargs)
            counts = _counts_from(res, lake, "videos")
            _record(lake, stage, cfg.ingest, [], counts, res.wall_s, started)
        elif stage == "shots":
            res = run_shots(lake, ShotSettings(cfg.shots, settings), **exec_kwargs)
            counts = _counts_from(res, lake, "clips")
            counts["videos_in"] = counts.pop("in")
            _record(lake, stage, cfg.shots, ["videos"], counts, res.wall_s, started)
        elif stage in SCORERS:
            if scorers_done:
                continue
            # Scorers run inside the shot pass for new clips; this pass only fills clips that lack a table.
            res = run_scorers(lake, settings, **exec_kwargs)
            scorers_done = True
            for name in settings.scorers:
                c = _counts_from(res, lake, f"stages/{name}")
                summary.stages[name] = {"rescored": c["written"], "total": lake.count(f"stages/{name}"),
                                        "failed_total": lake.count(f"stages/{name}", "status = 'error'")}
                _record(lake, name, getattr(cfg, name), ["clips"], c, res.wall_s, started)
            continue
        elif stage == "dedup":
            counts = run_dedup(lake, cfg.dedup)
            _record(lake, stage, cfg.dedup, ["stages/phash"], counts, time.perf_counter() - t0, started)
        elif stage in MODEL_STAGES:
            spec = build_spec(stage, cfg)
            res = run_model_stage(lake, spec, backend=ex.backend, commit_every=ex.commit_every)
            counts = _counts_from(res, lake, spec.table)
            counts["total"] = lake.count(spec.table)
            _record(lake, stage, getattr(cfg, stage), [spec.input_table], counts, res.wall_s, started)
        elif stage in EMBEDDING_STAGES or stage == "split":
            counts = embedding_stages.run_stage(stage, lake, cfg, ex.backend, ex.commit_every)
            _record(lake, stage, getattr(cfg, stage), embedding_stages.INPUTS[stage], counts,
                    time.perf_counter() - t0, started)
        elif stage == "select":
            # Gate on the stages this run was configured with; a select-only run (re-thresholding) gates on
            # every stage table the lake holds.
            gates = lambda s: s in SCORERS or s == "dedup" or s in MODEL_STAGES  # noqa: E731
            gated = [s for s in cfg.stages if gates(s)] or [s for s in STAGE_ORDER if gates(s)]
            counts = run_select(lake, gated, cfg.select)
            _record(lake, stage, cfg.select, ["clips", *[f"stages/{s}" for s in gated]], counts,
                    time.perf_counter() - t0, started)
        else:  # pragma: no cover - the config validator rejects unknown stages
            raise ValueError(stage)
        counts["wall_s"] = round(time.perf_counter() - t0, 2)
        summary.stages[stage] = counts
        log.info("stage %s: %s", stage, counts)
    if report and "select" in cfg.stages and cfg.report.html:
        from curation.report import write_report

        summary.report_dir = write_report(lake, cfg.report)
    return summary
