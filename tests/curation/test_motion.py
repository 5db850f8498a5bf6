"""Tests of the motion scorer on numpy-synthesised frame sequences with known motion."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from curation.media.frames import ClipFrames
from curation.scorers import motion
from curation.scorers.motion import MotionConfig, score
from curation.scorers.motion_rules import MotionTierRules, classify

W, H = 320, 180
SRC_FPS = 24.0
STEP = 3  # source frames between samples: 8 fps sampling
N = 17  # sampled frames (2 s)
KEYS = {"camera_motion", "subject_motion", "moving_fraction", "num_movers", "shakiness", "smooth_step", "num_pairs",
        "flow_backend"}
STATS = KEYS - {"num_pairs", "flow_backend"}
RULES = MotionTierRules()  # select.motion_tiers defaults


def tier_of(out: dict) -> str | None:
    """The tier ``select`` derives from the stored statistics (None for images and one-frame clips)."""
    return classify(out, RULES)[0] if out["num_pairs"] else None


# ------------------------------------------------------------------------------------------------------------------
# synthetic sequences
# ------------------------------------------------------------------------------------------------------------------


def texture(h: int, w: int, seed: int, lo: int = 40, hi: int = 215) -> np.ndarray:
    """Multi-scale smooth noise, BGR uint8."""
    rng = np.random.default_rng(seed)
    acc = np.zeros((h, w), np.float32)
    for sigma, amp in ((1.0, 0.5), (3.0, 1.0), (8.0, 1.0)):
        acc += amp * cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), sigma) * sigma
    acc = (acc - acc.min()) / (np.ptp(acc) + 1e-6)
    g = lo + (hi - lo) * acc
    tint = rng.uniform(0.8, 1.2, 3)
    return np.clip(g[..., None] * tint, 0, 255).astype(np.uint8)


def crop_at(canvas: np.ndarray, x: float, y: float, zoom: float = 1.0) -> np.ndarray:
    """The W x H view whose top-left is (x, y) in ``canvas`` (sub-pixel), optionally zoomed about its centre."""
    cxv, cyv = x + W / 2.0, y + H / 2.0
    # map output pixel p -> canvas pixel c = (p - centre_out) / zoom + centre_view
    m = np.array([[1 / zoom, 0, cxv - (W / 2.0) / zoom], [0, 1 / zoom, cyv - (H / 2.0) / zoom]], np.float32)
    return cv2.warpAffine(canvas, m, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def paste(frame: np.ndarray, sprite: np.ndarray, mask: np.ndarray, x: float, y: float) -> None:
    """Paste ``sprite`` (with 0/1 ``mask``) with its top-left at integer-rounded (x, y), clipped to the frame."""
    sh, sw = mask.shape
    xi, yi = int(round(x)), int(round(y))
    x0, y0 = max(xi, 0), max(yi, 0)
    x1, y1 = min(xi + sw, frame.shape[1]), min(yi + sh, frame.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    sub_m = mask[y0 - yi : y1 - yi, x0 - xi : x1 - xi, None]
    sub_s = sprite[y0 - yi : y1 - yi, x0 - xi : x1 - xi]
    frame[y0:y1, x0:x1] = np.where(sub_m > 0, sub_s, frame[y0:y1, x0:x1])


def disk_sprite(r: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    tex = texture(2 * r + 1, 2 * r + 1, seed, lo=0, hi=255)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return tex, (xx * xx + yy * yy <= r * r).astype(np.uint8)


def clip_of(frames: list[np.ndarray], step: int = STEP, fps: float = SRC_FPS) -> ClipFrames:
    arr = np.stack(frames).astype(np.uint8)
    return ClipFrames(
        clip_id="synthetic", media_type="video", source_fps=fps, sample_fps=fps / step, source_width=arr.shape[2],
        source_height=arr.shape[1], frames=arr, frame_indices=np.arange(len(arr), dtype=np.int64) * step,
    )


def seq_static(seed: int = 0) -> ClipFrames:
    bg = texture(H, W, seed)
    frames = []
    for t in range(N):
        f = bg.copy()
        opening = 1 + 4 * abs(math.sin(t * 1.3))  # a small "mouth" opening and closing
        cv2.ellipse(f, (160, 100), (10, int(opening)), 0, 0, 360, (20, 20, 60), -1)
        frames.append(f)
    return clip_of(frames)


def seq_optimal(seed: int = 0, speed: float = 3.0) -> ClipFrames:
    bg = texture(H, W, seed)
    sprite, mask = disk_sprite(30, seed + 1)  # ~2800 px: ~5% of the frame
    frames = []
    for t in range(N):
        f = bg.copy()
        paste(f, sprite, mask, 40 + speed * STEP * t, 50 + 0.5 * STEP * t)
        frames.append(f)
    return clip_of(frames)


def seq_pan(seed: int = 0, vx: float = 3.0, vy: float = 1.0) -> ClipFrames:
    canvas = texture(H + 200, W + 300, seed)
    return clip_of([crop_at(canvas, 20 + vx * STEP * t, 20 + vy * STEP * t) for t in range(N)])


def seq_zoom(seed: int = 0, rate: float = 0.01) -> ClipFrames:
    canvas = texture(H + 200, W + 300, seed)
    return clip_of([crop_at(canvas, 150, 100, (1 + rate) ** (STEP * t)) for t in range(N)])


def seq_shaky(seed: int = 0, std: float = 4.0) -> ClipFrames:
    rng = np.random.default_rng(seed + 7)
    canvas = texture(H + 200, W + 300, seed)
    frames = []
    for t in range(N):
        jx, jy = rng.normal(0, std, 2)
        frames.append(crop_at(canvas, 100 + 0.3 * STEP * t + jx, 80 + jy))
    return clip_of(frames)


def seq_crowd(seed: int = 0, n: int = 40) -> ClipFrames:
    rng = np.random.default_rng(seed + 3)
    bg = texture(H, W, seed)
    pos = rng.uniform([0, 0], [W - 10, H - 10], (n, 2))
    vel = rng.normal(0, 1, (n, 2))
    vel = vel / np.linalg.norm(vel, axis=1, keepdims=True) * rng.uniform(1.5, 3.0, (n, 1))
    sprites = [disk_sprite(int(rng.integers(4, 7)), seed + 10 + i) for i in range(n)]  # 0.1-0.25 % each
    frames = []
    for t in range(N):
        f = bg.copy()
        for (sp, m), p, v in zip(sprites, pos, vel):
            q = p + v * STEP * t
            q = np.abs(np.mod(q, 2 * np.array([W - 10, H - 10]))) # bounce
            q = np.where(q > np.array([W - 10, H - 10]), 2 * np.array([W - 10, H - 10]) - q, q)
            paste(f, sp, m, q[0], q[1])
        frames.append(f)
    return clip_of(frames)


def seq_medium(seed: int = 0) -> ClipFrames:
    bg = texture(H, W, seed)
    objs = [disk_sprite(15, seed + 20), disk_sprite(14, seed + 21), disk_sprite(13, seed + 22)]
    starts = [(10, 20), (250, 110), (40, 120)]
    vels = [(3.0, 0.3), (-2.5, -0.5), (2.0, -0.2)]
    frames = []
    for t in range(N):
        f = bg.copy()
        for (sp, m), (x, y), (vx, vy) in zip(objs, starts, vels):
            paste(f, sp, m, x + vx * STEP * t, y + vy * STEP * t)
        f[:, 150:168] = (90, 90, 90)  # a static occluder bar in front of everything
        frames.append(f)
    return clip_of(frames)


def seq_image() -> ClipFrames:
    f = texture(H, W, 0)[None]
    return ClipFrames(clip_id="img", media_type="image", source_fps=0.0, sample_fps=0.0, source_width=W,
                      source_height=H, frames=f, frame_indices=np.zeros(1, np.int64))


# ------------------------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cfg() -> MotionConfig:
    return MotionConfig()


def _check_columns(out: dict) -> None:
    assert set(out) == KEYS
    assert isinstance(out["num_pairs"], int)
    for k in STATS:
        assert isinstance(out[k], float) and math.isfinite(out[k]), (k, out[k])


@pytest.mark.parametrize(
    "make, tier",
    [
        (seq_static, "static"),
        (seq_optimal, "optimal"),
        (seq_pan, "camera_driven"),
        (seq_zoom, "camera_driven"),
        (seq_shaky, "shaky"),
        (seq_crowd, "low_quality"),
        (seq_medium, "medium"),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_tiers(make, tier, seed, cfg):
    out = score(make(seed), cfg)
    _check_columns(out)
    assert tier_of(out) == tier, out
    assert out["flow_backend"] == "dis"


@pytest.mark.parametrize("vx, vy", [(3.0, 1.0), (-2.0, 0.0), (4.5, -2.0)])
def test_pan_speed_is_measured(vx, vy, cfg):
    out = score(seq_pan(0, vx, vy), cfg)
    expected = math.hypot(vx, vy) * SRC_FPS / W  # widths per second
    assert out["camera_motion"] == pytest.approx(expected, rel=0.08), out
    assert tier_of(out) == "camera_driven"
    assert out["shakiness"] < RULES.shaky_min_jitter / 4
    assert out["moving_fraction"] < 0.005


def test_pan_speed_independent_of_sampling_and_resolution(cfg):
    canvas = texture(H + 200, W + 300, 5)
    v = 2.0  # px per source frame at 320 wide
    # 12 fps sampling of a 24 fps source, and a half-size rendition at the original 8 fps
    a = clip_of([crop_at(canvas, 20 + v * 2 * t, 30) for t in range(N)], step=2)
    full = [crop_at(canvas, 20 + v * STEP * t, 30) for t in range(N)]
    b = clip_of([cv2.resize(f, (W // 2, H // 2), interpolation=cv2.INTER_AREA) for f in full])
    expected = v * SRC_FPS / W
    for clip in (a, b):
        assert score(clip, cfg)["camera_motion"] == pytest.approx(expected, rel=0.1)


def test_shaky_jitter_amplitude(cfg):
    out = score(seq_shaky(0, std=4.0), cfg)
    # the shakiness estimates the per-frame positional jitter per axis, in widths
    assert out["shakiness"] == pytest.approx(4.0 / W, rel=0.35)


def test_optimal_subject_speed(cfg):
    out = score(seq_optimal(0, speed=3.0), cfg)
    expected = math.hypot(3.0, 0.5) * SRC_FPS / W
    assert out["camera_motion"] < 0.005
    assert out["subject_motion"] == pytest.approx(expected, rel=0.3)
    assert out["num_movers"] == 1


def test_black_borders_do_not_move(cfg):
    clip = seq_pan(0, 3.0, 0.0)
    fr = clip.frames.copy()
    fr[:, :22] = 0
    fr[:, -22:] = 0
    out = score(clip_of(list(fr)), cfg)
    assert tier_of(out) == "camera_driven", out
    assert out["camera_motion"] == pytest.approx(3.0 * SRC_FPS / W, rel=0.1)


def test_image_gets_zeros_and_no_tier(cfg):
    out = score(seq_image(), cfg)
    _check_columns(out)
    assert out["num_pairs"] == 0 and tier_of(out) is None
    assert all(out[k] == 0.0 for k in STATS)


def test_single_frame_video(cfg):
    c = seq_static()
    one = ClipFrames(clip_id="x", media_type="video", source_fps=24.0, sample_fps=8.0, source_width=W,
                     source_height=H, frames=c.frames[:1], frame_indices=c.frame_indices[:1])
    out = score(one, cfg)
    _check_columns(out)
    assert tier_of(out) is None


def test_farneback_backend():
    cfg = MotionConfig(flow_backend="farneback")
    out = score(seq_pan(0, 3.0, 1.0), cfg)
    assert out["flow_backend"] == "farneback"
    assert tier_of(out) == "camera_driven"
    assert out["camera_motion"] == pytest.approx(math.hypot(3, 1) * SRC_FPS / W, rel=0.1)


def test_raft_missing_weights_names_path(tmp_path):
    missing = tmp_path / "nope" / "raft_small.pth"
    cfg = MotionConfig(flow_backend="raft", raft_weights=str(missing))
    with pytest.raises(FileNotFoundError, match="raft_small.pth"):
        score(seq_pan(), cfg)
    with pytest.raises(FileNotFoundError, match="raft_weights"):
        score(seq_pan(), MotionConfig(flow_backend="raft"))


def test_raft_backend_with_local_weights(tmp_path):
    torch = pytest.importorskip("torch")
    from torchvision.models.optical_flow import raft_small

    # random weights: this checks loading and plumbing, not flow quality
    path = tmp_path / "raft_small.pth"
    torch.manual_seed(0)
    torch.save(raft_small(weights=None).state_dict(), path)
    out = score(seq_pan(), MotionConfig(flow_backend="raft", raft_weights=str(path), raft_iters=2))
    _check_columns(out)
    assert out["flow_backend"] == "raft"
    assert tier_of(out) in motion.TIERS


def test_config_rejects_unknown_keys_and_ranges():
    with pytest.raises(ValidationError, match="treshold"):
        MotionConfig(treshold=0.1)
    with pytest.raises(ValidationError):
        MotionConfig(flow_width=8)
    with pytest.raises(ValidationError):
        MotionConfig(moving_speed=-1.0)
    with pytest.raises(ValidationError):
        MotionConfig(flow_backend="lucas-kanade")
    with pytest.raises(ValidationError):  # tier thresholds are select's (select.motion_tiers), not the scorer's
        MotionConfig(camera_max_moving_fraction=0.02)
    with pytest.raises(ValidationError):
        MotionTierRules(camera_max_moving_fraction=2.0)
    c = MotionConfig()
    assert c.flow_backend == "dis" and c.flow_width == 160 and c.raft_weights is None
    assert MotionConfig.model_validate(c.model_dump()) == c


def test_stage_constants_and_schema():
    assert motion.STAGE == "motion" and motion.VERSION == "2"
    from curation.lake.schemas import STAGE_FIELDS

    assert {f.name for f in STAGE_FIELDS["motion"]} == KEYS
    assert set(motion.TIERS) == {"optimal", "medium", "static", "camera_driven", "low_quality", "shaky"}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])  # seed 0 goes through the whole pipeline in test_pipeline_accuracy
def test_tier_accuracy_on_synthetic_corpus(seed, tmp_path):
    """Motion tiers against the ground-truth motion kinds of ``curation.synth`` (decode, 384 px, ~8 fps)."""
    pytest.importorskip("curation.synth.generate")
    from tests.curation.motion_eval import evaluate, format_confusion

    from curation.synth.generate import generate

    generate(tmp_path, preset="test", seed=seed)
    res = evaluate(tmp_path)
    print(f"\nseed {seed}: accuracy {res['accuracy']:.3f}\n{format_confusion(res['confusion'])}")
    assert res["confusion"].sum() >= 30
    assert res["accuracy"] >= 0.85, format_confusion(res["confusion"])


def test_a_lake_scored_by_the_old_motion_stage_is_rescored(tmp_path):
    """Motion tables written before the tier moved to select (a ``motion_tier`` column, no ``smooth_step``) are
    emptied with the new columns by the stale-row pass, so the new statistics can be appended."""
    import lance
    import pyarrow as pa

    from curation.lake import KeyedWriter, Lake
    from curation.lake.schemas import stage_schema
    from curation.stages.analyze import drop_stale_rows
    from curation.stages.stability import analysis_settings

    lake = Lake(str(tmp_path / "lake"))
    old = pa.schema([f for f in stage_schema("motion") if f.name not in ("smooth_step", "num_pairs")]
                    + [pa.field("motion_tier", pa.string())])
    lance.write_dataset(pa.Table.from_pylist([{"clip_id": "a", "camera_motion": 0.1, "motion_tier": "static",
                                               "stage_version": "1-0", "status": "ok"}], schema=old),
                        lake.uri("stages/motion"))
    settings = analysis_settings(scorers=["motion"])
    assert drop_stale_rows(lake, settings) == {"motion": 1}
    row = {"clip_id": "a", **score(seq_pan(), MotionConfig()), "stage_version": "2-0", "status": "ok"}
    KeyedWriter(lake, "stages/motion").append([row])
    got = lake.read("stages/motion").to_pylist()
    assert [r["clip_id"] for r in got] == ["a"] and "motion_tier" not in got[0] and got[0]["num_pairs"] == N - 1
