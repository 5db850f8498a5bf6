"""Schemas of every Lance table in the lake. Every stage and package refers to these; none re-declares columns.

Conventions: keys are strings; every stage table carries ``status`` ("ok" | "error"), ``error`` (message or
null) and ``stage_version``; boxes are in source pixels as ``x0, y0, x1, y1`` with exclusive ends.
"""
from __future__ import annotations

import pyarrow as pa

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUS_DUPLICATE = "duplicate"

_STATUS = [
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
]

VIDEOS = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),  # write key: one row per input file
        pa.field("video_id", pa.string(), nullable=False),  # content hash; unique among status "ok"
        pa.field("media_type", pa.string()),  # "video" | "image"
        pa.field("size_bytes", pa.int64()),
        pa.field("container", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("num_frames", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("rotation", pa.int32()),  # degrees counter-clockwise applied for display; width/height as displayed
        pa.field("duplicate_of", pa.string()),  # uri of the first file with the same content
        *_STATUS,
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)

CLIPS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),  # f"{video_id}:{start_frame:06d}-{end_frame:06d}"
        # Lineage: the source's content hash (128-bit BLAKE2b of its bytes, hex: videos.video_id), the span in
        # decoded frames and in seconds, and the rotation applied.
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("media_type", pa.string()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),  # exclusive
        # Presentation times (pts * time_base) from the stream's start: the first frame's, and the frame after the
        # last one's (or the last one's plus its duration). Right for variable frame rate; 0, 0 for an image.
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("rotation", pa.int32()),  # degrees counter-clockwise applied: frames, width, height as displayed
        pa.field("fps", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("duration_s", pa.float64()),  # end_s - start_s
        pa.field("keyframes", pa.list_(pa.binary())),  # small JPEGs: first, middle, last
        pa.field("keyframe_indices", pa.list_(pa.int64())),
        *_STATUS,
    ]
)

