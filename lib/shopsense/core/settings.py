"""The typed configuration: one pydantic model per conf section, validated before Spark starts.

Every section forbids unknown keys, takes values in their own type only (``true`` is not an
integer, ``"3"`` is not a number), and carries the ranges the jobs need, so a wrong value stops
``shopsense run all`` before any job writes. ``null`` means "automatic" wherever a key has an
automatic value (a partition count, a cap, the as-of date). Jobs read typed attributes:
``conf.inventory.service_levels.A``, never casts of the raw mapping.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shopsense.core import columns as C

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Share = Annotated[float, Field(ge=0.0, le=1.0)]
OpenShare = Annotated[float, Field(gt=0.0, lt=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]
NonNegativeFloat = Annotated[float, Field(ge=0.0)]
StorageLevel = Literal["MEMORY_ONLY", "MEMORY_AND_DISK", "MEMORY_ONLY_SER", "MEMORY_AND_DISK_SER",
                       "DISK_ONLY"]
Scalar = str | int | float | bool


class Section(BaseModel):
    """A conf section: unknown keys and values of another type are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _iso_date(value):
    """Dates are written YYYY-MM-DD in conf; YAML may already have made them dates."""
    if value is None or isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"must be a date YYYY-MM-DD, got {value!r}")


def _as_text(value):
    """YAML reads a stock code such as 22423 as a number; stock codes are text."""
    return [str(v) for v in value] if isinstance(value, list) else value


def _as_numbers(value):
    """In a list of numbers an integer is a number too ([0.8, 1])."""
    if isinstance(value, list):
        return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


# --- Spark and the sample generator -------------------------------------------------------------

class SparkSection(Section):
    master: str | None = None
    python: Literal["driver", "inherit"] = "driver"
    jars: str | None = None
    progress_bar: bool = True
    shuffle_partitions: PositiveInt = 200
    checkpoint_dir: str | None = None
    conf: dict[str, Scalar] = {}


class SampleSection(Section):
    out_dir: str = "data/sample"
    n_customers: PositiveInt = 2000
    n_skus: PositiveInt = 200
    n_days: Annotated[int, Field(ge=28)] = 730
    start_date: str = "2023-01-01"
    seed: int = 42
    guest_share: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.10
    return_rate: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.02
    n_pairs: NonNegativeInt = 10
    n_tastes: PositiveInt = 5

    @field_validator("start_date")
    @classmethod
    def _start_is_a_date(cls, value: str) -> str:
        _iso_date(value)
        return value


# --- ingest and sources ---------------------------------------------------------------------------

class FileSpec(Section):
    """One raw input: files (a file, a folder or a glob) and the mapping of canonical columns
    (left) to the export's own names (right)."""

    CANONICAL: ClassVar[tuple[str, ...]] = ()

    path: str
    format: Literal["csv", "parquet", "json"] = "csv"
    options: dict[str, Scalar] = {}
    columns: dict[str, str] = {}
    # One Spark datetime pattern, or several tried in turn (the first that parses wins).
    timestamp_format: str | list[str] | None = None
    cancel_prefix: str | None = None
    # Text encoding of CSV/JSON files; null: UTF-8, and text that does not decode is quarantined.
    encoding: str | None = None
    # Source columns that identify a line on their own (a natural key such as invoice + line
    # number); empty: a line is identified by its canonical content.
    key_columns: list[str] = []

    @property
    def timestamp_formats(self) -> list[str]:
        if self.timestamp_format is None:
            return []
        return [self.timestamp_format] if isinstance(self.timestamp_format, str) else list(self.timestamp_format)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str | None) -> str | None:
        import codecs

        if value is None:
            return None
        try:
            # Python's canonical name (latin-1 -> iso8859-1), which Java, and so Spark, knows too
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"{value!r} is not a known text encoding") from None

    @field_validator("path")
    @classmethod
    def _path_given(cls, value: str) -> str:
        if not value.strip() or value == "???":
            raise ValueError("is required")
        return value

    @field_validator("columns")
    @classmethod
    def _canonical_columns(cls, value: dict[str, str]) -> dict[str, str]:
        for canon in value:
            if canon not in cls.CANONICAL:
                raise ValueError(f".{canon}: {canon!r} is not a canonical column (expected one of "
                                 f"{', '.join(cls.CANONICAL)})")
        return value


