"""Whole-frame orderings computed in parallel: a row's position in an order, and the running sum
of a column in an order, over every row of a frame.

A window with an ``orderBy`` and no ``partitionBy`` (or one partitioned by a literal, which the
optimizer drops) moves every row into one task: slow at scale, and Spark warns ``No Partition
Defined for Window operation`` each time such a plan runs. Here the rows are instead
range-partitioned by the order (every row of a partition sorts before every row of the next),
each partition is numbered or summed on its own, and each partition's result is shifted by the
counts or sums of the partitions before it (one row per partition, collected to the driver).
The range-partitioned frame is checkpointed once, so the per-partition figures and the rows
they shift come from the same partitions (a range partitioner samples afresh each time a plan
runs). Needs the session's checkpoint directory (:func:`shopsense.core.session.build_session`
sets it).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

_PART, _OFFSET = "_range_part", "_range_offset"


def with_position(df: DataFrame, order: list[Column], name: str) -> DataFrame:
    """``df`` with ``name`` (int): each row's 1-based position in ``order`` over the whole frame,
    as ``row_number()`` over ``Window.orderBy(*order)`` gives it. ``order`` should be unique
    over the rows (ties are numbered in an arbitrary order, as row_number numbers them)."""
    parted, offsets, _ = _ranged(df, order, F.count(F.lit(1)), "long")
    within = Window.partitionBy(_PART).orderBy(*order)
    return (parted.join(F.broadcast(offsets), _PART)
            .withColumn(name, (F.row_number().over(within) + F.col(_OFFSET)).cast("int"))
            .drop(_PART, _OFFSET))


def with_sum_before(df: DataFrame, value: Column, order: list[Column], name: str,
                    total: str | None = None) -> DataFrame:
    """``df`` with ``name`` (double): the sum of ``value`` over the rows before each row in
    ``order`` (0 for the first), as ``sum(value)`` over ``Window.orderBy(*order)
    .rowsBetween(unboundedPreceding, -1)`` gives it; with ``total``, also a column of that name
    holding the sum over all rows (null when the frame is empty). Nulls count as 0. ``order``
    should be unique over the rows. Sums are added partition by partition, so they can differ
    from a one-task sum in the last bits of a double."""
    amount = F.coalesce(value.cast("double"), F.lit(0.0))
    parted, offsets, grand = _ranged(df, order, F.sum(amount), "double")
    within = Window.partitionBy(_PART).orderBy(*order).rowsBetween(Window.unboundedPreceding, -1)
    out = (parted.join(F.broadcast(offsets), _PART)
           .withColumn(name, F.coalesce(F.sum(amount).over(within), F.lit(0.0)) + F.col(_OFFSET))
           .drop(_PART, _OFFSET))
    if total is not None:
        out = out.withColumn(total, F.lit(grand).cast("double"))
    return out


def _ranged(df: DataFrame, order: list[Column], figure: Column, kind: str):
    """(the frame range-partitioned by ``order`` with its partition id, checkpointed; each
    partition's offset: ``figure`` summed over the partitions before it; the sum over all, or
    None for an empty frame)."""
    parted = (df.repartitionByRange(*order).withColumn(_PART, F.spark_partition_id())
              .checkpoint(eager=True))
    rows = sorted(tuple(r) for r in parted.groupBy(_PART).agg(figure.alias("figure")).collect())
    offsets, running = [], (0.0 if kind == "double" else 0)
    for part, amount in rows:
        offsets.append((part, running))
        running += amount or 0
    frame = df.sparkSession.createDataFrame(offsets, f"{_PART} int, {_OFFSET} {kind}")
    return parted, frame, (running if rows else None)
