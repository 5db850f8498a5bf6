"""The toy world (``jobs.toy_world``): reference captions with known colours, its measurements, and the whole demo
as a user runs it (curation, brief VAE, caches, tiny DiT, samples, Wan-Bench): the samples move towards the
training clips and the prompt's colour is followed clearly more often than by the untrained model; the held-out
loss falls, and an expected failure reports it when it misses the <= 60 % target."""
from __future__ import annotations

import os
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
from jobs.toy_world import kept_clips, reference_captions, split_holdout

REPO = Path(__file__).resolve().parents[2]


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


def test_toy_world_runs_its_steps_on_its_own_thread_count_and_gives_the_old_one_back(monkeypatch) -> None:
    """The figures follow torch's thread count (float sums), so the toy world sets ``torch_threads`` for its steps
    whatever count the process had (a pytest session once gave it 1), and restores that count after, even when a
    step fails; a count below 1 is a config error."""
    import pyarrow as pa
    import torch

    import jobs.toy_world as tw

    seen: list[int] = []

    def steps(*args: object) -> str:
        seen.append(torch.get_num_threads())
        if len(seen) == 2:
            raise RuntimeError("a step failed")
        return "figures"

    monkeypatch.setattr(tw, "_run_steps", steps)
    before = torch.get_num_threads()
    target = 3 if before != 3 else 2
    assert tw.run_toy_world("out", "lake", pa.table({}), overrides={"torch_threads": target}) == "figures"
    assert seen == [target] and torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="a step failed"):
        tw.run_toy_world("out", "lake", pa.table({}), overrides={"torch_threads": target})
    assert torch.get_num_threads() == before
    assert tw.load_toy_config(tw.CONFIGS / "toy_world.yaml").torch_threads == 2
    with pytest.raises(ValueError, match="torch_threads"):
        tw.load_toy_config(tw.CONFIGS / "toy_world.yaml", {"torch_threads": 0})


def test_figures_print_the_held_out_curve_its_lowest_point_and_the_exported_weights() -> None:
    """The curve in % of step 0's, the lowest point judged against the 60 % target, the exported weights' figure
    beside it; a curve without step 0 (a DiT trained before the trainer validated) is named as such, not judged."""
    from jobs.toy_world import ToyFigures

    def figures(curve: dict[int, float]) -> str:
        return ToyFigures(2.0, 1.5, 0.3, 0.2, 0.2, 0.5, 0.2, ["red"], 1.0, 0.8, 0.2, 0.6, val_curve=curve).text()

    text = figures({0: 2.0, 250: 0.8, 500: 1.0})
    assert "by step): 0: 100, 250: 40, 500: 50; lowest 40 % at step 250 (target <= 60 %: met), the exported " \
           "weights 75 %" in text
    assert "lowest 70 % at step 500 (target <= 60 %: MISSED)" in figures({0: 2.0, 250: 1.6, 500: 1.4})
    old = figures({3000: 1.5})
    assert "not logged from step 0 in this output folder" in old and "lowest" not in old
    assert "during training" not in figures({})


@pytest.mark.slow  # the whole demo, as `make demo` runs it: about 6 minutes on 2 cores
def test_demo_toy_world_learns(tmp_path: Path) -> None:
    """`wan demo` in its own process (a user's command, its own embedded Ray): the held-out flow-matching loss the
    trainer logs falls to <= 60 % of the start and the final model's stays below 85 %, the trained model's samples
    lie nearer the training clips (normalised latents and colour histograms), and prompted with a colour the
    captions name their dominant colour is the prompt's clearly more often than the untrained model's; Wan-Bench
    scored both. The figures come from ``toy/figures.json``."""
    import json
    import subprocess
    import sys
    import tempfile

    import pyarrow.parquet as pq

    out = tmp_path / "demo"
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's unix sockets need a short path
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "RAY_TMPDIR": ray_tmp}
    try:
        proc = subprocess.run([sys.executable, "-m", "jobs.cli", "demo", "--out", str(out)], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=1500, check=False)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    fig = json.loads((out / "toy" / "figures.json").read_text())
    lake = Lake(str(out / "lake"))
    refs = lake.read("captions", filter="model_id = 'reference'").to_pylist()
    kept = [c["clip_id"] for c in kept_clips(lake)]
    captions = reference_captions(lake, pq.read_table(out / "labels.parquet"))
    assert sorted(captions) == sorted(kept)
    assert {r["clip_id"] for r in refs} == set(split_holdout(kept, 5)[0])  # held-out clips not captioned
    assert all(r["caption"] == captions[r["clip_id"]][0] for r in refs)
    figures = {k: v for k, v in fig.items() if k != "bench"}  # every figure in a failure's message (CI's log)
    # the trainer's held-out curve (val_loss every 250 steps): its ends are the loss of the untrained and the
    # exported weights, measured again by the figures; it falls to <= 60 % of the start (measured: 35 % at step
    # 750), then rises as the DiT memorises its 13 training clips (measured: 77 % at step 3000) while the samples
    # learn to follow the prompt's colour (25 % at step 500, 50 % at step 3000)
    curve = {int(k): v for k, v in fig["val_curve"].items()}
    assert sorted(curve) == list(range(0, 3001, 250)), figures
    assert curve[0] == pytest.approx(fig["val_loss_start"], rel=1e-5), figures
    assert curve[3000] == pytest.approx(fig["val_loss_end"], rel=1e-5), figures
    assert min(curve.values()) <= 0.6 * fig["val_loss_start"], figures
    assert fig["val_loss_end"] / fig["val_loss_start"] < 0.85, figures
    assert fig["latent_distance_trained"] < 0.85 * fig["latent_distance_untrained"], figures
    assert fig["hist_distance_trained"] < 0.85 * fig["hist_distance_untrained"], figures
    assert fig["colour_rate_trained"] >= fig["colour_rate_untrained"] + 0.25, figures
    assert fig["colour_rate_trained"] > 2 * fig["chance"], figures
    # Wan-Bench closed the loop: both models sampled into the lake's samples table, scored, compared in out/bench
    assert set(fig["bench"]["totals"]) == {"toy-untrained", "toy-trained"}
    assert (out / "bench" / "report.html").is_file() and (out / "bench" / "summary.json").is_file()
    # its instruction-following dimension (frames whose dominant colour is the prompt's) scores the training; the
    # total is not asserted: its motion and consistency dimensions score the untrained model's flickering noise
    # higher (measured: total 42.3 % untrained, 38.6 % trained; prompt_colour 20 % -> 27 %)
    colour = {run: json.loads((out / "bench" / f"{run}_eval_results.json").read_text())["prompt_colour"][0]
              for run in ("toy-untrained", "toy-trained")}
    assert colour["toy-trained"] > colour["toy-untrained"], (colour, fig["bench"]["text"])
    seeds = 4
    assert lake.read("samples", columns=["sample_id"]).num_rows == 2 * seeds * len(fig["colours"])


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
