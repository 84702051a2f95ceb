"""`vidscore dedup` for CSV users: near-duplicate groups of the clips a meta file lists.

The output holds every input row and column as written, plus

* `dup_group`: the path (as written in the file) of the clip kept for the row's group, so every
  member of a group names the same clip and a clip with no near-duplicate names itself;
* `dup_keep`: True for the one clip kept per group (the highest `aes` when the meta has an `aes`
  column, ties and meta files without one broken by the smallest video id, `dedup.choose_keep`).

Embeddings are CLIP image embeddings of the 50 % frame, the frame Open-Sora's deduplication and the
matching score use, computed by the production scorer (`ClipJob.embed` with `MATCHING_POINTS`), or
read from the platform's `clip_embeddings` table when it has a 0.5-frame embedding of every clip
(by the same CLIP weights, when they are installed). Groups are `dedup.near_duplicate_groups`:
connected components of cosine >= threshold, within equal resolutions unless `same_resolution` is
off. Resolutions come from the meta's `width`/`height` columns, or a probe of the file.

A clip whose 50 % frame cannot be read has no embedding and cannot be compared: its rows get an empty
`dup_group` and `dup_keep` True (it is kept, not deduplicated), and the summary counts them. A listed
clip's rows all share its `dup_keep`: the same path listed twice is one clip, not a duplicate.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vidscore_core.curation.dedup import DEFAULT_THRESHOLD, choose_keep, near_duplicate_groups
from vidscore_core.ingest.meta import check_output, default_output, file_columns, numeric_column, read_meta
from vidscore_core.settings import Settings

DEDUP_POINT = 0.5  # the middle frame


@dataclass
class DedupSummary:
    rows: int
    clips: int  # distinct clips (paths) listed
    embedded: int
    without_embedding: int  # kept, not deduplicated
    groups_with_duplicates: int
    clips_in_groups: int  # clips in the groups with duplicates
    rows_not_kept: int  # rows with dup_keep False: what `vidscore filter --dedup` drops
    embeddings: str  # "computed" or "reused from the platform's clip_embeddings"
    method: str
    threshold: float
    same_resolution: bool

    def line(self) -> str:
        groups = f"{self.groups_with_duplicates} group(s) with duplicates ({self.clips_in_groups} clips)"
        missing = (
            f", {self.without_embedding} clip(s) without an embedding (unreadable: kept, not deduplicated)"
            if self.without_embedding
            else ""
        )
        rule = "same resolution" if self.same_resolution else "any resolution"
        return (
            f"{self.clips} clips in {self.rows} rows, {groups}, {self.rows_not_kept} row(s) with dup_keep "
            f"false (dropped by `vidscore filter --dedup`){missing}; threshold {self.threshold:g}, {rule}, "
            f"embeddings {self.embeddings}"
        )


def check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"--threshold must be a finite cosine in [-1, 1], got {threshold!r}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"--threshold must be a cosine in [-1, 1], got {threshold}")
    return float(threshold)


def dedup_meta_file(
    meta_path: str | os.PathLike[str],
    settings: Settings,
    options,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    same_resolution: bool = True,
    output: str | os.PathLike[str] | None = None,
    reuse: bool = True,
    probe_workers: int = 4,
    overwrite: bool = False,
) -> tuple[Path, DedupSummary]:
    """Write META_dedup.csv (or `output`): every input row and column plus `dup_group` and `dup_keep`.

    `options` is a `scoring.options.JobOptions` (device, batch size, workers, decode timeout) for the
    embeddings it has to compute; `reuse=False` never reads the platform's table. The output path is
    checked before any work (`check_output`; `overwrite` allows it to be the meta file).
    """
    threshold = check_threshold(threshold)
    target = check_output(Path(output) if output else default_output(meta_path, "dedup"), meta_path, overwrite=overwrite)
    read = read_meta(meta_path, drop_duplicates=False)
    clips = read.drop_duplicates(subset="video_id", keep="first").reset_index(drop=True)
    ids = [str(v) for v in clips["video_id"]]

    found, known = platform_embeddings(settings, ids) if reuse else ({}, set())
    # Only clips the platform never tried are computed: one it could not read has no embedding to find.
    todo = clips[[vid not in known for vid in ids]]
    if len(todo):
        found = {**found, **compute_embeddings(todo.reset_index(drop=True), settings, options)}
    source = ("reused from the platform's clip_embeddings" if not len(todo) else "computed" if not known
              else f"reused from the platform's clip_embeddings, {len(todo)} computed")  # fmt: skip
    embedded = [i for i, vid in enumerate(ids) if vid in found]
    emb_ids = [ids[i] for i in embedded]

    group_of: dict[str, str] = {}
    keep_of: dict[str, bool] = {}
    groups_with_dups = clips_in_groups = 0
    method = "none"
    if embedded:
        x = np.stack([found[vid] for vid in emb_ids]).astype(np.float32)
        resolution = None
        if same_resolution:
            resolution = clip_resolutions(clips.iloc[embedded].reset_index(drop=True), workers=probe_workers)
        result = near_duplicate_groups(
            x, threshold=threshold, resolution=resolution, video_ids=np.asarray(emb_ids)
        )
        method = result.method
        aes = _first_aes(read, emb_ids)
        keep = choose_keep(result.group_id, aes, np.asarray(emb_ids))
        written = dict(zip(clips["video_id"].astype(str), clips["path_original"], strict=True))
        kept_path = {result.group_id[j]: written[emb_ids[j]] for j in np.flatnonzero(keep)}
        for j, vid in enumerate(emb_ids):
            group_of[vid] = kept_path[result.group_id[j]]
            keep_of[vid] = bool(keep[j])
        sizes = np.bincount(result.component, minlength=result.n_groups)
        groups_with_dups = int((sizes > 1).sum())
        clips_in_groups = int(sizes[sizes > 1].sum())

    out = file_columns(read)
    row_ids = [str(v) for v in read["video_id"]]
    out["dup_group"] = pd.Series([group_of.get(v) for v in row_ids], index=out.index, dtype=object)
    out["dup_keep"] = pd.Series([keep_of.get(v, True) for v in row_ids], index=out.index, dtype=bool)
    _write(out, target)
    summary = DedupSummary(
        rows=len(out),
        clips=len(ids),
        embedded=len(embedded),
        without_embedding=len(ids) - len(embedded),
        groups_with_duplicates=groups_with_dups,
        clips_in_groups=clips_in_groups,
        rows_not_kept=int((~out["dup_keep"]).sum()),
        embeddings=source,
        method=method,
        threshold=threshold,
        same_resolution=same_resolution,
    )
    return target, summary


def compute_embeddings(clips: pd.DataFrame, settings: Settings, options) -> dict[str, np.ndarray]:
    """video_id -> 50 % frame embedding, by the production CLIP scorer; unreadable clips are absent."""
    from vidscore_core.scoring.clip_frames import MATCHING_POINTS
    from vidscore_core.scoring.score_jobs import ClipJob, clips_from_frame

    job = ClipJob(settings, options)
    _ = job.clip  # fail on missing/mismatched weights before decoding anything
    out: dict[str, np.ndarray] = {}
    for item in job.embed(clips_from_frame(clips), MATCHING_POINTS):
        frame = item.frame_at(DEDUP_POINT) if item.embeddings is not None else None
        if frame is not None:
            out[item.video_id] = np.asarray(frame[1], dtype=np.float32)
    return out


def platform_embeddings(settings: Settings, video_ids: Sequence[str]) -> tuple[dict[str, np.ndarray], set[str]]:
    """(video_id -> 50 % frame embedding, the ids the platform's `clip_embeddings` table has a row for):
    a clip in the second but not the first could not be read there.

    With the CLIP weights installed, only rows made by that file (by sha256) count; without them, the
    rows must all come from one weights file (else nothing counts). A clip scored in several runs takes
    its latest row.
    """
    import pyarrow.compute as pc

    from vidscore_core.tables.store import TableStore

    wanted = sorted(set(video_ids))
    store = TableStore.from_settings(settings)
    if not wanted or not store.partition_files("clip_embeddings"):
        return {}, set()
    # The 50 % frame's row, or the one row (no frame, NULL embedding) of a clip that could not be read.
    expr = pc.field("video_id").isin(wanted) & (
        (pc.field("frame_point") == DEDUP_POINT) | pc.field("frame_point").is_null()
    )
    columns = ["video_id", "embedding", "weights_sha256", "scored_at"]
    rows = store.dataset("clip_embeddings").to_table(columns=columns, filter=expr).to_pandas()
    sha = _clip_sha(settings)
    if sha is not None:
        rows = rows[rows["weights_sha256"] == sha]
    elif rows["weights_sha256"].nunique(dropna=False) > 1:
        return {}, set()
    rows = rows.sort_values("scored_at", kind="stable").drop_duplicates("video_id", keep="last")
    found = {
        str(v): np.asarray(e, dtype=np.float32)
        for v, e in zip(rows["video_id"], rows["embedding"], strict=True)
        if e is not None
    }
    return found, {str(v) for v in rows["video_id"]}


def _clip_sha(settings: Settings) -> str | None:
    from vidscore_core import weights
    from vidscore_core.scoring import lineage

    path = weights.get("clip").path(settings)
    return lineage.file_sha256(path) if path.is_file() else None


def clip_resolutions(clips: pd.DataFrame, *, workers: int = 4) -> list[str]:
    """ "WxH" of each clip: the meta's `width`/`height` when both are positive numbers, else a probe of
    the file. A clip whose size cannot be known gets a key of its own ("unknown:<video_id>"), so under
    the same-resolution rule it matches nothing."""
    from vidscore_core.curation.filters import probe_paths

    width, height = numeric_column(clips, "width"), numeric_column(clips, "height")
    known = (width > 0) & (height > 0)
    missing = [str(p) for p, ok in zip(clips["path"], known, strict=True) if not ok]
    infos = probe_paths(missing, workers=workers) if missing else {}
    out: list[str] = []
    for vid, path, w, h, ok in zip(clips["video_id"], clips["path"], width, height, known, strict=True):
        if not ok:
            info = infos.get(str(path)) or {}
            w, h = info.get("width"), info.get("height")  # header facts, even when decoding failed
        if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0:
            out.append(f"{int(w)}x{int(h)}")
        else:
            out.append(f"unknown:{vid}")
    return out


def _first_aes(read: pd.DataFrame, video_ids: Sequence[str]) -> np.ndarray:
    """Each clip's `aes` as listed first in the meta (NaN when it has no aes column)."""
    if "aes" not in read.columns:
        return np.full(len(video_ids), np.nan)
    first = read.drop_duplicates(subset="video_id", keep="first")
    by_id = pd.Series(
        numeric_column(first, "aes").to_numpy(), index=first["video_id"].astype(str)
    )
    return by_id.reindex(list(video_ids)).to_numpy(dtype=np.float64)


def _write(df: pd.DataFrame, path: Path) -> None:
    from vidscore_core.ingest.meta import write_table

    write_table(df, path)
