"""The one lake driver (``curation.lake.driver``), the stage registry's input checks and the one config loader."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.jobconfig import ConfigError
from curation.lake.driver import LakeJob, guarded, record_run
from curation.lake.schemas import STATUS_ERROR, STATUS_OK
from curation.lake.tables import Lake
from tests.conftest import REPO, demo_config


def _video_row(uri: str, status: str = STATUS_OK, error: str | None = None) -> dict:
    return {"uri": uri, "video_id": f"id-{uri}", "status": status, "error": error}


def test_commits_whole_items_in_table_order_every_n_items(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    seen_versions = []
    job = LakeJob(lake, "t", ["stages/blur", "clips"], commit_every=2,
                  progress=lambda n: seen_versions.append((n, lake.count("stages/blur"), lake.count("clips"))))
    for i in range(5):
        job.add({"stages/blur": [{"clip_id": f"c{i}", "stage_version": "v", "status": STATUS_OK}],
                 "clips": [{"clip_id": f"c{i}", "video_id": "v", "status": STATUS_OK}]})
    assert seen_versions == [(2, 2, 2), (4, 4, 4)]  # committed after items 2 and 4, both tables together
    res = job.finish(5, inputs=["videos"])
    assert res.written == {"stages/blur": 5, "clips": 5} and res.counts["ok"] == 5 and res.count_in == 5
    assert job.done() == {f"c{i}" for i in range(5)}
    run = lake.read("runs").to_pylist()[-1]
    assert run["stage"] == "t" and run["count_in"] == 5 and run["count_ok"] == 5
    assert json.loads(run["input_versions"]) == {"videos": None}


def test_a_rerun_writes_no_key_twice_and_keeps_error_rows(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    job = LakeJob(lake, "ingest", ["videos"], commit_every=10)
    rows = [_video_row("a"), _video_row("b", STATUS_ERROR, "ValueError: truncated")]
    job.add({"videos": rows}, items=2)
    first = job.finish(2)
    assert first.counts["failed"] == 1 and job.errors == ["videos: ValueError: truncated"]
    again = LakeJob(lake, "ingest", ["videos"], commit_every=10)
    assert again.done() == {"a", "b"}
    again.add({"videos": rows + [_video_row("c")]}, items=3)
    res = again.finish(3)
    assert res.written == {"videos": 1} and lake.count("videos") == 3 and len(lake.read("runs")) == 2


def test_a_run_over_nothing_leaves_empty_tables_not_missing_ones(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    res = LakeJob(lake, "shots", ["stages/blur", "clips"]).finish(0)
    assert lake.exists("clips") and lake.count("clips") == 0 and res.written == {}


def test_rows_for_a_table_the_job_does_not_write_are_refused(tmp_path: Path) -> None:
    job = LakeJob(Lake(str(tmp_path)), "t", ["videos"])
    with pytest.raises(RuntimeError, match="'clips', not in"):
        job.add({"clips": []})


def test_guarded_turns_an_exception_into_the_jobs_error_rows() -> None:
    def work(item: int) -> list:
        raise ValueError(f"bad {item}")

    assert guarded(3, work, lambda item, msg: [item, msg]) == [3, "ValueError: bad 3"]


def test_record_run_takes_pinned_versions(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    import datetime as dt

    record_run(lake, "caption", None, {"clips": 4}, {"in": 2, "ok": 1, "failed": 1}, 0.5, dt.datetime.now(dt.UTC))
    run = lake.read("runs").to_pylist()[0]
    assert json.loads(run["input_versions"]) == {"clips": 4} and run["count_failed"] == 1


# ------------------------------------------------------------------------------------- stage input checks
def test_a_stage_whose_input_is_missing_names_the_stage_to_run_first(tmp_path: Path, corpus) -> None:
    from curation.pipeline import run_curation
    from curation.stages.registry import MissingInputError

    media, _ = corpus
    with pytest.raises(MissingInputError, match=r"'select' reads the table 'clips'.*run stage 'shots' first"):
        run_curation(demo_config(tmp_path / "lake", media, stages=["select"], **{"execution.backend": "local"}))
    with pytest.raises(MissingInputError, match=r"'shots' reads the table 'videos'.*run stage 'ingest' first"):
        run_curation(demo_config(tmp_path / "lake", media, stages=["shots", "blur"],
                                 **{"execution.backend": "local"}))
    assert not Lake(str(tmp_path / "lake")).exists("runs")  # refused before any work


def test_an_empty_input_folder_is_a_valid_empty_run(tmp_path: Path) -> None:
    from curation.pipeline import run_curation

    empty = tmp_path / "media"
    empty.mkdir()
    lake_dir = tmp_path / "lake"
    summary = run_curation(demo_config(lake_dir, empty, stages=["ingest", "shots", "blur", "select"],
                                       **{"execution.backend": "local"}), report=False)
    assert summary.stages["select"]["in"] == 0
    # ... and a later run of a stage over that lake reads "no rows", not "never ran"
    summary = run_curation(demo_config(lake_dir, empty, stages=["select"], **{"execution.backend": "local"}),
                           report=False)
    assert summary.stages["select"]["in"] == 0
    stages = Lake(str(lake_dir)).read("runs").column("stage").to_pylist()
    assert stages.count("select") == 2 and "ingest" in stages and "shots" in stages


# ------------------------------------------------------------------------------------------ config loader
def _loaders():
    from captioner.batch import load_caption_config
    from captioner.train import load_train_config as load_caption_train
    from curation.config import load_config
    from wanmodel.pipelines.batch import load_sample_config
    from wanmodel.train.vae import load_train_config as load_vae_train

    return {"curate": (load_config, "demo.yaml"), "caption": (load_caption_config, "caption_tiny.yaml"),
            "sample": (load_sample_config, "sample_tiny.yaml"), "vae": (load_vae_train, "vae_tiny.yaml"),
            "caption_train": (load_caption_train, None)}


@pytest.mark.parametrize("job", ["curate", "caption", "sample", "vae", "caption_train"])
def test_every_job_config_loader_behaves_alike(job: str, tmp_path: Path) -> None:
    loader, shipped = _loaders()[job]
    with pytest.raises(ConfigError, match="config file not found"):
        loader(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        loader(bad)
    if shipped is None:
        return
    path = REPO / "jobs/configs" / shipped
    with pytest.raises(ConfigError, match="unknown key 'not_a_key'"):
        loader(path, {"not_a_key": 1})


def test_overrides_create_sections_but_refuse_to_descend_into_values() -> None:
    from curation.jobconfig import apply_overrides

    assert apply_overrides({"a": 1}, {"b.c": 2}) == {"a": 1, "b": {"c": 2}}
    with pytest.raises(ConfigError, match="'a' is not a section"):
        apply_overrides({"a": 1}, {"a.b": 2})