class OrdersSpec(FileSpec):
    CANONICAL: ClassVar[tuple[str, ...]] = C.MAPPABLE_ORDER_COLUMNS


class CatalogueSpec(FileSpec):
    CANONICAL: ClassVar[tuple[str, ...]] = C.CATALOGUE_COLUMNS


class InventorySpec(FileSpec):
    CANONICAL: ClassVar[tuple[str, ...]] = C.INVENTORY_COLUMNS


class EventsSpec(FileSpec):
    """A customer events export (views, add-to-cart, purchases), one row per event."""

    CANONICAL: ClassVar[tuple[str, ...]] = C.EVENT_COLUMNS

    # The export's own value of each canonical event type (``add_to_cart: addtocart``); a type
    # left out is expected under its canonical name. Values compare trimmed and lower-cased.
    event_types: dict[str, str] = {}

    @field_validator("event_types")
    @classmethod
    def _canonical_types(cls, value: dict[str, str]) -> dict[str, str]:
        for canon in value:
            if canon not in C.EVENT_TYPES:
                raise ValueError(f".{canon}: {canon!r} is not an event type (expected one of "
                                 f"{', '.join(C.EVENT_TYPES)})")
        spellings = [v.strip().lower() for v in value.values()]
        if len(set(spellings)) < len(spellings):
            raise ValueError(f"two event types have the same source value: {value}")
        return value

    @property
    def type_values(self) -> dict[str, str]:
        """Source value (trimmed, lower-case) -> canonical event type."""
        return {self.event_types.get(t, t).strip().lower(): t for t in C.EVENT_TYPES}


class SourceSpec(Section):
    orders: OrdersSpec
    catalogue: CatalogueSpec | None = None
    inventory: InventorySpec | None = None
    events: EventsSpec | None = None
    # True only for the generated sample: its ids are made up, so the fixed development key
    # pseudonymises them (and tests can join the planted truth).
    generated: bool = False


class PlausibilitySection(Section):
    future_tolerance_days: NonNegativeFloat = 1.0
    earliest_date: dt.date = dt.date(1990, 1, 1)
    max_quantity: PositiveFloat = 1e6
    max_unit_price: PositiveFloat = 1e6
    max_revenue: PositiveFloat = 1e8

    @field_validator("earliest_date", mode="before")
    @classmethod
    def _floor_is_a_date(cls, value):
        return _iso_date(value)


class IngestSection(Section):
    source: str = "sample"
    pseudonym_key_env: str = "SHOPSENSE_PSEUDONYM_KEY"
    non_product_skus: list[str] = []
    plausibility: PlausibilitySection = PlausibilitySection()
    # Read only files not ingested before (by path, size and modification time); false reads
    # every file under the source's paths again.
    incremental: bool = True

    @field_validator("non_product_skus", mode="before")
    @classmethod
    def _skus_as_text(cls, value):
        return _as_text(value)


# --- customers ------------------------------------------------------------------------------------

class FeaturesSection(Section):
    window_days: PositiveInt | None = None


class JourneySection(Section):
    # Only events of the last window_days days up to as_of count; null: all up to as_of.
    window_days: PositiveInt | None = None
    # The funnel's steps, in order: event types; events of other types are left out.
    steps: Annotated[list[str], Field(min_length=2)] = list(C.EVENT_TYPES)

    @field_validator("steps")
    @classmethod
    def _known_steps(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s not in C.EVENT_TYPES]
        if unknown:
            raise ValueError(f"{unknown} are not event types (expected some of "
                             f"{', '.join(C.EVENT_TYPES)})")
        if len(set(value)) < len(value):
            raise ValueError(f"a step is listed twice: {value}")
        return value


