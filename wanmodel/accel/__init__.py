"""Fast, low-memory sampling (report section 4.4), applied to a model and its denoising loop from outside.

Modules:
- ``cache`` (with ``cache_config``, ``cache_tune`` and the ``cache_presets.json`` presets): diffusion caches, i.e.
  the attention cache, the CFG cache with FasterCache-style residual compensation, MagCache and TeaCache step
  skipping, as one ``StepCache`` per run that ``denoise(..., cache=)`` drives; their calibration and preset tuning.
- ``fp8``: FP8 linear layers and 8-bit attention.
- ``offload``: memory modes (text encoder on CPU, model and block offload).
- ``options``: ``SpeedOptions`` (fp8, attention, offload) and ``apply_speed_options`` on a built pipeline.
- ``quality``: the quality guard (latent MSE, PSNR of decoded frames against the exact sampler).

Everything here runs with torch and numpy alone (the GPU box has little else); other packages are imported lazily.
"""
from wanmodel.accel.cache import (
    CacheStats,
    DiffusionCache,
    DiTPasses,
    StepCache,
    build_cache,
)
from wanmodel.accel.cache_config import (
    AttentionCacheConfig,
    CacheConfig,
    CFGCacheConfig,
    MagCacheConfig,
    TeaCacheConfig,
    cache_preset,
    load_presets,
    preset_names,
)
from wanmodel.accel.cache_tune import (
    CacheTrial,
    calibrate_magcache,
    calibrate_teacache,
    evaluate_caches,
    tune_cache,
)
from wanmodel.accel.fp8 import (
    FP8_MODES,
    FP8Linear,
    quantize_linears,
    set_attention_backend,
)
from wanmodel.accel.offload import (
    MEMORY_MODES,
    BlockOffload,
    MemoryEstimate,
    enable_block_offload,
    estimate_peak_memory,
    memory_table,
    on_device,
)
from wanmodel.accel.options import OFFLOAD_MODES, SpeedOptions, apply_speed_options

__all__ = ["AttentionCacheConfig", "CFGCacheConfig", "CacheConfig", "CacheStats", "CacheTrial", "DiTPasses",
           "DiffusionCache", "MagCacheConfig", "StepCache", "TeaCacheConfig", "build_cache", "cache_preset",
           "calibrate_magcache", "calibrate_teacache", "evaluate_caches", "load_presets", "preset_names",
           "tune_cache"]
__all__ += ["FP8_MODES", "FP8Linear", "quantize_linears", "set_attention_backend"]  # fp8
__all__ += ["MEMORY_MODES", "BlockOffload", "MemoryEstimate", "enable_block_offload", "estimate_peak_memory",
            "memory_table", "on_device"]  # offload
__all__ += ["OFFLOAD_MODES", "SpeedOptions", "apply_speed_options"]  # options
