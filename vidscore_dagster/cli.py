"""The `vidscore` command line: Open-Sora compatible scoring of CSV files, plus the platform's commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from vidscore_core import scores
from vidscore_core.settings import Settings


def _settings() -> Settings:
    return Settings.from_env()


def _one_line(message: str) -> str:
    return " ".join(line.strip() for line in str(message).splitlines() if line.strip()) or "failed"


def _fail(message: str, code: int = 1) -> None:
    """Report a user-facing error as one `error: …` line on stderr and exit non-zero."""
    click.secho(f"error: {_one_line(message)}", fg="red", err=True)
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
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            _fail(exc.format_message() + hint, exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except Exception as exc:
            if os.environ.get("VIDSCORE_DEBUG"):
                raise
            if isinstance(exc, _user_error_types()):
                _fail(str(exc))
            _fail(f"{type(exc).__name__}: {exc} (unexpected; rerun with VIDSCORE_DEBUG=1 for the traceback)")
        # Non-standalone click returns the exit code of an explicit ctx.exit()/--help, else the result.
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """vidscore: score video clips (aesthetic, motion, text matching) and filter them, on Dagster + DuckDB."""


# -- score / filter (Open-Sora compatible) -------------------------------------------------------


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
@click.argument("meta", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path),
              help="Output file (default META_<score>.csv; META_scores.csv for `all`).")  # fmt: skip
@click.option("--bs", "batch_size", type=int, default=16, show_default=True, help="Clips per model batch.")
@click.option("--num-workers", type=int, default=2, show_default=True, help="Decoding worker processes.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: $VIDSCORE_DEVICE or auto).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "tf32", "bf16", "fp16"]), default="auto",
              show_default=True, help="Model precision on CUDA (CPU always runs float32).")  # fmt: skip
@click.option("--decode-timeout", type=float, default=60.0, show_default=True, help="Seconds per clip.")
@score_option_flags
def score(task, meta, output, batch_size, num_workers, device, precision, decode_timeout, **chosen) -> None:
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
        result = score_file(task, meta, settings, options, output=output, progress=_progress_bar)
    except (MetaError, WeightsMissingError, ValueError) as exc:
        _fail(str(exc))
    if task != "all":
        click.echo(f"wrote {result.output}: {result.scored[task]}")
        return
    for name, summary in result.scored.items():
        click.echo(f"{name}: {summary}")
    for skipped in result.skipped:
        click.echo(f"{skipped.score}: skipped: {skipped.reason}")
    columns = ", ".join(scores.get(s).column for s in result.scored)
    click.echo(f"wrote {result.output}: {result.rows} rows with {columns}")


def score_bound_options(command):
    """One `--<flag>` option per bound the score registry declares (--aesmin, --flowmin, …)."""
    for flag, column, op in reversed(scores.FILTER_BOUNDS):
        command = click.option(f"--{flag}", type=float, help=f"Keep rows with {column} {op} this.")(command)
    return command


@main.command(name="filter")
@click.argument("meta", type=click.Path(path_type=Path))
@score_bound_options
@click.option("--fmin", type=int, help="Keep clips with at least this many frames.")
@click.option("--fmax", type=int, help="Keep clips with at most this many frames.")
@click.option("--fpsmax", type=float, help="Keep clips with fps <= this.")
@click.option("--hwmax", type=int, help="Keep clips with height x width <= this many pixels.")
@click.option("--aspect-min", type=float, help="Keep clips with aspect ratio (height / width) >= this.")
@click.option("--aspect-max", type=float, help="Keep clips with aspect ratio (height / width) <= this.")
@click.option("--duration-min", type=float, help="Keep clips lasting at least this many seconds.")
@click.option("--duration-max", type=float, help="Keep clips lasting at most this many seconds.")
@click.option("--dedup", is_flag=True, help="Keep only rows marked dup_keep by `vidscore dedup`.")
@click.option("--probe-workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Worker processes probing files whose metadata the meta file lacks.")  # fmt: skip
@click.option(
    "--output", type=click.Path(path_type=Path), help="Output file (default: named like Open-Sora's)."
)
def filter_cmd(meta, fmin, fmax, fpsmax, hwmax, aspect_min, aspect_max, duration_min, duration_max, dedup,
               probe_workers, output, **bounds) -> None:  # fmt: skip
    """Keep the rows of META that pass the thresholds (rows without the score are dropped).

    Technical limits (frames, fps, height x width, aspect ratio, duration) read the meta's num_frames,
    fps, height, width and duration_s (or duration) columns, and probe the file for rows that lack
    them; a file that cannot be read fails them. --dedup keeps the rows `vidscore dedup` marked
    dup_keep.
    """
    from vidscore_core.curation.filters import FilterSpec, filter_meta_file

    try:
        spec = FilterSpec(**bounds, fmin=fmin, fmax=fmax, fpsmax=fpsmax, hwmax=hwmax, aspect_min=aspect_min,
                          aspect_max=aspect_max, duration_min=duration_min, duration_max=duration_max,
                          dedup=dedup)  # fmt: skip
        out, kept, total = filter_meta_file(meta, spec, output=output, probe_workers=probe_workers,
                                            notify=click.echo)  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:  # MetaError is a ValueError
        _fail(str(exc))
    click.echo(f"wrote {out}: kept {kept} of {total} rows")


@main.command()
@click.argument("meta", type=click.Path(path_type=Path))
@click.option("--threshold", type=float, default=0.98, show_default=True,
              help="Cosine of the 50% frame CLIP embeddings at or above which two clips are near-duplicates.")  # fmt: skip
@click.option("--any-resolution", is_flag=True,
              help="Also group clips of different resolutions (default: equal width x height only, as Open-Sora).")  # fmt: skip
@click.option("--output", type=click.Path(path_type=Path), help="Output file (default META_dedup.csv).")
@click.option("--bs", "batch_size", type=int, default=16, show_default=True, help="Clips per model batch.")
@click.option("--num-workers", type=int, default=2, show_default=True, help="Decoding worker processes.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: $VIDSCORE_DEVICE or auto).")
@click.option("--decode-timeout", type=float, default=60.0, show_default=True, help="Seconds per clip.")
def dedup(meta, threshold, any_resolution, output, batch_size, num_workers, device, decode_timeout) -> None:
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
        with _progress_bar("dedup") as progress:
            options = JobOptions(device=device or settings.device, batch_size=batch_size, num_workers=num_workers,
                                 decode_timeout_s=decode_timeout, progress=progress)  # fmt: skip
            out, summary = dedup_meta_file(meta, settings, options, threshold=threshold,
                                           same_resolution=not any_resolution, output=output)  # fmt: skip
    except (MetaError, w.WeightsMissingError, ValueError) as exc:
        _fail(str(exc))
    click.echo(f"wrote {out}: {summary.line()}")


# -- platform ------------------------------------------------------------------------------------


@main.command()
@click.argument("meta")
@click.option("--batch-size", type=int, default=5000, show_default=True, help="Rows per batch partition.")
@click.option("--materialize", is_flag=True, help="Also materialize the batches now (in this process).")
@click.option("--assets", default="auto", show_default=True,
              help="With --materialize: comma-separated assets (filtered_videos included), or 'auto' "
              "(everything the weights allow).")  # fmt: skip
@click.option("--preset", default=None, help="With --materialize: also build filtered_videos with this preset "
              "(fair: aes >= 5.5, good: aes >= 6.5, or a name of your own).")  # fmt: skip
def ingest(meta, batch_size, materialize, assets, preset) -> None:
    """Ingest META (a `meta_files` run): batch manifests, registered as `batches` partitions in Dagster.

    META is a local file or an s3:// / https:// URL; its relative clip paths resolve against its location."""
    from vidscore_core.media.sources import is_remote, safe_url
    from vidscore_core.tables.views import ViewsNotWritten, write_views
    from vidscore_dagster import runner

    settings = _settings()
    if not is_remote(meta) and not Path(meta).is_file():
        _fail(f"{meta}: no such file")
    if batch_size < 1:
        _fail(f"--batch-size must be >= 1, got {batch_size}")
    names, build_filtered = _chosen_assets(settings, assets, preset) if materialize else ([], False)
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
    outcome = _materialize(instance, keys, names) if names else {}
    failed = [k for k, ok in outcome.items() if not ok]
    if build_filtered and not failed:
        ok, reason = runner.materialize_filtered(instance, preset or "default")
        click.secho(f"  filtered_videos[{preset or 'default'}]: {'ok' if ok else f'FAILED: {reason}'}",
                    fg="green" if ok else "red")  # fmt: skip
        failed += [] if ok else ["filtered_videos"]
    click.echo(runner.summary(settings, keys, preset if build_filtered else None))
    if failed:
        _fail(f"{len(failed)} of {len(keys) + int(build_filtered)} step(s) failed: {', '.join(failed[:5])}")


