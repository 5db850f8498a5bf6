"""Sampling pipelines: text-to-video / text-to-image (``t2v``), image-to-video with first-frame, first-last-frame
and continuation conditions (``i2v``), shared settings, denoising loop and writers (``common``), tiny random
models for demos and tests (``tiny``), and batch sampling into the ``samples`` Lance table (``batch``)."""
from wanmodel.pipelines.common import (
    DEFAULT_NEGATIVE_PROMPT,
    I2V_NEGATIVE_PROMPT,
    I2V_SETTINGS,
    GenerationResult,
    SamplingSettings,
    mp4_bytes,
    write_image,
    write_mp4,
)
from wanmodel.pipelines.i2v import (
    FrameCondition,
    WanI2VPipeline,
    i2v_size,
    latent_frame_mask,
)
from wanmodel.pipelines.t2v import WanT2VPipeline

__all__ = ["DEFAULT_NEGATIVE_PROMPT", "I2V_NEGATIVE_PROMPT", "I2V_SETTINGS", "FrameCondition", "GenerationResult",
           "SamplingSettings", "WanI2VPipeline", "WanT2VPipeline", "i2v_size", "latent_frame_mask", "mp4_bytes",
           "write_image", "write_mp4"]
