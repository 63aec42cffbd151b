"""Helpers for notebooks (and tests) that drive shopsense interactively.

    from shopsense.notebook import start, run, table, runs, sample_overrides
    spark, conf = start("conf/local.yaml", overrides=["warehouse=/tmp/wh"])
    run(spark, conf, "all")
    table(spark, conf, "gold.segment_profiles").toPandas()
    runs(spark, conf).toPandas()

``start`` builds the one session a notebook uses (the same builder as the jobs: Delta, UTC, the
driver's interpreter for the workers); ``run`` runs jobs in dependency order like
``shopsense run`` and raises when one fails, naming it; ``table`` reads a table by name;
``runs`` is gold.job_runs with one row per run (its latest state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pyspark.sql import DataFrame, SparkSession

from shopsense.core import tables
from shopsense.core.config import Conf, conf_dir, load_conf, resolve_path


def sample_overrides(out_dir: str | Path) -> list[str]:
    """Overrides that make the `sample` job write to ``out_dir`` and the `sample` source read
    from there (orders, catalogue, inventory, events)."""
    out = resolve_path(str(out_dir))
    return [f"sample.out_dir={out}",
            *(f"sources.sample.{name}.path={out}/{name}"
              for name in ("orders", "catalogue", "inventory", "events"))]


def _overlay(name: str | Path) -> Path:
    """A conf file: a path, or the bare name of one shipped with shopsense ("local", "quick")."""
    text = str(name)
    if "/" not in text and "\\" not in text and not text.endswith((".yaml", ".yml")):
        return conf_dir() / f"{text}.yaml"
    return Path(text)


def load(*overlays: str | Path, overrides: Iterable[str] = ()) -> Conf:
    """base.yaml + the overlays (default: "local", i.e. conf/local.yaml) + overrides, validated.
    An overlay is a path or the name of a shipped one: "local", "quick", "cluster"."""
    files = [_overlay(f) for f in overlays] or [conf_dir() / "local.yaml"]
    return load_conf(files, list(overrides))


def start(*overlays: str | Path, overrides: Iterable[str] = ()) -> tuple[SparkSession, Conf]:
    """The conf (see :func:`load`) and the session built from it."""
    from shopsense.core.session import build_session

    conf = load(*overlays, overrides=overrides)
    return build_session(conf), conf


def run(spark: SparkSession, conf: Conf, *jobs: str) -> dict[str, dict]:
    """Run jobs (names, or "all") in dependency order; returns each job's summary. Raises
    RuntimeError naming the jobs that failed (their errors are in gold.job_runs too)."""
    from shopsense.pipeline import JOBS, PIPELINE, run_jobs

    names = [n for job in jobs for n in (PIPELINE if job == "all" else [job])]
    unknown = [n for n in names if n not in JOBS]
    if unknown:
        raise ValueError(f"unknown job(s) {', '.join(unknown)}; known: all, {', '.join(JOBS)}")
    results = run_jobs(spark, conf, [n for n in JOBS if n in names])
    failed = {n: r for n, r in results.items() if isinstance(r, Exception)}
    if failed:
        from shopsense.cli import error_line

        raise RuntimeError("; ".join(f"{n}: {error_line(e)}" for n, e in failed.items()))
    return results


def table(spark: SparkSession, conf: Conf, name: str) -> DataFrame:
    """A table by name (``layer.table``), e.g. ``table(spark, conf, "gold.recommendations")``."""
    return tables.read_table(spark, conf, name)


def runs(spark: SparkSession, conf: Conf) -> DataFrame:
    """gold.job_runs as one row per run, its latest state (``running``, ``succeeded``,
    ``failed``, ``skipped`` or ``abandoned``; the table itself keeps every state a run went
    through)."""
    from shopsense.core.runs import read_runs

    return read_runs(spark, conf)
