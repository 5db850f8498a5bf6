"""Images and videos + an instruction -> model inputs. Shared by every backend (transformers, vLLM) and training.

Token layout (what the LLM sees; ``P = pool_grid**2`` = 144 tokens per pooled view)
---------------------------------------------------------------------------------
The prompt is Qwen's chat format, with one media item in the user turn::

    <|im_start|>system\\n{system_prompt}<|im_end|>\\n
    <|im_start|>user\\n<|vision_start|>{MEDIA}<|vision_end|>\\n{instruction}<|im_end|>\\n
    <|im_start|>assistant\\n

``prompt_ids`` returns the *collapsed* prompt, where ``{MEDIA}`` is a single ``<|image_pad|>`` or
``<|video_pad|>``; ``expand_placeholders`` replaces that one token by the item's full run
(``media_placeholder_ids``), which is exactly the replacement a vLLM ``PromptReplacement`` must produce:

- image with a ``rows x cols`` tile grid: ``<|image_pad|> * P * (rows*cols + 1)``; the views are the tiles in
  row-major order, then the global (whole-image) view;
- video with ``n`` sampled frames: for each frame ``i``: ``<|frame_sep|>`` then ``<|video_pad|> * P`` when
  ``i % slow_stride == 0`` (a slow frame) else one ``<|video_pad|>`` (a fast frame).

Only pad tokens receive visual embeddings (in order: view by view, row-major 12x12 within a view; frame by frame
for videos); ``<|frame_sep|>``, ``<|vision_start|>`` and ``<|vision_end|>`` are ordinary embedded tokens, so
the LLM sees where each frame starts and in which order the frames come. Counts (pure functions below):

- ``image_token_count(grid) = P * (rows*cols + 1)``  (tiles x 144 + 144 for the global view)
- ``video_token_count(n) = P * slow + fast`` with ``slow = ceil(n / slow_stride)``, ``fast = n - slow``
- the placeholder run of a video is ``video_token_count(n) + n`` tokens long (one separator per frame); every
  item adds ``<|vision_start|>`` and ``<|vision_end|>`` (2 tokens) around its run.

Tiling (``select_tile_grid``) follows InternVL's dynamic resolution: among grids with at most ``max_tiles``
tiles, the one whose aspect ratio is closest to the image's; on a tie, the larger grid when the image has more
than half of its pixels. Frames are sampled at ``sample_fps`` (3 per second) from the clip start; more than
``max_frames`` (129) are thinned uniformly over the whole clip (first and last kept). Video frames are resized
to one ``tile x tile`` view each (no tiling). Pixels: RGB, resized with OpenCV (area filter when shrinking,
bilinear when enlarging), scaled to [0, 1] and normalised with the config's mean/std.

Numpy inputs are RGB unless ``channels="bgr"`` (the ``curation`` convention) is given; JPEG/PNG bytes and
paths are decoded with OpenCV. Every bad input raises ``CaptionInputError`` (a ``ValueError``) with a message
that says what was wrong, so batch jobs can record it and go on. The inputs and pixel steps live in
``captioner.media`` (re-exported here); this module keeps the token layout, the processor and batching.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from captioner.config import (
    IM_END,
    IM_START,
    IMAGE_TOKEN,
    SPECIAL_TOKENS,
    VIDEO_TOKEN,
    VISION_END,
    VISION_START,
    SlowFastCaptionerConfig,
)

# media inputs and pixel steps live in captioner.media; re-exported here, where callers have always found them
from captioner.media import (  # noqa: F401
    CaptionInputError,
    ImageInput,
    ImageSource,
    MediaInput,
    VideoInput,
    decode_image,
    fit_aspect_ratio,
    image_views,
    normalize,
    resize,
)

IGNORE_INDEX = -100  # label of every non-caption token


# ---------------------------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class ImageLayout:
    """How an image became visual tokens: its tile grid (the global view is always added)."""

    rows: int
    cols: int
    tokens_per_view: int
    padded: bool = False  # padded to the maximum aspect ratio
    kind: Literal["image"] = "image"

    @property
    def num_views(self) -> int:
        return self.rows * self.cols + 1

    @property
    def num_visual_tokens(self) -> int:
        return self.num_views * self.tokens_per_view


@dataclass(frozen=True)
class VideoLayout:
    """How a video became visual tokens: the sampled frame indices/times and the slow-frame stride."""

    frame_indices: tuple[int, ...]
    frame_times: tuple[float, ...]
    tokens_per_view: int
    slow_stride: int
    kind: Literal["video"] = "video"

    @property
    def num_views(self) -> int:
        return len(self.frame_indices)

    @property
    def slow_mask(self) -> list[bool]:
        return slow_frame_mask(self.num_views, self.slow_stride)

    @property
    def num_visual_tokens(self) -> int:
        return video_token_count(self.num_views, self.slow_stride, self.tokens_per_view)


MediaLayout = ImageLayout | VideoLayout


# ------------------------------------------------------------------------------------- token accounting
def tile_grids(max_tiles: int) -> list[tuple[int, int]]:
    """Every ``(rows, cols)`` with ``rows * cols <= max_tiles``, fewest tiles first (then fewer rows)."""
    grids = [(r, c) for r in range(1, max_tiles + 1) for c in range(1, max_tiles + 1) if r * c <= max_tiles]
    return sorted(grids, key=lambda g: (g[0] * g[1], g[0]))


def select_tile_grid(width: int, height: int, tile_size: int, max_tiles: int = 7) -> tuple[int, int]:
    """The ``(rows, cols)`` tile grid for a ``width x height`` image (InternVL's ``find_closest_aspect_ratio``).

    The grid whose ``cols / rows`` is closest to ``width / height``; among equally close grids, a larger one
    replaces a smaller one only when the image has more than half the grid's pixels (so small images are not
    blown up into many tiles).
    """
    if width <= 0 or height <= 0:
        raise CaptionInputError(f"image has an empty side: {width}x{height}")
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), math.inf
    for rows, cols in tile_grids(max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (rows, cols), diff
        elif diff == best_diff and area > 0.5 * tile_size * tile_size * rows * cols:
            best = (rows, cols)
    return best


def image_token_count(grid: tuple[int, int], tokens_per_view: int = 144) -> int:
    """Visual tokens of an image with a ``(rows, cols)`` grid: tiles x 144 + 144 for the global view."""
    rows, cols = grid
    return (rows * cols + 1) * tokens_per_view


def slow_frame_mask(num_frames: int, slow_stride: int = 4) -> list[bool]:
    """True for slow frames (every ``slow_stride``-th sampled frame, starting with the first)."""
    return [i % slow_stride == 0 for i in range(num_frames)]


def video_token_count(num_frames: int, slow_stride: int = 4, tokens_per_view: int = 144) -> int:
    """Visual tokens of a video with ``num_frames`` sampled frames: slow x 144 + fast x 1."""
    slow = -(-num_frames // slow_stride)
    return slow * tokens_per_view + (num_frames - slow)


def video_placeholder_length(num_frames: int, slow_stride: int = 4, tokens_per_view: int = 144) -> int:
    """Length of a video's placeholder run: its visual tokens plus one ``<|frame_sep|>`` per frame."""
    return video_token_count(num_frames, slow_stride, tokens_per_view) + num_frames


