"""Sampling pipelines: parity with diffusers' WanPipeline / WanImageToVideoPipeline on the same tiny random weights,
seeding, CFG batching, the I2V masks, text-to-image, writers, and every bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wanmodel.diffusion.schedulers import make_scheduler
from wanmodel.models.dit_adapters import config_to_diffusers, to_diffusers_state_dict
from wanmodel.models.vae_adapters import save_vae
from wanmodel.pipelines import (
    DEFAULT_NEGATIVE_PROMPT,
    I2V_NEGATIVE_PROMPT,
    FrameCondition,
    SamplingSettings,
    WanI2VPipeline,
    WanT2VPipeline,
    latent_frame_mask,
    mp4_bytes,
    write_mp4,
)
from wanmodel.pipelines.common import initial_noise, latent_shape
from wanmodel.pipelines.i2v import i2v_size
from wanmodel.pipelines.tiny import build_tiny_models

SMALL = {"height": 32, "width": 48, "num_frames": 9, "num_steps": 5, "guidance_scale": 4.0, "shift": 3.0}
PROMPTS = ["a corgi surfing a wave", "a red fox walking through fresh snow in a quiet forest at dusk"]


@pytest.fixture(scope="module")
def i2v(tiny: Path) -> WanI2VPipeline:
    paths = build_tiny_models(tiny, "i2v")
    return WanI2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder, image_encoder=paths.clip)


def _diffusers_parts(pipeline: WanT2VPipeline, tmp: Path) -> dict:
    """The same weights in diffusers' classes: transformer, VAE, umT5 and tokenizer."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    config = config_to_diffusers(pipeline.dit.config)
    config.pop("_class_name")
    transformer = WanTransformer3DModel(**config).eval()
    transformer.load_state_dict(to_diffusers_state_dict(pipeline.dit.state_dict()), strict=True)
    save_vae(pipeline.vae, tmp / "vae_diffusers", layout="diffusers")
    vae = AutoencoderKLWan.from_pretrained(str(tmp / "vae_diffusers"), low_cpu_mem_usage=False).eval()
    text_dir = str(pipeline.text_encoder.model.name_or_path)
    return {"transformer": transformer, "vae": vae, "tokenizer": AutoTokenizer.from_pretrained(text_dir),
            "text_encoder": UMT5EncoderModel.from_pretrained(text_dir).eval()}