# One schema per classical stage: stage-specific score columns. Common columns are added by ``stage_schema``.
STAGE_FIELDS: dict[str, list[pa.Field]] = {
    "duration_resolution": [
        pa.field("duration_s", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("short_side", pa.int32()),
    ],
    "borders": [
        pa.field("has_border", pa.bool_()),
        pa.field("crop_x0", pa.int32()),
        pa.field("crop_y0", pa.int32()),
        pa.field("crop_x1", pa.int32()),
        pa.field("crop_y1", pa.int32()),
        pa.field("border_fraction", pa.float32()),  # area outside the crop box / frame area
    ],
    "exposure": [
        pa.field("mean_luma", pa.float32()),
        pa.field("clipped_high_fraction", pa.float32()),
        pa.field("clipped_low_fraction", pa.float32()),
        pa.field("overexposure_score", pa.float32()),  # 0..1, higher = more overexposed
    ],
    "blur": [
        pa.field("laplacian_var", pa.float32()),
        pa.field("blur_score", pa.float32()),  # 0..1, higher = blurrier
    ],
    "motion": [
        pa.field("camera_motion", pa.float32()),
        pa.field("subject_motion", pa.float32()),
        pa.field("moving_fraction", pa.float32()),
        pa.field("num_movers", pa.float32()),
        pa.field("shakiness", pa.float32()),
        pa.field("smooth_step", pa.float32()),  # mean camera translation per sampled pair, widths
        pa.field("num_pairs", pa.int32()),  # frame pairs analysed; 0: image or one frame (no tier)
        pa.field("flow_backend", pa.string()),
    ],  # statistics only: select derives the motion tier (select.motion_tiers)
    "watermark": [
        pa.field("watermark_score", pa.float32()),  # select flags a watermark at >= select.watermark_min_score
        pa.field("wm_x0", pa.int32()),
        pa.field("wm_y0", pa.int32()),
        pa.field("wm_x1", pa.int32()),
        pa.field("wm_y1", pa.int32()),
    ],
    "phash": [
        pa.field("phash", pa.int64()),  # 64-bit DCT hash of the middle frame (bit pattern in an int64)
        pa.field("phashes", pa.list_(pa.int64())),  # hashes of the sampled keyframes
    ],
    "dedup": [
        pa.field("dup_group", pa.string()),
        pa.field("duplicate_of", pa.string()),  # clip_id of the kept member, null for the kept one
        pa.field("is_duplicate", pa.bool_()),
    ],
    # Model-backed stages (curation.stages.model_runner), all over the clips' JPEG keyframes.
    "ocr": [
        pa.field("text_coverage_max", pa.float32()),  # union area of text polygons / frame area, max over keyframes
        pa.field("text_coverage_mean", pa.float32()),
        pa.field("text_coverages", pa.list_(pa.float32())),  # per keyframe
        pa.field("texts", pa.list_(pa.string())),  # recognised strings, distinct, in keyframe then reading order
        pa.field("ocr_backend", pa.string()),
    ],
    "embed": [
        # L2-normalised mean of the keyframes' normalised CLIP image embeddings. Stored as
        # fixed_size_list<float16>[D] with D the model's width: ``embedding_schema(D)`` gives the table schema.
        pa.field("embedding", pa.list_(pa.float16())),
        pa.field("keyframe_embeddings", pa.list_(pa.list_(pa.float16()))),  # each keyframe's, normalised
        pa.field("embed_model", pa.string()),
    ],
    "aesthetic": [
        pa.field("aesthetic_score", pa.float32()),  # LAION predictor, mean over keyframes (about 1-10)
        pa.field("aesthetic_scores", pa.list_(pa.float32())),
    ],
    "nsfw": [
        pa.field("nsfw_score", pa.float32()),  # max over keyframes, 0..1
        pa.field("nsfw_backend", pa.string()),
    ],
    "experts": [
        pa.field("expert_names", pa.list_(pa.string())),  # heads named in config (synthetic, overexposure...)
        pa.field("expert_scores", pa.list_(pa.float32())),  # probability of the head's positive class
    ],
    # Stages over stored embeddings (curation.embeddings, curation.stages.cluster ... split).
    "cluster": [
        pa.field("cluster_id", pa.int32()),  # row of ``cluster_centroids`` nearest by cosine similarity
        pa.field("centroid_similarity", pa.float32()),
    ],
    "quality": [
        pa.field("quality", pa.float32()),  # the quality expert's score on the 1-5 rating scale
    ],
    "semantic_dedup": [
        pa.field("dup_group", pa.string()),  # clip_id of the kept member of its near-duplicate set; null: no set
        pa.field("duplicate_of", pa.string()),  # the most similar kept clip; null for a kept clip
        pa.field("is_duplicate", pa.bool_()),
        pa.field("similarity", pa.float32()),  # cosine similarity to duplicate_of (kept: to its nearest duplicate)
        pa.field("cluster_id", pa.int32()),  # the cluster it was searched in
    ],
    "category": [
        pa.field("category", pa.string()),  # zero-shot label from ``category.categories``
        pa.field("category_score", pa.float32()),  # its softmax probability over the categories
        pa.field("style", pa.string()),
        pa.field("style_score", pa.float32()),
    ],
}

EMBED_TABLE = "stages/embed"


def embedding_type(dim: int) -> pa.DataType:
    """The stored embedding type: ``fixed_size_list<float16>[dim]``."""
    return pa.list_(pa.float16(), dim)


def embedding_schema(dim: int) -> pa.Schema:
    """Schema of ``stages/embed`` for a ``dim``-wide CLIP model (the declared schema leaves the width open)."""
    schema = stage_schema("embed")
    schema = schema.set(schema.get_field_index("embedding"), pa.field("embedding", embedding_type(dim)))
    return schema.set(schema.get_field_index("keyframe_embeddings"),
                      pa.field("keyframe_embeddings", pa.list_(embedding_type(dim))))


def stage_schema(name: str) -> pa.Schema:
    """Schema of ``stages/<name>``: key, the stage's score columns, version and status."""
    if name not in STAGE_FIELDS:
        raise KeyError(f"unknown stage table {name!r}; known: {sorted(STAGE_FIELDS)}")
    return pa.schema(
        [
            pa.field("clip_id", pa.string(), nullable=False),
            *STAGE_FIELDS[name],
            pa.field("stage_version", pa.string()),
            *_STATUS,
        ]
    )


CURATED = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("media_type", pa.string()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("start_s", pa.float64()),  # lineage copied from clips
        pa.field("end_s", pa.float64()),
        pa.field("rotation", pa.int32()),
        pa.field("duration_s", pa.float64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("crop_x0", pa.int32()),
        pa.field("crop_y0", pa.int32()),
        pa.field("crop_x1", pa.int32()),
        pa.field("crop_y1", pa.int32()),
        pa.field("motion_tier", pa.string()),
        pa.field("keep", pa.bool_()),
        pa.field("reject_reasons", pa.list_(pa.string())),
        pa.field("near_threshold", pa.list_(pa.string())),  # decisions near a threshold: "stage: stat value ~ thr"
        pa.field("scores_json", pa.string()),  # every joined score, for reports and later re-thresholding
        pa.field("cluster_id", pa.int32()),
        pa.field("quality", pa.float32()),
        # "pretrain" | "posttrain_image" | "posttrain_simple" | "posttrain_complex" | null (not kept); every kept
        # row is in the pretraining set, post-training rows included (curation.embeddings.post_train)
        pa.field("split", pa.string()),
    ]
)

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("stage", pa.string()),
        pa.field("config_hash", pa.string()),
        pa.field("input_versions", pa.string()),  # JSON {table: version}
        pa.field("count_in", pa.int64()),
        pa.field("count_ok", pa.int64()),
        pa.field("count_kept", pa.int64()),
        pa.field("count_rejected", pa.int64()),
        pa.field("count_failed", pa.int64()),
        pa.field("wall_s", pa.float64()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
    ]
)

