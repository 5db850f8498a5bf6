"""Text and image conditioning: umT5 embeddings as diffusers' WanPipeline computes them, the official umT5
checkpoint layout, CLIP penultimate tokens as transformers' CLIPVisionModel computes them, prompt rewriting."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from wanmodel.pipelines.tiny import (
    TINY_CLIP_CONFIG,
    build_tiny_clip,
    build_tiny_tokenizer,
    build_tiny_umt5,
)
from wanmodel.text.clip_image import ClipImageEncoder, build_vision_tower
from wanmodel.text.rewrite import (
    REWRITE_SYSTEM_PROMPT_EN,
    RewriteSettings,
    TransformersRewriter,
    VLLMRewriter,
    build_rewriter,
)
from wanmodel.text.umt5 import (
    UMT5TextEncoder,
    clean_prompt,
    official_to_hf,
    pad_embeddings,
)

PROMPTS = ["a corgi surfing a wave", "  A red fox &amp; its cub\n walking through   fresh snow at dusk  ",
           "一只猫在海边散步"]


@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_umt5(tmp_path_factory.mktemp("umt5"))


@pytest.fixture(scope="module")
def encoder(umt5_dir: Path) -> UMT5TextEncoder:
    torch.set_num_threads(1)
    return UMT5TextEncoder(umt5_dir)


# ------------------------------------------------------------------------------------------------- umT5
def test_clean_prompt() -> None:
    assert clean_prompt("  a&amp;amp;b \n\t c  ") == "a&b c"
    assert clean_prompt("plain") == "plain"


def test_umt5_matches_diffusers_wan_pipeline(encoder: UMT5TextEncoder, umt5_dir: Path) -> None:
    from diffusers import WanPipeline
    from transformers import AutoTokenizer, UMT5EncoderModel

    reference = WanPipeline(tokenizer=AutoTokenizer.from_pretrained(str(umt5_dir)),
                            text_encoder=UMT5EncoderModel.from_pretrained(str(umt5_dir)).eval(),
                            vae=None, scheduler=None)
    with torch.no_grad():
        expected = reference._get_t5_prompt_embeds(PROMPTS, max_sequence_length=512, device=torch.device("cpu"))
    ours = encoder.encode(PROMPTS)
    ids, mask = encoder.tokenize(PROMPTS)
    assert [e.shape[0] for e in ours] == mask.sum(dim=1).tolist()
    assert all(ids[i, length - 1] == 1 for i, length in enumerate(mask.sum(dim=1).tolist()))  # ends with </s>
    torch.testing.assert_close(pad_embeddings(ours, 512), expected, atol=1e-6, rtol=0)
    assert expected[0, ours[0].shape[0]:].abs().max() == 0  # padding positions are zero


def test_umt5_embeddings_do_not_depend_on_the_batch(encoder: UMT5TextEncoder) -> None:
    alone = encoder.encode([PROMPTS[0]])[0]
    batched = encoder.encode([PROMPTS[1], PROMPTS[0]])[1]
    torch.testing.assert_close(alone, batched, atol=1e-6, rtol=0)


def test_umt5_truncates_to_text_len(umt5_dir: Path) -> None:
    short = UMT5TextEncoder(umt5_dir, text_len=16)
    (embedding,) = short.encode(["word " * 200])
    assert embedding.shape == (16, 32)


def test_umt5_loads_the_official_checkpoint_layout(encoder: UMT5TextEncoder, umt5_dir: Path,
                                                   tmp_path: Path) -> None:
    inverse = {v: k for k, v in {
        "norm1.weight": "layer.0.layer_norm.weight", "attn.q.weight": "layer.0.SelfAttention.q.weight",
        "attn.k.weight": "layer.0.SelfAttention.k.weight", "attn.v.weight": "layer.0.SelfAttention.v.weight",
        "attn.o.weight": "layer.0.SelfAttention.o.weight",
        "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
        "norm2.weight": "layer.1.layer_norm.weight", "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
        "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight", "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
    }.items()}
    official = {}
    for key, value in encoder.model.state_dict().items():
        if key == "shared.weight":
            official["token_embedding.weight"] = value
        elif key == "encoder.final_layer_norm.weight":
            official["norm.weight"] = value
        elif (match := re.fullmatch(r"encoder\.block\.(\d+)\.(.+)", key)):
            official[f"blocks.{match.group(1)}.{inverse[match.group(2)]}"] = value
    torch.save(official, tmp_path / "models_t5_umt5-tiny-enc.pth")
    assert set(official_to_hf(official)) >= {"encoder.final_layer_norm.weight", "shared.weight"}
    loaded = UMT5TextEncoder(tmp_path / "models_t5_umt5-tiny-enc.pth", tokenizer_path=umt5_dir,
                             official_config={"relative_attention_max_distance": 32})
    for a, b in zip(loaded.encode(PROMPTS), encoder.encode(PROMPTS)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="unknown keys"):
        official_to_hf({**official, "decoder.blocks.0.attn.q.weight": official["norm.weight"]})


def test_umt5_bad_inputs(encoder: UMT5TextEncoder, umt5_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        UMT5TextEncoder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        UMT5TextEncoder(umt5_dir, tokenizer_path=tmp_path / "no_tokenizer")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        UMT5TextEncoder(tmp_path / "empty", tokenizer_path=umt5_dir)
    with pytest.raises(ValueError, match="no prompts"):
        encoder.encode([])
    with pytest.raises(ValueError, match="more than the padded length"):
        pad_embeddings([torch.zeros(5, 2)], 4)


# ------------------------------------------------------------------------------------------------- CLIP
def _hf_clip_from_open_clip(tower: torch.nn.Module):
    """transformers CLIPVisionModel with the open_clip tower's weights (the encoder diffusers' I2V uses)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    vision = TINY_CLIP_CONFIG["vision_cfg"]
    width = vision["width"]
    config = CLIPVisionConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=vision["layers"],
                              num_attention_heads=width // vision["head_width"], image_size=vision["image_size"],
                              patch_size=vision["patch_size"], hidden_act="gelu", layer_norm_eps=1e-5)
    model = CLIPVisionModel(config).eval()
    sd = tower.state_dict()
    out = {"embeddings.class_embedding": sd["class_embedding"],
           "embeddings.patch_embedding.weight": sd["conv1.weight"],
           "embeddings.position_embedding.weight": sd["positional_embedding"],
           "pre_layrnorm.weight": sd["ln_pre.weight"], "pre_layrnorm.bias": sd["ln_pre.bias"],
           "post_layernorm.weight": sd["ln_post.weight"],
           "post_layernorm.bias": sd["ln_post.bias"]}
    for i in range(vision["layers"]):
        src, dst = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        q, k, v = sd[src + "attn.in_proj_weight"].chunk(3)
        qb, kb, vb = sd[src + "attn.in_proj_bias"].chunk(3)
        out.update({dst + "self_attn.q_proj.weight": q, dst + "self_attn.k_proj.weight": k,
                    dst + "self_attn.v_proj.weight": v, dst + "self_attn.q_proj.bias": qb,
                    dst + "self_attn.k_proj.bias": kb, dst + "self_attn.v_proj.bias": vb,
                    dst + "self_attn.out_proj.weight": sd[src + "attn.out_proj.weight"],
                    dst + "self_attn.out_proj.bias": sd[src + "attn.out_proj.bias"]})
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"),
                     ("mlp.c_proj", "mlp.fc2")):
            out[dst + b + ".weight"] = sd[f"{src}{a}.weight"]
            out[dst + b + ".bias"] = sd[f"{src}{a}.bias"]
    missing, unexpected = model.load_state_dict(out, strict=False)
    assert not unexpected and all("position_ids" in k for k in missing)
    return model


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_clip_penultimate_tokens_match_transformers_clip_vision(clip_dir: Path) -> None:
    from PIL import Image
    from transformers import CLIPImageProcessor

    encoder = ClipImageEncoder.from_pretrained(clip_dir)
    hf = _hf_clip_from_open_clip(encoder.tower)
    size = TINY_CLIP_CONFIG["vision_cfg"]["image_size"]
    image = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    with torch.no_grad():
        expected = hf(**processor(images=Image.fromarray(image), return_tensors="pt"),
                      output_hidden_states=True).hidden_states[-2]
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    ours = encoder.encode(pixels)
    assert ours.shape == (1, (size // 7) ** 2 + 1, 32)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    # any input size is resized to the tower's 28 px; the token count does not change
    assert encoder.encode(torch.zeros(2, 3, 40, 64)).shape == (2, 17, 32)


def test_clip_loads_the_official_layout(clip_dir: Path, tmp_path: Path) -> None:
    encoder = ClipImageEncoder.from_pretrained(clip_dir)
    sd = encoder.tower.state_dict()
    official = {"visual.patch_embedding.weight": sd["conv1.weight"],
                "visual.cls_embedding": sd["class_embedding"].view(1, 1, -1),
                "visual.pos_embedding": sd["positional_embedding"][None],
                "visual.pre_norm.weight": sd["ln_pre.weight"], "visual.pre_norm.bias": sd["ln_pre.bias"],
                "visual.post_norm.weight": sd["ln_post.weight"], "visual.post_norm.bias": sd["ln_post.bias"],
                "visual.head": sd["proj"], "textual.token_embedding.weight": torch.zeros(3, 2)}
    for i in range(TINY_CLIP_CONFIG["vision_cfg"]["layers"]):
        src, dst = f"transformer.resblocks.{i}.", f"visual.transformer.{i}."
        for a, b in (("ln_1", "norm1"), ("ln_2", "norm2"), ("attn.out_proj", "attn.proj"), ("mlp.c_fc", "mlp.0"),
                     ("mlp.c_proj", "mlp.2")):
            official[f"{dst}{b}.weight"] = sd[f"{src}{a}.weight"]
            official[f"{dst}{b}.bias"] = sd[f"{src}{a}.bias"]
        official[dst + "attn.to_qkv.weight"] = sd[src + "attn.in_proj_weight"]
        official[dst + "attn.to_qkv.bias"] = sd[src + "attn.in_proj_bias"]
    torch.save(official, tmp_path / "models_clip_tiny.pth")
    loaded = ClipImageEncoder.from_pretrained(tmp_path / "models_clip_tiny.pth", model=TINY_CLIP_CONFIG)
    images = torch.rand(2, 3, 28, 28) * 2 - 1
    torch.testing.assert_close(loaded.encode(images), encoder.encode(images), atol=0, rtol=0)


def test_clip_bad_inputs(clip_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="models_clip"):
        ClipImageEncoder.from_pretrained(tmp_path / "models_clip_missing.pth")
    with pytest.raises(FileNotFoundError, match="no CLIP checkpoint"):
        ClipImageEncoder.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="shape"):  # weights of another size than the named config
        ClipImageEncoder.from_pretrained(clip_dir, model={"embed_dim": 16, "vision_cfg": {
            **TINY_CLIP_CONFIG["vision_cfg"], "width": 48, "head_width": 8}})
    torch.save({"something.else": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a CLIP image-tower checkpoint"):
        ClipImageEncoder.from_pretrained(tmp_path / "other.pth")
    encoder = ClipImageEncoder(build_vision_tower(TINY_CLIP_CONFIG))
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        encoder.encode(torch.zeros(3, 28, 28))


# --------------------------------------------------------------------------------------------- rewriting
@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    directory = tmp_path_factory.mktemp("llm")
    build_tiny_tokenizer(directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    tokenizer.save_pretrained(str(directory))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=0, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(str(directory))
    return directory


def test_transformers_rewriter_batches_like_single_prompts(llm_dir: Path) -> None:
    rewriter = TransformersRewriter(llm_dir, max_new_tokens=6)
    rendered = rewriter.render("a cat")
    assert rendered.startswith("<system>" + REWRITE_SYSTEM_PROMPT_EN) and rendered.endswith("<user>a cat\n<assistant>")
    prompts = ["a cat", "a red fox walking through the snow at dusk"]
    batched = rewriter.rewrite(prompts)
    singles = [rewriter.rewrite([p])[0] for p in prompts]
    assert batched == singles  # left padding and the attention mask keep batch rows independent
    for prompt, out in zip(prompts, batched):
        assert out and out != prompt and "prompt" not in out  # only the new tokens come back
    # every new token decodes to at most a few characters; 6 tokens bound the length
    ids = rewriter.tokenizer(batched[0], add_special_tokens=False).input_ids
    assert 0 < len(ids) <= 8


def test_rewrite_settings_and_missing_backends(llm_dir: Path, tmp_path: Path) -> None:
    assert build_rewriter(None) is None and build_rewriter(RewriteSettings()) is None
    with pytest.raises(ValueError, match="model_path"):
        RewriteSettings(backend="transformers")
    with pytest.raises(ValueError, match="backend"):
        RewriteSettings(backend="openai", model_path="x")
    with pytest.raises(ValueError, match="language"):
        RewriteSettings(language="fr")
    assert "80-100" in RewriteSettings(language="zh").instructions
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        TransformersRewriter(tmp_path)
    rewriter = build_rewriter(RewriteSettings(backend="transformers", model_path=str(llm_dir), max_new_tokens=2))
    assert isinstance(rewriter, TransformersRewriter) and rewriter.max_new_tokens == 2
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ImportError, match="vllm"):
            VLLMRewriter(llm_dir)
