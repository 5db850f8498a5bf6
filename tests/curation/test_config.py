"""Configs are validated before any work: unknown keys and out-of-range values name the key."""
from __future__ import annotations

import pytest

from curation.config import STAGE_ORDER, ConfigError, load_config, parse_config

BASE = {"lake": "/tmp/x", "input": {"paths": ["/tmp/media"]}}


def test_defaults_are_valid():
    cfg = parse_config(BASE)
    assert cfg.stages == list(STAGE_ORDER)
    assert cfg.select.min_duration_s == 4.0


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"shots": {"treshold": 3}}, "unknown key 'shots.treshold'"),
        ({"colour": 1}, "unknown key 'colour'"),
        ({"motion": {"not_a_key": 1}}, "unknown key 'motion.not_a_key'"),
        ({"shots": {"sample_fps": 0}}, "'shots.sample_fps'"),
        ({"select": {"max_blur": 1.5}}, "'select.max_blur'"),
        ({"execution": {"commit_every": 0}}, "'execution.commit_every'"),
        ({"borders": {"dark_threshold": -5}}, "'borders."),
        ({"stages": ["ingest", "shotz"]}, "unknown stage(s) ['shotz']"),
        ({"select": {"exclude_tiers": ["wobbly"]}}, "unknown motion tier(s) ['wobbly']"),
        ({"select": {"train_stage": "stage9"}}, "train_stage 'stage9'"),
    ],
)
def test_bad_values_name_the_key(patch, fragment):
    data = {**BASE, **patch}
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert fragment in str(e.value)


def test_ingest_without_input_is_rejected():
    with pytest.raises(ConfigError, match="needs an 'input' section"):
        parse_config({"lake": "/tmp/x"})


def test_subset_of_stages_is_ordered():
    cfg = parse_config({**BASE, "stages": ["select", "ingest", "blur"]})
    assert cfg.stages == ["ingest", "blur", "select"]


@pytest.mark.parametrize(
    "patch, fragment",
    [
        ({"ray": {"address": "auto", "num_cpus": 4}}, "num_cpus sizes the embedded local Ray"),
        ({"select": {"min_duration_s": 4, "max_duration_s": 2}}, "must exceed min_duration_s"),
        ({"shots": {"min_shot_s": 5, "max_clip_s": 2}}, "is below min_shot_s"),
    ],
)
def test_contradictory_values_are_rejected(patch, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_config({**BASE, **patch})


def test_override_under_a_scalar_is_a_config_error(tmp_path):
    from curation.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("lake: /tmp/x\ninput:\n  paths: [/tmp/m]\n")
    with pytest.raises(ConfigError, match="'lake' is not a section"):
        load_config(path, {"lake.x": 1})
    cfg = load_config(path, {"report.out_dir": "/tmp/r"})  # a missing section is created
    assert cfg.report.out_dir == "/tmp/r"


@pytest.mark.parametrize("name", ["demo.yaml", "pretrain_256p.yaml", "pretrain_256p_models.yaml"])
def test_shipped_curation_configs_validate(name: str) -> None:
    """The YAML files users start from stay valid as the schema grows (weights are checked only when run)."""
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "jobs" / "configs" / name)
    assert cfg.stages[0] == "ingest" and "select" in cfg.stages
