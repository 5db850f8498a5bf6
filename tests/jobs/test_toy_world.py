"""The toy world (``jobs.toy_world``): reference captions with known colours, then the whole chain on the
session's curated lake (brief VAE, caches, tiny DiT, samples): the held-out loss must fall to <= 60 % and the
samples' latents move towards the training clips'; the colour
figures are checked and reported as an expected failure while the brief models do not learn the prompt's colour."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from curation.lake import Lake
from curation.synth.captions import (
    COLOURS,
    colour_histogram,
    dominant_colour,
    reference_caption,
)
from jobs.toy_world import kept_clips, reference_captions, run_toy_world, split_holdout


def _solid(rgb: tuple[int, int, int], size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), rgb, np.uint8)


@pytest.mark.parametrize(("rgb", "name"), [((200, 30, 30), "red"), ((30, 200, 30), "green"),
                                           ((30, 30, 200), "blue"), ((200, 200, 30), "yellow"),
                                           ((30, 200, 200), "cyan"), ((200, 30, 200), "magenta"),
                                           ((120, 120, 120), "grey")])
def test_dominant_colour_of_known_pixels(rgb: tuple[int, int, int], name: str) -> None:
    assert dominant_colour(_solid(rgb)) == name
    hist = colour_histogram(_solid(rgb))
    assert hist.sum() == pytest.approx(1.0) and hist[COLOURS.index(name)] == pytest.approx(1.0)


def test_histogram_counts_pixel_fractions() -> None:
    img = np.concatenate([_solid((200, 30, 30)), _solid((30, 30, 200)), _solid((30, 30, 200))], axis=1)
    hist = colour_histogram(img)
    assert hist[COLOURS.index("red")] == pytest.approx(1 / 3) and hist[COLOURS.index("blue")] == pytest.approx(2 / 3)
    assert dominant_colour(img) == "blue"


def test_reference_caption_names_the_rendered_scene_colour(corpus) -> None:
    """The caption's colour is the dominant colour of the clip as written to disk (decoded here)."""
    media, labels = corpus
    rows = [r for r in labels.to_pylist() if r["media_type"] == "image" and not r["overexposed"]][:3]
    for row in rows:
        caption, colour = reference_caption(row)
        assert caption == f"a {colour} scene"
        on_disk = cv2.cvtColor(cv2.imread(str(media / row["file"])), cv2.COLOR_BGR2RGB)
        assert dominant_colour(on_disk) == colour
    video = next(r for r in labels.to_pylist() if r["media_type"] == "video" and r["motion_kind"] == "static")
    assert reference_caption(video)[0].endswith("that stays still")


def test_prompt_colour_dimension_scores_the_share_of_frames_with_the_prompts_colour() -> None:
    from bench.dimensions import DIMENSIONS
    from bench.dimensions.base import BenchVideo
    from jobs.toy_bench import PromptColour

    assert DIMENSIONS["prompt_colour"] is PromptColour
    frames = np.stack([_solid((200, 30, 30)), _solid((200, 30, 30)), _solid((30, 200, 30)), _solid((30, 30, 200))])
    dim = PromptColour()
    assert dim.score(BenchVideo(frames, 8.0, "a red scene")).score == pytest.approx(0.5)
    assert dim.score(BenchVideo(frames, 8.0, "a green scene")).score == pytest.approx(0.25)
    assert dim.score(BenchVideo(frames, 8.0, "a yellow scene")).score == 0.0
    with pytest.raises(ValueError, match="naming one of"):
        dim.score(BenchVideo(frames, 8.0, "a scene"))


def test_holdout_split_is_disjoint_and_complete() -> None:
    ids = [f"c{i:02d}" for i in range(12)]
    train, held = split_holdout(list(reversed(ids)), 4)
    assert held == ["c03", "c07", "c11"] and sorted(train + held) == ids


