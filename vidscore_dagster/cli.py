"""The `vidscore` command line: Open-Sora compatible scoring of CSV files, plus the platform's commands."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path

import click

from vidscore_core import scores
from vidscore_core.settings import Settings


class FiniteFloat(click.FloatRange):
    """A number option that must be finite (click's float takes nan and inf), within an optional range."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


BATCH_SIZE = click.IntRange(min=1)
COUNT = click.IntRange(min=0)
SECONDS = FiniteFloat(min=0, min_open=True)


def _settings() -> Settings:
    return Settings.from_env()


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip()) or "failed"


def _fail(message: str, code: int = 1) -> None:
    """Report a user-facing error as one `error: …` line on stderr and exit non-zero (URLs in it
    without their query string or user:password@: a presigned URL's signature is never printed)."""
    from vidscore_core.media.object_stores import redact

    click.secho(f"error: {redact(_one_line(message))}", fg="red", err=True)
    sys.exit(code)


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is written for the user: shown as they are, without a type name."""
    from vidscore_core.ingest.meta import MetaError
    from vidscore_core.weights import WeightsDownloadError, WeightsMissingError

    return (MetaError, WeightsMissingError, WeightsDownloadError)


class _Cli(click.Group):
    """The `vidscore` group: every error ends as one `error: …` line on stderr, never a traceback.

    Usage errors (unknown command or choice, bad option value) exit 2, other errors 1.
    `VIDSCORE_DEBUG=1` lets unexpected exceptions through with their traceback.
    """

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        _raise_on_sigterm()
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            _fail(exc.format_message() + hint, exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort as exc:  # click turns KeyboardInterrupt (Ctrl-C, and SIGTERM here) into Abort
            if isinstance(exc.__cause__, Terminated):
                _fail("terminated (SIGTERM); partial files were removed", 128 + signal.SIGTERM)
            if isinstance(exc.__cause__, KeyboardInterrupt):
                _fail("interrupted; partial files were removed", 128 + signal.SIGINT)
            _fail("aborted", 1)
        except Exception as exc:
            if os.environ.get("VIDSCORE_DEBUG"):
                raise
            if isinstance(exc, _user_error_types()):
                _fail(str(exc))
            _fail(f"{type(exc).__name__}: {exc} (unexpected; rerun with VIDSCORE_DEBUG=1 for the traceback)")
        # Non-standalone click returns the exit code of an explicit ctx.exit()/--help, else the result.
        sys.exit(result if isinstance(result, int) else 0)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `finally` and cleanup runs (partial downloads and outputs)."""


def _raise_on_sigterm() -> None:
    def handler(signum, frame) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vidscore", prog_name="vidscore", message="%(prog)s %(version)s")
def main() -> None:
    """vidscore: score video clips (aesthetic, motion, text matching) and filter them, on Dagster + DuckDB."""


# -- score / filter (Open-Sora compatible) -------------------------------------------------------


overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Allow --output to be the meta file itself (it is replaced)."
)


def score_option_flags(command):
    """One `--<option>` (alias `--<score>-<option>`) per option the score registry declares (--backend)."""
    for score in reversed(scores.SCORES):
        for option in reversed(score.options):
            command = click.option(
                f"--{option.name}", f"--{score.name}-{option.name}", f"{score.name}__{option.name}",
                type=click.Choice(option.choices), default=None,
                help=f"{score.name}: {option.help} Default: ${option.env_var(score.name)}, else {option.default}.",
            )(command)  # fmt: skip
    return command


@main.command()
@click.argument("task", metavar="SCORE", type=click.Choice(["all", *scores.BY_NAME]))
@click.argument("meta")
@click.option("--output", type=click.Path(path_type=Path),
              help="Output file (default META_<score>.csv; META_scores.csv for `all`).")  # fmt: skip
@click.option("--bs", "batch_size", type=BATCH_SIZE, default=16, show_default=True, help="Clips per model batch.")
@click.option("--num-workers", type=COUNT, default=2, show_default=True,
              help="Decoding worker processes (0: decode in this process).")  # fmt: skip
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: $VIDSCORE_DEVICE or auto).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "tf32", "bf16", "fp16"]), default="auto",
              show_default=True, help="Model precision on CUDA (CPU always runs float32).")  # fmt: skip
