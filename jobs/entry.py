"""What every job entrypoint shares: its parser (``--config``, ``--lake``, ``--set KEY=VALUE``), logging, the
config overrides, and one way of turning a user's mistake into ``error: ...`` and exit status 2.

A user's mistake is anything a job checks before (or instead of) doing work: a bad config key or value
(``ConfigError`` and pydantic's ``ValidationError`` are ``ValueError``s), a missing file or weight
(``FileNotFoundError``; ``WeightsNotFoundError`` is one), an unreachable cluster (``RayClusterUnreachable``), an
input table that a stage needs first (``MissingInputError``, a ``ConfigError``). Anything else is a bug and keeps
its traceback.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["USER_ERRORS", "job_parser", "overrides_from", "parse_set_overrides", "run_job", "start_logging"]

T = TypeVar("T")


def _user_errors() -> tuple[type[BaseException], ...]:
    from curation.ray_runtime import RayClusterUnreachable

    return (ValueError, FileNotFoundError, RayClusterUnreachable)


USER_ERRORS = _user_errors()


def job_parser(prog: str, doc: str | None, config_help: str, set_example: str, *,
               lake: bool = True) -> argparse.ArgumentParser:
    """``prog``'s parser with ``--config`` (required), ``--lake`` (unless ``lake=False``) and ``--set``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help=config_help)
    if lake:
        parser.add_argument("--lake", help="lake path or URI (overrides the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config value (YAML value), e.g. --set {set_example}")
    return parser


def parse_set_overrides(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, object]:
    """``{"a.b": value}`` from ``["a.b=value", ...]`` (values parsed as YAML); a malformed item exits through
    ``parser.error``."""
    import yaml

    overrides: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    return overrides


def overrides_from(parser: argparse.ArgumentParser, args: argparse.Namespace, **named: Any) -> dict[str, object]:
    """The ``--set`` overrides, then ``--lake`` and each of ``named`` that is not None (a dedicated flag is more
    specific than a ``--set`` of the same key, so it wins)."""
    overrides = parse_set_overrides(parser, args.set)
    if getattr(args, "lake", None):
        overrides["lake"] = args.lake
    overrides.update({key: value for key, value in named.items() if value is not None})
    return overrides


def start_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_job(work: Callable[[], T], report: Callable[[T], int | None]) -> int:
    """``report(work())``'s status (None: 0); a user's mistake (``USER_ERRORS``) is printed as ``error: ...`` on
    stderr and gives 2."""
    try:
        result = work()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    status = report(result)
    return 0 if status is None else status
