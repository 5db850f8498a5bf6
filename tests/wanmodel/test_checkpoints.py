"""One checkpoint battery, written once and run on every tiny model config the adapters support (VAE and DiT):
forward shape, save/load round trip in every layout (ours, official, diffusers; one file and shards), dtype on
load, determinism, missing and unexpected keys. Then the DiT-only loading rules (head-count guess warns, a folder
config without text_dim reads it off the weights) and the shared checkpoint module's own errors."""
from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wanmodel.models.checkpoint import (
    LazyTensor,
    invert_keys,
    load_weights,
    read_state_dict,
    weight_files,
    write_weights,
)
from wanmodel.models.dit import FP32_PARAMETERS, DiTConfig, WanDiT
from wanmodel.models.dit_adapters import (
    config_from_diffusers,
    config_from_official,
    config_to_diffusers,
    infer_config,
    load_dit,
    save_dit,
    to_diffusers_state_dict,
)
from wanmodel.models.random_init import randomize_
from wanmodel.models.vae import VAEConfig, WanVAE
from wanmodel.models.vae_adapters import diffusers_key, load_vae, save_vae, to_official

Inputs = dict[str, torch.Tensor]


# ------------------------------------------------------------------------------------------- model cases
@dataclass(frozen=True)
class ModelCase:
    """What the battery needs to know about one model config; everything else is shared."""

    name: str
    config: VAEConfig | DiTConfig
    build: Callable[[VAEConfig | DiTConfig], torch.nn.Module]
    inputs: Callable[[VAEConfig | DiTConfig], Inputs]
    forward: Callable[[torch.nn.Module, Inputs], tuple[torch.Tensor, ...]]
    shapes: tuple[tuple[int, ...], ...]  # of the forward outputs
    save: Callable[[torch.nn.Module, Path, str, int | None], Path]  # -> the path load takes
    load: Callable[..., torch.nn.Module]  # (path, dtype=...) -> model
    stored_name: Callable[[str, str, VAEConfig | DiTConfig], str]  # our key -> its name in a layout
    layouts: tuple[tuple[str, bool], ...]  # (layout, sharded)
    keep_fp32: tuple[str, ...] = ()

    def model(self, seed: int = 0) -> torch.nn.Module:
        return randomize_(self.build(self.config), seed).eval()