class ValueSection(Section):
    time_unit_days: PositiveFloat = 7.0
    propensity_days: PositiveInt = 30
    clv_months: PositiveInt = 12
    annual_discount_rate: NonNegativeFloat = 0.10
    holdout_days: PositiveInt | None = None
    max_fit_groups: PositiveInt = 20000
    value_digits: PositiveInt = 4
    penalty: PositiveFloat = 0.001


class PropensitySection(Section):
    window_days: PositiveInt = 30
    classifier: Literal["logistic", "gbt"] = "logistic"
    calibration: Literal["platt", "isotonic"] = "platt"
    folds: Annotated[int, Field(ge=3)] = 5
    max_iter: PositiveInt = 100
    reg_param: NonNegativeFloat = 0.01
    max_depth: PositiveInt = 4
    step_size: Annotated[float, Field(gt=0, le=1)] = 0.1
    seed: int = 7
    model: Literal["auto", "bgnbd", "classifier"] = "auto"
    min_class_customers: PositiveInt = 20


class NamingSection(Section):
    recent_days: PositiveInt = 90
    new_tenure_days: PositiveInt = 90
    champion_factor: PositiveFloat = 3.0
    occasional_factor: PositiveFloat = 0.5


class SegmentSection(Section):
    features: Annotated[list[str], Field(min_length=1)] = ["recency_days", "frequency", "monetary",
                                                           "tenure_days"]
    log_features: list[str] = ["frequency", "monetary", "tenure_days"]
    k: Annotated[int, Field(ge=2)] | None = None
    k_min: Annotated[int, Field(ge=2)] = 2
    k_max: Annotated[int, Field(ge=2)] = 8
    # 0 takes the k with the highest silhouette; more takes the largest k within this of it.
    silhouette_tolerance: Share = 0.0
    # Customers the silhouette search uses; null means all of them.
    selection_sample: PositiveInt | None = 200000
    seed: int = 42
    max_iter: PositiveInt = 50
    n_init: PositiveInt = 3
    model_path: str | None = None
    naming: NamingSection = NamingSection()

    @model_validator(mode="after")
    def _consistent(self):
        unknown = [f for f in self.features if f not in C.NUMERIC_FEATURES]
        if unknown:
            raise ValueError(f".features: must name columns of gold.customer_features "
                             f"({', '.join(C.NUMERIC_FEATURES)}); got unknown {unknown}")
        stray = [f for f in self.log_features if f not in self.features]
        if stray:
            raise ValueError(f".log_features: {stray} are not in segment.features {self.features}")
        if self.k is None and self.k_min > self.k_max:
            raise ValueError(f".k_min: needs 2 <= k_min <= k_max, got {self.k_min}..{self.k_max}")
        return self


class MigrationSection(Section):
    # "month": calendar month ends; "days": as_of, as_of - period_days, as_of - 2 x period_days, ...
    period: Literal["month", "days"] = "month"
    period_days: PositiveInt = 28
    # Transitions counted: segments are assigned at periods + 1 period ends up to as_of.
    periods: Annotated[int, Field(ge=1, le=120)] = 6


# --- baskets ------------------------------------------------------------------------------------

class FrequentlyBoughtTogether(Section):
    top_n: PositiveInt = 10
    min_confidence: Share = 0.1
    min_lift: NonNegativeFloat = 1.0


class BasketRulesSection(Section):
    level: Literal["sku", "category"] = "sku"
    exclude_skus: list[str] = []
    max_basket_size: PositiveInt = 100
    min_support: Annotated[float, Field(gt=0.0, le=1.0)] = 0.01
    min_support_count: PositiveInt | None = None
    min_confidence: Share = 0.2
    max_itemset_length: Annotated[int, Field(ge=2)] = 3
    algorithm: Literal["levelwise", "fpgrowth"] = "levelwise"
    num_partitions: PositiveInt | None = None
    frequently_bought_together: FrequentlyBoughtTogether = FrequentlyBoughtTogether()

    @field_validator("exclude_skus", mode="before")
    @classmethod
    def _skus_as_text(cls, value):
        return _as_text(value)


