"""Every curation stage behind one signature, ``run(lake, config) -> StageResult``, and the tables it needs.

``curation.pipeline`` is a loop over this registry. Each entry names the tables the stage reads that must exist
before it runs, so a stage whose input is missing says which stage must run first instead of succeeding on
nothing. Every stage writes its ``runs`` row through the lake driver (``curation.lake.driver``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curation.config import EMBEDDING_STAGES, MODEL_STAGES, STAGE_ORDER
from curation.jobconfig import ConfigError
from curation.lake.driver import StageResult, record_run
from curation.lake.schemas import EMBED_TABLE
from curation.lake.tables import Lake
from curation.scorers.registry import SCORERS

StageFn = Callable[[Lake, Any], StageResult]

PRODUCER = {"videos": "ingest", "clips": "shots", "curated": "select", EMBED_TABLE: "embed"}
"""Which stage writes a table (``stages/<name>`` is written by stage ``name``)."""


class MissingInputError(ConfigError):
    """A stage's input table is not in the lake: the message names the stage to run first."""


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFn
    requires: Callable[[Any], list[str]]  # tables that must exist before it runs (from the whole config)


def _exec(cfg: Any, **more: Any) -> dict[str, Any]:
    ex = cfg.execution
    return dict(backend=ex.backend, items_per_task=ex.items_per_task, commit_every=ex.commit_every,
                concurrency=ex.concurrency, **more)


def analysis_settings(cfg: Any) -> Any:
    """Scorers requested by the config, with their configs and the shared sampling plan."""
    from curation.stages.analyze import AnalysisSettings

    names = tuple(s for s in cfg.stages if s in SCORERS)
    return AnalysisSettings(names, {n: getattr(cfg, n) for n in names}, cfg.shots.analysis_max_side,
                            cfg.shots.sample_fps, cfg.shots.decode_threads)


# ------------------------------------------------------------------------------------------------- stages
def run_ingest_stage(lake: Lake, cfg: Any) -> StageResult:
    from curation.stages.ingest import run_ingest

    return run_ingest(lake, cfg.input, cfg.ingest, **_exec(cfg, config=cfg.ingest))


def run_shots_stage(lake: Lake, cfg: Any) -> StageResult:
    from curation.stages.shots import ShotSettings, run_shots

    return run_shots(lake, ShotSettings(cfg.shots, analysis_settings(cfg)),
                     **_exec(cfg, config=cfg.shots, inputs=["videos"]))


def run_scorers_stage(lake: Lake, cfg: Any) -> StageResult:
    """The rescoring pass: scorers run inside the shot pass for new clips; this fills clips that lack a table.
    One decode per file serves every scorer; each scorer gets its own ``runs`` row."""
    from curation.stages.analyze import run_scorers

    settings = analysis_settings(cfg)
    res = run_scorers(lake, settings, **_exec(cfg, record=False))
    for name in settings.scorers:
        table = f"stages/{name}"
        counts = res.table_counts(table)
        res.extra[name] = {"rescored": counts["written"], "total": lake.count(table),
                           "failed_total": lake.count(table, "status = 'error'")}
        record_run(lake, name, getattr(cfg, name), ["clips"], counts, res.wall_s, res.started)
    return res


def _global(stage: str, lake: Lake, section: Any, inputs: list[str], fn: Callable[[], dict[str, Any]]) -> StageResult:
    """A stage that rewrites its table whole: run it, then record its ``runs`` row."""
    import datetime as dt
    import time

    started, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
    versions = lake.versions(inputs)
    counts = fn()
    res = StageResult(stage, count_in=int(counts.get("in", 0)), wall_s=time.perf_counter() - t0, counts=counts,
                      started=started)
    record_run(lake, stage, section, versions, counts, res.wall_s, started)
    return res


def run_dedup_stage(lake: Lake, cfg: Any) -> StageResult:
    from curation.stages.dedup import run_dedup

    return _global("dedup", lake, cfg.dedup, ["stages/phash"], lambda: run_dedup(lake, cfg.dedup))


def _model_stage(name: str) -> StageFn:
    def run(lake: Lake, cfg: Any) -> StageResult:
        from curation.stages.model_runner import run_model_stage
        from curation.stages.model_stages import build_spec

        return run_model_stage(lake, build_spec(name, cfg), backend=cfg.execution.backend,
                               commit_every=cfg.execution.commit_every, config=getattr(cfg, name))
    return run


