"""Flow matching: the loss and its gradient, the logit-normal sampler, the timestep shift, the solvers' sigmas."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wanmodel.diffusion.flow_matching import (
    LogitNormal,
    flow_matching_loss,
    interpolate,
    shift_sigmas,
    velocity_target,
)
from wanmodel.diffusion.schedulers import (
    base_sigmas,
    prepare_scheduler,
    sampling_sigmas,
)


def _batch(seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(3, 2, 2, 4, 4, generator=g, dtype=dtype)
    noise = torch.randn(3, 2, 2, 4, 4, generator=g, dtype=dtype)
    sigma = torch.tensor([0.1, 0.5, 0.9], dtype=dtype)
    return x0, noise, sigma


def test_interpolation_and_target_by_hand() -> None:
    x0, noise, sigma = _batch()
    x_t = interpolate(x0, noise, sigma)
    torch.testing.assert_close(x_t[1], 0.5 * x0[1] + 0.5 * noise[1])
    torch.testing.assert_close(x_t[0], 0.9 * x0[0] + 0.1 * noise[0])
    # the target is the derivative of x_sigma in sigma
    eps = 1e-3
    finite = (interpolate(x0, noise, sigma + eps) - interpolate(x0, noise, sigma - eps)) / (2 * eps)
    torch.testing.assert_close(finite, velocity_target(x0, noise), atol=1e-3, rtol=0)


def test_loss_known_values() -> None:
    x0, noise, sigma = _batch()
    oracle_seen = {}

    def oracle(x_t, timestep):  # recovers the true velocity from x_t: exact answer -> zero loss
        oracle_seen["timestep"] = timestep
        s = sigma.view(-1, 1, 1, 1, 1)
        return (x_t - (1 - s) * x0) / s - x0

    assert flow_matching_loss(oracle, x0, noise=noise, sigma=sigma).item() == pytest.approx(0.0, abs=1e-9)
    torch.testing.assert_close(oracle_seen["timestep"], sigma * 1000)
    zero = flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, noise=noise, sigma=sigma)
    assert zero.item() == pytest.approx(((noise - x0) ** 2).mean().item(), rel=1e-6)
    per = flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, noise=noise, sigma=sigma, return_per_sample=True)
    weights = torch.tensor([0.0, 1.0, 2.0])
    weighted = flow_matching_loss(lambda x, t: torch.zeros_like(x), x0, noise=noise, sigma=sigma,
                                  sample_weights=weights)
    assert weighted.item() == pytest.approx(((per * weights).sum() / 3).item(), rel=1e-6)


def test_loss_gradient_matches_finite_differences() -> None:
    x0, noise, sigma = _batch(dtype=torch.float64)
    context = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def loss_of(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        def model(x_t, timestep, context):  # a tiny conditioned "DiT": channel mix + time and context terms
            mixed = torch.einsum("ij,bjthw->bithw", weight, x_t)
            return mixed + bias.view(1, -1, 1, 1, 1) * (timestep / 1000).view(-1, 1, 1, 1, 1) \
                + context.view(3, 2, 1, 1, 1)
        return flow_matching_loss(model, x0, noise=noise, sigma=sigma, context=context)

    weight = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss_of, (weight, bias), eps=1e-6, atol=1e-7)


def test_loss_is_seeded_and_uses_generator() -> None:
    x0 = torch.randn(4, 2, 1, 4, 4)
    model = lambda x, t: x * 0.5
    a = flow_matching_loss(model, x0, generator=torch.Generator().manual_seed(3))
    b = flow_matching_loss(model, x0, generator=torch.Generator().manual_seed(3))
    c = flow_matching_loss(model, x0, generator=torch.Generator().manual_seed(4))
    assert a.item() == b.item() and a.item() != c.item()


def test_loss_bad_inputs() -> None:
    x0, noise, sigma = _batch()
    with pytest.raises(ValueError, match="one value per sample"):
        flow_matching_loss(lambda x, t: x, x0, noise=noise, sigma=sigma[:2])
    with pytest.raises(ValueError, match="model output shape"):
        flow_matching_loss(lambda x, t: x[:, :1], x0, noise=noise, sigma=sigma)
    with pytest.raises(ValueError, match="noise shape"):
        flow_matching_loss(lambda x, t: x, x0, noise=noise[:1], sigma=sigma)
    with pytest.raises(ValueError, match="std"):
        LogitNormal(std=0.0)


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (0.5, 0.8), (-1.0, 1.5)])
def test_logit_normal_statistics(mean: float, std: float) -> None:
    sigma = LogitNormal(mean, std).sample(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert ((sigma > 0) & (sigma < 1)).all()
    logit = torch.log(sigma) - torch.log1p(-sigma)
    # standard errors: std/sqrt(n) = 0.011 for std 1.5; 0.03 is about 3 of them
    assert logit.mean().item() == pytest.approx(mean, abs=0.03)
    assert logit.std().item() == pytest.approx(std, abs=0.03)


def test_logit_normal_shift_moves_mass_up() -> None:
    g = torch.Generator().manual_seed(0)
    plain = LogitNormal().sample(20_000, generator=g)
    shifted = LogitNormal(shift=3.0).sample(20_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(shifted, shift_sigmas(plain, 3.0))
    assert shifted.median() > 0.7 > plain.median()


def test_shift_formula_by_hand() -> None:
    assert shift_sigmas(0.5, 5.0) == pytest.approx(2.5 / 3.0)
    assert shift_sigmas(0.25, 3.0) == pytest.approx(0.5)
    assert shift_sigmas(0.1, 1.0) == pytest.approx(0.1)
    assert shift_sigmas(0.0, 7.0) == 0.0 and shift_sigmas(1.0, 7.0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shift"):
        shift_sigmas(0.5, 0.0)


@pytest.mark.parametrize("solver", ["unipc", "euler"])
@pytest.mark.parametrize("steps,shift", [(10, 5.0), (50, 5.0), (40, 3.0)])
def test_scheduler_sigmas_follow_the_shift_formula(solver: str, steps: int, shift: float) -> None:
    scheduler = prepare_scheduler(solver, steps, shift)  # the official grid
    expected = [shift * s / (1 + (shift - 1) * s) for s in np.linspace(0.999, 0.0, steps + 1)[:steps]]
    sigmas = scheduler.sigmas.numpy()
    assert len(sigmas) == steps + 1 and sigmas[-1] == 0.0
    np.testing.assert_allclose(sigmas[:-1], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sampling_sigmas(steps, shift), expected, rtol=0, atol=1e-12)
    timesteps = scheduler.timesteps.double().numpy()
    if solver == "unipc":  # the DiT gets the integer part of sigma * 1000, as both reference pipelines do
        np.testing.assert_array_equal(timesteps, np.floor(np.asarray(expected, dtype=np.float32) * 1000))
    else:
        np.testing.assert_allclose(timesteps, np.asarray(expected) * 1000, atol=1e-3)


def test_diffusers_spacing_of_unipc_matches_the_wan_pipeline_grid() -> None:
    scheduler = prepare_scheduler("unipc", 8, 3.0, spacing="diffusers")
    grid = np.linspace(1.0, 1e-3, 9)[:8]
    expected = 3.0 * grid / (1 + 2.0 * grid)
    expected[0] -= 1e-6  # diffusers nudges sigma = 1 off the singular point
    np.testing.assert_allclose(scheduler.sigmas.numpy()[:-1], expected, atol=1e-6)
    np.testing.assert_allclose(base_sigmas(8, "diffusers"), grid)


def test_unipc_recovers_a_known_ode_solution() -> None:
    # With the exact velocity of a single data point (a straight path), every flow solver lands on x0.
    x0 = torch.randn(1, 4, 2, 3, 3)
    noise = torch.randn(1, 4, 2, 3, 3)
    for solver in ("unipc", "euler"):
        scheduler = prepare_scheduler(solver, 7, 5.0)
        latents = interpolate(x0, noise, scheduler.sigmas[:1])
        for t in scheduler.timesteps:
            latents = scheduler.step(noise - x0, t, latents, return_dict=False)[0]
        torch.testing.assert_close(latents, x0, atol=1e-5, rtol=0)


def test_scheduler_bad_inputs() -> None:
    with pytest.raises(ValueError, match="solver"):
        prepare_scheduler("ddim", 10, 5.0)
    with pytest.raises(ValueError, match="steps"):
        prepare_scheduler("unipc", 0, 5.0)
    with pytest.raises(ValueError, match="spacing"):
        prepare_scheduler("unipc", 10, 5.0, spacing="karras")
    with pytest.raises(ValueError, match="shift"):
        prepare_scheduler("euler", 10, -1.0)
    assert math.isfinite(sampling_sigmas(1, 5.0)[0])


def test_euler_without_diffusers_is_the_torch_solver(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a box without diffusers (the bare GPU box) Euler on the official grid still samples: the torch solver
    steps as diffusers' Euler does."""
    from wanmodel.diffusion import schedulers

    for spacing in ("official",):
        reference = schedulers.prepare_scheduler("euler", 5, 3.0, spacing=spacing)
        with monkeypatch.context() as patch:
            patch.setattr(schedulers, "have_diffusers", lambda: False)
            ours = schedulers.prepare_scheduler("euler", 5, 3.0, spacing=spacing)
        assert isinstance(ours, schedulers.TorchFlowEuler)
        torch.testing.assert_close(ours.sigmas, reference.sigmas.float(), rtol=0, atol=1e-6)
        x, y = torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
        for t in reference.timesteps:
            velocity = torch.full_like(x, 0.5)
            x, y = ours.step(velocity, t, x)[0], reference.step(velocity, t, y, return_dict=False)[0]
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
