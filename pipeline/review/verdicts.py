"""Reviewers' verdicts: one parquet file per reviewer under ``OUT/reviews/``, every action a row.

A verdict names a set, and a member of it or none (the whole set), says accept or reject, and why. The file is
a log: a later verdict on the same set and member replaces an earlier one, and undo removes the last row, so
the earlier verdict is back. Each save rewrites the reviewer's file under a temporary name and renames it,
under a lock held across read and write, so two servers (or two tabs) writing for the same reviewer lose
nothing, and a crash leaves the previous file whole.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import re
import threading
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.output.storage import Storage
from schemas.layout import REVIEW_IMPORTED_DIR, REVIEWS_DIR
from schemas.records import VERDICT_ACCEPT, VERDICT_REJECT

VERDICTS = pa.schema(
    [
        pa.field("set_id", pa.string(), nullable=False),
        pa.field("member_id", pa.string()),  # null: the verdict is on the whole set
        pa.field("verdict", pa.string(), nullable=False),  # accept | reject
        pa.field("reason", pa.string()),
        pa.field("reviewer", pa.string(), nullable=False),
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
VERDICT_VALUES = (VERDICT_ACCEPT, VERDICT_REJECT)
REVIEWER_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REQUIRED_COLUMNS = ("set_id", "verdict", "reviewer")


class ReviewError(ValueError):
    """Verdicts that cannot be taken (an unknown set, a bad value, an unreadable file); one line says which."""


def check_reviewer(name: str) -> str:
    if not REVIEWER_PATTERN.match(name or ""):
        raise ReviewError(f"reviewer name {name!r}: use 1-64 letters, digits, '_' or '-' (it names the file "
                          f"{REVIEWS_DIR}/NAME.parquet)")
    return name


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class VerdictStore:
    """One reviewer's verdicts in an output."""

    _threads = threading.Lock()  # fcntl locks are per process: threads of one server also queue here

    def __init__(self, storage: Storage, reviewer: str):
        self.storage = storage
        self.reviewer = check_reviewer(reviewer)
        self.name = f"{reviewer}.parquet"

    @contextmanager
    def _locked(self):
        with self._threads:
            if self.storage.fs.type_name != "local":  # object stores have no locks: one writer per reviewer there
                yield
                return
            lock_path = Path(self.storage.path(REVIEWS_DIR, f".{self.reviewer}.lock"))
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(lock_path, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def rows(self) -> list[dict]:
        """Every verdict this reviewer gave, oldest first."""
        if not self.storage.exists(REVIEWS_DIR, self.name):
            return []
        return pq.read_table(self.storage.open_input(REVIEWS_DIR, self.name)).to_pylist()

    def _write(self, rows: list[dict]) -> None:
        table = pa.Table.from_pylist(rows, schema=VERDICTS)
        with self.storage.open_atomic(REVIEWS_DIR, self.name) as stream:
            pq.write_table(table, stream)

    def add(self, set_id: str, member_id: str | None, verdict: str, reason: str | None) -> dict:
        if verdict not in VERDICT_VALUES:
            raise ReviewError(f"verdict {verdict!r}: allowed {', '.join(VERDICT_VALUES)}")
        with self._locked():
            rows = self.rows()
            time = now()
            if rows and time <= rows[-1]["time"]:  # keep the log's order even if the clock steps back
                time = rows[-1]["time"] + dt.timedelta(microseconds=1)
            row = {"set_id": set_id, "member_id": member_id, "verdict": verdict, "reason": reason or None,
                   "reviewer": self.reviewer, "time": time}
            self._write(rows + [row])
        return row

    def undo(self) -> dict | None:
        """Remove the last verdict; returns it (None when there was none)."""
        with self._locked():
            rows = self.rows()
            if not rows:
                return None
            self._write(rows[:-1])
        return rows[-1]


def latest(rows: list[dict]) -> dict[tuple, dict]:
    """(reviewer, set_id, member_id) -> the verdict that stands: the last one given."""
    out: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda r: (r["reviewer"], r["time"])):
        out[(row["reviewer"], row["set_id"], row["member_id"])] = row
    return out


