"""Unit tests of the classical scorers on numpy-generated frames with known answers."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pyarrow as pa
import pydantic
import pytest

from curation.lake.schemas import STAGE_FIELDS
from curation.media.frames import ClipFrames
from curation.scorers import blur, borders, exposure, near_dup, phash, watermark

# ----------------------------------------------------------------------------------------------- frame synthesis


def texture(h: int, w: int, seed: int = 0, lo: int = 30, hi: int = 220) -> np.ndarray:
    """Natural-ish colour texture: noise summed over several scales, (h, w, 3) uint8 in [lo, hi]."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w, 3), np.float32)
    for sigma, weight in ((0.8, 0.5), (3.0, 1.0), (10.0, 1.5)):
        n = rng.standard_normal((h, w, 3)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigma)
        acc += weight * n / (n.std() + 1e-6)
    acc = (acc - acc.min()) / (acc.max() - acc.min())
    return (lo + acc * (hi - lo)).astype(np.uint8)


def moving(tex: np.ndarray, h: int, w: int, n: int, step: tuple[int, int] = (5, 3)) -> np.ndarray:
    """(n, h, w, 3) frames: an (h, w) window translating over ``tex`` by ``step`` (dx, dy) px per frame."""
    out = np.empty((n, h, w, 3), np.uint8)
    for t in range(n):
        x, y = t * step[0], t * step[1]
        out[t] = tex[y : y + h, x : x + w]
    return out


