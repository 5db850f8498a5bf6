"""A job entry point run as the kill -9 test's victim: ``python -m tests.jobs.kill_target jobs.curate --config ...``.

It runs the named module as ``__main__`` (the job exactly as users start it) with one change: every Lance write
(``lance.write_dataset``, which every commit of the lake goes through) is announced in the file named by
``KILL_TARGET_LOG`` ("before <uri>" and "after <uri>", one line each, flushed) and is preceded by a pause of
``KILL_TARGET_DELAY`` seconds. The announcements let the test kill the process group at a chosen commit; the pause
makes the interval between commits long enough for the kill to land anywhere in it (while rows are computed, just
before a commit, during it, or after it), whatever the stage's speed. The results are unchanged.
"""
from __future__ import annotations

import os
import runpy
import sys
import time
from typing import Any

import lance

LOG_VAR, DELAY_VAR = "KILL_TARGET_LOG", "KILL_TARGET_DELAY"


def _note(event: str, uri: Any) -> None:
    with open(os.environ[LOG_VAR], "a") as f:
        f.write(f"{event} {uri}\n")
        f.flush()
        os.fsync(f.fileno())


def install() -> None:
    """Announce and slow down every ``lance.write_dataset`` of this process."""
    write = lance.write_dataset
    delay = float(os.environ.get(DELAY_VAR, "0.3"))

    def announced(data: Any, uri: Any, *args: Any, **kwargs: Any) -> Any:
        _note("before", uri)
        time.sleep(delay)
        out = write(data, uri, *args, **kwargs)
        _note("after", uri)
        return out

    lance.write_dataset = announced


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m tests.jobs.kill_target MODULE [ARGS...]")
    install()
    sys.argv = [argv[0], *argv[1:]]
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