@click.option("--decode-timeout", type=SECONDS, default=60.0, show_default=True, help="Seconds per clip.")
@overwrite_option
@score_option_flags
def score(task, meta, output, batch_size, num_workers, device, precision, decode_timeout, overwrite,
          **chosen) -> None:  # fmt: skip
    """Score META (CSV or Parquet) and write META_aes.csv / META_flow.csv / META_match.csv.

    SCORE is one of the registered scores or all. `all` computes every score the installed weights
    allow into one file, META_scores.csv (each score's column with <column>_error), and says which it
    skipped and why; flow uses the weight-free DIS backend only with --backend dis.
    """
    from vidscore_core.csv_commands.score_csv import score_file
    from vidscore_core.ingest.meta import MetaError
    from vidscore_core.scoring.options import JobOptions
    from vidscore_core.weights import WeightsMissingError

    settings = _settings()
    score_options: dict[str, dict[str, str]] = {}
    for key, value in chosen.items():
        if value is not None:
            name, _, option = key.partition("__")
            score_options.setdefault(name, {})[option] = value
    try:
        options = JobOptions(device=device or settings.device, batch_size=batch_size, num_workers=num_workers,
                             decode_timeout_s=decode_timeout, precision=precision, score_options=score_options)  # fmt: skip
        with _decoder_log(settings) as log:
            result = score_file(task, meta, settings, options, output=output, progress=_progress_bar,
                                overwrite=overwrite)  # fmt: skip
    except (MetaError, WeightsMissingError, ValueError) as exc:
        _fail(str(exc))
    _name_decoder_log(log)
    if task != "all":
        click.echo(f"wrote {result.output}: {result.scored[task]}")
        return
    for name, summary in result.scored.items():
        click.echo(f"{name}: {summary}")
    for skipped in result.skipped:
        click.echo(f"{skipped.score}: skipped: {skipped.reason}")
    columns = ", ".join(scores.get(s).column for s in result.scored)
    click.echo(f"wrote {result.output}: {result.rows} rows with {columns}")


def _decoder_log(settings: Settings):
    """Decoder messages (FFmpeg, decord, decode workers) go to $VIDSCORE_HOME/logs/decoders.log."""
    from vidscore_dagster.terminal import decoder_messages_to

    return decoder_messages_to(settings.home / "logs" / "decoders.log")


def _name_decoder_log(log) -> None:
    if log.written():
        click.echo(f"decoder messages: {log.path}")


def score_bound_options(command):
    """One `--<flag>` option per bound the score registry declares (--aesmin, --flowmin, …)."""
    for flag, column, op in reversed(scores.FILTER_BOUNDS):
        command = click.option(f"--{flag}", type=FiniteFloat(), help=f"Keep rows with {column} {op} this.")(command)
    return command


