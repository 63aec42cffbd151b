"""A bad setting of any job stops `shopsense run all` before Spark starts: one line naming the
key and the file it came from, exit code 2, nothing written."""

from __future__ import annotations

import pytest

from shopsense import cli

BAD = {
    "sample": ("sample.n_days", "5", "must be >= 28, got 5"),
    "ingest": ("ingest.source", "shop", "ingest.source names 'shop', which is not among sources"),
    "features": ("features.window_days", "0", "must be >= 1, got 0"),
    "segment": ("segment.k", "1", "must be >= 2, got 1"),
    "value": ("value.annual_discount_rate", "-0.1", "must be >= 0.0, got -0.1"),
    "propensity": ("propensity.folds", "2", "must be >= 3, got 2"),
    "journey": ("journey.steps", "[view, checkout]", "['checkout'] are not event types"),
    "basket_rules": ("basket_rules.min_confidence", "2", "must be <= 1.0, got 2"),
    "demand": ("demand.promo_discount", "1.5", "must be < 1.0, got 1.5"),
    "forecast": ("forecast.intermittent_method", "ses", "must be one of tsb, croston, got 'ses'"),
    "recommend": ("recommend.top_n", "ten", "must be an integer, got 'ten'"),
    "inventory": ("inventory.service_levels.B", "1.2", "must be < 1.0, got 1.2"),
    "report": ("report.top_rules", "0", "must be >= 1, got 0"),
}


@pytest.mark.parametrize("job", list(BAD))
def test_bad_setting_of_each_job_stops_run_all_before_spark(job, tmp_path, capsys, monkeypatch):
    key, value, message = BAD[job]
    overlay = tmp_path / "mine.yaml"
    parts = key.split(".")
    text = "".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parts[:-1]))
    overlay.write_text(f"warehouse: {tmp_path / 'warehouse'}\n{text}{'  ' * (len(parts) - 1)}"
                       f"{parts[-1]}: {value}\n")
    import shopsense.core.session as session

    monkeypatch.setattr(session, "build_session", lambda conf: pytest.fail("Spark was started"))
    code = cli.main(["run", "all", "--conf", str(overlay)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == cli.EXIT_USAGE
    assert len(err) == 1 and err[0].startswith(f"[shopsense] error: {overlay}: ")
    assert key in err[0] and message in err[0]
    assert not (tmp_path / "warehouse").exists()


def test_a_bad_as_of_is_one_line(capsys, tmp_path):
    code = cli.main(["run", "features", "--set", f"warehouse={tmp_path}", "--as-of", "2024-13-45"])
    assert code == cli.EXIT_USAGE
    assert capsys.readouterr().err.strip() == ("[shopsense] error: --set: as_of must be a date "
                                               "YYYY-MM-DD, got '2024-13-45'")
