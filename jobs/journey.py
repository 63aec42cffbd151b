"""spark-submit entry point of the journey job (funnel and step transitions).

    spark-submit jobs/journey.py --conf conf/cluster.yaml [--set key=value ...]

Parses --conf/--set/--as-of, validates the conf before Spark starts, builds the session and calls
shopsense.customers.journey.run(spark, conf); exits non-zero on failure.
"""

import sys

from shopsense.cli import job_main

if __name__ == "__main__":
    sys.exit(job_main("journey"))
