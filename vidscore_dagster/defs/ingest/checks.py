"""Checks on `videos`: every manifest row present, ids unique, few unreadable files."""

from vidscore_dagster.defs.checks import standard_checks

videos_checks = standard_checks("videos", upstream="the ingested manifest", max_error_ratio=0.1)