def sample_frame_times(timestamps: Sequence[float], sample_fps: float = 3.0, max_frames: int = 129,
                       duration: float | None = None) -> list[int]:
    """Indices of the frames to keep from frames shown at ``timestamps`` (seconds, non-decreasing).

    For every grid time ``t_k = k / sample_fps`` (from the first timestamp) before the clip's end (``duration``
    after the first timestamp; default: the last timestamp, inclusive), the frame on screen at ``t_k`` (the last
    one shown at or before it) is taken, once. Sources slower than ``sample_fps`` keep every frame. More than
    ``max_frames`` are thinned uniformly over the clip, keeping the first and the last.
    """
    times = np.asarray(timestamps, dtype=np.float64)
    if times.size == 0:
        raise CaptionInputError("video has no frames")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        raise CaptionInputError("video frame timestamps must be finite and non-decreasing")
    rel = times - times[0]
    if duration is None:
        steps = int(math.floor(rel[-1] * sample_fps + 1e-6)) + 1
    else:
        steps = max(1, int(math.ceil(duration * sample_fps - 1e-6)))
    grid = np.arange(steps) / sample_fps
    picked = np.searchsorted(rel, grid + 1e-6, side="right") - 1
    picked = np.unique(np.clip(picked, 0, times.size - 1))
    if picked.size > max_frames:
        keep = np.round(np.linspace(0, picked.size - 1, max_frames)).astype(np.int64)
        picked = picked[keep]
    return picked.tolist()


