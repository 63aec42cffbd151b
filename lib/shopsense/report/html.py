"""``shopsense report``: one self-contained HTML file (inline SVG charts, no external files or
scripts) showing what the gold tables say.

Sections: the last run of each job; segment sizes and profiles; customer value per segment;
purchase propensity (calibration on held-out customers, lift per decile); migration between
segments (the pooled transition matrix, the mix projected); top association rules;
recommendation metrics against the popularity baseline; forecast against actual demand with
80/95% intervals for the top SKUs; the distribution of forecast accuracy; the ABC/XYZ matrix;
the reorder list. A section whose table is missing says which job writes it.

Only aggregates and small, limited row sets reach the driver: counts per segment or class,
histogram bins, the top rules, the top SKUs' recent days, the first rows of the reorder list.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from html import escape
from pathlib import Path
from typing import Callable

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopsense.report import svg
from shopsense.core import tables
from shopsense.core.config import Conf, resolve_path
from shopsense.core.runs import read_runs

#: The table each section reads and the job that writes it.
SECTIONS = (
    ("runs", "Job runs", "gold.job_runs", "any job"),
    ("segments", "Customer segments", "gold.segment_profiles", "segment"),
    ("value", "Customer value by segment", "gold.customer_value", "value"),
    ("propensity", "Who will buy in the next weeks", "gold.propensity_curves", "propensity"),
    ("migration", "How customers move between segments", "gold.segment_transitions", "migration"),
    ("rules", "Association rules", "gold.association_rules", "basket_rules"),
    ("recommend", "Recommendations against best-sellers", "gold.recommendation_metrics", "recommend"),
    ("forecast", "Forecast against actual demand", "gold.demand_forecast", "forecast"),
    ("accuracy", "Forecast accuracy", "gold.forecast_accuracy", "forecast"),
    ("abcxyz", "ABC/XYZ matrix", "gold.inventory_policy", "inventory"),
    ("reorder", "Reorder list", "gold.inventory_policy", "inventory"),
)


def _table(header: list[str], rows: list[list], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if i in numeric else ""}">{escape(_cell(v))}</td>'
                         for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


class Report:
    """Builds the report's sections from the warehouse conf names."""

    def __init__(self, spark: SparkSession, conf: Conf):
        self.spark = spark
        self.conf = conf
        self.params = conf.report

    def read(self, name: str):
        return tables.read_table(self.spark, self.conf, name)

    # --- sections --------------------------------------------------------------------------

    def runs(self) -> str:
        runs = read_runs(self.spark, self.conf)   # one row per run, its latest state
        latest = (runs.withColumn("_n", F.row_number().over(
                      Window.partitionBy("job").orderBy(F.desc("started_at"))))
                  .filter("_n = 1").orderBy("started_at").collect())
        rows = [[r["job"], r["status"], f"{r['started_at']:%Y-%m-%d %H:%M}",
                 "-" if r["duration_s"] is None else f"{r['duration_s']:.0f}s",   # running, abandoned
                 r["rows_in"], r["rows_out"], (r["error"] or "")[:120]] for r in latest]
        failed = [r["job"] if r["status"] == "failed" else f"{r['job']} ({r['status']})"
                  for r in latest if r["status"] != "succeeded"]
        lead = (f'<p class="warn">Last run failed: {escape(", ".join(failed))}.</p>' if failed
                else "<p>Every job's last run succeeded.</p>")
        return lead + _table(["job", "status", "started (UTC)", "took", "rows in", "rows out", "error"],
                             rows, {4, 5})

    def segments(self) -> str:
        prof = self.read("gold.segment_profiles").orderBy(F.desc("n_customers")).collect()
        labels = [r["segment_name"] for r in prof]
        chart = svg.bar_chart(labels, {"share of customers": [r["customer_share"] for r in prof],
                                       "share of revenue": [r["revenue_share"] for r in prof]},
                              "Segment sizes: share of customers and of revenue", value_format=_pct)
        rows = [[r["segment_name"], r["n_customers"], _pct(r["customer_share"]), _pct(r["revenue_share"]),
                 r["median_recency_days"], r["median_frequency"], r["median_monetary"],
                 r["median_tenure_days"]] for r in prof]
        return chart + _table(["segment", "customers", "of customers", "of revenue", "median recency (days)",
                               "median orders", "median revenue", "median tenure (days)"],
                              rows, {1, 4, 5, 6, 7})

    def value(self) -> str:
        cv = self.read("gold.customer_value")
        if tables.table_exists(self.spark, self.conf, "gold.customer_segments"):
            seg = self.read("gold.customer_segments").select("customer_id", "segment_name")
            cv = cv.join(seg, "customer_id", "left")
        else:
            cv = cv.withColumn("segment_name", F.lit("all customers"))
        total = cv.agg(F.sum("clv_12m")).first()[0]
        rows = (cv.groupBy(F.coalesce("segment_name", F.lit("(no segment)")).alias("segment"))
                .agg(F.count("*").alias("n"), F.avg("p_alive").alias("p_alive"),
                     F.avg("expected_purchases_365d").alias("purchases"),
                     F.percentile_approx("clv_12m", [0.25, 0.5, 0.75, 0.9], 1000).alias("q"),
                     F.avg("clv_12m").alias("mean"), F.sum("clv_12m").alias("sum"))
                .orderBy(F.desc_nulls_last("mean"), "segment").collect())
        chart = svg.bar_chart([r["segment"] for r in rows],
                              {"mean 12-month CLV": [r["mean"] for r in rows],
                               "median": [None if r["q"] is None else r["q"][1] for r in rows]},
                              "Expected 12-month customer value per segment (discounted)")
        table = _table(["segment", "customers", "mean P(alive)", "purchases next 365 days",
                        "CLV 25%", "median", "75%", "90%", "mean", "of total CLV"],
                       [[r["segment"], r["n"], r["p_alive"], r["purchases"],
                         *(r["q"] or [None] * 4), r["mean"],
                         _pct(r["sum"] / total if total and r["sum"] is not None else None)] for r in rows],
                       set(range(1, 9)))
        return ("<p>BG/NBD and Gamma-Gamma (the value job): the distribution of each segment's "
                "expected value over the next 12 months.</p>" + chart + table)

    def propensity(self) -> str:
        curves = self.read("gold.propensity_curves").collect()
        metrics = (self.read("gold.propensity_metrics").filter(F.col("metric").isin(
            "auc", "average_precision", "brier", "ece", "lift_top_decile", "base_rate")).collect())
        models = sorted({r["model"] for r in curves})
        default = {r["model"] for r in metrics if r["is_default"]}
        name = lambda m: f"{m} (default)" if m in default else m  # noqa: E731
        calibration = svg.calibration_chart(
            {name(m): [(r["mean_predicted"], r["observed_rate"], r["customers"]) for r in curves
                       if r["model"] == m and r["kind"] == "calibration"] for m in models},
            "Calibration on held-out customers: observed against predicted")
        deciles = {m: {r["bin"]: r["lift"] for r in curves if r["model"] == m and r["kind"] == "decile"}
                   for m in models}
        lift = svg.bar_chart([f"decile {d}" for d in range(1, 11)],
                             {name(m): [deciles[m].get(d) for d in range(1, 11)] for m in models},
                             "Lift per decile of the score (1 = the highest scores)")
        by = {(r["model"], r["metric"]): r["value"] for r in metrics}
        keys = ["auc", "average_precision", "brier", "ece", "lift_top_decile"]
        table = _table(["model", "AUC", "average precision", "Brier", "calibration error", "top-decile lift"],
                       [[name(m), *[by.get((m, k)) for k in keys]] for m in models], {1, 2, 3, 4, 5})
        cutoff = next((r["cutoff"] for r in metrics), None)
        days = next(((r["as_of"] - r["cutoff"]).days for r in metrics), None)
        return (f"<p>The chance of a purchase in the next {days} days, judged on who bought in the {days} "
                f"days after {cutoff} "
                f"(base rate {_pct(next((r['value'] for r in metrics if r['metric'] == 'base_rate'), None))}); "
                f"gold.purchase_propensity holds every customer's, from the default model.</p>"
                + table + calibration + lift)

    def migration(self) -> str:
        pooled = self.read("gold.segment_transitions").filter(F.col("scope") == "pooled").collect()
        if not pooled:
            return "<p>gold.segment_transitions has no pooled transitions (fewer than two period ends).</p>"
        start, end = min(r["period_start"] for r in pooled), max(r["period_end"] for r in pooled)
        froms = sorted({r["from_segment"] for r in pooled})
        tos = sorted({r["to_segment"] for r in pooled})
        values = {(r["from_segment"], r["to_segment"]): r["probability"] for r in pooled}
        labels = {(r["from_segment"], r["to_segment"]): f"{_pct(r['probability'])} · {r['customers']:,}"
                  for r in pooled}
        longest = max(len(name) for name in froms)
        chart = svg.heatmap(froms, tos, values, labels,
                            "Monthly transitions, pooled: share of each row's customers moving to each column",
                            label_width=int(min(7 * longest + 12, 220)))
        out = (f"<p>Segments assigned at each period end from {start} to {end} with the fitted segment "
               f"model; rows: where customers were, columns: where they were one period later "
               f"(share · customers).</p>" + chart)
        if tables.table_exists(self.spark, self.conf, "gold.segment_mix"):
            mix = self.read("gold.segment_mix").collect()
            last = max((r["period_end"] for r in mix if r["kind"] == "observed"), default=None)
            now = {r["segment"]: r["share"] for r in mix if r["kind"] == "observed" and r["period_end"] == last}
            nxt = {r["segment"]: r["share"] for r in mix if r["kind"] == "projected"}
            rows = [[seg, _pct(now.get(seg)), _pct(nxt.get(seg))] for seg in sorted(set(now) | set(nxt))]
            out += _table(["segment", f"share at {last}", "projected next period"], rows)
        return out

    def rules(self) -> str:
        df = self.read("gold.association_rules")
        n_rules = df.count()
        if n_rules == 0:
            return "<p>No rule passed the support and confidence thresholds.</p>"
        top = df.orderBy(F.desc("lift"), F.desc("support")).limit(self.params.top_rules).collect()

        def name(names, skus):
            return " + ".join(n or s for n, s in zip(names or skus, skus))

        labels = [f"{name(r['antecedent_names'], r['antecedent'])} → {name(r['consequent_names'], r['consequent'])}"
                  for r in top[:12]]
        chart = svg.bar_chart(labels, {"lift": [r["lift"] for r in top[:12]]},
                              "Top association rules by lift")
        rows = [[name(r["antecedent_names"], r["antecedent"]), name(r["consequent_names"], r["consequent"]),
                 r["n_orders"], _pct(r["support"]), _pct(r["confidence"]), r["lift"]] for r in top]
        return (f"<p>{n_rules:,} rules; the {len(top)} with the highest lift:</p>" + chart
                + _table(["if the basket has", "it also has", "orders", "support", "confidence", "lift"],
                         rows, {2, 5}))

    def recommend(self) -> str:
        df = self.read("gold.recommendation_metrics")
        test = df.filter((F.col("split") == "test") & ((F.col("model") == "popularity") | F.col("selected")))
        rows = test.collect()
        if not rows:
            rows = df.filter(F.col("model") == "popularity").collect()
        by_model = {r["model"]: r for r in rows}
        metrics = ["precision", "recall", "ndcg", "map", "hit_rate", "coverage"]
        models = [m for m in ("als", "popularity") if m in by_model]
        if not models:
            return "<p>No test-split metrics in gold.recommendation_metrics.</p>"
        k = rows[0]["k"]
        chart = svg.bar_chart([f"{m}@{k}" for m in metrics],
                              {m: [by_model[m][x] for x in metrics] for m in models},
                              f"Held-out metrics at k={k}: ALS against the popularity baseline")
        r0 = rows[0]
        note = (f"<p>Trained on orders up to {r0['train_end']}, evaluated on the window ending "
                f"{r0['window_end']} for {r0['n_users']:,} customers.")
        if "als" in by_model and "popularity" in by_model and by_model["popularity"]["precision"]:
            ratio = by_model["als"]["precision"] / by_model["popularity"]["precision"]
            note += f" ALS precision@{k} is {ratio:.2f}× the popularity baseline's."
        return note + "</p>" + chart

    def forecast(self) -> str:
        fc = self.read("gold.demand_forecast")
        demand = self.read("gold.sku_daily_demand") if tables.table_exists(
            self.spark, self.conf, "gold.sku_daily_demand") else None
        n_top = self.params.top_skus
        days = self.params.history_days
        as_of = fc.agg(F.max("as_of")).first()[0]
        if as_of is None:
            return "<p>gold.demand_forecast is empty.</p>"
        since = as_of - dt.timedelta(days=days - 1)
        if demand is not None:
            recent = demand.filter((F.col("date") >= F.lit(since)) & (F.col("date") <= F.lit(as_of)))
            top = [r["sku"] for r in recent.groupBy("sku").agg(F.sum("units").alias("u"))
                   .join(fc.select("sku").distinct(), "sku")
                   .orderBy(F.desc("u"), "sku").limit(n_top).collect()]
            hist = recent.filter(F.col("sku").isin(top)).select("sku", "date", "units").collect()
        else:
            top = [r["sku"] for r in fc.groupBy("sku").agg(F.sum("forecast").alias("f"))
                   .orderBy(F.desc("f"), "sku").limit(n_top).collect()]
            hist = []
        rows = fc.filter(F.col("sku").isin(top)).select(
            "sku", "date", "forecast", "lo80", "hi80", "lo95", "hi95", "model").collect()
        charts = []
        for sku in top:
            h = sorted(((r["date"] - as_of).days, r["units"]) for r in hist if r["sku"] == sku)
            f = sorted(((r["date"] - as_of).days, r["forecast"], r["lo80"], r["hi80"], r["lo95"], r["hi95"])
                       for r in rows if r["sku"] == sku)
            model = next((r["model"] for r in rows if r["sku"] == sku), "")
            charts.append(svg.forecast_chart(h, f, f"{sku} ({model})"))
        return (f"<p>The {len(top)} SKUs with the most units in the {days} days to {as_of}: actual daily "
                f"units (dark), the forecast (orange) and its 80% and 95% intervals (bands).</p>"
                f'<div class="grid">{"".join(charts)}</div>')

    def accuracy(self) -> str:
        acc = self.read("gold.forecast_accuracy").filter(F.col("mase").isNotNull())
        edges = [i * 0.25 for i in range(13)]  # 0 .. 3, last bin open-ended

        def bins(col: str) -> list[int]:
            b = F.least(F.floor(F.col(col) / 0.25), F.lit(len(edges) - 2)).cast("int")
            counts = {r["b"]: r["n"] for r in acc.filter(F.col(col).isNotNull())
                      .groupBy(b.alias("b")).agg(F.count("*").alias("n")).collect()}
            return [counts.get(i, 0) for i in range(len(edges) - 1)]

        chart = svg.histogram(edges, {"chosen model": bins("mase"), "seasonal naive": bins("baseline_mase")},
                              "MASE per SKU (lower is better; last bin: 2.75 and above)", "MASE",
                              marker=1.0)
        out = chart
        if tables.table_exists(self.spark, self.conf, "gold.forecast_accuracy_summary"):
            summary = self.read("gold.forecast_accuracy_summary").orderBy("scope").collect()
            out += _table(["scope", "SKUs", "MASE", "seasonal naive MASE", "WAPE", "seasonal naive WAPE",
                           "beats naive"],
                          [[r["scope"], r["n_skus"], r["mase"], r["baseline_mase"], r["wape"],
                            r["baseline_wape"], _pct(r["share_beats_baseline"])] for r in summary],
                          {1, 2, 3, 4, 5})
        return out

    def abcxyz(self) -> str:
        pol = self.read("gold.inventory_policy")
        cells = pol.groupBy("abc_class", "xyz_class").agg(
            F.count("*").alias("n"), F.sum("revenue_share").alias("share")).collect()
        counts = {(r["abc_class"], r["xyz_class"]): float(r["n"]) for r in cells}
        labels = {(r["abc_class"], r["xyz_class"]): f"{r['n']:,} · {_pct(r['share'])}" for r in cells}
        rows = sorted({k[0] for k in counts} | {"A", "B", "C"})
        cols = sorted({k[1] for k in counts} | {"X", "Y", "Z"})
        return ("<p>SKUs per class (and their share of revenue): A/B/C by revenue, X/Y/Z by demand "
                "variability.</p>" + svg.heatmap(rows, cols, counts, labels, "ABC/XYZ matrix: SKUs per class"))

    def reorder(self) -> str:
        pol = self.read("gold.inventory_policy")
        n = pol.filter(F.col("status") == "reorder now").count()
        statuses = {r["status"]: r["count"] for r in pol.groupBy("status").count().collect()}
        top = (pol.filter(F.col("status") == "reorder now")
               .orderBy("abc_class", F.asc_nulls_last("days_of_cover"), "sku")
               .limit(self.params.reorder_rows).collect())
        head = "<p>" + ", ".join(f"{escape(s)}: {c:,}" for s, c in sorted(statuses.items())) + ".</p>"
        if n == 0:
            return head + "<p>Nothing to reorder now.</p>"
        rows = [[r["sku"], r["product_name"], f"{r['abc_class']}{r['xyz_class']}", r["inventory_position"],
                 r["days_of_cover"], r["safety_stock"], r["reorder_point"], r["recommended_order_qty"]]
                for r in top]
        return (head + f"<p>{n:,} SKUs to reorder now; the first {len(top)}, A class first, least cover first:</p>"
                + _table(["sku", "product", "class", "position", "days of cover", "safety stock",
                          "reorder point", "order now"], rows, {3, 4, 5, 6, 7}))

    # --- assembly --------------------------------------------------------------------------

    def build(self, progress: Callable[[str], None] = lambda _: None) -> tuple[str, dict[str, str]]:
        """The HTML text and each section's state (``ok``, ``missing`` or ``error: ...``)."""
        parts, state = [], {}
        for key, title, table, job in SECTIONS:
            progress(f"report: {title}")
            if not tables.table_exists(self.spark, self.conf, table):
                body = f'<p class="missing">No {escape(table)} yet: run the {escape(job)} job.</p>'
                state[key] = "missing"
            else:
                try:
                    body = getattr(self, key)()
                    state[key] = "ok"
                except Exception as exc:  # one broken section must not lose the rest
                    body = f'<p class="warn">This section failed: {escape(type(exc).__name__)}: {escape(str(exc).splitlines()[0] if str(exc) else "")}</p>'
                    state[key] = f"error: {type(exc).__name__}"
            parts.append(f'<section id="{key}"><h2>{escape(title)}</h2>{body}</section>')
        return _page(self.conf, "".join(parts)), state


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#1a202c;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #e2e8f0;padding-bottom:.3rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.8rem 0;font-size:.85rem} td,th{padding:.25rem .6rem;border-bottom:1px solid #edf2f7;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums} th{background:#f7fafc}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(400px,1fr));gap:1rem}
.warn{color:#c53030} .missing{color:#718096;font-style:italic} .meta{color:#718096}
svg.chart{display:block;margin:.6rem 0}
"""

# Runs once the page is laid out: counts the charts the browser drew with a size and marks, and
# writes the figures onto <body> (data-charts, data-charts-rendered, data-marks-rendered).
_RENDER_CHECK = """
<script>
window.addEventListener('load', function () {
  var charts = document.querySelectorAll('svg.chart'), ok = 0, marks = 0;
  charts.forEach(function (c) {
    var box = c.getBoundingClientRect(), drawn = 0;
    c.querySelectorAll('.mark').forEach(function (m) {
      var b = m.getBBox(); if (b.width > 0 || b.height > 0) drawn++;
    });
    if (box.width > 0 && box.height > 0 && drawn == Number(c.dataset.marks)) ok++;
    marks += drawn;
  });
  document.body.dataset.charts = charts.length;
  document.body.dataset.chartsRendered = ok;
  document.body.dataset.marksRendered = marks;
});
</script>
"""


def _page(conf: Conf, body: str) -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>shopsense report</title><style>{_CSS}</style></head><body>"
            f"<h1>shopsense report</h1><p class=\"meta\">Warehouse {escape(resolve_path(conf.warehouse))}, "
            f"written {stamp}.</p>{body}{_RENDER_CHECK}</body></html>")


def output_path(conf: Conf) -> Path:
    """Where the report goes: conf ``report.path``, or ``report.html`` beside the warehouse
    (a local path: the report is written by the driver)."""
    if conf.report.path:
        return Path(resolve_path(conf.report.path))
    warehouse = resolve_path(conf.warehouse)
    if "://" in warehouse and not warehouse.startswith("file:"):
        return Path(os.path.abspath("shopsense_report.html"))
    return Path(warehouse.removeprefix("file:")).parent / "shopsense_report.html"


def write_report(spark: SparkSession, conf: Conf, path: str | Path | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> tuple[Path, dict[str, str]]:
    """Write the HTML report; returns its path and each section's state. Raises
    FileNotFoundError when the warehouse holds no gold table at all."""
    if not tables.table_exists(spark, conf, "gold.job_runs"):
        raise FileNotFoundError(f"no gold tables under {resolve_path(conf.warehouse)}: "
                                "run `shopsense demo` or `shopsense run all` first")
    t0 = time.monotonic()
    html, state = Report(spark, conf).build(progress)
    target = Path(path) if path else output_path(conf)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(target)  # a reader never sees half a report
    progress(f"report: wrote {target} ({len(html) / 1024:.0f} KiB) in {time.monotonic() - t0:.1f}s")
    return target, state
