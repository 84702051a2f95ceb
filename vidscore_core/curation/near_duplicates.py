"""The `near_duplicates` table: groups of near-duplicate clips over the whole corpus.

Reads the 50 % frame embedding of every readable clip (`clip_embeddings`), its resolution
(`videos`) and aesthetic score, groups them with `vidscore_core.curation.dedup` and marks one clip per
group to keep. Lineage records the threshold, the method that ran and the embedding model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidscore_core.curation.dedup import (
    DEFAULT_THRESHOLD,
    EmbeddingChunks,
    choose_keep,
    near_duplicate_groups,
)
from vidscore_core.scoring import lineage
from vidscore_core.tables.store import TableStore

SCOPE = "corpus"
CODE = ("vidscore_core.curation.near_duplicates", "vidscore_core.curation.dedup")
MIDDLE_FRAME = 0.5


@dataclass(frozen=True)
class DedupSettings:
    threshold: float = DEFAULT_THRESHOLD
    same_resolution: bool = True
    method: str = "auto"  # auto, exact or ivf (vidscore_core.curation.dedup)
    device: str | None = None  # e.g. "cuda" for the exact search on a GPU


def middle_frame_clips(store: TableStore) -> pd.DataFrame:
    """One row per readable clip with a 50 % frame embedding (first batch wins for a clip listed
    twice): video_id, batch, model, width, height, aes. Reads no embedding."""
    table = store.dataset("clip_embeddings").to_table(
        columns=["video_id", "batch", "model"],
        filter=(pc.field("frame_point") == MIDDLE_FRAME) & pc.field("embedding").is_valid(),
    )
    info = store.query_df(
        "SELECT v.video_id, v.batch, v.width, v.height, a.aes FROM videos v "
        "LEFT JOIN aesthetic_scores a USING (video_id, batch) WHERE v.error IS NULL"
    )
    rows = table.to_pandas().merge(info, on=["video_id", "batch"], how="inner")
    rows = rows.sort_values(["video_id", "batch"], kind="stable").drop_duplicates("video_id", keep="first")
    return rows.reset_index(drop=True)


def middle_frame_embeddings(store: TableStore) -> tuple[pd.DataFrame, np.ndarray]:
    """`middle_frame_clips` and the (n, d) float32 embedding matrix in the same order."""
    clips = middle_frame_clips(store)
    chunks = list(middle_frame_chunks(store, clips).read())
    if not chunks:
        return clips, np.zeros((len(clips), 0), np.float32)
    matrix = np.zeros((len(clips), chunks[0][1].shape[1]), np.float32)
    for rows, x in chunks:
        matrix[rows] = x
    return clips, matrix


def middle_frame_chunks(store: TableStore, clips: pd.DataFrame) -> EmbeddingChunks:
    """The 50 % frame embeddings of `clips` (rows in its order), read one partition file at a time
    each time they are needed: 10 M clips never sit in memory at 3 KiB each."""
    by_batch = {batch: (pd.Index(part["video_id"]), part.index.to_numpy(np.int64))
                for batch, part in clips.groupby("batch", sort=False)}  # fmt: skip
    files = store.partition_files("clip_embeddings")

    def read() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch, (ids, rows) in by_batch.items():
            if batch not in files:
                continue
            table = pq.read_table(files[batch], filesystem=store.fs, columns=["video_id", "frame_point", "embedding"])
            table = table.filter((pc.field("frame_point") == MIDDLE_FRAME) & pc.field("embedding").is_valid())
            at = ids.get_indexer(table.column("video_id").to_pandas())
            found = at >= 0
            if found.any():
                yield rows[at[found]], _matrix(table.column("embedding"), np.flatnonzero(found))

    return EmbeddingChunks(len(clips), read)


def _matrix(column: pa.ChunkedArray, take: np.ndarray) -> np.ndarray:
    lists = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if len(lists) == 0:
        return np.zeros((0, 0), np.float32)
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    if lengths.min() != lengths.max():
        raise ValueError(f"clip_embeddings holds embeddings of different widths {sorted(set(lengths))[:5]}")
    flat = lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(lists), int(lengths[0]))[take]


def compute(store: TableStore, settings: DedupSettings, run_id: str) -> pd.DataFrame:
    """The rows of `near_duplicates` for the corpus as the tables hold it now."""
    clips = middle_frame_clips(store)
    embeddings = middle_frame_chunks(store, clips)
    resolution = None
    if settings.same_resolution:
        resolution = [f"{w}x{h}" for w, h in zip(clips["width"], clips["height"], strict=True)]
    result = near_duplicate_groups(
        embeddings,
        threshold=settings.threshold,
        resolution=resolution,
        video_ids=clips["video_id"].to_numpy(),
        method=settings.method,
        device=settings.device,
    )
    out = clips[["video_id", "batch", "width", "height", "aes"]].copy()
    out["group_id"] = result.group_id
    out["group_size"] = out.groupby("group_id")["video_id"].transform("size").astype("int32")
    out["keep"] = choose_keep(out["group_id"].to_numpy(), out["aes"].to_numpy(), out["video_id"].to_numpy())
    out["scope"] = SCOPE
    out["threshold"] = settings.threshold
    out["same_resolution"] = settings.same_resolution
    out["method"] = result.method
    out["model"] = clips["model"]
    out["params"] = json.dumps({"threshold": settings.threshold, "same_resolution": settings.same_resolution,
                                "method": result.method, "edges": result.n_edges, **_plain(result.params)})  # fmt: skip
    out["run_id"] = run_id
    out["code_version"] = lineage.code_version(*CODE)
    out["scored_at"] = pd.Timestamp(lineage.utc_now())
    return out


def _plain(params: dict) -> dict:
    return json.loads(json.dumps(params, default=lambda v: v.item() if hasattr(v, "item") else str(v)))
