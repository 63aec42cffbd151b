"""Benchmark: generate >= 10 million order lines with shopsense.ingest.sample and report rows, seconds and
the driver JVM's peak resident memory.

    python bench/bench_sample.py [--lines 10000000] [--driver-memory 6g] [--out DIR] [--keep]

Writes to a temporary directory (removed afterwards unless --keep). In local mode the driver JVM
runs the executors too, so its peak RSS is the whole Spark footprint.
"""

import argparse
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))

from pyspark.sql import SparkSession  # noqa: E402

from shopsense.ingest.sample import SampleSpec, expected_counts, generate  # noqa: E402

# Companion lines and returns add to the regular lines counted by expected_counts; duplicate SKUs
# dropped from a basket take some away. Measured with 2000 SKUs: 9.70M lines from 63,714
# customers, 1.036 x the regular-line expectation. The sizing below (1.0 x, 7% margin) overshoots
# to about 11M lines (72,852 customers -> 11.07M), comfortably over the 10M target.
_EXTRA_LINES = 1.0
_MARGIN = 1.07


def _jvm_peak_rss_mib(spark):
    try:
        pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except Exception as exc:  # not on Linux, or the gateway does not expose ProcessHandle
        print(f"(driver JVM peak RSS unavailable: {exc})")
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--skus", type=int, default=2000)
    ap.add_argument("--days", type=int, default=730)
    ap.add_argument("--driver-memory", default="6g")
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)

    probe = SampleSpec(n_customers=10_000, n_skus=args.skus, n_days=args.days)
    per_customer = expected_counts(probe)["lines"] / probe.n_customers * _EXTRA_LINES
    spec = SampleSpec(n_customers=int(math.ceil(args.lines / per_customer * _MARGIN)),
                      n_skus=args.skus, n_days=args.days)

    spark = (SparkSession.builder.master("local[2]").appName("bench_sample")
             .config("spark.driver.memory", args.driver_memory)
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "8")
             .config("spark.sql.session.timeZone", "UTC")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    out = args.out or tempfile.mkdtemp(prefix="shopsense_bench_sample_")
    try:
        t0 = time.perf_counter()
        res = generate(spark, spec, out)
        wall = time.perf_counter() - t0
        report = {
            "spec": spec.__dict__,
            "order_lines": res["rows"]["orders"],
            "seconds": round(wall, 1),
            "lines_per_second": round(res["rows"]["orders"] / wall),
            "driver_jvm_peak_rss_mib": _jvm_peak_rss_mib(spark),
            "python_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "driver_memory": args.driver_memory,
            "rows": res["rows"],
        }
        print(json.dumps(report, indent=2))
    finally:
        spark.stop()
        if not args.keep and args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
