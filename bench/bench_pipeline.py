"""Scaling benchmark: the whole pipeline on sample data at 1x, 2x and 4x a base size, in one run.

    .venv/bin/python bench/bench_pipeline.py [--customers 2000] [--skus 100] [--factors 1,2,4]
                                             [--no-quick] [--set key=value ...]

Each size scales the sample's customers and SKUs (so order lines, baskets, interactions and
series all grow by the factor; the days of history stay the same), generates the raw files,
then runs every job of `shopsense run all` in one session, each size in a warehouse of its own.
Prints each job's wall-clock time (from gold.job_runs) per size and the ratio of each size's
time to the base size's. Goal: 4x the data in at most 4.5x the time. Not a test: it prints its
figures and exits. The model settings are base.yaml + local.yaml + quick.yaml's light searches
by default, so a run takes minutes rather than hours; --no-quick uses the full searches.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from pyspark.sql import functions as F

from shopsense.core import tables
from shopsense.core.runs import read_runs
from shopsense.core.config import conf_dir, load_conf
from shopsense.notebook import sample_overrides
from shopsense.pipeline import JOBS, PIPELINE, run_jobs
from shopsense.core.session import build_session


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000, help="customers at 1x")
    parser.add_argument("--skus", type=int, default=100, help="SKUs at 1x")
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--factors", default="1,2,4")
    parser.add_argument("--no-quick", action="store_true",
                        help="the full model searches of base.yaml instead of conf/quick.yaml's")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)

    factors = [int(f) for f in args.factors.split(",")]
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-pipeline-")
    files = [conf_dir() / "local.yaml"] + ([] if args.no_quick else [conf_dir() / "quick.yaml"])
    session_conf = load_conf(files, [f"warehouse={workdir}/session", "spark.progress_bar=false",
                                     *args.overrides])
    spark = build_session(session_conf)
    print(f"bench_pipeline: base {args.customers:,} customers x {args.skus:,} SKUs x {args.days} days, "
          f"factors {factors}, conf {' + '.join(f.name for f in files)}; Spark "
          f"{spark.sparkContext.master} ({spark.sparkContext.defaultParallelism} cores), "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}", flush=True)

    times: dict[int, dict[str, float]] = {}
    lines: dict[int, int] = {}
    for factor in factors:
        root = f"{workdir}/x{factor}"
        conf = load_conf(files, [f"warehouse={root}/warehouse", "spark.progress_bar=false",
                                 "ingest.source=sample", *sample_overrides(f"{root}/raw"),
                                 f"sample.n_customers={args.customers * factor}",
                                 f"sample.n_skus={args.skus * factor}", f"sample.n_days={args.days}",
                                 *args.overrides])
        t0 = time.perf_counter()
        run_jobs(spark, conf, ["sample"])
        print(f"  x{factor}: sample generated in {time.perf_counter() - t0:.0f} s (not counted)", flush=True)
        t0 = time.perf_counter()
        results = run_jobs(spark, conf, PIPELINE)
        total = time.perf_counter() - t0
        failed = [n for n, r in results.items() if isinstance(r, Exception)]
        if failed:
            print(f"  x{factor}: failed jobs {failed}: {[str(results[n]) for n in failed]}")
            return 1
        runs = (read_runs(spark, conf).filter(F.col("status") == "succeeded")
                .select("job", "duration_s", "rows_in").collect())
        times[factor] = {r["job"]: r["duration_s"] for r in runs if r["job"] in PIPELINE}
        times[factor]["total"] = total
        lines[factor] = next(r["rows_in"] for r in runs if r["job"] == "ingest")
        print(f"  x{factor}: {lines[factor]:,} order lines, pipeline {total:.0f} s, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)

    base = factors[0]
    print(f"\n{'job':<14}" + "".join(f"{f'x{f} s':>10}" for f in factors)
          + "".join(f"{f'x{f}/x{base}':>10}" for f in factors[1:]))
    for job in [*[j for j in JOBS if j in PIPELINE], "total"]:
        row = f"{job:<14}" + "".join(f"{times[f][job]:>10.1f}" for f in factors)
        row += "".join(f"{times[f][job] / times[base][job]:>10.2f}" for f in factors[1:])
        print(row)
    print(f"{'order lines':<14}" + "".join(f"{lines[f]:>10,}" for f in factors)
          + "".join(f"{lines[f] / lines[base]:>10.2f}" for f in factors[1:]))
    top = factors[-1]
    ratio = times[top]["total"] / times[base]["total"]
    data_ratio = lines[top] / lines[base]
    print(f"\n{data_ratio:.2f}x the order lines took {ratio:.2f}x the time "
          f"(goal: 4x the data in at most 4.5x the time: {'met' if ratio <= 4.5 else 'not met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
