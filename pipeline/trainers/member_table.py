"""A user's per-member table (ASD predictions, loss weights), read from parquet or CSV and joined to an
output's accepted members by ``(set_id, member_id)``, the ids the manifest has."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ID_COLUMNS = ("set_id", "member_id")


class TableError(ValueError):
    """What is wrong with a user's table, in one line naming the file."""


def read_member_table(path: str, columns: tuple[str, ...]) -> pa.Table:
    """``path`` (.parquet or .csv) with at least the id columns and ``columns``."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif suffix == ".csv":
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in ID_COLUMNS}))
        else:
            raise TableError(f"{path}: unknown table format {suffix or '(none)'!r}; give a .parquet or .csv file")
    except (FileNotFoundError, IsADirectoryError):
        raise TableError(f"{path}: no such file") from None
    except pa.ArrowInvalid as exc:
        raise TableError(f"{path}: unreadable ({str(exc).splitlines()[0]})") from None
    missing = [c for c in (*ID_COLUMNS, *columns) if c not in table.column_names]
    if missing:
        raise TableError(f"{path}: missing column(s) {', '.join(missing)}; it needs {', '.join((*ID_COLUMNS, *columns))}")
    for name in ID_COLUMNS:
        if table.column(name).null_count:
            raise TableError(f"{path}: column {name} has empty values")
    return table


def rows_by_member(path: str, table: pa.Table, accepted: set[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """``(set_id, member_id) -> row``; refuses ids the output has no accepted member for, and repeats."""
    ids = list(zip(pc.cast(table.column("set_id"), pa.string()).to_pylist(),
                   pc.cast(table.column("member_id"), pa.string()).to_pylist()))
    unknown = [i for i in ids if i not in accepted]
    if unknown:
        named = ", ".join(f"{s}/{m}" for s, m in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise TableError(f"{path}: {len(unknown)} row(s) name members this output has not accepted: {named}")
    rows = {}
    for ident, row in zip(ids, table.to_pylist()):
        if ident in rows:
            raise TableError(f"{path}: member {ident[0]}/{ident[1]} appears more than once")
        rows[ident] = row
    return rows
