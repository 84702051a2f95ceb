"""Checks on `filtered_videos`: thresholds hold, kept rows exist in `videos`, something was kept."""

import json

import dagster as dg

from vidscore_core.curation.filters import FilterSpec
from vidscore_dagster.defs.resources import VidscoreSettings


def _presets(store) -> list[tuple[str, FilterSpec]]:
    df = store.query_df("SELECT DISTINCT preset, filter_spec FROM filtered_videos")
    return [(p, FilterSpec(**json.loads(s))) for p, s in zip(df["preset"], df["filter_spec"], strict=True)]


@dg.asset_check(asset="filtered_videos", blocking=True,
                description="Every kept row satisfies its preset's thresholds, limits and dedup (re-checked in SQL).")  # fmt: skip
def filtered_videos_meet_thresholds(vidscore: VidscoreSettings) -> dg.AssetCheckResult:
    store = vidscore.store()
    violations = {}
    for preset, spec in _presets(store):
        predicate, params = spec.sql("f.")
        if spec.dedup:  # a kept clip must be its group's keep (or have no group)
            predicate = f"({predicate}) AND coalesce(n.keep, TRUE)"
        bad = store.query_df(
            "SELECT count(*) AS n FROM filtered_videos f JOIN videos v USING (video_id, batch) "
            "LEFT JOIN near_duplicates n USING (video_id, batch) "
            f"WHERE f.preset = ? AND NOT coalesce({predicate}, FALSE)",
            [preset, *params],
        )["n"].iloc[0]
        violations[preset] = int(bad)
    return dg.AssetCheckResult(passed=not any(violations.values()), metadata={"violations": violations})


@dg.asset_check(asset="filtered_videos", blocking=True,
                description="Kept rows are a subset of `videos` (same id, batch and path).")  # fmt: skip
def filtered_videos_subset_of_videos(vidscore: VidscoreSettings) -> dg.AssetCheckResult:
    orphans = (
        vidscore.store()
        .query_df(
            "SELECT count(*) AS n FROM filtered_videos f ANTI JOIN videos v USING (video_id, batch, path)"
        )["n"]
        .iloc[0]
    )
    return dg.AssetCheckResult(passed=int(orphans) == 0, metadata={"orphans": int(orphans)})


@dg.asset_check(asset="filtered_videos",
                description="Each preset keeps at least one clip (warning).")  # fmt: skip
def filtered_videos_not_empty(vidscore: VidscoreSettings) -> dg.AssetCheckResult:
    counts = vidscore.store().query_df(
        "SELECT preset, count(video_id) AS n FROM filtered_videos GROUP BY preset"
    )
    kept = {str(p): int(n) for p, n in zip(counts["preset"], counts["n"], strict=True)}
    return dg.AssetCheckResult(
        passed=bool(kept) and all(kept.values()), severity=dg.AssetCheckSeverity.WARN, metadata={"kept": kept}
    )


filtering_checks = [
    filtered_videos_meet_thresholds,
    filtered_videos_subset_of_videos,
    filtered_videos_not_empty,
]
