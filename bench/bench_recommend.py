"""Benchmark: shopsense recommend (MLlib ALS + block scoring) against the `implicit` library, on
the same implicit-feedback matrix, in one run.

    .venv/bin/pip install implicit        # part of the `bench` extra
    .venv/bin/python bench/bench_recommend.py [--users 100000 --items 20000 --interactions 2000000]

Both train ALS with the same rank, iterations, regularisation and alpha (confidence
1 + alpha * strength), then produce the top 10 for every customer excluding what the customer
already has. Prints seconds and ratios (shopsense / implicit) for training, scoring all
customers, and the total. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # implicit asks for this; Spark's workers set it too

import numpy as np
import pandas as pd


def make_matrix(n_users: int, n_items: int, n_interactions: int, seed: int) -> pd.DataFrame:
    """Distinct (user, item, strength) triples: Zipf-like item popularity, users with skewed
    activity, strength log1p(quantity)."""
    rng = np.random.default_rng(seed)
    item_p = 1.0 / np.arange(1, n_items + 1) ** 0.8
    item_p /= item_p.sum()
    user_p = rng.gamma(0.7, size=n_users)
    user_p /= user_p.sum()
    # every customer has at least one interaction
    seen = pd.DataFrame({"user": np.arange(n_users, dtype=np.int32),
                         "item": rng.choice(n_items, n_users, p=item_p).astype(np.int32)})
    need = n_interactions - len(seen)
    while need > 0:
        m = int(need * 1.15) + 1000
        batch = pd.DataFrame({"user": rng.choice(n_users, m, p=user_p).astype(np.int32),
                              "item": rng.permutation(n_items)[rng.choice(n_items, m, p=item_p)].astype(np.int32)})
        seen = pd.concat([seen, batch]).drop_duplicates()
        need = n_interactions - len(seen)
    seen = seen.iloc[:n_interactions].reset_index(drop=True)
    seen["strength"] = np.log1p(rng.geometric(0.4, len(seen))).astype(np.float32)
    return seen


def bench_shopsense(spark, df: pd.DataFrame, rank: int, iters: int, reg: float, alpha: float,
                    k: int, num_blocks: int, als_conf, block_mb: int,
                    spark_native: bool = False) -> tuple[float, float]:
    from pyspark.sql import functions as F

    from shopsense.recommend import als as R

    ratings = spark.createDataFrame(df).select(F.col("user").cast("int"), F.col("item").cast("int"),
                                               F.col("strength").cast("float")).cache()
    ratings.count()
    # the job's ALS settings from conf (local.yaml: blocks = cores, memory-only storage)
    params = als_conf.model_copy(update={"max_iter": iters, "seed": 42})
    t0 = time.perf_counter()
    model = R.fit_als(ratings, rank, reg, alpha, params, num_blocks)
    model.userFactors.count(), model.itemFactors.count()
    t_train = time.perf_counter() - t0
    # Untimed warm-up, as implicit is imported before its timing: start a Python worker per core
    # with shopsense imported, and let Spark compile the scoring query's code once (a same-shaped
    # query reuses it), on 2,000 customers.
    cores = spark.sparkContext.defaultParallelism
    R.top_k_blocks(model.userFactors.limit(2000), model.itemFactors, k, ratings.select("user", "item"),
                   block_mb, num_partitions=cores).write.format("noop").mode("overwrite").save()
    t0 = time.perf_counter()
    recs = R.top_k_blocks(model.userFactors, model.itemFactors, k, ratings.select("user", "item"), block_mb)
    recs.write.format("noop").mode("overwrite").save()
    t_score = time.perf_counter() - t0
    if spark_native:  # Spark's own scorer, for reference (it cannot exclude what was bought)
        t0 = time.perf_counter()
        model.recommendForAllUsers(k).write.format("noop").mode("overwrite").save()
        print(f"spark recommendForAllUsers (no exclusion): {time.perf_counter() - t0:.1f}s", flush=True)
    ratings.unpersist()
    return t_train, t_score


def bench_implicit(df: pd.DataFrame, n_users: int, n_items: int, rank: int, iters: int, reg: float,
                   alpha: float, k: int, threads: int) -> tuple[float, float]:
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    user_items = sp.csr_matrix((df["strength"].to_numpy(), (df["user"].to_numpy(), df["item"].to_numpy())),
                               shape=(n_users, n_items), dtype=np.float32)
    model = AlternatingLeastSquares(factors=rank, regularization=reg, alpha=alpha, iterations=iters,
                                    random_state=42, num_threads=threads, calculate_training_loss=False)
    t0 = time.perf_counter()
    model.fit(user_items, show_progress=False)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids, _ = model.recommend(np.arange(n_users), user_items, N=k, filter_already_liked_items=True)
    t_score = time.perf_counter() - t0
    assert ids.shape == (n_users, k)
    return t_train, t_score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--interactions", type=int, default=2_000_000)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--reg", type=float, default=0.1)
    ap.add_argument("--alpha", type=float, default=10.0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--num-blocks", type=int, default=0, help="ALS blocks; 0: the cores")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                    help="a conf override for shopsense's side, as the CLI's --set (repeatable)")
    ap.add_argument("--skip-implicit", action="store_true", help="time shopsense only")
    ap.add_argument("--spark-native", action="store_true",
                    help="also time MLlib's recommendForAllUsers (not in the ratios)")
    args = ap.parse_args()

    from shopsense.core.config import conf_dir, load_conf
    from shopsense.core.session import build_session

    df = make_matrix(args.users, args.items, args.interactions, args.seed)
    n_users, n_items = int(df["user"].max()) + 1, args.items
    print(f"matrix: {len(df):,} interactions, {df['user'].nunique():,} customers, "
          f"{df['item'].nunique():,} SKUs; rank {args.rank}, {args.iters} iterations; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    wh = tempfile.mkdtemp(prefix="bench_recommend_")
    conf = load_conf([conf_dir() / "local.yaml"], [f"warehouse={wh}", "spark.progress_bar=false",
                                                   "spark.conf.spark.driver.memory=6g", *args.overrides])
    spark = build_session(conf)
    blocks = args.num_blocks or spark.sparkContext.defaultParallelism
    rec = conf["recommend"]
    print(f"shopsense: local[*] ({spark.sparkContext.defaultParallelism} cores), ALS blocks {blocks}, "
          f"storage {rec['als']['intermediate_storage']}/{rec['als']['final_storage']}, checkpoint every "
          f"{rec['als']['checkpoint_interval']} iterations, scoring blocks of {rec['scoring']['block_mb']} MB",
          flush=True)
    s_train, s_score = bench_shopsense(spark, df, args.rank, args.iters, args.reg, args.alpha, args.k, blocks,
                                        conf.recommend.als, conf.recommend.scoring.block_mb, args.spark_native)
    print(f"shopsense: train {s_train:.1f}s, score all {s_score:.1f}s", flush=True)
    spark.stop()
    if args.skip_implicit:
        return
    threads = os.cpu_count() or 1  # implicit's default (0) is every core too; said explicitly
    print(f"implicit: {threads} threads, CG solver (its default)", flush=True)
    i_train, i_score = bench_implicit(df, n_users, n_items, args.rank, args.iters, args.reg, args.alpha,
                                      args.k, threads)
    print(f"implicit:  train {i_train:.1f}s, score all {i_score:.1f}s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"shopsense: train {s_train:.1f}s, score all {s_score:.1f}s, total {s_train + s_score:.1f}s; "
          f"implicit: train {i_train:.1f}s, score all {i_score:.1f}s, total {i_train + i_score:.1f}s")
    print(f"ratio shopsense/implicit: train {s_train / i_train:.2f}x, score {s_score / i_score:.2f}x, "
          f"total {(s_train + s_score) / (i_train + i_score):.2f}x")


if __name__ == "__main__":
    main()
