"""The DiT trainer on planted latents: it learns, checkpoints resume exactly, FSDP2 under Ray Train matches one
process, and bad input fails before any step with a message naming the problem.

The planted world: each caption (one of ``COLOURS``) has its own fixed latent pattern and text embedding; every
latent row is that pattern (plus a small posterior variance), in two buckets of different shapes.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from curation.jobconfig import ConfigError
from curation.lake.tables import KeyedWriter, Lake
from wanmodel.models.vae_config import LATENT_MEAN, LATENT_STD
from wanmodel.train.dit_config import DiTTrainConfig

COLOURS = ("red", "green", "blue", "white")
BUCKETS = {"img_4x4": (16, 1, 4, 4), "vid_4x6": (16, 2, 4, 6)}
TEXT_DIM = 32  # the tiny DiT's text_dim


def _pattern(colour: int, shape: tuple[int, ...]) -> np.ndarray:
    g = np.random.default_rng(colour)
    normalised = g.standard_normal(shape[:2] + (1, 1)).astype(np.float32) * np.ones(shape, np.float32)
    mean = np.array(LATENT_MEAN[:shape[0]], np.float32).reshape(-1, 1, 1, 1)
    std = np.array(LATENT_STD[:shape[0]], np.float32).reshape(-1, 1, 1, 1)
    return normalised * std + mean  # what the VAE would store: normalises to a per-channel constant pattern


def latent_row(latent_id: str, bucket: str, shape: tuple[int, ...], colour: int, text_key: str | None,
               mean: np.ndarray | None = None) -> dict[str, Any]:
    mean = _pattern(colour, shape) if mean is None else mean
    return {"latent_id": latent_id, "clip_id": latent_id.split("@")[0], "bucket": bucket,
            "media_type": "image" if shape[1] == 1 else "video", "vae_id": "planted",
            "mean": mean.astype(np.float32).tobytes(), "logvar": np.full(shape, -8.0, np.float32).tobytes(),
            "shape": list(shape), "dtype": "float32", "caption": f"a {COLOURS[colour]} square",
            "text_key": text_key, "status": "ok"}


def write_lake(root: Path, per_bucket: int = 8, buckets: dict[str, tuple[int, ...]] = BUCKETS,
               extra_rows: list[dict[str, Any]] | None = None, skip_text: set[str] = frozenset()) -> Lake:
    """``per_bucket`` rows in each bucket, colours cycling, and one text embedding per colour."""
    lake = Lake(str(root))
    rows = [latent_row(f"clip{b}_{i:03d}@{name}@planted", name, shape, i % len(COLOURS), f"key_{i % len(COLOURS)}")
            for b, (name, shape) in enumerate(buckets.items()) for i in range(per_bucket)]
    KeyedWriter(lake, "latents").append(rows + (extra_rows or []))
    texts = []
    for c, colour in enumerate(COLOURS):
        if f"key_{c}" in skip_text:
            continue
        emb = np.random.default_rng(100 + c).standard_normal((3, TEXT_DIM)).astype(np.float32)
        texts.append({"text_key": f"key_{c}", "text": f"a {colour} square", "encoder_id": "planted",
                      "embedding": emb.tobytes(), "shape": [3, TEXT_DIM], "dtype": "float32", "status": "ok"})
    KeyedWriter(lake, "text_embeddings").append(texts)
    return lake


def make_config(lake: Lake, tmp: Path, **over: Any) -> DiTTrainConfig:
    base: dict[str, Any] = {"lake": lake.root, "buckets": list(BUCKETS), "steps": 6, "global_batch_size": 4,
                            "seed": 3, "ray": False, "log_every": 1, "checkpoint_every": 3,
                            "checkpoint_dir": str(tmp / "ckpt"), "metrics_dir": str(tmp / "metrics"),
                            "optim": {"lr": 2e-3}, "peak_tflops": 0.1}
    base.update(over)
    return DiTTrainConfig(**base)


def _metrics(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------- learning
def test_tiny_dit_learns_planted_latents_and_exports(tmp_path: Path) -> None:
    from wanmodel.models.dit_adapters import load_dit
    from wanmodel.train.dit import train_dit

    lake = write_lake(tmp_path / "lake")
    cfg = make_config(lake, tmp_path, steps=80, checkpoint_every=40, log_every=10,
                      export_dir=str(tmp_path / "export"), export_layouts=["ours", "official", "diffusers"],
                      optim={"lr": 3e-3, "warmup_steps": 5, "ema_decay": 0.9})
    result = train_dit(cfg)
    losses = [result.losses[s] for s in sorted(result.losses)]
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.6 * first, f"loss did not fall: first 10 steps {first:.3f}, last 10 {last:.3f}"
    records = _metrics(tmp_path / "metrics")
    assert [r["step"] for r in records] == list(range(10, 81, 10))
    for key in ("loss", "tokens_per_s", "samples_per_s", "step_time_s", "peak_memory_gb", "mfu", "lr"):
        assert all(math.isfinite(r[key]) and r[key] >= 0 for r in records), key
    assert records[0]["lr"] == pytest.approx(3e-3)  # warmup over after 5 steps
    assert list((tmp_path / "metrics" / "tb").glob("events.out.tfevents.*")), "no TensorBoard events"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.name.startswith("step_")) == \
        ["step_000040", "step_000080"]
    assert sorted(Path(p).name for p in result.exported) == ["diffusers", "official", "ours"]
    exported = load_dit(tmp_path / "export" / "official")
    reloaded = load_dit(tmp_path / "export" / "ours")
    for (name, a), (_, b) in zip(exported.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert exported.head.head.weight.abs().max() > 0  # trained weights, not the zero-initialised head


def test_non_finite_loss_skips_the_step_and_is_counted(tmp_path: Path) -> None:
    from wanmodel.train.dit import train_dit

    shape = BUCKETS["img_4x4"]
    poisoned = np.full(shape, np.nan, np.float32)
    lake = write_lake(tmp_path / "lake", per_bucket=6, buckets={"img_4x4": shape},
                      extra_rows=[latent_row(f"nan_{i}@img_4x4@planted", "img_4x4", shape, 0, "key_0", poisoned)
                                  for i in range(2)])
    cfg = make_config(lake, tmp_path, buckets=["img_4x4"], steps=4, global_batch_size=2, checkpoint_dir=None)
    result = train_dit(cfg)  # one epoch of 4 batches of 2: the 2 NaN rows spoil 1 or 2 of them
    nan_steps = [s for s, v in result.losses.items() if not math.isfinite(v)]
    assert nan_steps and result.skipped == len(nan_steps)
    finite = [v for v in result.losses.values() if math.isfinite(v)]
    assert len(finite) >= 2  # the later clean batches still train: the skipped steps did not poison the weights
    assert _metrics(tmp_path / "metrics")[-1]["skipped"] == result.skipped


def test_export_of_the_ema_weights(tmp_path: Path) -> None:
    """export_ema exports the EMA (decay 0.5 over 4 steps): trained, and not the raw weights."""
    from wanmodel.models.dit_adapters import load_dit
    from wanmodel.train.dit import train_dit

    lake = write_lake(tmp_path / "lake")
    for name, ema in (("ema", True), ("raw", False)):
        train_dit(make_config(lake, tmp_path / name, steps=4, export_dir=str(tmp_path / name / "export"),
                              export_ema=ema, optim={"lr": 1e-2, "ema_decay": 0.5}))
    ema_head, raw_head = (load_dit(tmp_path / n / "export" / "ours").head.head.weight for n in ("ema", "raw"))
    assert ema_head.abs().max() > 0 and not torch.allclose(ema_head, raw_head)


# ------------------------------------------------------------------------------------------- exact resume
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path: Path) -> None:
    from wanmodel.train.dit import train_dit

    lake = write_lake(tmp_path / "lake")
    full = train_dit(make_config(lake, tmp_path / "a", steps=8, checkpoint_every=4,
                                 optim={"lr": 2e-3, "ema_decay": 0.5}))
    first = train_dit(make_config(lake, tmp_path / "b", steps=4, checkpoint_every=4,
                                  optim={"lr": 2e-3, "ema_decay": 0.5}))
    resumed = train_dit(make_config(lake, tmp_path / "b", steps=8, checkpoint_every=4,
                                    optim={"lr": 2e-3, "ema_decay": 0.5}))
    assert resumed.start_step == 4
    assert {**first.losses, **resumed.losses} == full.losses  # bit for bit


@pytest.mark.slow  # the inductor compile of the tiny block, per bucket shape: about a minute on 2 cores
def test_compiled_blocks_train_like_eager_and_resume_its_checkpoints(tmp_path: Path) -> None:
    """``parallel.compile``: the same losses as the eager model (float reordering only), and the parameter names
    unchanged, so a compiled run resumes an eager run's checkpoint and goes on as the eager run does."""
    from torch._dynamo.utils import counters

    from wanmodel.train.dit import train_dit

    lake, held = write_lake(tmp_path / "lake"), write_lake(tmp_path / "held", per_bucket=2)
    validation = {"lake": held.root, "every": 2}  # run eagerly in a compiled run (compiler stance force_eager)
    eager = train_dit(make_config(lake, tmp_path / "eager", steps=8, checkpoint_every=4, validation=validation))
    graphs = counters["stats"]["unique_graphs"]
    compiled = train_dit(make_config(lake, tmp_path / "compiled", steps=4, checkpoint_every=4, validation=validation,
                                     parallel={"compile": True, "activation_checkpointing": True}))
    assert counters["stats"]["unique_graphs"] > graphs  # the blocks did run compiled
    for step in range(1, 5):
        assert compiled.losses[step] == pytest.approx(eager.losses[step], rel=1e-4, abs=1e-6), step
    assert sorted(compiled.val_losses) == [0, 2, 4]
    for step in (0, 2, 4):
        assert compiled.val_losses[step] == pytest.approx(eager.val_losses[step], rel=1e-4), step
    train_dit(make_config(lake, tmp_path / "switch", steps=4, checkpoint_every=4))  # eager up to step 4
    resumed = train_dit(make_config(lake, tmp_path / "switch", steps=8, checkpoint_every=4,
                                    parallel={"compile": True, "activation_checkpointing": True}))
    assert resumed.start_step == 4 and sorted(resumed.losses) == [5, 6, 7, 8]
    for step in range(5, 9):
        assert resumed.losses[step] == pytest.approx(eager.losses[step], rel=1e-4, abs=1e-6), step


