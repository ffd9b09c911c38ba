"""Listing a parquet list: its path (or uri) column and its seed_id, concept and caption columns when present.
Relative paths are next to the list, under its protocol too; a path the list may not name (stages.ingest.scope)
is listed with the reason, so it ends as an error row without a byte of it read."""

from __future__ import annotations

import posixpath

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from stages.ingest.config import IngestConfig
from stages.ingest.scope import LOCAL, ListScope, is_local_fs

WANTED = {"seed_id": "source_seed_id", "concept": "concept", "caption": "caption"}


def _scope_errors(paths: pa.Array, scope: ListScope) -> pa.Array:
    """The reason for each path the list may not name; null for the others (and for empty paths, which decode
    reports as given no path). Paths plainly on the list's own filesystem (next to it, most often) are found
    by arrow in one pass; only the others are parsed one by one."""
    plain = pc.invert(pc.match_substring(paths, "::"))
    if scope.protocol == LOCAL:
        own = pc.invert(pc.match_substring(paths, "://"))
    else:
        own = pc.starts_with(paths, scope.own)
    fine = pc.fill_null(pc.or_(pc.equal(paths, ""), pc.and_(own, plain)), True)
    checked = pc.indices_nonzero(pc.invert(fine))
    if len(checked) == 0:
        return pa.nulls(len(paths), pa.string())
    reasons: list[str | None] = [None] * len(paths)
    for index, uri in zip(checked.to_pylist(), paths.take(checked).to_pylist()):
        reasons[index] = scope.problem(uri)
    return pa.array(reasons, pa.string())


def list_parquet(config: IngestConfig) -> pa.Table:
    fs, path = fsspec.core.url_to_fs(config.path, **config.fs_options(config.path))
    filesystem = None if is_local_fs(fs) else fs
    dataset = pads.dataset(path, filesystem=filesystem, format="parquet")  # one file, or a folder of them
    columns = set(dataset.schema.names)
    path_column = "path" if "path" in columns else "uri" if "uri" in columns else None
    if path_column is None:
        raise ValueError(f"input.path {config.path!r}: the parquet list needs a 'path' or 'uri' column")
    wanted = {path_column: "source_uri", **WANTED}
    table = dataset.to_table(columns=[c for c in wanted if c in columns])
    arrays = {}
    for column, name in wanted.items():
        if column in columns:
            try:
                arrays[name] = pc.cast(table.column(column), pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise ValueError(f"input.path {config.path!r}: its {column!r} column must hold text, "
                                 f"not {table.schema.field(column).type}") from None
    paths = pc.fill_null(arrays["source_uri"], "")
    relative = pc.and_(pc.and_(pc.not_equal(paths, ""), pc.invert(pc.match_substring(paths, "://"))),
                       pc.invert(pc.starts_with(paths, "/")))
    prefix = posixpath.join(posixpath.dirname(config.path), "")
    arrays["source_uri"] = pc.if_else(relative, pc.binary_join_element_wise(prefix, paths, ""), paths)
    table = pa.table(arrays).combine_chunks()
    scope = ListScope(config.path, config.allow_paths)
    errors = _scope_errors(table.column("source_uri").combine_chunks(), scope)
    return table.append_column("source_error", errors)
