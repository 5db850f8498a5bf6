"""Flow-matching ODE solvers for sampling: diffusers' UniPC and Euler schedulers, configured as Wan's pipelines do.

Both solvers take the DiT's velocity (``prediction_type="flow_prediction"``) and walk sigma from near 1 down to 0
on the shifted grid ``sigma' = s * sigma / (1 + (s - 1) * sigma)``. Two base grids are offered:

- ``"official"`` (default): ``linspace(1 - 1/1000, 0, steps + 1)[:steps]``, the grid of the released sampler
  (``FlowUniPCMultistepScheduler.set_timesteps`` in the official code);
- ``"diffusers"``: whatever the diffusers scheduler's own ``set_timesteps(steps)`` gives, i.e. what
  ``WanPipeline`` runs (for UniPC ``linspace(1, 1/1000, steps + 1)[:steps]``).

The DiT receives the scheduler's ``timesteps`` (UniPC: ``int(sigma * 1000)``, as both reference pipelines do;
Euler: ``sigma * 1000``). diffusers is imported only when a scheduler is built; without it, Euler is
``TorchFlowEuler`` (torch only).
"""
from __future__ import annotations

import importlib.util
from typing import Any, Literal

import numpy as np
import torch

from wanmodel.diffusion.flow_matching import NUM_TRAIN_TIMESTEPS, shift_sigmas

__all__ = ["SOLVERS", "SPACINGS", "base_sigmas", "make_scheduler", "prepare_scheduler", "sampling_sigmas"]

Solver = Literal["unipc", "euler"]
Spacing = Literal["official", "diffusers"]
SOLVERS: tuple[str, ...] = ("unipc", "euler")
SPACINGS: tuple[str, ...] = ("official", "diffusers")


def _diffusers_schedulers() -> Any:
    try:
        from diffusers import schedulers
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("sampling needs the diffusers package for its UniPC/Euler flow-matching schedulers "
                          "(pip install 'diffusers==0.42.*')") from error
    return schedulers


def _check(solver: str, num_steps: int | None, shift: float, spacing: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    if num_steps is not None and (not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1):
        raise ValueError(f"number of sampling steps must be an int >= 1, got {num_steps!r}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")


def base_sigmas(num_steps: int, spacing: Spacing = "official",
                num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """Unshifted sigma grid of ``num_steps`` values, from near 1 (noise) downwards (float64)."""
    _check("unipc", num_steps, 1.0, spacing)
    if spacing == "official":
        return np.linspace(1.0 - 1.0 / num_train_timesteps, 0.0, num_steps + 1)[:num_steps]
    return np.linspace(1.0, 1.0 / num_train_timesteps, num_steps + 1)[:num_steps]


def sampling_sigmas(num_steps: int, shift: float, spacing: Spacing = "official") -> np.ndarray:
    """The shifted sigmas a sampler visits (without the terminal 0): the formula the schedulers must follow."""
    _check("unipc", num_steps, shift, spacing)
    return shift_sigmas(base_sigmas(num_steps, spacing), shift)


def make_scheduler(solver: Solver = "unipc", shift: float = 5.0, *, solver_order: int = 2,
                   num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> Any:
    """A fresh diffusers scheduler for Wan: ``UniPCMultistepScheduler`` (flow prediction, flow sigmas,
    ``flow_shift``; bh2, order 2, final sigma 0: the released Wan diffusers config) or
    ``FlowMatchEulerDiscreteScheduler`` (``shift``)."""
    _check(solver, None, shift, "official")
    schedulers = _diffusers_schedulers()
    if solver == "unipc":
        return schedulers.UniPCMultistepScheduler(
            num_train_timesteps=num_train_timesteps, prediction_type="flow_prediction", use_flow_sigmas=True,
            flow_shift=shift, solver_order=solver_order, solver_type="bh2", predict_x0=True,
            lower_order_final=True, final_sigmas_type="zero", timestep_spacing="linspace")
    return schedulers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)


class TorchFlowEuler:
    """Flow-matching Euler with the diffusers scheduler interface (``timesteps``, ``sigmas``, ``step``), torch only:
    what ``prepare_scheduler("euler", ..., spacing="official")`` returns where diffusers is not installed (the bare
    GPU box). Visits ``sampling_sigmas`` then 0, timesteps sigma x 1000: the steps of
    ``FlowMatchEulerDiscreteScheduler`` on that grid (tested)."""

    def __init__(self, num_steps: int, shift: float, *, device: torch.device | str | None = None) -> None:
        sigmas = torch.tensor([*sampling_sigmas(num_steps, shift, "official").tolist(), 0.0], dtype=torch.float32)
        self.sigmas = sigmas.to(device) if device is not None else sigmas
        self.timesteps = self.sigmas[:-1] * float(NUM_TRAIN_TIMESTEPS)
        self._index = 0

    def step(self, velocity: torch.Tensor, t: torch.Tensor, latents: torch.Tensor, return_dict: bool = False
             ) -> tuple[torch.Tensor]:
        sigma, following = self.sigmas[self._index], self.sigmas[self._index + 1]
        self._index += 1
        return (latents + (following - sigma) * velocity.float(),)


def have_diffusers() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def prepare_scheduler(solver: Solver, num_steps: int, shift: float, *, spacing: Spacing = "official",
                      device: torch.device | str | None = None, solver_order: int = 2) -> Any:
    """A scheduler of ``solver`` with its ``num_steps`` timesteps set on the chosen grid, ready for ``step``.

    ``scheduler.timesteps`` [num_steps] feed the DiT; ``scheduler.sigmas`` [num_steps + 1] end with 0. Euler on
    the official grid without diffusers installed is ``TorchFlowEuler``; UniPC and diffusers' own grid need diffusers.
    """
    _check(solver, num_steps, shift, spacing)
    if solver == "euler" and spacing == "official" and not have_diffusers():
        return TorchFlowEuler(num_steps, shift, device=device)
    scheduler = make_scheduler(solver, shift, solver_order=solver_order)
    if spacing == "official":
        # Both schedulers apply their configured shift to the sigmas they are given.
        scheduler.set_timesteps(sigmas=base_sigmas(num_steps, "official"), device=device)
    else:
        scheduler.set_timesteps(num_steps, device=device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)  # step i is timesteps[i] even if two timesteps round to the same integer
    return scheduler
