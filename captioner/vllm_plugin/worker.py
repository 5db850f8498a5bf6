"""The vLLM worker process: ``python -m captioner.vllm_plugin.worker '<json spec>'`` in the vLLM environment.

Started by ``captioner.backends.vllm_backend.BridgeClient``. Protocol: one JSON object per line.

- on start it builds the engine and answers ``{"event": "ready", "load_s": ..., "vllm_version": ...}``
  (or ``{"event": "failed", "error": ...}`` and exits 1);
- ``{"op": "generate", "id": n, "path": "<Arrow IPC file>", "params": {...}}`` ->
  ``{"id": n, "outputs": [{"token_ids": [...], "num_visual_tokens": k, "error": null}, ...]}``;
- ``{"op": "shutdown"}`` -> exits 0; end of stdin does the same.

A failing call answers ``{"id": n, "error": "..."}`` and the worker goes on. Protocol lines go to the original
stdout only; everything else printed here or by vLLM (its logging writes to stdout) is sent to stderr, which the
client keeps in a log file. The engine is built under ``if __name__ == "__main__"``, as vLLM requires of a
process that may spawn its engine core and workers.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from dataclasses import asdict
from typing import IO, Any


def _protocol_stream() -> IO[str]:
    """A private copy of stdout for protocol lines; fd 1 itself then points at stderr (for vLLM's logs)."""
    sys.stdout.flush()
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return proto


def _send(stream: IO[str], message: dict[str, Any]) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


def serve(spec: dict[str, Any], proto: IO[str]) -> int:
    """Build the engine from ``spec`` and answer requests from stdin until shutdown."""
    from captioner.backends.vllm_backend import (
        EngineOptions,
        GenerationParams,
        VllmEngine,
        read_requests,
    )

    try:
        engine = VllmEngine(spec["model_dir"], EngineOptions(**spec.get("options", {})))
    except Exception as e:  # noqa: BLE001 - report why, then exit
        traceback.print_exc()
        _send(proto, {"event": "failed", "error": f"{type(e).__name__}: {e}"})
        return 1
    import vllm

    _send(proto, {"event": "ready", "load_s": engine.load_s, "vllm_version": vllm.__version__})
    for line in sys.stdin:
        if not line.strip():
            continue
        message: dict[str, Any] = {}
        try:
            message = json.loads(line)
            op = message.get("op")
            if op == "shutdown":
                return 0
            if op != "generate":
                raise ValueError(f"unknown op {op!r}")
            t0 = time.perf_counter()
            outputs = engine.generate(read_requests(message["path"]), GenerationParams(**message["params"]))
            _send(proto, {"id": message.get("id"), "outputs": [asdict(o) for o in outputs],
                          "wall_s": time.perf_counter() - t0})
        except Exception as e:  # noqa: BLE001 - one failed call does not end the worker
            traceback.print_exc()
            _send(proto, {"id": message.get("id"), "error": f"{type(e).__name__}: {e}"})
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m captioner.vllm_plugin.worker '<json spec>'", file=sys.stderr)
        return 2
    proto = _protocol_stream()
    return serve(json.loads(argv[0]), proto)


if __name__ == "__main__":
    sys.exit(main())
