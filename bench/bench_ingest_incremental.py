"""Benchmark: the nightly ingest reads only what is new.

Thirty daily order files (the sample generator's orders split by day, as CSV) arrive one per day;
the ingest runs once per day in one Spark session. Printed per day: the files and records read
and the seconds; then the ratios the claim rests on, in one run:

- day 30 against day 1 of the incremental ingest (each reads one file: the ratio should stay
  near 1, at most 1.5);
- the same day 30 with ``ingest.incremental: false`` (every file re-read, re-hashed and re-staged
  as before), on a copy of the warehouse as day 29 left it, against the incremental day 30: what
  reading only new files saves;
- the peer: Spark Structured Streaming's file source (``trigger(availableNow=True)``, its
  checkpoint remembering the files it has read) appending the same daily files as text to a
  Delta table, one trigger per day. It validates nothing and keys nothing, so it is the floor of
  what "read only the new file" costs in this Spark; printed: its day 30 / day 1, and shopsense's
  day 30 against its day 30.

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
    full_wh = work / "warehouse-full"
    print(f"{'day':>4} {'files read':>10} {'records read':>12} {'seconds':>8} {'load':>5}")
    for i, f in enumerate(files, 1):
        if i == len(files):   # the warehouse as the day before left it, for the full re-read
            shutil.rmtree(full_wh, ignore_errors=True)
            shutil.copytree(warehouse, full_wh)
        shutil.copy(f, arriving / f.name)
        t0 = time.perf_counter()
        m = ingest.run(spark, conf)["metrics"]
        times.append(time.perf_counter() - t0)
        print(f"{i:>4} {m['files']:>10,.0f} {m['rows_read']:>12,.0f} {times[-1]:>8.1f} "
              f"{os.getloadavg()[0]:>5.2f}", flush=True)

    t0 = time.perf_counter()
    m = ingest.run(spark, conf_for(full_wh, "ingest.incremental=false"))["metrics"]
    full = time.perf_counter() - t0
    print(f"full re-read on day {len(files)}: {m['files']:,.0f} files, {m['rows_read']:,.0f} records, "
          f"{full:.1f} s")

    peer = streaming_peer(spark, files, work / "peer")
    print(f"Structured Streaming file source, day 1 {peer[0]:.1f} s, day {len(files)} {peer[-1]:.1f} s")
    print(f"\nday {len(files)} / day 1 (incremental): {times[-1] / times[0]:.2f}")
    print(f"full re-read / incremental on day {len(files)}: {full / times[-1]:.2f}")
    print(f"peer (Structured Streaming) day {len(files)} / day 1: {peer[-1] / peer[0]:.2f}")
    print(f"shopsense / peer on day {len(files)}: {times[-1] / peer[-1]:.2f}")
    print(f"load at the end {os.getloadavg()[0]:.2f} ({dt.datetime.now():%H:%M})")
    spark.stop()


def streaming_peer(spark, files: list[Path], work: Path) -> list[float]:
    """Seconds per day of Structured Streaming's file source over the same daily files: each day
    one file arrives and one availableNow trigger appends what is new to a Delta table (the
    checkpoint's file log is how it knows what it has read)."""
    shutil.rmtree(work, ignore_errors=True)
    arriving = work / "arriving"
    arriving.mkdir(parents=True)
    header = files[0].read_text().splitlines()[0].split(",")
    schema = ", ".join(f"`{c}` STRING" for c in header)
    times = []
    for f in files:
        shutil.copy(f, arriving / f.name)
        t0 = time.perf_counter()
        (spark.readStream.schema(schema).option("header", "true").csv(str(arriving))
         .withColumn("source_file", F.input_file_name())
         .writeStream.format("delta").option("checkpointLocation", str(work / "checkpoint"))
         .trigger(availableNow=True).start(str(work / "table")).awaitTermination())
        times.append(time.perf_counter() - t0)
    return times


if __name__ == "__main__":
    main()
