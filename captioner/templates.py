"""Instruction templates for the captioner: image vs video captions, and OCR-prior captions for the visual-text
branch of section 3.1 (OCR text is given to the captioner as prior knowledge so the caption quotes it exactly).

``PROMPT_VERSION`` names the template set; it ends in a hash of the template texts, so any edit to a template
gives a new version and a ``captions`` row always says which prompts produced it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

IMAGE_CAPTION = ("Describe this image in detail: the main objects, their colours, shapes and number, the scene, "
                 "the camera angle, the style and any visible text.")
VIDEO_CAPTION = ("Describe this video in detail: the main objects, their colours, shapes and number, how they move, "
                 "the camera angle and camera motion, the scene, the style, the events and any visible text.")
OCR_PRIOR = ("An OCR model read this text in the {media}: {texts}. Describe the {media} in detail and quote the "
             "text exactly as written.")
TEMPLATES: dict[str, str] = {"image": IMAGE_CAPTION, "video": VIDEO_CAPTION, "ocr_prior": OCR_PRIOR}

_TEMPLATE_HASH = hashlib.sha1("\n".join(f"{k}={v}" for k, v in sorted(TEMPLATES.items())).encode()).hexdigest()[:8]
PROMPT_VERSION = f"caption-v1-{_TEMPLATE_HASH}"

MAX_OCR_TEXTS = 20
MAX_OCR_CHARS = 400


def instruction_for(media_type: str, ocr_texts: Sequence[str] | None = None) -> str:
    """The captioning instruction for an ``image`` or ``video``; with OCR strings, the OCR-prior instruction.

    OCR strings are stripped, de-duplicated (order kept), quoted and capped (``MAX_OCR_TEXTS`` strings,
    ``MAX_OCR_CHARS`` characters, each string at most a quarter of that) so a text-heavy frame cannot blow up
    the prompt.
    """
    if media_type not in ("image", "video"):
        raise ValueError(f"media_type must be 'image' or 'video', got {media_type!r}")
    texts = [t.strip() for t in (ocr_texts or []) if t and t.strip()]
    if not texts:
        return TEMPLATES[media_type]
    quoted = ""
    for text in list(dict.fromkeys(texts))[:MAX_OCR_TEXTS]:
        piece = '"' + text[:MAX_OCR_CHARS // 4].replace('"', "'") + '"'
        if quoted and len(quoted) + 2 + len(piece) > MAX_OCR_CHARS:
            break
        quoted = f"{quoted}, {piece}" if quoted else piece
    return OCR_PRIOR.format(media=media_type, texts=quoted)
