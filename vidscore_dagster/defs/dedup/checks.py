"""Checks on `near_duplicates`: one row per embedded clip, one clip kept per group."""

import dagster as dg

from vidscore_core.curation.near_duplicates import middle_frame_clips
from vidscore_dagster.defs.resources import VidscoreSettings


@dg.asset_check(asset="near_duplicates", blocking=True,
                description="Every readable clip with a 50 % frame embedding has exactly one row.")  # fmt: skip
def near_duplicates_one_row_per_clip(vidscore: VidscoreSettings) -> dg.AssetCheckResult:
    store = vidscore.store()
    rows = store.read("near_duplicates", columns=["video_id"])["video_id"]
    expected = set(middle_frame_clips(store)["video_id"])
    doubled = int(rows.duplicated().sum())
    missing, extra = expected - set(rows), set(rows) - expected
    return dg.AssetCheckResult(
        passed=not (doubled or missing or extra),
        metadata={"rows": len(rows), "expected": len(expected), "doubled": doubled,
                  "missing": len(missing), "extra": len(extra)},
    )  # fmt: skip


@dg.asset_check(asset="near_duplicates", blocking=True,
                description="Each group has exactly one clip marked keep.")  # fmt: skip
def near_duplicates_one_keep_per_group(vidscore: VidscoreSettings) -> dg.AssetCheckResult:
    bad = vidscore.store().query_df(
        "SELECT group_id, count(*) FILTER (WHERE keep) AS kept FROM near_duplicates GROUP BY group_id HAVING kept <> 1"
    )
    return dg.AssetCheckResult(passed=bad.empty, metadata={"groups_with_wrong_keep": len(bad)})


dedup_checks = [near_duplicates_one_row_per_clip, near_duplicates_one_keep_per_group]