def _as_diffusers_frames(decoded: torch.Tensor) -> np.ndarray:
    """Our float video [B, 3, F, H, W] in [-1, 1] -> diffusers' np output [B, F, H, W, 3] in [0, 1]."""
    return (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()


def _capture_latents(store: dict):
    def callback(pipe, step, timestep, kwargs):
        store["latents"] = kwargs["latents"]
        return kwargs
    return callback


# -------------------------------------------------------------------------------------- parity: T2V
@pytest.mark.parametrize("solver", ["unipc", "euler"])
def test_t2v_matches_diffusers_wan_pipeline(t2v: WanT2VPipeline, tmp_path: Path, solver: str) -> None:
    from diffusers import WanPipeline

    reference = WanPipeline(scheduler=make_scheduler(solver, SMALL["shift"]), **_diffusers_parts(t2v, tmp_path))
    reference.set_progress_bar_config(disable=True)
    noise = initial_noise(latent_shape(SamplingSettings(**SMALL)), [11, 12])
    negative = ["blurry, static", ""]
    captured: dict = {}
    expected = reference(prompt=PROMPTS, negative_prompt=negative, height=SMALL["height"], width=SMALL["width"],
                         num_frames=SMALL["num_frames"], num_inference_steps=SMALL["num_steps"],
                         guidance_scale=SMALL["guidance_scale"], latents=noise.clone(), output_type="np",
                         callback_on_step_end=_capture_latents(captured)).frames
    ours = t2v.generate(PROMPTS, negative_prompt=negative, latents=noise.clone(), keep_decoded=True, solver=solver,
                        spacing="diffusers", **{k: v for k, v in SMALL.items()})
    # measured: about 1e-5 on latents of magnitude 5, 6e-6 on [0, 1] pixels
    torch.testing.assert_close(ours.latents, captured["latents"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(_as_diffusers_frames(ours.decoded), expected, atol=5e-5, rtol=0)
    assert ours.latents.abs().max() > 1.0  # a real signal, not an all-zero agreement
    assert np.abs(np.diff(expected, axis=1)).mean() > 1e-3  # frames differ: the DiT does not output a constant


# -------------------------------------------------------------------------------------- parity: I2V
@pytest.mark.parametrize("mode", ["first_frame", "first_last"])
def test_i2v_matches_diffusers_image_to_video_pipeline(i2v: WanI2VPipeline, tmp_path: Path, mode: str) -> None:
    from diffusers import WanImageToVideoPipeline
    from PIL import Image

    rng = np.random.default_rng(0)
    first = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    last = (rng.random((32, 48, 3)) * 255).astype(np.uint8)
    clip = i2v.image_features([FrameCondition.first_frame(first)])
    reference = WanImageToVideoPipeline(scheduler=make_scheduler("unipc", SMALL["shift"]), image_encoder=None,
                                        image_processor=None, **_diffusers_parts(i2v, tmp_path))
    reference.set_progress_bar_config(disable=True)
    # diffusers 0.42 refuses `image` together with `image_embeds`; give it our CLIP tokens through encode_image
    # (test_text checks those tokens against transformers' CLIPVisionModel, the encoder diffusers would call)
    reference.encode_image = lambda image, device=None: clip
    noise = initial_noise(latent_shape(SamplingSettings(**SMALL)), [5])
    last_image = Image.fromarray(last) if mode == "first_last" else None
    captured: dict = {}
    expected = reference(image=Image.fromarray(first), last_image=last_image, prompt=PROMPTS[:1],
                         negative_prompt=["blurry"], height=SMALL["height"], width=SMALL["width"],
                         num_frames=SMALL["num_frames"], num_inference_steps=SMALL["num_steps"],
                         guidance_scale=SMALL["guidance_scale"], latents=noise.clone(), output_type="np",
                         callback_on_step_end=_capture_latents(captured)).frames
    ours = i2v.generate(PROMPTS[:1], [first], last_images=[last] if mode == "first_last" else None,
                        negative_prompt="blurry", latents=noise.clone(), keep_decoded=True, spacing="diffusers",
                        **SMALL)
    torch.testing.assert_close(ours.latents, captured["latents"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(_as_diffusers_frames(ours.decoded), expected, atol=5e-5, rtol=0)


def test_i2v_masks_match_the_official_construction() -> None:
    def official(num_frames: int, known: list[int], h: int = 2, w: int = 3) -> torch.Tensor:
        mask = torch.zeros(1, num_frames, h, w)
        mask[:, known] = 1
        mask = torch.cat([torch.repeat_interleave(mask[:, 0:1], repeats=4, dim=1), mask[:, 1:]], dim=1)
        return mask.view(1, mask.shape[1] // 4, 4, h, w).transpose(1, 2)[0]

    for frames, known in ((81, [0]), (81, [0, 80]), (17, [0, 1, 2, 3, 4]), (9, [0, 4])):
        flags = torch.zeros(frames, dtype=torch.bool)
        flags[known] = True
        torch.testing.assert_close(latent_frame_mask(flags, 2, 3), official(frames, known))
    continuation = latent_frame_mask(torch.arange(17) < 5, 1, 1)[:, :, 0, 0]
    assert continuation[:, :2].all() and not continuation[:, 2:].any()  # 5 frames = 2 whole latent frames
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        latent_frame_mask(torch.ones(8), 1, 1)


def test_i2v_continuation_and_condition_video(i2v: WanI2VPipeline) -> None:
    prefix = (np.random.default_rng(1).random((5, 32, 48, 3)) * 255).astype(np.uint8)
    condition = FrameCondition.continuation(prefix)
    video, known = condition.build(9, 32, 48)
    assert known.tolist() == [True] * 5 + [False] * 4
    torch.testing.assert_close(video[:, :5], torch.from_numpy(prefix).permute(3, 0, 1, 2).float() / 127.5 - 1)
    assert video[:, 5:].abs().max() == 0
    y = i2v.condition_latents([condition], SamplingSettings(**SMALL))
    assert y.shape == (1, 20, 3, 4, 6) and y[0, :4, :2].min() == 1 and y[0, :4, 2:].max() == 0
    result = i2v.generate("waves", [condition], seed=3, **{**SMALL, "num_steps": 2})
    assert result.videos[0].shape == (9, 32, 48, 3)
    assert i2v_size(720, 1280, max_area=480 * 832) == (464, 832)
    assert i2v_size(1080, 1080, max_area=480 * 832) == (624, 624)


# -------------------------------------------------------------------------------------------- seeding
def test_seeded_generation_is_deterministic_and_batch_independent(t2v: WanT2VPipeline) -> None:
    settings = {**SMALL, "num_steps": 3}
    first = t2v.generate(PROMPTS, seed=[7, 8], **settings)
    again = t2v.generate(PROMPTS, seed=[7, 8], **settings)
    assert all(np.array_equal(a, b) for a, b in zip(first.videos, again.videos))
    torch.testing.assert_close(first.latents, again.latents, atol=0, rtol=0)
    other = t2v.generate(PROMPTS[:1], seed=9, **settings)
    assert not torch.allclose(other.latents[0], first.latents[0])
    alone = t2v.generate(PROMPTS[1:], seed=8, **settings)  # same (prompt, seed) in a batch of one
    torch.testing.assert_close(alone.latents[0], first.latents[1], atol=1e-5, rtol=0)
    from_noise = t2v.generate(PROMPTS[1:], latents=initial_noise(latent_shape(SamplingSettings(**settings)), [8]),
                              **settings)
    torch.testing.assert_close(from_noise.latents, alone.latents, atol=0, rtol=0)
    assert first.seeds == [7, 8] and first.used_prompts == PROMPTS
    random_seed = t2v.generate(PROMPTS[:1], seed=None, **settings)
    assert 0 <= random_seed.seeds[0] < 2**63


def test_bfloat16_dit_stays_close_to_float32(t2v: WanT2VPipeline, tiny: Path) -> None:
    paths = build_tiny_models(tiny, "t2v")
    half = WanT2VPipeline.from_pretrained(paths.dit, paths.vae, paths.text_encoder, dtype=torch.bfloat16)
    assert half.dit.patch_embedding.weight.dtype == torch.bfloat16
    assert half.dit.time_embedding[0].weight.dtype == torch.float32  # modulation path stays float32
    settings = {**SMALL, "num_steps": 3}
    full, reduced = t2v.generate(PROMPTS[:1], seed=1, **settings), half.generate(PROMPTS[:1], seed=1, **settings)
    error = (full.latents - reduced.latents).abs().max() / full.latents.abs().max()
    assert 0 < error < 0.03  # measured 0.008 (bf16 matmuls), not bit-equal


def test_prompts_are_cut_to_the_dits_text_length(tiny: Path, tmp_path: Path) -> None:
    """A DiT with a text length under 512 (trained on shorter caches) gets its prompts cut to it, as the release
    cuts them to its 512: a long prompt samples instead of failing the DiT's context-length check."""
    import json
    import shutil

    paths = build_tiny_models(tiny, "t2v")
    short = tmp_path / "dit_text8"
    shutil.copytree(paths.dit, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "text_len": 8}))
    pipe = WanT2VPipeline.from_pretrained(short, paths.vae, paths.text_encoder)
    long_prompt = "a red fox running through deep snow under a pale winter sky at dawn"
    assert pipe.dit.config.text_len == 8 and len(pipe.text_encoder.encode([long_prompt])[0]) == 8
    out = pipe.generate([long_prompt], seed=1, **{**SMALL, "num_steps": 2})
    assert np.isfinite(out.latents.numpy()).all()


def test_cfg_is_one_batched_dit_call_per_step(t2v: WanT2VPipeline) -> None:
    calls: list[int] = []
    handle = t2v.dit.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        t2v.generate(PROMPTS, seed=1, **{**SMALL, "num_steps": 3})
        assert calls == [4, 4, 4]  # cond + uncond of 2 prompts, one call per step
        calls.clear()
        t2v.generate(PROMPTS, seed=1, **{**SMALL, "num_steps": 3, "guidance_scale": 1.0})
        assert calls == [2, 2, 2]  # guidance 1: no unconditional pass
    finally:
        handle.remove()


def test_text_to_image_is_one_frame(t2v: WanT2VPipeline) -> None:
    images = t2v.generate_images(PROMPTS, seed=4, height=32, width=32, num_steps=2)
    assert [im.shape for im in images] == [(32, 32, 3)] * 2 and images[0].dtype == np.uint8
    video = t2v.generate(PROMPTS, seed=4, height=32, width=32, num_steps=2, num_frames=1).videos
    assert np.array_equal(video[0][0], images[0])
    with pytest.raises(ValueError, match="single frames"):
        t2v.generate_images(PROMPTS, num_frames=5)


def test_rewriter_output_is_what_the_model_sees(t2v: WanT2VPipeline) -> None:
    class Shout:
        def rewrite(self, prompts):
            return [p.upper() + ", cinematic" for p in prompts]

    settings = {**SMALL, "num_steps": 2}
    t2v.rewriter = Shout()
    try:
        rewritten = t2v.generate(PROMPTS[:1], seed=2, **settings)
    finally:
        t2v.rewriter = None
    direct = t2v.generate([PROMPTS[0].upper() + ", cinematic"], seed=2, **settings)
    assert rewritten.prompts == PROMPTS[:1] and rewritten.used_prompts == [PROMPTS[0].upper() + ", cinematic"]
    torch.testing.assert_close(rewritten.latents, direct.latents, atol=0, rtol=0)


def test_default_negative_prompts_are_the_released_ones(t2v: WanT2VPipeline, i2v: WanI2VPipeline) -> None:
    assert t2v.negative_prompt == DEFAULT_NEGATIVE_PROMPT and DEFAULT_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态")
    assert DEFAULT_NEGATIVE_PROMPT.endswith("背景人很多，倒着走")
    assert i2v.negative_prompt == I2V_NEGATIVE_PROMPT == "镜头晃动，" + DEFAULT_NEGATIVE_PROMPT
    assert i2v.defaults.num_steps == 40 and i2v.defaults.shift == 3.0
    assert SamplingSettings() == SamplingSettings(480, 832, 81, 50, 5.0, 5.0, "unipc", "official", 16)


# -------------------------------------------------------------------------------------------- writers
def test_mp4_writer_round_trip(tmp_path: Path) -> None:
    from wanmodel.cli_vae import read_video

    frames = np.zeros((9, 32, 48, 3), dtype=np.uint8)
    frames[:, :, :24] = 200
    path = write_mp4(tmp_path / "clip.mp4", frames, fps=16)
    decoded, fps = read_video(path)
    assert decoded.shape == frames.shape and float(fps) == 16.0
    assert np.abs(decoded.astype(int) - frames).mean() < 3
    assert mp4_bytes(frames)[4:8] == b"ftyp"
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "bad.mp4", frames.astype(np.float32))


# ---------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("change,message", [
    ({"num_frames": 6}, "1 \\+ 4k"),
    ({"num_frames": 0}, "positive integer"),
    ({"height": 40}, "multiple of 16"),
    ({"width": 50}, "multiple of 16"),
    ({"num_steps": 0}, "num_steps"),
    ({"guidance_scale": 0.5}, "guidance_scale must be >= 1"),
    ({"shift": 0.0}, "shift"),
    ({"solver": "ddim"}, "solver"),
    ({"spacing": "karras"}, "spacing"),
    ({"steps": 10}, "unknown sampling setting"),
])
def test_bad_settings_are_clear_errors(t2v: WanT2VPipeline, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        t2v.generate(PROMPTS[:1], **{**SMALL, **change})


def test_bad_requests_are_clear_errors(t2v: WanT2VPipeline, i2v: WanI2VPipeline) -> None:
    with pytest.raises(ValueError, match="at least one prompt"):
        t2v.generate([], **SMALL)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        t2v.generate(["ok", "   "], **SMALL)
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        t2v.generate(PROMPTS[:1], seed=[1, 2], **SMALL)
    with pytest.raises(ValueError, match="seeds must be integers"):
        t2v.generate(PROMPTS[:1], seed=-1, **SMALL)
    with pytest.raises(ValueError, match="negative prompt"):
        t2v.generate(PROMPTS, negative_prompt=["only one"], **SMALL)
    with pytest.raises(ValueError, match="latents must have shape"):
        t2v.generate(PROMPTS[:1], latents=torch.zeros(1, 16, 2, 4, 6), **SMALL)
    with pytest.raises(ValueError, match="needs a DiT with model_type 't2v', got 'i2v'"):
        WanT2VPipeline(i2v.dit, i2v.vae, i2v.text_encoder)
    with pytest.raises(ValueError, match="needs a DiT with model_type 'i2v'"):
        WanI2VPipeline(t2v.dit, t2v.vae, t2v.text_encoder, i2v.image_encoder)
    with pytest.raises(ValueError, match="condition image per prompt"):
        i2v.generate(PROMPTS[:1], **SMALL)
    image = np.zeros((32, 48, 3), np.uint8)
    with pytest.raises(ValueError, match="2 condition images for 1 prompts"):
        i2v.generate(PROMPTS[:1], [image, image], **SMALL)
    with pytest.raises(ValueError, match="uint8"):
        i2v.generate(PROMPTS[:1], [image.astype(np.float64)], **SMALL)
    with pytest.raises(ValueError, match="outside a 9-frame video"):
        i2v.generate(PROMPTS[:1], [FrameCondition(torch.zeros(3, 1, 32, 48), [12])], **SMALL)
    with pytest.raises(FileNotFoundError, match="DiT weights not found at /nonexistent/dit"):
        WanT2VPipeline.from_pretrained("/nonexistent/dit", "/nonexistent/vae", "/nonexistent/umt5")


# ------------------------------------------------------------------------------- parity: FLF2V (issue 14)
# a CLIP tower whose input size is the video's (32 px, 4 x 4 patches + class = 17 tokens): diffusers' CLIPImageProcessor
# resizes the shortest edge and centre-crops while the released CLIP stretches to a square; at the tower's own size
# neither resizes, so both encoders see the same pixels
FLF_CLIP_CONFIG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 8,
                                                   "patch_size": 8}}
