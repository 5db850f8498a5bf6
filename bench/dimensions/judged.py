"""Dimensions the VLM judge scores (``bench.judge``): the mean of its yes/no answers to fixed questions.

- ``physical_plausibility``: does what happens obey physics (no passing through, floating, vanishing)?
- ``smoothness``: is the motion smooth, without jumps, stutter or flicker?
- ``stylization``: is the video in the prompt's ``style`` (metadata), and consistently so?
- ``action_following``: on keyframes, does the video show the prompt's ``action`` (alignment), is it carried
  through (completion), and is it free of artifacts on the actor?

Each takes its section ``{"judge": {...JudgeSection...}}``; the questions can be replaced with ``questions``
(``{style}`` / ``{action}`` are filled from the metadata).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bench.dimensions.base import BenchVideo, DimensionScore
from bench.dimensions.common import need_meta, parse_section
from curation.jobconfig import Strict


class JudgedSection(Strict):
    judge: dict[str, Any] | None = None
    questions: list[str] | None = None


class _Judged:
    group: ClassVar[str]
    name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset({"frames", "fps"})
    QUESTIONS: ClassVar[tuple[str, ...]]
    META: ClassVar[tuple[str, ...]] = ()

    def __init__(self, section: Any = None, judge: Any = None) -> None:
        from bench.judge import VLMJudge

        self.cfg = parse_section(JudgedSection, section)
        self.judge = judge if judge is not None else VLMJudge(self.cfg.judge)

    def questions(self, video: BenchVideo) -> list[str]:
        fill = {k: str(need_meta(video, k, self.name)) for k in self.META}
        return [q.format(**fill) for q in (self.cfg.questions or self.QUESTIONS)]

    def score(self, video: BenchVideo) -> DimensionScore:
        answers = self.judge.ask(video, self.questions(video))
        return DimensionScore(float(np.mean([a.value for a in answers])),
                              {"judge": [a.as_dict() for a in answers]})


class PhysicalPlausibility(_Judged):
    name: ClassVar[str] = "physical_plausibility"
    group: ClassVar[str] = "dynamic_quality"
    QUESTIONS = ("Do the objects in this video move as real objects would under physics?",
                 "Is the video free of objects passing through each other, floating or vanishing?")


class Smoothness(_Judged):
    name: ClassVar[str] = "smoothness"
    group: ClassVar[str] = "dynamic_quality"
    QUESTIONS = ("Is the motion in this video smooth, without sudden jumps?",
                 "Is the video free of stutter and flicker?")


class Stylization(_Judged):
    name: ClassVar[str] = "stylization"
    group: ClassVar[str] = "image_quality"
    needs: ClassVar[frozenset[str]] = frozenset({"frames", "fps", "meta"})
    META = ("style",)
    QUESTIONS = ("Is this video in the style of {style}?",
                 "Does the {style} style stay the same through the whole video?")


class ActionFollowing(_Judged):
    name: ClassVar[str] = "action_following"
    group: ClassVar[str] = "instruction_following"
    needs: ClassVar[frozenset[str]] = frozenset({"frames", "fps", "meta"})
    META = ("action",)
    QUESTIONS = ("Does the video show this action: {action}?",
                 "Is the action ({action}) completed by the end of the video?",
                 "Is the subject doing the action free of visual artifacts?")