@main.command(name="filter")
@click.argument("meta")
@score_bound_options
@click.option("--fmin", type=COUNT, help="Keep clips with at least this many frames.")
@click.option("--fmax", type=COUNT, help="Keep clips with at most this many frames.")
@click.option("--fpsmax", type=FiniteFloat(min=0), help="Keep clips with fps <= this.")
@click.option("--hwmax", type=COUNT, help="Keep clips with height x width <= this many pixels.")
@click.option("--aspect-min", type=FiniteFloat(min=0), help="Keep clips with aspect ratio (height / width) >= this.")
@click.option("--aspect-max", type=FiniteFloat(min=0), help="Keep clips with aspect ratio (height / width) <= this.")
@click.option("--duration-min", type=FiniteFloat(min=0), help="Keep clips lasting at least this many seconds.")
@click.option("--duration-max", type=FiniteFloat(min=0), help="Keep clips lasting at most this many seconds.")
@click.option("--dedup", is_flag=True, help="Keep only rows marked dup_keep by `vidscore dedup`.")
@click.option("--probe-workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Worker processes probing files whose metadata the meta file lacks.")  # fmt: skip
@click.option(
    "--output", type=click.Path(path_type=Path), help="Output file (default: named like Open-Sora's)."
)
@overwrite_option
def filter_cmd(meta, fmin, fmax, fpsmax, hwmax, aspect_min, aspect_max, duration_min, duration_max, dedup,
               probe_workers, output, overwrite, **bounds) -> None:  # fmt: skip
    """Keep the rows of META that pass the thresholds (rows without the score are dropped).

    Technical limits (frames, fps, height x width, aspect ratio, duration) read the meta's num_frames,
    fps, height, width and duration_s (or duration) columns, and probe the file for rows that lack
    them; a file that cannot be read fails them. --dedup keeps the rows `vidscore dedup` marked
    dup_keep.
    """
    from vidscore_core.curation.filters import BOUNDS, FilterSpec, filter_meta_file

    ctx = click.get_current_context()
    try:
        spec = FilterSpec(**bounds, fmin=fmin, fmax=fmax, fpsmax=fpsmax, hwmax=hwmax, aspect_min=aspect_min,
                          aspect_max=aspect_max, duration_min=duration_min, duration_max=duration_max,
                          dedup=dedup)  # fmt: skip
    except ValueError as exc:  # bounds no row could pass (a min above its max)
        raise click.UsageError(str(exc), ctx) from None
    if not spec.any_active():
        flags = ", ".join(f"--{flag}" for flag, _, _ in BOUNDS)
        raise click.UsageError(f"give at least one of {flags}, a technical limit or --dedup", ctx)
    settings = _settings()
    try:
        with _decoder_log(settings) as log:
            out, kept, total = filter_meta_file(meta, spec, output=output, probe_workers=probe_workers,
                                                notify=click.echo, overwrite=overwrite)  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:  # MetaError is a ValueError
        _fail(str(exc))
    _name_decoder_log(log)
    click.echo(f"wrote {out}: kept {kept} of {total} rows")


@main.command()
@click.argument("meta")
@click.option("--threshold", type=FiniteFloat(-1, 1), default=0.98, show_default=True,
              help="Cosine of the 50% frame CLIP embeddings at or above which two clips are near-duplicates.")  # fmt: skip
@click.option("--any-resolution", is_flag=True,
              help="Also group clips of different resolutions (default: equal width x height only, as Open-Sora).")  # fmt: skip
@click.option("--output", type=click.Path(path_type=Path), help="Output file (default META_dedup.csv).")
@click.option("--bs", "batch_size", type=BATCH_SIZE, default=16, show_default=True, help="Clips per model batch.")
@click.option("--num-workers", type=COUNT, default=2, show_default=True,
              help="Decoding worker processes (0: decode in this process).")  # fmt: skip
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: $VIDSCORE_DEVICE or auto).")
@click.option("--decode-timeout", type=SECONDS, default=60.0, show_default=True, help="Seconds per clip.")
@overwrite_option
def dedup(meta, threshold, any_resolution, output, batch_size, num_workers, device, decode_timeout,
          overwrite) -> None:  # fmt: skip
    """Mark near-duplicate clips of META: writes META_dedup.csv with dup_group and dup_keep.

    Clips whose 50% frame CLIP embeddings have cosine >= --threshold (and, unless --any-resolution, the
    same resolution) form one group; dup_keep marks one clip per group (the highest aes when META has
    an aes column) and dup_group names that clip's path. Embeddings come from the platform's
    clip_embeddings table when it has every clip, else they are computed. A clip that cannot be read
    is kept with an empty dup_group. `vidscore filter META_dedup.csv --dedup` keeps one clip per group.
    """
    from vidscore_core import weights as w
    from vidscore_core.csv_commands.dedup_csv import check_threshold, dedup_meta_file
    from vidscore_core.ingest.meta import MetaError
    from vidscore_core.scoring.options import JobOptions

    settings = _settings()
    try:
        check_threshold(threshold)
        with _decoder_log(settings) as log, _progress_bar("dedup") as progress:
            options = JobOptions(device=device or settings.device, batch_size=batch_size, num_workers=num_workers,
                                 decode_timeout_s=decode_timeout, progress=progress)  # fmt: skip
            out, summary = dedup_meta_file(meta, settings, options, threshold=threshold,
                                           same_resolution=not any_resolution, output=output,
                                           overwrite=overwrite)  # fmt: skip
    except (MetaError, w.WeightsMissingError, ValueError) as exc:
        _fail(str(exc))
    _name_decoder_log(log)
    click.echo(f"wrote {out}: {summary.line()}")