def downscale(frames: np.ndarray, long_side: int = 384) -> np.ndarray:
    h, w = frames.shape[1:3]
    s = min(1.0, long_side / max(h, w))
    if s == 1.0:
        return frames
    size = (int(round(w * s)), int(round(h * s)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


def make_clip(src: np.ndarray, long_side: int = 384, media_type: str = "video") -> ClipFrames:
    """ClipFrames at analysis resolution from source-resolution frames (n, H, W, 3)."""
    n, h, w, _ = src.shape
    return ClipFrames(
        clip_id="c",
        media_type=media_type,
        source_fps=24.0 if media_type == "video" else 0.0,
        sample_fps=8.0 if media_type == "video" else 0.0,
        source_width=w,
        source_height=h,
        frames=downscale(src, long_side),
        frame_indices=np.arange(n, dtype=np.int64) * 3,
    )


def add_bars(frames: np.ndarray, top=0, bottom=0, left=0, right=0, seed=0) -> np.ndarray:
    """Black bars with a little codec-like noise (0..3)."""
    out = frames.copy()
    rng = np.random.default_rng(seed)
    h, w = out.shape[1:3]
    noise = lambda shape: rng.integers(0, 4, shape, dtype=np.uint8)  # noqa: E731
    if top:
        out[:, :top] = noise(out[:, :top].shape)
    if bottom:
        out[:, h - bottom :] = noise(out[:, h - bottom :].shape)
    if left:
        out[:, :, :left] = noise(out[:, :, :left].shape)
    if right:
        out[:, :, w - right :] = noise(out[:, :, w - right :].shape)
    return out


def add_logo(frames: np.ndarray, box: tuple[int, int, int, int], alpha: float) -> np.ndarray:
    """Static semi-transparent white logo (outlined box with text) blended into every frame."""
    x0, y0, x1, y1 = box
    h, w = frames.shape[1:3]
    logo = np.zeros((h, w), np.uint8)
    cv2.rectangle(logo, (x0, y0), (x1 - 1, y1 - 1), 255, 2)
    cv2.putText(logo, "WM", (x0 + 4, y1 - 6), cv2.FONT_HERSHEY_SIMPLEX, (y1 - y0) / 40.0, 255, 2)
    a = (logo.astype(np.float32) / 255.0 * alpha)[None, :, :, None]
    return (frames.astype(np.float32) * (1 - a) + 255.0 * a).round().astype(np.uint8)


def check_schema(stage: str, out: dict) -> None:
    names = [f.name for f in STAGE_FIELDS[stage]]
    assert sorted(out) == sorted(names)
    pa.Table.from_pylist([out], schema=pa.schema(STAGE_FIELDS[stage]))  # types cast cleanly


# ----------------------------------------------------------------------------------------------------- borders


@pytest.mark.parametrize(
    "size,bars",
    [
        ((1280, 720), dict(top=90, bottom=90)),  # letterbox
        ((1280, 720), dict(top=93, bottom=87)),  # uneven, not on an analysis-pixel boundary
        ((1280, 720), dict(left=160, right=160)),  # pillarbox
        ((1280, 720), dict(left=101, right=77)),
        ((1920, 1080), dict(top=138, bottom=138)),  # 2.39:1 in 16:9
        ((640, 360), dict(top=40, bottom=40, left=50, right=50)),  # windowbox
        ((320, 180), dict(top=20, bottom=20)),  # no downscale
    ],
)
def test_borders_letterbox_pillarbox(size, bars):
    w, h = size
    src = add_bars(moving(texture(h + 80, w + 80, seed=1), h, w, 6, (6, 4)), **bars)
    clip = make_clip(src)
    out = borders.score(clip, borders.BordersConfig())
    check_schema("borders", out)
    assert out["has_border"] is True
    truth = (bars.get("left", 0), bars.get("top", 0), w - bars.get("right", 0), h - bars.get("bottom", 0))
    got = (out["crop_x0"], out["crop_y0"], out["crop_x1"], out["crop_y1"])
    for g, t in zip(got, truth):
        assert abs(g - t) <= 2, (got, truth)
    # inward-safe: no black source row/column remains in the crop box
    assert got[0] >= truth[0] and got[1] >= truth[1] and got[2] <= truth[2] and got[3] <= truth[3], (got, truth)
    area = (truth[2] - truth[0]) * (truth[3] - truth[1])
    assert abs(out["border_fraction"] - (1 - area / (w * h))) < 0.02


def test_borders_none_on_plain_content():
    src = moving(texture(400, 700, seed=2), 360, 640, 5)
    out = borders.score(make_clip(src), borders.BordersConfig())
    assert out["has_border"] is False
    assert (out["crop_x0"], out["crop_y0"], out["crop_x1"], out["crop_y1"]) == (0, 0, 640, 360)
    assert out["border_fraction"] == 0.0


def test_borders_dark_textured_edge_is_not_border():
    # Top 40 rows: dark texture whose 95th percentile is <= 24 but which is far from uniform.
    rng = np.random.default_rng(3)
    src = moving(texture(220, 400, seed=3), 180, 320, 4)
    src[:, :40] = (rng.random((4, 40, 320, 1)) < 0.5).astype(np.uint8) * 22
    out = borders.score(make_clip(src), borders.BordersConfig())
    assert out["has_border"] is False and out["crop_y0"] == 0


def test_borders_small_bar_not_flagged_and_black_frame():
    src = add_bars(moving(texture(400, 700, seed=4), 360, 640, 3), top=4)  # 1.1 % < 2 %
    out = borders.score(make_clip(src), borders.BordersConfig())
    assert out["has_border"] is False
    black = np.zeros((3, 180, 320, 3), np.uint8)
    out = borders.score(make_clip(black), borders.BordersConfig())
    assert out["has_border"] is False and out["crop_x1"] == 320 and out["border_fraction"] == 0.0


def test_borders_image():
    src = add_bars(texture(720, 1280, seed=5)[None], top=90, bottom=90)
    out = borders.score(make_clip(src, media_type="image"), borders.BordersConfig())
    assert out["has_border"] and abs(out["crop_y0"] - 90) <= 2 and abs(out["crop_y1"] - 630) <= 2


# ---------------------------------------------------------------------------------------------------- exposure


def test_exposure_normal_and_overexposed():
    src = moving(texture(260, 360, seed=6), 180, 320, 6)
    out = exposure.score(make_clip(src), exposure.ExposureConfig())
    check_schema("exposure", out)
    assert out["clipped_high_fraction"] < 0.02 and out["clipped_low_fraction"] < 0.02
    assert out["overexposure_score"] < 0.1
    assert 90 < out["mean_luma"] < 160
    over = np.clip(src.astype(np.float32) * 2.2 + 20, 0, 255).astype(np.uint8)
    out2 = exposure.score(make_clip(over), exposure.ExposureConfig())
    assert out2["clipped_high_fraction"] > 0.3
    assert out2["overexposure_score"] > 0.9
    assert out2["mean_luma"] > out["mean_luma"]
    dark = (src // 40).astype(np.uint8)
    out3 = exposure.score(make_clip(dark), exposure.ExposureConfig())
    assert out3["clipped_low_fraction"] > 0.3 and out3["overexposure_score"] == 0.0


def test_exposure_score_monotone_and_bounded():
    cfg = exposure.ExposureConfig()
    xs = np.linspace(0, 1, 101)
    s = [exposure.overexposure(x, x, cfg) for x in xs]
    assert s[0] == 0.0 and all(0.0 <= v <= 1.0 for v in s)
    assert all(b >= a for a, b in zip(s, s[1:]))


# -------------------------------------------------------------------------------------------------------- blur


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_blur_separates_sharp_from_gaussian(seed):
    src = moving(texture(240, 380, seed=seed), 180, 320, 5)
    cfg = blur.BlurConfig()
    sharp = blur.score(make_clip(src), cfg)
    check_schema("blur", sharp)
    assert sharp["blur_score"] < 0.3, sharp
    for sigma in (2.5, 3.5, 6.0):
        blurred = np.stack([cv2.GaussianBlur(f, (0, 0), sigma) for f in src])
        out = blur.score(make_clip(blurred), cfg)
        assert out["blur_score"] > 0.7, (sigma, out)
        assert out["laplacian_var"] < sharp["laplacian_var"] / 4


def test_blur_ignores_black_bars_and_small_sharp_overlays():
    src = moving(texture(240, 380, seed=11), 180, 320, 5)
    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 3.0) for f in src])
    barred = add_bars(blurred, top=22, bottom=22)  # sharp bar edges on blurred content
    for f in barred:
        cv2.putText(f, "LIVE", (10, 50), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (245, 245, 245), 1)
    out = blur.score(make_clip(barred), blur.BlurConfig())
    assert out["blur_score"] > 0.7, out
    whole = blur.score(make_clip(barred), blur.BlurConfig(tile_size=0, crop_borders=False))
    assert whole["laplacian_var"] > 4 * out["laplacian_var"]  # the classic statistic is fooled


