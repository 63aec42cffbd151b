"""The jobs, their dependencies, and running them in order in one session."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from pyspark.sql import SparkSession

from shopsense.core.config import Conf
from shopsense.core.runs import record_skipped


@dataclass(frozen=True)
class Job:
    name: str
    module: str          # shopsense module with run(spark, conf) -> dict
    needs: tuple[str, ...]
    help: str

    def run(self, spark: SparkSession, conf: Conf) -> dict:
        return importlib.import_module(self.module).run(spark, conf)


# In dependency order. `sample` is not part of `all`: it makes raw files, it does not read tables.
JOBS: dict[str, Job] = {job.name: job for job in (
    Job("sample", "shopsense.ingest.sample", (), "generate sample raw files (orders, catalogue, inventory, events, planted truth)"),
    Job("ingest", "shopsense.ingest.batch", (), "raw files -> bronze.<source>_orders, silver.order_lines, silver.quarantine, silver.products, silver.inventory, silver.events, silver.ingested_files"),
    Job("features", "shopsense.customers.features", ("ingest",), "silver.order_lines -> gold.customer_features (recency, frequency, monetary, ...)"),
    Job("segment", "shopsense.customers.segments", ("features",), "gold.customer_features -> KMeans segments: gold.customer_segments, gold.segment_profiles, models/segment"),
    Job("migration", "shopsense.customers.migration", ("segment",), "silver.order_lines + models/segment -> segments at each month end: gold.segment_transitions (from, to, customers, probability), gold.segment_mix (observed and projected)"),
    Job("value", "shopsense.customers.value", ("ingest",), "silver.order_lines -> gold.customer_value (BG/NBD + Gamma-Gamma: P(alive), expected purchases, P(buy in 30 days), CLV), gold.customer_value_metrics"),
    Job("propensity", "shopsense.customers.propensity", ("ingest",), "silver.order_lines -> gold.purchase_propensity (P(buy in 30 days): BG/NBD and a calibrated MLlib classifier, out-of-time), gold.propensity_metrics, gold.propensity_curves"),
    Job("journey", "shopsense.customers.journey", ("ingest",), "silver.events -> gold.journey_funnel (sessions and customers per step, conversion), gold.journey_transitions (step to step, exits); nothing without an events file"),
    Job("basket_rules", "shopsense.baskets.rules", ("ingest",), "silver.order_lines -> gold.association_rules, gold.frequently_bought_together (level-wise counting or FP-growth)"),
    Job("demand", "shopsense.supply.demand", ("ingest",), "silver.order_lines -> gold.sku_daily_demand (net units per SKU per day, zero-filled, price and promo flag)"),
    Job("forecast", "shopsense.supply.forecast", ("demand",), "gold.sku_daily_demand -> gold.demand_forecast, gold.forecast_accuracy, gold.forecast_accuracy_summary (per-SKU ARIMA/TSB, backtests)"),
    Job("recommend", "shopsense.recommend.als", ("ingest",), "ALS top-N per customer, evaluated against best-sellers -> gold.recommendations, gold.recommendation_metrics"),
    Job("inventory", "shopsense.supply.inventory", ("forecast",), "forecast + catalogue + snapshot -> gold.inventory_policy (ABC/XYZ, safety stock, reorder point, EOQ, order now), gold.inventory_simulation"),
)}
PIPELINE = [name for name in JOBS if name != "sample"]


def run_jobs(spark: SparkSession, conf: Conf, names: list[str]) -> dict[str, dict | Exception]:
    """Run jobs in order. A failing job stops the jobs that need it (directly or not; each is
    recorded in gold.job_runs with status ``skipped``); the others still run. Returns each job's summary, or the exception it failed with, or a
    RuntimeError saying which upstream job it was skipped for."""
    results: dict[str, dict | Exception] = {}
    failed: set[str] = set()
    for name in names:
        job = JOBS[name]
        blocked = [n for n in job.needs if n in failed]
        if blocked:
            reason = f"{', '.join(blocked)} failed"
            results[name] = RuntimeError(f"skipped: {reason}")
            failed.add(name)
            try:
                record_skipped(spark, conf, name, reason)
            except Exception:  # the failure itself is already recorded; do not mask it
                pass
            continue
        try:
            results[name] = job.run(spark, conf)
        except Exception as exc:  # recorded in gold.job_runs by the job itself
            results[name] = exc
            failed.add(name)
    return results
