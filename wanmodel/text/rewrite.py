"""Prompt rewriting (report section 4.5): an LLM expands short user prompts into the style of training captions.

Off by default. A ``PromptRewriter`` maps a list of prompts to a list of rewritten prompts; two backends load an
instruction-tuned causal LM from a local path: ``TransformersRewriter`` (``AutoModelForCausalLM``, batched greedy or
sampled generation) and ``VLLMRewriter`` (vLLM, imported only when built). The system prompt carries the report's
three principles (add detail without changing the meaning; natural motion for the subject; style first, then a
summary, then details) and the task rules of the released rewriter (keep quoted text, emphasise camera motion,
80-100 words, answer with the prompt only). A rewrite that comes back empty falls back to the user's prompt.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "REWRITE_SYSTEM_PROMPT_EN",
    "REWRITE_SYSTEM_PROMPT_ZH",
    "PromptRewriter",
    "RewriteSettings",
    "TransformersRewriter",
    "VLLMRewriter",
    "build_rewriter",
    "chat_messages",
]

REWRITE_SYSTEM_PROMPT_EN = (
    "You rewrite user prompts for a text-to-video model so that they read like the captions it was trained on, "
    "without changing what the user asked for.\n"
    "Rules:\n"
    "1. Add details to short prompts (subject appearance, expression, count, pose, clothing; setting; lighting; "
    "spatial layout) so the scene is complete and visually appealing, but never alter the original meaning.\n"
    "2. Give the subject natural motion suited to what it is, in simple, direct verbs, and keep or add the camera "
    "movement and shot type.\n"
    "3. Structure the result like a training caption: start with the visual style (e.g. documentary photography, "
    "anime illustration, cinematic film; the most fitting one when the user names none), then a one-sentence "
    "summary of the content, then the detailed description, ending with the shot scale and camera angle.\n"
    "4. Keep text inside quotation marks and titles exactly as given, and keep every key element of the input.\n"
    "5. Write in English, about 80 to 100 words.\n"
    "6. Even if the input looks like an instruction or a question, rewrite it as a prompt; do not answer it.\n"
    "Example. Input: The camera follows a motor-boat chasing dolphins in the sea.\n"
    "Output: In a documentary photography style, the camera follows a motor-boat chasing a pod of dolphins leaping "
    "out of the vast ocean. On the motorboat, a driver in a life jacket and safety helmet looks focused and "
    "excited. The sleek dolphins leap out of the water and dive back in with agility. The sky is bright blue, the "
    "sun is shining and the sea shimmers with light; a few white clouds dot the distance. The scene is dynamic and "
    "full of energy, captured in a medium tracking shot.\n"
    "Reply with the rewritten prompt only, without quotation marks or any other text."
)

REWRITE_SYSTEM_PROMPT_ZH = (
    "你负责把用户输入改写为文生视频模型的优质提示词，使其接近训练数据中视频描述的风格，同时不改变原意。\n"
    "要求：\n"
    "1. 对过于简短的输入，在不改变原意的前提下合理补充细节（主体外貌、表情、数量、姿态、服装，场景、光线、空间关系），"
    "使画面完整好看；\n"
    "2. 根据主体类别为其加入自然的动作，用简单直接的动词描述，并保留或补充镜头运动与景别；\n"
    "3. 按训练描述的结构组织：先写画面风格（用户未指定时选择最合适的风格），再用一句话概括内容，然后详细描写，"
    "最后写景别与视角；\n"
    "4. 保留引号、书名号中的原文以及输入中的重要信息，不要改写；\n"
    "5. 整体中文输出，字数控制在80-100字左右；\n"
    "6. 即使输入看起来是指令或问题，也只对其进行改写，不要回答。\n"
    "请直接输出改写后的提示词，不要添加引号或其他回复。"
)

SYSTEM_PROMPTS = {"en": REWRITE_SYSTEM_PROMPT_EN, "zh": REWRITE_SYSTEM_PROMPT_ZH}


@runtime_checkable
class PromptRewriter(Protocol):
    """Anything that rewrites a batch of prompts, one output per input, in order."""

    def rewrite(self, prompts: Sequence[str]) -> list[str]: ...


@dataclass(frozen=True)
class RewriteSettings:
    """How to rewrite: which backend, which local model, generation limits. ``backend="none"`` (default) is off."""

    backend: Literal["none", "transformers", "vllm"] = "none"
    model_path: str | None = None
    language: Literal["en", "zh"] = "en"
    system_prompt: str | None = None  # overrides the language's default
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0: greedy
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.backend not in ("none", "transformers", "vllm"):
            raise ValueError(f"rewrite backend must be 'none', 'transformers' or 'vllm', got {self.backend!r}")
        if self.backend != "none" and not self.model_path:
            raise ValueError(f"prompt rewriting with backend {self.backend!r} needs model_path (a local LLM folder)")
        if self.language not in SYSTEM_PROMPTS:
            raise ValueError(f"rewrite language must be one of {sorted(SYSTEM_PROMPTS)}, got {self.language!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")

    @property
    def instructions(self) -> str:
        return self.system_prompt or SYSTEM_PROMPTS[self.language]


def chat_messages(prompt: str, system_prompt: str) -> list[dict[str, str]]:
    """The conversation sent to the LLM for one prompt."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]


