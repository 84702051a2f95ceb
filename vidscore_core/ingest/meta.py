"""Meta files (Open-Sora's CSV of `path`, `text`, ...): reading, video ids and batches.

A meta row names a clip by path. Rows are never dropped: a row that cannot name a clip makes the whole
file an error the user must fix, and a path listed in several rows (several captions of one clip) keeps
every row (`read_meta(drop_duplicates=True)` gives one row per clip where that is what is wanted).
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import posixpath
import re
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from vidscore_core.media import remote
from vidscore_core.media.sources import is_remote, safe_url

CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
ADDED_COLUMNS = ("path_original", "video_id", "meta_row")
# A meta file's own column that is named like an added one keeps its values under this prefix (and so
# does any column that already starts with it, which keeps the renaming reversible): see
# `file_column_name`.
INPUT_PREFIX = "input:"

# pandas' default missing-value markers (read_csv docs). They stay in force for the user's own columns;
# `path` and `text` only treat an empty cell as missing, so a caption such as "None" or "NA" survives.
_PANDAS_NA = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip
_RAW_COLUMNS = ("path", "text")
_BASE_SAMPLE = 32  # relative paths looked at when choosing the folder they are relative to
_KEY_STEM_MAX = 40


class MetaError(ValueError):
    """A meta file that cannot be used as it is; the message says what to fix."""


def video_id_for(resolved_path: str) -> str:
    """Stable id of a clip: the first 16 hex digits of sha256 of its absolute path string (UTF-8).

    The same path gives the same id in every process and on every machine.
    """
    # surrogateescape: Linux paths that are not valid UTF-8 still get an id instead of an exception.
    return hashlib.sha256(resolved_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def read_meta(
    path: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    drop_duplicates: bool = True,
) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet meta file into one row per clip.

    Columns: every column of the file as it was, with `path` made absolute; `path_original` (the cell
    as written), `video_id` and `meta_row` (0-based data row in the file) are added. A column of the
    file with one of those names is kept too, renamed to "input:<name>" (`file_column_name` gives
    every column's name in the file back). `text`, when present, holds str or None.

    Relative paths are joined to `base_dir` when given. Otherwise to the first of: the meta file's
    folder, its parent folders (nearest first), the current directory, under which the most of the
    first relative paths exist; the meta file's folder when none do. That keeps the common layouts
    working: paths relative to the meta file, a meta file kept inside the dataset it lists (the
    parity fixtures' media/meta.csv lists "media/..."), and Open-Sora's paths relative to where the
    command runs.
    """
    frames = list(read_meta_chunks(path, base_dir=base_dir, chunk_rows=None))
    out = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if drop_duplicates:
        # One clip, one row: the first listing wins, later ones are the same video.
        out = out.drop_duplicates(subset="path", keep="first")
    return out.reset_index(drop=True)


def read_meta_chunks(
    path: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    chunk_rows: int | None = 200_000,
) -> Iterator[pd.DataFrame]:
    """`read_meta` (without dropping duplicates) in consecutive chunks of at most `chunk_rows` rows,
    so a meta file of tens of millions of rows is read in bounded memory; `meta_row` counts from the
    file's first data row. Relative paths resolve against the base chosen from the first chunk.
    `chunk_rows=None`: the whole file as one chunk."""
    meta_path = _absolute(os.fspath(path))
    base = _absolute(os.fspath(base_dir)) if base_dir is not None else None
    offset = 0
    for df in _load_table(meta_path, chunk_rows):
        if "path" not in df.columns:
            found = ", ".join(repr(str(c)) for c in df.columns)
            raise MetaError(f"{meta_path}: no 'path' column; columns found: {found}")
        originals = [_as_text(v) for v in df["path"].tolist()]
        bad = [offset + row for row, value in enumerate(originals) if value is None or not value.strip()]
        if bad:
            shown = ", ".join(str(r) for r in bad[:20]) + (", ..." if len(bad) > 20 else "")
            raise MetaError(f"{meta_path}: {len(bad)} row(s) have an empty path (0-based data rows, header not "
                            f"counted): {shown}")  # fmt: skip
        if base is None:
            base = _choose_base(_parent(meta_path), originals)
        resolved = [resolve_clip_path(base, p) for p in originals]

        out = df.rename(columns={c: input_column_name(c) for c in df.columns})
        out["path"] = pd.Series(resolved, index=out.index, dtype=object)
        if "text" in out.columns:
            out["text"] = pd.Series(_captions(out["text"].tolist(), meta_path, offset), index=out.index, dtype=object)
        out["path_original"] = pd.Series(originals, index=out.index, dtype=object)
        # A presigned URL's query string (its signature) changes with every signing: not part of the id.
        out["video_id"] = pd.Series([video_id_for(safe_url(p)) for p in resolved], index=out.index, dtype=object)
        out["meta_row"] = range(offset, offset + len(out))
        offset += len(out)
        yield out.reset_index(drop=True)


