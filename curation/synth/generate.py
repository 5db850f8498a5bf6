"""Presets, corpus planning, and writing the synthetic videos, images and ``labels.parquet``.

``generate(out_dir, preset, seed)`` plans a corpus from a seed (``plan_corpus``), renders every file into
``out_dir/media`` and writes one label row per segment (one per image) to ``out_dir/labels.parquet``.
Everything is deterministic in ``seed``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.synth import degrade as dg
from curation.synth.scenes import MOTION_KINDS, render_scene, render_still
from curation.synth.videoio import read_video, write_video

LABEL_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("media_type", pa.string()),
        pa.field("segment_index", pa.int32()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("file_num_frames", pa.int64()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("file_duration_s", pa.float64()),
        pa.field("segment_duration_s", pa.float64()),
        pa.field("cut_frames", pa.list_(pa.int64())),
        pa.field("motion_kind", pa.string()),
        pa.field("blurred", pa.bool_()),
        pa.field("blur_sigma", pa.float32()),
        pa.field("overexposed", pa.bool_()),
        pa.field("border_top", pa.int32()),
        pa.field("border_bottom", pa.int32()),
        pa.field("border_left", pa.int32()),
        pa.field("border_right", pa.int32()),
        pa.field("logo", pa.bool_()),
        pa.field("logo_x0", pa.int32()),
        pa.field("logo_y0", pa.int32()),
        pa.field("logo_x1", pa.int32()),
        pa.field("logo_y1", pa.int32()),
        pa.field("text_strings", pa.list_(pa.string())),
        pa.field("text_area_fraction", pa.float32()),
        pa.field("duplicate_of", pa.string()),
        pa.field("dup_transform", pa.string()),
        pa.field("seed", pa.int64()),
    ]
)

DUP_REENCODE = "reencode_crf32"
DUP_RESIZE = "resize_0.75"


@dataclass(frozen=True)
class Preset:
    """Corpus size and mix. Fractions are of original videos (file-level) or of segments (segment-level)."""

    n_videos: int = 32  # original videos (single- and multi-segment), duplicates not included
    n_multi: int = 4  # videos with 2-3 segments (shot cuts)
    n_images: int = 8
    n_dup_originals: int = 2  # each gets a re-encoded and a resized copy
    n_lowres: int = 3  # 128x72
    n_large: int = 1  # 640x360
    frac_30fps: float = 0.2
    frac_blur: float = 0.15  # segments
    frac_overexposed: float = 0.15  # segments
    frac_text: float = 0.2  # segments
    frac_logo: float = 0.2  # videos
    frac_letterbox: float = 0.12  # videos
    frac_pillarbox: float = 0.12  # videos
    min_each: int = 3  # every degradation appears at least this often (when the corpus is big enough)
    crf: int = 20


PRESETS: dict[str, Preset] = {
    "test": Preset(),
    "demo": Preset(n_videos=56, n_multi=8, n_images=12, n_dup_originals=3, n_lowres=4, n_large=3),
}


@dataclass(frozen=True)
class SegmentPlan:
    """One shot: a fresh scene of ``motion_kind`` plus its segment-level degradations."""

    motion_kind: str
    n_frames: int
    seed: int
    blur_sigma: float = 0.0
    overexposed: bool = False
    text_strings: tuple[str, ...] = ()


@dataclass(frozen=True)
class VideoPlan:
    """One original video file: size, rate, segments and file-level degradations (border, logo)."""

    name: str
    width: int
    height: int
    fps: int
    segments: tuple[SegmentPlan, ...]
    border_kind: str = "none"  # "none" | "letterbox" | "pillarbox"
    logo: bool = False
    seed: int = 0  # layout of border, logo and text
    crf: int = 20


@dataclass(frozen=True)
class ImagePlan:
    """One still image (PNG or JPEG) and its degradations."""

    name: str
    width: int
    height: int
    seed: int
    blur_sigma: float = 0.0
    overexposed: bool = False
    border_kind: str = "none"
    text_strings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CorpusPlan:
    """Everything ``generate`` will write."""

    videos: tuple[VideoPlan, ...]
    images: tuple[ImagePlan, ...]
    dup_originals: tuple[str, ...] = field(default=())


def _subset(rng: np.random.Generator, n: int, frac: float, min_each: int) -> set[int]:
    k = min(n, max(min_each, int(round(frac * n))))
    return {int(i) for i in rng.permutation(n)[:k]}


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def plan_corpus(preset: Preset, seed: int) -> CorpusPlan:
    """Plan the corpus: sizes, rates, segments, motion kinds and degradations, all drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    n = preset.n_videos
    order = rng.permutation(n)
    multi = {int(i) for i in order[: preset.n_multi]}
    singles = [int(i) for i in order[preset.n_multi :]]
    lowres = set(singles[: preset.n_lowres])
    large = set(singles[preset.n_lowres : preset.n_lowres + preset.n_large])
    fps30 = _subset(rng, n, preset.frac_30fps, 1)
    # Segment durations (seconds): singles alternate short (2-3 s) / long (5-7 s); multis mix both kinds.
    durations: list[list[float]] = []
    for i in range(n):
        if i in multi:
            segs = [rng.uniform(1.5, 3.0), rng.uniform(4.5, 6.0)] + ([rng.uniform(1.5, 4.0)] if i % 2 == 0 else [])
            durations.append([float(d) for d in rng.permutation(segs)])
        else:
            durations.append([rng.uniform(2.0, 3.0) if i % 2 == 0 else rng.uniform(5.0, 7.0)])
    n_segs = sum(len(d) for d in durations)
    perm = rng.permutation(len(MOTION_KINDS))
    kinds = [MOTION_KINDS[perm[k % len(MOTION_KINDS)]] for k in range(n_segs)]  # consecutive kinds differ
    blur = _subset(rng, n_segs, preset.frac_blur, preset.min_each)
    over = _subset(rng, n_segs, preset.frac_overexposed, preset.min_each)
    text = _subset(rng, n_segs, preset.frac_text, preset.min_each)
    logo = _subset(rng, n, preset.frac_logo, preset.min_each)
    border_order = rng.permutation(n)
    n_lb = min(n, max(preset.min_each, int(round(preset.frac_letterbox * n))))
    n_pb = min(n - n_lb, max(preset.min_each, int(round(preset.frac_pillarbox * n))))
    letterbox = {int(i) for i in border_order[:n_lb]}
    pillarbox = {int(i) for i in border_order[n_lb : n_lb + n_pb]}
    videos, k = [], 0
    for i in range(n):
        fps = 30 if i in fps30 else 24
        w, h = (128, 72) if i in lowres else (640, 360) if i in large else (320, 180)
        segs = []
        for d in durations[i]:
            strings = tuple(str(s) for s in rng.choice(dg.TEXT_POOL, int(rng.integers(1, 3)), replace=False))
            segs.append(
                SegmentPlan(
                    motion_kind=kinds[k],
                    n_frames=int(round(d * fps)),
                    seed=_seed(rng),
                    blur_sigma=float(round(rng.uniform(2.5, 4.0), 2)) if k in blur else 0.0,
                    overexposed=k in over,
                    text_strings=strings if k in text else (),
                )
            )
            k += 1
        bkind = "letterbox" if i in letterbox else "pillarbox" if i in pillarbox else "none"
        videos.append(VideoPlan(f"v{i:04d}.mp4", w, h, fps, tuple(segs), bkind, i in logo, _seed(rng), preset.crf))
    candidates = [v.name for v in videos if v.width == 320 and len(v.segments) == 1]
    dups = tuple(str(x) for x in rng.choice(candidates, min(len(candidates), preset.n_dup_originals), replace=False))
    looks = ["clean", "letterbox", "blur", "overexposed", "text", "pillarbox+text", "blur", "clean"]
    images = []
    for j in range(preset.n_images):
        look = looks[j % len(looks)]
        w, h = (640, 360) if j % 5 == 3 else (128, 72) if j % 7 == 6 else (320, 180)
        strings = tuple(str(s) for s in rng.choice(dg.TEXT_POOL, 2, replace=False))
        images.append(
            ImagePlan(
                name=f"i{j:04d}.{'png' if j % 2 == 0 else 'jpg'}",
                width=w,
                height=h,
                seed=_seed(rng),
                blur_sigma=float(round(rng.uniform(2.5, 4.0), 2)) if "blur" in look else 0.0,
                overexposed=look == "overexposed",
                border_kind=look.split("+")[0] if look.split("+")[0] in ("letterbox", "pillarbox") else "none",
                text_strings=strings if "text" in look else (),
            )
        )
    return CorpusPlan(tuple(videos), tuple(images), dups)