IMAGE_TEXT = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),  # rendered: f"{language}-{seed}-{shard}-{index}"; real: clip_id
        pa.field("source", pa.string()),  # "rendered" (text on white) | "ocr" (a real keyframe with its OCR text)
        pa.field("image", pa.binary()),  # PNG (rendered) or the keyframe's JPEG
        pa.field("text", pa.string()),  # lines joined by "\n"
        pa.field("lines", pa.list_(pa.string())),
        pa.field("line_boxes", pa.list_(pa.list_(pa.int32()))),  # x0, y0, x1, y1 per line (rendered only)
        pa.field("language", pa.string()),  # "zh" | "en"
        pa.field("font", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("clip_id", pa.string()),  # real images only
        pa.field("text_coverage", pa.float32()),
    ]
)

CAPTIONS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("media_type", pa.string()),  # "video" | "image"
        pa.field("caption", pa.string()),
        pa.field("model_id", pa.string()),  # the captioner's weights (folder name or configured id)
        pa.field("prompt_version", pa.string()),  # version of the instruction templates
        pa.field("template", pa.string()),  # which instruction: "image" | "video" | "image_ocr" | "video_ocr"
        pa.field("num_frames", pa.int32()),  # frames given to the model (1 for an image)
        pa.field("num_visual_tokens", pa.int32()),
        pa.field("backend", pa.string()),  # "vllm" | "hf"
        *_STATUS,
        pa.field("captioned_at", pa.timestamp("us", tz="UTC")),
    ]
)

TABLE_KEYS: dict[str, str] = {"videos": "uri", "clips": "clip_id", "curated": "clip_id", "runs": "run_id",
                              "image_text": "image_id", "captions": "clip_id"}
TABLE_SCHEMAS: dict[str, pa.Schema] = {"videos": VIDEOS, "clips": CLIPS, "curated": CURATED, "runs": RUNS,
                                       "image_text": IMAGE_TEXT, "captions": CAPTIONS}


CLUSTER_CENTROIDS = pa.schema(
    [
        pa.field("cluster_id", pa.int32(), nullable=False),
        pa.field("centroid", pa.list_(pa.float32())),  # unit length, the embedding width
        pa.field("fit_rows", pa.int64()),  # sample rows the centroids were fitted on
        pa.field("sample_members", pa.int64()),  # of those, rows nearest this centroid
        pa.field("fit_hash", pa.string()),  # settings and embed version of the fit; stage_version of stages/cluster
        pa.field("fitted_at", pa.timestamp("us", tz="UTC")),
    ]
)

RATINGS_TODO = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),  # a clip people are asked to rate 1-5
        pa.field("cluster_id", pa.int32()),
        pa.field("uri", pa.string()),
        pa.field("media_type", pa.string()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("requested_at", pa.timestamp("us", tz="UTC")),
    ]
)

RATINGS = pa.schema(
    [
        pa.field("rating_id", pa.string(), nullable=False),  # f"{clip_id}:{rater}"
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),  # 1 (worst) .. 5 (best)
        pa.field("rater", pa.string()),
        pa.field("rated_at", pa.timestamp("us", tz="UTC")),
    ]
)

