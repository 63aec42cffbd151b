"""Reading raw files so that records stay whole: listing a source's files, CSV parsed as RFC 4180
(quoted newlines, doubled quotes) with a record that cannot be split kept whole in
``_corrupt_record``, files grouped by their header so that column order may differ between
files, JSON with nested fields, Parquet with nanosecond timestamps; and resolving the column
mapping, dotted paths into nested fields included."""

from __future__ import annotations

import csv
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core.config import resolve_path
from shopsense.core.settings import FileSpec
from shopsense.ingest.rules import CONTROL_CHARACTERS, CORRUPT_RECORD

DEFAULT_ENCODING = "UTF-8"

#: Python's canonical encoding names (conf is validated with Python's codecs) as Spark names
#: them. Spark reads only these unless spark.sql.legacy.javaCharsets is on; for any other
#: (windows-1252, shift_jis, ...) the ingest turns it on and passes Java the name.
SPARK_ENCODINGS = {"utf-8": "utf-8", "iso8859-1": "iso-8859-1", "ascii": "us-ascii",
                   "utf-16": "utf-16", "utf-16-be": "utf-16be", "utf-16-le": "utf-16le",
                   "utf-32": "utf-32", "cp1252": "windows-1252"}


class IngestError(RuntimeError):
    """Input the ingest cannot take: a missing file or column, an empty file, a missing key."""


@dataclass(frozen=True)
class InputFile:
    """One data file of a source, as the file system lists it."""

    path: str
    size: int
    modified_ms: int


def _fs(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath, hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def list_input_files(spark: SparkSession, path: str) -> list[InputFile]:
    """Every data file a path or glob names, directories listed recursively (hidden ``_``/``.``
    files skipped), sorted by path. Raises IngestError when nothing matches."""
    hpath, fs = _fs(spark, path)
    statuses = fs.globStatus(hpath)
    if not statuses:
        raise IngestError(f"no input files match {path}")
    found: list[InputFile] = []
    for status in statuses:
        if status.isDirectory():
            it = fs.listFiles(status.getPath(), True)
            while it.hasNext():
                f = it.next()
                if not f.getPath().getName().startswith(("_", ".")):
                    found.append(InputFile(f.getPath().toString(), int(f.getLen()),
                                           int(f.getModificationTime())))
        else:
            found.append(InputFile(status.getPath().toString(), int(status.getLen()),
                                   int(status.getModificationTime())))
    if not found:
        raise IngestError(f"no input files match {path} (the folder holds no data files)")
    return sorted(found, key=lambda f: f.path)


def first_line(spark: SparkSession, path: str, encoding: str) -> str:
    """The first line of a (possibly compressed) file, read through Hadoop's file system and
    codecs, so it works on any storage Spark reads. Raises IngestError naming an unreadable file."""
    jvm = spark.sparkContext._jvm
    hpath, fs = _fs(spark, path)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    try:
        stream = fs.open(hpath)
        codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf).getCodec(hpath)
        if codec is not None:
            stream = codec.createInputStream(stream)
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, encoding))
        try:
            line = reader.readLine()
        finally:
            reader.close()
    except Exception as exc:  # a Py4J error: a corrupt archive, a permission problem
        java = getattr(exc, "java_exception", None)
        cause = (java.toString() if java is not None else str(exc)).strip().splitlines()
        raise IngestError(f"cannot read {path}: {cause[0] if cause else type(exc).__name__}") from None
    return (line or "").lstrip("\ufeff")


def spark_encoding(spark: SparkSession, spec: FileSpec) -> str:
    """The encoding option for Spark's readers (see SPARK_ENCODINGS)."""
    if spec.encoding is None:
        return DEFAULT_ENCODING
    name = SPARK_ENCODINGS.get(spec.encoding, spec.encoding)
    if name not in ("utf-8", "iso-8859-1", "us-ascii", "utf-16", "utf-16be", "utf-16le", "utf-32"):
        spark.conf.set("spark.sql.legacy.javaCharsets", "true")
    return name


def _csv_options(spark: SparkSession, spec: FileSpec) -> dict[str, str]:
    options = {"header": "true", "inferSchema": "false", "multiLine": "true", "quote": '"',
               "escape": '"', "mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT_RECORD,
               "encoding": spark_encoding(spark, spec)}
    options.update({k: str(v) for k, v in spec.options.items()})
    return options