def sample_frame_indices(num_frames: int, fps: float, sample_fps: float = 3.0, max_frames: int = 129) -> list[int]:
    """Indices sampled from ``num_frames`` evenly spaced frames at ``fps`` (a clip of ``num_frames / fps`` s)."""
    if num_frames <= 0:
        raise CaptionInputError("video has no frames")
    if not (fps > 0 and math.isfinite(fps)):
        raise CaptionInputError(f"video fps must be positive, got {fps}")
    return sample_frame_times(np.arange(num_frames) / fps, sample_fps, max_frames, duration=num_frames / fps)


def media_placeholder_ids(layout: MediaLayout, config: SlowFastCaptionerConfig) -> list[int]:
    """The token run that replaces an item's single pad token in the collapsed prompt (see module docs)."""
    if isinstance(layout, ImageLayout):
        return [config.image_token_id] * layout.num_visual_tokens
    run: list[int] = []
    for slow in layout.slow_mask:
        run.append(config.frame_token_id)
        run.extend([config.video_token_id] * (layout.tokens_per_view if slow else 1))
    return run


def expand_placeholders(ids: Sequence[int], layouts: Sequence[MediaLayout],
                        config: SlowFastCaptionerConfig) -> list[int]:
    """Replace each single ``<|image_pad|>`` / ``<|video_pad|>`` of a collapsed prompt by its item's run."""
    out: list[int] = []
    pending = list(layouts)
    for token in ids:
        if token in (config.image_token_id, config.video_token_id):
            if not pending:
                raise CaptionInputError("prompt has more media placeholders than media items")
            layout = pending.pop(0)
            expected = config.image_token_id if layout.kind == "image" else config.video_token_id
            if token != expected:
                raise CaptionInputError(f"placeholder token {token} does not match a {layout.kind} item")
            out.extend(media_placeholder_ids(layout, config))
        else:
            out.append(token)
    if pending:
        raise CaptionInputError(f"{len(pending)} media item(s) have no placeholder in the prompt")
    return out




# --------------------------------------------------------------------------------------------- processor
@dataclass
class ProcessedSample:
    """One prompt (+ optional target) ready for the model."""

    input_ids: list[int]
    labels: list[int] | None
    pixel_values: torch.Tensor | None  # (V, 3, S, S): every view of every item, in prompt order
    layouts: list[MediaLayout] = field(default_factory=list)

    @property
    def num_visual_tokens(self) -> int:
        return sum(layout.num_visual_tokens for layout in self.layouts)


