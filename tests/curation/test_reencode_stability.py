"""Select's decisions survive re-encoding: the generated corpus (``test`` preset) re-encoded with H.264 at two
qualities, 10-bit HEVC, VP9, grayscale and a size one pixel smaller keeps each clip's motion tier and its blur,
exposure and border decisions in at least 95 % of clips, and stays accurate against the generator's labels."""
from __future__ import annotations

import pytest

from curation.config import SelectConfig
from curation.stages.stability import agreement, analysis_settings, decisions, score_segments
from curation.synth.degrade import REENCODINGS, reencode_video, reencoding_available

pytestmark = pytest.mark.slow

MIN_AGREEMENT = 0.95
MIN_ACCURACY = 0.9  # against the labels, on every rendition


@pytest.fixture(scope="module")
def base_scores(corpus):
    media, labels = corpus
    return score_segments(str(media), labels.to_pylist(), analysis_settings())


def _accuracy(scores, labels) -> dict[str, float]:
    """Blur and overexposure decisions and the motion tier against the generator's labels."""
    cfg, truth = SelectConfig(), {f"{r['file']}#{r['segment_index']}": r for r in labels.to_pylist()}
    hits: dict[str, list[bool]] = {"blurry": [], "overexposed": [], "motion_tier": [], "has_border": []}
    for key, stages in scores.items():
        d, t = decisions(stages, cfg), truth[key]
        hits["blurry"].append(d["blurry"] == bool(t["blurred"]))
        hits["overexposed"].append(d["overexposed"] == bool(t["overexposed"]))
        hits["has_border"].append(d["has_border"] == any(t[f"border_{s}"] > 0 for s in ("top", "bottom", "left",
                                                                                       "right")))
        if t["motion_kind"]:
            hits["motion_tier"].append(d["motion_tier"] == t["motion_kind"])
    return {k: sum(v) / len(v) for k, v in hits.items()}


def test_original_decisions_match_the_labels(base_scores, corpus):
    acc = _accuracy(base_scores, corpus[1])
    print(f"\noriginal: accuracy {acc}")
    assert min(acc.values()) >= MIN_ACCURACY, acc


@pytest.mark.parametrize("variant", REENCODINGS, ids=[r.name for r in REENCODINGS])
def test_decisions_survive_reencoding(variant, base_scores, corpus, tmp_path):
    if (why := reencoding_available(variant)) is not None:
        pytest.skip(why)
    media, labels = corpus
    for name in sorted({r["file"] for r in labels.to_pylist() if r["media_type"] == "video"}):
        frames = reencode_video(str(media / name), str(tmp_path / name), variant)
        assert frames > 0
    scores = score_segments(str(tmp_path), labels.to_pylist(), analysis_settings())
    assert scores.keys() == base_scores.keys()  # every segment decoded and scored in the new rendition
    ag = agreement(base_scores, scores, SelectConfig())
    print(f"\n{variant.name}: agreement {({k: round(v, 3) for k, v in ag.same.items()})}, all {ag.all_same:.3f}; "
          f"flips {[f for fl in ag.flips.values() for f in fl]}")
    for decision, same in ag.same.items():
        assert same >= MIN_AGREEMENT, (decision, ag.flips[decision])
    acc = _accuracy(scores, labels)
    assert min(acc.values()) >= MIN_ACCURACY, acc
