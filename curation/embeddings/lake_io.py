"""Reading the ``stages/embed`` table as numpy: the ok rows' keys and positions, and embeddings by position.

The driver handles keys and positions only; embeddings are read where they are used (a sample for k-means,
one cluster per task for semantic dedup), from one pinned version of the table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.lake.schemas import EMBED_TABLE, STATUS_OK
from curation.lake.tables import Lake


def embedding_matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``(N, D)`` float32 from a ``fixed_size_list`` or ``list`` column of floats; a null or ragged row is an
    error naming its index."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError(f"embedding row {column.to_pylist().index(None)} is null")
    n = len(column)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    if pa.types.is_fixed_size_list(column.type):
        dim = column.type.list_size
    else:
        lengths = np.diff(column.offsets.to_numpy())
        if (lengths != lengths[0]).any():
            raise ValueError(f"embedding row {int(np.nonzero(lengths != lengths[0])[0][0])} has another width")
        dim = int(lengths[0])
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(n, dim)


@dataclass(frozen=True)
class EmbedIndex:
    """The ok rows of one version of ``stages/embed``: their clip ids and positions."""

    uri: str
    version: int
    clip_ids: list[str]
    positions: np.ndarray
    stage_versions: tuple[str, ...]  # distinct stage_version of those rows (the embed model and settings)
    storage_options: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self.clip_ids)

    def read(self, positions: np.ndarray | list[int]) -> np.ndarray:
        """Embeddings at ``positions`` (float32, in the order given)."""
        return read_embeddings(self.uri, self.version, positions, self.storage_options)


def embed_index(lake: Lake) -> EmbedIndex | None:
    """Keys and positions of the ``ok`` embedding rows (one per clip), or None when the table does not exist."""
    ds = lake.dataset(EMBED_TABLE)
    if ds is None:
        return None
    t = ds.to_table(columns=["clip_id", "status", "stage_version"])
    ids, status, versions = (t.column(c).to_pylist() for c in ("clip_id", "status", "stage_version"))
    keep, seen = [], set()
    for i, (cid, st) in enumerate(zip(ids, status)):
        if st == STATUS_OK and cid not in seen:
            keep.append(i)
            seen.add(cid)
    keep.sort(key=ids.__getitem__)  # clip_id order: seeded samples must not depend on Ray's commit order
    return EmbedIndex(lake.uri(EMBED_TABLE), ds.version, [ids[i] for i in keep], np.array(keep, np.int64),
                      tuple(sorted({versions[i] or "" for i in keep})), lake.storage_options)


def read_embeddings(uri: str, version: int, positions: np.ndarray | list[int],
                    storage_options: dict[str, str] | None = None) -> np.ndarray:
    """Embeddings at ``positions`` of ``stages/embed`` at ``version`` (float32, in the order given)."""
    import lance

    positions = np.asarray(positions, np.int64)
    if len(positions) == 0:
        return np.zeros((0, 0), np.float32)
    order = np.argsort(positions, kind="stable")
    ds = lance.dataset(uri, version=version, storage_options=storage_options)
    x = embedding_matrix(ds.take(positions[order].tolist(), columns=["embedding"]).column("embedding"))
    out = np.empty_like(x)
    out[order] = x
    return out
