"""``wan demo``: the end-to-end demo on generated media with ground truth, on the embedded local Ray + Lance.

1. generate media with labels (``curation.synth``), curate them (classical and model stages) and print the
   filters' accuracy against the labels;
2. the toy world (``jobs.toy_world``): caption the kept clips, train the tiny VAE briefly, cache latents and text,
   train a tiny DiT and print the figures of what it learned (``--no-toy`` stops after curation).
"""
from __future__ import annotations

import argparse
import logging
import os


def run_demo(args: argparse.Namespace) -> int:
    """``wan demo``: curation with accuracy figures, then the toy world (unless ``--no-toy``)."""
    from curation.config import load_config
    from curation.pipeline import run_curation
    from curation.synth import generate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = os.path.abspath(args.out)
    media = os.path.join(out, "media")
    if not os.path.exists(os.path.join(out, "labels.parquet")):
        print(f"[demo] generating sample media into {media}")
        generate(out, preset="demo", seed=args.seed)
    cfg = load_config(args.config, {"lake": os.path.join(out, "lake"), "input.paths": [media]})
    import pyarrow.parquet as pq

    from curation.config import EMBEDDING_STAGES, MODEL_STAGES
    from curation.demo_models import prepare_demo_models, train_demo_experts
    from curation.embeddings.demo_truth import (
        quality_agreement,
        rate_todo_from_labels,
        semantic_dedup_agreement,
    )
    from curation.lake import Lake

    extra = (*MODEL_STAGES, *EMBEDDING_STAGES, "split")
    cfg.stages = [*cfg.stages, *(s for s in extra if s not in cfg.stages)]  # validated: back in stage order
    cfg = prepare_demo_models(cfg, out)  # tiny random CLIP/aesthetic weights unless the config names real ones
    labels = pq.read_table(os.path.join(out, "labels.parquet"))
    expert_metrics: dict[str, dict[str, float]] = {}
    hooks = {"experts": lambda: expert_metrics.update(train_demo_experts(cfg, labels, out)),
             # The human rating round, simulated from the generator's labels (people rate real data).
             "quality": lambda: rate_todo_from_labels(Lake(cfg.lake), labels, cfg.quality,
                                                      os.path.join(out, "ratings_simulated.csv"))}
    print("[demo] curating (ingest, shot split + classical filters, dedup, model stages, select) on the local Ray")
    summary = run_curation(cfg, before_stage=hooks)
    print(summary.text())
    if summary.report_dir:
        with open(os.path.join(summary.report_dir, "summary.txt")) as f:
            print(f.read())
        print(f"[demo] report: {os.path.join(summary.report_dir, 'report.html')}")
    from curation.evaluation import evaluate

    ev = evaluate(Lake(cfg.lake), labels, min_duration_s=cfg.select.min_duration_s)
    print("[demo] classical filters against the generator's ground truth:\n" + ev.text())
    from curation.demo_models import text_detection_scores

    if cfg.select.max_text_coverage is not None and (t := text_detection_scores(Lake(cfg.lake), labels,
                                                                                cfg.select.max_text_coverage)):
        print(f"[demo] OCR text detection against the generator's text overlays (coverage > "
              f"{cfg.select.max_text_coverage}): accuracy {t['accuracy']:.3f}, F1 {t['f1']:.3f} "
              f"({t['true_pos']:.0f} found, {t['false_pos']:.0f} false, {t['false_neg']:.0f} missed)")
    for name, m in expert_metrics.items():
        print(f"[demo] expert {name} (trained on the generator's labels), held out: "
              + ", ".join(f"{k}={v:.3f}" for k, v in sorted(m.items()) if k.startswith("val_")))
    agreement = quality_agreement(Lake(cfg.lake), labels)
    print("[demo] quality expert vs the simulated rater on clips nobody rated: "
          + ", ".join(f"{k}={v:.3f}" for k, v in agreement.items()))
    dedup = semantic_dedup_agreement(Lake(cfg.lake), labels)
    print("[demo] semantic dedup vs the generated copies: " + ", ".join(f"{k}={v:.3f}" for k, v in dedup.items())
          + ("  (a random-initialised CLIP also places unrelated clips this close)" if dedup["precision"] < 0.9
             else ""))
    if getattr(args, "no_toy", False):
        return _stop_ray()
    print("[demo] the toy world: reference captions -> tiny VAE -> latent and text caches -> tiny DiT -> samples")
    from jobs.toy_world import run_toy_world

    figures = run_toy_world(out, cfg.lake, labels, getattr(args, "toy_config", None))
    print(figures.text())
    return _stop_ray()


def _stop_ray() -> int:
    """Stop the embedded Ray the demo started, now: left to the interpreter's exit, a Ray Data executor of the VAE
    run kept the process alive, printing progress, for up to a minute and a half after the last figure."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    return 0


