"""A tiny random-initialised captioner with its own small BPE tokenizer, saved to a local folder.

    python -m captioner.tiny --out models/tiny_captioner

The sizes keep the whole path cheap on a CPU while staying servable by vLLM: the LLM is a Qwen2 with hidden 256,
4 heads (head size 64: vLLM rejects smaller heads), 2 layers; the ViT is a SigLIP with hidden 64 on 48x48 views
with 4x4 patches, so each view has exactly the 12x12 patch grid the pooling keeps. The tokenizer is a byte-level
BPE trained with the ``tokenizers`` package on the caption templates, the instruction templates and a few hundred
common words, and holds the captioner's special tokens (``captioner.config.SPECIAL_TOKENS``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from captioner.config import END_OF_TEXT, IM_END, SPECIAL_TOKENS, SlowFastCaptionerConfig
from captioner.model import SlowFastCaptioner
from captioner.processor import resolve_token_ids

_COMMON_WORDS = (
    "a an the this that these those is are was were be been it its of in on at to from with without and or but "
    "not no yes there here what which who where when how why image video photo picture frame frames scene object "
    "objects person people man woman child dog cat car bus tree trees sky cloud clouds water sea river road street "
    "city building house room table chair window door grass field mountain snow rain sun night day light dark "
    "bright black white grey gray orange purple pink brown colour color colours shape shapes number camera angle "
    "motion moves move moving walks runs jumps sits stands looks holds slowly quickly close wide shot view top "
    "bottom front back side center centre background foreground style cartoon realistic painting drawing text "
    "sign logo written reads says event happens describe detail details visible main their they them he she "
    "one two three four five six seven eight nine ten many several some all each both other left right up down "
    "pan pans tilt tilts zoom zooms static still fixed over under above below between around into out of "
    "circle circles square squares triangle triangles red green blue yellow"
).split()


def tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on (deterministic)."""
    from captioner.synthetic import caption_corpus
    from captioner.templates import TEMPLATES

    return [*caption_corpus(), *TEMPLATES.values(), " ".join(_COMMON_WORDS), "system user assistant",
            "You are a helpful assistant that describes images and videos in detail.", "0123456789 .,:;!?'\"()-"]


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with the captioner's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(tokenizer_corpus() * 4, trainer=trainer)
    extra = [t for t in SPECIAL_TOKENS if t not in (IM_END, END_OF_TEXT)]
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=IM_END, pad_token=END_OF_TEXT,
                                   additional_special_tokens=extra)


def tiny_config(vocab_size: int, text: dict | None = None, vision: dict | None = None,
                **overrides) -> SlowFastCaptionerConfig:
    """The tiny architecture (see module docstring); ``text``/``vision`` update the LLM/ViT settings,
    ``overrides`` are other config fields."""
    vision_config = dict(model_type="siglip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, image_size=48, patch_size=4)
    text_config = dict(model_type="qwen2", vocab_size=vocab_size, hidden_size=256, intermediate_size=512,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=8192,
                tie_word_embeddings=False) | (text or {})
    vision_config = vision_config | (vision or {})
    return SlowFastCaptionerConfig(vision_config=vision_config, text_config=text_config, **overrides)


@torch.no_grad()
def randomize_weights(model: torch.nn.Module, std: float, seed: int = 0) -> None:
    """Redraw every linear, convolution and embedding weight from N(0, std) (biases and norms untouched)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv2d)):
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * std)


def build_tiny_captioner(seed: int = 0, init_std: float | None = 0.1, **overrides) -> tuple[SlowFastCaptioner, object]:
    """``(model, tokenizer)``: a random tiny captioner (deterministic in ``seed``) and its tokenizer.

    ``init_std`` redraws the weights from N(0, init_std): at 0.1 the greedy output of the untrained model
    depends on the image or video (with transformers' default 0.02 init it repeats one token whatever the
    input, which would make backend parity checks vacuous). None keeps the transformers initialisation.
    ``overrides`` go to ``tiny_config`` (``text={...}``, ``vision={...}``, config fields).
    """
    tokenizer = build_tiny_tokenizer()
    config = resolve_token_ids(tiny_config(len(tokenizer), **overrides), tokenizer)
    torch.manual_seed(seed)
    model = SlowFastCaptioner(config).eval()
    if init_std is not None:
        randomize_weights(model, init_std, seed)
    return model, tokenizer


def save_tiny_captioner(out_dir: str | Path, seed: int = 0, init_std: float | None = 0.1, **overrides) -> Path:
    """Build and save the tiny captioner (config, safetensors weights, tokenizer) to ``out_dir``."""
    model, tokenizer = build_tiny_captioner(seed, init_std, **overrides)
    return model.save_pretrained(out_dir, tokenizer=tokenizer)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Save a tiny random slow-fast captioner to a folder.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-std", type=float, default=0.1, help="weight std; <= 0 keeps transformers' init")
    args = parser.parse_args(argv)
    print(save_tiny_captioner(args.out, args.seed, args.init_std if args.init_std > 0 else None))


if __name__ == "__main__":
    main()