def test_blur_comparable_across_resolutions():
    src = moving(texture(760, 1360, seed=10), 720, 1280, 3)
    hi = blur.score(make_clip(src), blur.BlurConfig())
    flat = blur.score(make_clip(np.full((3, 180, 320, 3), 128, np.uint8)), blur.BlurConfig())
    assert flat["blur_score"] > 0.99 and flat["laplacian_var"] == 0.0
    assert 0.0 <= hi["blur_score"] <= 1.0


# --------------------------------------------------------------------------------------------------- watermark


LOGO_BOX = (262, 148, 330, 178)  # in 384x216 source/analysis px, bottom-right corner


def flagged(out: dict) -> bool:
    """The watermark decision ``select`` takes from the stored score (default ``watermark_min_score``)."""
    from curation.config import SelectConfig
    from curation.stages.decisions import has_watermark

    return has_watermark(out, SelectConfig())


@pytest.mark.parametrize("alpha", [0.4, 0.55, 0.7])
def test_watermark_static_logo_over_moving_texture(alpha):
    src = add_logo(moving(texture(400, 700, seed=11), 216, 384, 24, (7, 3)), LOGO_BOX, alpha)
    out = watermark.score(make_clip(src), watermark.WatermarkConfig())
    check_schema("watermark", out)
    assert flagged(out), out
    assert out["watermark_score"] >= 0.5
    box = (out["wm_x0"], out["wm_y0"], out["wm_x1"], out["wm_y1"])
    for g, t in zip(box, LOGO_BOX):
        assert abs(g - t) <= 6, (box, LOGO_BOX)


