"""Compare the tables of two warehouses row by row (e.g. `shopsense demo` before and after a
refactoring that must keep behaviour).

    .venv/bin/python scripts/compare_warehouses.py BEFORE_WAREHOUSE AFTER_WAREHOUSE [--layers gold,silver]

Lineage columns (run_id, computed_at, ingested_at) are left out; doubles are compared after
rounding to ``--digits`` decimals (default 9), so that only a change of result counts, not the
order of a floating-point sum. Prints one line per table (rows on each side, rows only on one
side) and exits 1 when any table differs or exists on one side only. Runs in Spark: nothing
is collected but counts.
"""

from __future__ import annotations

import argparse
import sys

LINEAGE = ("run_id", "computed_at", "ingested_at")


def comparable(df, digits: int, ignore: tuple[str, ...] = ()):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    cols = []
    for field in df.schema.fields:
        if field.name in LINEAGE or field.name in ignore:
            continue
        col = F.col(f"`{field.name}`")
        if isinstance(field.dataType, (T.DoubleType, T.FloatType)):
            col = F.round(col, digits)
        elif isinstance(field.dataType, T.MapType):
            col = F.to_json(col)     # maps cannot be compared by set operations
        cols.append(col.alias(field.name))
    return df.select(cols)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--layers", default="gold")
    parser.add_argument("--digits", type=int, default=9)
    parser.add_argument("--skip", default="gold.job_runs", help="tables left out (comma-separated)")
    parser.add_argument("--ignore-columns", default="",
                        help="columns left out besides the lineage ones, e.g. source_file when the "
                             "raw files were read from different folders")
    args = parser.parse_args(argv)

    from shopsense.core import tables
    from shopsense.core.config import conf_dir, load_conf
    from shopsense.core.session import build_session
    from shopsense.report.summary import list_tables

    before = load_conf([conf_dir() / "local.yaml"], [f"warehouse={args.before}"])
    after = load_conf([conf_dir() / "local.yaml"], [f"warehouse={args.after}", "spark.progress_bar=false"])
    spark = build_session(after)
    layers = set(args.layers.split(","))
    skip = set(args.skip.split(","))
    names = sorted({n for conf in (before, after) for n in list_tables(spark, conf)
                    if n.split(".")[0] in layers and n not in skip})
    differ = 0
    for name in names:
        present = [tables.table_exists(spark, c, name) for c in (before, after)]
        if not all(present):
            print(f"{name:40} only in {'before' if present[0] else 'after'}")
            differ += 1
            continue
        ignore = tuple(c for c in args.ignore_columns.split(",") if c)
        a = comparable(tables.read_table(spark, before, name), args.digits, ignore)
        b = comparable(tables.read_table(spark, after, name), args.digits, ignore)
        if a.columns != b.columns:
            print(f"{name:40} columns differ: {a.columns} vs {b.columns}")
            differ += 1
            continue
        only_a, only_b = a.exceptAll(b).count(), b.exceptAll(a).count()
        verdict = "equal" if only_a == only_b == 0 else "DIFFER"
        differ += verdict != "equal"
        print(f"{name:40} {verdict:6} rows {a.count():>9,} / {b.count():>9,}; only before "
              f"{only_a:,}, only after {only_b:,}")
    print(f"{len(names) - differ} of {len(names)} tables equal")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