@pytest.mark.slow
def test_toy_world_learns(curated_lake, corpus, tmp_path: Path) -> None:
    """Held-out flow-matching loss falls to <= 60 % and the samples' latents move towards the training clips'
    (asserted); prompted colours hit clearly more often than by the untrained model (the demo's figures, at
    a shorter setting): an expected failure, with the measured figures, until it is met."""
    src, _ = curated_lake
    _, labels = corpus
    lake_dir = tmp_path / "lake"
    shutil.copytree(src.root, lake_dir)
    captions = reference_captions(Lake(str(lake_dir)), labels)
    assert len(captions) == len(kept_clips(Lake(str(lake_dir))))
    fig = run_toy_world(str(tmp_path), str(lake_dir), labels,
                        overrides={"overrides": {"vae": {"steps": 80}, "train": {"steps": 200}},
                                   "sample.seeds": [0, 1]})
    lake = Lake(str(lake_dir))
    refs = lake.read("captions", filter="model_id = 'reference'").to_pylist()
    assert {r["clip_id"] for r in refs} == set(split_holdout(list(captions), 5)[0])
    assert all(r["caption"] == captions[r["clip_id"]][0] for r in refs)
    assert all(np.isfinite([fig.val_loss_start, fig.val_loss_end, fig.hist_distance_trained,
                            fig.latent_distance_trained]))
    assert fig.val_ratio <= 0.6
    # samples nearer the training data: RMS distance (normalised latents) to the nearest training clip's first frame
    assert fig.latent_distance_trained < 0.85 * fig.latent_distance_untrained
    # Wan-Bench closed the loop: both models sampled into the lake's samples table, scored, compared in out/bench
    assert fig.bench is not None and set(fig.bench["totals"]) == {"toy-untrained", "toy-trained"}
    assert all(0.0 <= t <= 1.0 for t in fig.bench["totals"].values())
    assert (tmp_path / "bench" / "report.html").is_file() and (tmp_path / "bench" / "summary.json").is_file()
    assert lake.read("samples", columns=["sample_id"]).num_rows == 2 * 2 * len(fig.colours)  # 2 models x 2 seeds
    colour_learned = (fig.colour_rate_trained >= fig.colour_rate_untrained + 0.25
                      and fig.colour_rate_trained > 2 * fig.chance)
    # Measured on the demo lake (13 training clips): the brief tiny VAE keeps the dominant colour of 30 % of the
    # keyframes it reconstructs (two muted hues; 59 % after 1000 image steps), so the DiT has two colours to learn.
    if not colour_learned:
        pytest.xfail(f"colour not learned at this budget: histogram distance {fig.hist_distance_untrained:.3f} -> "
                     f"{fig.hist_distance_trained:.3f}, colour rate {fig.colour_rate_untrained:.2f} -> "
                     f"{fig.colour_rate_trained:.2f} (chance {fig.chance:.2f})")


def test_caption_dropout_swaps_in_the_empty_prompt_and_keeps_the_stream_without_it(tmp_path: Path) -> None:
    """``caption_dropout`` replaces a share of the batch's caption embeddings by the ``empty_text_key`` one (drawn
    from the step's generator, so the same steps drop the same samples); at 0 the inputs equal a run without it."""
    import torch

    from curation.lake.tables import KeyedWriter
    from tests.wanmodel.test_dit_train import BUCKETS, TEXT_DIM, write_lake
    from wanmodel.diffusion.flow_matching import LogitNormal
    from wanmodel.train.dit_data import DataError, LatentIndex, TrainData

    lake = write_lake(tmp_path / "lake", per_bucket=16)
    empty = np.full((1, TEXT_DIM), 7.0, np.float32)
    KeyedWriter(lake, "text_embeddings").append([{
        "text_key": "empty", "text": "", "encoder_id": "planted", "embedding": empty.tobytes(),
        "shape": [1, TEXT_DIM], "dtype": "float32", "status": "ok"}])
    index = LatentIndex.from_lake(lake, list(BUCKETS))

    def data(**kw: object) -> TrainData:
        return TrainData(lake, index, global_batch=8, seed=0, shard=0, shards=1, text_dim=TEXT_DIM, text_len=8,
                         normalize=True, **kw)

    ts = LogitNormal(0.0, 1.0, 1.0)
    plain, off, on = data(), data(caption_dropout=0.0), data(caption_dropout=0.5, empty_text_key="empty")
    dropped = 0
    for step in range(6):
        a, b, c = plain.inputs(step, ts), off.inputs(step, ts), on.inputs(step, ts)
        assert torch.equal(a.context, b.context) and torch.equal(a.noise, c.noise) and torch.equal(a.sigma, c.sigma)
        is_empty = [bool((c.context[i, 0] == 7.0).all() and (c.context[i, 1:] == 0).all()) for i in range(8)]
        kept = [torch.equal(c.context[i], a.context[i]) for i in range(8)]
        assert all(e != k for e, k in zip(is_empty, kept))  # each sample: its caption or the empty prompt
        assert torch.equal(c.context, on.inputs(step, ts).context)  # same step, same draw
        dropped += sum(is_empty)
    assert 12 <= dropped <= 36  # 48 samples at p = 0.5
    with pytest.raises(DataError, match="empty_text_key"):
        data(caption_dropout=0.1)
