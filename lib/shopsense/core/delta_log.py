"""What a Delta table's transaction log says about it, read by the driver without Spark.

``shopsense tables`` lists every table with its rows, version and last run. Counting each table
with Spark is a job per table (and a scan for the last run); the log already has the answers:
the current version is the newest commit file, each live data file's ``add`` action carries
``stats.numRecords`` (minus the rows a deletion vector hides), and each Parquet file's footer
has the exact min/max of its ``run_id`` column. :func:`snapshot` reads those following the
Delta protocol (classic and multi-part checkpoints, then the JSON commits after them). Where
the log does not give an exact answer (a table on a remote file system, a V2 checkpoint, a file
without statistics, column mapping) it returns None, and the caller counts with Spark instead.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
_V2_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.[^.]+\.(?:json|parquet)$")


@dataclass(frozen=True)
class Snapshot:
    """A table's current state as its log records it."""

    version: int
    rows: int
    files: list[str]                 # absolute paths of the live data files
    columns: list[str]               # the table's column names
    deleted_rows: int                # rows hidden by deletion vectors (included in no count)


def local_path(path: str) -> str | None:
    """``path`` as a local file-system path, or None for a remote URI (``s3a://``, ``hdfs://``)."""
    if path.startswith("file:"):
        return unquote(urlparse(path).path)
    if "://" in path:
        return None
    return path


