"""Sharded training checkpoints (the DiT's and the VAE's) with ``torch.distributed.checkpoint`` (DCP); DiT export.

Layout of ``checkpoint_dir``::

    step_000020/            a complete checkpoint (the rename is the commit)
        .metadata, __0_0.distcp, ...   DCP shards: model, optimizer, EMA, extra (module, optimizer) pairs such as
                            the VAE's discriminator (each rank writes its own shards)
        (files of ``write_files``, e.g. the VAE's model.safetensors + config.json that ``load_vae`` reads)
        rng_rank0.pt ...    each rank's torch RNG states
        meta.json           step, epoch, scheduler state, skipped steps, config hash, world size
    step_000030.partial/    being written (or left by a killed run; ignored and removed)

Saving writes into ``step_N.partial`` and renames it to ``step_N`` only after every rank has finished and
``meta.json`` is in place, so a kill -9 at any moment leaves either no new checkpoint or a complete one. Under Ray
on several nodes ``checkpoint_dir`` must be shared storage that every worker sees. DCP reshards on load: a run may
resume on a different number of workers. Works the same under FSDP2 (DTensor shards) and on one process.
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

__all__ = ["Extra", "export_checkpoint", "init_optimizer_state", "latest_checkpoint", "load_checkpoint",
           "load_weights_only", "save_checkpoint"]

Extra = Mapping[str, tuple[torch.nn.Module, torch.optim.Optimizer]]  # more (module, optimizer) pairs, by name

STEP_DIR = re.compile(r"^step_(\d{6,})$")


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _no_dist() -> bool:
    return not dist.is_initialized()


@contextlib.contextmanager
def _dcp_quiet() -> Iterator[None]:
    """DCP warns that it assumes one process when torch.distributed is not initialised: that is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def latest_checkpoint(directory: str | Path | None) -> Path | None:
    """The newest complete ``step_N`` folder under ``directory`` (or ``directory`` itself if it is one)."""
    if directory is None:
        return None
    directory = Path(directory)
    if (directory / "meta.json").is_file() and STEP_DIR.match(directory.name):
        return directory
    if not directory.is_dir():
        return None
    done = [p for p in directory.iterdir() if STEP_DIR.match(p.name) and (p / "meta.json").is_file()]
    return max(done, key=lambda p: int(STEP_DIR.match(p.name).group(1)), default=None)  # type: ignore[union-attr]


def init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create an optimizer's state now (a zero-gradient step at lr 0) rather than at its first save: DCP's
    ``get_state_dict`` does this to an optimizer that has not stepped yet, so a run that saves before an optimizer's
    first step (the VAE's discriminator before ``gan_start_step``) would otherwise differ from one that does not."""
    from torch.distributed.checkpoint.state_dict import _init_optim_state

    _init_optim_state(optimizer)


def _train_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 ema: dict[str, torch.Tensor] | None, extra: Extra | None = None) -> dict[str, Any]:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    if ema is not None:
        state["ema"] = ema
    for name, (module, module_optimizer) in (extra or {}).items():
        state[f"{name}_model"], state[f"{name}_optim"] = get_state_dict(module, module_optimizer)
    return state


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(directory: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema: dict[str, torch.Tensor] | None, meta: dict[str, Any], keep: int = 2,
                    extra: Extra | None = None, write_files: Callable[[Path], None] | None = None) -> Path:
    """Write ``step_{step}`` atomically (every rank calls this); returns its path. ``write_files(folder)`` runs on
    rank 0 before the commit, for files beside the shards."""
    final = Path(directory) / f"step_{step:06d}"
    partial = final.with_name(final.name + ".partial")
    if _rank() == 0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    _barrier()
    with _dcp_quiet():
        dcp.save(_train_state(model, optimizer, ema, extra), checkpoint_id=str(partial), no_dist=_no_dist())
    torch.save(_rng_state(), partial / f"rng_rank{_rank()}.pt")
    _barrier()
    if _rank() == 0:
        if write_files is not None:
            write_files(partial)
        world = dist.get_world_size() if dist.is_initialized() else 1
        (partial / "meta.json").write_text(json.dumps({**meta, "step": step, "world_size": world}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        _prune(Path(directory), keep)
    _barrier()
    return final


def _prune(directory: Path, keep: int) -> None:
    """Remove all but the newest ``keep`` complete checkpoints, and stale partial ones."""
    for stale in directory.glob("step_*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    done = sorted((p for p in directory.iterdir() if STEP_DIR.match(p.name)), key=lambda p: p.name)
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema: dict[str, torch.Tensor] | None, extra: Extra | None = None) -> dict[str, Any]:
    """Restore model, optimizer, EMA, the ``extra`` pairs and this rank's RNG from ``path``; returns ``meta.json``."""
    state = _train_state(model, optimizer, ema, extra)
    with _dcp_quiet():
        dcp.load(state, checkpoint_id=str(path), no_dist=_no_dist())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    for name, (module, module_optimizer) in (extra or {}).items():
        set_state_dict(module, module_optimizer, model_state_dict=state[f"{name}_model"],
                       optim_state_dict=state[f"{name}_optim"])
    rng_file = path / f"rng_rank{_rank()}.pt"
    if rng_file.is_file():  # absent when resuming on more ranks than saved: the step seeds carry the data noise
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return json.loads((path / "meta.json").read_text())


def load_weights_only(path: str | Path, model: torch.nn.Module, ema: bool = False) -> Path:
    """Take the model weights (or the EMA weights) of a checkpoint; nothing else (a new stage's start)."""
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"init_from {str(path)!r}: no complete checkpoint (step_N with meta.json) there")
    key = "ema" if ema else "model"
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        set_model_state_dict,
    )

    state = {key: get_model_state_dict(model)}
    with _dcp_quiet():
        dcp.load(state, checkpoint_id=str(found), no_dist=_no_dist())
    set_model_state_dict(model, state[key])
    return found


def export_checkpoint(path: str | Path, out_dir: str | Path, layouts: list[str], *, model_name: str,
                      model_overrides: dict[str, Any] | None = None, ema: bool = False) -> list[Path]:
    """Load a checkpoint into one plain ``WanDiT`` (one process, no torch.distributed) and write it through
    ``save_dit`` in each layout (``out_dir/<layout>``). Returns the folders."""
    from wanmodel.models.dit import DiTConfig, WanDiT
    from wanmodel.models.dit_adapters import save_dit

    if dist.is_initialized():
        raise RuntimeError("export_checkpoint runs in one process (the driver), not inside a distributed group")
    model = WanDiT(DiTConfig.named(model_name, **(model_overrides or {})))
    load_weights_only(path, model, ema=ema)
    return [save_dit(model, Path(out_dir) / layout, layout=layout) for layout in layouts]
