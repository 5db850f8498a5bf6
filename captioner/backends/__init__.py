"""Captioning backends: one interface, several engines (transformers reference, vLLM).

Every backend loads a saved captioner folder (``config.json``, ``model.safetensors``, tokenizer) and offers::

    backend.caption(items, instruction=None, max_new_tokens=128, greedy=True) -> list[CaptionResult]
    backend.generate_text(prompts, max_new_tokens=32) -> list[str]     # text only (e.g. as an eval judge)

``items`` are ``captioner.processor.ImageInput`` / ``VideoInput``; ``instruction`` is one string for all items,
one per item, or None for the default template of each item's media type (``captioner.templates``). An item the
processor rejects (undecodable, extreme aspect ratio, empty instruction) gets a ``CaptionResult`` with ``error``
set and no text; the other items are captioned. ``get_backend("hf" | "vllm", model_dir, **options)`` builds one.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from captioner.processor import ImageInput, MediaInput
from captioner.templates import instruction_for


@dataclass
class CaptionResult:
    """One item's caption, or the reason it has none."""

    text: str | None
    error: str | None = None
    num_visual_tokens: int = 0
    num_generated_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class CaptionBackend(Protocol):
    model_id: str

    def caption(self, items: Sequence[MediaInput], instruction: str | Sequence[str] | None = None,
                max_new_tokens: int = 128, greedy: bool = True) -> list[CaptionResult]: ...

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]: ...


BACKENDS: dict[str, str] = {"hf": "captioner.backends.hf:HFBackend",
                             "vllm": "captioner.backends.vllm_backend:VLLMBackend"}


def get_backend(name: str, model_dir: str, **options) -> CaptionBackend:
    """Build the backend ``name`` (``hf`` or ``vllm``) for the captioner saved in ``model_dir``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown captioner backend {name!r}; expected one of {sorted(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(model_dir, **options)


def instructions_for(items: Sequence[MediaInput], instruction: str | Sequence[str] | None) -> list[str]:
    """One instruction per item: the given string, the given list, or each media type's default template."""
    if instruction is None:
        return [instruction_for("image" if isinstance(i, ImageInput) else "video") for i in items]
    if isinstance(instruction, str):
        return [instruction] * len(items)
    if len(instruction) != len(items):
        raise ValueError(f"{len(items)} items but {len(instruction)} instructions")
    return list(instruction)