# -- platform ------------------------------------------------------------------------------------


def _preset_help() -> str:
    from vidscore_core.curation.filtered_dataset import PRESETS

    named = "; ".join(f"{name}: {_describe_spec(spec)}" for name, spec in PRESETS.items())
    return (f"With --materialize: also build filtered_videos with this preset ({named}), or a name of your "
            "own given with bounds (--aesmin …, --dedup).")  # fmt: skip


def _describe_spec(spec) -> str:
    parts = [f"{col} {op} {value:g}" for _, col, op, value in spec.active()]
    parts += [f"{name} {value:g}" for name, _, _, value in spec.active_limits()]
    return ", ".join(parts + (["deduplicated"] if spec.dedup else []))


@main.command()
@click.argument("meta")
@click.option("--batch-size", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Rows per batch partition.")  # fmt: skip
@click.option("--materialize", is_flag=True, help="Also materialize the batches now (in this process).")
@click.option("--assets", default="auto", show_default=True,
              help="With --materialize: comma-separated assets (near_duplicates and filtered_videos included), "
              "or 'auto' (everything the weights allow).")  # fmt: skip
@click.option("--preset", default=None, help=_preset_help())
@score_bound_options
@click.option("--dedup", is_flag=True, default=None, help="With --preset: keep one clip per near-duplicate group.")
@click.pass_context
def ingest(ctx, meta, batch_size, materialize, assets, preset, dedup, **bounds) -> None:
    """Ingest META (a `meta_files` run): batch manifests, registered as `batches` partitions in Dagster.

    META is a local file or an s3:// / https:// URL; its relative clip paths resolve against its location."""
    from vidscore_core.ingest.meta import MetaError, check_meta_file
    from vidscore_core.media.sources import is_remote, safe_url
    from vidscore_core.tables.views import ViewsNotWritten, write_views
    from vidscore_dagster import runner

    settings = _settings()
    given = {k: v for k, v in {**bounds, "dedup": dedup}.items() if v is not None}
    spec = _preset_spec(ctx, preset, given) if materialize else None
    if not is_remote(meta):
        try:
            check_meta_file(meta)
        except MetaError as exc:
            _fail(str(exc))
    names, build_filtered = _chosen_assets(ctx, settings, assets, preset) if materialize else ([], False)
    dedup_first = build_filtered and spec is not None and spec.dedup
    instance = runner.instance_for(settings)
    keys, reason = runner.ingest_meta_file(instance, meta, batch_size, scored_by_caller=materialize)
    if reason:
        _fail(f"{safe_url(meta)}: {reason}")
    try:
        write_views(settings)
    except ViewsNotWritten as exc:
        click.echo(f"note: views in {settings.db_path} not refreshed: {exc}", err=True)
    click.echo(f"{safe_url(meta)}: {len(keys)} batch(es): {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}")
    for note in runner.ingest_notes(instance):
        click.echo(f"note: {note}")
    click.echo(f"Dagster instance: {os.environ['DAGSTER_HOME']}")
    if not materialize:
        click.echo("next: vidscore ingest META --materialize, or materialize the batches in `vidscore ui`")
        return
    batch_names = [n for n in names if n != "near_duplicates"]
    reasons: dict[str, str] = {}
    with _decoder_log(settings) as log:
        outcome = _materialize(instance, keys, batch_names, reasons) if batch_names else {}
        failed = [k for k, ok in outcome.items() if not ok]
        if not failed and ("near_duplicates" in names or dedup_first):
            failed += _corpus_step(instance, "near_duplicates", {}, reasons)
        built = False
        if build_filtered and not failed:
            failed += _corpus_step(instance, "filtered_videos", {"preset": preset, **given}, reasons)
            built = "filtered_videos" not in failed
    _name_decoder_log(log)
    failed_batches = [k for k in keys if not outcome.get(k, True)]
    click.echo(runner.summary(settings, [k for k in keys if k not in failed_batches], preset if built else None,
                              failed=failed_batches))  # fmt: skip
    if failed:
        _fail(f"{len(failed)} step(s) failed ({', '.join(failed[:5])}{' …' if len(failed) > 5 else ''}); "
              f"first: {failed[0]}: {reasons.get(failed[0], 'see above')}")  # fmt: skip


def _preset_spec(ctx: click.Context, preset: str | None, given: dict):
    """The FilterSpec a --preset (and bounds) asks for; a usage error for an unknown preset without bounds."""
    from vidscore_core.curation.filtered_dataset import PRESETS
    from vidscore_core.curation.filters import FilterSpec

    if preset is None:
        if given:
            raise click.UsageError("bounds (--aesmin …, --dedup) need --preset NAME to store the result under", ctx)
        return None
    if preset not in PRESETS and not given:
        raise click.UsageError(
            f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}, or define {preset!r} with bounds "
            "(--aesmin …, --dedup)", ctx)  # fmt: skip
    base = PRESETS.get(preset, FilterSpec())
    try:
        return FilterSpec(**{**{k: getattr(base, k) for k in base.__dataclass_fields__}, **given})
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx) from None


