"""FP8 linear layers (wanmodel.accel.fp8): the e4m3 quantiser's error bound, the CPU fallback's exactness, the one
linear-layer swap, and the attention-backend switch."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from wanmodel.accel.fp8 import (
    E4M3_MAX,
    FP8Linear,
    dequantize,
    fp8_linear,
    quantize_linears,
    quantize_per_row,
    quantize_per_tensor,
    set_attention_backend,
)
from wanmodel.models.attention import available_backends
from wanmodel.models.dit import DiTConfig, WanDiT
from wanmodel.models.random_init import randomize_

U = 2.0**-4  # unit roundoff of e4m3: 3 mantissa bits, round to nearest
SMALLEST_NORMAL = 2.0**-6  # of e4m3 (exponent bias 7)
SUBNORMAL_HALF_STEP = 2.0**-10  # half the subnormal spacing 2^-9


def wide_range_matrix(rows: int, cols: int, seed: int) -> torch.Tensor:
    """Gaussian values times log-normal magnitudes (about 6 binades), so normal and subnormal e4m3 ranges both
    occur after scaling."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=generator) * torch.exp(2 * torch.randn(rows, cols, generator=generator))


def element_error_bound(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-element bound on |dequantize(quantize(x)) - x|, derived from the format.

    With s the scale, y = x / s lies in [-448, 448]. e4m3 has 3 mantissa bits: in the binade [2^e, 2^(e+1)) with
    e >= -6 (normal numbers) the spacing is 2^(e-3), so round-to-nearest errs by at most 2^(e-4) <= 2^-4 |y|:
    relative error u = 2^-4. Below 2^-6 (subnormals) the spacing is fixed at 2^-9, the error at most 2^-10
    absolute. Multiplying back by s scales both. float32 division/multiplication adds a few ulps (2^-23
    relative), covered by the factor (1 + 2^-20)."""
    y = (x / scale).abs()
    bound = torch.where(y >= SMALLEST_NORMAL, U * x.abs(), SUBNORMAL_HALF_STEP * scale.expand_as(x))
    return bound * (1 + 2.0**-20)


def test_per_tensor_quantiser_error_is_within_the_e4m3_bound():
    x = wide_range_matrix(64, 96, seed=1)
    q, scale = quantize_per_tensor(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == () and scale.dtype == torch.float32
    assert scale.item() == pytest.approx(x.abs().max().item() / E4M3_MAX, rel=1e-7)
    restored = dequantize(q, scale)
    error = (restored - x).abs()
    assert bool((error <= element_error_bound(x, scale)).all())
    normal = (x / scale).abs() >= SMALLEST_NORMAL
    assert normal.float().mean() > 0.5 and (~normal).any()  # both ranges are exercised
    relative = (error[normal] / x.abs()[normal]).max().item()
    assert 0.75 * U < relative <= U * (1 + 2.0**-20)  # the bound is reached, not just respected
    assert (restored.abs().max() - x.abs().max()).abs() <= 1e-6 * x.abs().max()  # amax maps to 448 exactly


def test_per_row_quantiser_error_is_within_the_e4m3_bound():
    x = wide_range_matrix(48, 80, seed=2) * torch.logspace(-3, 3, 48).unsqueeze(1)  # rows of very different size
    x[5] = 0.0
    q, scale = quantize_per_row(x)
    assert scale.shape == (48, 1)
    assert torch.equal(scale.squeeze(1)[torch.arange(48) != 5], x.abs().amax(1)[torch.arange(48) != 5] / E4M3_MAX)
    assert scale[5].item() == 1.0
    restored = dequantize(q, scale)
    assert torch.equal(restored[5], torch.zeros(80))
    assert bool(((restored - x).abs() <= element_error_bound(x, scale)).all())
    # with one scale for the whole matrix the small rows would fall to subnormals / zero: per-row keeps them
    _, tensor_scale = quantize_per_tensor(x)
    assert bool(((x[:8] / tensor_scale).abs() < SMALLEST_NORMAL).float().mean() > 0.9)


def matmul_error_bound(x: torch.Tensor, w: torch.Tensor, scale_x: torch.Tensor, scale_w: torch.Tensor
                       ) -> torch.Tensor:
    """Bound on |x^ w^T - x w^T| per output, from the element bounds |x^ - x| <= u|x| + a_x, |w^ - w| <= u|w| +
    a_w (a = half a subnormal step times the scale):
    |x^ w^ - x w| <= |x^| |w^ - w| + |x^ - x| |w| <= ((1+u)|x| + a_x)(u|w| + a_w) + (u|x| + a_x)|w|, summed over
    the inner dimension; plus float32 accumulation, (K * 2^-24) of sum |x^||w^|, covered by 1e-5 of the bound."""
    a_x, a_w = SUBNORMAL_HALF_STEP * scale_x, SUBNORMAL_HALF_STEP * scale_w
    xa, wa = x.abs().double(), w.abs().double()
    bound = ((1 + U) * xa + a_x) @ (U * wa + a_w).t() + (U * xa + a_x) @ wa.t()
    return bound * (1 + 1e-5)


def test_simulated_fp8_matmul_error_is_within_the_implied_bound():
    x = wide_range_matrix(40, 64, seed=3)
    linear = nn.Linear(64, 48, bias=False)
    with torch.no_grad():
        linear.weight.copy_(wide_range_matrix(48, 64, seed=4))
    layer = FP8Linear.from_linear(linear, mode="fp8-sim")
    with torch.no_grad():
        out = layer(x).double()
    exact = x.double() @ linear.weight.double().t()
    _, scale_x = quantize_per_row(x)
    bound = matmul_error_bound(x, linear.weight.detach(), scale_x.double(), layer.weight_scale.double())
    error = (out - exact).abs()
    assert bool((error <= bound).all())
    # the bound is about 2u = 1/8 of sum |x||w| (worst case, all errors of one sign); measured mean 0.15 of it
    assert 0.05 * bound.mean() < error.mean() < 0.3 * bound.mean()


def test_scaled_mm_path_matches_the_simulation():
    """``fp8_linear`` (``torch._scaled_mm``, runs on recent CPU builds too) multiplies the same quantised operands
    as the simulation; it differs by the bf16 roundings of its result (of the product, of the bias, of the sum;
    the CPU kernel measured up to 2^-8 relative on the product, two roundings) and the accumulation order."""
    torch.manual_seed(5)
    linear = nn.Linear(64, 48)
    x = torch.randn(2, 7, 64)
    layer = FP8Linear.from_linear(linear, mode="fp8-sim")
    try:
        with torch.no_grad():
            out = fp8_linear(x, layer.weight_fp8, layer.weight_scale, linear.bias)
    except (RuntimeError, NotImplementedError) as error:
        pytest.skip(f"torch._scaled_mm has no e4m3 kernel on this CPU build: {error}")
    assert out.dtype == torch.bfloat16 and out.shape == (2, 7, 48)
    with torch.no_grad():
        simulated = layer(x)
    q_x, scale_x = quantize_per_row(x)
    magnitude = dequantize(q_x, scale_x).abs() @ dequantize(layer.weight_fp8, layer.weight_scale).abs().t()
    product = (simulated - linear.bias).abs()
    bound = 2.0**-7 * (product + linear.bias.abs() + simulated.abs()) + 1e-5 * magnitude
    assert bool(((out.float() - simulated).abs() <= bound).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_mode_falls_back_to_the_plain_linear_exactly_on_cpu(dtype):
    torch.manual_seed(6)
    linear = nn.Linear(64, 32).to(dtype)
    x = torch.randn(3, 5, 64, dtype=dtype)
    layer = FP8Linear.from_linear(linear)
    assert layer.mode == "fp8" and not layer.uses_fp8_kernel(x)
    assert layer.weight is linear.weight and layer.bias is linear.bias
    with torch.no_grad():
        assert torch.equal(layer(x), linear(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = linear(x.float())
            got = layer(x.float())
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


def tiny_dit(config: str = "tiny", seed: int = 0) -> WanDiT:
    return randomize_(WanDiT(config), seed).eval()


def tiny_inputs(config: DiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = {"x": torch.randn(2, 16, 3, 4, 6, generator=generator), "timestep": torch.tensor([900.0, 250.0]),
              "context": torch.randn(2, 7, config.text_dim, generator=generator)}
    if config.is_i2v:
        inputs["clip_fea"] = torch.randn(2, 5, config.image_dim, generator=generator)
        inputs["y"] = torch.randn(2, config.in_dim - 16, 3, 4, 6, generator=generator)
    return inputs


def _block_linear_names(config: DiTConfig, skip: tuple[str, ...] = ()) -> set[str]:
    per_block = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                 "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"]
    if config.is_i2v:
        per_block += ["cross_attn.k_img", "cross_attn.v_img"]
    names = {f"blocks.{i}.{name}" for i in range(config.num_layers) for name in per_block}
    return {name for name in names if not any(part in name for part in skip)}


@pytest.mark.parametrize("config_name", ["tiny", "tiny-i2v"])
def test_swap_replaces_exactly_the_block_linears(config_name):
    model = tiny_dit(config_name)
    linears_before = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    keys_before = list(model.state_dict())
    expected = _block_linear_names(model.config)
    assert quantize_linears(model, "fp8-sim") == len(expected) == (24 if model.config.is_i2v else 20)
    assert list(model.state_dict()) == keys_before  # checkpoints save as the plain model's
    swapped = {name for name, m in model.named_modules() if isinstance(m, FP8Linear)}
    assert swapped == expected
    untouched = {name for name, m in model.named_modules() if type(m) is nn.Linear}
    assert untouched == linears_before - expected
    assert {"time_embedding.0", "time_projection.1", "text_embedding.0", "head.head"} <= untouched
    # switching mode changes the layers in place; "off" restores nn.Linear on the same parameters
    assert quantize_linears(model, "fp8") == len(expected)
    assert quantize_linears(model, "fp8") == 0
    weight = model.blocks[0].ffn[0].weight
    assert quantize_linears(model, "off") == len(expected)
    assert not any(isinstance(m, FP8Linear) for m in model.modules())
    assert model.blocks[0].ffn[0].weight is weight and type(model.blocks[0].ffn[0]) is nn.Linear


def test_swap_honours_skip():
    model = tiny_dit()
    expected = _block_linear_names(model.config, skip=("cross_attn.",))
    assert quantize_linears(model, "fp8-sim", skip=("cross_attn.",)) == len(expected) == 12
    assert {name for name, m in model.named_modules() if isinstance(m, FP8Linear)} == expected
    with pytest.raises(TypeError, match="iterable of name substrings"):
        quantize_linears(model, "fp8", skip="ffn")


def test_tiny_dit_fp8_sim_stays_close_and_fp8_falls_back_exactly():
    model = tiny_dit()
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        reference = model(**inputs)
        quantize_linears(model, "fp8")
        fallback = model(**inputs)
        quantize_linears(model, "fp8-sim")
        simulated = model(**inputs)
        quantize_linears(model, "off")
        restored = model(**inputs)
    assert torch.equal(fallback, reference) and torch.equal(restored, reference)
    relative = ((simulated - reference).norm() / reference.norm()).item()
    # measured 0.011-0.014 (seeds 0-2) on this tiny model (two blocks, ten FP8 linears each): real, and bounded
    assert 0.003 < relative < 0.03


def test_bad_mode_names_are_clear_errors():
    model = tiny_dit()
    with pytest.raises(ValueError, match="unknown FP8 mode 'fp16'"):
        quantize_linears(model, "fp16")
    with pytest.raises(ValueError, match="unknown FP8Linear mode 'off'"):
        FP8Linear.from_linear(nn.Linear(16, 16), mode="off")
    with pytest.raises(TypeError, match="takes an nn.Linear"):
        FP8Linear.from_linear(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="unknown attention backend 'int8'"):
        set_attention_backend(model, "int8")
    with pytest.raises(ValueError, match="no attention_backend attribute"):
        set_attention_backend(nn.Linear(2, 2), "sdpa")


def test_set_attention_backend_switches_the_model():
    model = tiny_dit()
    assert set_attention_backend(model, "sdpa") == "auto"
    assert model.attention_backend == "sdpa"
    if "sage" not in available_backends():
        with pytest.raises(ValueError, match="'sage' needs the sageattention package"):
            set_attention_backend(model, "sage")
        assert model.attention_backend == "sdpa"


def test_released_weights_keep_only_the_e4m3_copy():
    torch.manual_seed(7)
    linear = nn.Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    layer = FP8Linear.from_linear(linear)
    layer.release_weight()
    layer.release_weight()  # twice is fine
    assert layer.weight_released and "weight" not in dict(layer.named_parameters())
    assert layer.weight.numel() == 0 and layer.weight.dtype == torch.bfloat16  # the dtype the model reads
    expected = nn.functional.linear(x, dequantize(layer.weight_fp8, layer.weight_scale, torch.bfloat16), linear.bias)
    with torch.no_grad():
        assert torch.equal(layer(x), expected)  # the fallback uses the dequantised weight
    with pytest.raises(ValueError, match="cannot be turned back"):
        layer.to_linear()


def test_swap_with_released_weights_frees_the_originals():
    model = tiny_dit()
    inputs = tiny_inputs(model.config)
    block_weights = sum(module.weight.numel() for name, module in model.named_modules()
                        if name in _block_linear_names(model.config))
    before = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        reference = model(**inputs)
        assert quantize_linears(model, "fp8", release_weights=True) == 20
        weight_only = model(**inputs)
    assert sum(p.numel() for p in model.parameters()) == before - block_weights
    relative = ((weight_only - reference).norm() / reference.norm()).item()
    assert 0.002 < relative < 0.02  # measured 0.008-0.010 (seeds 0-2): weight-only e4m3 error, no activations
    with pytest.raises(ValueError, match="20 FP8 layers .* released"):
        quantize_linears(model, "off")
    assert sum(isinstance(m, FP8Linear) for m in model.modules()) == 20  # nothing was half-restored
