"""The visual-text branch (report section 3.1): text images for learning glyphs, and OCR text of real images.

Rendered branch: Chinese or English lines in black on a pure white background, one PNG per row of the
``image_text`` table with its text, line boxes, language and font. Rendering is deterministic per
``(language, seed, index)``, so a run split into shards, interrupted and resumed writes the same rows once each.

Real branch: clips whose OCR found text get an ``image_text`` row (source ``"ocr"``) holding their most text-covered
keyframe and the recognised lines; ``ocr_text_prior`` hands those lines to a captioner as a prior, so its
description quotes the text exactly (the report feeds OCR output to Qwen2-VL this way).

Fonts: Chinese needs a font with CJK glyphs. ``find_font`` tries, in order, an explicit path, the Noto Sans CJK
that the ``manimgx-fonts-cjk`` package ships, and system fonts (fontconfig, then ``/usr/share/fonts``). A script
with no font raises ``FontNotFoundError`` saying what to install.
"""
from __future__ import annotations

import functools
import glob
import io
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from curation.lake.schemas import STATUS_OK
from curation.lake.tables import Lake
from curation.stages.runner import Rows, StageResult, run_items

log = logging.getLogger(__name__)

LANGUAGES = ("zh", "en")
_PROBE = {"zh": "中文字体测试", "en": "Glyph test"}
_NOTDEF_PROBE = "\U0010fffd"  # a private-use code point no font here maps: renders as the font's .notdef box
_SYSTEM_CJK_PATTERNS = ("*CJK*", "*cjk*", "*wqy*", "*WenQuanYi*", "*DroidSansFallback*", "*uming*", "*ukai*",
                        "*SourceHan*", "*NotoSansSC*", "*NotoSerifSC*")
_SYSTEM_LATIN = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf")

# 120 common English words: enough variety for glyph and spacing statistics without shipping a corpus.
EN_WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "open city music river green market light winter summer garden coffee school street night morning station "
    "bridge window mountain ocean paper letter story house happy simple quiet bright travel"
).split()


class FontNotFoundError(FileNotFoundError):
    """No usable font has the glyphs of the requested script."""


@dataclass(frozen=True)
class FontSpec:
    """A font file (and face index in a collection) that covers a script."""

    path: str
    index: int = 0
    name: str = ""


def gb2312_level1() -> str:
    """The 3,755 most common simplified Chinese characters (GB2312 level 1), from Python's own codec."""
    chars = []
    for row in range(0xB0, 0xD8):
        for col in range(0xA1, 0xFF):
            if row == 0xD7 and col > 0xF9:
                break
            chars.append(bytes([row, col]).decode("gb2312"))
    return "".join(chars)


def load_font(spec: FontSpec, size: int) -> ImageFont.FreeTypeFont:
    """The font at ``size`` px; a variable font is set to its Regular instance (its default may be Thin)."""
    font = ImageFont.truetype(spec.path, size, index=spec.index)
    try:
        names = font.get_variation_names()
    except OSError:  # not a variable font
        return font
    if b"Regular" in names:
        font.set_variation_by_name("Regular")
    return font


def missing_glyphs(font: ImageFont.FreeTypeFont, text: str) -> list[str]:
    """Characters of ``text`` that ``font`` draws as its .notdef box (no glyph)."""
    notdef = np.asarray(font.getmask(_NOTDEF_PROBE))
    return [ch for ch in dict.fromkeys(text) if not ch.isspace()
            and np.array_equal(np.asarray(font.getmask(ch)), notdef)]


def _covers(spec: FontSpec, text: str) -> bool:
    try:
        return not missing_glyphs(load_font(spec, 24), text)
    except OSError:
        return False


def _collection_faces(path: str) -> list[FontSpec]:
    faces = []
    for i in range(16):
        try:
            family = ImageFont.truetype(path, 12, index=i).getname()[0] or ""
        except OSError:
            break
        faces.append(FontSpec(path, i, family))
    return faces


