"""The model-backed stages: OCR, CLIP embeddings, aesthetics, NSFW and the expert heads.

Each is a small ``BatchModel`` (``prepare`` one input row, ``score`` a batch) plus a ``ModelStageSpec`` built from
its config section; ``curation.stages.model_runner`` runs it as a Ray Data actor pool. ``ocr``, ``embed`` and
NudeNet's ``nsfw`` read the clips' JPEG keyframes; ``aesthetic``, ``experts`` and the ``clip_head`` NSFW backend
read ``stages/embed`` (CLIP runs once per keyframe for all of them). ``preflight`` checks every setting and weight
file that the configured stages need before any stage runs.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any

import cv2
import numpy as np

from curation.config import (
    AestheticConfig,
    ConfigError,
    EmbedConfig,
    ExpertsConfig,
    ModelStageConfig,
    NsfwConfig,
    OcrConfig,
)
from curation.lake.schemas import EMBED_TABLE, embedding_schema
from curation.stages.model_runner import ModelStageSpec

VERSIONS = {"ocr": "1", "embed": "1", "aesthetic": "1", "nsfw": "1", "experts": "1"}
_EXEC_FIELDS = set(ModelStageConfig.model_fields)


def settings_hash(*sections: ModelStageConfig) -> str:
    """Hash of what changes a stage's scores (its model settings and those of the stages it reads), leaving
    out how it runs (batch size, actors, GPUs), so re-running with more actors recomputes nothing."""
    dumps = [s.model_dump(mode="json", exclude=_EXEC_FIELDS) for s in sections]
    blob = json.dumps([dumps, [weight_fingerprint(path) for path in _paths_in(dumps)]], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _paths_in(value: Any) -> list[str]:
    """Every string in a config dump that names an existing local file or folder (weights)."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_in(v)]
    if isinstance(value, list):
        return [p for v in value for p in _paths_in(v)]
    return [value] if isinstance(value, str) and "://" not in value and os.path.exists(value) else []


