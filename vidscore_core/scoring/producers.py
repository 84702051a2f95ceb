"""Producers of the registered scores (vidscore_core.scores): one batch's rows from its inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from vidscore_core.scoring.options import JobOptions
from vidscore_core.settings import Settings


@dataclass
class ScoreInputs:
    """What any producer may use for one batch."""

    batch: str
    # The batch's `videos` rows (video_id, path, text, error, media_type, meta_row), meta order; for a
    # score declared `per_row`, one row per meta row (a clip listed with N captions: N rows).
    videos: pd.DataFrame
    settings: Settings
    options: JobOptions
    embedding_rows: pd.DataFrame | None = None  # the batch's `clip_embeddings` rows, for derived scores
    log: Callable[[str], None] | None = None

    def frame_embeddings(self) -> list:
        from vidscore_core.scoring.score_jobs import frame_embeddings_from_rows

        if self.embedding_rows is None:
            raise ValueError(f"batch {self.batch!r}: this score derives from clip_embeddings, none given")
        return frame_embeddings_from_rows(self.embedding_rows, list(self.videos["video_id"]))


def _clip_job(inputs: ScoreInputs):
    from vidscore_core.scoring.score_jobs import ClipJob

    return ClipJob(inputs.settings, inputs.options)


def aesthetic_rows(inputs: ScoreInputs) -> pd.DataFrame:
    return _clip_job(inputs).aesthetic_rows(inputs.frame_embeddings(), inputs.batch)


def matching_rows(inputs: ScoreInputs) -> pd.DataFrame:
    videos = inputs.videos
    return _clip_job(inputs).matching_rows(
        inputs.frame_embeddings(), list(videos["text"]), inputs.batch, list(videos["meta_row"])
    )


def logit_scale_bound(settings: Settings) -> list[float]:
    """exp(logit_scale) of the CLIP checkpoint in use: |match| can never exceed it."""
    from vidscore_core import weights
    from vidscore_core.models.clip import load_clip

    return [load_clip(weights.require("clip", settings)).logit_scale_exp * (1 + 1e-6)]