def _candidates(language: str) -> list[FontSpec]:
    found: list[FontSpec] = []
    if language == "en":  # a Latin design first; the CJK fonts below cover Latin too
        for name in _SYSTEM_LATIN:
            found += [FontSpec(p, 0, Path(p).stem) for p in sorted(glob.glob(f"/usr/share/fonts/**/{name}",
                                                                             recursive=True))]
    try:
        import manimgx_fonts_cjk

        for p in sorted(glob.glob(os.path.join(os.path.dirname(manimgx_fonts_cjk.__file__), "*.tt[cf]"))):
            faces = _collection_faces(p)
            # Simplified Chinese glyph forms first for Chinese text.
            found += sorted(faces, key=lambda f: (" SC" not in f.name, f.index))
    except ImportError:
        pass
    if language == "zh" and shutil.which("fc-list"):
        out = subprocess.run(["fc-list", ":lang=zh", "file", "index"], capture_output=True, text=True, timeout=30,
                             check=False)
        for line in out.stdout.splitlines():
            path, _, rest = line.partition(":")
            idx = rest.split("=")[-1].strip() if "index=" in rest else "0"
            found.append(FontSpec(path.strip(), int(idx) if idx.isdigit() else 0, Path(path).stem))
    for pattern in _SYSTEM_CJK_PATTERNS:
        for p in sorted(glob.glob(f"/usr/share/fonts/**/{pattern}", recursive=True)):
            if p.lower().endswith((".ttc", ".otc")):
                found += _collection_faces(p)
            elif p.lower().endswith((".ttf", ".otf")):
                found.append(FontSpec(p, 0, Path(p).stem))
    return found


