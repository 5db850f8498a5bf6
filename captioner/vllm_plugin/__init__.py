"""vLLM plugin of the slow-fast captioner, loaded through the ``vllm.general_plugins`` entry point.

vLLM calls ``register`` in every process it starts (the front end, the engine core, each GPU worker), which is
the only way a model defined outside vLLM reaches its worker processes. ``register`` makes ``AutoConfig`` read
our ``config.json`` and maps our architecture name to the vLLM implementation (imported lazily, in the worker).
The entry point is declared in ``pyproject.toml``; an environment that has our package and vLLM installed
(``pip install --no-deps -e .`` in ``.venv-vllm``, or a cluster image) picks it up with no further set-up.
"""
from __future__ import annotations

import logging
import os

VLLM_MODEL_CLASS = "captioner.vllm_plugin.model:VllmSlowFastCaptioner"
# Under vLLM's logger namespace, so the line carries vLLM's process tag: it shows which processes loaded us.
log = logging.getLogger("vllm.plugins.slowfast_captioner")


def register() -> None:
    """Register our config with ``AutoConfig`` and our architecture with vLLM's ``ModelRegistry`` (idempotent)."""
    from vllm import ModelRegistry

    from captioner.config import ARCHITECTURE, register_auto_config

    register_auto_config()
    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, VLLM_MODEL_CLASS)
        log.info("registered %s in process %d", ARCHITECTURE, os.getpid())
