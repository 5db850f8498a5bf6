"""Flow-matching training objective of Wan (report section 4.2.2), in the convention of the released code.

The report writes ``x_t = t x_1 + (1 - t) x_0`` with data ``x_1`` and noise ``x_0``. The released sampler (and the
DiT's timestep input) use the noise level instead: ``sigma = 1 - t``, so with data ``x0`` and Gaussian ``noise``

    x_sigma = (1 - sigma) * x0 + sigma * noise,        target velocity = noise - x0,

and the DiT sees ``timestep = sigma * 1000``. A flow-prediction solver recovers the clean estimate as
``x0 = x_sigma - sigma * v``, which is what diffusers' and the official UniPC do with the DiT's output. The report's
velocity ``x_1 - x_0`` is the negative of ours with time reversed; the two objectives are the same MSE.

Timesteps are drawn from a logit-normal distribution (``sigma = sigmoid(N(mean, std))``), optionally shifted by
``sigma' = s sigma / (1 + (s - 1) sigma)``, the same shift the sampler applies (larger ``s`` spends more steps at
high noise, which long, high-resolution sequences need). Torch only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "NUM_TRAIN_TIMESTEPS",
    "LogitNormal",
    "flow_matching_loss",
    "interpolate",
    "shift_sigmas",
    "velocity_target",
]

NUM_TRAIN_TIMESTEPS = 1000  # the DiT's timestep input is sigma * 1000

ModelFn = Callable[..., torch.Tensor]
"""``model_fn(x_sigma, timestep, **cond) -> velocity`` with ``timestep = sigma * 1000`` of shape [B]."""


def shift_sigmas(sigma: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """The timestep shift ``s * sigma / (1 + (s - 1) * sigma)``: identity at ``s = 1``, fixes 0 and 1, and moves
    every interior sigma up (towards noise) for ``s > 1``."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * sigma / (1 + (shift - 1) * sigma)


@dataclass(frozen=True)
class LogitNormal:
    """``sigma = sigmoid(z)``, ``z ~ N(mean, std)`` (SD3's logit-normal timestep density), then ``shift_sigmas``.

    ``mean=0, std=1`` puts most samples around sigma = 0.5; a positive mean leans to noisier timesteps.
    """

    mean: float = 0.0
    std: float = 1.0
    shift: float = 1.0

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ValueError(f"LogitNormal.std must be > 0, got {self.std}")
        if not self.shift > 0:
            raise ValueError(f"LogitNormal.shift must be > 0, got {self.shift}")

    def sample(self, batch_size: int, *, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``batch_size`` sigmas in (0, 1), float32 math, returned in ``dtype``."""
        z = torch.randn(batch_size, generator=generator, device=device, dtype=torch.float32)
        sigma = torch.sigmoid(self.mean + self.std * z)
        return shift_sigmas(sigma, self.shift).to(dtype)


def _per_sample(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, ...] broadcastable against ``like``."""
    return value.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x_sigma = (1 - sigma) * x0 + sigma * noise`` with per-sample ``sigma`` [B], computed in float32 (at
    least) so a bf16 ``x0`` does not round sigma away from the timestep the DiT is given; returned in x0's dtype."""
    work = torch.promote_types(x0.dtype, torch.float32)
    sigma = _per_sample(sigma.to(work), x0.to(work))
    return ((1 - sigma) * x0.to(work) + sigma * noise.to(work)).to(x0.dtype)


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_sigma / d sigma = ``noise - x0``: what the DiT learns to predict."""
    return noise - x0


def flow_matching_loss(
    model_fn: ModelFn,
    x0: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    timesteps: LogitNormal | None = None,
    noise: torch.Tensor | None = None,
    sigma: torch.Tensor | None = None,
    sample_weights: torch.Tensor | None = None,
    return_per_sample: bool = False,
    **cond: Any,
) -> torch.Tensor:
    """Flow-matching MSE of ``model_fn`` on clean latents ``x0`` [B, ...]: the function a trainer calls.

    Draws Gaussian noise and ``sigma`` (from ``timesteps``, default ``LogitNormal()``) with ``generator``, builds
    ``x_sigma``, calls ``model_fn(x_sigma, sigma * 1000, **cond)`` (``cond``: context, clip_fea, y... passed
    through) and returns the mean over all elements of ``(prediction - (noise - x0))**2``, computed in float32
    (float64 for float64 inputs).
    ``noise`` / ``sigma`` may be given to fix them (tests, variance reduction). ``sample_weights`` [B] scales each
    sample's mean error before averaging over the batch (``sum(w_i * mse_i) / B``). With ``return_per_sample`` the
    per-sample (weighted) errors [B] come back instead of their mean.
    """
    if x0.ndim < 2:
        raise ValueError(f"x0 must be batched [B, ...], got shape {tuple(x0.shape)}")
    batch = x0.shape[0]
    compute_dtype = torch.promote_types(x0.dtype, torch.float32)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=torch.float32).to(x0.dtype)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} differs from x0 shape {tuple(x0.shape)}")
    if sigma is None:
        sigma = (timesteps or LogitNormal()).sample(batch, generator=generator, device=x0.device)
    sigma = sigma.reshape(-1)
    if sigma.shape[0] != batch:
        raise ValueError(f"sigma needs one value per sample ({batch}), got {sigma.shape[0]}")
    x_sigma = interpolate(x0, noise, sigma)
    prediction = model_fn(x_sigma, sigma.to(compute_dtype) * NUM_TRAIN_TIMESTEPS, **cond)
    if prediction.shape != x0.shape:
        raise ValueError(f"model output shape {tuple(prediction.shape)} differs from x0 shape {tuple(x0.shape)}")
    error = (prediction.to(compute_dtype) - velocity_target(x0, noise).to(compute_dtype)) ** 2
    per_sample = error.reshape(batch, -1).mean(dim=1)
    if sample_weights is not None:
        if sample_weights.shape != (batch,):
            raise ValueError(f"sample_weights must have shape ({batch},), got {tuple(sample_weights.shape)}")
        per_sample = per_sample * sample_weights.to(per_sample)
    return per_sample if return_per_sample else per_sample.mean()
