"""A source's events spec and the journey section are checked at the door, before Spark starts."""

import pytest

from shopsense.core.config import ConfigError
from tests.helpers import make_conf


@pytest.mark.parametrize("override, message", [
    ("journey.steps=[view, view]", "journey.steps: a step is listed twice"),
    ("journey.steps=[view]", "journey.steps"),
    ("sources.sample.events.event_types={buy: x}", "event_types.buy: 'buy' is not an event type"),
    ("sources.sample.events.event_types={view: a, purchase: ' A'}",
     "two event types have the same source value"),
    ("sources.sample.events.columns={order_id: x}", "'order_id' is not a canonical column"),
])
def test_bad_events_and_journey_settings_are_refused(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        make_conf(tmp_path / "warehouse", override)


def test_event_types_map_the_exports_values_to_the_canonical_ones(tmp_path):
    conf = make_conf(tmp_path / "warehouse", "sources.sample.events.event_types={add_to_cart: AddToCart}")
    assert conf.sources["sample"].events.type_values == {
        "view": "view", "addtocart": "add_to_cart", "purchase": "purchase"}
    assert make_conf(tmp_path / "w", "sources.sample.events=null").sources["sample"].events is None
