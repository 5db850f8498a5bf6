"""umT5 text encoder of Wan (report section 4.2.1): prompts -> per-prompt token embeddings for the DiT.

What the released model expects (official ``wan/modules/t5.py``, diffusers ``WanPipeline``): the prompt is cleaned
(ftfy, HTML unescape, whitespace collapsed), tokenized with the end-of-sequence token, padded/truncated to 512
tokens, and run through the umT5-XXL encoder with the attention mask. Each prompt's embeddings are then cut to its
true length (end token included); the DiT zero-pads them back to 512 before its text MLP. ``encode`` returns the
cut embeddings; ``pad_embeddings`` does the zero padding for batching.

Weights load from local paths only:
- a Hugging Face folder of ``UMT5EncoderModel`` (``config.json`` + safetensors; the ``text_encoder`` folder of the
  diffusers Wan release), with its tokenizer in the same folder or ``tokenizer_path``;
- the official release file ``models_t5_umt5-xxl-enc-bf16.pth`` (keys mapped by ``official_to_hf``), with
  ``tokenizer_path`` pointing at a local copy of the ``google/umt5-xxl`` tokenizer.
"""
from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DEFAULT_TEXT_LEN",
    "UMT5TextEncoder",
    "clean_prompt",
    "official_to_hf",
    "pad_embeddings",
    "umt5_xxl_config",
]

DEFAULT_TEXT_LEN = 512

_BLOCK_KEYS = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


