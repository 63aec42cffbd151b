"""Canonical column names, in one place. Functions take column names as parameters defaulting
to these constants."""

# Canonical order line (the input contract, DESIGN.md "Contracts").
ORDER_ID = "order_id"
CUSTOMER_ID = "customer_id"
SKU = "sku"
QUANTITY = "quantity"
UNIT_PRICE = "unit_price"
ORDERED_AT = "ordered_at"
PRODUCT_NAME = "product_name"
CATEGORY = "category"
COUNTRY = "country"
# In silver: quantity * unit_price, negative on returns and cancellations. In an export that
# has line totals but no unit price, the mapped line total.
REVENUE = "revenue"

REQUIRED_ORDER_COLUMNS = (ORDER_ID, CUSTOMER_ID, SKU, QUANTITY, UNIT_PRICE, ORDERED_AT)
OPTIONAL_ORDER_COLUMNS = (PRODUCT_NAME, CATEGORY, COUNTRY)
ORDER_COLUMNS = REQUIRED_ORDER_COLUMNS + OPTIONAL_ORDER_COLUMNS
# What a source's column mapping may name: the order line, and a line total (`revenue`) that
# may stand in for the unit price (the price is then derived from it).
MAPPABLE_ORDER_COLUMNS = ORDER_COLUMNS + (REVENUE,)

# Columns silver adds.
LINE_ID = "line_id"
ORDER_DATE = "order_date"
LINE_TYPE = "line_type"          # sale | return | cancellation
IS_GUEST = "is_guest"            # no customer id: a real sale, left out of customer-level jobs
IS_PRODUCT = "is_product"        # False for postage, fees, manual adjustments
SOURCE_FILE = "source_file"
RUN_ID = "run_id"
INGESTED_AT = "ingested_at"
COMPUTED_AT = "computed_at"
REASON = "reason"

LINE_SALE = "sale"
LINE_RETURN = "return"
LINE_CANCELLATION = "cancellation"

# Product catalogue (optional input).
UNIT_COST = "unit_cost"
LEAD_TIME_DAYS = "lead_time_days"
LEAD_TIME_STD_DAYS = "lead_time_std_days"
PACK_SIZE = "pack_size"
MIN_ORDER_QTY = "min_order_qty"

# Inventory snapshot (optional input).
ON_HAND = "on_hand"
ON_ORDER = "on_order"
AS_OF = "as_of"

CATALOGUE_COLUMNS = (SKU, PRODUCT_NAME, CATEGORY, UNIT_PRICE, UNIT_COST, LEAD_TIME_DAYS,
                     LEAD_TIME_STD_DAYS, PACK_SIZE, MIN_ORDER_QTY)
INVENTORY_COLUMNS = (SKU, ON_HAND, ON_ORDER, AS_OF)

DATE = "date"

# Customer features (gold.customer_features).
HAS_ORDERS = "has_orders"
FIRST_ORDER_DATE = "first_order_date"
LAST_ORDER_DATE = "last_order_date"
RECENCY_DAYS = "recency_days"
FREQUENCY = "frequency"
MONETARY = "monetary"
SALES_REVENUE = "sales_revenue"
RETURNED_REVENUE = "returned_revenue"
TENURE_DAYS = "tenure_days"
AVG_ORDER_VALUE = "avg_order_value"
ITEMS_PER_ORDER = "items_per_order"
RETURN_RATE = "return_rate"
DISTINCT_SKUS = "distinct_skus"
DISTINCT_CATEGORIES = "distinct_categories"
MEAN_DAYS_BETWEEN_ORDERS = "mean_days_between_orders"

# The numeric behaviour features, in table order (the segment job profiles all of them).
NUMERIC_FEATURES = (RECENCY_DAYS, FREQUENCY, MONETARY, SALES_REVENUE, RETURNED_REVENUE,
                    TENURE_DAYS, AVG_ORDER_VALUE, ITEMS_PER_ORDER, RETURN_RATE, DISTINCT_SKUS,
                    DISTINCT_CATEGORIES, MEAN_DAYS_BETWEEN_ORDERS)

# Customer events (optional input): one row per view, add-to-cart or purchase of a session.
EVENT_ID = "event_id"
SESSION_ID = "session_id"
EVENT_TYPE = "event_type"
EVENT_AT = "event_at"
EVENT_DATE = "event_date"
EVENT_COLUMNS = (SESSION_ID, CUSTOMER_ID, SKU, EVENT_TYPE, EVENT_AT)
# The event types, in funnel order: the canonical values of event_type.
VIEW = "view"
ADD_TO_CART = "add_to_cart"
PURCHASE = "purchase"
EVENT_TYPES = (VIEW, ADD_TO_CART, PURCHASE)