def has_caption(text: object) -> bool:
    """A caption matching can score: text that is not missing or blank."""
    return isinstance(text, str) and text.strip() != ""


def input_column_name(name: object) -> object:
    """The column name read_meta gives a column of the file: its own, unless it would collide with an
    added column (or starts with the prefix that marks such a collision)."""
    if isinstance(name, str) and (name in ADDED_COLUMNS or name.startswith(INPUT_PREFIX)):
        return INPUT_PREFIX + name
    return name


def file_column_name(column: object) -> object:
    """The name a column of read_meta's frame has in the meta file (undoes `input_column_name`).

    Meant for the file's own columns (not the added ones): `path` and `text` are their own names.
    """
    if isinstance(column, str) and column.startswith(INPUT_PREFIX):
        return column[len(INPUT_PREFIX) :]
    return column


def file_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Every row of a read_meta frame as the file had it: its own columns under their own names,
    `path` as written, the added columns left out."""
    own = df.drop(columns=[c for c in ADDED_COLUMNS if c in df.columns])
    if "path_original" in df.columns:
        own = own.assign(path=df["path_original"])
    return own.rename(columns=file_column_name)


def resolve_clip_path(base: str, path: str) -> str:
    """A meta file's `path` cell as the clip's full name: URLs (s3://, https://) as they are; relative
    paths joined to `base`, a folder or an s3:// / https:// prefix (the meta file's own location)."""
    if is_remote(path):
        return path
    if is_remote(base):
        scheme, _, rest = base.partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, path))}"
    return os.path.abspath(os.path.join(base, path))  # join keeps absolute paths


def meta_location(path: str | os.PathLike[str]) -> str:
    """A meta file's name as runs record it: an s3:// or https:// URL as it is, a local path absolute.
    Symlinks are kept, as for clip paths (`resolve_clip_path`): a clip listed relative to this file and
    the same clip listed by its absolute name must be one path, hence one id."""
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def local_name(meta_path: str | os.PathLike[str]) -> Path:
    """What a CSV command names its default output after: a local meta file itself; for one at a URL,
    a file of its name in the current folder (the URL's query string never names anything)."""
    path = os.fspath(meta_path)
    if not is_remote(path):
        return Path(path)
    return Path.cwd() / (posixpath.basename(safe_url(path).rstrip("/")) or "meta.csv")


def default_output(meta_path: str | os.PathLike[str], suffix: str) -> Path:
    """META.csv → META_<suffix>.csv (Open-Sora's naming), beside a local meta file and in the current
    folder for one at a URL (`local_name`); Parquet input keeps its format."""
    meta = local_name(meta_path)
    extension = meta.suffix if meta.suffix.lower() in (".parquet", ".pq") else ".csv"
    return meta.with_name(f"{meta.stem}_{suffix}{extension}")


