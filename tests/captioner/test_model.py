"""SlowFastCaptioner: visual tokens computed and placed as documented, loss on captions, generate, save/load."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from captioner.model import (
    SlowFastCaptioner,
    load_captioner,
    merge_embeddings,
    pool_views,
    vision_features,
)
from captioner.processor import CaptionProcessor, ImageInput, VideoInput
from captioner.synthetic import make_clip


def _video(seed: int = 1, frames: int = 6) -> VideoInput:
    return VideoInput(make_clip(seed, num_frames=frames).frames, fps=3.0)


def test_pool_views_averages_patch_windows() -> None:
    side = 27  # SigLIP-so400m at 384 px: 27x27 patches -> 12x12
    grid = torch.arange(side * side, dtype=torch.float32).reshape(1, side * side, 1).repeat(2, 1, 3)
    pooled = pool_views(grid, 12)
    assert pooled.shape == (2, 144, 3)
    first = grid[0, :, 0].reshape(side, side)[0:3, 0:3].mean()  # adaptive window 0 covers rows/cols 0..2
    assert torch.isclose(pooled[0, 0, 0], first)
    assert torch.allclose(pool_views(torch.ones(1, 144, 4), 12), torch.ones(1, 144, 4))
    with pytest.raises(ValueError, match="square grid"):
        pool_views(torch.ones(1, 143, 4), 12)


def test_visual_embeddings_are_slow_grids_and_fast_means_at_the_pad_positions(tiny_parts) -> None:
    model, _, processor = tiny_parts
    cfg = model.config
    sample = processor(_video(frames=6), "Describe.")
    batch = processor.collate([sample])
    with torch.no_grad():
        embeds = model.input_embeddings(batch.input_ids, batch.pixel_values, batch.layouts)[0]
        feats = vision_features(model.vision_tower, batch.pixel_values, cfg.vision_feature_layer)  # (6, 144, 64)
        project = model.multi_modal_projector
        text = model.language_model.get_input_embeddings()(batch.input_ids)[0]
    ids = batch.input_ids[0]
    pads = (ids == cfg.video_token_id).nonzero().flatten()
    assert len(pads) == 2 * 144 + 4  # frames 0 and 4 slow, 1, 2, 3, 5 fast
    expected = []
    for frame in range(6):
        if frame % 4 == 0:
            expected.append(project(pool_views(feats[frame:frame + 1], 12)[0]))
        else:
            expected.append(project(feats[frame].mean(0, keepdim=True)))
    assert torch.allclose(embeds[pads], torch.cat(expected), atol=1e-5)
    others = (ids != cfg.video_token_id).nonzero().flatten()
    assert torch.equal(embeds[others], text[others])  # separators and text keep their token embeddings
    # a different video changes only the pad positions
    other = processor.collate([processor(_video(seed=2, frames=6), "Describe.")])
    with torch.no_grad():
        embeds2 = model.input_embeddings(other.input_ids, other.pixel_values, other.layouts)[0]
    assert torch.equal(embeds2[others], embeds[others]) and not torch.allclose(embeds2[pads], embeds[pads])


def test_image_views_in_order_and_count_check(tiny_parts) -> None:
    model, _, processor = tiny_parts
    image = np.random.default_rng(0).integers(0, 255, (48, 144, 3), dtype=np.uint8)  # 1x3 tiles + global
    batch = processor.collate([processor(ImageInput(image), "Describe.")])
    with torch.no_grad():
        (item,) = model.embed_media(batch.pixel_values, batch.layouts)
        feats = vision_features(model.vision_tower, batch.pixel_values, -1)
        assert torch.allclose(item, model.multi_modal_projector(pool_views(feats, 12).flatten(0, 1)), atol=1e-5)
    assert item.shape == (4 * 144, 256)
    embeds = torch.zeros(1, 10, 256)
    with pytest.raises(ValueError, match="placeholder tokens"):
        merge_embeddings(embeds, torch.zeros(1, 10, dtype=torch.long), item, [model.config.image_token_id])


def test_several_items_in_one_prompt_keep_their_order(tiny_parts) -> None:
    model, _, processor = tiny_parts
    cfg = model.config
    image, video = ImageInput(make_clip(4, "image").frames[0]), _video(seed=5, frames=5)
    both = processor([image, video], "Compare.")
    assert sum(1 for t in both.input_ids if t == cfg.vision_start_token_id) == 2
    assert both.num_visual_tokens == 2 * 144 + (2 * 144 + 3)
    with torch.no_grad():
        items = model.embed_media(both.pixel_values, both.layouts)
        alone = [model.embed_media(s.pixel_values, s.layouts)[0]
                 for s in (processor(image, "x"), processor(video, "x"))]
        batch = processor.collate([both])
        embeds = model.input_embeddings(batch.input_ids, batch.pixel_values, batch.layouts)[0]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(items, alone, strict=True))
    ids = batch.input_ids[0]
    mask = (ids == cfg.image_token_id) | (ids == cfg.video_token_id)
    assert torch.allclose(embeds[mask], torch.cat(alone), atol=1e-5)  # image tokens first, then the video's


def test_loss_is_cross_entropy_on_caption_tokens_only(tiny_parts) -> None:
    model, _, processor = tiny_parts
    clip = make_clip(3)
    sample = processor(VideoInput(clip.frames, fps=3.0), "Describe.", target=clip.caption)
    batch = processor.collate([sample, processor(ImageInput(clip.frames[0]), "Describe the image.",
                                                 target="One image.")], padding_side="right")
    with torch.no_grad():
        loss = model(batch)
        embeds = model.input_embeddings(batch.input_ids, batch.pixel_values, batch.layouts)
        logits = model.language_model(inputs_embeds=embeds, attention_mask=batch.attention_mask).logits
    targets = batch.labels[:, 1:]
    keep = targets != -100
    reference = F.cross_entropy(logits[:, :-1][keep], targets[keep])
    assert keep.sum() == sum(1 for s in (sample,) for t in s.labels if t != -100) + len(
        processor.target_ids("One image."))
    assert torch.isclose(loss, reference, atol=1e-5)


def test_batched_generate_equals_one_by_one_and_depends_on_media(tiny_parts) -> None:
    model, tokenizer, processor = tiny_parts
    items = [_video(seed=s, frames=4 + s) for s in range(3)] + [ImageInput(make_clip(9, "image").frames[0])]
    samples = [processor(item, "Describe.") for item in items]
    batched = model.generate(processor.collate(samples), max_new_tokens=8)
    single = [model.generate(processor.collate([s]), max_new_tokens=8)[0] for s in samples]
    assert batched == single
    assert len({tuple(ids) for ids in batched}) > 1  # the untrained tiny model still reads its input
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(processor.collate(samples, padding_side="right"), max_new_tokens=2)
    torch.manual_seed(0)
    sampled = model.generate(processor.collate(samples[:1]), max_new_tokens=8, do_sample=True, temperature=1.0)
    torch.manual_seed(0)
    assert model.generate(processor.collate(samples[:1]), max_new_tokens=8, do_sample=True) == sampled


def test_save_load_round_trip(tiny_parts, tmp_path: Path) -> None:
    model, tokenizer, processor = tiny_parts
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    loaded, loaded_processor = load_captioner(tmp_path / "m")
    assert loaded.config.architectures == ["SlowFastCaptioner"]
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    sample = processor(_video(), "Describe.")
    again = loaded_processor(_video(), "Describe.")
    assert sample.input_ids == again.input_ids
    assert model.generate(processor.collate([sample]), 6) == loaded.generate(loaded_processor.collate([again]), 6)
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SlowFastCaptioner.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_captioner(tmp_path / "nothing_here")


def test_clip_vision_tower_drops_the_class_token() -> None:
    from captioner.processor import resolve_token_ids
    from captioner.tiny import build_tiny_tokenizer, tiny_config

    tokenizer = build_tiny_tokenizer()
    cfg = tiny_config(len(tokenizer), vision=dict(model_type="clip_vision_model", hidden_size=64,
                                                  intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                                  image_size=48, patch_size=4, projection_dim=32),
                      vision_feature_layer=-2)
    cfg = resolve_token_ids(cfg, tokenizer)
    model = SlowFastCaptioner(cfg).eval()
    processor = CaptionProcessor(cfg, tokenizer)
    batch = processor.collate([processor(_video(frames=5), "Describe.")])
    feats = vision_features(model.vision_tower, batch.pixel_values, -2)
    assert feats.shape == (5, 144, 64)  # 145 tokens with the class token
    assert len(model.generate(batch, max_new_tokens=3)[0]) <= 3


def test_from_components_adds_missing_tokens(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    from captioner.config import FRAME_TOKEN, SPECIAL_TOKENS, VISION_START

    # a Qwen-like tokenizer that lacks our frame separator (as a released Qwen tokenizer does)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = [t for t in SPECIAL_TOKENS if t != FRAME_TOKEN]
    bpe.train_from_iterator(["Describe the video. A red circle."] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                            additional_special_tokens=specials[3:]).save_pretrained(tmp_path / "llm")
    vocab = bpe.get_vocab_size()
    assert FRAME_TOKEN not in bpe.get_vocab()
    SiglipVisionModel(SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, image_size=48, patch_size=4)
                      ).save_pretrained(tmp_path / "vit")
    Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, hidden_size=128, intermediate_size=256,
                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
                     ).save_pretrained(tmp_path / "llm")
    model, tok = SlowFastCaptioner.from_components(tmp_path / "vit", tmp_path / "llm", max_tiles=4)
    assert FRAME_TOKEN in tok.get_vocab() and VISION_START in tok.get_vocab()
    assert model.config.max_tiles == 4 and model.config.frame_token_id == tok.get_vocab()[FRAME_TOKEN]
    assert model.language_model.get_input_embeddings().num_embeddings == len(tok) == vocab + 1
    processor = CaptionProcessor(model.config, tok)
    assert len(model.generate(processor.collate([processor(_video(frames=2), "Describe.")]), 2)[0]) <= 2
    with pytest.raises(FileNotFoundError, match="expected a transformers folder"):
        SlowFastCaptioner.from_components(tmp_path / "missing_vit", tmp_path / "llm")
