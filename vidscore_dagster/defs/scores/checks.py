"""Checks on the score tables: the standard ones, and each registered score's value checks."""

import dagster as dg

from vidscore_core.scores import EMBEDDINGS, SCORES, Score, load
from vidscore_dagster.defs.checks import standard_checks, value_check


def _loaded_when_run(path: str):
    """The check's parameter function, imported when the check runs: it may live in a model module
    (torch, OpenCV) that the definitions, loaded by every process, must not import."""
    return lambda *args: load(path)(*args)


def checks_of(score: Score) -> list[dg.AssetChecksDefinition]:
    return [
        *standard_checks(score.table, upstream="videos", unique_by=("video_id", "meta_row") if score.per_row else ("video_id",)),
        *(value_check(score.table, f"{score.table}_{c.name}", c.predicate, c.description, blocking=c.blocking,
                      params_fn=_loaded_when_run(c.params) if c.params else None) for c in score.checks),
    ]  # fmt: skip


score_checks: list[dg.AssetChecksDefinition] = [
    *standard_checks(EMBEDDINGS.table, upstream="videos", unique_by=("video_id", "frame_point")),
    *(check for score in SCORES for check in checks_of(score)),
]