@dataclass(frozen=True)
class VideoLayout:
    """Pixel-level placement of a video's file- and segment-level overlays."""

    border: dg.Border
    logo: dg.Logo | None
    texts: tuple[tuple[dg.TextItem, ...], ...]  # per segment


def layout_video(plan: VideoPlan) -> VideoLayout:
    """Deterministically place border, logo and text overlays of ``plan`` (from ``plan.seed``)."""
    rng = np.random.default_rng(plan.seed)
    border = dg.plan_border(rng, plan.width, plan.height, plan.border_kind)
    logo = dg.plan_logo(rng, plan.width, plan.height, border) if plan.logo else None
    texts = tuple(
        tuple(dg.plan_texts(rng, list(s.text_strings), plan.width, plan.height, border)) for s in plan.segments
    )
    return VideoLayout(border, logo, texts)


def render_video_frames(plan: VideoPlan) -> Iterator[np.ndarray]:
    """Yield every frame (BGR uint8) of ``plan``: rendered scenes with their degradations applied."""
    lay = layout_video(plan)
    for seg, texts in zip(plan.segments, lay.texts):
        gain = 0.0
        for frame in render_scene(seg.motion_kind, seg.seed, plan.width, plan.height, seg.n_frames):
            if seg.overexposed:  # gain never decreases, and every frame keeps >= 60 % of its content blown out
                blurred = dg.apply_blur(frame, seg.blur_sigma)
                box = dg.content_box(plan.width, plan.height, lay.border)
                gain = max(gain, dg.overexposure_gain(blurred, box))
            d = dg.Degradations(lay.border, seg.blur_sigma, gain, lay.logo, texts)
            yield dg.apply_degradations(frame, d)