def test_cosine_schedule_decays_to_its_floor_and_resumes_exactly(tmp_path: Path) -> None:
    """Warmup, then cosine to ``min_lr_ratio`` x lr at the last step; a run killed after its checkpoint and run
    again continues the same schedule (the logged lr and the losses equal an uninterrupted run's)."""
    from wanmodel.train.dit import train_dit

    lake = write_lake(tmp_path / "lake")
    optim = {"lr": 2e-3, "warmup_steps": 2, "schedule": "cosine", "min_lr_ratio": 0.1}
    full_lr: dict[int, float] = {}
    full = train_dit(make_config(lake, tmp_path / "a", steps=8, checkpoint_every=4, optim=optim),
                     on_log=lambda step, v: full_lr.__setitem__(step, v["lr"]))
    # step s has run with factor(s - 1); the logged lr is the next step's
    expected = [1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1, (s - 1) / 6))) for s in range(2, 9)]
    assert [full_lr[s] for s in range(1, 9)] == pytest.approx([2e-3 * f for f in expected], rel=1e-9)
    assert full_lr[8] == pytest.approx(2e-4)

    def kill_after_checkpoint(step: int, values: dict[str, float]) -> None:
        if step == 5:
            raise KeyboardInterrupt("killed after the step-4 checkpoint")

    with pytest.raises(KeyboardInterrupt):
        train_dit(make_config(lake, tmp_path / "b", steps=8, checkpoint_every=4, optim=optim),
                  on_log=kill_after_checkpoint)
    again_lr: dict[int, float] = {}
    again = train_dit(make_config(lake, tmp_path / "b", steps=8, checkpoint_every=4, optim=optim),
                      on_log=lambda step, v: again_lr.__setitem__(step, v["lr"]))
    assert again.start_step == 4
    assert {s: again.losses[s] for s in range(5, 9)} == {s: full.losses[s] for s in range(5, 9)}
    assert again_lr == {s: full_lr[s] for s in range(5, 9)}


