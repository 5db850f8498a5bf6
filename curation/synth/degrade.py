"""Labelled degradations: black borders, Gaussian blur, overexposure, a static logo, text overlays.

Order of application (see ``apply_degradations``): blur -> overexposure -> logo / text -> borders. Borders
are applied last so their pixels are pure black (0); logo and text are placed inside the content area.
Frames are ``(H, W, 3)`` uint8 BGR. Boxes are ``(x0, y0, x1, y1)`` with exclusive ends.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Box = tuple[int, int, int, int]
Border = tuple[int, int, int, int]  # top, bottom, left, right (pixels)

NO_BORDER: Border = (0, 0, 0, 0)
NO_BOX: Box = (-1, -1, -1, -1)

TEXT_POOL: tuple[str, ...] = (
    "Breaking news tonight",
    "Subscribe for more",
    "LIVE",
    "Episode 4: The Return",
    "Sale ends Sunday",
    "Chapter one",
    "Weather update",
    "Follow us online",
    "Top 10 goals",
    "Click the link below",
    "Morning show",
    "Call now 555 0199",
)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT_COLOUR = (245, 245, 245)  # light, but below the 250 "saturated" threshold


def content_box(width: int, height: int, border: Border) -> Box:
    """The part of the frame that is not border: ``(left, top, width - right, height - bottom)``."""
    top, bottom, left, right = border
    return left, top, width - right, height - bottom


def plan_border(rng: np.random.Generator, width: int, height: int, kind: str) -> Border:
    """Border widths: ``kind`` is ``"letterbox"`` (top/bottom), ``"pillarbox"`` (left/right) or ``"none"``.

    Widths are 8-30 px at 320x180, scaled with the frame size, and even (chroma-aligned for yuv420p).
    """
    if kind == "none":
        return NO_BORDER
    ref = height / 180 if kind == "letterbox" else width / 320
    px = max(2, 2 * int(round(rng.uniform(8, 30) * ref / 2)))
    return (px, px, 0, 0) if kind == "letterbox" else (0, 0, px, px)


def apply_border(frame: np.ndarray, border: Border) -> None:
    """Set the border rows/columns of ``frame`` to pure black, in place."""
    top, bottom, left, right = border
    h, w = frame.shape[:2]
    frame[:top] = 0
    frame[h - bottom :] = 0
    frame[:, :left] = 0
    frame[:, w - right :] = 0


def apply_blur(frame: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of standard deviation ``sigma`` (pixels); returns ``frame`` unchanged if ``sigma <= 0``."""
    if sigma <= 0:
        return frame
    return cv2.GaussianBlur(frame, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma))


def overexposure_gain(frame: np.ndarray, box: Box, saturate_fraction: float = 0.6) -> float:
    """Gain that drives about ``saturate_fraction`` of the pixels inside ``box`` to 255 in every channel.

    With borders of at most a third of the frame, over 30 % of the whole frame then reads >= 250.
    """
    x0, y0, x1, y1 = box
    lo = frame[y0:y1, x0:x1].min(axis=2)
    q = float(np.quantile(lo, 1.0 - saturate_fraction))
    return 255.0 / max(q, 8.0) * 1.02


def apply_overexposure(frame: np.ndarray, gain: float) -> np.ndarray:
    """Multiply by ``gain`` and clip to 255 (blown-out highlights)."""
    return np.minimum(frame.astype(np.float32) * gain, 255.0).astype(np.uint8)


@dataclass(frozen=True)
class Logo:
    """A static semi-transparent light logo: drawn where ``mask`` is set, blended with ``alpha``."""

    box: Box
    alpha: float
    mask: np.ndarray  # (y1 - y0, x1 - x0) bool
    colour: tuple[int, int, int]