def _corpus_step(instance, name: str, config: dict, reasons: dict[str, str]) -> list[str]:
    """Build one corpus-wide asset, print its line (kept and removed per bound for filtered_videos);
    returns [name] when it failed."""
    from vidscore_core.curation.filters import removed_line
    from vidscore_dagster.runner import materialize_corpus

    label = f"{name}[{config['preset']}]" if "preset" in config else name
    ok, reason, metadata = materialize_corpus(instance, name, config)
    if not ok:
        click.secho(f"  {label}: FAILED: {reason}", fg="red")
        reasons[name] = reason
        return [name]
    detail = ""
    if "kept" in metadata:
        total = metadata.get("source_rows", {}).get("videos", "?")
        removed = removed_line(metadata.get("removed_by_bound") or {})
        detail = f": kept {metadata['kept']} of {total} clips" + (f"; {removed}" if removed else "")
    click.secho(f"  {label}: ok{detail}", fg="green")
    if metadata.get("kept") == 0:
        click.secho(f"warning: {label} kept no clip: loosen the bounds above", fg="yellow", err=True)
    return []


def _chosen_assets(ctx: click.Context, settings: Settings, assets: str, preset: str | None) -> tuple[list[str], bool]:
    """The assets to run and whether to build filtered_videos; a usage error for unknown names."""
    from vidscore_dagster.defs.automation.jobs import BATCH_ASSETS, runnable_assets

    if assets.strip() == "auto":
        return runnable_assets(settings, scores.resolve_options()), preset is not None
    names = [a.strip() for a in assets.split(",") if a.strip()]
    known = (*BATCH_ASSETS, "near_duplicates", "filtered_videos")
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise click.BadParameter(f"unknown asset(s) {', '.join(unknown) or '(none given)'}; choose from "
                                 f"{', '.join(known)} or auto", ctx, param_hint="--assets")  # fmt: skip
    if "filtered_videos" in names and preset is None:
        raise click.UsageError("--assets filtered_videos needs --preset NAME", ctx)
    chosen = [n for n in (*BATCH_ASSETS, "near_duplicates") if n in names]
    return chosen, "filtered_videos" in names or preset is not None


def _materialize(instance, keys, names, reasons: dict[str, str]) -> dict[str, bool]:
    """Materialize `names` for each batch, one line per batch; a failed batch's reason goes into `reasons`."""
    from vidscore_dagster.runner import materialize_batches

    click.echo(f"materializing {', '.join(names)} for {len(keys)} batch(es) …")

    def report(key: str, ok: bool, reason: str) -> None:
        click.secho(f"  {key}: {'ok' if ok else f'FAILED: {reason}'}", fg="green" if ok else "red")
        if not ok:
            reasons[key] = reason

    return materialize_batches(instance, keys, names, on_batch=report)


