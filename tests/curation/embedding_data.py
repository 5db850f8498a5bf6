"""Generated embeddings with planted structure, shared by the clustering, quality, dedup and selection tests."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from curation.embeddings.kmeans import l2_normalize


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """BLAS, faiss (OpenMP) and torch on one thread: on small arrays and a shared 2-core machine, thread pools
    cost far more than they give (k-means on 3000 x 64: 0.1 s on one thread, over 10 s oversubscribed)."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    faiss_threads, torch_threads = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        faiss.omp_set_num_threads(faiss_threads)
        torch.set_num_threads(torch_threads)


def gaussian_mixture(n_clusters: int, per_cluster: int | list[int], dim: int, spread: float,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``n_clusters`` random unit centres: ``(embeddings, planted labels)``, shuffled.
    ``spread`` is the noise norm relative to the centre (0.5: cosine to the centre about 0.9)."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((n_clusters, dim)))
    sizes = per_cluster if isinstance(per_cluster, list) else [per_cluster] * n_clusters
    labels = np.repeat(np.arange(n_clusters), sizes)
    noise = rng.standard_normal((len(labels), dim)) * spread / np.sqrt(dim)
    x = l2_normalize(centres[labels] + noise)
    order = rng.permutation(len(labels))
    return x[order], labels[order]


def near_copies(x: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors near each row of ``x`` (noise norm ``noise``: cosine about 1 - noise**2 / 2)."""
    eps = rng.standard_normal(x.shape) * noise / np.sqrt(x.shape[1])
    return l2_normalize(x + eps)


def write_embedded_lake(root, embeddings: np.ndarray, media_types: list[str] | None = None,
                        prefix: str = "c", start: int = 0):
    """A lake holding ``clips`` rows (320x180, 5 s) and ``stages/embed`` rows for ``embeddings`` (fp16), as the
    shot and embed stages would write them; returns the lake and the clip ids."""
    from curation.lake import KeyedWriter, Lake
    from curation.lake.schemas import embedding_schema

    lake = Lake(str(root))
    n, dim = embeddings.shape
    ids = [f"{prefix}{start + i:05d}" for i in range(n)]
    media = media_types or ["video"] * n
    KeyedWriter(lake, "clips").append([
        {"clip_id": c, "video_id": c, "uri": f"/media/{c}.mp4", "media_type": m, "start_frame": 0,
         "end_frame": 120, "fps": 24.0, "width": 320, "height": 180, "duration_s": 5.0, "status": "ok"}
        for c, m in zip(ids, media)])
    writer = KeyedWriter(lake, "stages/embed")
    writer.schema = embedding_schema(dim)
    x16 = embeddings.astype(np.float16)
    writer.append([{"clip_id": c, "embedding": x16[i], "embed_model": "planted", "stage_version": "1-test",
                    "status": "ok"} for i, c in enumerate(ids)])
    return lake, ids
