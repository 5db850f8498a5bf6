"""Where the vLLM serving environment lives, and whether this process can run the engine itself.

vLLM pins its own torch and transformers, so on a workstation it lives in a virtual environment of its own
(``make vllm-env`` builds ``.venv-vllm``); the main stack reaches it through a worker process
(``captioner.vllm_plugin.worker``). On a cluster whose worker image has vLLM installed, the engine runs in the
Ray actor directly. ``WAN_VLLM_PYTHON`` names another interpreter of a vLLM environment.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VLLM_VENV = REPO_ROOT / ".venv-vllm"
PYTHON_ENV_VAR = "WAN_VLLM_PYTHON"
SKIP_ENV_VAR = "WAN_SKIP_VLLM"
"""Set to 1 to let tests skip the vLLM path when no serving environment exists (never set in CI)."""


def vllm_importable() -> bool:
    """Whether ``import vllm`` would work in this interpreter (then the engine runs in-process)."""
    return importlib.util.find_spec("vllm") is not None


def vllm_python() -> Path:
    """The interpreter of the vLLM environment; raises ``FileNotFoundError`` naming how to build it."""
    named = os.environ.get(PYTHON_ENV_VAR)
    path = Path(named) if named else VLLM_VENV / "bin" / "python"
    if not path.exists():
        how = f"{PYTHON_ENV_VAR}={named}" if named else f"{VLLM_VENV} (build it with `make vllm-env`)"
        raise FileNotFoundError(f"no vLLM serving environment: expected a python at {path}; set up {how}")
    return path


def vllm_env_available() -> bool:
    """Whether a vLLM environment exists (in-process or the serving venv)."""
    if vllm_importable():
        return True
    try:
        vllm_python()
    except FileNotFoundError:
        return False
    return True


def skip_allowed() -> bool:
    """Whether tests may skip the vLLM path: only when no environment exists *and* ``WAN_SKIP_VLLM=1``."""
    return not vllm_env_available() and os.environ.get(SKIP_ENV_VAR) == "1"
