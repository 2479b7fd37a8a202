"""Settings: nightowl.toml, NIGHTOWL_* variables and overrides, in that order of precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.settings import ConfigError, load_settings
from schemas.landing import SOURCES


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_cover_every_source_with_data_under_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.data_root == tmp_path / "data"
    assert set(s.sources) == set(SOURCES) and s.sources["events"].timezone == "UTC"


def test_config_file_in_the_current_folder_is_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "nightowl.toml", 'timezone = "Europe/Berlin"\n')
    assert load_settings().timezone == "Europe/Berlin"


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "proj").mkdir()
    cfg = _write(tmp_path / "proj" / "nightowl.toml", 'data_root = "wh"\n')
    assert load_settings(cfg).data_root == tmp_path / "proj" / "wh"


def test_source_mapping_from_toml(tmp_path):
    cfg = _write(
        tmp_path / "n.toml",
        '[sources.events]\nglob = "*.csv"\n[sources.events.columns]\n"Customer ID" = "user_id"\n',
    )
    s = load_settings(cfg)
    assert s.sources["events"].columns == {"Customer ID": "user_id"}
    assert s.sources["events"].glob == "*.csv" and s.sources["items"].glob == "*"


def test_environment_beats_the_file_and_overrides_beat_both(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "n.toml", 'timezone = "Europe/Berlin"\nfuture_tolerance_hours = 2\n')
    monkeypatch.setenv("NIGHTOWL_TIMEZONE", "Asia/Tokyo")
    monkeypatch.setenv("NIGHTOWL_SOURCES__EVENTS__TIMEZONE", "America/New_York")
    s = load_settings(cfg)
    assert (s.timezone, s.future_tolerance_hours) == ("Asia/Tokyo", 2)
    assert s.sources["events"].timezone == "America/New_York"
    assert load_settings(cfg, timezone="UTC").timezone == "UTC"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[sources.clicks]\nglob = "*"\n', "unknown source(s) ['clicks']"),
        ('[sources.events]\ntimezone = "Mars/Olympus"\n', "sources.events.timezone"),
        ('[sources.events]\ncolour = "red"\n', "sources.events.colour"),
        ("timezone = \n", "not valid TOML"),
        ("[model]\nhorizon_days = 0\n", "model.horizon_days"),
        ('[model]\nprovider = "tpu"\n', "model.provider"),
        ("[model]\nleaves = 3\n", "model.leaves"),
        ("[model]\nrisk_tiers = { high = 80 }\n", "shares in (0, 1]"),
        ("[model]\nrisk_tiers = { low = 0.2 }\n", "built in"),
        ('raw_compression = "brotli"\n', "raw_compression"),
    ],
)
def test_bad_config_names_the_file_and_the_setting(tmp_path, text, message):
    cfg = _write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=r"bad\.toml") as info:
        load_settings(cfg)
    assert message in str(info.value)


def test_a_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_the_online_retail_example_config_is_valid():
    example = Path(__file__).parents[2] / "examples" / "online_retail" / "nightowl.toml"
    s = load_settings(example)
    assert s.sources["events"].columns["Customer ID"] == "user_id"
    assert s.sources["events"].missing_user == "guest"


def test_model_settings_from_toml_and_environment(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "n.toml", "[model]\nhorizon_days = 14\nrisk_tiers = { high = 0.9 }\n")
    monkeypatch.setenv("NIGHTOWL_MODEL__PROVIDER", "cpu")
    s = load_settings(cfg)
    assert s.model.horizon_days == 14 and s.model.risk_tiers == {"high": 0.9}
    assert s.model.provider == "cpu" and s.model.snapshots == 12


def test_the_exchange_rate_index_ingests_as_an_indicator_and_aligns_over_weekends(tmp_path):
    """The Online Retail example's market_indicators mapping, on a few rows shaped like the Bank
    of England file it points at (``date,value``, no rates at weekends)."""
    from datetime import date

    from tasks import units
    from tasks.forecast import indicator_panel
    from warehouse.store import Warehouse

    example = Path(__file__).parents[2] / "examples" / "online_retail" / "nightowl.toml"
    s = load_settings(example)
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "uk_effective_exchange_rate_index_daily_1990-2022.csv").write_text(
        "date,value\n2022-12-22,78.1\n2022-12-23,78.3\n2022-12-26,77.9\n"
    )  # Thursday, Friday, Monday
    cfg = s.sources["market_indicators"].model_copy(update={"landing": str(landing)})
    wh = Warehouse(tmp_path / "data", "test")
    run = date(2022, 12, 27)
    units.ingest_source(wh, "market_indicators", cfg, run, tmp_path)
    units.clean_source(wh, "market_indicators", cfg, run, 24)
    parts = [m.partition for m in wh.manifests("clean", "market_indicators")]
    clean = wh.scan("clean", "market_indicators", parts).collect()
    assert clean.height == 3
    assert clean["indicator"].unique().to_list() == ["gbp_effective_exchange_rate_index"]
    days = [date(2022, 12, d) for d in range(22, 28)]
    grid, stale = indicator_panel(
        clean.lazy(), days, ["Toys"], s.market.indicator_max_staleness_days
    )
    values = grid.sort("date")["ind_gbp_effective_exchange_rate_index"].to_list()
    assert values == [78.1, 78.3, 78.3, 78.3, 77.9, 77.9]  # Friday's rate over the weekend
    assert [(x["last_seen"], x["stale"]) for x in stale] == [("2022-12-26", False)]
