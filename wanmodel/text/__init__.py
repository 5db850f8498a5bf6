"""Conditioning encoders and prompt tools (transformers / open_clip are imported only when a model is built).

``umt5``: the umT5 text encoder (prompts -> per-prompt embeddings, cut to their true length).
``clip_image``: the CLIP ViT-H/14 image tower for image-to-video (penultimate-block tokens).
``rewrite``: LLM prompt rewriting (report section 4.5), off by default.
"""
from wanmodel.text.clip_image import ClipImageEncoder
from wanmodel.text.rewrite import PromptRewriter, RewriteSettings, build_rewriter
from wanmodel.text.umt5 import (
           DEFAULT_TEXT_LEN,
           UMT5TextEncoder,
           clean_prompt,
           pad_embeddings,
)

__all__ = ["DEFAULT_TEXT_LEN", "ClipImageEncoder", "PromptRewriter", "RewriteSettings", "UMT5TextEncoder",
           "build_rewriter", "clean_prompt", "pad_embeddings"]
