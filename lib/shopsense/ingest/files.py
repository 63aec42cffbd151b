"""silver.ingested_files: which raw files each source's ingest has read, so the nightly run
reads only what is new.

A listed file whose path, size and modification time match its entry is skipped unread. A file
that is new, or whose size or time changed, is hashed (SHA-256 of its bytes, in Spark); when the
hash equals its entry's the file is only touched (its entry refreshed), otherwise it is read, and
a changed file replaces the rows it had given (silver, quarantine and bronze). A file that
disappears keeps its rows: deleting an export is not deleting the orders in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import tables
from shopsense.core.runs import JobRun
from shopsense.ingest.read import IngestError, InputFile

TABLE = "silver.ingested_files"

INGESTED_FILES = T.StructType([
    T.StructField("source_name", T.StringType(), False),
    T.StructField("path", T.StringType(), False),
    T.StructField("size", T.LongType(), False),
    T.StructField("modified_ms", T.LongType(), False),
    T.StructField("content_hash", T.StringType(), False),
    T.StructField("records", T.LongType(), True),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("computed_at", T.TimestampType(), False),
])


@dataclass
class FilePlan:
    """What this run does with each listed file."""

    read: list[InputFile]        # new or changed content: read and ingested
    changed: list[str]           # of those, paths that had given rows before (replace them)
    touched: list[InputFile]     # size or time changed, same content: entry refreshed, not read
    unchanged: int               # skipped unread
    hashes: dict[str, str]       # content hash of every file read or touched


def content_hashes(spark: SparkSession, files: list[InputFile]) -> dict[str, str]:
    """SHA-256 of each file's bytes, computed by the executors (one file per row)."""
    if not files:
        return {}
    rows = (spark.read.format("binaryFile").load([f.path for f in files])
            .select("path", F.sha2("content", 256).alias("hash")).collect())
    by_path = {r["path"]: r["hash"] for r in rows}
    # binaryFile reports paths in the file system's qualified form, as the listing does
    missing = [f.path for f in files if f.path not in by_path]
    if missing:
        raise IngestError(f"cannot read {missing[0]} (it vanished or is not readable while being listed)")
    return {f.path: by_path[f.path] for f in files}


def plan(run: JobRun, source_name: str, listed: list[InputFile], incremental: bool) -> FilePlan:
    """Compare the listed files with silver.ingested_files; see the module docstring."""
    known: dict[str, tuple[int, int, str]] = {}
    if tables.table_exists(run.spark, run.conf, TABLE):
        entries = run.read(TABLE).filter(F.col("source_name") == source_name)
        # one row per file of this source: small next to the data it lists
        known = {r["path"]: (r["size"], r["modified_ms"], r["content_hash"]) for r in entries.collect()}
    candidates = [f for f in listed
                  if not incremental or known.get(f.path, (None, None, None))[:2] != (f.size, f.modified_ms)]
    hashes = content_hashes(run.spark, candidates)
    read, touched = [], []
    for f in candidates:
        same = f.path in known and known[f.path][2] == hashes[f.path]
        (touched if same and incremental else read).append(f)
    changed = [f.path for f in read if f.path in known]
    return FilePlan(read, changed, touched, len(listed) - len(candidates), hashes)


def record(run: JobRun, source_name: str, file_plan: FilePlan, records: dict[str, int]) -> None:
    """Upsert the entries of the files read or touched (one MERGE on source and path)."""
    entries = [(source_name, f.path, f.size, f.modified_ms, file_plan.hashes[f.path],
                records.get(f.path, 0) if f in file_plan.read else None, run.run_id, run.computed_at)
               for f in file_plan.read + file_plan.touched]
    if not entries:
        return
    df = run.spark.createDataFrame(entries, INGESTED_FILES)
    tables.upsert(run.spark, df, run.conf, TABLE, ["source_name", "path"],
                  keep_when_null=["records"])