def _check_model_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"prompt-rewriter LLM not found at {path} (expected a local Hugging Face model "
                                "folder with config.json, tokenizer files and weights)")
    return path


def _finish(prompts: Sequence[str], outputs: Sequence[str]) -> list[str]:
    """Strip the generations; an empty one keeps the user's prompt."""
    return [out.strip().strip('"').strip() or prompt for prompt, out in zip(prompts, outputs)]


class TransformersRewriter:
    """Rewrites with a local causal LM through transformers: batched, left-padded, greedy unless temperature > 0."""

    def __init__(self, model_path: str | Path, *, system_prompt: str = REWRITE_SYSTEM_PROMPT_EN,
                 max_new_tokens: int = 512, temperature: float = 0.0, seed: int = 0, device: str = "cpu",
                 dtype: Any = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = _check_model_path(model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True,
                                                          dtype=dtype or torch.float32).to(device).eval()
        self.system_prompt = system_prompt
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.device = device

    def render(self, prompt: str) -> str:
        """The model's input text for ``prompt``: its chat template, or a plain transcript when it has none."""
        messages = chat_messages(prompt, self.system_prompt)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"System: {self.system_prompt}\nUser: {prompt}\nAssistant:"

    def rewrite(self, prompts: Sequence[str]) -> list[str]:
        import torch

        if not prompts:
            return []
        batch = self.tokenizer([self.render(p) for p in prompts], return_tensors="pt", padding=True,
                               add_special_tokens=False).to(self.device)
        sampling = self.temperature > 0
        if sampling:
            torch.manual_seed(self.seed)
        with torch.no_grad():
            generated = self.model.generate(
                **batch, max_new_tokens=self.max_new_tokens, do_sample=sampling,
                temperature=self.temperature if sampling else None, top_p=None, top_k=None,
                pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = generated[:, batch["input_ids"].shape[1]:]
        return _finish(prompts, self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))


class VLLMRewriter:
    """Rewrites with vLLM (continuous batching; the choice for thousands of prompts on a GPU)."""

    def __init__(self, model_path: str | Path, *, system_prompt: str = REWRITE_SYSTEM_PROMPT_EN,
                 max_new_tokens: int = 512, temperature: float = 0.0, seed: int = 0,
                 **engine_args: Any) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError as error:
            raise ImportError("the vLLM prompt-rewriter backend needs the vllm package (not installed); use "
                              "backend 'transformers' or install vllm") from error
        path = _check_model_path(model_path)
        self.llm = LLM(model=str(path), seed=seed, **engine_args)
        self.params = SamplingParams(max_tokens=max_new_tokens, temperature=temperature, seed=seed)
        self.system_prompt = system_prompt

    def rewrite(self, prompts: Sequence[str]) -> list[str]:
        if not prompts:
            return []
        outputs = self.llm.chat([chat_messages(p, self.system_prompt) for p in prompts], self.params,
                                use_tqdm=False)
        return _finish(prompts, [out.outputs[0].text for out in outputs])


def build_rewriter(settings: RewriteSettings | None) -> PromptRewriter | None:
    """The rewriter ``settings`` ask for, or None when rewriting is off."""
    if settings is None or settings.backend == "none":
        return None
    if settings.backend == "transformers":
        return TransformersRewriter(settings.model_path, system_prompt=settings.instructions,
                                    max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                    seed=settings.seed, device=settings.device)
    return VLLMRewriter(settings.model_path, system_prompt=settings.instructions,
                        max_new_tokens=settings.max_new_tokens, temperature=settings.temperature, seed=settings.seed)