def test_watermark_box_in_source_pixels():
    box_src = tuple(v * 2 for v in LOGO_BOX)  # 768x432 source, analysis 384x216
    src = add_logo(moving(texture(700, 1200, seed=12), 432, 768, 16, (12, 6)), box_src, 0.5)
    clip = make_clip(src)
    out = watermark.score(clip, watermark.WatermarkConfig())
    assert flagged(out)
    box = (out["wm_x0"], out["wm_y0"], out["wm_x1"], out["wm_y1"])
    for g, t in zip(box, box_src):
        assert abs(g - t) <= 12, (box, box_src)
    # the detected box contains the logo
    assert box[0] <= box_src[0] + 2 and box[1] <= box_src[1] + 2 and box[2] >= box_src[2] - 2 and box[3] >= box_src[3] - 2


def test_watermark_not_flagged_on_static_scene_or_plain_motion():
    tex = texture(400, 700, seed=13)
    static = add_logo(np.repeat(tex[None, :216, :384], 24, axis=0), LOGO_BOX, 0.5)
    noise = np.random.default_rng(0).integers(-2, 3, static.shape)
    static = np.clip(static.astype(np.int16) + noise, 0, 255).astype(np.uint8)  # codec-like noise
    out = watermark.score(make_clip(static), watermark.WatermarkConfig())
    assert not flagged(out), out
    plain = moving(tex, 216, 384, 24, (7, 3))
    out = watermark.score(make_clip(plain), watermark.WatermarkConfig())
    assert not flagged(out) and out["watermark_score"] < 0.5, out


def test_watermark_bars_are_not_overlays():
    tex = texture(400, 700, seed=16)
    plain = add_bars(moving(tex, 216, 384, 24, (7, 3)), top=26, bottom=26)
    out = watermark.score(make_clip(plain), watermark.WatermarkConfig())
    assert not flagged(out), out
    box = (262, 160, 330, 186)  # inside the content area, above the bottom bar
    logo = add_bars(add_logo(moving(tex, 216, 384, 24, (7, 3)), box, 0.5), top=26, bottom=26)
    out = watermark.score(make_clip(logo), watermark.WatermarkConfig())
    assert flagged(out)
    got = (out["wm_x0"], out["wm_y0"], out["wm_x1"], out["wm_y1"])
    assert all(abs(g - t) <= 6 for g, t in zip(got, box)), got


def test_watermark_image_and_short_clip():
    src = add_logo(texture(216, 384, seed=14)[None], LOGO_BOX, 0.6)
    out = watermark.score(make_clip(src, media_type="image"), watermark.WatermarkConfig())
    assert out == {"watermark_score": 0.0, "wm_x0": -1, "wm_y0": -1, "wm_x1": -1, "wm_y1": -1}
    src3 = add_logo(moving(texture(400, 700, seed=14), 216, 384, 3), LOGO_BOX, 0.6)
    assert not flagged(watermark.score(make_clip(src3), watermark.WatermarkConfig()))


def test_watermark_yolo_missing_weights(tmp_path):
    clip = make_clip(moving(texture(300, 500, seed=15), 216, 384, 4))
    missing = tmp_path / "wm_yolo.pt"
    cfg = watermark.WatermarkConfig(backend="yolo", yolo_weights=str(missing))
    with pytest.raises(FileNotFoundError, match="wm_yolo.pt"):
        watermark.score(clip, cfg)
    with pytest.raises(FileNotFoundError):
        watermark.score(clip, watermark.WatermarkConfig(backend="yolo"))


# ------------------------------------------------------------------------------------------------------- phash


