"""The `vidscore` command line: Open-Sora compatible scoring of CSV files, plus the platform's commands."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from vidscore_core.settings import Settings

ASSET_ORDER = ("videos", "clip_embeddings", "aesthetic_scores", "matching_scores", "flow_scores")


def _settings() -> Settings:
    return Settings.from_env()


def _fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """vidscore: score video clips (aesthetic, motion, text matching) and filter them, on Dagster + DuckDB."""


# -- score / filter (Open-Sora compatible) -------------------------------------------------------


@main.command()
@click.argument("task", type=click.Choice(["aesthetic", "flow", "matching"]))
@click.argument("meta", type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), help="Output file (default META_<score>.csv).")
@click.option("--bs", "batch_size", type=int, default=16, show_default=True, help="Clips per model batch.")
@click.option("--num-workers", type=int, default=2, show_default=True, help="Decoding worker processes.")
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N (default: $VIDSCORE_DEVICE or auto).")
@click.option("--backend", type=click.Choice(["unimatch", "dis"]), default="unimatch", show_default=True,
              help="Flow backend: UniMatch (weights) or OpenCV DIS (no weights).")  # fmt: skip
@click.option("--precision", type=click.Choice(["auto", "fp32", "tf32", "bf16", "fp16"]), default="auto",
              show_default=True, help="Model precision on CUDA (CPU always runs float32).")  # fmt: skip
@click.option("--decode-timeout", type=float, default=60.0, show_default=True, help="Seconds per clip.")
def score(task, meta, output, batch_size, num_workers, device, backend, precision, decode_timeout) -> None:
    """Score META (CSV or Parquet) and write META_aes.csv / META_flow.csv / META_match.csv."""
    from vidscore_core.csv_scoring import score_meta_file
    from vidscore_core.meta import MetaError
    from vidscore_core.scoring.options import JobOptions
    from vidscore_core.weights import WeightsMissingError

    settings = _settings()
    with _progress_bar(f"{task}") as progress:
        options = JobOptions(device=device or settings.device, batch_size=batch_size, num_workers=num_workers,
                             decode_timeout_s=decode_timeout, precision=precision, progress=progress)  # fmt: skip
        try:
            out, summary = score_meta_file(task, meta, settings, options, output=output, flow_backend=backend)
        except (MetaError, WeightsMissingError, ValueError) as exc:
            _fail(str(exc))
    click.echo(f"wrote {out}: {summary}")


@main.command(name="filter")
@click.argument("meta", type=click.Path(path_type=Path))
@click.option("--aesmin", type=float, help="Keep rows with aes >= X.")
@click.option("--flowmin", type=float, help="Keep rows with flow >= Y.")
@click.option("--flowmax", type=float, help="Keep rows with flow <= Y2.")
@click.option("--matchmin", type=float, help="Keep rows with match >= Z.")
@click.option(
    "--output", type=click.Path(path_type=Path), help="Output file (default: named like Open-Sora's)."
)
def filter_cmd(meta, aesmin, flowmin, flowmax, matchmin, output) -> None:
    """Keep the rows of a scored META file that pass the thresholds (rows without the score are dropped)."""
    from vidscore_core.filtering import FilterSpec, filter_meta_file

    spec = FilterSpec(aesmin=aesmin, flowmin=flowmin, flowmax=flowmax, matchmin=matchmin)
    try:
        out, kept, total = filter_meta_file(meta, spec, output=output)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    click.echo(f"wrote {out}: kept {kept} of {total} rows")


# -- platform ------------------------------------------------------------------------------------


@main.command()
@click.argument("meta", type=click.Path(path_type=Path))
@click.option("--batch-size", type=int, default=5000, show_default=True, help="Rows per batch partition.")
@click.option("--materialize", is_flag=True, help="Also materialize the batches now (in this process).")
@click.option("--assets", default="auto", show_default=True,
              help="With --materialize: comma-separated assets, or 'auto' (everything the weights allow).")  # fmt: skip
def ingest(meta, batch_size, materialize, assets) -> None:
    """Split META into batches, stage them and register them as `batches` partitions in Dagster."""
    from vidscore_core.ingest import stage_manifests
    from vidscore_core.meta import MetaError
    from vidscore_dagster.runner import instance_for, register_batches

    settings = _settings()
    try:
        keys = stage_manifests(meta, settings, batch_size=batch_size)
    except (MetaError, ValueError) as exc:
        _fail(str(exc))
    instance = instance_for(settings)
    new = register_batches(instance, keys)
    click.echo(
        f"{meta}: {len(keys)} batch(es), {len(new)} new: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
    )
    click.echo(f"Dagster instance: {os.environ['DAGSTER_HOME']}")
    if materialize:
        names = (
            available_assets(settings)
            if assets == "auto"
            else [a.strip() for a in assets.split(",") if a.strip()]
        )
        outcome = _materialize(instance, keys, names)
        if not all(outcome.values()):
            _fail(f"{sum(not ok for ok in outcome.values())} of {len(keys)} batch(es) failed")


def available_assets(settings: Settings, flow_backend: str | None = None) -> list[str]:
    """The assets whose model files are present (flow: the configured backend's)."""
    from vidscore_core import weights

    names = ["videos"]
    have = {row["name"]: row["present"] for row in weights.status(settings, compute_sha256=False)}
    if have["clip"]:
        names.append("clip_embeddings")
        names.append("matching_scores")
        if have["aesthetic"]:
            names.append("aesthetic_scores")
    backend = flow_backend or os.environ.get("VIDSCORE_FLOW_BACKEND", "unimatch")
    if backend == "dis" or have["unimatch"]:
        names.append("flow_scores")
    return [n for n in ASSET_ORDER if n in names]


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
    """Run a read-only SQL query on the vidscore DuckDB file and print the result."""
    import duckdb

    from vidscore_core.store import Store

    settings = _settings()
    try:
        df = Store(settings.db_path).query_df(query)
    except (duckdb.Error, TimeoutError) as exc:
        _fail(str(exc))
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(df.to_json(orient="records", force_ascii=False, date_format="iso"))
    else:
        click.echo(df.to_string(index=False, max_colwidth=60) if len(df.columns) else "(no columns)")


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
@click.option("--url", default=None, help="Download from this mirror URL instead (one name only).")
@click.option("--force", is_flag=True, help="Download even if a valid file is present.")
def weights_download(names, url, force) -> None:
    """Download the official model files (all three when no NAME is given)."""
    from vidscore_core import weights as w

    names = names or w.NAMES
    if url and len(names) != 1:
        _fail("--url needs exactly one weight name")
    for name in names:
        try:
            path = w.download(name, _settings(), url=url, force=force)
        except (w.WeightsDownloadError, KeyError, OSError) as exc:
            _fail(str(exc))
        click.echo(f"{name}: {path}")


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
    from vidscore_dagster.runner import ensure_dagster_home, set_pool_limits

    settings = _settings()
    home = ensure_dagster_home(settings)
    set_pool_limits()
    click.echo(f"DAGSTER_HOME={home}; open http://{host}:{port}")
    args = ["dagster", "dev", "-m", "vidscore_dagster.definitions", "-h", host, "-p", str(port)]
    os.execvp(args[0], args)


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
