"""The trainer's held-out loss (``validation`` in the DiT training config) on the planted world of
``test_dit_train``: it falls as the model learns the patterns, equals the loss of the exported weights, changes no
training step, resumes exactly, and a bad validation lake fails before any step."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from curation.jobconfig import ConfigError
from curation.lake.tables import KeyedWriter
from tests.wanmodel.test_dit_train import BUCKETS, latent_row, make_config, write_lake


def _validation(root: Path, **over: Any) -> dict[str, Any]:
    return {"lake": str(root), "every": 20, **over}


def test_held_out_loss_falls_and_changes_no_training_step(tmp_path: Path) -> None:
    """Held-out rows of the planted patterns (other latent ids, same captions): the loss at step 0 is the untrained
    model's, it falls as the model learns, the last one equals the exported weights' loss, and the training losses
    are bit for bit those of a run without validation (it draws from no generator the training uses)."""
    from wanmodel.models.dit_adapters import load_dit
    from wanmodel.train.dit import Runtime, build_model, train_dit
    from wanmodel.train.dit_validation import ValidationSet, held_out_index

    lake, held = write_lake(tmp_path / "lake"), write_lake(tmp_path / "held", per_bucket=3)
    optim = {"lr": 3e-3, "warmup_steps": 5}
    cfg = make_config(lake, tmp_path / "with", steps=60, checkpoint_every=60, log_every=10, optim=optim,
                      export_dir=str(tmp_path / "export"), validation=_validation(held.root))
    with_val = train_dit(cfg)
    without = train_dit(make_config(lake, tmp_path / "without", steps=60, checkpoint_every=60, log_every=10,
                                    optim=optim))
    assert with_val.losses == without.losses  # bit for bit
    assert sorted(with_val.val_losses) == [0, 20, 40, 60]
    curve = [with_val.val_losses[s] for s in (0, 20, 40, 60)]
    assert curve == sorted(curve, reverse=True) and curve[-1] < 0.7 * curve[0], curve  # measured: 64 %

    untrained = build_model(cfg, Runtime(torch.device("cpu"), 0, 1, None))  # the run's initial weights
    val = ValidationSet(held, held_out_index(held, list(BUCKETS)), text_dim=untrained.config.text_dim,
                        text_len=untrained.config.text_len, sigmas=[0.2, 0.4, 0.6, 0.8], seed=1234)
    assert val.rows == 6
    assert val.loss(untrained) == with_val.val_losses[0]
    assert val.loss(load_dit(tmp_path / "export" / "ours")) == pytest.approx(with_val.val_losses[60], abs=1e-6)
    records = [json.loads(x) for x in (tmp_path / "with" / "metrics" / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
    assert logged == with_val.val_losses
    assert all("loss" in r for r in records if "val_loss" not in r)


def test_resumed_run_logs_the_uninterrupted_runs_held_out_losses(tmp_path: Path) -> None:
    from wanmodel.train.dit import train_dit

    lake, held = write_lake(tmp_path / "lake"), write_lake(tmp_path / "held", per_bucket=2)
    val = _validation(held.root, every=4)
    full = train_dit(make_config(lake, tmp_path / "a", steps=8, checkpoint_every=4, validation=val))
    first = train_dit(make_config(lake, tmp_path / "b", steps=4, checkpoint_every=4, validation=val))
    resumed = train_dit(make_config(lake, tmp_path / "b", steps=8, checkpoint_every=4, validation=val))
    assert sorted(full.val_losses) == [0, 4, 8]
    assert sorted(resumed.val_losses) == [4, 8]  # the step it resumed at again (a kill may have come before it)
    assert {**first.val_losses, **resumed.val_losses} == full.val_losses  # bit for bit, step 4 in both processes
    assert resumed.val_losses[4] == first.val_losses[4]


@pytest.mark.parametrize("case,message", [
    ("no_rows_in_buckets", "has no latents (status ok) in the run's buckets ['img_4x4', 'vid_4x6']; it holds "
                           "['other_8x8']"),
    ("no_table", "has no latents table: run the encode job on the held-out clips first"),
    ("missing_text", "has no embedding: text_key 'key_1'"),
    ("wrong_shape", "latent 'odd@img_4x4@planted' of bucket 'img_4x4' has shape [16, 1, 6, 6], expected "
                    "[16, 1, 4, 4]"),
    ("bad_sigma", "validation sigmas must be a non-empty list of values in (0, 1); got [0.0, 0.5]"),
])
def test_bad_validation_lake_fails_before_any_step(tmp_path: Path, case: str, message: str) -> None:
    import re

    from wanmodel.train.dit import train_dit

    lake = write_lake(tmp_path / "lake")
    held_root, over = tmp_path / "held", {}
    if case == "no_rows_in_buckets":
        write_lake(held_root, per_bucket=2, buckets={"other_8x8": (16, 1, 8, 8)})
    elif case == "no_table":
        held_root.mkdir()
    elif case == "missing_text":
        write_lake(held_root, per_bucket=2, skip_text={"key_1"})
    elif case == "wrong_shape":
        held = write_lake(held_root, per_bucket=2)
        KeyedWriter(held, "latents").append([latent_row("odd@img_4x4@planted", "img_4x4", (16, 1, 6, 6), 0,
                                                        "key_0", np.zeros((16, 1, 6, 6), np.float32))])
    else:
        over = {"sigmas": [0.0, 0.5]}
    with pytest.raises((ConfigError, ValueError), match=re.escape(message)):
        train_dit(make_config(lake, tmp_path, validation=_validation(held_root, **over)))
    assert not (tmp_path / "metrics" / "metrics.jsonl").exists()  # failed before the first step


def test_held_out_loss_does_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    """``batch_size`` is a memory setting: each row's noise comes from (seed, latent_id), not from its batch."""
    from wanmodel.models.dit import WanDiT
    from wanmodel.train.dit_validation import ValidationSet, held_out_index

    held = write_lake(tmp_path / "held", per_bucket=3)
    torch.manual_seed(0)
    model = WanDiT("tiny").eval()
    torch.nn.init.normal_(model.head.head.weight, std=0.02)  # not the zero-initialised head: the forward counts
    index = held_out_index(held, None)
    losses = [ValidationSet(held, index, text_dim=model.config.text_dim, text_len=model.config.text_len,
                            sigmas=[0.3, 0.7], seed=5, batch_size=b).loss(model) for b in (1, 3, 16)]
    assert losses == pytest.approx([losses[0]] * 3, rel=1e-6)
    other_seed = ValidationSet(held, index, text_dim=model.config.text_dim, text_len=model.config.text_len,
                               sigmas=[0.3, 0.7], seed=6).loss(model)
    assert abs(other_seed - losses[0]) > 1e-4  # the seed does pick the noise