def read_verdict_file(path: str) -> list[dict]:
    """A team's own verdicts: CSV or parquet with the columns of VERDICTS (member_id, reason, time optional)."""
    try:
        if path.endswith(".csv"):
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={"set_id": pa.string(), "member_id": pa.string(), "reason": pa.string(),
                              "reviewer": pa.string(), "verdict": pa.string()},
                strings_can_be_null=True))
        else:
            table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ReviewError(f"{path}: unreadable verdicts file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ReviewError(f"{path}: no column {', '.join(missing)}; a verdicts file has "
                          f"{', '.join(VERDICTS.names)} (member_id, reason and time may be left out)")
    rows = table.to_pylist()
    timed = sum(row.get("time") is not None for row in rows)
    if 0 < timed < len(rows):
        raise ReviewError(f"{path}: {len(rows) - timed} of {len(rows)} rows have no time; give every row a time, "
                          "or none (then rows stand in file order)")
    out = []
    for number, row in enumerate(rows, start=2 if path.endswith(".csv") else 1):
        where = f"{path} row {number}"
        verdict = row.get("verdict")
        verdict = verdict.strip().lower() if isinstance(verdict, str) else verdict
        if verdict not in VERDICT_VALUES:
            raise ReviewError(f"{where}: verdict {row.get('verdict')!r}; allowed {', '.join(VERDICT_VALUES)}")
        for column in ("set_id", "reviewer"):
            if not isinstance(row.get(column), str) or not row[column].strip():
                raise ReviewError(f"{where}: no {column}")
        member, reason = row.get("member_id"), row.get("reason")
        out.append({"set_id": row["set_id"].strip(), "member_id": str(member).strip() or None if member else None,
                    "verdict": verdict, "reason": str(reason).strip() or None if reason else None,
                    "reviewer": check_reviewer(row["reviewer"].strip()),
                    "time": _time(row.get("time"), number, where), "source": path})
    return out


def _time(value, number: int, where: str) -> dt.datetime:
    """A verdict's time as an aware datetime; rows without one stand in file order."""
    if value is None:
        return dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=number)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ReviewError(f"{where}: time {value!r} is not ISO 8601") from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = dt.datetime.fromtimestamp(value, dt.timezone.utc)  # seconds since the epoch
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise ReviewError(f"{where}: time {value!r} is not a time")
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


def output_verdicts(storage: Storage, skip_imported: set[str] = frozenset()) -> list[dict]:
    """Every reviewer's verdicts saved in the output, and the files imported by earlier applies (except the
    names in ``skip_imported``, given again)."""
    out = []
    for name in storage.list(REVIEWS_DIR):
        if name.endswith(".parquet") and not name.startswith("."):
            store = VerdictStore(storage, name[: -len(".parquet")])
            out += [dict(row, source=f"{REVIEWS_DIR}/{name}") for row in store.rows()]
    for name in storage.list(REVIEW_IMPORTED_DIR):
        if name.endswith(".parquet") and not name.startswith(".") and name not in skip_imported:
            rows = pq.read_table(storage.open_input(REVIEW_IMPORTED_DIR, name)).to_pylist()
            out += [dict(row, source=f"{REVIEW_IMPORTED_DIR}/{name}") for row in rows]
    return out


def imported_name(path: str) -> str:
    """The name a verdicts file is kept under in OUT/reviews/imported/: its stem and a hash of where it is, so
    two files of one name from two folders are both kept, and giving the same file again replaces its copy.
    (Copies an earlier version kept as ``{stem}.parquet`` still count.)"""
    where = hashlib.sha256(str(Path(path).resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).stem)[:64] or "verdicts"
    return f"{stem}-{where}.parquet"


def keep_imported(storage: Storage, path: str, rows: list[dict]) -> None:
    """Keep a given file's verdicts in the output, so a later apply without it still counts them."""
    table = pa.Table.from_pylist([{k: row[k] for k in VERDICTS.names} for row in rows], schema=VERDICTS)
    with storage.open_atomic(REVIEW_IMPORTED_DIR, imported_name(path)) as stream:
        pq.write_table(table, stream)


def check_known(rows: list[dict], members: dict[str, list[str]]) -> None:
    """Refuse, in one line, a verdict naming a set or member the output does not have."""
    for row in rows:
        if row["set_id"] not in members:
            raise ReviewError(f"{row['source']}: unknown set {row['set_id']!r} (reviewer {row['reviewer']}); "
                              "set ids are the manifest's set_id")
        if row["member_id"] is not None and row["member_id"] not in members[row["set_id"]]:
            raise ReviewError(f"{row['source']}: set {row['set_id']} has no member {row['member_id']!r}; it has "
                              f"{', '.join(members[row['set_id']])}")