@main.command()
@click.argument("query")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
def sql(query, fmt) -> None:
    """Run one read-only query on the tables (the views of $VIDSCORE_HOME/vidscore.duckdb).

    Only SELECT (and EXPLAIN) runs: nothing is written, copied or attached. The result is printed
    as it comes (table: NULL shown as NULL, then the row count).
    """
    import duckdb

    from vidscore_core.tables import sql_output
    from vidscore_core.tables.store import TableStore
    from vidscore_core.tables.views import open_views

    try:
        sql_output.check_not_empty(query)
    except sql_output.RefusedStatement as exc:
        _fail(str(exc), code=2)
    settings = _settings()
    store = TableStore.from_settings(settings)
    try:
        if store.is_s3:  # views over s3:// need DuckDB's httpfs; read the tables through Arrow instead
            con = store.connect()
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        else:
            try:
                con = open_views(settings)
            except FileNotFoundError:
                _fail(f"no vidscore database at {settings.db_path.resolve()} (VIDSCORE_HOME="
                      f"{settings.home}): ingest a meta file first, or set VIDSCORE_HOME")  # fmt: skip
        try:
            sql_output.stream(con, query, fmt, sys.stdout)
        finally:
            con.close()
    except sql_output.RefusedStatement as exc:
        _fail(str(exc), code=2)
    except duckdb.Error as exc:
        _fail(str(exc).strip().splitlines()[0])
    except BrokenPipeError:  # e.g. `| head`: the reader has all it wanted; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@main.command()
@click.option("--open", "open_page", is_flag=True, help="Open the page in the default web browser.")
def report(open_page) -> None:
    """Build the corpus report ($VIDSCORE_HOME/reports/corpus_report.html): each score's distribution
    over all batches, what each threshold and preset keeps in clips and hours, contact sheets, sources.

    It is the `corpus_report` asset, materialized in this process: the UI shows the same report.
    """
    import webbrowser

    from vidscore_core.curation.corpus_report.build import report_paths
    from vidscore_core.tables.store import TableStore
    from vidscore_dagster import runner

    settings = _settings()
    if not TableStore.from_settings(settings).partitions("videos"):
        _fail(f"no clips ingested under {settings.tables_root}: run `vidscore ingest META` (or `vidscore demo`) first")
    line, reason = runner.materialize_report(runner.instance_for(settings))
    if reason:
        _fail(f"corpus_report: {reason}")
    page = report_paths(settings)["html"].resolve()
    click.echo(f"wrote {page}: {line}")
    if open_page and not webbrowser.open(page.as_uri()):
        click.echo(f"note: no web browser found here; open {page.as_uri()}", err=True)


@main.group()
def weights() -> None:
    """Model weights: what is present, and fetching the official files."""


@weights.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def weights_status(as_json) -> None:
    """Show each model file: where it is looked for, size, sha256, and how to get it when missing."""
    from vidscore_core import weights as w

    rows = w.status(_settings())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        if row["present"]:
            verified = {
                True: "verified",
                False: "DOES NOT MATCH the published digest",
                None: "no published digest",
            }
            click.echo(f"{row['name']:10s} present  {row['path']}  {row['size_bytes'] / 1e6:.1f} MB  "
                       f"sha256 {row['sha256']} ({verified[row['verified']]})")  # fmt: skip
        else:
            click.echo(f"{row['name']:10s} MISSING  {row['path']}  (set {row['env_var']} or run: "
                       f"vidscore weights download {row['name']})")  # fmt: skip


@weights.command("download")
@click.argument("names", nargs=-1)
@click.option("--url", default=None,
              help="Download from this mirror URL instead (http, https or file; one name only).")  # fmt: skip
@click.option("--sha256", default=None,
              help="Full sha256 the file must have; only for a file with no digest pinned in vidscore.")  # fmt: skip