#: Delimiters a header split on another one may reveal: ``a;b;c`` read with ``,`` is one column.
_OTHER_DELIMITERS = (";", "\t", "|")


def header_not_text(header: str, encoding: str) -> str | None:
    """Why a CSV file's first line, decoded in ``encoding``, is not a header (None when it may
    be one): a UTF-16/32 file read as a one-byte encoding shows its byte-order mark and NUL
    bytes between the letters; a ZIP (an .xlsx workbook), gzip or Parquet file renamed .csv
    shows its magic bytes or control characters."""
    if header.startswith(("\ufffd\ufffd", "\xff\xfe", "\xfe\xff")) or \
            (len(header) > 4 and header.count("\x00") >= len(header) // 3):
        return (f"is not {encoding} text: it looks like UTF-16 or UTF-32 (a byte-order mark or NUL "
                f"bytes between the letters); set encoding: utf-16 (or utf-32) on this file spec")
    for magic, kind in (("PK\x03\x04", "a ZIP archive (an .xlsx workbook?)"), ("PAR1", "a Parquet file"),
                        ("\x1f\ufffd", "a gzip file without a .gz name"), ("\x1f\x8b", "a gzip file without a .gz name")):
        if header.startswith(magic):
            return f"is not CSV text: it starts like {kind}"
    if CONTROL_CHARACTERS.search(header):
        return f"is not {encoding} CSV text: its first line holds control characters or NUL bytes"
    return None


def _read_csv(spark: SparkSession, spec: FileSpec, files: list[InputFile],
              headers: dict[tuple[str, ...], list[str]] | None = None,
              what: str = "csv") -> DataFrame:
    """CSV files read with the columns their own header names: files are grouped by header
    and the groups united by column name, so column order and extra columns may differ.
    ``headers``, when given, receives the groups (column names → file paths)."""
    options = _csv_options(spark, spec)
    delimiter = options.get("sep", options.get("delimiter", ","))
    groups: dict[tuple[str, ...], list[str]] = {} if headers is None else headers
    for f in files:
        header = first_line(spark, f.path, options["encoding"])
        not_text = header_not_text(header, options["encoding"])
        if not_text:
            raise IngestError(f"{what}: {f.path} {not_text}")
        names = next(csv.reader([header], delimiter=delimiter, quotechar=options["quote"]), [])
        if not [n for n in names if n.strip()]:
            raise IngestError(f"{f.path} has no header line")
        names = [n.strip() for n in names]
        repeated = sorted({n for n in names if n and names.count(n) > 1})
        if repeated:
            raise IngestError(f"{f.path}: its header names column{'s' if len(repeated) > 1 else ''} "
                              f"{', '.join(repeated)} more than once; rename one of each")
        groups.setdefault(tuple(names), []).append(f.path)
    frames = []
    for names, paths in groups.items():
        schema = T.StructType([T.StructField(n or f"_unnamed_{i}", T.StringType()) for i, n in enumerate(names)]
                              + [T.StructField(CORRUPT_RECORD, T.StringType())])
        # the file's path before the union: a union of scans has no _metadata column
        frames.append(spark.read.options(**options).schema(schema).csv(paths)
                      .withColumn(C.SOURCE_FILE, F.col("_metadata.file_path")))
    out = frames[0]
    for frame in frames[1:]:
        out = out.unionByName(frame, allowMissingColumns=True)
    return out


def check_headers(headers: dict[tuple[str, ...], list[str]], needed: dict[str, tuple[str, ...]],
                  what: str) -> None:
    """Raise IngestError naming a CSV file whose header lacks a needed column. ``needed`` maps a
    column's label (``StockCode (for sku)``) to its source name and the names that may stand in
    for it (a line total for a unit price); a file has it when its header names any of them."""
    for names, paths in headers.items():
        lacking = [label for label, alternatives in needed.items() if not set(alternatives) & set(names)]
        if lacking:
            more = f" (and {len(paths) - 1} more file{'s' if len(paths) > 2 else ''} with its header)" \
                if len(paths) > 1 else ""
            raise IngestError(f"{what}: {paths[0]}{more} lacks required column{'s' if len(lacking) > 1 else ''} "
                              f"{', '.join(lacking)}; its header: {', '.join(n for n in names if n)}"
                              f"{_delimiter_hint(list(names))}")


def _delimiter_hint(columns: list[str]) -> str:
    """What to set when a header read as one column is split by another delimiter."""
    found = [d for d in _OTHER_DELIMITERS if len(columns) == 1 and d in columns[0]]
    return (f" (one column: the header looks separated by {found[0]!r}; set options: "
            f"{{sep: {found[0]!r}}} on this file spec)") if found else ""


def read_files(spark: SparkSession, spec: FileSpec, what: str,
               files: list[InputFile] | None = None,
               headers: dict[tuple[str, ...], list[str]] | None = None) -> DataFrame:
    """Read a file spec's files (or the given subset) with ``source_file`` added: CSV as text
    columns (see :func:`_read_csv`; ``headers`` receives its header groups), JSON with
    primitives as text and nested objects as structs, Parquet as typed (nanosecond timestamps
    as epoch longs). Checks first that the files exist and none is empty."""
    if files is None:
        files = list_input_files(spark, resolve_path(spec.path))
    empty = [f.path for f in files if f.size == 0]
    if empty:
        raise IngestError(f"{what}: input file {empty[0]} is empty (no header, no rows)")
    paths = [f.path for f in files]
    if spec.format == "csv":
        df = _read_csv(spark, spec, files, headers, what)
    elif spec.format == "json":
        options = {"primitivesAsString": "true", "mode": "PERMISSIVE",
                   "columnNameOfCorruptRecord": CORRUPT_RECORD,
                   "encoding": spark_encoding(spark, spec)}
        options.update({k: str(v) for k, v in spec.options.items()})
        df = spark.read.options(**options).json(paths)
    else:
        # pandas writes timestamps as INT64 nanoseconds, which Spark refuses as timestamps:
        # read them as longs (rules.to_timestamp turns epochs into timestamps).
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
        options = {"mergeSchema": "true", **{k: str(v) for k, v in spec.options.items()}}
        df = spark.read.options(**options).parquet(*paths)
    if CORRUPT_RECORD not in df.columns:
        df = df.withColumn(CORRUPT_RECORD, F.lit(None).cast("string"))
    if C.SOURCE_FILE not in df.columns:
        df = df.withColumn(C.SOURCE_FILE, F.col("_metadata.file_path"))
    return df


def field_type(df: DataFrame, name: str) -> T.DataType | None:
    """The type of a column, or of a dotted path into nested structs (``customer.id``); None
    when the frame has neither. A top-level column whose name contains dots wins."""
    if name in df.columns:
        return df.schema[name].dataType
    dtype: T.DataType = df.schema
    for part in name.split("."):
        if not isinstance(dtype, T.StructType) or part not in dtype.names:
            return None
        dtype = dtype[part].dataType
    return dtype


def source_column(df: DataFrame, name: str) -> Column:
    """The column (or nested field) ``name`` names; see :func:`field_type`."""
    if name in df.columns:
        return F.col(f"`{name}`")
    return F.col(".".join(f"`{part}`" for part in name.split(".")))


def column_mapping(df: DataFrame, spec: FileSpec, required: tuple[str, ...],
                   optional: tuple[str, ...], what: str,
                   alternatives: dict[str, str] | None = None) -> dict[str, str | None]:
    """Canonical name → source column or dotted path (None for an absent optional one).
    ``alternatives`` names, per required column, an optional one that may stand in for it
    (a line total for a unit price). Raises IngestError naming every required column the files
    lack and the columns they have."""
    alternatives = alternatives or {}
    present = [c for c in df.columns if c not in (C.SOURCE_FILE, CORRUPT_RECORD)]
    resolved: dict[str, str | None] = {}
    for canon in required + optional:
        source_col = spec.columns.get(canon, canon)
        resolved[canon] = source_col if field_type(df, source_col) is not None else None
    missing = []
    for canon in required:
        if resolved[canon] is None and not resolved.get(alternatives.get(canon, "")):
            source_col = spec.columns.get(canon, canon)
            missing.append(source_col if source_col == canon else f"{source_col} (for {canon})")
    if missing:
        hint = _delimiter_hint(present) if spec.format == "csv" else ""
        raise IngestError(f"{what}: required column{'s' if len(missing) > 1 else ''} "
                          f"{', '.join(missing)} not found in {spec.path}; "
                          f"columns present: {', '.join(present)}{hint}")
    return resolved
