"""`vidscore sql`: which statements it runs, and its result streamed as a table, CSV or JSON.

Only queries run (SELECT, and EXPLAIN of one): DuckDB's settings keep a session from reading
outside the tables' folder, but its allowed directories allow writes too, so `COPY … TO`,
`EXPORT DATABASE`, `ATTACH`, `INSTALL` and every other statement are refused by type before
anything runs. The result is fetched in Arrow batches and written as it comes: a query of 10 M
rows never sits in memory whole.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TextIO

import duckdb

QUERY_TYPES = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
BATCH_ROWS = 10_000
MAX_CELL = 60  # table format: longer cells are cut with "…"
TABLE_WIDTH_ROWS = 1_000  # table format: column widths come from the first rows


class RefusedStatement(ValueError):
    """The SQL is empty, holds several statements, or a statement that is not a query."""


def check_not_empty(sql: str) -> None:
    if not sql.strip():
        raise RefusedStatement('empty query: give one SELECT statement, e.g. vidscore sql "SELECT count(*) FROM videos"')


def check_query(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but one query (RefusedStatement), before anything runs."""
    check_not_empty(sql)
    statements = con.extract_statements(sql)
    if not statements:
        raise RefusedStatement("no SQL statement in the query (only comments?)")
    if len(statements) > 1:
        raise RefusedStatement(f"{len(statements)} statements given: vidscore sql runs one query at a time")
    kind = statements[0].type
    if kind not in QUERY_TYPES:
        raise RefusedStatement(
            f"vidscore sql only runs queries (SELECT, EXPLAIN): {kind.name} statements are refused, "
            "it never writes, copies or attaches anything"
        )


def stream(con: duckdb.DuckDBPyConnection, sql: str, fmt: str, out: TextIO) -> int:
    """Run one checked query and write its result to `out` as it comes; returns the row count."""
    check_query(con, sql)
    relation = con.sql(sql)  # a relation streams its Arrow batches; a DB-API result is materialized first
    columns = list(relation.columns)
    batches = _row_batches(relation.to_arrow_reader(BATCH_ROWS))
    return {"csv": _write_csv, "json": _write_json, "table": _write_table}[fmt](columns, batches, out)


def _row_batches(reader: Any) -> Iterator[list[tuple]]:
    for batch in reader:
        names = [f"c{i}" for i in range(batch.num_columns)]  # duplicate column names stay apart
        rows = batch.rename_columns(names).to_pylist()
        yield [tuple(row[n] for n in names) for row in rows]


def _plain(value: Any) -> Any:
    """A value JSON can hold: NaN/inf become null, times become ISO text, bytes hex."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)  # UUID and the like


def _text(value: Any) -> str:
    """One cell as text: NULL is empty, nested values are JSON, times ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)  # NaN and inf stay what they are (NULL is the empty cell)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_plain(value), ensure_ascii=False)
    return str(_plain(value))


def _write_csv(columns: list[str], batches: Iterator[list[tuple]], out: TextIO) -> int:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for rows in batches:
        writer.writerows([_text(v) for v in row] for row in rows)
        n += len(rows)
    return n


def _write_json(columns: list[str], batches: Iterator[list[tuple]], out: TextIO) -> int:
    """A JSON array of one object per row (a repeated column name keeps its last value)."""
    out.write("[")
    n = 0
    for rows in batches:
        for row in rows:
            out.write(",\n" if n else "\n")
            out.write(json.dumps({c: _plain(v) for c, v in zip(columns, row, strict=True)}, ensure_ascii=False))
            n += 1
    out.write("\n]\n" if n else "]\n")
    return n


def _write_table(columns: list[str], batches: Iterator[list[tuple]], out: TextIO) -> int:
    """Aligned columns, NULL shown as NULL, then a "(N rows)" line; widths from the first rows."""
    head: list[list[str]] = []
    numeric = [True] * len(columns)
    pending = iter(batches)
    for rows in pending:
        for row in rows:
            head.append([_cell(v) for v in row])
            numeric = [k and (v is None or _is_number(v)) for k, v in zip(numeric, row, strict=True)]
        if len(head) >= TABLE_WIDTH_ROWS:
            break
    widths = [max([len(c), *(len(r[i]) for r in head)]) for i, c in enumerate(columns)]
    widths = [min(max(w, 1), MAX_CELL) for w in widths]

    def line(cells: list[str]) -> str:
        parts = [_fit(c, w, right) for c, w, right in zip(cells, widths, numeric, strict=True)]
        return " | ".join(parts).rstrip()

    out.write(line([_fit(c, w, False) for c, w in zip(columns, widths, strict=True)]) + "\n")
    out.write("-+-".join("-" * w for w in widths) + "\n")
    n = 0
    for cells in head:
        out.write(line(cells) + "\n")
        n += 1
    for rows in pending:
        for row in rows:
            out.write(line([_cell(v) for v in row]) + "\n")
            n += 1
    out.write(f"({n:,} row{'' if n == 1 else 's'})\n")
    return n


def _cell(value: Any) -> str:
    return "NULL" if value is None else _text(value).replace("\n", "\\n").replace("\t", "\\t")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def _fit(text: str, width: int, right: bool) -> str:
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.rjust(width) if right else text.ljust(width)