def weight_fingerprint(path: str) -> list[Any]:
    """Size and modification time of a weight file (or of each file in a weight folder): retraining a head or
    replacing a CLIP folder at the same path changes the stage version, so old scores are recomputed."""
    files = sorted(os.path.join(path, f) for f in os.listdir(path)) if os.path.isdir(path) else [path]
    return [[os.path.basename(f), os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files if os.path.isfile(f)]


def decode_keyframes(jpegs: list[bytes] | None) -> list[np.ndarray]:
    """BGR frames of a clip's keyframes; a missing, truncated or undecodable JPEG raises ``ValueError``."""
    if not jpegs:
        raise ValueError("clip has no keyframes")
    frames = []
    for i, data in enumerate(jpegs):
        if not data or data[:2] != b"\xff\xd8":
            raise ValueError(f"keyframe {i} is not a JPEG")
        if data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
            raise ValueError(f"keyframe {i} is a truncated JPEG (no end-of-image marker)")
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if frame is None:
            raise ValueError(f"keyframe {i} could not be decoded")
        frames.append(frame)
    return frames


def _threads(cfg: ModelStageConfig) -> int:
    return max(1, int(cfg.num_cpus))


def _set_torch_threads(cfg: ModelStageConfig) -> None:
    import torch

    torch.set_num_threads(_threads(cfg))


# --- ocr ---------------------------------------------------------------------------------------------------------

class OcrModel:
    """Per keyframe: text coverage and recognised strings; per clip: max and mean coverage, distinct texts."""

    def __init__(self, cfg: OcrConfig) -> None:
        from curation.models import pick_device
        from curation.models.ocr import make_ocr_backend

        use_gpu = pick_device(cfg.num_gpus) == "cuda"
        if cfg.backend == "rapidocr":
            self.backend = make_ocr_backend(
                "rapidocr", recognize=cfg.recognize, min_text_score=cfg.min_text_score, min_text_chars=cfg.min_text_chars,
                unclip_ratio=cfg.unclip_ratio, box_thresh=cfg.box_thresh, threads=_threads(cfg), use_gpu=use_gpu,
                det_model=cfg.det_model, rec_model=cfg.rec_model, cls_model=cfg.cls_model)
        else:
            self.backend = make_ocr_backend(
                "paddleocr", det_model_dir=cfg.paddle_det_model_dir, rec_model_dir=cfg.paddle_rec_model_dir,
                lang=cfg.paddle_lang, min_text_score=cfg.min_text_score, min_text_chars=cfg.min_text_chars,
                use_gpu=use_gpu)

    def prepare(self, row: dict[str, Any]) -> list[np.ndarray]:
        return decode_keyframes(row["keyframes"])

    def score(self, prepared: list[list[np.ndarray]]) -> list[dict[str, Any]]:
        out = []
        for frames in prepared:
            results = [self.backend(f) for f in frames]
            coverages = [r.coverage for r in results]
            texts: list[str] = []
            for r in results:
                texts += [t for t in r.texts if t not in texts]
            out.append({"text_coverage_max": max(coverages), "text_coverage_mean": float(np.mean(coverages)),
                        "text_coverages": coverages, "texts": texts, "ocr_backend": self.backend.name})
        return out


# --- embed -------------------------------------------------------------------------------------------------------

class EmbedModel:
    """CLIP image embeddings of every keyframe in one forward per batch; the clip's embedding is the normalised
    mean of its keyframes' normalised embeddings."""

    def __init__(self, cfg: EmbedConfig) -> None:
        from curation.models import pick_device
        from curation.models.clip import load_clip

        _set_torch_threads(cfg)
        assert cfg.clip is not None  # preflight
        self.encoder = load_clip(cfg.clip.path, cfg.clip.architecture, cfg.clip.weights,
                                 device=pick_device(cfg.num_gpus), precision=cfg.clip.precision)

    def prepare(self, row: dict[str, Any]) -> list[np.ndarray]:
        return [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in decode_keyframes(row["keyframes"])]

    def score(self, prepared: list[list[np.ndarray]]) -> list[dict[str, Any]]:
        feats = self.encoder.encode_images([f for frames in prepared for f in frames])
        out, k = [], 0
        for frames in prepared:
            per_frame = feats[k:k + len(frames)]
            k += len(frames)
            mean = per_frame.mean(0)
            norm = float(np.linalg.norm(mean))
            if not norm > 0:
                raise ValueError("zero or non-finite CLIP embedding")
            out.append({"embedding": (mean / norm).astype(np.float16),
                        "keyframe_embeddings": [e.astype(np.float16) for e in per_frame],
                        "embed_model": self.encoder.model_id})
        return out


def embedding_dim(cfg: EmbedConfig) -> int:
    """Width of the configured CLIP model's embeddings (from its config; no weights are read)."""
    assert cfg.clip is not None
    if cfg.clip.path is not None:
        from pathlib import Path

        from curation.models.clip import CONFIG_FILE

        meta = json.loads((Path(cfg.clip.path) / CONFIG_FILE).read_text())
        return int(meta.get("model_cfg", meta)["embed_dim"])
    import open_clip

    return int(open_clip.get_model_config(cfg.clip.architecture)["embed_dim"])


# --- heads on stored embeddings ----------------------------------------------------------------------------------

def _keyframe_embeddings(row: dict[str, Any]) -> np.ndarray:
    emb = row.get("keyframe_embeddings")
    if not emb:
        raise ValueError("no keyframe embeddings")
    return np.asarray(emb, np.float32)


class AestheticModel:
    """The LAION aesthetic predictor on each keyframe's embedding; the clip's score is their mean."""

    def __init__(self, cfg: AestheticConfig) -> None:
        from curation.models.aesthetic import load_aesthetic_head

        _set_torch_threads(cfg)
        assert cfg.weights is not None
        self.head = load_aesthetic_head(cfg.weights)

    def prepare(self, row: dict[str, Any]) -> np.ndarray:
        return _keyframe_embeddings(row)

    def score(self, prepared: list[np.ndarray]) -> list[dict[str, Any]]:
        from curation.models.aesthetic import aesthetic_scores

        scores = aesthetic_scores(self.head, np.concatenate(prepared))
        out, k = [], 0
        for emb in prepared:
            s = scores[k:k + len(emb)]
            k += len(emb)
            out.append({"aesthetic_score": float(s.mean()), "aesthetic_scores": [float(x) for x in s]})
        return out


class NudeNetModel:
    """NudeNet's detector on every keyframe; the clip's score is the max."""

    def __init__(self, cfg: NsfwConfig) -> None:
        from curation.models import pick_device
        from curation.models.nsfw import NudeNetScorer

        self.scorer = NudeNetScorer(cfg.nudenet_model, cfg.labels, threads=_threads(cfg),
                                    use_gpu=pick_device(cfg.num_gpus) == "cuda")

    def prepare(self, row: dict[str, Any]) -> list[np.ndarray]:
        return decode_keyframes(row["keyframes"])

    def score(self, prepared: list[list[np.ndarray]]) -> list[dict[str, Any]]:
        scores = self.scorer([f for frames in prepared for f in frames])
        out, k = [], 0
        for frames in prepared:
            out.append({"nsfw_score": float(scores[k:k + len(frames)].max()), "nsfw_backend": "nudenet"})
            k += len(frames)
        return out


class ClipHeadNsfwModel:
    """A binary head on each keyframe's CLIP embedding; the clip's score is the max."""

    def __init__(self, cfg: NsfwConfig) -> None:
        from curation.models.expert_head import load_head

        _set_torch_threads(cfg)
        assert cfg.head is not None
        self.head = load_head(cfg.head)
        if self.head.kind != "binary":
            raise ValueError(f"nsfw.head {cfg.head} is a {self.head.kind} head; the NSFW backend needs a binary one")

    def prepare(self, row: dict[str, Any]) -> np.ndarray:
        return _keyframe_embeddings(row)

    def score(self, prepared: list[np.ndarray]) -> list[dict[str, Any]]:
        scores = self.head.predict(np.concatenate(prepared))
        out, k = [], 0
        for emb in prepared:
            out.append({"nsfw_score": float(scores[k:k + len(emb)].max()), "nsfw_backend": "clip_head"})
            k += len(emb)
        return out


class ExpertsModel:
    """Every configured expert head on the clip embedding."""

    def __init__(self, cfg: ExpertsConfig) -> None:
        from curation.models.expert_head import load_head

        _set_torch_threads(cfg)
        self.names = sorted(cfg.heads)
        self.heads = [load_head(cfg.heads[n]) for n in self.names]

    def prepare(self, row: dict[str, Any]) -> np.ndarray:
        if row.get("embedding") is None:
            raise ValueError("no embedding")
        return np.asarray(row["embedding"], np.float32)

    def score(self, prepared: list[np.ndarray]) -> list[dict[str, Any]]:
        x = np.stack(prepared)
        scores = np.stack([h.predict(x) for h in self.heads], axis=1) if self.heads else np.zeros((len(x), 0))
        return [{"expert_names": self.names, "expert_scores": [float(v) for v in row]} for row in scores]


# --- specs and preflight -----------------------------------------------------------------------------------------

def _spec(name: str, section: ModelStageConfig, model_cls: type, version_sections: tuple[ModelStageConfig, ...],
          **kw: Any) -> ModelStageSpec:
    return ModelStageSpec(name=name, version=f"{VERSIONS[name]}-{settings_hash(*version_sections)}",
                          make_model=functools.partial(model_cls, section), batch_size=section.batch_size,
                          concurrency=section.concurrency, num_gpus=section.num_gpus, num_cpus=section.num_cpus, **kw)


def build_spec(name: str, cfg: Any) -> ModelStageSpec:
    """The spec of model stage ``name`` from the whole curation config."""
    embed_inputs = {"input_table": EMBED_TABLE, "input_columns": ("clip_id", "keyframe_embeddings")}
    if name == "ocr":
        return _spec("ocr", cfg.ocr, OcrModel, (cfg.ocr,))
    if name == "embed":
        return _spec("embed", cfg.embed, EmbedModel, (cfg.embed,),
                     output_schema=embedding_schema(embedding_dim(cfg.embed)))
    if name == "aesthetic":
        return _spec("aesthetic", cfg.aesthetic, AestheticModel, (cfg.aesthetic, cfg.embed), **embed_inputs)
    if name == "nsfw":
        if cfg.nsfw.backend == "nudenet":
            return _spec("nsfw", cfg.nsfw, NudeNetModel, (cfg.nsfw,))
        return _spec("nsfw", cfg.nsfw, ClipHeadNsfwModel, (cfg.nsfw, cfg.embed), **embed_inputs)
    if name == "experts":
        return _spec("experts", cfg.experts, ExpertsModel, (cfg.experts, cfg.embed), input_table=EMBED_TABLE,
                     input_columns=("clip_id", "embedding"))
    raise ValueError(f"{name!r} is not a model stage")


def _needs_embed(name: str, cfg: Any) -> bool:
    return name in ("aesthetic", "experts") or (name == "nsfw" and cfg.nsfw.backend == "clip_head")


def preflight(cfg: Any, stages: list[str]) -> None:
    """Before any work: every setting the listed model stages need is present (``ConfigError`` naming the key)
    and every weight file they name exists (``WeightsNotFoundError`` naming the path)."""
    from curation.models import require_dir, require_file
    from curation.models.clip import CONFIG_FILE

    for name in stages:
        if name == "embed" or (_needs_embed(name, cfg) and "embed" in stages):
            if cfg.embed.clip is None:
                raise ConfigError(f"stage '{name}' needs a CLIP model: set 'embed.clip.path' (an open_clip folder) "
                                  "or 'embed.clip.architecture' and 'embed.clip.weights'")
            if cfg.embed.clip.path is not None:
                require_file(require_dir(cfg.embed.clip.path, "open_clip model folder") / CONFIG_FILE,
                             "open_clip model config")
            else:
                require_file(cfg.embed.clip.weights, f"open_clip weights for {cfg.embed.clip.architecture}")
        if name == "aesthetic":
            if cfg.aesthetic.weights is None:
                raise ConfigError("stage 'aesthetic' needs 'aesthetic.weights' (the LAION predictor's .pth)")
            require_file(cfg.aesthetic.weights, "aesthetic predictor weights")
        if name == "nsfw":
            if cfg.nsfw.backend == "clip_head":
                if cfg.nsfw.head is None:
                    raise ConfigError("nsfw backend 'clip_head' needs 'nsfw.head' (a binary head .safetensors)")
                require_file(cfg.nsfw.head, "NSFW head")
            elif cfg.nsfw.nudenet_model is not None:
                require_file(cfg.nsfw.nudenet_model, "NudeNet model")
        if name == "experts":
            if not cfg.experts.heads:
                raise ConfigError("stage 'experts' needs 'experts.heads' (name: head .safetensors), e.g. from "
                                  "`wan curate train-expert`")
            for expert, path in cfg.experts.heads.items():
                require_file(path, f"expert head '{expert}'")
        if name == "ocr" and cfg.ocr.backend == "rapidocr":
            for key in ("det_model", "rec_model", "cls_model"):
                if getattr(cfg.ocr, key) is not None:
                    require_file(getattr(cfg.ocr, key), f"ocr.{key}")