# --- supply ---------------------------------------------------------------------------------------

class DemandSection(Section):
    promo_discount: OpenShare = 0.10


class ForecastSection(Section):
    horizon: PositiveInt = 28
    active_days: PositiveInt = 90
    season_length: PositiveInt = 7
    backtest_windows: NonNegativeInt = 3
    # Days between backtest origins; null means the horizon.
    backtest_step: PositiveInt | None = None
    backtest_reuse_order: bool = True
    max_p: NonNegativeInt = 2
    max_q: NonNegativeInt = 2
    max_d: Literal[0, 1] = 1
    information_criterion: Literal["aic", "bic"] = "aic"
    arima_maxiter: PositiveInt = 50
    arima_max_models: PositiveInt = 6
    arima_fit_days: PositiveInt = 364
    max_history_days: PositiveInt = 730
    min_history_for_arima: PositiveInt = 56
    time_budget_seconds: NonNegativeFloat = 10.0
    adi_threshold: PositiveFloat = 1.32
    cv2_threshold: PositiveFloat = 0.49
    intermittent_method: Literal["tsb", "croston"] = "tsb"
    seasonal_test_alpha: Share = 0.05
    kpss_alpha: Share = 0.05
    # Partitions of the one applyInPandas pass; null means four per task slot.
    partitions: PositiveInt | None = None


class ServiceLevels(Section):
    A: OpenShare = 0.98
    B: OpenShare = 0.95
    C: OpenShare = 0.90


class InventoryDefaults(Section):
    lead_time_days: NonNegativeFloat = 14.0
    lead_time_std_days: NonNegativeFloat = 3.0
    unit_cost_share: PositiveFloat = 0.6
    unit_cost: PositiveFloat = 1.0
    pack_size: PositiveFloat = 1.0
    min_order_qty: NonNegativeFloat = 1.0
    on_hand: float = 0.0
    on_order: NonNegativeFloat = 0.0


class SimulationSection(Section):
    enabled: bool = True
    days: PositiveInt = 182
    fit_days: PositiveInt = 182
    seed: int = 42


class InventorySection(Section):
    service_measure: Literal["fill_rate", "cycle"] = "fill_rate"
    service_levels: ServiceLevels = ServiceLevels()
    abc_thresholds: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.80, 0.95]
    xyz_thresholds: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.5, 1.0]
    class_window_days: PositiveInt = 364
    xyz_period_days: PositiveInt = 7
    review_period_days: NonNegativeFloat = 1.0
    ordering_cost: PositiveFloat = 20.0
    holding_cost_rate: PositiveFloat = 0.25
    # Cap of an order in days of average demand; null means no cap.
    max_order_cover_days: PositiveFloat | None = 90.0
    overstock_cover_days: PositiveFloat = 180.0
    defaults: InventoryDefaults = InventoryDefaults()
    simulation: SimulationSection = SimulationSection()
    # Partitions of the replay; null means twice the default parallelism.
    partitions: PositiveInt | None = None

    @field_validator("abc_thresholds", "xyz_thresholds", mode="before")
    @classmethod
    def _numbers(cls, value):
        return _as_numbers(value)

    @model_validator(mode="after")
    def _ordered(self):
        a, b = self.abc_thresholds
        if not 0.0 < a < b <= 1.0:
            raise ValueError(f".abc_thresholds: must be 0 < A < B <= 1, got {[a, b]}")
        x, y = self.xyz_thresholds
        if not 0.0 < x < y:
            raise ValueError(f".xyz_thresholds: must be 0 < X < Y, got {[x, y]}")
        return self


# --- recommend ------------------------------------------------------------------------------------

class EvaluationSection(Section):
    test_days: PositiveInt = 30
    validation_days: PositiveInt = 30
    exclude_purchased: bool = True


