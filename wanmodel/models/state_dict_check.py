"""Checkpoint key checks shared by the VAE and DiT loaders: errors that name what is missing, extra or misshapen."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


def first_keys(keys: Iterable[str], count: int = 5) -> str:
    """The first ``count`` keys joined, with how many more there are."""
    keys = list(keys)
    shown = ", ".join(keys[:count])
    return shown + (f", ... ({len(keys) - count} more)" if len(keys) > count else "")


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> None:
    """ValueError naming (a few of) the missing and unexpected keys and the shape mismatches, if any."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {first_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {first_keys(unexpected)}")
    mismatched = [f"{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}"
                  for key, value in expected.items() if key in state_dict and state_dict[key].shape != value.shape]
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es) (checkpoint vs model): {first_keys(mismatched)}")
    if problems:
        config = getattr(model, "config", None)
        raise ValueError(f"{what} checkpoint does not match the model ({config}): " + "; ".join(problems))