@functools.lru_cache(maxsize=16)
def find_font(language: str, path: str | None = None) -> FontSpec:
    """A font covering ``language`` (``"zh"`` or ``"en"``): ``path`` when given (it must cover the script),
    else the first covering candidate. Raises ``FontNotFoundError`` when none exists."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; known: {list(LANGUAGES)}")
    probe = _PROBE[language]
    if path is not None:
        if not os.path.isfile(path):
            raise FontNotFoundError(f"font file not found: {path}")
        for spec in _collection_faces(path) or [FontSpec(path)]:
            if _covers(spec, probe):
                return spec
        raise FontNotFoundError(f"font {path} has no glyphs for {language!r} text ({probe!r})")
    for spec in _candidates(language):
        if _covers(spec, probe):
            return spec
    hint = ("pip install manimgx-fonts-cjk (Noto Sans CJK), or apt-get install fonts-noto-cjk, or pass a font "
            "path" if language == "zh" else "apt-get install fonts-dejavu-core, or pass a font path")
    raise FontNotFoundError(f"no installed font has glyphs for {language!r} text: {hint}")


def random_line(language: str, rng: np.random.Generator) -> str:
    """One line of text: 2-12 common Chinese characters, or 1-4 common English words."""
    if language == "zh":
        chars = _gb2312_cached()
        return "".join(chars[i] for i in rng.integers(0, len(chars), int(rng.integers(2, 13))))
    words = [EN_WORDS[i] for i in rng.integers(0, len(EN_WORDS), int(rng.integers(1, 5)))]
    if rng.random() < 0.5:
        words[0] = words[0].capitalize()
    return " ".join(words)


@functools.lru_cache(maxsize=1)
def _gb2312_cached() -> str:
    return gb2312_level1()


Box = tuple[int, int, int, int]


def draw_lines(image: Image.Image, lines: list[str], font: ImageFont.FreeTypeFont, rng: np.random.Generator,
               fill: tuple[int, int, int] = (0, 0, 0), stroke_width: int = 0,
               stroke_fill: tuple[int, int, int] | None = None, margin: int = 8) -> list[Box]:
    """Draw ``lines`` top to bottom at random left offsets, each fully inside ``image``; returns each line's ink
    box ``(x0, y0, x1, y1)`` (exclusive ends). Raises ``ValueError`` when the lines do not fit."""
    draw = ImageDraw.Draw(image)
    w, h = image.size
    boxes = [draw.textbbox((0, 0), line, font=font, stroke_width=stroke_width) for line in lines]
    heights = [b[3] - b[1] for b in boxes]
    gap = max(4, int(font.size * 0.5))
    total = sum(heights) + gap * (len(lines) - 1)
    if total > h - 2 * margin or any(b[2] - b[0] > w - 2 * margin for b in boxes):
        raise ValueError(f"text does not fit a {w}x{h} image at {font.size}px")
    y = margin + int(rng.integers(0, h - 2 * margin - total + 1))
    out = []
    for line, (bx0, by0, bx1, by1) in zip(lines, boxes):
        x = margin + int(rng.integers(0, w - 2 * margin - (bx1 - bx0) + 1)) - bx0
        draw.text((x, y - by0), line, font=font, fill=fill, stroke_width=stroke_width, stroke_fill=stroke_fill)
        ink = draw.textbbox((x, y - by0), line, font=font, stroke_width=stroke_width)
        out.append((int(ink[0]), int(ink[1]), int(np.ceil(ink[2])), int(np.ceil(ink[3]))))
        y += by1 - by0 + gap
    return out


@dataclass(frozen=True)
class RenderSettings:
    """Size and layout of rendered text images (picklable: sent to every worker)."""

    width: int = 512
    height: int = 256
    min_font_px: int = 24
    max_font_px: int = 56
    max_lines: int = 3
    font_path: str | None = None


def render_text_image(language: str, seed: int, index: int, settings: RenderSettings,
                      lines: list[str] | None = None) -> dict[str, Any]:
    """One ``image_text`` row: ``lines`` (random common words/characters when None) in black on white."""
    spec = find_font(language, settings.font_path)
    rng = np.random.default_rng([seed, LANGUAGES.index(language), index])
    if lines is None:
        lines = [random_line(language, rng) for _ in range(int(rng.integers(1, settings.max_lines + 1)))]
    size = int(rng.integers(settings.min_font_px, settings.max_font_px + 1))
    while True:  # shrink until the block fits
        font = load_font(spec, size)
        if missing := missing_glyphs(font, "".join(lines)):
            raise ValueError(f"font {spec.path} has no glyph for {missing[:5]}")
        image = Image.new("RGB", (settings.width, settings.height), (255, 255, 255))
        try:
            boxes = draw_lines(image, lines, font, rng)
            break
        except ValueError:
            if size <= 8:
                raise
            size = max(8, int(size * 0.85))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"image_id": f"{language}-{seed}-{index:09d}", "source": "rendered", "image": buf.getvalue(),
            "text": "\n".join(lines), "lines": lines, "line_boxes": [list(b) for b in boxes], "language": language,
            "font": f"{Path(spec.path).name}#{spec.index}", "width": settings.width, "height": settings.height,
            "text_coverage": _box_union_fraction(boxes, settings.width, settings.height)}


def _box_union_fraction(boxes: list[Box], width: int, height: int) -> float:
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
    return float(mask.mean())


def _render_shard(item: dict[str, Any], settings: RenderSettings) -> Rows:
    lines_list = item.get("lines")
    rows = []
    for k, index in enumerate(item["indices"]):
        lines = lines_list[k] if lines_list else None
        rows.append(render_text_image(item["language"], item["seed"], index, settings, lines))
    return {"image_text": rows}


def _shard_error(item: dict[str, Any], message: str) -> Rows:
    log.error("text rendering failed for %s indices %s..: %s", item["language"], item["indices"][:3], message)
    return {"image_text": []}


def render_image_text(lake: Lake, language: str, count: int, seed: int = 0, settings: RenderSettings | None = None,
                      texts: list[list[str]] | None = None, shard_size: int = 64, **exec_kwargs: Any) -> StageResult:
    """Render ``count`` text images (or one per entry of ``texts``, each a list of lines) into ``image_text``.
    Resumable: indices already in the table are skipped. ``exec_kwargs`` go to ``run_items``
    (``backend``, ``concurrency``...)."""
    settings = settings or RenderSettings()
    find_font(language, settings.font_path)  # fail before any work when the script has no font
    if texts is not None:
        count = len(texts)
    done = lake.keys("image_text")
    todo = [i for i in range(count) if f"{language}-{seed}-{i:09d}" not in done]
    items = []
    for start in range(0, len(todo), shard_size):
        idx = todo[start:start + shard_size]
        items.append({"language": language, "seed": seed, "indices": idx,
                      "lines": [texts[i] for i in idx] if texts is not None else None})
    table = pa.Table.from_pylist(items) if items else pa.table({"language": pa.array([], pa.string())})
    exec_kwargs.setdefault("items_per_task", 1)
    return run_items("visual_text", table, functools.partial(_render_shard, settings=settings), _shard_error, lake,
                     ["image_text"], **exec_kwargs)


def detect_language(text: str) -> str:
    """``"zh"`` when ``text`` holds a CJK ideograph, else ``"en"``."""
    return "zh" if any("\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" for ch in text) else "en"


def attach_ocr_text(lake: Lake, min_coverage: float = 0.0) -> int:
    """Write an ``image_text`` row (source ``"ocr"``) for every clip whose OCR found text covering more than
    ``min_coverage`` of a keyframe: its most text-covered keyframe and the recognised lines. Returns rows written."""
    from curation.lake.tables import KeyedWriter

    if not lake.exists("stages/ocr"):
        raise RuntimeError("the real-image text branch needs the 'ocr' stage's table: run stage 'ocr' first")
    ocr = lake.read("stages/ocr", columns=["clip_id", "texts", "text_coverages", "text_coverage_max"],
                    filter=f"status = '{STATUS_OK}'")
    writer = KeyedWriter(lake, "image_text")
    wanted = {r["clip_id"]: r for r in ocr.to_pylist()
              if r["texts"] and (r["text_coverage_max"] or 0.0) > min_coverage and r["clip_id"] not in writer}
    if not wanted:
        return 0
    clips = lake.read("clips", columns=["clip_id", "keyframes"], filter=f"status = '{STATUS_OK}'")
    rows = []
    for cid, frames in zip(clips.column("clip_id").to_pylist(), clips.column("keyframes").to_pylist()):
        r = wanted.get(cid)
        if r is None or not frames:
            continue
        k = int(np.argmax(r["text_coverages"])) if r["text_coverages"] else 0
        image = frames[min(k, len(frames) - 1)]
        with Image.open(io.BytesIO(image)) as im:
            width, height = im.size
        text = "\n".join(r["texts"])
        rows.append({"image_id": cid, "source": "ocr", "image": image, "text": text, "lines": r["texts"],
                     "language": detect_language(text), "width": width, "height": height, "clip_id": cid,
                     "text_coverage": r["text_coverage_max"]})
    return writer.append(rows)


def ocr_text_prior(lake: Lake, clip_ids: list[str] | None = None) -> dict[str, list[str]]:
    """``{clip_id: recognised lines}`` for clips whose OCR found text: the captioner's prior."""
    if not lake.exists("stages/ocr"):
        return {}
    t = lake.read("stages/ocr", columns=["clip_id", "texts"], filter=f"status = '{STATUS_OK}'")
    wanted = None if clip_ids is None else set(clip_ids)
    return {c: list(x) for c, x in zip(t.column("clip_id").to_pylist(), t.column("texts").to_pylist())
            if x and (wanted is None or c in wanted)}


def format_text_prior(lines: list[str]) -> str:
    """A prompt fragment asking a captioner to quote the recognised text exactly ("" when there is none)."""
    if not lines:
        return ""
    quoted = ", ".join(f'"{line}"' for line in lines)
    return f"The image contains the text {quoted}. Quote it exactly in the description."