def _embedding_stage(name: str) -> StageFn:
    def run(lake: Lake, cfg: Any) -> StageResult:
        from curation.stages import embedding_stages

        ex = cfg.execution
        return _global(name, lake, getattr(cfg, name), embedding_stages.INPUTS[name],
                       lambda: embedding_stages.run_stage(name, lake, cfg, ex.backend, ex.commit_every))
    return run


def gated_stages(lake: Lake, cfg: Any) -> list[str]:
    """The stages ``select`` gates on: those this run was configured with; a select-only run (re-thresholding)
    gates on every stage table the lake holds."""
    gates = lambda s: s in SCORERS or s == "dedup" or s in MODEL_STAGES  # noqa: E731
    return [s for s in cfg.stages if gates(s)] or [s for s in STAGE_ORDER if gates(s)]


def run_select_stage(lake: Lake, cfg: Any) -> StageResult:
    from curation.stages.select import run_select

    gated = gated_stages(lake, cfg)
    return _global("select", lake, cfg.select, ["clips", *[f"stages/{s}" for s in gated]],
                   lambda: run_select(lake, gated, cfg.select))


# ----------------------------------------------------------------------------------------------- registry
def _none(cfg: Any) -> list[str]:
    return []


def _tables(*tables: str) -> Callable[[Any], list[str]]:
    return lambda cfg: list(tables)


def _model_input(name: str) -> Callable[[Any], list[str]]:
    def requires(cfg: Any) -> list[str]:
        from curation.stages.model_stages import build_spec

        return [build_spec(name, cfg).input_table]
    return requires


_EMBEDDING_REQUIRES = {"cluster": [EMBED_TABLE], "quality": [EMBED_TABLE, "stages/cluster"],
                       "semantic_dedup": [EMBED_TABLE, "stages/cluster"], "category": [EMBED_TABLE],
                       "split": ["curated"]}

STAGES: dict[str, Stage] = {
    "ingest": Stage("ingest", run_ingest_stage, _none),
    "shots": Stage("shots", run_shots_stage, _tables("videos")),
    "scorers": Stage("scorers", run_scorers_stage, _tables("clips")),
    "dedup": Stage("dedup", run_dedup_stage, _tables("stages/phash")),
    **{n: Stage(n, _model_stage(n), _model_input(n)) for n in MODEL_STAGES},
    **{n: Stage(n, _embedding_stage(n), _tables(*_EMBEDDING_REQUIRES[n])) for n in (*EMBEDDING_STAGES, "split")},
    "select": Stage("select", run_select_stage, _tables("clips")),
}
"""Every step a curation run can take (the scorer stages of a config run as one ``scorers`` step)."""


def plan(stages: list[str]) -> list[str]:
    """The registry steps for a config's stage list, in order: scorer stages collapse into one ``scorers`` step
    (placed where the first of them is)."""
    steps: list[str] = []
    for s in stages:
        step = "scorers" if s in SCORERS else s
        if step not in steps:
            steps.append(step)
    return steps


def check_inputs(lake: Lake, step: str, cfg: Any, produced: set[str]) -> None:
    """Raise ``MissingInputError`` when ``step`` reads a table that is neither in the lake nor written by an
    earlier step of this run, naming the stage that writes it."""
    for table in STAGES[step].requires(cfg):
        if table in produced or lake.exists(table):
            continue
        producer = PRODUCER.get(table, table.removeprefix("stages/"))
        raise MissingInputError(
            f"stage '{step}' reads the table '{table}', which is not in the lake {lake.root}: run stage "
            f"'{producer}' first (for example --stages {producer},{step})")


def outputs(step: str, cfg: Any) -> set[str]:
    """Tables ``step`` writes (so a later step of the same run may read them before they exist)."""
    if step == "ingest":
        return {"videos"}
    if step == "shots":
        return {"clips", *[f"stages/{s}" for s in cfg.stages if s in SCORERS]}
    if step == "scorers":
        return {f"stages/{s}" for s in cfg.stages if s in SCORERS}
    if step in ("select", "split"):
        return {"curated"}
    return {f"stages/{step}"}
