"""A model output that is not a finite number (NaN, ±inf) is an error, never a score.

NaN weights, or an fp16 overflow, make a model return NaN or inf. Stored as it is, NaN reads back as
NULL with no `error`: counted as scored, filtered as missing, never retried. Every row of a score
table (and of `clip_embeddings`) passes through `non_finite_as_errors` before its lineage is stamped
(`score_jobs.with_lineage`), so one check covers every score, whichever path computed it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np

# The start of the row error (the backfill schedule's retryable pattern matches it: a model that gave
# NaN once may have hit a transient fault; one that gives it again is reported, not retried forever).
NON_FINITE = "non-finite model output"


def _is_non_finite(value: Any) -> bool:
    if isinstance(value, (float, np.floating)):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple, np.ndarray)) and len(value):
        array = np.asarray(value)
        return array.dtype.kind in "fc" and not bool(np.isfinite(array).all())
    return False


def _is_float_valued(value: Any) -> bool:
    if isinstance(value, (float, np.floating)):
        return True
    if isinstance(value, (list, tuple, np.ndarray)) and len(value):
        return np.asarray(value).dtype.kind in "fc"
    return False


def _key(row: dict[str, Any]) -> Hashable:
    """The unit that is scored: a clip (all its frame rows), or one caption of it (`meta_row`)."""
    return row.get("video_id"), row.get("meta_row")


def non_finite_as_errors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` with every unit holding a NaN/inf value turned into an error: its float values (the
    score and its details) become NULL and `error` names the columns that were not finite."""
    bad: dict[Hashable, list[str]] = {}
    for row in rows:
        columns = [name for name, value in row.items() if _is_non_finite(value)]
        if columns:
            found = bad.setdefault(_key(row), [])
            found.extend(c for c in columns if c not in found)
    if not bad:
        return rows
    out = []
    for row in rows:
        columns = bad.get(_key(row))
        if columns is None:
            out.append(row)
            continue
        cleared = {name: None if _is_float_valued(value) else value for name, value in row.items()}
        cleared["error"] = f"{NON_FINITE} (NaN or inf) in {', '.join(columns)}"
        out.append(cleared)
    return out