def _video(config: VAEConfig) -> Inputs:
    return {"video": torch.rand(1, 3, 5, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1}


def _vae_forward(vae: WanVAE, inputs: Inputs) -> tuple[torch.Tensor, ...]:
    posterior = vae.encode(inputs["video"].to(next(vae.parameters()).dtype))
    return posterior.mean, vae.decode(posterior.mean)


def _save_vae(model: WanVAE, directory: Path, layout: str, shard_bytes: int | None) -> Path:
    if layout == "official":  # the release is one bare state dict, Wan2.1_VAE.pth
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(to_official(model.state_dict()), directory / "Wan2.1_VAE.pth")
        return directory / "Wan2.1_VAE.pth"
    return save_vae(model, directory, layout=layout, max_shard_bytes=shard_bytes)


def _vae_name(key: str, layout: str, config: VAEConfig) -> str:
    return diffusers_key(key, config.num_res_blocks) if layout == "diffusers" else key


def _dit_inputs(config: DiTConfig) -> Inputs:
    generator = torch.Generator().manual_seed(0)
    inputs = {"x": torch.randn(2, 16, 2, 4, 4, generator=generator), "timestep": torch.tensor([900.0, 12.5]),
              "context": torch.randn(2, 7, config.text_dim, generator=generator)}
    if config.is_i2v:
        tokens = config.image_tokens or 257  # flf2v: both frames' tokens
        inputs["clip_fea"] = torch.randn(2, tokens, config.image_dim, generator=generator)
        inputs["y"] = torch.randn(2, config.in_dim - 16, 2, 4, 4, generator=generator)
    return inputs


def _dit_name(key: str, layout: str, config: DiTConfig) -> str:
    return next(iter(to_diffusers_state_dict({key: torch.zeros(1)}))) if layout == "diffusers" else key


def _vae_case(name: str, config: VAEConfig) -> ModelCase:
    return ModelCase(name, config, WanVAE, _video, _vae_forward, ((1, 16, 2, 1, 1), (1, 3, 5, 8, 8)),
                     _save_vae, load_vae, _vae_name,
                     (("ours", False), ("ours", True), ("official", False), ("diffusers", False), ("diffusers", True)))


def _dit_case(name: str, config: DiTConfig) -> ModelCase:
    return ModelCase(name, config, WanDiT, _dit_inputs, lambda model, inputs: (model(**inputs),),
                     ((2, 16, 2, 4, 4),), lambda model, directory, layout, shard: save_dit(model, directory, layout,
                                                                                          shard),
                     load_dit, _dit_name, tuple((layout, sharded) for layout in ("ours", "official", "diffusers")
                                                for sharded in (False, True)), keep_fp32=FP32_PARAMETERS)


CASES = (
    _vae_case("vae-tiny", VAEConfig.preset("tiny")),
    # odd block count, temporal downsampling in other stages, a repeated channel multiplier
    _vae_case("vae-tiny-alt", VAEConfig(base_dim=8, num_res_blocks=1, dim_mult=(1, 2, 2, 4),
                                        temperal_downsample=(True, True, False))),
    _dit_case("dit-tiny-t2v", DiTConfig.named("tiny")),
    _dit_case("dit-tiny-i2v", DiTConfig.named("tiny-i2v")),
    # first-last-frame: img_emb.emb_pos (official) = condition_embedder.image_embedder.pos_embed (diffusers)
    _dit_case("dit-tiny-flf2v", DiTConfig.named("tiny-flf2v")),
    # no affine cross-attention norm (no norm3 keys), three blocks
    _dit_case("dit-tiny-no-cross-norm", DiTConfig.named("tiny", cross_attn_norm=False, num_layers=3)),
)
CASE_IDS = [case.name for case in CASES]
LAYOUT_CASES = [pytest.param(case, layout, sharded, id=f"{case.name}-{layout}{'-sharded' if sharded else ''}")
                for case in CASES for layout, sharded in case.layouts]
SINGLE_FILE_LAYOUTS = [pytest.param(case, layout, id=f"{case.name}-{layout}")
                       for case in CASES for layout, sharded in case.layouts if not sharded]


def _run(case: ModelCase, model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return case.forward(model, case.inputs(case.config))


def _shard_bytes(model: torch.nn.Module) -> int:
    """A third of the weights, so every sharded save has several shards."""
    return sum(value.numel() * value.element_size() for value in model.state_dict().values()) // 3


# ---------------------------------------------------------------------------------------------- battery
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_shape(case):
    outputs = _run(case, case.model())
    assert tuple(tuple(output.shape) for output in outputs) == case.shapes
    assert all(torch.isfinite(output).all() and output.std() > 1e-3 for output in outputs)


@pytest.mark.parametrize("case, layout, sharded", LAYOUT_CASES)
def test_save_load_round_trip(tmp_path, case, layout, sharded):
    model = case.model(seed=3)
    path = case.save(model, tmp_path / layout, layout, _shard_bytes(model) if sharded else None)
    if sharded:
        assert len(list(path.glob("*.safetensors"))) > 1 and len(list(path.glob("*.safetensors.index.json"))) == 1
    loaded = case.load(path)
    assert loaded.config == case.config and not loaded.training
    assert not any(param.is_meta for param in loaded.parameters())
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key
    for got, want in zip(_run(case, loaded), _run(case, model), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_load_casts_to_dtype(tmp_path, case):
    model = case.model(seed=5)
    path = case.save(model, tmp_path / "ours", "ours", None)
    loaded = case.load(path, dtype=torch.bfloat16)
    source = model.state_dict()
    for key, value in loaded.state_dict().items():
        wanted = torch.float32 if any(part in key for part in case.keep_fp32) else torch.bfloat16
        assert value.dtype == wanted, key
        assert torch.equal(value, source[key].to(wanted)), key  # cast once from the stored float32
    reference = _run(case, model)
    for got, want in zip(_run(case, loaded), reference, strict=True):
        assert got.shape == want.shape and torch.isfinite(got).all()
        assert ((got.float() - want).abs().max() / want.abs().max()).item() < 0.1


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_determinism(tmp_path, case):
    first, again, other = case.model(seed=7), case.model(seed=7), case.model(seed=8)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))
    outputs = _run(case, first)
    assert all(torch.equal(a, b) for a, b in zip(outputs, _run(case, first), strict=True))
    one, two = case.save(first, tmp_path / "one", "ours", None), case.save(again, tmp_path / "two", "ours", None)
    assert {file.name: file.read_bytes() for file in one.iterdir()} == {
        file.name: file.read_bytes() for file in two.iterdir()}  # same weights -> byte-identical checkpoint
    for loaded in (case.load(one), case.load(two)):
        assert all(torch.equal(a, b) for a, b in zip(_run(case, loaded), outputs, strict=True))


def _rewrite_weights(path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Apply ``edit`` to the tensors of a one-file checkpoint (a bare file, or the one weights file of a folder)."""
    file = path if path.is_file() else next(iter(weight_files(path, "model") or weight_files(
        path, "diffusion_pytorch_model")))
    if file.suffix == ".safetensors":
        tensors = load_file(file)
        edit(tensors)
        save_file(tensors, file, metadata={"format": "pt"})
    else:
        tensors = torch.load(file, weights_only=True)
        edit(tensors)
        torch.save(tensors, file)


@pytest.mark.parametrize("case, layout", SINGLE_FILE_LAYOUTS)
def test_missing_key_is_named(tmp_path, case, layout):
    model = case.model()
    path = case.save(model, tmp_path / layout, layout, None)
    key = list(model.state_dict())[-1]
    _rewrite_weights(path, lambda tensors: tensors.pop(case.stored_name(key, layout, case.config)))
    with pytest.raises(ValueError, match=rf"1 missing key\(s\): {re.escape(key)}$"):
        case.load(path)


@pytest.mark.parametrize("case, layout", SINGLE_FILE_LAYOUTS)
def test_unexpected_key_is_named(tmp_path, case, layout):
    path = case.save(case.model(), tmp_path / layout, layout, None)
    _rewrite_weights(path, lambda tensors: tensors.update({"extra.weight": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"(1 unexpected key\(s\)|1 key\(s\) not in the .* layout): extra\.weight$"):
        case.load(path)


# ------------------------------------------------------------------------------------ DiT loading rules
HEAD_DIM_64 = DiTConfig(dim=256, ffn_dim=128, num_heads=4, num_layers=1, text_dim=32)  # not the release's 128


def test_bare_dit_file_warns_when_it_guesses_the_head_count(tmp_path):
    model = randomize_(WanDiT(HEAD_DIM_64), 0).eval()
    save_file(model.state_dict(), tmp_path / "bare.safetensors")
    with pytest.warns(UserWarning, match=r"guessed num_heads = 2 for dim 256"):
        guessed = load_dit(tmp_path / "bare.safetensors")
    assert guessed.config == replace(HEAD_DIM_64, num_heads=2)  # everything else is read off the weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no guess, no warning: a config given, or a folder with its config
        assert load_dit(tmp_path / "bare.safetensors", HEAD_DIM_64).config == HEAD_DIM_64
        assert load_dit(save_dit(model, tmp_path / "folder")).config == HEAD_DIM_64


@pytest.mark.parametrize("layout", ["ours", "official", "diffusers"])
def test_folder_config_without_text_dim_reads_it_off_the_weights(tmp_path, layout):
    config = DiTConfig.named("tiny")  # text_dim 32, not the 4096 default
    model = randomize_(WanDiT(config), 1).eval()
    save_dit(model, tmp_path, layout)
    stored = json.loads((tmp_path / "config.json").read_text())
    del stored["text_dim"]  # as in the official release's config.json
    (tmp_path / "config.json").write_text(json.dumps(stored))
    loaded = load_dit(tmp_path)
    assert loaded.config == config
    inputs = _dit_inputs(config)
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), model(**inputs))


def test_flf2v_release_configs_and_bare_files(tmp_path):
    """The FLF2V-14B release configs (official: model_type flf2v, no token count; diffusers: pos_embed_seq_len 514)
    read as the flf2v-14B config, and a bare state-dict file is recognised as flf2v by its img_emb.emb_pos."""
    release = DiTConfig.named("flf2v-14B")
    official = {"_class_name": "WanModel", "model_type": "flf2v", "patch_size": [1, 2, 2], "text_len": 512,
                "in_dim": 36, "dim": 5120, "ffn_dim": 13824, "freq_dim": 256, "out_dim": 16, "num_heads": 40,
                "num_layers": 40, "window_size": [-1, -1], "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6}
    diffusers = {"_class_name": "WanTransformer3DModel", "added_kv_proj_dim": 5120, "attention_head_dim": 128,
                 "cross_attn_norm": True, "eps": 1e-6, "ffn_dim": 13824, "freq_dim": 256, "image_dim": 1280,
                 "in_channels": 36, "num_attention_heads": 40, "num_layers": 40, "out_channels": 16,
                 "patch_size": [1, 2, 2], "pos_embed_seq_len": 514, "qk_norm": "rms_norm_across_heads",
                 "rope_max_seq_len": 1024, "text_dim": 4096}
    assert config_from_official(official) == config_from_diffusers(diffusers) == release
    assert release.is_i2v and release.is_flf2v and release.image_tokens == 514
    assert config_to_diffusers(release)["pos_embed_seq_len"] == 514
    assert config_to_diffusers(DiTConfig.named("i2v-14B"))["pos_embed_seq_len"] is None
    with torch.device("meta"):
        assert tuple(WanDiT(release).img_emb.emb_pos.shape) == (1, 514, 1280)
    with pytest.raises(ValueError, match="pos_embed_seq_len .* but no image_dim"):
        config_from_diffusers({**diffusers, "image_dim": None, "added_kv_proj_dim": None})
    config = DiTConfig.named("tiny-flf2v")
    model = randomize_(WanDiT(config), 2).eval()
    save_file(model.state_dict(), tmp_path / "official.safetensors")
    save_file(to_diffusers_state_dict(model.state_dict()), tmp_path / "diffusers.safetensors")
    inputs = _dit_inputs(config)
    for name in ("official.safetensors", "diffusers.safetensors"):
        with torch.no_grad():
            assert torch.equal(load_dit(tmp_path / name, config)(**inputs), model(**inputs))
    # without a config the weights say flf2v and the token count (the head count is not stored: given here)
    assert infer_config(model.state_dict(), num_heads=config.num_heads) == config
    with pytest.raises(ValueError, match="unexpected key.*img_emb.emb_pos"):
        load_dit(tmp_path / "official.safetensors", DiTConfig.named("tiny-i2v"))


# ------------------------------------------------------------------------------- shared module's errors
def test_inverse_of_a_many_to_one_table_is_an_error():
    inverse = invert_keys(["a.w", "b.w"], lambda key: key.upper())
    assert inverse("B.W") == "b.w"
    with pytest.raises(KeyError, match="C.W"):
        inverse("C.W")
    with pytest.raises(ValueError, match="not one-to-one: a.w and b.w both map to w"):
        invert_keys(["a.w", "b.w"], lambda key: "w")


def test_shard_index_errors_name_the_files(tmp_path):
    tensors = {f"t{i}": torch.full((100,), float(i)) for i in range(4)}
    files = write_weights(tensors, tmp_path, "model", max_shard_bytes=800)
    assert [file.name for file in files] == [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    assert read_state_dict(weight_files(tmp_path, "model")).keys() == tensors.keys()
    save_file({"t0": torch.zeros(1)}, tmp_path / "dup.safetensors")
    with pytest.raises(ValueError, match=r"more than one shard .*dup.safetensors.*: t0"):
        read_state_dict([files[0], tmp_path / "dup.safetensors"])
    files[1].unlink()
    with pytest.raises(FileNotFoundError, match="model-00002-of-00002.safetensors"):
        weight_files(tmp_path, "model")


def test_lazy_read_takes_each_tensor_from_the_file_when_it_is_placed(tmp_path):
    tensors = {"weight": torch.arange(12.0).view(3, 4), "bias": torch.ones(3)}
    write_weights(tensors, tmp_path, "model")
    lazy = read_state_dict([tmp_path / "model.safetensors"], lazy=True)
    assert all(isinstance(value, LazyTensor) for value in lazy.values())
    assert {key: tuple(value.shape) for key, value in lazy.items()} == {"weight": (3, 4), "bias": (3,)}
    # nothing was read yet: new values written to the same file now are the ones the model gets
    write_weights({key: -value for key, value in tensors.items()}, tmp_path, "model")
    with torch.device("meta"):
        layer = torch.nn.Linear(4, 3)
    load_weights(layer, lazy, what="Linear", dtype=torch.float64)
    assert torch.equal(layer.weight, -tensors["weight"].double()) and torch.equal(layer.bias, -tensors["bias"].double())
    assert not any(isinstance(value, LazyTensor) for value in lazy.values())  # replaced by the placed tensors


def test_model_core_imports_only_torch_einops_safetensors():
    """The model core (checkpoint code included) must load on a bare GPU box: no data, Ray or Hugging Face stack."""
    import subprocess
    import sys

    heavy = ["curation", "captioner", "transformers", "diffusers", "ray", "lance", "pyarrow", "cv2", "av"]
    code = ("import sys, wanmodel.models, wanmodel.models.checkpoint, wanmodel.models.vae_adapters, "
            "wanmodel.models.dit_adapters; print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))")
    result = subprocess.run([sys.executable, "-c", code, *heavy], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
