"""The VLM judge of Wan-Bench: yes/no questions about a video, asked through the captioner's backends
(``captioner.backends``: transformers ``hf`` or ``vllm``) with the captioner saved in a local folder.

Each question is sent with the video's frames (at most ``max_frames``, evenly spread) as the instruction
``"<question> Answer yes or no."``; the reply's first word decides: ``yes`` -> 1, ``no`` -> 0, anything else ->
``unclear_value`` (0.5 by default: the judge did not answer). Every answer is kept as evidence.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from bench.dimensions.base import BenchVideo
from bench.dimensions.common import parse_section, spread
from curation.jobconfig import ConfigError, Strict


class JudgeSection(Strict):
    backend: str = "hf"  # hf | vllm
    model_dir: str | None = None  # a saved captioner folder (config.json, model.safetensors, tokenizer)
    device: str = "cpu"
    max_frames: int = Field(default=8, ge=1, le=129)
    max_new_tokens: int = Field(default=8, ge=1, le=256)
    unclear_value: float = Field(default=0.5, ge=0, le=1)


@dataclass(frozen=True)
class JudgeAnswer:
    question: str
    text: str | None
    value: float  # 1 yes, 0 no, ``unclear_value`` otherwise
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.text, "value": self.value, "error": self.error}


_WORD = re.compile(r"[a-z]+")


def parse_yes_no(text: str | None, unclear: float) -> float:
    """1.0 for a reply starting with yes, 0.0 for no, ``unclear`` otherwise."""
    m = _WORD.search((text or "").lower())
    if m is None:
        return unclear
    return {"yes": 1.0, "no": 0.0}.get(m.group(0), unclear)


class VLMJudge:
    """Asks yes/no questions about videos. ``backend``: an object with the captioner backends' ``caption``
    method (tests plant one); else the backend named in the section is loaded from ``model_dir``."""

    def __init__(self, section: Any = None, backend: Any = None) -> None:
        self.cfg = parse_section(JudgeSection, section)
        self.backend = backend if backend is not None else self._load()

    def _load(self) -> Any:
        from captioner.backends import get_backend
        from curation.models import require_dir, require_file

        if self.cfg.model_dir is None:
            raise ConfigError("invalid config: the VLM judge needs 'judge.model_dir' (a saved captioner folder)")
        folder = require_dir(self.cfg.model_dir, "VLM judge (captioner) folder")
        require_file(folder / "config.json", "VLM judge config")
        options = {"device": self.cfg.device} if self.cfg.backend == "hf" else {}
        return get_backend(self.cfg.backend, str(folder), **options)

    def ask(self, video: BenchVideo, questions: Sequence[str]) -> list[JudgeAnswer]:
        """One answer per question about ``video``."""
        from captioner.media import ImageInput, VideoInput

        frames = video.frames[spread(len(video.frames), self.cfg.max_frames)]
        item = ImageInput(frames[0]) if len(frames) == 1 else VideoInput(frames, fps=(video.fps or 8.0) * len(frames) / len(video.frames))
        prompts = [f"{q} Answer yes or no." for q in questions]
        results = self.backend.caption([item] * len(prompts), instruction=prompts,
                                       max_new_tokens=self.cfg.max_new_tokens)
        return [JudgeAnswer(q, r.text, parse_yes_no(r.text, self.cfg.unclear_value) if r.ok else
                            self.cfg.unclear_value, r.error) for q, r in zip(questions, results, strict=True)]