@click.option("--force", is_flag=True, help="Download even if a valid file is present.")
def weights_download(names, url, sha256, force) -> None:
    """Download the official model files (all three when no NAME is given), verified by sha256."""
    from vidscore_core import weights as w

    names = names or w.NAMES
    if (url or sha256) and len(names) != 1:
        raise click.UsageError("--url and --sha256 need exactly one weight name")
    unknown = [n for n in names if n not in w.REGISTRY]
    if unknown:
        raise click.UsageError(f"unknown model file {', '.join(unknown)}: choose from {', '.join(w.NAMES)}")
    for name in names:
        try:
            path = w.download(name, _settings(), url=url, sha256=sha256, force=force,
                              progress=sys.stderr.isatty())  # fmt: skip
        except (w.WeightsDownloadError, ValueError, OSError) as exc:
            _fail(str(exc))
        click.echo(f"{name}: {path} (sha256 verified)")
        note = w.override_note(name, _settings())
        if note:
            click.echo(f"note: {note}", err=True)


@main.command()
@click.option("--folder", type=click.Path(path_type=Path), default=None,
              help="Where to write the sample corpus (default $VIDSCORE_HOME/demo).")  # fmt: skip
def demo(folder) -> None:
    """Make a small sample corpus, ingest it, score what the installed weights allow, and summarise."""
    from vidscore_dagster.demo import run_demo

    sys.exit(run_demo(_settings(), folder))


@main.command()
@click.option("--port", default=3000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def ui(port, host) -> None:
    """Start `dagster dev` (webserver + daemon) on the instance the CLI uses."""
    from vidscore_core.tables.views import ViewsNotWritten, write_views
    from vidscore_dagster.runner import ensure_dagster_home, set_pool_limits

    _check_port_free(host, port)
    settings = _settings()
    home = ensure_dagster_home(settings)
    set_pool_limits()
    try:  # the SQL views, so `vidscore sql` and DuckDB clients work before the first ingest finishes
        write_views(settings)
    except ViewsNotWritten as exc:
        click.echo(f"note: views in {settings.db_path} not refreshed: {exc}", err=True)
    workspace = _write_workspace(home)
    click.echo(f"DAGSTER_HOME={home}; open http://{host}:{port}")
    # This interpreter's own dagster: works from .venv/bin/vidscore without activating the venv.
    args = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", host, "-p", str(port)]
    try:
        os.execv(sys.executable, args)
    except OSError as exc:
        _fail(f"cannot start dagster dev with {sys.executable}: {exc}")


def _check_port_free(host: str, port: int) -> None:
    """Fail with one line now, rather than after dagster has started its daemon, when the port is taken."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        _fail(f"cannot use --host {host}: {exc.strerror}")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            _fail(f"cannot serve on {host}:{port}: {exc.strerror}; pick another with --port")


# The code location's name, as in workspace.yaml and pyproject's [tool.dagster] code_location_name:
# `vidscore ui` and `dagster dev -w workspace.yaml` then show the same single location on one instance.
CODE_LOCATION = "vidscore"
DEFINITIONS_MODULE = "vidscore_dagster.definitions"


def _write_workspace(home: Path) -> Path:
    """A workspace file in DAGSTER_HOME loading the definitions under CODE_LOCATION (no repo checkout needed)."""
    target = home / "workspace.yaml"
    text = (
        "# Written by `vidscore ui`; same location as the repository's workspace.yaml.\n"
        "load_from:\n"
        "  - python_module:\n"
        f"      module_name: {DEFINITIONS_MODULE}\n"
        f"      location_name: {CODE_LOCATION}\n"
    )
    if not target.is_file() or target.read_text() != text:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return target


class _progress_bar:
    """A tqdm bar fed by the engine's (done, total) callback."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = None

    def __enter__(self):
        def update(done: int, total: int) -> None:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=total, desc=self.label, unit="clip", file=sys.stderr)
            self.bar.update(done - self.bar.n)

        return update

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


if __name__ == "__main__":
    main()