@dataclass
class CaptionerBatch:
    """Padded samples: what ``SlowFastCaptioner.forward`` / ``generate`` take."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor | None
    pixel_values: torch.Tensor | None  # (sum V, 3, S, S)
    layouts: list[MediaLayout]  # every item of every sample, in batch then prompt order

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> CaptionerBatch:
        pixels = None if self.pixel_values is None else self.pixel_values.to(device, dtype or torch.float32)
        labels = None if self.labels is None else self.labels.to(device)
        return CaptionerBatch(self.input_ids.to(device), self.attention_mask.to(device), labels, pixels,
                              self.layouts)


class CaptionProcessor:
    """Turns (media, instruction[, target caption]) into ``ProcessedSample``s and batches them.

    ``tokenizer`` is any Hugging Face tokenizer holding the ``SPECIAL_TOKENS``; ``config`` is the model's config
    (token ids and pre-processing settings).
    """

    def __init__(self, config: SlowFastCaptionerConfig, tokenizer) -> None:
        missing = config.missing_token_ids()
        if missing:
            raise ValueError(f"config lacks special token ids {missing}; build it with resolve_token_ids")
        self.config = config
        self.tokenizer = tokenizer
        self.tile = config.tile_size
        self.tokens_per_view = config.tokens_per_view
        self.pad_fill = [int(round(m * 255)) for m in config.image_mean]  # normalises to 0

    # ---- layouts and pixels
    def image_layout_and_pixels(self, item: ImageInput) -> tuple[ImageLayout, torch.Tensor]:
        """Decode, pad or reject an extreme aspect ratio, tile, normalise."""
        rgb = decode_image(item.image, item.channels)
        rgb, padded = fit_aspect_ratio(rgb, self.config.max_aspect_ratio, self.config.aspect_policy,
                                       self.pad_fill)
        height, width = rgb.shape[:2]
        grid = select_tile_grid(width, height, self.tile, self.config.max_tiles)
        layout = ImageLayout(grid[0], grid[1], self.tokens_per_view, padded)
        views = image_views(rgb, grid, self.tile)
        return layout, normalize(views, self.config.image_mean, self.config.image_std)

    def video_layout_and_pixels(self, item: VideoInput) -> tuple[VideoLayout, torch.Tensor]:
        """Sample at ``sample_fps`` (at most ``max_frames``), decode the sampled frames, resize, normalise."""
        frames = item.frames
        count = int(frames.shape[0]) if isinstance(frames, np.ndarray) else len(frames)
        if isinstance(frames, np.ndarray) and frames.ndim != 4:
            raise CaptionInputError(f"video array must be (T, H, W, 3), got shape {tuple(frames.shape)}")
        if item.timestamps is not None:
            times = [float(t) for t in item.timestamps]
            if len(times) != count:
                raise CaptionInputError(f"video has {count} frames but {len(times)} timestamps")
            indices = sample_frame_times(times, self.config.sample_fps, self.config.max_frames)
        elif item.fps is not None:
            indices = sample_frame_indices(count, float(item.fps), self.config.sample_fps, self.config.max_frames)
            times = [i / float(item.fps) for i in range(count)]
        else:
            raise CaptionInputError("video needs fps or timestamps")
        views = [resize(decode_image(frames[i], item.channels), self.tile, self.tile) for i in indices]
        layout = VideoLayout(tuple(indices), tuple(times[i] - times[0] for i in indices), self.tokens_per_view,
                             self.config.slow_stride)
        return layout, normalize(views, self.config.image_mean, self.config.image_std)

    def layout_and_pixels(self, item: MediaInput) -> tuple[MediaLayout, torch.Tensor]:
        if isinstance(item, ImageInput):
            return self.image_layout_and_pixels(item)
        if isinstance(item, VideoInput):
            return self.video_layout_and_pixels(item)
        raise CaptionInputError(f"media must be ImageInput or VideoInput, got {type(item).__name__}")

    # ---- text
    def check_instruction(self, instruction: str) -> str:
        if not isinstance(instruction, str) or not instruction.strip():
            raise CaptionInputError("instruction is empty")
        for token in SPECIAL_TOKENS:
            if token in instruction:
                raise CaptionInputError(f"instruction contains the reserved token {token!r}")
        return instruction.strip()

    def prompt_text(self, instruction: str, media_kinds: Sequence[str]) -> str:
        """The collapsed prompt as text: one pad token per media item (see module docs)."""
        instruction = self.check_instruction(instruction)
        media = "".join(f"{VISION_START}{IMAGE_TOKEN if k == 'image' else VIDEO_TOKEN}{VISION_END}\n"
                        for k in media_kinds)
        return (f"{IM_START}system\n{self.config.system_prompt}{IM_END}\n"
                f"{IM_START}user\n{media}{instruction}{IM_END}\n{IM_START}assistant\n")

    def prompt_ids(self, instruction: str, media_kinds: Sequence[str]) -> list[int]:
        """Token ids of the collapsed prompt."""
        return list(self.tokenizer(self.prompt_text(instruction, media_kinds), add_special_tokens=False)["input_ids"])

    def target_ids(self, caption: str) -> list[int]:
        """Token ids of a reference caption, ended by ``<|im_end|>`` (the model learns to stop)."""
        if not isinstance(caption, str) or not caption.strip():
            raise CaptionInputError("target caption is empty")
        ids = list(self.tokenizer(caption.strip(), add_special_tokens=False)["input_ids"])
        return ids + [self.config.im_end_token_id]

    # ---- samples and batches
    def __call__(self, media: MediaInput | Sequence[MediaInput] | None, instruction: str,
                 target: str | None = None) -> ProcessedSample:
        """One sample: the expanded prompt ids (+ caption ids and labels when ``target`` is given) and pixels."""
        items = [] if media is None else ([media] if isinstance(media, (ImageInput, VideoInput)) else list(media))
        collapsed = self.prompt_ids(instruction, ["image" if isinstance(m, ImageInput) else "video" for m in items])
        layouts, pixels = [], []
        for item in items:
            layout, px = self.layout_and_pixels(item)
            layouts.append(layout)
            pixels.append(px)
        ids = expand_placeholders(collapsed, layouts, self.config)
        labels = None
        if target is not None:
            target_ids = self.target_ids(target)
            labels = [IGNORE_INDEX] * len(ids) + target_ids
            ids = ids + target_ids
        return ProcessedSample(ids, labels, torch.cat(pixels) if pixels else None, layouts)

    def collate(self, samples: Sequence[ProcessedSample], padding_side: Literal["left", "right"] = "left"
                ) -> CaptionerBatch:
        """Pad to the longest sample: ``left`` for generation, ``right`` for training."""
        if not samples:
            raise ValueError("collate needs at least one sample")
        length = max(len(s.input_ids) for s in samples)
        pad = self.config.pad_token_id
        ids = torch.full((len(samples), length), pad, dtype=torch.long)
        mask = torch.zeros((len(samples), length), dtype=torch.long)
        with_labels = all(s.labels is not None for s in samples)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long) if with_labels else None
        for row, s in enumerate(samples):
            n = len(s.input_ids)
            span = slice(length - n, length) if padding_side == "left" else slice(0, n)
            ids[row, span] = torch.tensor(s.input_ids, dtype=torch.long)
            mask[row, span] = 1
            if labels is not None:
                labels[row, span] = torch.tensor(s.labels, dtype=torch.long)
        pixel_list = [s.pixel_values for s in samples if s.pixel_values is not None]
        pixels = torch.cat(pixel_list) if pixel_list else None
        return CaptionerBatch(ids, mask, labels, pixels, [lay for s in samples for lay in s.layouts])


def resolve_token_ids(config: SlowFastCaptionerConfig, tokenizer) -> SlowFastCaptionerConfig:
    """Store the tokenizer's ids of every special token in ``config``; a token the tokenizer lacks is an error."""
    from captioner.config import TOKEN_ID_FIELDS

    vocab = tokenizer.get_vocab()
    missing = [t for t in TOKEN_ID_FIELDS if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {missing}; add them (and resize the LLM's embeddings)")
    for token, name in TOKEN_ID_FIELDS.items():
        setattr(config, name, int(vocab[token]))
    return config
