"""The ``shopsense`` command and the shared entry point of the spark-submit jobs in jobs/."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from shopsense.core.config import ConfigError, Conf, default_overlays, load_conf

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _log(message: str) -> None:
    print(f"[shopsense] {message}", file=sys.stderr, flush=True)


def add_conf_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", action="append", default=None, metavar="FILE",
                        help="YAML overlay on conf/base.yaml (repeatable, later wins); "
                             "default: the local overlay conf/local.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one parameter, e.g. --set sample.n_customers=5000 (repeatable)")
    parser.add_argument("--as-of", default=None, metavar="YYYY-MM-DD",
                        help="compute as of this date (default: the last order date)")
    parser.add_argument("--verbose", action="store_true",
                        help="show full tracebacks (Java ones included) on errors")


def conf_from_args(args: argparse.Namespace) -> Conf:
    overrides = list(args.overrides)
    if args.as_of:
        overrides.append(f"as_of={args.as_of}")
    files = args.conf if args.conf else default_overlays()
    return load_conf(files, overrides)


def error_line(exc: BaseException) -> str:
    """One line for an error: the exception's own first line, without a Java stack trace."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if type(exc).__module__.startswith(("pyspark", "py4j")):
        return f"{type(exc).__name__}: {text}"
    return text


def _fail(exc: BaseException, verbose: bool) -> int:
    if verbose:
        import traceback
        traceback.print_exception(exc)
    _log(f"error: {error_line(exc)}")
    return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED


def run_named_jobs(names: list[str], args: argparse.Namespace) -> int:
    """Load conf, build the session, run the jobs; exit code 0 only when all succeeded."""
    from shopsense.pipeline import run_jobs
    from shopsense.core.session import build_session

    try:
        conf = conf_from_args(args)
    except ConfigError as exc:
        return _fail(exc, args.verbose)
    try:
        spark = build_session(conf)
        results = run_jobs(spark, conf, names)
    except Exception as exc:
        return _fail(exc, args.verbose)
    failures = {n: r for n, r in results.items() if isinstance(r, Exception)}
    for name, exc in failures.items():
        if args.verbose and not str(exc).startswith("skipped"):
            import traceback
            traceback.print_exception(exc)
        _log(f"{name}: {error_line(exc)}")
    return EXIT_FAILED if failures else EXIT_OK


def job_main(job: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``jobs/<job>.py`` under spark-submit: parse --conf/--set/--as-of, run."""
    parser = argparse.ArgumentParser(prog=f"jobs/{job}.py", description=f"shopsense {job} job")
    add_conf_arguments(parser)
    args = parser.parse_args(argv)
    return run_named_jobs([job], args)


def pipeline_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``jobs/pipeline.py``: run the named jobs (default: all) in dependency order."""
    from shopsense.pipeline import JOBS, PIPELINE

    parser = argparse.ArgumentParser(prog="jobs/pipeline.py",
                                     description="shopsense pipeline: " + " -> ".join(PIPELINE))
    parser.add_argument("--jobs", default=",".join(PIPELINE), metavar="JOB,JOB,...",
                        help="comma-separated jobs to run, put in dependency order "
                             f"(default: all; known: {', '.join(JOBS)})")
    add_conf_arguments(parser)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.jobs.split(",") if n.strip()]
    unknown = [n for n in names if n not in JOBS]
    if unknown or not names:
        parser.error(f"unknown job(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(JOBS)}")
    return run_named_jobs([n for n in JOBS if n in names], args)


def _summary(args: argparse.Namespace) -> int:
    from shopsense.core.session import build_session
    from shopsense.report.summary import print_tables

    try:
        conf = conf_from_args(args)
        session: list = []

        def spark():  # started only if a table's log cannot answer (or for --details)
            if not session:
                session.append(build_session(conf))
            return session[0]
        print_tables(spark, conf, details=getattr(args, "details", True))
    except Exception as exc:
        return _fail(exc, args.verbose)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from shopsense.report.html import write_report
    from shopsense.core.session import build_session

    try:
        conf = conf_from_args(args)
        spark = build_session(conf)
        path, state = write_report(spark, conf, getattr(args, "output", None), progress=_log)
    except Exception as exc:
        return _fail(exc, args.verbose)
    missing = [k for k, v in state.items() if v != "ok"]
    if missing:
        _log(f"report: sections without data: {', '.join(f'{k} ({state[k]})' for k in missing)}")
    print(f"Report: {path}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    from shopsense.pipeline import JOBS, PIPELINE

    parser = argparse.ArgumentParser(
        prog="shopsense",
        description="Recommendations, segments, basket rules, demand forecasts and inventory "
                    "policy from order history (Spark + Delta Lake).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    width = max(len(n) for n in JOBS)
    job_list = "\n".join(f"  {n:<{width}} {j.help}\n  {'':<{width}}   (code: {j.module})"
                         for n, j in JOBS.items())
    p_run = sub.add_parser("run", help="run one job, or all of them in dependency order",
                           description=f"Run a job.\n\njobs:\n  {'all':<{width}} {' -> '.join(PIPELINE)}\n{job_list}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    p_run.add_argument("job", choices=["all", *JOBS], metavar="JOB", help="all, or one of: " + ", ".join(JOBS))
    add_conf_arguments(p_run)

    p_demo = sub.add_parser("demo", help="generate sample data, run every job on it, write the report",
                            description="Generate sample data (conf sample.*), ingest it and run "
                                        "every job in local mode, then print the tables written and "
                                        "write the HTML report.")
    add_conf_arguments(p_demo)

    p_tables = sub.add_parser("tables", help="list every table with its row count, version and last run",
                              description="List every table with its row count, Delta version and "
                                          "last run, read from the Delta logs (no table is scanned), "
                                          "and the last ingest's reconciliation.")
    p_tables.add_argument("--details", action="store_true",
                          help="also the quarantine's reasons and what the order lines hold "
                               "(scans those two tables)")
    add_conf_arguments(p_tables)

    p_report = sub.add_parser("report", help="write the HTML report of the gold tables",
                              description="Write one self-contained HTML file with charts: segments, "
                                          "association rules, recommendation metrics, forecasts against "
                                          "actuals, forecast accuracy, the ABC/XYZ matrix and the reorder "
                                          "list (default: shopsense_report.html beside the warehouse, "
                                          "conf report.path).")
    p_report.add_argument("--output", "-o", default=None, metavar="FILE",
                          help="write the report here instead")
    add_conf_arguments(p_report)

    args = parser.parse_args(argv)
    if args.command == "report":
        return _report(args)
    if args.command == "run":
        names = PIPELINE if args.job == "all" else [args.job]
        return run_named_jobs(names, args)
    if args.command == "demo":
        args.overrides = ["ingest.source=sample", *args.overrides]
        code = run_named_jobs(["sample", *PIPELINE], args)
        summary_code = _summary(args)
        report_code = _report(args)
        return code or summary_code or report_code
    if args.command == "tables":
        return _summary(args)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