TABLE_KEYS.update({"cluster_centroids": "cluster_id", "ratings_todo": "clip_id", "ratings": "rating_id"})
TABLE_SCHEMAS.update({"cluster_centroids": CLUSTER_CENTROIDS, "ratings_todo": RATINGS_TODO, "ratings": RATINGS})

# Generated samples (wanmodel.pipelines.batch, ``python -m jobs.sample``).
SAMPLES = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),  # hash of task, prompts, seed, condition, settings, model
        pa.field("task", pa.string()),  # "t2v" | "t2i" | "i2v"
        pa.field("prompt", pa.string()),  # as given
        pa.field("used_prompt", pa.string()),  # what the model saw (after rewriting; == prompt when off)
        pa.field("negative_prompt", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("condition_uri", pa.string()),  # i2v: the condition image
        pa.field("settings_json", pa.string()),  # SamplingSettings as JSON
        pa.field("model", pa.string()),  # weights used (paths, or "random-tiny:<seed>")
        pa.field("media_format", pa.string()),  # "mp4" (videos) | "png" (t2i)
        pa.field("video", pa.binary()),  # the encoded sample
        pa.field("num_frames", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("fps", pa.float64()),
        pa.field("wall_s", pa.float64()),  # sampling time of the batch this sample was in / its size
        *_STATUS,
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
TABLE_KEYS["samples"] = "sample_id"
TABLE_SCHEMAS["samples"] = SAMPLES

# Captioner training examples (captioner.data): frames as JPEG bytes, the target caption, annotated facts.
CAPTION_SFT = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),  # "synthetic" | "instruction" | "human" | ...
        pa.field("media_type", pa.string()),  # "image" | "video" | "text" (instruction data without media)
        pa.field("frames", pa.list_(pa.binary())),  # JPEG bytes: one for an image, the frames of a video
        pa.field("frame_times", pa.list_(pa.float64())),  # seconds from the clip start, one per frame
        pa.field("instruction", pa.string()),
        pa.field("caption", pa.string()),  # the target text
        pa.field("facts_json", pa.string()),  # annotated facts for evaluation: [{"dimension", "value"}]
        pa.field("split", pa.string()),  # "train" | "hq" | "eval"
        pa.field("clip_id", pa.string()),  # when the example comes from a lake clip
    ]
)
TABLE_KEYS["caption_sft"] = "example_id"
TABLE_SCHEMAS["caption_sft"] = CAPTION_SFT

