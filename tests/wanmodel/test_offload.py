"""Memory modes (wanmodel.accel.offload): block offload gives the plain model's outputs bit for bit with its hooks
in order and removable, model offload moves a model for one stage only, and the memory estimate's known parts."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tests.wanmodel.test_fp8 import tiny_inputs
from wanmodel.accel.fp8 import quantize_linears
from wanmodel.accel.offload import (
    MEMORY_MODES,
    BlockOffload,
    _dit_activation_bytes,
    enable_block_offload,
    estimate_peak_memory,
    memory_table,
    on_device,
)
from wanmodel.models.dit import DiTConfig, WanDiT
from wanmodel.models.random_init import randomize_
from wanmodel.models.vae import FeatureCache, WanVAE


def tiny_dit(config: str = "tiny", seed: int = 0) -> WanDiT:
    return randomize_(WanDiT(DiTConfig.named(config, num_layers=3)), seed).eval()


def _expected_events(layers: int, prefetch: bool) -> list[tuple[str, int]]:
    events: list[tuple[str, int]] = []
    for index in range(layers):
        if not prefetch or index == 0:
            events.append(("fetch", index))
        events.append(("enter", index))
        if prefetch and index + 1 < layers:
            events.append(("fetch", index + 1))
        events.append(("release", index))
    return events


@pytest.mark.parametrize(("config_name", "prefetch"), [("tiny", True), ("tiny", False), ("tiny-i2v", True)])
def test_block_offload_equals_the_plain_model_bitwise(config_name, prefetch):
    model = tiny_dit(config_name)
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        reference = model(**inputs)
        with enable_block_offload(model, "cpu", prefetch=prefetch) as handle:
            first = model(**inputs)
            with torch.inference_mode():  # the swaps of .data work there too
                second = model(**inputs)
    assert torch.equal(first, reference) and torch.equal(second, reference)
    assert handle.events == 2 * _expected_events(3, prefetch)


def test_block_offload_carries_fp8_layers():
    """FP8Linear's e4m3 buffers travel with its block: the offloaded fp8-sim model equals the resident one."""
    model = tiny_dit()
    assert quantize_linears(model, "fp8-sim") == 30
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        reference = model(**inputs)
        with enable_block_offload(model, "cpu") as handle:
            offloaded = model(**inputs)
    assert torch.equal(offloaded, reference)
    names = {slot.name for slot in handle.slots[0]}
    assert {"weight_fp8", "weight_scale", "weight", "bias", "modulation"} <= names


def test_blocks_run_on_copies_and_drop_them_after():
    model = tiny_dit()
    handle = enable_block_offload(model, "cpu")
    stores = [slot.store.data_ptr() for slot in handle.slots[1]]
    seen: dict[str, object] = {}

    def inside(module: nn.Module, args: object) -> None:  # registered after the offload's own pre-hook
        pointers = [tensor.data_ptr() for tensor in (*module.parameters(), *module.buffers())]
        seen["inside"] = pointers
        seen["next_pending"] = 2 in handle._pending

    extra = model.blocks[1].register_forward_pre_hook(inside)
    with torch.no_grad():
        model(**tiny_inputs(model.config))
    extra.remove()
    after = [tensor.data_ptr() for tensor in (*model.blocks[1].parameters(), *model.blocks[1].buffers())]
    assert len(seen["inside"]) == len(stores) > 0
    assert not set(seen["inside"]) & set(stores)  # the block ran on fresh copies, not its CPU tensors
    assert seen["next_pending"]  # and block 2's copy had started
    assert sorted(after) == sorted(stores) and not handle._pending  # afterwards it points at its CPU tensors again
    handle.remove()


def test_hooks_are_removable_and_leave_the_model_plain():
    model = tiny_dit()
    inputs = tiny_inputs(model.config)
    with torch.no_grad():
        reference = model(**inputs)
    handle = enable_block_offload(model, "cpu")
    assert isinstance(handle, BlockOffload) and model._block_offload is handle
    with pytest.raises(ValueError, match="already enabled"):
        enable_block_offload(model, "cpu")
    with pytest.raises(ValueError, match="block offload enabled"), on_device(model, "cpu"):
        pass
    handle.remove()
    handle.remove()  # twice is fine
    assert model._block_offload is None
    assert all(not block._forward_pre_hooks and not block._forward_hooks for block in model.blocks)
    with torch.no_grad():
        assert torch.equal(model(**inputs), reference)
    assert handle.events == []  # nothing ran through the removed hooks
    enable_block_offload(model, "cpu").remove()  # can be enabled again