def test_stage_change_takes_weights_only(tmp_path: Path) -> None:
    from wanmodel.train.dit import train_dit

    lake = write_lake(tmp_path / "lake")
    train_dit(make_config(lake, tmp_path / "s1", buckets=["img_4x4"], steps=4))
    nxt = train_dit(make_config(lake, tmp_path / "s2", buckets=["vid_4x6"], steps=2,
                                init_from=str(tmp_path / "s1" / "ckpt")))
    fresh = train_dit(make_config(lake, tmp_path / "s3", buckets=["vid_4x6"], steps=2))
    assert nxt.start_step == 0 and sorted(nxt.losses) == [1, 2]  # a new data position and schedule
    assert nxt.losses[1] != fresh.losses[1]  # but the trained weights


# -------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("case,message", [
    ("empty_bucket", "bucket 'vid_4x6' has no data"),
    ("missing_text", "has no embedding: text_key 'key_2'"),
    ("wrong_shape", "latent 'odd@img_4x4@planted' of bucket 'img_4x4' has shape [16, 1, 6, 6], expected [16, 1, 4, 4]"),
    ("parallel_sizes", "parallel sizes do not multiply to the world size"),
    ("wrong_channels", "do not fit the DiT, which takes [16, F, H, W]"),
    ("grad_accum", "takes 4 samples a step: not divisible into grad_accum_steps 3 micro-batches"),
])
def test_bad_input_fails_before_any_step(tmp_path: Path, case: str, message: str) -> None:
    from wanmodel.train.dit import train_dit

    over: dict[str, Any] = {}
    if case == "empty_bucket":
        lake = write_lake(tmp_path / "lake", buckets={"img_4x4": BUCKETS["img_4x4"]})
    elif case == "missing_text":
        lake = write_lake(tmp_path / "lake", skip_text={"key_2"})
    elif case == "wrong_shape":
        lake = write_lake(tmp_path / "lake", extra_rows=[latent_row("odd@img_4x4@planted", "img_4x4",
                                                                    (16, 1, 6, 6), 0, "key_0")])
    elif case == "wrong_channels":
        lake = write_lake(tmp_path / "lake", buckets={"img_4x4": (8, 1, 4, 4), "vid_4x6": BUCKETS["vid_4x6"]})
    elif case == "grad_accum":
        lake = write_lake(tmp_path / "lake")
        over = {"grad_accum_steps": 3}
    else:
        lake = write_lake(tmp_path / "lake")
        over = {"ray": True, "num_workers": 2, "parallel": {"dp_replicate": 2, "fsdp": 2}}
    cfg = make_config(lake, tmp_path, **over)
    with pytest.raises((ConfigError, ValueError), match=_escape(message)):
        train_dit(cfg)
    assert not (tmp_path / "metrics" / "metrics.jsonl").exists()  # failed before the first step


