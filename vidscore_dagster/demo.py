"""`vidscore demo`: the whole job on a sample corpus it makes itself, with no network."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import click

from vidscore_core import scores, weights
from vidscore_core.settings import Settings

SUMMARY_SQL = """
SELECT v.path_original AS path, v.media_type, v.num_frames AS frames,
       round(s.aes, 3) AS aes, round(s.flow, 2) AS flow, round(s."match", 3) AS "match",
       coalesce(v.error, s.aes_error, s.flow_error, s.match_error) AS error
FROM videos v LEFT JOIN video_scores s USING (video_id, batch)
WHERE v.batch IN (SELECT unnest(?::VARCHAR[]))
ORDER BY v.meta_row
"""


def readable(df):
    """One empty marker for every missing value (pandas mixes NaN, None and <NA>)."""
    return df.astype(object).where(df.notna(), "–")


@contextmanager
def stderr_to(path: Path):
    """Send this process's file descriptor 2 (what C libraries write to) to `path` for a while."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run_demo(settings: Settings, folder: Path | None = None) -> int:
    """Returns the process exit code."""
    from vidscore_core.media.synth import make_demo_corpus
    from vidscore_core.tables.store import TableStore
    from vidscore_core.tables.views import ViewsNotWritten, write_views
    from vidscore_dagster.defs.automation.jobs import runnable_assets
    from vidscore_dagster.defs.resources import default_resources
    from vidscore_dagster.runner import ingest_meta_file, instance_for, materialize_batches

    folder = Path(folder or settings.home / "demo")
    click.secho(f"1. making a sample corpus in {folder}", bold=True)
    meta = make_demo_corpus(folder)

    click.secho("2. ingesting it into Dagster partitions (a `meta_files` run)", bold=True)
    instance = instance_for(settings)
    keys, reason = ingest_meta_file(instance, meta, 5000, scored_by_caller=True)
    if reason:
        click.secho(f"   FAILED: {reason}", fg="red")
        return 1
    try:
        write_views(settings)
    except ViewsNotWritten as exc:
        click.echo(f"   note: {exc}")

    click.secho("3. model weights", bold=True)
    for row in weights.status(settings, compute_sha256=False):
        state = "present" if row["present"] else f"missing: fetch with `vidscore weights download {row['name']}`"
        click.echo(f"   {row['name']:10s} {row['path']}  ({state})")
    # A score whose model files are missing runs with a choice that needs none where it has one
    # (flow: the OpenCV DIS backend); the others are skipped.
    defaults = scores.resolve_options()
    score_options = scores.weight_free_options(settings, defaults)
    for name, values in score_options.items():
        for option, value in values.items():
            if value != defaults[name][option]:
                click.echo(f"   {name}: model files absent, scored with the weight-free {option} {value}.")
    for skipped in scores.available(settings, score_options).skipped:
        click.echo(f"   {skipped.score}: skipped (model files absent)")
    names = runnable_assets(settings, score_options)

    resources = default_resources(score_options=score_options)
    click.secho(f"4. materializing {', '.join(names)} through Dagster", bold=True)
    started = time.perf_counter()

    def report(key: str, ok: bool, reason: str) -> None:
        if not ok:
            click.secho(f"   {key} FAILED: {reason}", fg="red")

    decoder_log = settings.home / "demo-decoders.log"
    with stderr_to(decoder_log):  # the broken demo files make FFmpeg and decord complain on stderr
        outcome = materialize_batches(
            instance, keys, names, resources=resources, on_batch=report
        )
    ok = all(outcome.values())
    click.echo(f"   {'succeeded' if ok else 'FAILED'} in {time.perf_counter() - started:.1f}s")
    click.echo(f"   (decoder messages about the two deliberately broken files: {decoder_log})")

    click.secho("5. results (DuckDB over the Parquet tables)", bold=True)
    df = TableStore.from_settings(settings).query_df(SUMMARY_SQL, [keys])
    errors = df.pop("error")
    click.echo(readable(df).to_string(index=False))
    for path, error in zip(df["path"], errors, strict=True):
        if isinstance(error, str):
            click.echo(f"   {path}: {error}")

    click.secho("\nNext steps", bold=True)
    click.echo(
        f'   SQL:     vidscore sql "SELECT * FROM video_scores LIMIT 10"   (database {settings.db_path})'
    )
    click.echo(
        f"   UI:      vidscore ui     (or DAGSTER_HOME={settings.dagster_home.resolve()} dagster dev -w workspace.yaml)"
    )
    click.echo("            the inbox sensor and the automation already run there: drop meta files in "
               f"{settings.inbox_dir}; start the backfill schedule under Automation when you want re-scoring.")  # fmt: skip
    click.echo("   report:  vidscore report --open   (distributions, what thresholds keep, contact sheets)")
    click.echo("   weights: vidscore weights status / vidscore weights download")
    return 0 if ok else 1