def snapshot(table_path: str) -> Snapshot | None:
    """The current version, row count, live files and columns of the Delta table at
    ``table_path``, from its log alone; None where the log cannot give them exactly (see the
    module docstring) or there is no table."""
    root = local_path(table_path)
    if root is None:
        return None
    log_dir = os.path.join(root, "_delta_log")
    try:
        names = os.listdir(log_dir)
    except OSError:
        return None
    commits = sorted(int(m.group(1)) for m in map(_COMMIT.match, names) if m)
    if any(_V2_CHECKPOINT.match(n) and not _CHECKPOINT.match(n) for n in names):
        return None
    checkpoint, parts = _complete_checkpoint(names)
    if not commits and checkpoint is None:
        return None
    version = max(commits[-1] if commits else -1, checkpoint if checkpoint is not None else -1)
    live: dict[tuple, tuple[int | None, int]] = {}
    metadata: dict | None = None
    start = 0
    if checkpoint is not None:
        state = _read_checkpoint([os.path.join(log_dir, p) for p in parts])
        if state is None:
            return None
        live, metadata = state
        start = checkpoint + 1
    expected = list(range(start, version + 1))
    if [c for c in commits if c >= start] != expected:
        return None                                   # a gap in the log: do not guess
    for v in expected:
        with open(os.path.join(log_dir, f"{v:020d}.json"), encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                action = json.loads(line)
                if "add" in action:
                    add = action["add"]
                    live[_key(add)] = (_num_records(add.get("stats")), _dv_rows(add.get("deletionVector")))
                elif "remove" in action:
                    live.pop(_key(action["remove"]), None)
                elif "metaData" in action:
                    metadata = action["metaData"]
    if metadata is None or _column_mapping(metadata):
        return None
    if any(n is None for n, _ in live.values()):
        return None
    columns = [f["name"] for f in json.loads(metadata["schemaString"])["fields"]]
    deleted = sum(d for _, d in live.values())
    return Snapshot(version=version, rows=sum(n for n, _ in live.values()) - deleted,
                    files=[_data_file(root, path) for path, _ in live], columns=columns,
                    deleted_rows=deleted)


def max_value(snap: Snapshot, column: str) -> str | None:
    """The largest value of a string ``column`` over the snapshot's files, from their Parquet
    footers (exact min/max statistics; Delta's own are cut to a prefix). None when the table
    has no such column or no rows, or a footer lacks the statistic (then ask Spark); with rows
    hidden by deletion vectors the footer maximum could be a deleted row's, so None too."""
    import pyarrow.parquet as pq

    if column not in snap.columns or snap.rows == 0 or snap.deleted_rows:
        return None
    best = None
    for path in snap.files:
        meta = pq.read_metadata(path)
        index = next((i for i in range(meta.num_columns)
                      if meta.schema.column(i).path == column), None)
        if index is None:
            return None
        for g in range(meta.num_row_groups):
            if meta.row_group(g).num_rows == 0:
                continue
            stats = meta.row_group(g).column(index).statistics
            if stats is None or not stats.has_min_max:
                if stats is not None and stats.null_count == meta.row_group(g).num_rows:
                    continue                          # all null: no value to compare
                return None
            value = stats.max.decode() if isinstance(stats.max, bytes) else stats.max
            best = value if best is None or value > best else best
    return best


def read_columns(snap: Snapshot, columns: list[str]) -> list[dict] | None:
    """The rows of ``columns`` of a small table (gold.job_runs) straight from its Parquet files
    (a column the files lack reads null), or None when deletion vectors hide rows of them."""
    import pyarrow.parquet as pq

    if snap.deleted_rows:
        return None
    out: list[dict] = []
    for path in snap.files:
        present = [c for c in columns if c in pq.read_schema(path).names]
        for row in pq.read_table(path, columns=present).to_pylist():
            out.append({c: row.get(c) for c in columns})
    return out


def _complete_checkpoint(names: list[str]) -> tuple[int | None, list[str]]:
    """The newest checkpoint whose parts are all present, and its file names."""
    found: dict[int, dict[int, str]] = {}
    totals: dict[int, int] = {}
    for n in names:
        m = _CHECKPOINT.match(n)
        if not m:
            continue
        v = int(m.group(1))
        part, total = (int(m.group(2)), int(m.group(3))) if m.group(2) else (1, 1)
        found.setdefault(v, {})[part] = n
        totals[v] = total
    for v in sorted(found, reverse=True):
        if len(found[v]) == totals[v]:
            return v, [found[v][p] for p in sorted(found[v])]
    return None, []


def _key(action: dict) -> tuple:
    """A logical file's identity in the log: its path and its deletion vector (a DELETE that
    writes a deletion vector removes the file without it and adds it back with it)."""
    dv = action.get("deletionVector")
    return action["path"], (dv["storageType"], dv["pathOrInlineDv"], dv.get("offset")) if dv else None


def _read_checkpoint(paths: list[str]) -> tuple[dict[tuple, tuple[int | None, int]], dict | None] | None:
    """Live files and the table metadata from a classic (or multi-part) checkpoint."""
    import pyarrow.parquet as pq

    live: dict[tuple, tuple[int | None, int]] = {}
    metadata = None
    for path in paths:
        schema_names = pq.read_schema(path).names
        if "sidecar" in schema_names or "checkpointMetadata" in schema_names:
            return None                               # a V2 checkpoint: not read here
        for row in pq.read_table(path, columns=[c for c in ("add", "metaData") if c in schema_names]).to_pylist():
            add = row.get("add")
            if add:
                stats = add.get("stats")
                if stats is None and add.get("stats_parsed"):
                    stats = json.dumps({"numRecords": add["stats_parsed"].get("numRecords")})
                live[_key(add)] = (_num_records(stats), _dv_rows(add.get("deletionVector")))
            if row.get("metaData"):
                metadata = row["metaData"]
    return live, metadata


def _num_records(stats: str | None) -> int | None:
    if not stats:
        return None
    value = json.loads(stats).get("numRecords")
    return None if value is None else int(value)


def _dv_rows(dv: dict | None) -> int:
    return int(dv.get("cardinality") or 0) if dv else 0


def _column_mapping(metadata: dict) -> bool:
    configuration = metadata.get("configuration") or {}
    if isinstance(configuration, list):               # a checkpoint's map, as pyarrow reads it
        configuration = dict(configuration)
    mode = configuration.get("delta.columnMapping.mode", "none")
    return mode not in ("none", None)


def _data_file(root: str, path: str) -> str:
    """An ``add`` path (URL-encoded, relative to the table, or an absolute URI) as a local path."""
    if "://" in path or path.startswith("file:"):
        return local_path(path) or path
    return os.path.join(root, unquote(path))
