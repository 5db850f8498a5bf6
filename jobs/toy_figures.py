"""The toy world's measurements (``jobs.toy_world``): held-out flow-matching loss, samples of a DiT, and how close
they are to the training clips (colour histograms, dominant colours, normalised latents)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from curation.lake import Lake

if TYPE_CHECKING:
    from jobs.toy_world import SampleSection


def load_dit_cpu(path: str) -> Any:
    from wanmodel.models.dit_adapters import load_dit

    return load_dit(path, device="cpu").eval()


def ok_latents(lake: Lake) -> tuple[Any, Any]:
    """(index, store) of every ``ok`` row of the lake's ``latents``, in all its buckets (the trainer's readers)."""
    from wanmodel.train.dit_data import LatentIndex, LatentStore
    from wanmodel.train.dit_validation import ok_buckets

    buckets = ok_buckets(lake)
    if not buckets:
        raise RuntimeError(f"the lake {lake.root} has no latents")
    index = LatentIndex.from_lake(lake, buckets)
    return index, LatentStore(lake, index)


def validation_loss(model: Any, lake: str, *, sigmas: list[float], seed: int) -> float:
    """The trainer's held-out loss (``wanmodel.train.dit_validation``) over every bucket of ``lake``: the same
    number its ``val_loss`` curve logs for the same weights."""
    from wanmodel.train.dit_validation import ValidationSet, held_out_index

    held = Lake(lake)
    val = ValidationSet(held, held_out_index(held, None), text_dim=model.config.text_dim,
                        text_len=model.config.text_len, sigmas=sigmas, seed=seed)
    return val.loss(model)


def training_histogram(lake: Lake, clip_ids: list[str]) -> np.ndarray:
    """Mean colour histogram of the training clips' keyframes."""
    import cv2

    from curation.synth.captions import colour_histogram

    wanted = set(clip_ids)
    rows = lake.read("clips", columns=["clip_id", "keyframes"]).to_pylist()
    hists = []
    for r in rows:
        if r["clip_id"] in wanted:
            for jpeg in r["keyframes"] or []:
                bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                hists.append(colour_histogram(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    if not hists:
        raise RuntimeError("no keyframes of the training clips in 'clips'")
    return np.mean(hists, axis=0)


@dataclass
class Samples:
    images: dict[tuple[str, int], np.ndarray]  # (prompt, seed) -> RGB uint8 [H, W, 3]
    latents: dict[tuple[str, int], np.ndarray]  # (prompt, seed) -> the normalised latent, flattened [C*1*h*w]


def sample_images(dit_path: str, vae: str, text_encoder: str, prompts: list[str], s: SampleSection) -> Samples:
    """Every prompt with every seed (each seed's noise shared by the prompts): images and their latents."""
    from wanmodel.pipelines.t2v import WanT2VPipeline

    pipe = WanT2VPipeline.from_pretrained(dit_path, vae, text_encoder)
    out = Samples({}, {})
    for seed in s.seeds:
        result = pipe.generate(prompts, seed=[seed] * len(prompts), height=s.size, width=s.size, num_frames=1,
                               num_steps=s.num_steps, guidance_scale=s.guidance_scale, shift=s.shift,
                               solver=s.solver, negative_prompt="")  # the empty prompt, as caption dropout
        for p, img, lat in zip(prompts, result.images, result.latents):
            out.images[(p, seed)] = img
            out.latents[(p, seed)] = lat[:, :1].flatten().numpy()
    return out


def training_latents(lake: Lake, captions: dict[str, tuple[str, str, str]]) -> tuple[np.ndarray, list[str]]:
    """The first latent frame of each training clip's normalised posterior mean, flattened [N, C*h*w] (an image's
    latent, or a video's first frame, which the causal VAE encodes alone), and each clip's colour."""
    clip_of = {r["latent_id"]: r["clip_id"]
               for r in lake.read("latents", columns=["latent_id", "clip_id"], filter="status = 'ok'").to_pylist()}
    index, store = ok_latents(lake)
    vectors, colours = [], []
    for bucket in index.buckets:  # one read per bucket (one latent shape each)
        rows = [i for i in index.by_bucket[bucket] if clip_of[index.rows[i].latent_id] in captions]
        if rows:
            latents = store.read(rows).normalized_sample(None)  # the trainer's normalisation
            vectors += [z[:, :1].flatten().numpy() for z in latents]
            colours += [captions[clip_of[index.rows[i].latent_id]][1] for i in rows]
    return np.stack(vectors), colours


def latent_figures(samples: Samples, colours: dict[str, str], train: tuple[np.ndarray, list[str]]
                   ) -> tuple[float, float]:
    """In latent space: (mean RMS distance of a sample to its nearest training clip's first frame, rate of samples
    whose nearest training clip has the prompt's colour)."""
    vectors, clip_colours = train
    dists, hits = [], []
    for (prompt, _), vec in samples.latents.items():
        d = np.sqrt(np.mean((vectors - vec[None]) ** 2, axis=1))
        dists.append(float(d.min()))
        hits.append(clip_colours[int(np.argmin(d))] == colours[prompt])
    return float(np.mean(dists)), float(np.mean(hits))


def sample_figures(samples: dict[tuple[str, int], np.ndarray], colours: dict[str, str],
                   train_hist: np.ndarray) -> tuple[float, float]:
    """(total-variation distance of the samples' mean colour histogram to the training clips', rate of samples
    whose dominant colour is their prompt's colour)."""
    from curation.synth.captions import colour_histogram, dominant_colour

    hist = np.mean([colour_histogram(img) for img in samples.values()], axis=0)
    hits = [dominant_colour(img) == colours[prompt] for (prompt, _), img in samples.items()]
    return 0.5 * float(np.abs(hist - train_hist).sum()), float(np.mean(hits))


def save_grid(samples: dict[tuple[str, int], np.ndarray], path: Path) -> None:
    """One PNG: a row per prompt, a column per seed."""
    import cv2

    prompts = sorted({p for p, _ in samples})
    seeds = sorted({s for _, s in samples})
    rows = [np.concatenate([samples[(p, s)] for s in seeds], axis=1) for p in prompts]
    grid = np.concatenate(rows, axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(cv2.resize(grid, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST),
                                        cv2.COLOR_RGB2BGR))


# ------------------------------------------------------------------------------------------------------ run
