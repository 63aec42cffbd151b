"""The column rules of ingest: text clean-up, numbers, timestamps, the reason codes a line is
quarantined for (in the order they are checked: the first that applies wins), and the key that
identifies a line by its canonical content."""

from __future__ import annotations

import datetime as dt
import re

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

from shopsense.core import columns as C
from shopsense.core.settings import PlausibilitySection

#: Spark's CSV and JSON readers put the text of a record they cannot split into fields here.
CORRUPT_RECORD = "_corrupt_record"

#: What a decoder puts where bytes are not valid text in the declared (or default) encoding.
REPLACEMENT_CHARACTER = "\ufffd"

#: Control characters no text field of an order holds: NUL bytes and the C0 controls other than
#: tab, line feed and carriage return (which quoted CSV fields may hold), and DEL. A field with
#: them is binary or mis-decoded content (UTF-16 read as one byte per character), like
#: REPLACEMENT_CHARACTER: the line is quarantined as undecodable_text.
#: One pattern for both engines: Python's re and Java's regex (Spark's rlike) read \xhh alike.
CONTROL_CHARACTERS_SQL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
CONTROL_CHARACTERS = re.compile(CONTROL_CHARACTERS_SQL)

# Reason codes of silver.quarantine, in the order they are checked.
REASONS = (
    "malformed_record", "undecodable_text",
    "missing_order_id", "missing_sku", "missing_date", "unparsable_date", "date_before_floor",
    "future_date", "missing_quantity", "quantity_not_numeric", "quantity_not_finite",
    "zero_quantity", "implausible_quantity", "missing_price", "price_not_numeric",
    "price_not_finite", "implausible_price", "implausible_revenue",
    "positive_quantity_on_cancellation", "stock_adjustment", "non_positive_price",
)


def text(col: Column) -> Column:
    """Trimmed text, with blank strings as null."""
    trimmed = F.trim(col.cast("string"))
    return F.when(trimmed == "", None).otherwise(trimmed)


def normalise_customer_id(col: Column) -> Column:
    """Customer ids exported as floats (``17850.0``) become ``17850``; blanks become null."""
    return F.regexp_replace(text(col), r"^(\d+)\.0+$", "$1")


def to_double(col: Column) -> Column:
    """Text to double, infinities and NaN included; null where the text is not a number."""
    return text(col).try_cast("double")


def is_finite(value: Column) -> Column:
    return ~F.isnan(value) & (F.abs(value) != float("inf"))


def to_number(col: Column) -> Column:
    """Text to double; null where it is not a finite number (never an error)."""
    value = to_double(col)
    return F.when(is_finite(value), value)


def _epoch_to_timestamp(value: Column) -> Column:
    """An integer epoch to a timestamp, its unit told by its size: seconds, milliseconds,
    microseconds or nanoseconds (pandas writes nanoseconds; dates after 1973 in any unit)."""
    magnitude = F.abs(value)
    return (F.when(magnitude >= F.lit(10**17), F.timestamp_micros((value / 1000).cast("long")))
            .when(magnitude >= F.lit(10**14), F.timestamp_micros(value))
            .when(magnitude >= F.lit(10**11), F.timestamp_millis(value))
            .otherwise(F.timestamp_seconds(value)))


def to_timestamp(col: Column, dtype: T.DataType, formats: list[str]) -> Column:
    """A timestamp from a timestamp, date, epoch (a Parquet INT64 timestamp read as a long) or
    text column; text is tried with each Spark datetime pattern in ``formats`` in turn (Spark's
    own parsing when there is none). Null where nothing parses."""
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return col.cast("timestamp")
    if isinstance(dtype, (T.LongType, T.IntegerType)):
        return _epoch_to_timestamp(col.cast("long"))
    if not formats:
        return text(col).try_cast("timestamp")
    return F.coalesce(*[F.try_to_timestamp(text(col), F.lit(fmt)) for fmt in formats])