FLF_SMALL = {**SMALL, "width": 32}


def _save_open_clip(directory: Path, seed: int) -> Path:
    """A random open_clip tower of ``FLF_CLIP_CONFIG`` saved as an open_clip checkpoint (our loader reads it)."""
    import json

    from safetensors.torch import save_file

    from wanmodel.models.random_init import randomize_
    from wanmodel.text.clip_image import CONFIG_NAME, build_vision_tower

    directory.mkdir(parents=True)
    tower = randomize_(build_vision_tower(FLF_CLIP_CONFIG), seed)
    save_file({f"visual.{k}": v.detach().contiguous() for k, v in tower.state_dict().items()},
              str(directory / "open_clip_model.safetensors"))
    (directory / CONFIG_NAME).write_text(json.dumps({"model_cfg": FLF_CLIP_CONFIG}))
    return directory


def _transformers_clip(tower: torch.nn.Module):
    """transformers' CLIPVisionModel + CLIPImageProcessor holding the open_clip tower's weights (what diffusers'
    WanImageToVideoPipeline encodes images with)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    vision = FLF_CLIP_CONFIG["vision_cfg"]
    width, size = vision["width"], vision["image_size"]
    model = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=width, intermediate_size=4 * width, num_hidden_layers=vision["layers"],
        num_attention_heads=width // vision["head_width"], image_size=size, patch_size=vision["patch_size"],
        hidden_act="gelu", layer_norm_eps=1e-5)).eval()
    sd = tower.state_dict()
    out = {"embeddings.class_embedding": sd["class_embedding"], "embeddings.patch_embedding.weight": sd["conv1.weight"],
           "embeddings.position_embedding.weight": sd["positional_embedding"]}
    for ours, theirs in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out.update({f"{theirs}.weight": sd[f"{ours}.weight"], f"{theirs}.bias": sd[f"{ours}.bias"]})
    for i in range(vision["layers"]):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        for kind in ("weight", "bias"):
            for name, part in zip("qkv", sd[f"{src}attn.in_proj_{kind}"].chunk(3)):
                out[f"{dst}self_attn.{name}_proj.{kind}"] = part
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[f"{dst}{b}.{kind}"] = sd[f"{src}{a}.{kind}"]
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert not unexpected and all("position_ids" in key for key in missing)
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return model, processor


@pytest.fixture(scope="module")
def flf2v(tiny: Path) -> WanI2VPipeline:
    """An flf2v pipeline loaded from disk: the DiT in the official layout (img_emb.emb_pos), the CLIP tower as an
    open_clip checkpoint; VAE and umT5 are the tiny i2v set's."""
    from wanmodel.models.dit import DiTConfig, WanDiT
    from wanmodel.models.dit_adapters import save_dit
    from wanmodel.models.random_init import randomize_

    paths = build_tiny_models(tiny, "i2v")
    config = DiTConfig.named("tiny-flf2v", text_dim=32, image_dim=FLF_CLIP_CONFIG["vision_cfg"]["width"])
    dit = randomize_(WanDiT(config), 4)
    with torch.no_grad():  # randomize_ scales a 3-D tensor by 1/sqrt(34 * 32); make the positions matter
        dit.img_emb.emb_pos.normal_(generator=torch.Generator().manual_seed(0))
    save_dit(dit, tiny / "dit-flf2v", layout="official")
    clip = _save_open_clip(tiny / "clip-flf2v", seed=6)
    return WanI2VPipeline.from_pretrained(tiny / "dit-flf2v", paths.vae, paths.text_encoder, image_encoder=clip)


