"""The one config loader of every job: strict typed sections, YAML files, ``--set`` overrides, config hashes.

Every job config (curation, caption, sample, VAE and captioner training, and the jobs still to come) is a
pydantic model built on ``Strict`` and read by ``load_yaml_config``, so they all behave alike: an unknown key or
a bad value is one ``ConfigError`` that names every offending key, raised before any work starts, and a dotted
override (``select.min_duration_s=5``) creates missing sections but refuses to descend into a value that is not
a section.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration that cannot be run; the message names the offending key."""


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


M = TypeVar("M", bound=BaseModel)


def format_errors(err: ValidationError) -> str:
    """One message naming every bad key of a pydantic validation error."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"unknown key '{loc}'" if e["type"] == "extra_forbidden" else f"'{loc}': {e['msg']}")
    return "invalid config: " + "; ".join(lines)


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``data`` with each dotted key of ``overrides`` set (missing sections are created)."""
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
            if not isinstance(node, dict):
                raise ConfigError(f"invalid override '{dotted}': '{'.'.join(parents[:i + 1])}' is not a section")
        node[leaf] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (an empty file is an empty mapping)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid config: {path} is not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config: {path} must hold a mapping at the top level")
    return data


def validate(model: type[M], data: Any) -> M:
    """``model`` validated from ``data``; a ``ConfigError`` naming every bad key otherwise."""
    if not isinstance(data, dict):
        raise ConfigError("invalid config: the top level must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e)) from None


def load_yaml_config(path: str | Path, model: type[M], overrides: Mapping[str, Any] | None = None) -> M:
    """Read ``path``, apply the dotted ``overrides``, validate into ``model``."""
    return validate(model, apply_overrides(read_yaml(path), overrides))


def config_hash(section: BaseModel) -> str:
    """Stable short hash of a config section, recorded in ``runs``."""
    blob = json.dumps(section.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