def rejection_reason(fields: dict[str, Column], malformed: Column, undecodable: Column,
                     is_cancel: Column, ingest_started: dt.datetime,
                     rules: PlausibilitySection) -> Column:
    """The first reason code (see REASONS) a line fails, or null when it is valid. ``fields``
    holds, per canonical name, the raw text (``<name>_text``) and the typed value (``<name>``)
    of order_id, sku, ordered_at, quantity and unit_price."""
    f = fields
    qty_value, price_value = to_double(f["quantity_text"]), to_double(f["unit_price_text"])
    qty, price = f[C.QUANTITY], f[C.UNIT_PRICE]
    latest = ingest_started + dt.timedelta(days=rules.future_tolerance_days)
    checks = [
        (malformed, "malformed_record"),
        (undecodable, "undecodable_text"),
        (f[C.ORDER_ID].isNull(), "missing_order_id"),
        (f[C.SKU].isNull(), "missing_sku"),
        (f["ordered_at_text"].isNull(), "missing_date"),
        (f[C.ORDERED_AT].isNull(), "unparsable_date"),
        (f[C.ORDERED_AT] < F.lit(dt.datetime.combine(rules.earliest_date, dt.time())), "date_before_floor"),
        (f[C.ORDERED_AT] > F.lit(latest), "future_date"),
        (f["quantity_text"].isNull(), "missing_quantity"),
        (qty_value.isNull(), "quantity_not_numeric"),
        (~is_finite(qty_value), "quantity_not_finite"),
        (qty == 0, "zero_quantity"),
        (F.abs(qty) > rules.max_quantity, "implausible_quantity"),
        (f["unit_price_text"].isNull(), "missing_price"),
        (price_value.isNull(), "price_not_numeric"),
        (~is_finite(price_value), "price_not_finite"),
        (F.abs(price) > rules.max_unit_price, "implausible_price"),
        (F.abs(qty * price) > rules.max_revenue, "implausible_revenue"),
        (is_cancel & (qty > 0), "positive_quantity_on_cancellation"),
        (~is_cancel & (qty < 0) & (price == 0), "stock_adjustment"),
        (price <= 0, "non_positive_price"),
    ]
    assert tuple(reason for _, reason in checks) == REASONS
    expr = F.when(checks[0][0], checks[0][1])
    for condition, reason in checks[1:]:
        expr = expr.when(condition, reason)
    return expr


def line_type(is_cancel: Column, qty: Column) -> Column:
    return (F.when(is_cancel, C.LINE_CANCELLATION)
            .when(qty < 0, C.LINE_RETURN)
            .otherwise(C.LINE_SALE))


#: The canonical fields a line's identity is computed from, in this order.
KEY_FIELDS = (C.ORDER_ID, C.CUSTOMER_ID, C.SKU, C.PRODUCT_NAME, C.CATEGORY, C.COUNTRY,
              C.QUANTITY, C.UNIT_PRICE, C.ORDERED_AT)


def content_key(values: dict[str, Column]) -> Column:
    """SHA-256 (hex) of a line's canonical content: typed, normalised values (numbers as
    doubles, the time as a UTC timestamp, the customer as its pseudonym), so the same line in
    any formatting, column order or file layout has the same key. ``values`` holds a column per
    KEY_FIELDS name; where a field did not parse, its raw text stands in (marked, so that text
    never equals a typed value)."""
    parts = []
    for name in KEY_FIELDS:
        value = values[name]
        parts.append(F.coalesce(value.cast("string"), F.lit("\u0000")).alias(name))
    return F.sha2(F.concat_ws("\u0001", *parts), 256)


def declared_key(columns: list[Column]) -> Column:
    """SHA-256 (hex) of the trimmed text of the source's natural-key columns."""
    return F.sha2(F.concat_ws("\u0001", *[F.coalesce(text(c), F.lit("\u0000")) for c in columns]), 256)