def _chosen_assets(settings: Settings, assets: str, preset: str | None) -> tuple[list[str], bool]:
    """The batch assets to run and whether to build filtered_videos; one error line for unknown names."""
    from vidscore_dagster.defs.automation.jobs import BATCH_ASSETS, runnable_assets

    if assets.strip() == "auto":
        return runnable_assets(settings, scores.resolve_options()), preset is not None
    names = [a.strip() for a in assets.split(",") if a.strip()]
    known = (*BATCH_ASSETS, "filtered_videos")
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        _fail(f"--assets: unknown asset(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)} or auto")
    return [n for n in BATCH_ASSETS if n in names], "filtered_videos" in names or preset is not None


def _materialize(instance, keys, names, resources=None) -> dict[str, bool]:
    from vidscore_dagster.runner import materialize_batches

    click.echo(f"materializing {', '.join(names)} for {len(keys)} batch(es) …")

    def report(key: str, ok: bool, reason: str) -> None:
        click.secho(f"  {key}: {'ok' if ok else f'FAILED: {reason}'}", fg="green" if ok else "red")

    return materialize_batches(instance, keys, names, resources=resources, on_batch=report)


@main.command()
@click.argument("query")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True
)
def sql(query, fmt) -> None:
    """Run a read-only SQL query on the tables (the views of $VIDSCORE_HOME/vidscore.duckdb)."""
    import duckdb

    from vidscore_core.tables.store import TableStore
    from vidscore_core.tables.views import connect_read_only

    settings = _settings()
    store = TableStore.from_settings(settings)
    try:
        if store.is_s3:  # views over s3:// need DuckDB's httpfs; read the tables through Arrow instead
            con = store.connect()
        elif not settings.db_path.exists():
            _fail(f"no vidscore database at {settings.db_path.resolve()} (VIDSCORE_HOME="
                  f"{settings.home}): ingest a meta file first, or set VIDSCORE_HOME")  # fmt: skip
        else:
            con = connect_read_only(settings.db_path, store)
        try:
            df = con.execute(query).df()
        finally:
            con.close()
    except duckdb.Error as exc:
        _fail(str(exc).strip().splitlines()[0])
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", force_ascii=False, date_format="iso"))
    else:
        click.echo(df.to_string(index=False, max_colwidth=60) if len(df.columns) else "(no columns)")


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
        _fail("--url and --sha256 need exactly one weight name")
    unknown = [n for n in names if n not in w.REGISTRY]
    if unknown:
        _fail(f"unknown model file {', '.join(unknown)}: choose from {', '.join(w.NAMES)}")
    for name in names:
        try:
            path = w.download(name, _settings(), url=url, sha256=sha256, force=force,
                              progress=sys.stderr.isatty())  # fmt: skip
        except (w.WeightsDownloadError, ValueError, OSError) as exc:
            _fail(str(exc))
        click.echo(f"{name}: {path} (sha256 verified)")


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
