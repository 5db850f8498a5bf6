"""Probing media files: content hash, container sniffing and stream metadata, with errors that say what is wrong."""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import av
import cv2
import numpy as np

from curation.media.remote import local_copy

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS

# Magic numbers of image formats: content that is an image whatever the file is called.
_IMAGE_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}


# Images whose header claims more pixels than this are refused before any decoding (a decompression bomb: a few
# bytes that expand to gigabytes). 2**27 is about 11585 x 11585, far above any training resolution (Pillow itself
# refuses headers over 2 x its MAX_IMAGE_PIXELS, about 179 M pixels, with its own message).
MAX_IMAGE_PIXELS = 1 << 27

# EXIF orientation -> degrees counter-clockwise that make the stored picture upright (mirrored ones as their turn).
_EXIF_ROTATION = {1: 0, 2: 0, 3: 180, 4: 180, 5: 270, 6: 270, 7: 90, 8: 90}


class MediaError(Exception):
    """A file that cannot be used, with a message fit for the ``error`` column."""


@dataclass(frozen=True)
class ProbeResult:
    media_type: str  # "video" | "image"
    container: str
    codec: str
    fps: float
    width: int
    height: int
    num_frames: int
    duration_s: float
    # Degrees counter-clockwise the decoded picture is turned to display it (0, 90, 180, 270); ``width`` and
    # ``height`` are the displayed size (swapped from the coded size at 90 and 270).
    rotation: int = 0


def content_hash(path: str, chunk_bytes: int = 1 << 20) -> str:
    """128-bit BLAKE2b of the file's bytes, hex: the ``video_id``."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def sniff_image_format(head: bytes) -> str | None:
    """Image format named by the first bytes, or None."""
    for magic, name in _IMAGE_MAGIC.items():
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def probe(path: str, min_side: int = 16) -> ProbeResult:
    """Metadata of an image or video file; raises ``MediaError`` naming the problem.

    A video must open, hold a video stream, be at least ``min_side`` pixels on each side and decode its first
    frame. The extension must agree with the content (an image named ``.mp4`` is rejected, not guessed).
    """
    check_exists(path)
    size = os.path.getsize(path)
    if size == 0:
        raise MediaError("empty file (0 bytes)")
    ext = os.path.splitext(path)[1].lower()
    with open(path, "rb") as f:
        head = f.read(32)
    image_format = sniff_image_format(head)
    if ext in VIDEO_EXTENSIONS and image_format is not None:
        raise MediaError(f"content is a {image_format.upper()} image but the extension {ext} says video")
    if ext in IMAGE_EXTENSIONS or image_format is not None:
        if image_format is None:
            raise MediaError(f"extension {ext} says image but the content is not a known image format")
        return _probe_image(path, image_format, min_side)
    return _probe_video(path, min_side)


def check_exists(path: str) -> None:
    """``MediaError`` for a missing file, naming a dangling symbolic link as such."""
    if os.path.exists(path):
        return
    if os.path.islink(path):
        raise MediaError(f"dangling symbolic link: its target {os.readlink(path)!r} does not exist")
    raise MediaError("file not found")


def _probe_image(path: str, image_format: str, min_side: int) -> ProbeResult:
    rotation = image_header(path)[2]
    image = read_image(path)
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise MediaError(f"resolution {w}x{h} below the minimum side of {min_side} px")
    return ProbeResult("image", image_format, image_format, 0.0, w, h, 1, 0.0, rotation)


def image_header(path: str) -> tuple[int, int, int]:
    """Stored width, height and EXIF rotation (degrees counter-clockwise) read from the header alone; a header
    claiming more than ``MAX_IMAGE_PIXELS`` pixels is a ``MediaError`` (decompression bomb), before decoding."""
    from PIL import Image, UnidentifiedImageError  # Pillow reads headers lazily (a dependency of diffusers)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below decides
            with Image.open(path) as im:
                (w, h), orientation = im.size, im.getexif().get(274, 1)
    except Image.DecompressionBombError as e:
        raise MediaError(f"decompression bomb: {e}") from e
    except UnidentifiedImageError:
        return 0, 0, 0  # a format Pillow does not know: OpenCV decides (and has its own pixel limit)
    except (OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"image header does not parse: {e}") from e
    if w * h > MAX_IMAGE_PIXELS:
        raise MediaError(f"decompression bomb: header claims {w}x{h} = {w * h} pixels, more than the limit of "
                         f"{MAX_IMAGE_PIXELS}")
    return w, h, _EXIF_ROTATION.get(orientation, 0)


def read_image(path: str) -> np.ndarray:
    """BGR uint8 image, upright by its EXIF orientation; ``MediaError`` when it does not decode or its header
    claims too many pixels."""
    with local_copy(path) as local:  # an object-store URI is read from a temporary copy
        image_header(local)
        data = np.fromfile(local, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise MediaError("image does not decode (corrupt or unsupported)")
    return image


def open_video(path: str) -> tuple[av.container.InputContainer, av.VideoStream, float]:
    """Open a container and its first video stream; ``MediaError`` when there is none or it has no frame rate.
    The caller closes the container (``with container:``)."""
    try:
        with local_copy(path) as local:  # an object-store URI: FFmpeg keeps the temporary copy open
            container = av.open(local)
    except av.FFmpegError as e:
        raise MediaError(f"cannot open as a media container: {e}") from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise MediaError(f"no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    if not fps > 0:
        container.close()
        raise MediaError("video stream has no frame rate")
    return container, stream, fps


def display_rotation(frame: av.VideoFrame, stream: av.VideoStream) -> int:
    """Degrees counter-clockwise (0, 90, 180 or 270) that turn a decoded frame upright for display: the frame's
    display matrix (FFmpeg copies the container's to every frame), else the stream's legacy ``rotate`` tag
    (clockwise degrees). Angles between multiples of 90 are rounded to the nearest one."""
    degrees = float(frame.rotation)
    if degrees == 0 and stream.metadata.get("rotate"):
        try:
            degrees = -float(stream.metadata["rotate"])
        except ValueError:
            degrees = 0.0
    return int(round(degrees / 90.0)) % 4 * 90


def _probe_video(path: str, min_side: int) -> ProbeResult:
    container, stream, fps = open_video(path)
    with container:
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if min(width, height) < min_side:
            raise MediaError(f"resolution {width}x{height} below the minimum side of {min_side} px")
        duration_s = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / av.time_base
        num_frames = int(stream.frames) if stream.frames else int(round(duration_s * fps))
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as e:
            raise MediaError(f"first frame does not decode: {e}") from e
        if first is None:
            raise MediaError("video stream holds no decodable frame")
        rotation = display_rotation(first, stream)
        if rotation in (90, 270):
            width, height = height, width
        fmt = container.format.name.split(",")[0]
        return ProbeResult("video", fmt, ctx.name, fps, width, height, num_frames, duration_s or num_frames / fps,
                           rotation)
