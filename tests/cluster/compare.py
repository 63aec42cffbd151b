"""Table-by-table comparison of two pipeline runs (two warehouses) on the same input.

Tables are small here (a test sample), so each is brought to pandas, sorted by its key and
compared column by column: exact for strings, dates, booleans, integers and arrays; floats within
a tolerance (tight for the deterministic tables, where only the order of a floating-point sum can
differ between a local and a cluster run; looser where an iterative model fit is involved)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from shopsense.core import columns as C
from shopsense.core import tables

# Lineage columns: differ by construction between two runs.
RUN_COLUMNS = (C.RUN_ID, C.COMPUTED_AT, C.INGESTED_AT)
# Floating-point sums whose terms arrive in another order (another partitioning, another
# executor) may differ in the last bits: "exact" allows that much and no more.
EXACT = dict(rtol=1e-9, atol=1e-9)


def table_frame(spark: SparkSession, conf, name: str, keys: list[str]) -> pd.DataFrame:
    df = tables.read_table(spark, conf, name)
    df = df.drop(*[c for c in RUN_COLUMNS if c in df.columns])
    pdf = df.toPandas()
    for col in pdf.columns:  # arrays and maps arrive as numpy arrays / dicts: make them comparable
        if pdf[col].dtype == object:
            pdf[col] = pdf[col].map(_hashable)
    return pdf.sort_values(keys, kind="mergesort").reset_index(drop=True)


def _hashable(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _float_column(series: pd.Series) -> bool:
    return pd.api.types.is_float_dtype(series.dtype)


def assert_tables_equal(spark: SparkSession, expected_conf, actual_conf, name: str, keys: list[str],
                        tolerance: dict[str, dict] | None = None, ignore: tuple[str, ...] = ()) -> int:
    """Assert table ``name`` holds the same rows in both warehouses. ``tolerance`` maps a float
    column (or ``"*"``, every float column) to its ``rtol``/``atol``, default :data:`EXACT`;
    ``ignore`` lists columns left out.
    Returns the number of rows compared."""
    tolerance = tolerance or {}
    expected = table_frame(spark, expected_conf, name, keys).drop(columns=list(ignore))
    actual = table_frame(spark, actual_conf, name, keys).drop(columns=list(ignore))
    assert list(actual.columns) == list(expected.columns), f"{name}: columns differ"
    assert len(actual) == len(expected), (f"{name}: {len(actual)} rows on the cluster, "
                                          f"{len(expected)} in local mode")
    key_diff = (actual[keys] != expected[keys]) & ~(actual[keys].isna() & expected[keys].isna())
    assert not key_diff.any().any(), (f"{name}: different keys, first: "
                                      f"{actual[keys][key_diff.any(axis=1)].head(3).to_dict('records')} vs "
                                      f"{expected[keys][key_diff.any(axis=1)].head(3).to_dict('records')}")
    problems = []
    for col in expected.columns:
        e, a = expected[col], actual[col]
        if _float_column(e) or _float_column(a):
            tol = tolerance.get(col, tolerance.get("*", EXACT))
            ok = np.isclose(a.astype(float), e.astype(float), equal_nan=True, **tol)
        else:
            ok = ((a == e) | (a.isna() & e.isna())).to_numpy()
        if not ok.all():
            bad = np.flatnonzero(~ok)[:3]
            problems.append(f"{col} ({int((~ok).sum())} rows; first at keys "
                            f"{expected.loc[bad, keys].to_dict('records')}: cluster "
                            f"{a.iloc[bad].tolist()} vs local {e.iloc[bad].tolist()})")
    assert not problems, f"{name} differs: " + "; ".join(problems)
    return len(expected)
