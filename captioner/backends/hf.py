"""The transformers backend: ``SlowFastCaptioner.generate`` in-process; the reference the vLLM backend must match."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from captioner.backends import CaptionResult, instructions_for
from captioner.model import load_captioner
from captioner.processor import CaptionInputError, MediaInput


class HFBackend:
    """Captions with the transformers model, ``batch_size`` items per ``generate`` call (left-padded)."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 batch_size: int = 8, model=None, processor=None) -> None:
        if model is None or processor is None:
            model, processor = load_captioner(model_dir, device, dtype)
        self.model, self.processor = model.eval(), processor
        self.device = torch.device(device)
        self.dtype = dtype
        self.batch_size = batch_size
        self.model_id = Path(model_dir).name if model_dir else "in-memory"

    def _run(self, samples: list, max_new_tokens: int, greedy: bool, temperature: float, top_p: float
             ) -> list[list[int]]:
        out: list[list[int]] = []
        for start in range(0, len(samples), self.batch_size):
            batch = self.processor.collate(samples[start:start + self.batch_size]).to(self.device, self.dtype)
            out.extend(self.model.generate(batch, max_new_tokens=max_new_tokens, do_sample=not greedy,
                                           temperature=temperature, top_p=top_p))
        return out

    def caption(self, items: Sequence[MediaInput], instruction: str | Sequence[str] | None = None,
                max_new_tokens: int = 128, greedy: bool = True, temperature: float = 1.0,
                top_p: float = 1.0) -> list[CaptionResult]:
        """One ``CaptionResult`` per item; items the processor rejects carry the error and no text."""
        results: list[CaptionResult | None] = [None] * len(items)
        samples, where = [], []
        for i, (item, text) in enumerate(zip(items, instructions_for(items, instruction), strict=True)):
            try:
                samples.append(self.processor(item, text))
                where.append(i)
            except CaptionInputError as e:
                results[i] = CaptionResult(None, error=str(e))
        for i, sample, ids in zip(where, samples, self._run(samples, max_new_tokens, greedy, temperature, top_p),
                                    strict=True):
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
            results[i] = CaptionResult(text, num_visual_tokens=sample.num_visual_tokens, num_generated_tokens=len(ids))
        return results  # type: ignore[return-value]

    def generate_text(self, prompts: Sequence[str], max_new_tokens: int = 32) -> list[str]:
        """Greedy replies to text-only prompts (same chat format, no media)."""
        samples = [self.processor(None, p) for p in prompts]
        return [self.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
                for ids in self._run(samples, max_new_tokens, True, 1.0, 1.0)]
