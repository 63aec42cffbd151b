"""Benchmark: the nightly ingest reads only what is new.

Thirty daily order files (the sample generator's orders split by day, as CSV) arrive one per day;
the ingest runs once per day in one Spark session. Printed per day: the files and records read
and the seconds; then the ratios the claim rests on, in one run:

- day 30 against day 1 of the incremental ingest (each reads one file: the ratio should stay
  near 1, at most 1.5);
- the same day 30 with ``ingest.incremental: false`` (every file re-read, re-hashed and re-staged
  as before) against the incremental day 30: what reading only new files saves.

    .venv/bin/python bench/bench_ingest_incremental.py [--customers 20000] [--days 30]

Times are wall-clock on a shared machine: quote them with the load (`uptime`) beside them. Not a
test: it prints its figures and exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from pyspark.sql import functions as F  # noqa: E402

from shopsense.core.config import conf_dir, load_conf  # noqa: E402
from shopsense.core.session import build_session  # noqa: E402
from shopsense.ingest import batch as ingest  # noqa: E402
from shopsense.ingest import sample  # noqa: E402


def daily_files(spark, spec, out: Path) -> list[Path]:
    """The sample's orders, one CSV file per order day (Spark writes them; one part each)."""
    lines = sample.order_lines(spark, spec).withColumn("day", F.to_date("ordered_at"))
    staged = out / "_all"
    lines.write.partitionBy("day").mode("overwrite").parquet(str(staged))
    files = []
    for day in sorted(p.name.removeprefix("day=") for p in staged.glob("day=*")):
        target = out / f"orders-{day}"
        spark.read.parquet(str(staged / f"day={day}")).coalesce(1).write.option("header", "true").csv(str(target))
        part = next(target.glob("part-*.csv"))
        files.append(part.rename(out / f"orders-{day}.csv"))
        shutil.rmtree(target)
    shutil.rmtree(staged)
    return files


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--skus", type=int, default=600)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-ingest-"))
    arriving, warehouse = work / "arriving", work / "warehouse"
    shutil.rmtree(work / "files", ignore_errors=True)
    for d in (arriving, warehouse):
        shutil.rmtree(d, ignore_errors=True)
    arriving.mkdir(parents=True)

    def conf_for(wh: Path, *extra: str):
        return load_conf([conf_dir() / "local.yaml"], [
            f"warehouse={wh}", "ingest.source=daily", f"sources.daily.orders.path={arriving}",
            "sources.daily.orders.format=csv", "sources.daily.orders.cancel_prefix=C",
            "sources.daily.orders.timestamp_format=yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
            "spark.conf.spark.driver.memory=4g", *extra])

    conf = conf_for(warehouse)
    spark = build_session(conf)
    spark.sparkContext.setLogLevel("ERROR")
    spec = sample.SampleSpec(n_customers=args.customers, n_skus=args.skus, n_days=max(args.days, 28),
                             start_date="2024-01-01", seed=7)
    files = daily_files(spark, spec, work / "files")[: args.days]
    print(f"{len(files)} daily files, {sum(f.stat().st_size for f in files) / 2**20:,.1f} MiB; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)

    times = []
    print(f"{'day':>4} {'files read':>10} {'records read':>12} {'seconds':>8}")
    for i, f in enumerate(files, 1):
        shutil.copy(f, arriving / f.name)
        t0 = time.perf_counter()
        m = ingest.run(spark, conf)["metrics"]
        times.append(time.perf_counter() - t0)
        print(f"{i:>4} {m['files']:>10,.0f} {m['rows_read']:>12,.0f} {times[-1]:>8.1f}", flush=True)

    full_wh = work / "warehouse-full"
    shutil.rmtree(full_wh, ignore_errors=True)
    t0 = time.perf_counter()
    m = ingest.run(spark, conf_for(full_wh, "ingest.incremental=false"))["metrics"]
    full = time.perf_counter() - t0
    print(f"full re-read of day {len(files)}: {m['files']:,.0f} files, {m['rows_read']:,.0f} records, {full:.1f} s")
    print(f"\nday {len(files)} / day 1 (incremental): {times[-1] / times[0]:.2f}")
    print(f"full re-read / incremental on day {len(files)}: {full / times[-1]:.2f}")
    print(f"load at the end {os.getloadavg()[0]:.2f} ({dt.datetime.now():%H:%M})")
    spark.stop()


if __name__ == "__main__":
    main()