def test_flf2v_matches_diffusers_image_to_video_pipeline_with_last_image(flf2v: WanI2VPipeline,
                                                                        tmp_path: Path) -> None:
    """The released first-last-frame model: diffusers encodes both frames with its own CLIPVisionModel and feeds
    the 2 x 17 tokens through image_embedder.pos_embed; we do the same through our CLIP loader and img_emb.emb_pos."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
    from PIL import Image
    from safetensors.torch import load_file

    from wanmodel.models.dit_adapters import save_dit

    assert flf2v.dit.config.model_type == "flf2v" and flf2v.first_last_frame
    export = save_dit(flf2v.dit, tmp_path / "dit_diffusers", layout="diffusers")
    transformer = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(str(export))).eval()
    assert transformer.config.pos_embed_seq_len == 34
    transformer.load_state_dict(load_file(export / "diffusion_pytorch_model.safetensors"), strict=True)
    parts = {**_diffusers_parts(flf2v, tmp_path), "transformer": transformer}
    image_encoder, image_processor = _transformers_clip(flf2v.image_encoder.tower)
    reference = WanImageToVideoPipeline(scheduler=make_scheduler("unipc", FLF_SMALL["shift"]),
                                        image_encoder=image_encoder, image_processor=image_processor, **parts)
    reference.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(2)
    first, last = ((rng.random((32, 32, 3)) * 255).astype(np.uint8) for _ in range(2))
    noise = initial_noise(latent_shape(SamplingSettings(**FLF_SMALL)), [5])
    captured: dict = {}
    expected = reference(image=Image.fromarray(first), last_image=Image.fromarray(last), prompt=PROMPTS[:1],
                         negative_prompt=["blurry"], height=FLF_SMALL["height"], width=FLF_SMALL["width"],
                         num_frames=FLF_SMALL["num_frames"], num_inference_steps=FLF_SMALL["num_steps"],
                         guidance_scale=FLF_SMALL["guidance_scale"], latents=noise.clone(), output_type="np",
                         callback_on_step_end=_capture_latents(captured)).frames
    ours = flf2v.generate(PROMPTS[:1], [first], last_images=[last], negative_prompt="blurry", latents=noise.clone(),
                          keep_decoded=True, spacing="diffusers", **FLF_SMALL)
    torch.testing.assert_close(ours.latents, captured["latents"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(_as_diffusers_frames(ours.decoded), expected, atol=5e-5, rtol=0)
    # the image context is both frames' tokens, first then last: swapping the frames' tokens changes the sample
    clip = flf2v.image_features([FrameCondition.first_last(first, last)])
    assert clip.shape == (1, 34, 32)
    swapped = flf2v.generate(PROMPTS[:1], [first], last_images=[last], negative_prompt="blurry",
                             latents=noise.clone(), clip_features=torch.cat([clip[:, 17:], clip[:, :17]], dim=1),
                             spacing="diffusers", **{**FLF_SMALL, "num_steps": 2})
    same = flf2v.generate(PROMPTS[:1], [first], last_images=[last], negative_prompt="blurry", latents=noise.clone(),
                          clip_features=clip, spacing="diffusers", **{**FLF_SMALL, "num_steps": 2})
    assert (swapped.latents - same.latents).abs().max() > 1e-3


def test_flf2v_needs_first_last_frame_conditions(flf2v: WanI2VPipeline, i2v: WanI2VPipeline) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="flf2v DiT needs first-last-frame conditions .* condition 0 has 1"):
        flf2v.generate(PROMPTS[:1], [image], **FLF_SMALL)
    with pytest.raises(ValueError, match=r"clip_fea must be \[2, 34, 32\] \(the first and the last frame's CLIP"):
        flf2v.generate(PROMPTS[:1], [image], last_images=[image], clip_features=torch.zeros(1, 17, 32), **FLF_SMALL)
    assert not i2v.first_last_frame and i2v.task == "i2v"  # an i2v DiT keeps one frame's tokens
    assert i2v.image_features([FrameCondition.first_last(image, image)]).shape == (1, 17, 32)


def test_decoding_uses_the_vaes_own_latent_statistics() -> None:
    """A VAE with statistics of its own (trained here) decodes the DiT's latents with them, not the release's."""
    from dataclasses import replace

    from wanmodel.models.vae import WanVAE, denormalize_latents
    from wanmodel.pipelines.common import decode_latents

    torch.manual_seed(0)
    vae = WanVAE("tiny").eval()
    vae.config = replace(vae.config, latents_mean=tuple(0.1 * i for i in range(16)), latents_std=(0.3,) * 16)
    z = torch.randn(1, 16, 1, 2, 2)
    with torch.no_grad():
        expected = vae.decode(z * 0.3 + torch.arange(16).view(1, 16, 1, 1, 1) * 0.1, clamp=True)
        released = vae.decode(denormalize_latents(z), clamp=True)
    torch.testing.assert_close(decode_latents(vae, z), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(decode_latents(vae, z), released, atol=1e-3)