def _escape(text: str) -> str:
    import re

    return re.escape(text)


# ------------------------------------------------------------------------------------------- Ray Train + FSDP2
_TWO_WORKERS = """
import json, sys
from pathlib import Path
from curation.lake.tables import Lake
from tests.wanmodel.test_dit_train import make_config
from wanmodel.train.dit import train_dit_ray

lake, tmp = Lake(sys.argv[1]), Path(sys.argv[2])
r = train_dit_ray(make_config(lake, tmp / "two", steps=5, ray=True, num_workers=2, checkpoint_every=5,
                              export_dir=str(tmp / "export"), validation={"lake": sys.argv[3], "every": 5}))
print("RESULT " + json.dumps({"losses": r.losses, "val_losses": r.val_losses, "checkpoint": str(r.checkpoint or ""),
                             "exported": [str(p) for p in r.exported]}))
"""


@pytest.mark.slow  # a Ray Train run: ~20 s of start-up
def test_fsdp_on_two_ray_train_workers_matches_one_process(tmp_path: Path) -> None:
    """2 CPU workers (gloo), FSDP2 over both, each with half the global batch: the losses of one process, and
    the held-out losses (every rank runs the same validation batches through the sharded model).

    The Ray run is a job process of its own (its own Ray, RAY_TMPDIR and one torch thread per worker, as a user's
    `ray job` would have): inside the test session it shared the session's 2-CPU Ray with whatever earlier tests
    had left there."""
    import shutil
    import subprocess
    import sys
    import tempfile

    from tests.jobs.test_train_job import job_env, one_thread
    from wanmodel.train.dit import train_dit

    lake, held = write_lake(tmp_path / "lake"), write_lake(tmp_path / "held", per_bucket=2)
    with one_thread():
        one = train_dit(make_config(lake, tmp_path / "one", steps=5, checkpoint_dir=None,
                                    validation={"lake": held.root, "every": 5}))
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's unix sockets need a short path
    env = {**job_env(), "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("RAY_ADDRESS", None)
    try:
        proc = subprocess.run([sys.executable, "-c", _TWO_WORKERS, lake.root, str(tmp_path), held.root], env=env,
                              capture_output=True, text=True, timeout=600, cwd=env["PYTHONPATH"], check=False)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    two = json.loads(line[len("RESULT "):])
    losses = {int(k): v for k, v in two["losses"].items()}
    assert sorted(losses) == [1, 2, 3, 4, 5]
    assert [losses[s] for s in range(1, 6)] == pytest.approx([one.losses[s] for s in range(1, 6)], abs=1e-4)
    assert one.losses[5] < one.losses[1]
    val = {int(k): v for k, v in two["val_losses"].items()}
    assert sorted(val) == [0, 5] and [val[0], val[5]] == pytest.approx([one.val_losses[0], one.val_losses[5]], abs=1e-4)
    assert two["checkpoint"] and Path(two["checkpoint"]).name == "step_000005"
    assert json.loads((Path(two["checkpoint"]) / "meta.json").read_text())["world_size"] == 2
    assert [Path(p).name for p in two["exported"]] == ["ours"]  # the driver exported the sharded checkpoint


# ------------------------------------------------------------------------------------------------- FLOP count
@pytest.mark.parametrize("name,shape", [("tiny", (16, 2, 4, 6)), ("tiny-i2v", (16, 3, 8, 8)),
                                        ("tiny-flf2v", (16, 3, 8, 8))])
def test_flop_count_equals_torch_flop_counter(name: str, shape: tuple[int, int, int, int]) -> None:
    """The analytic count equals what torch's FlopCounterMode counts in a forward pass (math attention)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from wanmodel.models.dit import WanDiT
    from wanmodel.train.metrics import dit_forward_flops

    model = WanDiT(name, attention_backend="sdpa")
    image_tokens = model.config.image_tokens or 257  # flf2v: both frames' tokens
    cond = {"clip_fea": torch.randn(1, image_tokens, 1280), "y": torch.randn(1, 20, *shape[1:])} \
        if model.config.is_i2v else {}
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape), torch.tensor([500.0]), torch.randn(1, 5, TEXT_DIM), **cond)
    assert dit_forward_flops(model.config, shape) == counter.get_total_flops()


@pytest.mark.parametrize("name", ["1.3B", "14B"])
def test_flop_count_agrees_with_a_parameter_count_estimate(name: str) -> None:
    """Weight matmuls ~ 2 x parameters x the tokens each parameter sees: every video token, except the text MLP
    and cross-attention keys/values (the text_len text tokens) and the time MLP (once per sample)."""
    from wanmodel.models.dit import WanDiT
    from wanmodel.train.metrics import dit_forward_flops

    model = WanDiT.from_config(name, device="meta")
    shape = (16, 21, 60, 104)  # 480 x 832, 81 frames
    tokens, text = 21 * 30 * 52, model.config.text_len
    estimate = 0
    for pname, p in model.named_parameters():
        if pname.startswith("text_embedding.") or ".cross_attn.k." in pname or ".cross_attn.v." in pname:
            estimate += 2 * p.numel() * text
        elif pname.startswith(("time_embedding.", "time_projection.")):
            estimate += 2 * p.numel()
        else:
            estimate += 2 * p.numel() * tokens
    assert dit_forward_flops(model.config, shape, attention=False) == pytest.approx(estimate, rel=0.005)
    assert dit_forward_flops(model.config, shape) > 1.5 * estimate  # at 32k tokens attention is a large part


# ----------------------------------------------------------------------- FSDP2 + context parallel, resumed
def _parallel_worker(rank: int, world: int, port: int, cfgs: list[dict[str, Any]], out: str) -> None:
    import torch.distributed as dist

    from wanmodel.train.dit import train_loop
    from wanmodel.train.dit_data import LatentIndex

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    losses: dict[int, float] = {}
    starts = []
    for data in cfgs:  # the first run stops at a checkpoint, the second resumes from it
        cfg = DiTTrainConfig(**data)
        index = LatentIndex.from_lake(Lake(cfg.lake), cfg.buckets or [])
        result = train_loop(cfg, index, torch.device("cpu"))
        losses.update(result.losses)
        starts.append(result.start_step)
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]  # graphs compiled in this rank (parallel.compile)
    Path(out, f"{rank}.json").write_text(json.dumps({"losses": losses, "starts": starts, "graphs": graphs}))
    dist.destroy_process_group()


@pytest.mark.parametrize("parallel,accum", [({"ulysses": 2}, 1), ({"ring": 2}, 1), ({}, 2),
                                            ({"dp_replicate": 2, "fsdp": 1}, 2),
                                            pytest.param({"compile": True, "activation_checkpointing": True}, 1,
                                                         marks=pytest.mark.slow),
                                            pytest.param({"ulysses": 2, "ring": 1, "compile": True}, 1,
                                                         marks=pytest.mark.slow)],
                         ids=["ulysses", "ring", "fsdp-accum2", "replicate-accum2", "fsdp-compiled-checkpointed",
                              "ulysses-compiled"])
def test_parallel_training_resumes_and_matches_one_process(tmp_path: Path, parallel: dict[str, int],
                                                           accum: int) -> None:
    """2 gloo ranks: FSDP2 over both with Ulysses or Ring attention inside (both ranks share each batch), or FSDP2
    / replicas over 2 data shards accumulating gradients over 2 micro-batches each (one reduction per step): the
    one-process losses (one pass over the whole batch) within 1e-4, through a sharded checkpoint written at step 3
    and resumed from; also with every block compiled (``parallel.compile``) and checkpointed under FSDP2, and
    compiled under Ulysses (its collectives run eagerly between the graphs)."""
    import socket

    import torch.multiprocessing as mp

    from wanmodel.train.dit import train_dit

    lake = write_lake(tmp_path / "lake")
    one = train_dit(make_config(lake, tmp_path / "one", steps=5, checkpoint_dir=None))
    cfgs = [make_config(lake, tmp_path / "cp", steps=steps, num_workers=2, ray=True, parallel=parallel,
                        grad_accum_steps=accum, checkpoint_every=3).model_dump(mode="json") for steps in (3, 5)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_parallel_worker, args=(2, port, cfgs, str(tmp_path)), nprocs=2, join=True)
    report = json.loads((tmp_path / "0.json").read_text())
    got = {int(k): v for k, v in report["losses"].items()}
    assert report["starts"] == [0, 3] and sorted(got) == [1, 2, 3, 4, 5]
    assert (report["graphs"] > 0) == bool(parallel.get("compile"))  # compiled blocks under FSDP2 when asked
    assert [got[s] for s in range(1, 6)] == pytest.approx([one.losses[s] for s in range(1, 6)], abs=1e-4)
    meta = json.loads((tmp_path / "cp" / "ckpt" / "step_000005" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 5


def test_gradient_accumulation_equals_one_pass_over_the_batch(tmp_path: Path) -> None:
    """The shard's batch in 4 micro-batches of 1: the losses of one pass over all 4 (the same data, noise and
    sigma), and the micro-batches are the batch's rows in order."""
    from wanmodel.train.dit import micro_batches, train_dit
    from wanmodel.train.dit_data import StepInputs

    lake = write_lake(tmp_path / "lake")
    one = train_dit(make_config(lake, tmp_path / "one", steps=5, checkpoint_dir=None))
    four = train_dit(make_config(lake, tmp_path / "four", steps=5, checkpoint_dir=None, grad_accum_steps=4))
    assert [four.losses[s] for s in range(1, 6)] == pytest.approx([one.losses[s] for s in range(1, 6)], abs=1e-5)
    assert four.losses[5] < four.losses[1]
    inputs = StepInputs(None, torch.arange(8.0).reshape(4, 2), torch.zeros(4, 3, 1),  # type: ignore[arg-type]
                        torch.ones(4, 2), torch.arange(4.0), ["a", "b", "c", "d"])
    parts = micro_batches(inputs, 2)
    assert [p.latent_ids for p in parts] == [["a", "b"], ["c", "d"]]
    assert torch.equal(torch.cat([p.latents for p in parts]), inputs.latents)
    assert torch.equal(parts[1].sigma, torch.tensor([2.0, 3.0]))


