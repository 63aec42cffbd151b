"""spark-submit entry point of the whole pipeline.

    spark-submit jobs/pipeline.py --conf conf/cluster.yaml [--jobs ingest,features,...] [--set key=value ...]

Runs the jobs in dependency order (default: every job of `shopsense run all`) in one Spark
session. A failing job stops the jobs that need it; the others still run; exits non-zero if any
job failed. Each job's outcome is in gold.job_runs.
"""

import sys

from shopsense.cli import pipeline_main

if __name__ == "__main__":
    sys.exit(pipeline_main())