def _jpeg(img: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def test_phash_robust_to_resize_and_jpeg_but_discriminative():
    hashes = []
    for seed in range(20, 30):
        img = texture(360, 640, seed=seed)
        h0 = phash.phash_image(img)
        h_small = phash.phash_image(cv2.resize(img, (256, 144), interpolation=cv2.INTER_AREA))
        h_big = phash.phash_image(cv2.resize(img, (1280, 720), interpolation=cv2.INTER_LINEAR))
        h_jpeg = phash.phash_image(_jpeg(img, 40))
        assert phash.hamming(h0, h_small) <= 6
        assert phash.hamming(h0, h_big) <= 6
        assert phash.hamming(h0, h_jpeg) <= 6
        assert -(1 << 63) <= h0 < (1 << 63)
        hashes.append(h0)
    for a, b in itertools.combinations(hashes, 2):
        assert phash.hamming(a, b) > 16


def test_phash_score_keyframes():
    src = moving(texture(300, 600, seed=31), 216, 384, 9, (20, 8))
    out = phash.score(make_clip(src), phash.PhashConfig())
    check_schema("phash", out)
    assert len(out["phashes"]) == 3 and out["phashes"][1] == out["phash"]
    assert out["phash"] == phash.phash_image(src[4])
    img = phash.score(make_clip(src[:1], media_type="image"), phash.PhashConfig())
    assert img["phashes"] == [img["phash"]]


def test_hamming():
    assert phash.hamming(0, -1) == 64
    assert phash.hamming(5, 6) == 2
    assert phash.hamming(-(1 << 63), 0) == 1


# ---------------------------------------------------------------------------------------------------- near dup


def _planted(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(
        np.uint64
    )
    # plant near pairs/chains: copy an earlier hash and flip k bits, k in 0..12
    for i in rng.choice(np.arange(1, n), n // 3, replace=False):
        j = int(rng.integers(0, i))
        k = int(rng.integers(0, 13))
        flips = rng.choice(64, k, replace=False)
        m = np.uint64(sum(1 << int(b) for b in flips))
        h[i] = h[j] ^ m
    return h


def _brute_pairs(h: np.ndarray, owner: np.ndarray, d: int) -> set[tuple[int, int]]:
    dist = np.bitwise_count(h[:, None] ^ h[None, :])
    ii, jj = np.nonzero(dist <= d)
    return {(int(owner[i]), int(owner[j])) for i, j in zip(ii, jj) if owner[i] < owner[j]}


@pytest.mark.parametrize("num_bands", [None, 9, 4, 3])
def test_lsh_recall_equals_brute_force(num_bands):
    h = _planted(2000, seed=40)
    owner = np.arange(2000, dtype=np.int64)
    got = near_dup.candidate_pairs(h, owner, 8, num_bands)
    truth = _brute_pairs(h, owner, 8)
    assert len(truth) > 300
    assert {tuple(p) for p in got.tolist()} == truth


def test_lsh_multi_hash_clips_min_distance():
    h = _planted(1800, seed=41)
    owner = np.repeat(np.arange(600, dtype=np.int64), 3)
    rng = np.random.default_rng(1)
    owner = owner[rng.permutation(len(owner))]
    got = near_dup.candidate_pairs(h, owner, 6)
    assert {tuple(p) for p in got.tolist()} == _brute_pairs(h, owner, 6)


def test_find_near_duplicates_groups_and_keeps_best():
    base = [int(v) for v in _planted(6, seed=42)]
    flip = lambda v, bits: v ^ sum(1 << b for b in bits)  # noqa: E731
    ids = ["a", "b", "c", "d", "e", "f"]
    hashes = [
        [base[0], base[1]],
        [flip(base[1], [1, 5, 9])],  # near a's second hash
        [flip(base[1], [1, 5, 9, 20, 30, 40, 50, 60])],  # near b (5 bits), 8 from a: chain a-b-c
        [base[3]],
        [flip(base[3], range(20))],  # far from d
        [],  # no hashes: never a duplicate
    ]
    q = [(100, 1.0), (400, 2.0), (400, 2.0), (1, 1.0), (1, 1.0), (1, 1.0)]
    res = near_dup.find_near_duplicates(ids, hashes, q, max_distance=8)
    by = {r["clip_id"]: r for r in res}
    assert [r["clip_id"] for r in res] == ids
    assert set(res[0]) == {"clip_id", "dup_group", "duplicate_of", "is_duplicate"}
    assert by["b"]["is_duplicate"] is False and by["b"]["duplicate_of"] is None  # best quality, ties -> smallest id
    assert by["a"]["duplicate_of"] == "b" and by["c"]["duplicate_of"] == "b"
    assert by["a"]["dup_group"] == by["b"]["dup_group"] == by["c"]["dup_group"] == "b"
    for k in "def":
        assert by[k]["is_duplicate"] is False and by[k]["dup_group"] == k
    pa.Table.from_pylist([{k: r[k] for k in ("dup_group", "duplicate_of", "is_duplicate")} for r in res],
                         schema=pa.schema(STAGE_FIELDS["dedup"]))


def test_find_near_duplicates_phash_of_reencoded_frames():
    ids, hashes, quality = [], [], []
    for seed in range(50, 56):
        img = texture(360, 640, seed=seed)
        for name, variant, q in (("orig", img, 640 * 360), ("small", cv2.resize(img, (320, 180)), 320 * 180),
                                 ("jpeg", _jpeg(img, 35), 640 * 360 - 1)):
            ids.append(f"{seed}-{name}")
            hashes.append([phash.phash_image(variant)])
            quality.append((q,))
    res = near_dup.find_near_duplicates(ids, hashes, quality, max_distance=8)
    kept = [r["clip_id"] for r in res if not r["is_duplicate"]]
    assert kept == [f"{s}-orig" for s in range(50, 56)]


def test_choose_num_bands_scales():
    assert near_dup.choose_num_bands(2000, 8) >= 3
    assert near_dup.choose_num_bands(3_000_000, 8) <= 4


# ------------------------------------------------------------------------------------------ config validation


@pytest.mark.parametrize(
    "cls,bad_key,bad_range",
    [
        (borders.BordersConfig, "min_border_fraction", 0.9),
        (exposure.ExposureConfig, "clip_high_level", 300),
        (blur.BlurConfig, "reference_var", -1.0),
        (watermark.WatermarkConfig, "corner_fraction", 0.8),
        (phash.PhashConfig, "max_keyframes", 7),
    ],
)
def test_config_validation(cls, bad_key, bad_range):
    cls()  # defaults are valid
    with pytest.raises(pydantic.ValidationError, match="not_a_key"):
        cls(not_a_key=1)
    with pytest.raises(pydantic.ValidationError, match=bad_key):
        cls(**{bad_key: bad_range})


def test_watermark_backend_literal():
    with pytest.raises(pydantic.ValidationError, match="backend"):
        watermark.WatermarkConfig(backend="magic")


def test_registry():
    from curation.scorers.registry import SCORERS

    for mod in (borders, exposure, blur, watermark, phash):
        scorer = SCORERS[mod.STAGE]
        assert scorer.score is mod.score and scorer.version == mod.VERSION
        assert mod.VERSION == {blur: "3", watermark: "2"}.get(mod, "1")  # watermark: score only; blur: codec-robust
        assert mod.STAGE in STAGE_FIELDS
        scorer.config_cls()


def test_lsh_wide_bands_searchsorted_path():
    h = _planted(1500, seed=43)
    owner = np.arange(1500, dtype=np.int64)
    for d, m in ((1, 2), (3, 2), (2, 1)):  # 32- and 64-bit bands: sorted-array lookups
        got = near_dup.candidate_pairs(h, owner, d, m)
        assert {tuple(p) for p in got.tolist()} == _brute_pairs(h, owner, d)