def _absolute(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(path)


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if is_remote(path) else os.path.dirname(path)


def _open_remote(meta_path: str) -> remote.RemoteFile:
    """A meta file in object storage, read through the same ranged, retried reader as clips."""
    clip = remote.RemoteClip(meta_path)
    try:
        if clip.size == 0:
            raise MetaError(f"meta file is empty (0 bytes): {safe_url(meta_path)}")
    except remote.RemoteError as exc:
        raise MetaError(f"cannot read the meta file: {exc.reason}") from None
    return clip.open()


def check_meta_file(meta_path: str | os.PathLike[str]) -> None:
    """MetaError unless `meta_path` is a non-empty regular file (not a folder, FIFO or device)."""
    meta_path = os.fspath(meta_path)
    if not os.path.exists(meta_path):
        raise MetaError(f"meta file not found: {meta_path}")
    if os.path.isdir(meta_path):
        raise MetaError(f"meta file is a directory: {meta_path}")
    kind = _special_file_kind(meta_path)
    if kind:
        raise MetaError(f"meta file is {kind}, not a regular file: {meta_path}")
    if os.path.getsize(meta_path) == 0:
        raise MetaError(f"meta file is empty (0 bytes): {meta_path}")


def _load_table(meta_path: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    if is_remote(meta_path):
        source: str | remote.RemoteFile = _open_remote(meta_path)
    else:
        check_meta_file(meta_path)
        source = meta_path
    suffix = Path(safe_url(meta_path)).suffix.lower()
    if suffix in CSV_SUFFIXES:
        chunks = _read_csv(source, meta_path, CSV_SUFFIXES[suffix], chunk_rows)
    elif suffix in PARQUET_SUFFIXES:
        chunks = _read_parquet(source, meta_path, chunk_rows)
    else:
        raise MetaError(
            f"{safe_url(meta_path)}: unsupported meta file type {suffix or '(no extension)'!r}; "
            "expected .csv, .tsv, .parquet or .pq"
        )
    rows = 0
    for df in chunks:
        if len(df):
            rows += len(df)
            yield df
    if rows == 0:
        raise MetaError(f"meta file has no rows: {safe_url(meta_path)}")


def _special_file_kind(path: str) -> str | None:
    """What a path that is not a regular file is ("a FIFO (named pipe)", "a character device", …)."""
    mode = os.stat(path).st_mode
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip
    return next((name for test, name in kinds if test(mode)), None)


def _read_parquet(source, meta_path: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Integer columns stay integers when they have nulls (pandas' default makes them float).
    nullable_ints = {
        pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
    }.get  # fmt: skip
    try:
        file = pq.ParquetFile(source)
        batches = file.iter_batches(batch_size=chunk_rows or max(file.metadata.num_rows, 1))
        for batch in batches:
            yield batch.to_pandas(types_mapper=nullable_ints)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise MetaError(f"{meta_path}: cannot read as Parquet: {exc}") from None


def _read_csv(source, meta_path: str, sep: str, chunk_rows: int | None) -> Iterator[pd.DataFrame]:
    # utf-8-sig reads plain UTF-8 as well and drops the byte-order mark Excel writes.
    options = dict(sep=sep, encoding="utf-8-sig")
    try:
        header = pd.read_csv(source, nrows=1, header=None, dtype=str, keep_default_na=False, **options)
        names = header.iloc[0].tolist() if len(header) else []
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:  # pandas would rename the second one (`path.1`) and read the first silently
            raise MetaError(f"{safe_url(meta_path)}: the header names {', '.join(repr(c) for c in repeated)} "
                            "more than once; give each column its own name")  # fmt: skip
        _rewind(source)
        columns = pd.read_csv(source, nrows=0, **options).columns
        _rewind(source)
        na_values = {c: ([""] if c in _RAW_COLUMNS else list(_PANDAS_NA)) for c in columns}
        # Every column as text; _typed_columns then picks types that write back what was read.
        read = dict(dtype=str, keep_default_na=False, na_values=na_values, **options)
        if chunk_rows is None:
            yield _typed_columns(pd.read_csv(source, **read))
            return
        with pd.read_csv(source, chunksize=chunk_rows, **read) as reader:
            yield from map(_typed_columns, reader)
    except UnicodeDecodeError as exc:
        raise MetaError(
            f"{meta_path}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "meta files must be UTF-8: re-save it as UTF-8"
        ) from None
    except pd.errors.EmptyDataError:
        raise MetaError(f"meta file is empty (no header, no rows): {meta_path}") from None
    except pd.errors.ParserError as exc:
        raise MetaError(f"{meta_path}: cannot parse as CSV: {exc}") from None


def _rewind(source) -> None:
    if not isinstance(source, str):  # a remote meta file: an open, seekable reader
        source.seek(0)


def numeric_column(df: pd.DataFrame, *names: str) -> pd.Series:
    """The first of `names` that `df` has, as float64 (NaN where empty or not a number); all NaN if none.

    Whatever the column's dtype: integer columns with blanks are read as nullable integers (Int64).
    """
    for name in names:
        if name in df.columns:
            return pd.to_numeric(df[name], errors="coerce").astype("float64")
    return pd.Series(float("nan"), index=df.index)


def _typed_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Types for a CSV read as text, chosen so each value writes back as it was written: whole numbers
    stay integers even with blank cells (pandas would make 640 a float, written back as 640.0), other
    numbers are floats, anything else stays text."""
    for column in df.columns:
        if column in _RAW_COLUMNS:
            continue
        values = df[column]
        present = values.dropna().astype(str)
        if present.empty:
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers[values.notna()].isna().any():
            continue  # some text: the column stays text
        if present.str.fullmatch(r"[+-]?\d{1,18}").all():
            df[column] = numbers.astype("Int64") if values.isna().any() else numbers.astype("int64")
        else:
            df[column] = numbers.astype("float64")
    return df


def _captions(values: list, meta_path: str, offset: int) -> list[str | None]:
    """The `text` cells as str; bytes (a binary Parquet column) must be UTF-8: a caption is tokenized."""
    out = []
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MetaError(
                    f"{meta_path}: column 'text', row {offset + row} (0-based) is not valid UTF-8 (byte "
                    f"0x{exc.object[exc.start]:02x} at offset {exc.start}): captions must be UTF-8 text"
                ) from None
        out.append(_as_text(value))
    return out


def _as_text(value: object) -> str | None:
    """A cell as str, with missing (None/NaN/NA) as None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _choose_base(meta_dir: str, originals: Sequence[str]) -> str:
    relative = [p for p in originals if not os.path.isabs(p) and not is_remote(p)][:_BASE_SAMPLE]
    if not relative or is_remote(meta_dir):  # in object storage: relative to the meta file's prefix
        return meta_dir
    candidates = [meta_dir]
    folder = meta_dir
    while os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
        candidates.append(folder)
    try:
        candidates.append(os.getcwd())
    except OSError:  # the working directory was removed
        pass
    best, best_hits = meta_dir, 0
    for candidate in candidates:  # strictly more hits needed to move away from the nearer folder
        hits = sum(os.path.exists(os.path.join(candidate, p)) for p in relative)
        if hits > best_hits:
            best, best_hits = candidate, hits
            if hits == len(relative):
                break
    return best


def sanitize_key_part(name: str) -> str:
    """Lowercase [a-z0-9_] only, runs of anything else as one "_", at most 40 chars; "meta" if empty."""
    cleaned = re.sub(r"[^a-z0-9_]+", "_", name.lower())
    cleaned = re.sub(r"_+", "_", cleaned).strip("_")
    cleaned = cleaned[:_KEY_STEM_MAX].strip("_")
    return cleaned or "meta"


def batch_key_prefix(meta_path: str | os.PathLike[str]) -> str:
    """`<stem>-<8 hex of its absolute path>`: every batch key of a meta file is this plus `-<00000>`.

    The same file (by absolute path) gets the same keys in every run; two files with the same name in
    different folders do not collide. Keys hold only [a-z0-9_-], safe for Dagster and file names.
    """
    # A presigned URL's query string changes with every signing: not part of the keys (as of ids).
    absolute = safe_url(_absolute(os.fspath(meta_path)))
    stem = sanitize_key_part(Path(absolute).stem)
    digest = hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{stem}-{digest}"


def batch_key(prefix: str, index: int) -> str:
    return f"{prefix}-{index:05d}"


def batch_keys(meta_path: str | os.PathLike[str], n_rows: int, batch_size: int) -> list[str]:
    """Partition keys for a meta file of n_rows rows in batches of batch_size (see `batch_key_prefix`)."""
    check_batch_size(batch_size)
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    prefix = batch_key_prefix(meta_path)
    return [batch_key(prefix, i) for i in range(math.ceil(n_rows / batch_size))]


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


class OutputError(ValueError):
    """An output path that cannot be written, found before any work is done; the message says why."""


def check_output(target: str | os.PathLike[str], meta: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Fail now, not after the scoring, when `target` cannot take the output of a command reading `meta`.

    Refused: a directory, the meta file itself (unless `overwrite`), a name or path too long for its file
    system, and a place where no file can be created (a read-only file system, no permission, a file where
    a folder should be). Changes nothing: the folders `write_table` would create are only looked at.
    """
    target = Path(target)
    if target.is_dir():
        raise OutputError(f"output {target} is a directory: give a file name")
    if not overwrite and target.exists() and Path(meta).exists() and os.path.samefile(target, meta):
        raise OutputError(
            f"output {target} is the input meta file: give another --output, or --overwrite to replace it"
        )
    folder = Path(os.path.abspath(target)).parent
    while not folder.exists():  # the nearest folder that exists: write_table creates the rest
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise OSError(errno.ENOTDIR, f"{folder} is not a folder")
        name_max = os.pathconf(folder, "PC_NAME_MAX")
        if any(len(os.fsencode(part)) > name_max for part in target.parts):
            raise OSError(errno.ENAMETOOLONG, f"File name too long (more than {name_max} bytes)")
        if len(os.fsencode(os.path.abspath(target))) >= os.pathconf(folder, "PC_PATH_MAX"):
            raise OSError(errno.ENAMETOOLONG, "File name too long (the whole path)")
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".vidscore-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write output {target}: {exc.strerror or exc}") from None
    return target


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a meta table: CSV, or Parquet for a .parquet/.pq name, published with one rename.

    The temporary file beside it is removed on any failure or interrupt: no partial file survives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A short name of its own (the output's name may be as long as the file system allows).
    tmp = path.with_name(f".{path.name[:64]}.{os.getpid()}.tmp")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
