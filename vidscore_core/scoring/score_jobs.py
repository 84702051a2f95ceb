"""Score a list of clips and return table rows with lineage: the API the CLI and Dagster share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch

from vidscore_core import scores, weights
from vidscore_core.scoring import lineage
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS, ClipFrameSampler, ClipImageScorer
from vidscore_core.scoring.derived import FrameEmbeddings, aesthetic_values, matching_values
from vidscore_core.scoring.engine import EngineStats, Item, ItemResult
from vidscore_core.scoring.finite import non_finite_as_errors
from vidscore_core.scoring.options import JobOptions, combined_sha
from vidscore_core.scoring.shared_decode import ScorePart, run_parts
from vidscore_core.settings import Settings, resolve_device


def clips_from_frame(df: pd.DataFrame) -> list[Item]:
    """Engine inputs from a table with `video_id`, `path` and optionally `text`."""
    texts = df["text"] if "text" in df.columns else [None] * len(df)
    return [
        Item(index=i, video_id=str(vid), path=str(path), text=text if isinstance(text, str) else None)
        for i, (vid, path, text) in enumerate(zip(df["video_id"], df["path"], texts, strict=True))
    ]


def with_lineage(
    rows: list[dict],
    *,
    batch: str,
    model: str,
    shas: dict[str, str],
    params: dict,
    run_id: str,
    code_version: str,
) -> pd.DataFrame:
    frame = pd.DataFrame(non_finite_as_errors(rows))
    frame.insert(1, "batch", batch)
    frame["model"] = model
    frame["weights_sha256"] = combined_sha(shas) if shas else None
    frame["params"] = lineage.params_json(**params, weights=shas)
    frame["run_id"] = run_id
    frame["code_version"] = code_version
    frame["scored_at"] = pd.Timestamp(lineage.utc_now())
    return frame


@contextlib.contextmanager
def _autocast(device: str, precision: str) -> Iterator[None]:
    """The precision of a scoring region, set for the region only: autocast for fp16/bf16, TF32
    matmuls for tf32 (the process-wide flags are restored on the way out, so no other step of the
    process inherits them)."""
    if not device.startswith("cuda"):
        yield
    elif precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        with torch.autocast("cuda", dtype=dtype):
            yield
    else:
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def flow_precision(device: str, requested: str) -> str:
    """UniMatch's precision, chosen once: float32 on CPU; on CUDA what was asked, with `auto` = fp32
    (lower precisions are offered, and measured by bench/gpu_check.py, but never chosen silently)."""
    if not device.startswith("cuda"):
        return "fp32"
    return "fp32" if requested == "auto" else requested


# Python's type of each declared column type's values (a list type: a list of them), for `value_rows`.
_PYTHON_TYPES: dict[str, Callable[[Any], Any]] = {"DOUBLE": float, "INTEGER": int, "BOOLEAN": bool, "VARCHAR": str}


def _as_declared(value: Any, column_type: str) -> Any:
    if value is None:
        return None
    if column_type.endswith("[]"):
        return [_as_declared(v, column_type.removesuffix("[]")) for v in value]
    return _PYTHON_TYPES[column_type](value)


class ScoreJob:
    """What every scoring job shares: settings, options, the resolved device, engine statistics.

    A job computes one per-clip table (a declared `Table` with a `job`, vidscore_core/scores.py):
    `part()` is what the shared decoding pass runs for it (`shared_decode.run_parts`), `rows()` turns
    its results into table rows (`value_rows`), stamped with lineage by `stamp`.
    """

    table: str

    def __init__(self, settings: Settings, options: JobOptions) -> None:
        self.settings = settings
        self.options = options
        self.device = resolve_device(options.device if options.device != "auto" else settings.device)
        self.stats = EngineStats()

    def part(self) -> ScorePart:
        raise NotImplementedError

    def rows(self, results: Sequence[ItemResult], batch: str) -> pd.DataFrame:
        raise NotImplementedError

    def value_rows(
        self,
        results: Sequence[ItemResult],
        values: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        **fixed: Any,
    ) -> list[dict]:
        """One row per clip: `video_id`, the table's declared columns, `fixed` (e.g. the backend), `error`.

        A scored clip's column is `values(result.values)[column]` where `values` gives it (a value computed
        or renamed), else `result.values[column]`, cast to its declared type (numpy scalars become Python
        numbers); a clip with an error has None in each."""
        declared = [(name, kind) for name, kind in scores.get(self.table).columns if name not in fixed]
        rows = []
        for r in results:
            cells = dict.fromkeys((name for name, _ in declared), None)
            if not r.error:
                given = values(r.values) if values else {}
                for name, kind in declared:
                    cells[name] = _as_declared(given[name] if name in given else r.values[name], kind)
            rows.append({"video_id": r.clip.video_id, **cells, **fixed, "error": r.error})
        return rows

    def stamp(
        self, rows: list[dict], batch: str, *, model: str, shas: dict[str, str], params: dict, table: str | None = None
    ) -> pd.DataFrame:
        """Rows of `table` (default: the job's) with the lineage columns: this run, the declaration's code
        version, the weights' hashes."""
        table = table or self.table
        declared = scores.EMBEDDINGS if table == scores.EMBEDDINGS.table else scores.get(table)
        return with_lineage(rows, batch=batch, model=model, shas=shas, params=params, run_id=self.options.run_id,
                            code_version=lineage.code_version(*declared.code))  # fmt: skip

    def _run_alone(self, part: ScorePart, clips: Sequence[Item]) -> list[ItemResult]:
        return run_job_parts([part], clips, self.options, self.device, self.stats)[part.name]


def run_job_parts(
    parts: Sequence[ScorePart], clips: Sequence[Item], options: JobOptions, device: str, stats: EngineStats
) -> dict[str, list[ItemResult]]:
    """`run_parts` with a job's options: one decode per clip serves every part."""
    return run_parts(
        parts,
        clips,
        device=device,
        batch_size=options.batch_size,
        num_workers=options.num_workers,
        frame_timeout_s=options.decode_timeout_s,
        progress=options.progress,
        stats=stats,
    )


class ClipJob(ScoreJob):
    """CLIP image embeddings (of the frames at `points`) and the scores derived from them, with models
    loaded once, lazily."""

    def __init__(
        self, settings: Settings, options: JobOptions, points: tuple[float, ...] = AESTHETIC_POINTS
    ) -> None:
        super().__init__(settings, options)
        self.points = tuple(points)

    @cached_property
    def clip_path(self):
        return weights.require("clip", self.settings)

    @cached_property
    def clip(self):
        from vidscore_core.models.clip import load_clip

        # The reference keeps CLIP in float16 on CUDA (clip.load does not call .float() there).
        precision = self.options.precision
        dtype = torch.float32
        if self.device.startswith("cuda") and precision in ("auto", "fp16"):
            dtype = torch.float16
        elif self.device.startswith("cuda") and precision == "bf16":
            dtype = torch.bfloat16
        return load_clip(self.clip_path, device=self.device, dtype=dtype)

    @cached_property
    def mlp(self):
        from vidscore_core.models.aesthetic import load_aesthetic

        path = weights.require("aesthetic", self.settings)
        return load_aesthetic(path, device=self.device, expected_dim=self.clip.embed_dim), path

    table = "clip_embeddings"

    def part(self, points: tuple[float, ...] | None = None) -> ScorePart:
        """The image tower once per frame at `points` (default: the job's); fp16/bf16 are the weights'
        dtype (above), tf32 is float32 weights with TF32 matmuls."""
        points = self.points if points is None else points
        scorer = ClipImageScorer(self.clip, ClipFrameSampler(points=points, image_size=self.clip.image_size))
        precision = "tf32" if self.options.precision == "tf32" else "fp32"
        return ScorePart(self.table, scorer, lambda: _autocast(self.device, precision))

    def embed(
        self, clips: Sequence[Item], points: tuple[float, ...] = AESTHETIC_POINTS
    ) -> list[FrameEmbeddings]:
        """Decode each clip's frames at `points` and run the image tower once per frame."""
        return [to_frame_embeddings(r) for r in self._run_alone(self.part(points), clips)]

    def rows(self, results: Sequence[ItemResult], batch: str) -> pd.DataFrame:
        return self.embedding_rows([to_frame_embeddings(r) for r in results], batch, points=self.points)

    def _shas(self, *names: str) -> dict[str, str]:
        paths = {"clip": self.clip_path}
        if "aesthetic" in names:
            paths["aesthetic"] = self.mlp[1]
        return {name: lineage.file_sha256(path) for name, path in paths.items() if name in names}

    def _params(self, points: Sequence[float]) -> dict:
        return {
            "points": list(points),
            "resolution": self.clip.image_size,
            "preprocess": "pil-bicubic-centercrop",
            "device": self.device,
            "precision": str(self.clip.dtype).removeprefix("torch.") if hasattr(self.clip, "dtype") else None,
        }

    def embedding_rows(
        self, items: Sequence[FrameEmbeddings], batch: str, points=AESTHETIC_POINTS
    ) -> pd.DataFrame:
        rows: list[dict] = []
        for it in items:
            if it.embeddings is None:
                rows.append(
                    {
                        "video_id": it.video_id,
                        "frame_index": None,
                        "frame_point": None,
                        "embedding": None,
                        "num_frames": it.num_frames,
                        "error": it.error,
                    }
                )
                continue
            for idx, point, emb in zip(it.frame_indices, it.frame_points, it.embeddings, strict=True):
                rows.append(
                    {
                        "video_id": it.video_id,
                        "frame_index": idx,
                        "frame_point": point,
                        "embedding": emb.astype(np.float32).tolist(),
                        "num_frames": it.num_frames,
                        "error": None,
                    }
                )
        return self.stamp(rows, batch, model=f"clip:{self.clip_path.name}", shas=self._shas("clip"),
                          params=self._params(points))  # fmt: skip

    def aesthetic_rows(
        self, items: Sequence[FrameEmbeddings], batch: str, points=AESTHETIC_POINTS
    ) -> pd.DataFrame:
        mlp, mlp_path = self.mlp
        rows = aesthetic_values(items, mlp, device=self.device)
        return self.stamp(rows, batch, model=f"clip:{self.clip_path.name}+aesthetic:{mlp_path.name}",
                          shas=self._shas("clip", "aesthetic"), params=self._params(points),
                          table=scores.AESTHETIC.table)  # fmt: skip

    def matching_rows(
        self,
        items: Sequence[FrameEmbeddings],
        texts: Sequence[str | None],
        batch: str,
        meta_rows: Sequence[int] | None = None,
    ) -> pd.DataFrame:
        """One row per (clip, caption): `items[i]` matched with `texts[i]`, keyed by `meta_rows[i]`."""
        rows = matching_values(items, texts, self.clip)
        if meta_rows is not None:
            rows = [
                {**row, "meta_row": int(m), "text": t if isinstance(t, str) else None}
                for row, m, t in zip(rows, meta_rows, texts, strict=True)
            ]
        params = {**self._params([0.5]), "logit_scale_exp": self.clip.logit_scale_exp, "context_length": 77}
        return self.stamp(rows, batch, model=f"clip:{self.clip_path.name}", shas=self._shas("clip"), params=params,
                          table=scores.MATCHING.table)  # fmt: skip


def clip_embeddings_job(
    settings: Settings, options: JobOptions, points: tuple[float, ...] = AESTHETIC_POINTS
) -> ClipJob:
    """The job of `clip_embeddings`: CLIP frames at `points` (the platform's table: the aesthetic
    points, which include matching's)."""
    return ClipJob(settings, options, points)


def flow_job(settings: Settings, options: JobOptions, used_by: Sequence[str] = ()) -> FlowJob:
    """The job of `flow_scores`, with the backend its declared option chooses; it also computes object
    motion when camera motion, which reads it, is among the tables `used_by` its part in this pass."""
    object_motion = scores.CAMERA_MOTION.table in used_by
    return FlowJob(settings, options, options.option(scores.FLOW.name, "backend"), object_motion=object_motion)


def to_frame_embeddings(result: ItemResult) -> FrameEmbeddings:
    if result.error:
        return FrameEmbeddings(result.clip.video_id, None, error=result.error)
    v = result.values
    return FrameEmbeddings(
        video_id=result.clip.video_id,
        embeddings=v["embeddings"],
        frame_indices=list(v["indices"]),
        frame_points=list(v["points"]),
        num_frames=v["num_frames"],
    )


def frame_embeddings_from_rows(rows: pd.DataFrame, video_ids: Sequence[str]) -> list[FrameEmbeddings]:
    """Rebuild per-clip embeddings from `clip_embeddings` table rows, in the order of `video_ids`."""
    by_video: dict[str, FrameEmbeddings] = {}
    for vid, group in rows.groupby("video_id", sort=False):
        group = group.sort_values("frame_point", na_position="first")
        ok = group[group["embedding"].notna()]
        if ok.empty:
            errors = group["error"].dropna()
            by_video[vid] = FrameEmbeddings(
                vid, None, error=errors.iloc[0] if len(errors) else "no embedding"
            )
            continue
        by_video[vid] = FrameEmbeddings(
            video_id=vid,
            embeddings=np.stack([np.asarray(e, dtype=np.float32) for e in ok["embedding"]]),
            frame_indices=[int(i) for i in ok["frame_index"]],
            frame_points=[float(p) for p in ok["frame_point"]],
            num_frames=int(ok["num_frames"].iloc[0]) if pd.notna(ok["num_frames"].iloc[0]) else None,
        )
    return [
        by_video.get(v) or FrameEmbeddings(v, None, error="no embedding row for this clip") for v in video_ids
    ]


# UniMatch's activations on CPU take about 330 MB per frame pair at 320×576 (a clip is 3 pairs, all in
# one forward; measured: peak RSS 4.1 GB for 3 clips in one batch, 2.1 GB one clip at a time): a batch
# of 16 clips would hold ~16 GB. A CPU forward is compute-bound, so bigger batches gain little; each
# forward takes at most this many clips, which bounds the memory and lets progress move per clip.
CPU_UNIMATCH_CLIPS_PER_BATCH = 1


class FlowJob(ScoreJob):
    """Flow scores with UniMatch (weights) or OpenCV DIS (no weights); with `object_motion`, each clip's
    values also carry its object motion (for camera motion's rows, from the same flow fields)."""

    def __init__(
        self, settings: Settings, options: JobOptions, backend: str = "unimatch", *, object_motion: bool = False
    ) -> None:
        super().__init__(settings, options)
        self.backend = backend
        self.object_motion = object_motion

    table = "flow_scores"

    def max_clips(self) -> int | None:
        """Clips per UniMatch forward: bounded on CPU (see CPU_UNIMATCH_CLIPS_PER_BATCH)."""
        return CPU_UNIMATCH_CLIPS_PER_BATCH if self.backend == "unimatch" and not self.device.startswith("cuda") else None

    @cached_property
    def weights_path(self):
        return weights.require("unimatch", self.settings) if self.backend == "unimatch" else None

    def precision(self) -> str:
        return flow_precision(self.device, self.options.precision)

    @cached_property
    def scorer(self):
        from vidscore_core.scoring.flow_frames import FlowScorer

        model = None
        if self.backend == "unimatch":
            from vidscore_core.models.flow import UniMatchFlow
            from vidscore_core.models.unimatch import load_unimatch

            model = UniMatchFlow(load_unimatch(self.weights_path, device=self.device))
        return FlowScorer(self.backend, model, object_motion=self.object_motion)

    def part(self) -> ScorePart:
        precision = self.precision()
        return ScorePart(self.table, self.scorer, lambda: _autocast(self.device, precision), self.max_clips())

    def model_name(self) -> str:
        """The `model` lineage of rows computed from this job's flow fields."""
        return f"unimatch:{self.weights_path.name}" if self.weights_path else "opencv-dis:medium"

    def weights_shas(self) -> dict[str, str]:
        return {"unimatch": lineage.file_sha256(self.weights_path)} if self.weights_path else {}

    def rows(self, results: Sequence[ItemResult], batch: str) -> pd.DataFrame:
        params = {
            "frame_indices": [0, 10, 20, 30],
            "resolution": [320, 576],
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision(),
        }
        if self.backend == "unimatch":
            params.update(
                attn_type="swin",
                attn_splits=[2, 8],
                corr_radius=[-1, 4],
                prop_radius=[-1, 1],
                num_reg_refine=6,
            )
        rows = self.value_rows(results, lambda v: {"frame_indices": v["indices"]}, backend=self.backend)
        return self.stamp(rows, batch, model=self.model_name(), shas=self.weights_shas(), params=params)
