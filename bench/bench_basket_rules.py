"""Benchmark: shopsense basket_rules against mlxtend's fpgrowth + association_rules.

shopsense mines with level-wise counting (default) or MLlib FP-growth (--algorithm fpgrowth), then
derives the rules with Spark joins; both tools run on the same >= 1 million sample baskets, in one run.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/bench_basket_rules.py [--baskets 1000000] [--min-support 0.001] ...

Both mine the same baskets (written once to parquet by the sample generator and shopsense's
basket builder) with the same thresholds and must give the same number of one-consequent rules.
Times are wall-clock. Peak memory is sampled every 20 ms with psutil: the RSS of this Python
process, and for Spark also of the JVM (the Python process's child processes). The JVM keeps
the heap it has grown, so its figure is the peak resident size during the phase, not the
increment. Not a test: it prints its figures and exits.
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
import warnings
from pathlib import Path

import psutil


class PeakRSS:
    """Sample the RSS of this process and of its child processes (Spark's JVM) in a thread."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.me = psutil.Process(os.getpid())
        self.py_peak = self.jvm_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _jvm_rss(self) -> int:
        total = 0
        for child in self.me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.py_peak = max(self.py_peak, self.me.memory_info().rss)
            self.jvm_peak = max(self.jvm_peak, self._jvm_rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


def silver_like(sample_lines):
    """The columns of silver.order_lines the basket builder reads, from sample order lines
    (a negative quantity is a return; every sample SKU is a product)."""
    from pyspark.sql import functions as F

    return (sample_lines
            .withColumn("line_type", F.when(F.col("quantity") < 0, "return").otherwise("sale"))
            .withColumn("is_product", F.lit(True)))


def make_baskets(spark, conf, n_baskets: int, seed: int, path: Path) -> None:
    """Sample order lines -> shopsense baskets (order_id, items, n_items, oversized) as parquet."""
    from shopsense.baskets import rules as br
    from shopsense.ingest.sample import SampleSpec, expected_counts, order_lines

    probe = SampleSpec(n_customers=10_000, seed=seed)
    per_customer = expected_counts(probe)["orders"] / probe.n_customers
    spec = SampleSpec(n_customers=int(math.ceil(1.15 * n_baskets / per_customer)), seed=seed)
    lines = silver_like(order_lines(spark, spec))
    (br.build_baskets(lines, br.RuleParams(max_basket_size=10**6))
     .write.mode("overwrite").parquet(str(path)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baskets", type=int, default=1_000_000, help="least number of baskets")
    ap.add_argument("--min-support", type=float, default=0.001)
    ap.add_argument("--min-confidence", type=float, default=0.1)
    ap.add_argument("--max-len", type=int, default=3)
    ap.add_argument("--max-basket-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--work", default="/tmp/shopsense-bench-basket", help="folder for the baskets")
    ap.add_argument("--driver-memory", default="6g")
    ap.add_argument("--algorithm", choices=("levelwise", "fpgrowth"), default="levelwise",
                    help="basket_rules.algorithm")
    ap.add_argument("--num-partitions", type=int, default=None,
                    help="basket_rules.num_partitions (FPGrowth's numPartitions)")
    ap.add_argument("--skip-mlxtend", action="store_true")
    args = ap.parse_args()

    import pandas as pd
    from pyspark.sql import functions as F
    from shopsense.baskets import rules as br
    from shopsense.core.config import conf_dir, load_conf
    from shopsense.core.session import build_session

    work = Path(args.work)
    conf = load_conf([conf_dir() / "local.yaml"], [
        f"warehouse={work / 'warehouse'}", "spark.progress_bar=false",
        f"spark.conf.spark.driver.memory={args.driver_memory}"])
    spark = build_session(conf)
    path = work / f"baskets-{args.baskets}-{args.seed}"
    if not (path / "_SUCCESS").exists():
        t = time.perf_counter()
        make_baskets(spark, conf, args.baskets, args.seed, path)
        print(f"generated baskets in {time.perf_counter() - t:.1f}s -> {path}")

    params = br.RuleParams(min_support=args.min_support, min_confidence=args.min_confidence,
                           max_itemset_length=args.max_len, max_basket_size=args.max_basket_size,
                           num_partitions=args.num_partitions, algorithm=args.algorithm)
    stored = spark.read.parquet(str(path))
    n_all = stored.count()
    print(f"{n_all:,} baskets (sample generator, {stored.rdd.getNumPartitions()} input partitions), "
          f"algorithm {args.algorithm}, FPGrowth numPartitions {args.num_partitions or 'default'}, cap {args.max_basket_size} items, "
          f"min_support {args.min_support}, min_confidence {args.min_confidence}, max_len {args.max_len}")

    # --- shopsense -------------------------------------------------------------------------------
    with PeakRSS() as mem_s:
        t0 = time.perf_counter()
        basket_df = br.with_oversized(spark.read.parquet(str(path)).drop("oversized"),
                                      params.max_basket_size)
        mined = br.mine(basket_df, params)
        t_mine = time.perf_counter() - t0  # levelwise: counts and itemsets; fpgrowth: counts only
        rules = mined.rules.filter(F.col("confidence") >= params.min_confidence)
        n_rules_s = rules.count()
        n_itemsets_s = mined.itemsets.filter(F.size("items") <= args.max_len).count()
        t_s = time.perf_counter() - t0
        mined.unpersist()
    print(f"shopsense: {t_s:.1f}s, {mined.n_baskets:,} baskets mined ({mined.n_oversized} oversized), "
          f"min count {mined.min_count}, {n_itemsets_s:,} itemsets, {n_rules_s:,} rules; "
          f"peak RSS python {mib(mem_s.py_peak)}, JVM {mib(mem_s.jvm_peak)}; "
          f"mine() {t_mine:.1f}s, rules and counts {t_s - t_mine:.1f}s; load average {os.getloadavg()}")
    if args.skip_mlxtend:
        return

    # --- mlxtend ---------------------------------------------------------------------------------
    import numpy as np
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from scipy import sparse

    spark_rss_before = PeakRSS()._jvm_rss()
    with PeakRSS() as mem_m:
        t0 = time.perf_counter()
        frame = pd.read_parquet(path, columns=["items", "n_items"])
        frame = frame[frame["n_items"] <= args.max_basket_size]
        lengths = frame["n_items"].to_numpy()
        flat = np.concatenate(frame["items"].to_numpy())
        codes, names = pd.factorize(flat, sort=True)
        rows = np.repeat(np.arange(len(frame)), lengths)
        matrix = sparse.csr_matrix((np.ones(len(codes), dtype=bool), (rows, codes)),
                                   shape=(len(frame), len(names)))
        with warnings.catch_warnings():  # pandas: bool SparseDtype fill value (harmless)
            warnings.simplefilter("ignore", FutureWarning)
            onehot = pd.DataFrame.sparse.from_spmatrix(matrix, columns=list(names))
        del frame, flat, codes, rows
        t_enc = time.perf_counter() - t0
        itemsets = fpgrowth(onehot, min_support=args.min_support, use_colnames=True, max_len=args.max_len)
        rules_m = association_rules(itemsets, num_itemsets=len(onehot), metric="confidence",
                                    min_threshold=args.min_confidence)
        rules_m = rules_m[rules_m["consequents"].map(len) == 1]
        t_m = time.perf_counter() - t0
    print(f"mlxtend: {t_m:.1f}s (one-hot encoding {t_enc:.1f}s, fpgrowth + rules {t_m - t_enc:.1f}s), "
          f"{len(onehot):,} baskets, {len(itemsets):,} itemsets, {len(rules_m):,} one-consequent rules; "
          f"peak RSS python {mib(mem_m.py_peak)} (JVM idle at {mib(spark_rss_before)})")
    same = "same" if len(rules_m) == n_rules_s and len(itemsets) == n_itemsets_s else "DIFFERENT"
    print(f"rule counts: {same} ({n_rules_s:,} vs {len(rules_m):,}); itemsets {n_itemsets_s:,} vs "
          f"{len(itemsets):,}")
    print(f"load average {os.getloadavg()}")
    print(f"time ratio shopsense / mlxtend: {t_s / t_m:.2f} (vs fpgrowth + rules alone: "
          f"{t_s / (t_m - t_enc):.2f})")
    spark.stop()


if __name__ == "__main__":
    main()