def test_release_runs_even_when_a_block_fails():
    model = tiny_dit()
    handle = enable_block_offload(model, "cpu")

    def broken(*args: object) -> torch.Tensor:
        raise ValueError("boom")

    model.blocks[0].forward = broken
    with pytest.raises(ValueError, match="boom"), torch.no_grad():
        model(**tiny_inputs(model.config))
    assert handle.events[-1] == ("release", 0)
    handle.remove()


def test_block_offload_needs_a_block_list():
    with pytest.raises(ValueError, match="must be a non-empty ModuleList"):
        enable_block_offload(nn.Linear(2, 2), "cpu")


class _Recorder(nn.Linear):
    """A linear layer that records the devices it is moved to."""

    def __init__(self) -> None:
        super().__init__(2, 2)
        self.moves: list[torch.device] = []

    def to(self, *args, **kwargs):
        self.moves.append(torch.device(args[0]))
        return super().to(*args, **kwargs)


def test_on_device_moves_for_one_stage_and_back():
    module = _Recorder()
    with on_device(module, "cpu") as inside:
        assert inside is module and module.moves == [torch.device("cpu")]
    assert module.moves == [torch.device("cpu")] * 2

    class Encoder:  # the text encoder wrappers hold the module as .model and their device as .device
        def __init__(self) -> None:
            self.model = _Recorder()
            self.device = "home"

    encoder = Encoder()
    with pytest.raises(RuntimeError, match="inside"), on_device(encoder, "cpu"):
        assert encoder.device == torch.device("cpu")
        raise RuntimeError("inside")
    assert encoder.device == "home" and len(encoder.model.moves) == 2  # moved back despite the error
    with pytest.raises(TypeError, match="nn.Module"), on_device(object(), "cpu"):
        pass


def test_memory_estimate_of_the_1_3b_at_480p():
    table = memory_table()
    assert [estimate.mode for estimate in table] == list(MEMORY_MODES)
    peaks = [estimate.peak_bytes for estimate in table]
    assert peaks == sorted(peaks, reverse=True) and peaks[0] > peaks[-1]
    low = table[-1]
    assert low.terms["tokens"] == 21 * 30 * 52 == 32760
    assert low.peak_gib < 8.0  # the target, analytically
    assert table[0].terms["text_encoder_weights"] == 2 * 5_680_000_000
    assert table[0].stages["dit"] - table[1].stages["dit"] == table[0].terms["text_encoder_weights"]
    assert low.terms["dit_streamed_weights"] < table[0].terms["dit_weights"] / 10
    math_attention = estimate_peak_memory(attention="math")
    assert math_attention.terms["attention_workspace"] == 2 * 2 * 12 * 32760**2 + 2 * 2 * 32760 * 1536
    with pytest.raises(ValueError, match="unknown memory mode 'tiny'"):
        estimate_peak_memory("tiny")
    with pytest.raises(ValueError, match="unknown attention workspace"):
        estimate_peak_memory(attention="xformers")
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        estimate_peak_memory(frames=80)


def test_memory_estimate_weights_equal_the_models_bytes():
    """Known answer: the bf16-cast model's tensors (float32 modulation path kept) add up to the estimate."""
    config = DiTConfig.named("tiny", num_layers=3)
    model = WanDiT(config).set_dtype(torch.bfloat16)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    block = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())
    estimate = estimate_peak_memory(dit=config, dtype_bytes=2, vae="tiny", frames=9, height=32, width=48)
    assert estimate.terms["dit_weights"] == total
    assert estimate.terms["dit_streamed_weights"] == total - 3 * block + 2 * block
    for release in (False, True):
        quantized = WanDiT(config).set_dtype(torch.bfloat16)
        quantize_linears(quantized, "fp8", release_weights=release)
        held = sum(t.numel() * t.element_size() for t in (*quantized.parameters(), *quantized.buffers()))
        fp8 = estimate_peak_memory(dit=config, fp8=True, fp8_release_weights=release, vae="tiny", frames=9,
                                   height=32, width=48)
        assert fp8.terms["dit_weights"] == held
    vae = WanVAE("tiny")
    assert estimate_peak_memory(dit=config, vae="tiny", vae_dtype_bytes=4, frames=9, height=32, width=48
                                ).terms["vae_weights"] == sum(p.numel() * 4 for p in vae.parameters())