def plan_logo(rng: np.random.Generator, width: int, height: int, border: Border) -> Logo:
    """Place a 'TV'-style logo (light rounded badge + short text) in a random corner of the content area."""
    s = width / 320
    lw, lh = max(8, int(round(rng.uniform(34, 46) * s))), max(6, int(round(rng.uniform(18, 24) * s)))
    patch = np.zeros((lh, lw), np.uint8)
    t = max(1, int(round(1.5 * s)))
    cv2.rectangle(patch, (0, 0), (lw - 1, lh - 1), 1, t)
    cv2.circle(patch, (lh // 2, lh // 2), max(1, lh // 3), 1, -1)
    label = str(rng.choice(["TV", "HD", "N1", "TV5"]))
    scale = max(0.2, 0.4 * s)
    (tw, th), _ = cv2.getTextSize(label, _FONT, scale, t)
    cv2.putText(patch, label, (max(lh, lw - tw - 2 * t - 1), (lh + th) // 2), _FONT, scale, 1, t, cv2.LINE_AA)
    cx0, cy0, cx1, cy1 = content_box(width, height, border)
    margin = max(2, int(round(6 * s)))
    corner = int(rng.integers(4))
    x0 = cx0 + margin if corner in (0, 2) else cx1 - margin - lw
    y0 = cy0 + margin if corner in (0, 1) else cy1 - margin - lh
    ys, xs = np.nonzero(patch)
    bx0, by0, bx1, by1 = x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1
    mask = patch[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(bool)
    colour = tuple(int(v) for v in rng.integers(225, 256, 3))
    return Logo(box=(bx0, by0, bx1, by1), alpha=float(rng.uniform(0.4, 0.7)), mask=mask, colour=colour)


def draw_logo(frame: np.ndarray, logo: Logo) -> None:
    """Alpha-blend ``logo`` into ``frame`` in place."""
    x0, y0, x1, y1 = logo.box
    region = frame[y0:y1, x0:x1]
    blended = region.astype(np.float32) * (1 - logo.alpha) + np.array(logo.colour, np.float32) * logo.alpha
    region[logo.mask] = blended.astype(np.uint8)[logo.mask]


@dataclass(frozen=True)
class TextItem:
    """One text overlay: ``string`` drawn with baseline-left origin ``org``; ``box`` bounds its pixels."""

    string: str
    org: tuple[int, int]
    scale: float
    thickness: int
    box: Box


def plan_texts(
    rng: np.random.Generator, strings: list[str], width: int, height: int, border: Border
) -> list[TextItem]:
    """Lay out ``strings`` in the content area: first as a bottom subtitle, then top-left, then top-right."""
    s = width / 320
    cx0, cy0, cx1, cy1 = content_box(width, height, border)
    margin = max(2, int(round(8 * s)))
    items: list[TextItem] = []
    for k, text in enumerate(strings[:3]):
        scale, thick = float(rng.uniform(0.45, 0.6) * s), max(1, int(round(s)))
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick + 2)
        avail = cx1 - cx0 - 2 * margin
        if tw > avail:
            scale *= avail / tw
            (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick + 2)
        if k == 0:
            org = ((cx0 + cx1 - tw) // 2, cy1 - margin - base)
        elif k == 1:
            org = (cx0 + margin, cy0 + margin + th)
        else:
            org = (cx1 - margin - tw, cy0 + margin + th + (th + base + margin if len(items) > 1 else 0))
        mask = np.zeros((height, width), np.uint8)
        _put(mask, text, org, scale, thick, 1, 1)
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        items.append(TextItem(text, org, scale, thick, box))
    return items


Colour = int | tuple[int, int, int]


def _put(img: np.ndarray, text: str, org: tuple[int, int], scale: float, thick: int, fg: Colour, out: Colour) -> None:
    """Draw ``text`` with an outline of colour ``out`` (2 px thicker) under the ``fg`` strokes."""
    cv2.putText(img, text, org, _FONT, scale, out, thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, _FONT, scale, fg, thick, cv2.LINE_AA)


def draw_texts(frame: np.ndarray, items: list[TextItem]) -> None:
    """Draw the text overlays (light text with a dark outline) into ``frame`` in place."""
    for it in items:
        _put(frame, it.string, it.org, it.scale, it.thickness, _TEXT_COLOUR, (10, 10, 10))


def union_area_fraction(boxes: list[Box], width: int, height: int) -> float:
    """Area of the union of ``boxes`` divided by the frame area."""
    if not boxes:
        return 0.0
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    return float(mask.mean())


@dataclass(frozen=True)
class Degradations:
    """All degradations of one segment (or image). ``gain`` 0 means no overexposure."""

    border: Border = NO_BORDER
    blur_sigma: float = 0.0
    gain: float = 0.0
    logo: Logo | None = None
    texts: tuple[TextItem, ...] = ()


def apply_degradations(frame: np.ndarray, d: Degradations) -> np.ndarray:
    """Apply ``d`` to one rendered frame (blur, overexposure, logo, text, borders) and return the result."""
    out = apply_blur(frame, d.blur_sigma)
    if d.gain > 0:
        out = apply_overexposure(out, d.gain)
    elif out is frame:
        out = frame.copy()
    if d.logo is not None:
        draw_logo(out, d.logo)
    if d.texts:
        draw_texts(out, list(d.texts))
    apply_border(out, d.border)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Re-encoding: the same picture through another codec, quality, pixel format or size (decision-stability tests)
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reencoding:
    """One way to re-encode a video: encoder, pixel format and options, optional grayscale and size change."""

    name: str
    codec: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...] = ()
    gray: bool = False
    size_delta: int = 0  # pixels added to width and height (-1: one pixel smaller each way)


REENCODINGS: tuple[Reencoding, ...] = (
    Reencoding("h264_crf16", "libx264", "yuv420p", (("crf", "16"), ("preset", "veryfast"))),
    Reencoding("h264_crf30", "libx264", "yuv420p", (("crf", "30"), ("preset", "veryfast"))),
    Reencoding("hevc_10bit", "libx265", "yuv420p10le",
               (("crf", "24"), ("preset", "ultrafast"), ("x265-params", "log-level=error:pools=1:frame-threads=1"))),
    Reencoding("vp9", "libvpx-vp9", "yuv420p",
               (("crf", "34"), ("b", "0"), ("deadline", "realtime"), ("cpu-used", "8"), ("threads", "1"))),
    Reencoding("grayscale", "libx264", "yuv420p", (("crf", "20"), ("preset", "veryfast")), gray=True),
    # odd sizes need a chroma plane of full size: 4:4:4
    Reencoding("size_minus_1px", "libx264", "yuv444p", (("crf", "20"), ("preset", "veryfast")), size_delta=-1),
)


def reencoding_available(r: Reencoding) -> str | None:
    """None when PyAV's FFmpeg has ``r``'s encoder, else the reason it is missing."""
    import av

    return None if r.codec in av.codecs_available else f"encoder {r.codec} not in this PyAV build"


def _reencoded_frame(bgr: np.ndarray, r: Reencoding, width: int, height: int) -> np.ndarray:
    if r.gray:
        g = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        bgr = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    if bgr.shape[:2] != (height, width):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(bgr)


def reencode_video(src: str, dst: str, r: Reencoding) -> int:
    """Decode ``src`` and encode every frame into ``dst`` (mp4) as ``r`` says, one frame per source frame at
    the source rate; returns the number of frames written."""
    import av

    n = 0
    with av.open(src) as inp, av.open(dst, "w") as out:
        vin = inp.streams.video[0]
        rate = vin.average_rate or vin.guessed_rate or 24
        width, height = vin.codec_context.width + r.size_delta, vin.codec_context.height + r.size_delta
        stream = out.add_stream(r.codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, r.pix_fmt
        stream.options = dict(r.options)
        stream.codec_context.time_base = 1 / stream.codec_context.framerate
        for frame in inp.decode(vin):
            bgr = _reencoded_frame(frame.to_ndarray(format="bgr24"), r, width, height)
            vf = av.VideoFrame.from_ndarray(bgr, format="bgr24")
            vf.pts, vf.time_base = n, stream.codec_context.time_base
            out.mux(stream.encode(vf))
            n += 1
        out.mux(stream.encode(None))
    return n
