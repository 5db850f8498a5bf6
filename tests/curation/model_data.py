"""Generated inputs for the model-stage tests: keyframes with known text, clips tables, tiny models."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from curation.lake import KeyedWriter, Lake
from curation.synth.degrade import TEXT_POOL
from curation.synth.scenes import render_still
from curation.visual_text import draw_lines, find_font, load_font


def jpeg(frame_bgr: np.ndarray, quality: int = 85) -> bytes:
    return cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def text_frame(seed: int, width: int = 384, height: int = 216, n_lines: int | None = None,
               font_px: tuple[int, int] = (18, 28)) -> tuple[np.ndarray, list[str], float]:
    """A generated scene with subtitle-style English lines (light text, dark outline) at keyframe size.

    Returns the BGR frame after a JPEG round trip (as keyframes are stored), the lines, and the true text
    coverage: the union of the lines' ink boxes over the frame area."""
    rng = np.random.default_rng(seed)
    scene = render_still(int(rng.integers(1 << 30)), width, height)
    image = Image.fromarray(np.ascontiguousarray(scene[..., ::-1]))
    k = int(rng.integers(1, 3)) if n_lines is None else n_lines
    lines = [str(s) for s in rng.choice(TEXT_POOL, k, replace=False)]
    font = load_font(find_font("en"), int(rng.integers(*font_px)))
    boxes = draw_lines(image, lines, font, rng, fill=(250, 250, 250), stroke_width=2, stroke_fill=(10, 10, 10))
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = True
    frame = cv2.imdecode(np.frombuffer(jpeg(np.asarray(image)[..., ::-1]), np.uint8), cv2.IMREAD_COLOR)
    return frame, lines, float(mask.mean())


def plain_frame(seed: int, width: int = 384, height: int = 216) -> np.ndarray:
    return render_still(seed, width, height)


def write_clips(lake: Lake, keyframes: dict[str, list[bytes]]) -> None:
    """A ``clips`` table with one ok clip per entry (keyframes as given)."""
    rows = [{"clip_id": cid, "video_id": cid.split(":")[0], "uri": f"/media/{cid}.mp4", "media_type": "video",
             "start_frame": 0, "end_frame": 120, "fps": 24.0, "width": 384, "height": 216, "duration_s": 5.0,
             "keyframes": frames, "keyframe_indices": list(range(len(frames))), "status": "ok"}
            for cid, frames in keyframes.items()]
    KeyedWriter(lake, "clips").append(rows)


def scene_clips(n: int, seed: int = 0, corrupt: tuple[int, ...] = ()) -> dict[str, list[bytes]]:
    """``n`` clips of three keyframes each (generated scenes); clips listed in ``corrupt`` get a broken JPEG."""
    out = {}
    for i in range(n):
        frames = [jpeg(plain_frame(seed * 1000 + 10 * i + k)) for k in range(3)]
        if i in corrupt:
            frames[1] = frames[1][: len(frames[1]) // 3]  # truncated
        out[f"v{i:03d}:000000-000120"] = frames
    return out


def tiny_clip(root: Path) -> Path:
    from curation.models.clip import CONFIG_FILE, save_tiny_clip

    path = root / "tiny_clip"
    if not (path / CONFIG_FILE).exists():
        save_tiny_clip(path, seed=0)
    return path