def test_vae_feature_cache_estimate_equals_the_decoders_cache():
    """Known answer: after a few chunks every cache slot of a real chunked decode holds CACHE_T frames; their
    bytes equal the estimate's feature-cache term."""
    vae = WanVAE("tiny").eval()
    latents = torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    cache = FeatureCache()
    with torch.no_grad():
        for index in range(3):
            cache.start_chunk()
            vae.decoder(latents[:, :, index:index + 1], cache)
    held = sum(slot.numel() * slot.element_size() for slot in cache.slots if isinstance(slot, torch.Tensor))
    estimate = estimate_peak_memory(dit="tiny", vae="tiny", vae_dtype_bytes=4, frames=9, height=32, width=48)
    assert estimate.terms["vae_feature_cache"] == held


class PeakLiveBytes(TorchDispatchMode):
    """Peak bytes of the tensors created inside the mode that are alive at once (each storage once)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                self.live.setdefault(storage._cdata, (StorageWeakRef(storage), storage.nbytes()))
        self.live = {key: entry for key, entry in self.live.items() if not entry[0].expired()}
        self.peak = max(self.peak, sum(size for _, size in self.live.values()))
        return out


def test_block_activation_estimate_matches_a_measured_block():
    """The estimate's one-block activation term against the live bytes of a real bf16 block (FFN 6x wide like
    the 1.3B's, 4096 tokens, CFG batch 2), its float32 input included: within 10 % (measured 36.5 nd bytes)."""
    config = DiTConfig(dim=128, ffn_dim=768, num_heads=2, num_layers=1, text_dim=32, text_len=16)
    model = randomize_(WanDiT(config), 0).eval().set_dtype(torch.bfloat16)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 4, 64, 64, generator=generator)
    with torch.no_grad():
        tokens, grid = model.patchify(x)
        _, e0 = model.time_embed(torch.tensor([900.0, 100.0]))
        context = model.embed_text(torch.randn(2, 7, 32, generator=generator))
        rope = model.rope.get(grid, tokens.device)
        tracker = PeakLiveBytes()
        with tracker:
            model.blocks[0](tokens, e0, context, None, rope, "sdpa")
    measured = tracker.peak + tokens.numel() * tokens.element_size()
    estimate = _dit_activation_bytes(config, tokens.shape[1], 2, 2, False, "flash")["dit_block_activations"]
    assert 0.9 * measured <= estimate <= 1.1 * measured


def test_vae_decode_estimate_matches_a_measured_chunk():
    """Cache + workspace against the live bytes of a real steady-state decode chunk (the previous chunk's cache
    counted from the start, freed as it is replaced): within 10 % above (measured 1.03x)."""
    vae = WanVAE("tiny").eval()
    latents = torch.randn(1, 16, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    cache = FeatureCache()
    tracker = PeakLiveBytes()
    with torch.no_grad():
        for index in range(2):
            cache.start_chunk()
            vae.decoder(latents[:, :, index:index + 1], cache)
        for slot in cache.slots:
            if isinstance(slot, torch.Tensor):
                storage = slot.untyped_storage()
                tracker.live[storage._cdata] = (StorageWeakRef(storage), storage.nbytes())
        with tracker:
            cache.start_chunk()
            vae.decoder(latents[:, :, 2:3], cache)
    terms = estimate_peak_memory(dit="tiny", vae="tiny", vae_dtype_bytes=4, frames=9, height=64, width=96).terms
    estimate = terms["vae_feature_cache"] + terms["vae_workspace"]
    assert tracker.peak <= estimate <= 1.1 * tracker.peak