# DiT training caches (wanmodel encode job): training never runs the VAE or umT5.
_TENSOR = [  # a tensor as bytes + shape + dtype ("float32" | "float16" | "bfloat16"), C-contiguous
    pa.field("shape", pa.list_(pa.int32())),
    pa.field("dtype", pa.string()),
]
LATENTS = pa.schema(
    [
        pa.field("latent_id", pa.string(), nullable=False),  # f"{clip_id}@{bucket}@{vae_id}"
        pa.field("clip_id", pa.string()),
        pa.field("bucket", pa.string()),  # bucket name from the curriculum YAML, e.g. "v192_16x9"
        pa.field("media_type", pa.string()),  # "image" | "video"
        pa.field("vae_id", pa.string()),  # identity of the VAE weights and settings that encoded it
        pa.field("mean", pa.large_binary()),  # posterior mean, [C, F, H, W], not normalised
        pa.field("logvar", pa.large_binary()),  # posterior log-variance, same shape and dtype
        *_TENSOR,
        # the encoding VAE's per-channel latent statistics (VAEConfig.latents_mean / latents_std): the trainer
        # normalises each row with its own VAE's, (z - mean) / std
        pa.field("latents_mean", pa.list_(pa.float32())),
        pa.field("latents_std", pa.list_(pa.float32())),
        pa.field("num_frames", pa.int32()),  # pixel frames encoded (1 for an image)
        pa.field("height", pa.int32()),  # pixel size encoded (the bucket's)
        pa.field("width", pa.int32()),
        pa.field("fps", pa.float64()),  # frame rate of the encoded frames
        pa.field("caption", pa.string()),
        pa.field("text_key", pa.string()),  # key of the caption's row in text_embeddings
        # lineage: the source, the clip's span in it, and the crop applied before resizing
        pa.field("video_id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("start_frame", pa.int64()),
        pa.field("end_frame", pa.int64()),
        pa.field("crop", pa.list_(pa.int32())),  # x0, y0, x1, y1 in displayed source pixels
        *_STATUS,
        pa.field("encoded_at", pa.timestamp("us", tz="UTC")),
    ]
)
TEXT_EMBEDDINGS = pa.schema(
    [
        pa.field("text_key", pa.string(), nullable=False),  # sha256(encoder_id + "\n" + text)[:32]
        pa.field("text", pa.string()),
        pa.field("encoder_id", pa.string()),
        pa.field("embedding", pa.large_binary()),  # [tokens, dim], the encoder's output without padding
        *_TENSOR,
        *_STATUS,
    ]
)
TABLE_KEYS.update({"latents": "latent_id", "text_embeddings": "text_key"})
TABLE_SCHEMAS.update({"latents": LATENTS, "text_embeddings": TEXT_EMBEDDINGS})

# Wan-Bench (bench.job): one score per (run, sample, dimension); the scored samples with a thumbnail; run summaries.
BENCH_SCORES = pa.schema(
    [
        pa.field("score_id", pa.string(), nullable=False),  # f"{run}@{sample_id}@{dimension}"
        pa.field("run", pa.string()),  # the bench run's name (one model's samples scored with one config)
        pa.field("sample_id", pa.string()),  # samples.sample_id, or the mp4's path relative to the folder
        pa.field("dimension", pa.string()),  # bench.dimensions.DIMENSIONS key
        pa.field("group", pa.string()),  # "dynamic_quality" | "image_quality" | "instruction_following"
        pa.field("score", pa.float64()),  # in [0, 1], higher is better; null on an error row
        pa.field("evidence_json", pa.string()),  # what the score was computed from (judge answers, statistics)
        pa.field("wall_s", pa.float64()),  # scoring time of this (sample, dimension)
        *_STATUS,
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
    ]
)
BENCH_SAMPLES = pa.schema(
    [
        pa.field("sample_key", pa.string(), nullable=False),  # f"{run}@{sample_id}"
        pa.field("run", pa.string()),
        pa.field("sample_id", pa.string()),
        pa.field("source", pa.string()),  # "samples:<lake>" or the mp4 path
        pa.field("prompt", pa.string()),
        pa.field("meta_json", pa.string()),  # the prompt suite's metadata used
        pa.field("thumbnail", pa.binary()),  # a small PNG of the middle frame (null when it did not decode)
        pa.field("num_frames", pa.int32()),  # frames scored (after subsampling)
        pa.field("fps", pa.float64()),
        *_STATUS,
    ]
)
BENCH_RUNS = pa.schema(
    [
        pa.field("summary_id", pa.string(), nullable=False),  # f"{run}@{n_scores}": a run's latest summary wins
        pa.field("run", pa.string()),
        pa.field("means_json", pa.string()),  # {dimension: mean score over its ok rows}
        pa.field("counts_json", pa.string()),  # {dimension: {"ok": n, "error": n}}
        pa.field("groups_json", pa.string()),  # {dimension: group}
        pa.field("weights_json", pa.string()),  # {dimension: weight} used for the total (uniform unless fitted)
        pa.field("weights_source", pa.string()),  # "uniform" or the fitted weights file
        pa.field("total", pa.float64()),  # weighted total over the dimensions with a mean
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
TABLE_KEYS.update({"bench_scores": "score_id", "bench_samples": "sample_key", "bench_runs": "summary_id"})
TABLE_SCHEMAS.update({"bench_scores": BENCH_SCORES, "bench_samples": BENCH_SAMPLES, "bench_runs": BENCH_RUNS})


def schema_for(table: str) -> pa.Schema:
    """Schema for a table name such as ``clips`` or ``stages/blur``."""
    if table.startswith("stages/"):
        return stage_schema(table.split("/", 1)[1])
    if table not in TABLE_SCHEMAS:
        raise KeyError(f"unknown table {table!r}")
    return TABLE_SCHEMAS[table]


def key_for(table: str) -> str:
    """Write key of a table: rows whose key is already present are never written twice."""
    return "clip_id" if table.startswith("stages/") else TABLE_KEYS[table]
