"""``--set KEY=VALUE`` overrides shared by the job entrypoints (values parsed as YAML)."""
from __future__ import annotations

import argparse


def parse_set_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, object]:
    """``{"a.b": value}`` from ``["a.b=value", ...]``; a malformed item exits through ``parser.error``."""
    import yaml

    overrides: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    return overrides
