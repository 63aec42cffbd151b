"""Benchmark: the customer-value fit at a million customers.

1,000,000 customers (``--customers``) are drawn from known BG/NBD parameters (the published
CDNOW ones, r 0.243, α 4.414, a 0.793, b 2.426, in weeks) with first purchases over two years,
in Spark (``value.simulated_summaries``). shopsense groups them (``value.bgnbd_groups``: only
the groups reach the driver), fits on the groups, and scores every customer in Spark
(``value.score``, written to a Delta table). Printed: the groups, the seconds for grouping,
fit and scoring, each recovered parameter against the planted one (the claim: within 5 %, and
fit plus score-all under 3 minutes on local[2]).

The peer: the ``lifetimes`` package's BetaGeoFitter (bench extra), fitted in pandas on the same
customers, one row per customer (what it is usually given) — and on the same groups with
weights, to separate the grouping's gain from the optimiser's. Printed: its seconds and
parameters, and the ratios.

    .venv/bin/python bench/bench_value.py [--customers 1000000] [--partitions 8]

Times are wall-clock on a shared machine: quote them with the load (`uptime`) beside them. Not a
test: it prints its figures and exits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from shopsense.core.config import conf_dir, load_conf  # noqa: E402
from shopsense.core.session import build_session  # noqa: E402
from shopsense.customers import value  # noqa: E402
from shopsense.customers import value_models as M  # noqa: E402

PLANTED = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-peer", action="store_true")
    args = parser.parse_args()
    print(f"load: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        conf = load_conf([conf_dir() / "local.yaml"], [f"warehouse={tmp}/warehouse"])
        spark = build_session(conf)
        settings = conf.value
        summary = value.simulated_summaries(spark, PLANTED, args.customers, args.days, args.seed,
                                            partitions=args.partitions)
        summary = summary.cache()
        t0 = time.perf_counter()
        n = summary.count()
        t_draw = time.perf_counter() - t0
        t0 = time.perf_counter()
        groups, grid = value.bgnbd_groups(summary, settings.time_unit_days, settings.max_fit_groups)
        t_group = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit = M.fit_bgnbd(groups["x"], groups["t_x"], groups["T"], groups["weight"])
        t_fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        scored = value.score(summary, dt.date(2002, 1, 1), fit, None, settings)
        scored.write.format("delta").mode("overwrite").save(f"{tmp}/scored")
        t_score = time.perf_counter() - t0
        print(f"customers {n:,} (drawn and cached in {t_draw:.1f}s); groups {len(groups):,} "
              f"at {grid}-day steps")
        print(f"shopsense: group {t_group:.1f}s, fit {t_fit:.1f}s, score all and write "
              f"{t_score:.1f}s; fit + score {t_group + t_fit + t_score:.1f}s")
        for k, planted in PLANTED.items():
            print(f"  {k}: {fit.params[k]:.4f} (planted {planted}, {fit.params[k] / planted - 1:+.2%})")
        if args.no_peer:
            return
        try:
            from lifetimes import BetaGeoFitter
        except ImportError:
            print("peer: lifetimes is not installed (pip install -e '.[bench]')")
            return
        customers = summary.select("x", "t_x", "T").toPandas()   # the peer needs them in pandas
        t0 = time.perf_counter()
        peer = BetaGeoFitter().fit(customers["x"], customers["t_x"], customers["T"])
        t_peer = time.perf_counter() - t0
        t0 = time.perf_counter()
        peer_grouped = BetaGeoFitter().fit(groups["x"], groups["t_x"], groups["T"],
                                           weights=groups["weight"])
        t_peer_grouped = time.perf_counter() - t0
        print(f"lifetimes BetaGeoFitter on {len(customers):,} rows: {t_peer:.1f}s "
              f"{ {k: round(v, 4) for k, v in peer.params_.items()} }")
        print(f"lifetimes on the {len(groups):,} groups with weights: {t_peer_grouped:.1f}s "
              f"{ {k: round(v, 4) for k, v in peer_grouped.params_.items()} }")
        print(f"ratio lifetimes per customer / shopsense fit (group + fit): "
              f"{t_peer / (t_group + t_fit):.2f}; lifetimes on groups / shopsense fit: "
              f"{t_peer_grouped / t_fit:.2f}")
        spark.stop()


if __name__ == "__main__":
    main()