def _row(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(
        segment_index=0, start_frame=0, end_frame=1, file_num_frames=1, fps=0.0, file_duration_s=0.0,
        segment_duration_s=0.0, cut_frames=[], motion_kind=None, blurred=False, blur_sigma=0.0,
        overexposed=False, border_top=0, border_bottom=0, border_left=0, border_right=0, logo=False,
        logo_x0=-1, logo_y0=-1, logo_x1=-1, logo_y1=-1, text_strings=[], text_area_fraction=0.0,
        duplicate_of=None, dup_transform=None,
    )  # fmt: skip
    base.update(kw)
    return base


def _video_rows(plan: VideoPlan, lay: VideoLayout, n_written: int) -> list[dict[str, object]]:
    starts = np.cumsum([0] + [s.n_frames for s in plan.segments]).tolist()
    if starts[-1] != n_written:
        raise RuntimeError(f"{plan.name}: wrote {n_written} frames, planned {starts[-1]}")
    t, b, l, r = lay.border
    box = lay.logo.box if lay.logo is not None else dg.NO_BOX
    rows = []
    for i, (seg, texts) in enumerate(zip(plan.segments, lay.texts)):
        rows.append(
            _row(
                file=plan.name, media_type="video", segment_index=i, start_frame=starts[i],
                end_frame=starts[i + 1], file_num_frames=n_written, fps=float(plan.fps), width=plan.width,
                height=plan.height, file_duration_s=n_written / plan.fps, segment_duration_s=seg.n_frames / plan.fps,
                cut_frames=starts[1:-1], motion_kind=seg.motion_kind, blurred=seg.blur_sigma > 0,
                blur_sigma=seg.blur_sigma, overexposed=seg.overexposed, border_top=t, border_bottom=b,
                border_left=l, border_right=r, logo=lay.logo is not None, logo_x0=box[0], logo_y0=box[1],
                logo_x1=box[2], logo_y1=box[3], text_strings=[it.string for it in texts],
                text_area_fraction=dg.union_area_fraction([it.box for it in texts], plan.width, plan.height),
                seed=seg.seed,
            )  # fmt: skip
        )
    return rows


def _even(x: float) -> int:
    return max(2, 2 * int(round(x / 2)))


def _write_dups(
    media: Path, plan: VideoPlan, lay: VideoLayout, rows: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Write the re-encoded and the resized copy of ``plan``'s file; return their label rows."""
    src = media / plan.name
    stem = plan.name.rsplit(".", 1)[0]
    out: list[dict[str, object]] = []
    write_video(media / f"{stem}_dup_crf.mp4", read_video(src), plan.width, plan.height, plan.fps, 32)
    out += [dict(r, file=f"{stem}_dup_crf.mp4", duplicate_of=plan.name, dup_transform=DUP_REENCODE) for r in rows]
    w, h = _even(plan.width * 0.75), _even(plan.height * 0.75)
    sx, sy = w / plan.width, h / plan.height
    frames = (cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in read_video(src))
    write_video(media / f"{stem}_dup_resized.mp4", frames, w, h, plan.fps, plan.crf)
    for r, texts in zip(rows, lay.texts):
        boxes = [(round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)) for x0, y0, x1, y1 in
                 (it.box for it in texts)]  # fmt: skip
        lb = [r["logo_x0"], r["logo_y0"], r["logo_x1"], r["logo_y1"]]
        if r["logo"]:
            lb = [int(lb[0] * sx), int(lb[1] * sy), int(np.ceil(lb[2] * sx)), int(np.ceil(lb[3] * sy))]
        out.append(
            dict(
                r, file=f"{stem}_dup_resized.mp4", width=w, height=h, duplicate_of=plan.name, dup_transform=DUP_RESIZE,
                border_top=int(round(r["border_top"] * sy)), border_bottom=int(round(r["border_bottom"] * sy)),
                border_left=int(round(r["border_left"] * sx)), border_right=int(round(r["border_right"] * sx)),
                logo_x0=lb[0], logo_y0=lb[1], logo_x1=lb[2], logo_y1=lb[3],
                text_area_fraction=dg.union_area_fraction(boxes, w, h),
            )  # fmt: skip
        )
    return out


def render_image(plan: ImagePlan) -> tuple[np.ndarray, dg.Border, tuple[dg.TextItem, ...]]:
    """Render ``plan`` to BGR pixels; also return its border and text layout."""
    rng = np.random.default_rng(plan.seed + 1)
    border = dg.plan_border(rng, plan.width, plan.height, plan.border_kind)
    texts = tuple(dg.plan_texts(rng, list(plan.text_strings), plan.width, plan.height, border))
    img = render_still(plan.seed, plan.width, plan.height)
    blurred = dg.apply_blur(img, plan.blur_sigma)
    box = dg.content_box(plan.width, plan.height, border)
    gain = dg.overexposure_gain(blurred, box) if plan.overexposed else 0.0
    return dg.apply_degradations(img, dg.Degradations(border, plan.blur_sigma, gain, None, texts)), border, texts


def _write_image(media: Path, plan: ImagePlan) -> dict[str, object]:
    img, (t, b, l, r), texts = render_image(plan)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if plan.name.endswith(".jpg") else []
    if not cv2.imwrite(str(media / plan.name), img, params):
        raise RuntimeError(f"could not write {plan.name}")
    return _row(
        file=plan.name, media_type="image", width=plan.width, height=plan.height, blurred=plan.blur_sigma > 0,
        blur_sigma=plan.blur_sigma, overexposed=plan.overexposed, border_top=t, border_bottom=b, border_left=l,
        border_right=r, text_strings=[it.string for it in texts],
        text_area_fraction=dg.union_area_fraction([it.box for it in texts], plan.width, plan.height), seed=plan.seed,
    )  # fmt: skip


def generate(out_dir: str | Path, preset: str = "test", seed: int = 0, **overrides: object) -> pa.Table:
    """Write the synthetic corpus to ``out_dir/media`` and ``out_dir/labels.parquet``; return the labels.

    ``preset`` is a key of ``PRESETS``; ``overrides`` replace fields of that ``Preset`` (e.g.
    ``n_videos=4, n_images=2``). One label row per video segment and per image (see ``LABEL_SCHEMA``).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[preset], **overrides)  # type: ignore[arg-type]
    plan = plan_corpus(cfg, seed)
    media = Path(out_dir) / "media"
    media.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    for vp in plan.videos:
        lay = layout_video(vp)
        n = write_video(media / vp.name, render_video_frames(vp), vp.width, vp.height, vp.fps, vp.crf)
        vrows = _video_rows(vp, lay, n)
        rows += vrows
        if vp.name in plan.dup_originals:
            rows += _write_dups(media, vp, lay, vrows)
    rows += [_write_image(media, ip) for ip in plan.images]
    table = pa.Table.from_pylist(rows, schema=LABEL_SCHEMA)
    pq.write_table(table, Path(out_dir) / "labels.parquet")
    return table
