"""Tiny random-weight Wan models on disk, for demos of the plumbing and for tests (``wan sample --random-tiny``).

Same classes and file layouts as the real checkpoints, a few hundred kilobytes in all: a 2-block DiT (``tiny`` /
``tiny-i2v`` config), the ``tiny`` Wan-VAE, a 2-layer umT5 encoder with a byte-level BPE tokenizer trained here on
a few sentences, and (I2V) a 2-block open_clip image tower. Every parameter is random (``randomize_``), so the
outputs are structured noise: these prove that the pipeline runs and is deterministic, never that it draws well.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from wanmodel.models.dit import DiTConfig, WanDiT
from wanmodel.models.dit_adapters import save_dit
from wanmodel.models.random_init import randomize_
from wanmodel.models.vae import WanVAE
from wanmodel.models.vae_adapters import save_vae

__all__ = ["TINY_CLIP_CONFIG", "TinyModels", "build_tiny_clip", "build_tiny_models", "build_tiny_tokenizer",
           "build_tiny_umt5"]

TEXT_DIM = 32
TINY_CLIP_CONFIG = {"embed_dim": 16,
                    "vision_cfg": {"image_size": 28, "layers": 2, "width": 32, "head_width": 8, "patch_size": 7}}
_CORPUS = [
    "a corgi surfing a wave at sunset, cinematic lighting",
    "a red fox walking through fresh snow in a quiet forest",
    "the camera follows a motor-boat chasing dolphins in the sea",
    "a tiny potato king sits on a throne, documentary photography style",
    "close-up of rain drops on a window, city lights in the background",
    "一只猫在海边散步，黄昏，电影质感",
]


@dataclass(frozen=True)
class TinyModels:
    """Folders of one tiny model set (``clip`` only for I2V)."""

    root: Path
    dit: Path
    vae: Path
    text_encoder: Path
    clip: Path | None = None


def build_tiny_tokenizer(directory: str | Path, vocab_size: int = 320) -> Path:
    """A byte-level BPE tokenizer (every string tokenizes) with umT5's special ids: <pad> 0, </s> 1, <unk> 2;
    appends </s> like the umT5 tokenizer. Saved with ``save_pretrained`` so ``AutoTokenizer`` loads it offline."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                             special_tokens=[("</s>", 1)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                      unk_token="<unk>")
    directory = Path(directory)
    wrapped.save_pretrained(str(directory))
    return directory


def build_tiny_umt5(directory: str | Path, *, d_model: int = TEXT_DIM, seed: int = 0) -> Path:
    """A 2-layer random ``UMT5EncoderModel`` (width ``d_model``) and the tiny tokenizer, in one folder."""
    from transformers import UMT5Config, UMT5EncoderModel

    directory = Path(directory)
    build_tiny_tokenizer(directory)
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(directory), local_files_only=True))
    config = UMT5Config(vocab_size=vocab, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2,
                        num_heads=d_model // 8, relative_attention_num_buckets=8, relative_attention_max_distance=32,
                        feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1)
    torch.manual_seed(seed)
    model = UMT5EncoderModel(config).eval()
    randomize_(model, seed)
    model.save_pretrained(str(directory))
    return directory


def build_tiny_clip(directory: str | Path, *, seed: int = 0) -> Path:
    """A random open_clip image tower (``TINY_CLIP_CONFIG``: width 32, 2 blocks, 28 px, 17 tokens) saved as an
    open_clip checkpoint with its ``open_clip_config.json``."""
    from safetensors.torch import save_file

    from wanmodel.text.clip_image import CONFIG_NAME, build_vision_tower

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tower = randomize_(build_vision_tower(TINY_CLIP_CONFIG), seed)
    state_dict = {f"visual.{k}": v.detach().contiguous() for k, v in tower.state_dict().items()}
    save_file(state_dict, str(directory / "open_clip_model.safetensors"))
    (directory / CONFIG_NAME).write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}, indent=2) + "\n")
    return directory


def tiny_dit_config(task: str = "t2v") -> DiTConfig:
    """``tiny`` (t2v) or ``tiny-i2v`` with the tiny text width and CLIP width."""
    if task not in ("t2v", "i2v"):
        raise ValueError(f"task must be 't2v' or 'i2v', got {task!r}")
    name = "tiny" if task == "t2v" else "tiny-i2v"
    overrides = {"text_dim": TEXT_DIM}
    if task == "i2v":
        overrides["image_dim"] = TINY_CLIP_CONFIG["vision_cfg"]["width"]
    return DiTConfig.named(name, **overrides)


def build_tiny_models(directory: str | Path, task: str = "t2v", *, seed: int = 0) -> TinyModels:
    """Write a tiny random model set for ``task`` (``t2v`` or ``i2v``) under ``directory``; returns the paths.
    Deterministic in ``seed``; reuses what is already there (rebuild by removing the folder)."""
    config = tiny_dit_config(task)
    root = Path(directory)
    paths = TinyModels(root=root, dit=root / f"dit-{task}", vae=root / "vae", text_encoder=root / "umt5",
                       clip=root / "clip" if task == "i2v" else None)
    if not (paths.dit / "config.json").is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            save_dit(randomize_(WanDiT(config), seed), paths.dit)
    if not (paths.vae / "config.json").is_file():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            save_vae(randomize_(WanVAE("tiny"), seed + 1), paths.vae)
    if not (paths.text_encoder / "config.json").is_file():
        with torch.random.fork_rng(devices=[]):
            build_tiny_umt5(paths.text_encoder, seed=seed + 2)
    if paths.clip is not None and not (paths.clip / "open_clip_config.json").is_file():
        build_tiny_clip(paths.clip, seed=seed + 3)
    return paths
