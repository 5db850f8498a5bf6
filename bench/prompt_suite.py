"""The Wan-Bench prompt suite: a versioned JSON-lines file of prompts per dimension (``bench/prompts/``).

One record per line::

    {"id": "spatial_position-003", "dimension": "spatial_position", "prompt": "a cat to the left of a dog",
     "meta": {"objects": ["cat", "dog"], "relation": "left of"}}

``dimension`` is a key of ``bench.dimensions.DIMENSIONS``; ``meta`` holds what that dimension's scorer reads
(``REQUIRED_META``): ``objects`` (a list of names; one for single_object, two or more for multiple_objects, two
for spatial_position), ``relation`` (``left of``, ``right of``, ``above``, ``below``), ``camera`` (a camera move
of ``camera_control``), ``action``, ``style``; optional ``distractors`` for the object dimensions. ``load_suite``
validates every line; a bad one is a ``PromptSuiteError`` naming the file and line. A new suite is a new file
(``wanbench_v2.jsonl``), never an edit, so that scores stay comparable within a version.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUITE_DIR = Path(__file__).parent / "prompts"
DEFAULT_VERSION = "v1"

REQUIRED_META: dict[str, tuple[str, ...]] = {
    "single_object": ("objects",), "multiple_objects": ("objects",), "spatial_position": ("objects", "relation"),
    "camera_control": ("camera",), "action_following": ("action",), "stylization": ("style",),
}
OBJECT_COUNTS = {"single_object": (1, 1), "multiple_objects": (2, 16), "spatial_position": (2, 2)}


class PromptSuiteError(ValueError):
    """A prompt suite record that a scorer could not use; the message names the file and line."""


@dataclass(frozen=True)
class PromptRecord:
    id: str
    dimension: str
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)


def suite_path(version: str = DEFAULT_VERSION) -> Path:
    return SUITE_DIR / f"wanbench_{version}.jsonl"


def _check_meta(dimension: str, meta: dict[str, Any]) -> str | None:
    """What is wrong with ``meta`` for ``dimension`` (None when nothing)."""
    from bench.dimensions.camera_control import FIT_MOVES, JUDGE_MOVES
    from bench.dimensions.objects import RELATIONS

    for key in REQUIRED_META.get(dimension, ()):
        if meta.get(key) in (None, "", []):
            return f"dimension '{dimension}' needs meta '{key}'"
    if dimension in OBJECT_COUNTS:
        lo, hi = OBJECT_COUNTS[dimension]
        objs = meta["objects"]
        if not isinstance(objs, list) or not lo <= len(objs) <= hi or not all(isinstance(o, str) for o in objs):
            return f"dimension '{dimension}' needs meta 'objects' as a list of {lo}..{hi} names, got {objs!r}"
    if dimension == "spatial_position" and meta["relation"] not in RELATIONS:
        return f"unknown relation {meta['relation']!r} (expected one of {RELATIONS})"
    if dimension == "camera_control" and meta["camera"] not in (*FIT_MOVES, *JUDGE_MOVES):
        return f"unknown camera move {meta['camera']!r} (expected one of {(*FIT_MOVES, *JUDGE_MOVES)})"
    return None


def parse_record(line: str, where: str) -> PromptRecord:
    """One validated record from one JSON line; ``where`` (file:line) prefixes every error."""
    from bench.dimensions import DIMENSIONS

    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise PromptSuiteError(f"{where}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise PromptSuiteError(f"{where}: a record must be a JSON object")
    missing = [k for k in ("id", "dimension", "prompt") if not isinstance(data.get(k), str) or not data[k]]
    if missing:
        raise PromptSuiteError(f"{where}: missing or empty {', '.join(missing)}")
    if set(data) - {"id", "dimension", "prompt", "meta"}:
        raise PromptSuiteError(f"{where}: unknown keys {sorted(set(data) - {'id', 'dimension', 'prompt', 'meta'})}")
    if data["dimension"] not in DIMENSIONS:
        raise PromptSuiteError(f"{where}: unknown dimension {data['dimension']!r}")
    meta = data.get("meta") or {}
    if not isinstance(meta, dict) or (problem := _check_meta(data["dimension"], meta)):
        raise PromptSuiteError(f"{where}: {problem if isinstance(meta, dict) else 'meta must be an object'}")
    return PromptRecord(data["id"], data["dimension"], data["prompt"], meta)


def load_suite(path: str | Path | None = None, version: str = DEFAULT_VERSION) -> list[PromptRecord]:
    """Every record of the suite file (``path``, else the bundled ``version``), validated; ids are unique."""
    file = Path(path) if path is not None else suite_path(version)
    if not file.is_file():
        raise PromptSuiteError(f"prompt suite not found: {file}")
    records: list[PromptRecord] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rec = parse_record(line, f"{file.name} line {n}")
        if rec.id in seen:
            raise PromptSuiteError(f"{file.name} line {n}: duplicate id {rec.id!r} (first on line {seen[rec.id]})")
        seen[rec.id] = n
        records.append(rec)
    return records


def by_dimension(records: list[PromptRecord]) -> dict[str, list[PromptRecord]]:
    out: dict[str, list[PromptRecord]] = {}
    for r in records:
        out.setdefault(r.dimension, []).append(r)
    return out
