"""The Wan-Bench prompt suite: the bundled file loads and covers every dimension; bad lines are named."""
from __future__ import annotations

import json

import pytest

from bench.dimensions import WANBENCH_DIMENSIONS
from bench.prompt_suite import PromptSuiteError, by_dimension, load_suite


def test_bundled_suite_covers_every_dimension():
    records = load_suite()
    groups = by_dimension(records)
    assert set(groups) == set(WANBENCH_DIMENSIONS)
    assert all(len(v) >= 5 for v in groups.values())
    assert len({r.id for r in records}) == len(records)
    assert all(len(r.meta["objects"]) == 2 for r in groups["spatial_position"])


def _write(tmp_path, records):
    path = tmp_path / "suite.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


GOOD = {"id": "a", "dimension": "large_motion", "prompt": "a horse gallops"}


@pytest.mark.parametrize("bad, message", [
    ({"id": "b", "dimension": "spatial_position", "prompt": "x", "meta": {"objects": ["a", "b"]}},
     "line 2: dimension 'spatial_position' needs meta 'relation'"),
    ({"id": "b", "dimension": "single_object", "prompt": "x", "meta": {"objects": ["a", "b"]}}, "line 2: .*1..1"),
    ({"id": "b", "dimension": "camera_control", "prompt": "x", "meta": {"camera": "dolly"}}, "line 2: .*dolly"),
    ({"id": "b", "dimension": "stylization", "prompt": "x"}, "line 2: .*'style'"),
    ({"id": "b", "dimension": "fun", "prompt": "x"}, "line 2: unknown dimension"),
    ({"id": "b", "dimension": "large_motion"}, "line 2: missing or empty prompt"),
    ({"id": "a", "dimension": "large_motion", "prompt": "y"}, "line 2: duplicate id 'a'"),
    ("{not json", "line 2: not valid JSON"),
])
def test_bad_record_is_an_error_naming_the_line(tmp_path, bad, message):
    with pytest.raises(PromptSuiteError, match=message):
        load_suite(_write(tmp_path, [GOOD, bad]))


def test_valid_records_round_trip(tmp_path):
    rec = {"id": "s1", "dimension": "spatial_position", "prompt": "a cat left of a dog",
           "meta": {"objects": ["cat", "dog"], "relation": "left of"}}
    [a, b] = load_suite(_write(tmp_path, [GOOD, rec]))
    assert (b.id, b.dimension, b.meta) == ("s1", "spatial_position", rec["meta"]) and a.meta == {}