def test_each_row_is_normalised_with_its_own_vae_statistics(tmp_path: Path) -> None:
    """Rows that carry ``latents_mean`` / ``latents_std`` (a VAE trained here) are normalised with them, rows of a
    table written before that column with the release's: either way the DiT sees the planted unit-scale pattern
    (``latent_sample: mean``, the default); ``posterior`` adds the posterior noise (std 1 here) on top."""
    import torch

    from wanmodel.diffusion.flow_matching import LogitNormal
    from wanmodel.train.dit_data import LatentIndex, TrainData

    shape = BUCKETS["img_4x4"]
    own_mean, own_std = np.linspace(-3, 3, 16).astype(np.float32), np.linspace(0.1, 0.5, 16).astype(np.float32)
    rows, patterns = [], {}
    for i in range(4):
        pattern = np.random.default_rng(i).standard_normal(shape).astype(np.float32)
        own = i % 2 == 0
        mean = (pattern * own_std.reshape(-1, 1, 1, 1) + own_mean.reshape(-1, 1, 1, 1) if own else
                pattern * np.array(LATENT_STD, np.float32).reshape(-1, 1, 1, 1)
                + np.array(LATENT_MEAN, np.float32).reshape(-1, 1, 1, 1))
        row = latent_row(f"c{i}@img_4x4@planted", "img_4x4", shape, 0, "key_0", mean=mean)
        row["logvar"] = np.zeros(shape, np.float32).tobytes()  # posterior std 1: far from the mean
        if own:
            row.update(latents_mean=own_mean.tolist(), latents_std=own_std.tolist())
        rows.append(row)
        patterns[row["latent_id"]] = pattern
    lake = write_lake(tmp_path / "lake", per_bucket=0, extra_rows=rows)
    index = LatentIndex.from_lake(lake, ["img_4x4"])
    def inputs(**kw: Any) -> Any:
        return TrainData(lake, index, global_batch=4, seed=0, shard=0, shards=1, text_dim=TEXT_DIM, text_len=8,
                         normalize=True, **kw).inputs(0, LogitNormal(0.0, 1.0, 1.0))

    step, noisy = inputs(), inputs(latent_sample="posterior")
    for latent_id, z in zip(step.latent_ids, step.latents):
        torch.testing.assert_close(z, torch.from_numpy(patterns[latent_id]), atol=1e-5, rtol=1e-5)
    assert torch.equal(step.noise, noisy.noise) and torch.equal(step.sigma, noisy.sigma)  # one random stream
    assert (noisy.latents - step.latents).std() > 0.5


