"""The slow-fast captioner (report section 3.3.3): a LLaVA-style ViT -> 2-layer MLP -> Qwen2 LLM.

    model = SlowFastCaptioner.from_pretrained("models/captioner")        # config.json + model.safetensors
    processor = load_processor("models/captioner")                       # tokenizer from the same folder
    batch = processor.collate([processor(VideoInput(frames, fps=30), "Describe this video.")])
    ids = model.generate(batch, max_new_tokens=128)                       # greedy

Submodules (checkpoint keys): ``vision_tower`` (a transformers ``SiglipVisionModel`` or ``CLIPVisionModel``),
``multi_modal_projector`` (``linear_1``, GELU, ``linear_2``), ``language_model`` (``Qwen2ForCausalLM``).

Visual embeddings (``embed_media``): every view (image tile, global view or video frame) goes through the ViT;
its patch features (hidden state ``vision_feature_layer``; CLIP's class token dropped) form a square grid that
is adaptively average-pooled to ``pool_grid x pool_grid`` (``pool_views``). Image items keep all pooled views;
video items keep the pooled grid of slow frames (every ``slow_stride``-th) and the global average of the patch
features of the others (fast frames). The pooled features go through the projector and are written, in order,
into the LLM's input embeddings at the ``<|image_pad|>``/``<|video_pad|>`` positions (``merge_embeddings``).
The functions ``vision_features``, ``pool_views``, ``pool_item`` and ``merge_embeddings`` are module-level so
a serving engine can reuse the exact computation.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import CLIPVisionModel, PreTrainedConfig, Qwen2ForCausalLM, SiglipVisionModel
from transformers.activations import ACT2FN

from captioner.config import ARCHITECTURE, SlowFastCaptionerConfig, register_auto_config
from captioner.processor import IGNORE_INDEX, CaptionerBatch, CaptionProcessor, ImageLayout, MediaLayout

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


# ------------------------------------------------------------------------------------------ building blocks
def build_vision_tower(vision_config: PreTrainedConfig) -> nn.Module:
    """A randomly initialised SigLIP or CLIP vision model for ``vision_config``."""
    if vision_config.model_type == "siglip_vision_model":
        return SiglipVisionModel(vision_config)
    if vision_config.model_type == "clip_vision_model":
        return CLIPVisionModel(vision_config)
    raise ValueError(f"unsupported vision model_type {vision_config.model_type!r}")


class MultiModalProjector(nn.Module):
    """The two-layer perceptron from ViT features to the LLM's embedding space."""

    def __init__(self, vision_hidden: int, text_hidden: int, act: str = "gelu") -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_hidden, text_hidden)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(text_hidden, text_hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


def vision_features(tower: nn.Module, pixel_values: torch.Tensor, feature_layer: int) -> torch.Tensor:
    """Patch features ``(V, N, D)`` of views ``(V, 3, S, S)``: hidden state ``feature_layer``, no class token."""
    out = tower(pixel_values=pixel_values, output_hidden_states=True)
    features = out.hidden_states[feature_layer]
    if tower.config.model_type == "clip_vision_model":
        features = features[:, 1:]
    return features


def pool_views(features: torch.Tensor, pool_grid: int) -> torch.Tensor:
    """``(V, N, D)`` patch features on a square grid -> ``(V, pool_grid**2, D)`` by adaptive average pooling."""
    views, count, dim = features.shape
    side = math.isqrt(count)
    if side * side != count:
        raise ValueError(f"patch features do not form a square grid: {count} patches")
    grid = features.transpose(1, 2).reshape(views, dim, side, side)
    pooled = F.adaptive_avg_pool2d(grid, pool_grid)
    return pooled.flatten(2).transpose(1, 2)


def pool_item(features: torch.Tensor, layout: MediaLayout, pool_grid: int) -> torch.Tensor:
    """One item's visual tokens ``(num_visual_tokens, D)`` from its views' patch features ``(V, N, D)``.

    Images: every view's pooled grid, view after view. Videos: slow frames' pooled grids and fast frames' mean
    patch feature, in frame order.
    """
    if features.shape[0] != layout.num_views:
        raise ValueError(f"{layout.kind} item expects {layout.num_views} views, got {features.shape[0]}")
    if isinstance(layout, ImageLayout):
        return pool_views(features, pool_grid).flatten(0, 1)
    slow = torch.tensor(layout.slow_mask, device=features.device)
    pooled = pool_views(features[slow], pool_grid)  # (S, P, D)
    fast = features[~slow].mean(dim=1, keepdim=True)  # (F, 1, D)
    tokens, s, f = [], 0, 0
    for is_slow in layout.slow_mask:
        if is_slow:
            tokens.append(pooled[s])
            s += 1
        else:
            tokens.append(fast[f])
            f += 1
    return torch.cat(tokens, dim=0)


def merge_embeddings(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, visual: torch.Tensor,
                     placeholder_ids: Sequence[int]) -> torch.Tensor:
    """Write ``visual`` (T, H) rows, in order, at the positions of ``placeholder_ids`` in ``input_ids``."""
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for token in placeholder_ids:
        mask |= input_ids == token
    count = int(mask.sum())
    if count != visual.shape[0]:
        raise ValueError(f"prompt has {count} visual placeholder tokens but the media gave {visual.shape[0]} "
                         "embeddings (was the prompt built by CaptionProcessor?)")
    return inputs_embeds.masked_scatter(mask.unsqueeze(-1), visual.to(inputs_embeds.dtype))


# ------------------------------------------------------------------------------------------------- model
class SlowFastCaptioner(nn.Module):
    """ViT + MLP projector + Qwen2 causal LM with slow-fast video tokens (see the module docstring)."""

    def __init__(self, config: SlowFastCaptionerConfig) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = build_vision_tower(config.vision_config)
        self.multi_modal_projector = MultiModalProjector(config.vision_config.hidden_size,
                                                         config.text_config.hidden_size, config.projector_hidden_act)
        self.language_model = Qwen2ForCausalLM(config.text_config)
        self.vision_batch_size = 64  # views per ViT call: bounds activation memory on long videos

    # ---- visual path
    def embed_media(self, pixel_values: torch.Tensor, layouts: Sequence[MediaLayout]) -> list[torch.Tensor]:
        """Projected visual tokens of each item, ``[(num_visual_tokens_i, H), ...]``."""
        total = sum(lay.num_views for lay in layouts)
        if pixel_values.shape[0] != total:
            raise ValueError(f"layouts need {total} views, pixel_values has {pixel_values.shape[0]}")
        dtype = self.multi_modal_projector.linear_1.weight.dtype
        pixel_values = pixel_values.to(dtype)
        features = torch.cat([vision_features(self.vision_tower, chunk, self.config.vision_feature_layer)
                              for chunk in pixel_values.split(self.vision_batch_size)])
        items, start = [], 0
        for layout in layouts:
            tokens = pool_item(features[start:start + layout.num_views], layout, self.config.pool_grid)
            items.append(self.multi_modal_projector(tokens))
            start += layout.num_views
        return items

    def input_embeddings(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None,
                         layouts: Sequence[MediaLayout]) -> torch.Tensor:
        """LLM input embeddings with the visual tokens merged in."""
        embeds = self.language_model.get_input_embeddings()(input_ids)
        if layouts:
            visual = torch.cat(self.embed_media(pixel_values, layouts))
        else:
            visual = embeds.new_zeros((0, embeds.shape[-1]))
        return merge_embeddings(embeds, input_ids, visual, (self.config.image_token_id, self.config.video_token_id))

    # ---- training
    def forward(self, batch: CaptionerBatch) -> torch.Tensor:
        """Mean next-token cross-entropy over the label tokens (the caption and its ``<|im_end|>``)."""
        if batch.labels is None:
            raise ValueError("forward needs labels; use generate for inference")
        embeds = self.input_embeddings(batch.input_ids, batch.pixel_values, batch.layouts)
        position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = self.language_model.model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                                           position_ids=position_ids, use_cache=False).last_hidden_state
        targets = batch.labels[:, 1:]
        select = targets != IGNORE_INDEX
        if not bool(select.any()):
            raise ValueError("batch has no label tokens")
        logits = self.language_model.lm_head(hidden[:, :-1][select])  # only where a caption token is predicted
        return F.cross_entropy(logits.float(), targets[select])

    # ---- inference
    @torch.no_grad()
    def generate(self, batch: CaptionerBatch, max_new_tokens: int = 128, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0) -> list[list[int]]:
        """Generated token ids per sample (the prompt excluded, the ``<|im_end|>`` and padding stripped).

        Greedy by default; sampling with ``do_sample=True`` (seed with ``torch.manual_seed``). Batches must be
        left-padded (``CaptionProcessor.collate`` default).
        """
        if bool((batch.attention_mask[:, -1] == 0).any()):
            raise ValueError("generate needs a left-padded batch (collate(..., padding_side='left'))")
        embeds = self.input_embeddings(batch.input_ids, batch.pixel_values, batch.layouts)
        kwargs = dict(do_sample=do_sample)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        out = self.language_model.generate(
            inputs_embeds=embeds, attention_mask=batch.attention_mask, max_new_tokens=max_new_tokens,
            eos_token_id=self.config.im_end_token_id, pad_token_id=self.config.pad_token_id, **kwargs)
        results = []
        for row in out.tolist():
            ids = []
            for token in row:
                if token == self.config.im_end_token_id:
                    break
                ids.append(token)
            results.append(ids)
        return results

    # ---- parameter groups (training stages)
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"vision": [...], "projector": [...], "llm": [...]}``: every parameter in exactly one group."""
        return {"vision": list(self.vision_tower.parameters()),
                "projector": list(self.multi_modal_projector.parameters()),
                "llm": list(self.language_model.parameters())}

    # ---- save / load
    def save_pretrained(self, directory: str | Path, tokenizer=None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (and the tokenizer, when given) to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [ARCHITECTURE]
        self.config.save_pretrained(directory)
        save_model(self, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> SlowFastCaptioner:
        """Load a folder written by ``save_pretrained``; a missing file is an error naming the expected path."""
        config = load_config(directory)
        weights = Path(directory) / WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"captioner weights not found: expected {weights}")
        model = cls(config)
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(device))
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"{weights}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
        return model.to(device=device, dtype=dtype).eval()

    @classmethod
    def from_components(cls, vision_path: str | Path, llm_path: str | Path, tokenizer_path: str | Path | None = None,
                        **settings) -> tuple[SlowFastCaptioner, object]:
        """A captioner from released parts: a SigLIP/CLIP vision folder and a Qwen2 folder (local paths only).

        The projector is new (random); special tokens the tokenizer lacks are added and the LLM's embeddings
        resized. Returns ``(model, tokenizer)``; ``settings`` are ``SlowFastCaptionerConfig`` fields.
        """
        from transformers import AutoConfig, AutoTokenizer

        from captioner.config import SPECIAL_TOKENS
        from captioner.processor import resolve_token_ids

        for name, path in (("vision", vision_path), ("llm", llm_path)):
            if not (Path(path) / CONFIG_NAME).is_file():
                raise FileNotFoundError(f"{name} weights not found: expected a transformers folder with "
                                        f"{CONFIG_NAME} at {Path(path)}")
        vision_config = AutoConfig.from_pretrained(vision_path, local_files_only=True)
        if hasattr(vision_config, "vision_config"):  # a full SigLIP/CLIP folder: take its vision half
            vision_config = vision_config.vision_config
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or llm_path, local_files_only=True)
        new_tokens = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
        if new_tokens:
            tokenizer.add_special_tokens({"additional_special_tokens": new_tokens})
        text_config = AutoConfig.from_pretrained(llm_path, local_files_only=True)
        config = SlowFastCaptionerConfig(vision_config=vision_config.to_dict(), text_config=text_config.to_dict(),
                                         **settings)
        resolve_token_ids(config, tokenizer)
        model = cls(config)
        tower_cls = type(model.vision_tower)
        model.vision_tower = tower_cls.from_pretrained(vision_path, config=config.vision_config, local_files_only=True)
        model.language_model = Qwen2ForCausalLM.from_pretrained(llm_path, local_files_only=True)
        if len(tokenizer) > model.language_model.get_input_embeddings().num_embeddings:
            model.language_model.resize_token_embeddings(len(tokenizer))
        config.text_config = model.language_model.config
        return model, tokenizer


def load_config(directory: str | Path) -> SlowFastCaptionerConfig:
    """The ``SlowFastCaptionerConfig`` of a saved captioner folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"captioner config not found: expected {path}")
    data = json.loads(path.read_text())
    if data.get("model_type") != SlowFastCaptionerConfig.model_type:
        raise ValueError(f"{path}: model_type {data.get('model_type')!r} is not a slow-fast captioner")
    register_auto_config()
    return SlowFastCaptionerConfig.from_pretrained(str(directory), local_files_only=True)


def load_processor(directory: str | Path) -> CaptionProcessor:
    """The ``CaptionProcessor`` (config + tokenizer) of a saved captioner folder."""
    from transformers import AutoTokenizer

    config = load_config(directory)
    if not (Path(directory) / "tokenizer.json").is_file():
        raise FileNotFoundError(f"captioner tokenizer not found: expected {Path(directory) / 'tokenizer.json'}")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    return CaptionProcessor(config, tokenizer)


def load_captioner(directory: str | Path, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> tuple[SlowFastCaptioner, CaptionProcessor]:
    """Model and processor from one saved folder."""
    return SlowFastCaptioner.from_pretrained(directory, device, dtype), load_processor(directory)
