"""Camera control: does the camera make the move the prompt asks for (metadata ``camera``)?

Pan, tilt and zoom come from the motion scorer's camera fit (``curation.scorers.motion``: a RANSAC similarity
transform fitted to the optical flow of each frame pair). Per pair, the content's translation ``(tx, ty)`` and the
zoom's displacement at the frame edge ``(scale - 1) * width / 2`` (px at flow width) are compared: the largest,
if above ``min_px``, names the move (content moving left = the camera pans right; content moving up = the camera
tilts down; content growing = zoom in), else ``static``. The score is the fraction of pairs classified as the
requested move; the evidence holds the clip's majority move. ``aerial`` and ``tracking`` shots are asked of the
VLM judge (section ``judge``), yes/no.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from bench.dimensions.base import BenchVideo, DimensionScore
from bench.dimensions.common import need_frames, need_meta, parse_section
from bench.dimensions.motion_dims import FlowSection, video_flows

FIT_MOVES = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")
JUDGE_MOVES = {"aerial": "Is this an aerial shot, filmed from high above the ground?",
               "tracking": "Does the camera follow a moving subject, keeping it in view?"}


class CameraSection(FlowSection):
    min_px: float = Field(default=0.3, ge=0)  # per-pair displacement below this: static
    judge: dict[str, Any] | None = None  # the VLM judge's section (``bench.judge.JudgeSection``) for aerial/tracking


def pair_moves(video: BenchVideo, sec: CameraSection) -> list[tuple[str, dict[str, float]]]:
    """The camera move of every analysed frame pair, with its translation and zoom displacement (px)."""
    from curation.scorers import motion

    f = video_flows(video, sec)
    cfg = motion.MotionConfig(flow_width=sec.flow_width)
    views = motion._Views(f.gray, f.gray, (0, 0, 0, 0))
    grid = motion._grid(views, cfg.grid_step)
    out = []
    for (a, _), flow in zip(f.pairs, f.flows):
        m = motion._fit_camera(flow, motion._texture(f.gray[a]), grid.gy, grid.gx, grid.gpts, cfg)
        zoom = (float(np.sqrt(abs(np.linalg.det(m[:, :2])))) - 1.0) * f.gray.shape[2] / 2.0
        tx, ty = float(m[0, 2]), float(m[1, 2])
        out.append((_move(tx, ty, zoom, sec.min_px), {"tx": tx, "ty": ty, "zoom_px": zoom}))
    return out


def _move(tx: float, ty: float, zoom: float, min_px: float) -> str:
    mags = {"pan": abs(tx), "tilt": abs(ty), "zoom": abs(zoom)}
    kind = max(mags, key=mags.__getitem__)
    if mags[kind] < min_px:
        return "static"
    if kind == "pan":
        return "pan_right" if tx < 0 else "pan_left"
    if kind == "tilt":
        return "tilt_down" if ty < 0 else "tilt_up"
    return "zoom_in" if zoom > 0 else "zoom_out"


def classify_camera(video: BenchVideo, section: Any = None) -> str:
    """The majority camera move of the video (one of ``FIT_MOVES``)."""
    moves = [m for m, _ in pair_moves(video, parse_section(CameraSection, section))]
    return Counter(moves).most_common(1)[0][0]


class CameraControl:
    name: ClassVar[str] = "camera_control"
    group: ClassVar[str] = "instruction_following"
    needs: ClassVar[frozenset[str]] = frozenset({"frames", "fps", "meta"})

    def __init__(self, section: Any = None, judge: Any = None) -> None:
        self.cfg = parse_section(CameraSection, section)
        self._judge = judge

    def _judge_or_load(self) -> Any:
        if self._judge is None:
            if self.cfg.judge is None:
                raise ValueError("camera_control: aerial/tracking moves need a 'judge' section (a VLM judge)")
            from bench.judge import VLMJudge

            self._judge = VLMJudge(self.cfg.judge)
        return self._judge

    def score(self, video: BenchVideo) -> DimensionScore:
        want = str(need_meta(video, "camera", self.name))
        if want in JUDGE_MOVES:
            answers = self._judge_or_load().ask(video, [JUDGE_MOVES[want]])
            return DimensionScore(float(np.mean([a.value for a in answers])),
                                  {"requested": want, "judge": [a.as_dict() for a in answers]})
        if want not in FIT_MOVES:
            raise ValueError(f"camera_control: unknown camera move {want!r}; expected {FIT_MOVES} or "
                             f"{tuple(JUDGE_MOVES)}")
        need_frames(video, 2, self.name)
        moves = pair_moves(video, self.cfg)
        names = [m for m, _ in moves]
        return DimensionScore(sum(m == want for m in names) / len(names),
                              {"requested": want, "detected": Counter(names).most_common(1)[0][0],
                               "pair_moves": dict(Counter(names))})