class GridSection(Section):
    rank: Annotated[list[PositiveInt], Field(min_length=1)] = [16, 32]
    reg_param: Annotated[list[NonNegativeFloat], Field(min_length=1)] = [0.01, 0.1]
    alpha: Annotated[list[NonNegativeFloat], Field(min_length=1)] = [1.0, 10.0]

    @field_validator("reg_param", "alpha", mode="before")
    @classmethod
    def _numbers(cls, value):
        return _as_numbers(value)


class AlsSection(Section):
    max_iter: PositiveInt = 10
    seed: int = 42
    checkpoint_interval: PositiveInt = 5
    # User and item blocks; null means the default parallelism.
    num_blocks: PositiveInt | None = None
    intermediate_storage: StorageLevel = "MEMORY_AND_DISK"
    final_storage: StorageLevel = "MEMORY_AND_DISK"


class ScoringSection(Section):
    block_mb: PositiveInt = 64
    # Partitions of the customer factors when scoring; null keeps Spark's.
    num_partitions: PositiveInt | None = None


class EventsSection(Section):
    source: str | None = None
    weights: dict[str, float] = {"view": 0.1, "add_to_cart": 0.5}


class RecommendSection(Section):
    top_n: PositiveInt = 10
    k: PositiveInt = 10
    exclude_purchased: bool = True
    exclude_out_of_stock: bool = True
    min_items: PositiveInt = 2
    strength: Literal["log1p", "quantity"] = "log1p"
    recency_half_life_days: PositiveFloat | None = None
    select_by: Literal["precision", "recall", "ndcg", "map", "hit_rate"] = "ndcg"
    evaluation: EvaluationSection = EvaluationSection()
    grid: GridSection = GridSection()
    als: AlsSection = AlsSection()
    scoring: ScoringSection = ScoringSection()
    events: EventsSection = EventsSection()


# --- report and the whole ---------------------------------------------------------------------

class ReportSection(Section):
    path: str | None = None
    top_skus: PositiveInt = 6
    history_days: PositiveInt = 90
    top_rules: PositiveInt = 20
    reorder_rows: PositiveInt = 25


class Settings(Section):
    """The whole configuration (conf/base.yaml holds every default and explains each key)."""

    app_name: str = "shopsense"
    warehouse: str
    as_of: dt.date | None = None
    # A last order day with fewer lines than this share of the median day of the 28 before it is
    # taken as incomplete: the default as-of date is the day before it.
    as_of_min_day_share: Share = 0.25
    # Replacing a non-empty table with an empty one is an error unless this is true.
    allow_empty_output: bool = False
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    spark: SparkSection = SparkSection()
    sample: SampleSection = SampleSection()
    ingest: IngestSection = IngestSection()
    sources: dict[str, SourceSpec] = {}
    features: FeaturesSection = FeaturesSection()
    segment: SegmentSection = SegmentSection()
    migration: MigrationSection = MigrationSection()
    value: ValueSection = ValueSection()
    propensity: PropensitySection = PropensitySection()
    journey: JourneySection = JourneySection()
    basket_rules: BasketRulesSection = BasketRulesSection()
    demand: DemandSection = DemandSection()
    forecast: ForecastSection = ForecastSection()
    recommend: RecommendSection = RecommendSection()
    inventory: InventorySection = InventorySection()
    report: ReportSection = ReportSection()

    @field_validator("as_of", mode="before")
    @classmethod
    def _as_of_is_a_date(cls, value):
        return _iso_date(value)

    @field_validator("sources")
    @classmethod
    def _source_names(cls, value: dict) -> dict:
        import re

        for name in value:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(f".{name}: a source name is letters, digits and _ (it names the "
                                 f"source's bronze table), got {name!r}")
        return value

    @model_validator(mode="after")
    def _source_exists(self):
        if self.ingest.source not in self.sources:
            raise ValueError(f".ingest.source: names {self.ingest.source!r}, which is not among "
                             f"sources: {', '.join(sorted(self.sources))}")
        return self