def clean_prompt(text: str) -> str:
    """The released text cleaning: ftfy repair (when installed), HTML unescape twice, whitespace collapsed."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # pragma: no cover - ftfy comes with open_clip
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


def pad_embeddings(embeddings: Sequence[torch.Tensor], length: int | None = None) -> torch.Tensor:
    """Per-prompt embeddings [L_i, D] -> [B, length, D], zeros after each prompt's tokens (``length``: the
    longest L_i when None). Zero padding is exactly what the DiT does to a shorter context."""
    if not embeddings:
        raise ValueError("no embeddings to pad")
    longest = max(e.shape[0] for e in embeddings)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"an embedding has {longest} tokens, more than the padded length {length}")
    first = embeddings[0]
    out = first.new_zeros(len(embeddings), length, first.shape[-1])
    for index, embedding in enumerate(embeddings):
        out[index, : embedding.shape[0]] = embedding
    return out


def umt5_xxl_config() -> dict[str, Any]:
    """``UMT5Config`` arguments of the umT5-XXL encoder Wan uses (4096 wide, 24 layers, 64 heads)."""
    return {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
            "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6, "dropout_rate": 0.0,
            "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0}


def official_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ``T5Encoder`` keys (``token_embedding``, ``blocks.N.attn.q``...) -> ``UMT5EncoderModel`` keys.

    Unknown keys raise ValueError naming them (a decoder or a non-umT5 checkpoint is not silently half-loaded).
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = value
            out["encoder.embed_tokens.weight"] = value
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = value
        elif (match := _BLOCK.fullmatch(key)) and match.group(2) in _BLOCK_KEYS:
            out[f"encoder.block.{match.group(1)}.{_BLOCK_KEYS[match.group(2)]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not an official umT5 encoder state dict: unknown keys {sorted(unknown)[:5]}")
    return out


def _config_from_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """UMT5Config arguments read off official weights (the XXL defaults for what shapes do not tell)."""
    vocab, dim = state_dict["token_embedding.weight"].shape
    layers = 1 + max(int(m.group(1)) for k in state_dict if (m := _BLOCK.fullmatch(k)))
    buckets, heads = state_dict["blocks.0.pos_embedding.embedding.weight"].shape
    ffn = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
    inner = state_dict["blocks.0.attn.q.weight"].shape[0]
    return {**umt5_xxl_config(), "vocab_size": vocab, "d_model": dim, "num_layers": layers, "num_heads": heads,
            "d_kv": inner // heads, "d_ff": ffn, "relative_attention_num_buckets": buckets}


def _load_model(path: Path, dtype: torch.dtype, overrides: Mapping[str, Any] | None = None) -> torch.nn.Module:
    from transformers import UMT5Config, UMT5EncoderModel

    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"umT5 encoder folder {path} has no config.json (expected a Hugging Face "
                                    "UMT5EncoderModel folder, e.g. the text_encoder folder of a diffusers Wan release)")
        return UMT5EncoderModel.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state_dict = load_file(str(path))
    else:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if "token_embedding.weight" in state_dict:
        config = UMT5Config(**{**_config_from_official(state_dict), **(overrides or {})})
        state_dict = official_to_hf(state_dict)
    else:
        raise ValueError(f"{path} is not an official umT5 encoder checkpoint (no token_embedding.weight); "
                         "pass a Hugging Face UMT5EncoderModel folder instead")
    model = UMT5EncoderModel(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if k not in ("shared.weight", "encoder.embed_tokens.weight")]
    if missing or unexpected:
        raise ValueError(f"{path}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    return model.to(dtype)


class UMT5TextEncoder:
    """umT5 encoder + tokenizer from local paths; ``encode(prompts)`` -> list of [L_i, D] embeddings.

    ``device``/``dtype``: where the encoder runs (``device="cpu"`` keeps the 11 GB XXL encoder off the GPU, like the
    official ``--t5_cpu``); ``encode(..., device=...)`` moves the results where the DiT runs.
    ``official_config``: ``UMT5Config`` fields for an official checkpoint that its weights do not tell (default
    the XXL values, e.g. ``relative_attention_max_distance=128``).
    """

    def __init__(self, model_path: str | Path, tokenizer_path: str | Path | None = None, *,
                 text_len: int = DEFAULT_TEXT_LEN, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, official_config: Mapping[str, Any] | None = None) -> None:
        model_path = Path(model_path).expanduser()
        if not model_path.exists():
            raise FileNotFoundError(f"umT5 text encoder weights not found at {model_path} (expected a Hugging Face "
                                    "UMT5EncoderModel folder or the official models_t5_umt5-xxl-enc-bf16.pth)")
        tokenizer_path = Path(tokenizer_path).expanduser() if tokenizer_path is not None else model_path
        if not tokenizer_path.is_dir():
            raise FileNotFoundError(f"umT5 tokenizer folder not found at {tokenizer_path} (expected a local copy "
                                    "of the google/umt5-xxl tokenizer; pass tokenizer_path)")
        if text_len < 1:
            raise ValueError(f"text_len must be >= 1, got {text_len}")
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), local_files_only=True)
        except (OSError, ValueError) as error:
            raise FileNotFoundError(f"no loadable tokenizer in {tokenizer_path}: {error}") from error
        self.model = _load_model(model_path, dtype, official_config).to(device).eval().requires_grad_(False)
        self.text_len = text_len
        self.device = torch.device(device)
        self.dtype = dtype

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cleaned prompts -> (input ids, attention mask), both [B, text_len]."""
        if isinstance(prompts, str):
            raise TypeError("tokenize takes a list of prompts, not a single string")
        tokens = self.tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=self.text_len,
                                truncation=True, add_special_tokens=True, return_attention_mask=True,
                                return_tensors="pt")
        return tokens.input_ids, tokens.attention_mask

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], device: str | torch.device | None = None) -> list[torch.Tensor]:
        """One [L_i, D] tensor per prompt (L_i = its token count, end token included, at most ``text_len``)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if len(prompts) == 0:
            raise ValueError("no prompts to encode")
        ids, mask = self.tokenize(prompts)
        hidden = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).last_hidden_state
        lengths = mask.gt(0).sum(dim=1).tolist()
        out_device = self.device if device is None else torch.device(device)
        return [h[:length].to(out_device) for h, length in zip(hidden, lengths)]

    __call__ = encode
