"""Wan-VAE: parity with diffusers, causality, chunked == whole-video, frame rules, checkpoint layouts."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from wanmodel.models.random_init import randomize_
from wanmodel.models.vae import (
    CACHE_T,
    LATENT_MEAN,
    LATENT_STD,
    FeatureCache,
    VAEConfig,
    WanVAE,
    denormalize_latents,
    normalize_latents,
    num_latent_frames,
)
from wanmodel.models.vae_adapters import (
    from_diffusers,
    infer_config,
    load_vae,
    save_vae,
    to_diffusers,
    to_official,
)

TINY = VAEConfig.preset("tiny")
# a second small shape: odd block count and the temporal downsampling in other stages
TINY_ALT = VAEConfig(base_dim=8, num_res_blocks=1, dim_mult=(1, 2, 2, 4), temperal_downsample=(True, True, False))
PARITY_ATOL = 1e-4


def random_video(frames: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, size, size, generator=generator) * 2 - 1


def tiny_vae(config: VAEConfig = TINY, seed: int = 1) -> WanVAE:
    return randomize_(WanVAE(config), seed).eval()


def diffusers_decode_unclamped(ref, latents: torch.Tensor) -> torch.Tensor:
    """diffusers 0.42 ``_decode`` without its final clamp (same loop over its internals)."""
    ref.clear_cache()
    hidden = ref.post_quant_conv(latents)
    frames = []
    for index in range(hidden.shape[2]):
        ref._conv_idx = [0]
        frames.append(ref.decoder(hidden[:, :, index:index + 1], feat_cache=ref._feat_map,
                                  feat_idx=ref._conv_idx, first_chunk=index == 0))
    ref.clear_cache()
    return torch.cat(frames, dim=2)


def check_parity(config: VAEConfig, frames: int, size: int) -> dict[str, float]:
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLWan(
        base_dim=config.base_dim, z_dim=config.z_dim, dim_mult=list(config.dim_mult),
        num_res_blocks=config.num_res_blocks, temperal_downsample=list(config.temperal_downsample),
    ).eval()
    randomize_(ref, seed=3)
    ours = WanVAE(config).eval()
    ours.load_state_dict(from_diffusers(ref.state_dict(), config), strict=True)
    video = random_video(frames, size)
    with torch.no_grad():
        ref_posterior = ref.encode(video).latent_dist
        posterior = ours.encode(video)
        latents = posterior.mean
        ref_video = ref.decode(latents).sample
        ref_unclamped = diffusers_decode_unclamped(ref, latents)
        decoded = ours.decode(latents)
    # guard against trivial agreement (e.g. all-zero outputs)
    assert latents.std() > 0.1 and decoded.std() > 0.1
    errors = {
        "mu": (posterior.mean - ref_posterior.mean).abs().max().item(),
        "logvar": (posterior.logvar - ref_posterior.logvar).abs().max().item(),
        "decoded_clamped": (decoded.clamp(-1, 1) - ref_video).abs().max().item(),  # diffusers clamps
        "decoded_unclamped": (decoded - ref_unclamped).abs().max().item(),
    }
    print(f"parity {config} {frames}x{size}x{size}: {errors}")
    for name, error in errors.items():
        assert error <= PARITY_ATOL, f"{name}: max abs error {error}"
    assert decoded.shape == (1, 3, frames, size, size)
    return errors


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("config", [TINY, TINY_ALT], ids=["tiny", "tiny-alt"])
def test_parity_with_diffusers_tiny(config):
    check_parity(config, frames=9, size=32)


def test_parity_with_diffusers_full_config():
    check_parity(VAEConfig.preset("wan2.1"), frames=5, size=32)


def test_full_config_is_the_release_shape():
    config = VAEConfig.preset("wan2.1")
    assert (config.base_dim, config.z_dim, config.dim_mult, config.num_res_blocks, config.temperal_downsample,
            config.dropout) == (96, 16, (1, 2, 4, 4), 2, (False, True, True), 0.0)
    assert (config.temporal_factor, config.spatial_factor) == (4, 8)
    with torch.device("meta"):
        params = sum(p.numel() for p in WanVAE(config).parameters())
    assert 126e6 < params < 128e6  # the report's 127M


# ------------------------------------------------------------------------------------ causality, chunks
def test_encoder_is_causal():
    vae = tiny_vae()
    video = random_video(9)
    changed = video.clone()
    changed[:, :, 5:] = random_video(4, seed=9)  # frames after t = 4 -> latents 0..1 must not move
    with torch.no_grad():
        for chunked in (True, False):
            base, other = vae.encode(video, chunked=chunked).mean, vae.encode(changed, chunked=chunked).mean
            torch.testing.assert_close(other[:, :, :2], base[:, :, :2], atol=1e-6, rtol=0)
            assert (other[:, :, 2] - base[:, :, 2]).abs().max() > 1e-3


def test_decoder_is_causal():
    vae = tiny_vae()
    with torch.no_grad():
        latents = vae.encode(random_video(9)).mean
        changed = latents.clone()
        changed[:, :, 2] += 1.0  # latent 2 decodes to frames 5..8; frames 0..4 must not move
        for chunked in (True, False):
            base, other = vae.decode(latents, chunked=chunked), vae.decode(changed, chunked=chunked)
            torch.testing.assert_close(other[:, :, :5], base[:, :, :5], atol=1e-6, rtol=0)
            assert (other[:, :, 5:] - base[:, :, 5:]).abs().max() > 1e-3


def test_chunked_equals_whole_video():
    vae = tiny_vae()
    video = random_video(13)
    with torch.no_grad():
        chunked, whole = vae.encode(video), vae.encode(video, chunked=False)
        torch.testing.assert_close(chunked.mean, whole.mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(chunked.logvar, whole.logvar, atol=1e-5, rtol=0)
        torch.testing.assert_close(vae.decode(chunked.mean), vae.decode(chunked.mean, chunked=False),
                                   atol=1e-5, rtol=0)


def test_cache_holds_at_most_two_frames_per_layer():
    vae = tiny_vae()
    video = random_video(17, size=16)
    cache = FeatureCache()
    with torch.no_grad():
        for start in range(0, 17, 4):
            cache.start_chunk()
            vae.encoder(video[:, :, :1] if start == 0 else video[:, :, start - 3:start + 1], cache)
            slots_after_chunk = len(cache.slots)
            assert all(slot is not None and slot.shape[2] <= CACHE_T for slot in cache.slots)
    assert slots_after_chunk == len(cache.slots)  # the same layers claim the same slots every chunk


# ----------------------------------------------------------------------------------- shapes and errors
@pytest.mark.parametrize("frames,latents", [(1, 1), (5, 2), (9, 3), (17, 5)])
def test_latent_frame_count(frames, latents):
    vae = tiny_vae()
    assert num_latent_frames(frames) == latents
    with torch.no_grad():
        posterior = vae.encode(random_video(frames, size=16))
        assert posterior.mean.shape == (1, 16, latents, 2, 2)
        assert vae.decode(posterior.mean).shape == (1, 3, frames, 16, 16)


@pytest.mark.parametrize("frames", [0, 2, 6, 8])
def test_bad_frame_count_is_a_clear_error(frames):
    vae = tiny_vae()
    with pytest.raises(ValueError, match=rf"1 \+ 4k.*got {frames} frames"):
        vae.encode(torch.zeros(1, 3, frames, 16, 16))


def test_bad_size_is_a_clear_error():
    vae = tiny_vae()
    with pytest.raises(ValueError, match="multiples of 8; got 20x16"):
        vae.encode(torch.zeros(1, 3, 5, 20, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        vae.encode(torch.zeros(1, 4, 5, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, 16, T, H, W\)"):
        vae.decode(torch.zeros(1, 8, 2, 2, 2))


def test_decode_clamp_option_and_posterior():
    vae = tiny_vae()
    with torch.no_grad():
        posterior = vae.encode(random_video(5))
        mu, _logvar = posterior  # unpacks as a tuple
        raw = vae.decode(mu)
        assert raw.abs().max() > 1  # random weights overshoot; the module itself does not clamp
        assert torch.equal(vae.decode(mu, clamp=True), raw.clamp(-1, 1))
        sample = posterior.sample(torch.Generator().manual_seed(0))
        assert sample.shape == mu.shape and not torch.equal(sample, mu)


def test_latent_normalization_round_trip():
    assert len(LATENT_MEAN) == len(LATENT_STD) == 16
    assert LATENT_MEAN[0] == -0.7571 and LATENT_STD[-1] == 1.9160
    latents = torch.randn(2, 16, 3, 4, 4) * 2
    normalized = normalize_latents(latents)
    torch.testing.assert_close(normalized[:, 7], (latents[:, 7] - 1.5508) / 2.0743)
    torch.testing.assert_close(denormalize_latents(normalized), latents)
    with pytest.raises(ValueError, match="16"):
        normalize_latents(torch.zeros(1, 8, 1, 1, 1))


def test_latent_statistics_travel_with_the_vae_config(tmp_path):
    """``latents_mean`` / ``latents_std`` default to the release's (z_dim 16) or 0 / 1, are checked, normalise
    per channel or per sample, and survive both save layouts (diffusers' AutoencoderKLWan keys)."""
    from wanmodel.models.vae_adapters import load_vae, save_vae

    assert TINY.latent_stats == (LATENT_MEAN, LATENT_STD)
    assert VAEConfig(base_dim=8, z_dim=4).latent_stats == ((0.0,) * 4, (1.0,) * 4)
    with pytest.raises(ValueError, match="latents_mean needs 16 finite"):
        VAEConfig(base_dim=8, latents_mean=(0.0,) * 3)
    with pytest.raises(ValueError, match="latents_std must be positive"):
        VAEConfig(base_dim=8, latents_std=(0.0,) * 16)
    stats = (tuple(float(i) for i in range(16)), tuple(0.5 + i / 8 for i in range(16)))
    config = VAEConfig(base_dim=8, latents_mean=stats[0], latents_std=stats[1])
    latents = torch.randn(2, 16, 2, 3, 3)
    torch.testing.assert_close(normalize_latents(latents, config.latent_stats)[:, 5], (latents[:, 5] - 5.0) / 1.125)
    per_sample = (torch.tensor([stats[0], LATENT_MEAN]), torch.tensor([stats[1], LATENT_STD]))
    mixed = normalize_latents(latents, per_sample)
    torch.testing.assert_close(mixed[0], normalize_latents(latents[:1], stats)[0])
    torch.testing.assert_close(mixed[1], normalize_latents(latents[1:])[0])
    torch.testing.assert_close(denormalize_latents(mixed, per_sample), latents)
    torch.manual_seed(0)
    vae = WanVAE(config)
    for layout in ("ours", "diffusers"):
        assert load_vae(save_vae(vae, tmp_path / layout, layout=layout)).config == config


def test_config_validation():
    with pytest.raises(ValueError, match="temperal_downsample"):
        VAEConfig(temperal_downsample=(True,))
    with pytest.raises(ValueError, match="unknown VAEConfig key.*'bogus'"):
        VAEConfig.from_dict({**TINY.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="unknown VAE preset"):
        VAEConfig.preset("wan9")
    assert VAEConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.base_dim = 4  # type: ignore[misc]


# ----------------------------------------------------------------------------------- checkpoint layouts
@pytest.mark.parametrize("config", [TINY, TINY_ALT], ids=["tiny", "tiny-alt"])
def test_diffusers_key_mapping_round_trip(config):
    diffusers = pytest.importorskip("diffusers")
    state_dict = WanVAE(config).state_dict()
    converted = to_diffusers(state_dict, config)
    ref = diffusers.AutoencoderKLWan(
        base_dim=config.base_dim, z_dim=config.z_dim, dim_mult=list(config.dim_mult),
        num_res_blocks=config.num_res_blocks, temperal_downsample=list(config.temperal_downsample))
    ref_state = ref.state_dict()
    assert set(converted) == set(ref_state)
    assert all(converted[key].shape == ref_state[key].shape for key in converted)
    back = from_diffusers(converted)  # num_res_blocks inferred from the keys
    assert list(back) == list(state_dict)
    assert all(back[key] is state_dict[key] for key in state_dict)
    assert to_official(state_dict) == state_dict
    with pytest.raises(ValueError, match="not in the Wan-VAE layout: decoder.bogus.weight"):
        to_diffusers({**state_dict, "decoder.bogus.weight": torch.zeros(1)}, config)


def test_our_keys_are_the_official_release_keys():
    """diffusers' converter for the official ``Wan2.1_VAE.pth`` (hard-coded to the released block layout)
    takes our state dict as-is and yields the diffusers keys: so our names are the official names."""
    pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    state_dict = WanVAE(TINY).state_dict()
    converted = convert_wan_vae_to_diffusers(state_dict)
    ours = to_diffusers(state_dict, TINY)
    assert set(converted) == set(ours)
    assert all(converted[key] is ours[key] for key in ours)


def test_load_official_file_and_diffusers_layouts(tmp_path):
    vae = tiny_vae()
    video = random_video(5, size=16)
    with torch.no_grad():
        expected = vae.encode(video).mean
    # official release layout: a bare state dict in a .pth, config read off the weights
    torch.save(to_official(vae.state_dict()), tmp_path / "Wan2.1_VAE.pth")
    assert infer_config(vae.state_dict()) == TINY
    # diffusers: a folder written by our exporter, and a bare diffusers state dict file
    save_vae(vae, tmp_path / "diffusers", layout="diffusers")
    from safetensors.torch import save_file
    save_file(to_diffusers(vae.state_dict(), TINY), tmp_path / "diffusers_sd.safetensors")
    for path in (tmp_path / "Wan2.1_VAE.pth", tmp_path / "diffusers", tmp_path / "diffusers_sd.safetensors"):
        loaded = load_vae(path)
        assert loaded.config == TINY, path
        with torch.no_grad():
            assert torch.equal(loaded.encode(video).mean, expected), path
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.AutoencoderKLWan.from_pretrained(tmp_path / "diffusers").eval()
    with torch.no_grad():
        torch.testing.assert_close(ref.encode(video).latent_dist.mean, expected, atol=PARITY_ATOL, rtol=0)
    # and a folder saved by diffusers itself
    ref.save_pretrained(tmp_path / "from_diffusers")
    with torch.no_grad():
        assert torch.equal(load_vae(tmp_path / "from_diffusers").encode(video).mean, expected)


def test_missing_and_unexpected_keys_are_errors(tmp_path):
    from safetensors.torch import save_file

    state_dict = {key: value.contiguous() for key, value in WanVAE(TINY).state_dict().items()}
    missing = dict(state_dict)
    del missing["decoder.head.2.weight"]
    save_file(missing, tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=r"1 missing key\(s\): decoder.head.2.weight"):
        load_vae(tmp_path / "missing.safetensors", config=TINY)
    extra = {**state_dict, "encoder.extra.weight": torch.zeros(2)}
    save_file(extra, tmp_path / "extra.safetensors")
    with pytest.raises(ValueError, match=r"1 unexpected key\(s\): encoder.extra.weight"):
        load_vae(tmp_path / "extra.safetensors", config="tiny")
    save_file(state_dict, tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError, match="shape mismatch"):
        load_vae(tmp_path / "tiny.safetensors", config="wan2.1")


def test_missing_files_name_the_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_vae(tmp_path / "nowhere.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty/config.json"):
        load_vae(tmp_path / "empty")
    save_vae(tiny_vae(), tmp_path / "ours")
    (tmp_path / "ours" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"ours/model.safetensors"):
        load_vae(tmp_path / "ours")