def test_newest_complete_checkpoint_is_chosen(tmp_path: Path) -> None:
    """A folder still being written (``.partial``) or without meta.json (killed mid-rename) is never resumed."""
    from wanmodel.train.checkpointing import latest_checkpoint

    for name, complete in (("step_000004", True), ("step_000008", True), ("step_000012", False),
                           ("step_000016.partial", True)):
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "meta.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000008"
    assert latest_checkpoint(tmp_path / "step_000004") == tmp_path / "step_000004"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_stage_mix_sets_the_share_of_each_media_type_and_keeps_epochs_exact() -> None:
    """With mix image 0.75 / video 0.25, about 3 of 4 steps take an image batch; within each media type's
    epochs every row comes exactly once; the plan of a step does not depend on the steps asked before it."""
    from wanmodel.train.dit_data import LatentIndex
    from wanmodel.train.dit_plan import EpochPlan

    rows = [{"latent_id": f"{b}_{i:02d}", "bucket": b, "shape": [16, 1, 4, 4], "text_key": "k"}
            for b, n in (("img_a", 12), ("img_b", 8), ("vid_a", 8)) for i in range(n)]
    index = LatentIndex(rows, ["img_a", "img_b", "vid_a"])
    media = {"img_a": "image", "img_b": "image", "vid_a": "video"}
    plan = EpochPlan(index, 4, seed=7, mix={"image": 0.75, "video": 0.25}, media=media)
    batches = [plan.batch(s) for s in range(2000)]
    share = sum(b.stream == "image" for b in batches) / len(batches)
    assert 0.72 < share < 0.78
    assert all(media[b.bucket] == b.stream and len({index.rows[i].bucket for i in b.rows}) == 1 for b in batches)
    seen: dict[tuple[str, int], list[int]] = {}
    for b in batches:
        seen.setdefault((b.stream, b.epoch), []).extend(b.rows)
    for stream, total in (("image", 20), ("video", 8)):
        last = max(e for s, e in seen if s == stream)
        for epoch in range(last):  # finished epochs: every row once (image: 5 batches of 4 per epoch)
            assert sorted(seen[stream, epoch]) == sorted(i for i, r in enumerate(index.rows)
                                                         if media[r.bucket] == stream), (stream, epoch)
            assert len(seen[stream, epoch]) == total
    fresh = EpochPlan(index, 4, seed=7, mix={"image": 0.75, "video": 0.25}, media=media)
    assert fresh.batch(1234) == batches[1234]  # a resumed run asks for step 1234 first
