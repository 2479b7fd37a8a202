"""Settings: nightowl.toml, NIGHTOWL_* variables and overrides, in that order of precedence."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from nightowl.flows.settings import NOT_SETTINGS, ConfigError, load_settings, names_a_setting
from nightowl.schemas.landing import SOURCES

REPO = Path(__file__).parents[2]


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
        ('[sources.events]\ncolour = "red"\n', "colour: not a setting (got 'red')"),
        ('[sources.events]\ntimezon = "UTC"\n', "timezon: not a setting (did you mean timezone?)"),
        ('future_tolerance_hours = "abc"\n', "future_tolerance_hours: Input should be a valid"),
        (
            '[sources.events]\nencoding = "latin-9x"\n',
            "events.encoding: unknown encoding 'latin-9x'",
        ),
        ('[sources.items]\nnon_product_pattern = "^(POST"\n', "pattern: '^(POST' is not a regular"),
        ('[sources.events]\ntimestamp_format = "%Q"\n', "events.timestamp_format: '%Q' has"),
        ('[checks]\nwarn_only = ["nonexistent"]\n', "warn_only: unknown check(s) ['nonexistent']"),
        ('[checks]\nfresh_sources = ["clicks"]\n', "fresh_sources: unknown source(s) ['clicks']"),
    ],
)
def test_bad_config_names_the_file_and_the_setting(tmp_path, text, message):
    cfg = _write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=r"bad\.toml") as info:
        load_settings(cfg)
    assert message in str(info.value)


def test_every_problem_is_reported_at_once_one_line_each(tmp_path):
    cfg = _write(
        tmp_path / "bad.toml",
        'future_tolerance_hours = "abc"\n'
        '[sources.events]\nencoding = "latin-9x"\ntimestamp_format = "%Q"\n'
        'non_product_pattern = "(?<=C)\\\\d+"\n'
        '[checks]\nwarn_only = ["nonexistent"]\nfresh_sources = ["clicks"]\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    lines = str(info.value).splitlines()
    assert len(lines) == 6 and all(line.startswith(f"{cfg}: ") for line in lines)
    for value in ["'abc'", "'latin-9x'", "'%Q'", "'(?<=C)\\\\d+'", "'nonexistent'", "'clicks'"]:
        assert sum(value in line for line in lines) == 1, value


@pytest.fixture
def warned(caplog):
    """The warnings of the ``nightowl`` logger (whether or not Prefect stopped its propagation)."""
    logger = logging.getLogger("nightowl")
    logger.addHandler(caplog.handler)
    yield lambda: sorted({r.getMessage() for r in caplog.records if r.levelno == logging.WARNING})
    logger.removeHandler(caplog.handler)


def test_unknown_environment_variables_are_warned_about_with_the_closest_name(
    tmp_path, monkeypatch, warned
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NIGHTOWL_DATA_ROOTT", "/elsewhere")
    monkeypatch.setenv("NIGHTOWL_SOURCES__EVENTS__TIMEZON", "Asia/Tokyo")
    monkeypatch.setenv("NIGHTOWL_SOURCES__CLICKS__GLOB", "*.csv")
    s = load_settings()  # a warning, not an error: the variables are ignored
    assert s.data_root == tmp_path / "data" and s.sources["events"].timezone == "UTC"
    assert warned() == [
        "environment variable NIGHTOWL_DATA_ROOTT is not a nightowl setting and is ignored "
        "(did you mean NIGHTOWL_DATA_ROOT?)",
        "environment variable NIGHTOWL_SOURCES__CLICKS__GLOB is not a nightowl setting and is "
        "ignored (did you mean NIGHTOWL_SOURCES__ITEMS__GLOB?)",
        "environment variable NIGHTOWL_SOURCES__EVENTS__TIMEZON is not a nightowl setting and is "
        "ignored (did you mean NIGHTOWL_SOURCES__EVENTS__TIMEZONE?)",
    ]


def test_settings_and_the_harness_flags_are_not_warned_about(tmp_path, monkeypatch, warned):
    monkeypatch.chdir(tmp_path)
    for name in NOT_SETTINGS:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("NIGHTOWL_RUNNER__THREADS", "1")
    monkeypatch.setenv("NIGHTOWL_SOURCES__EVENTS__COLUMNS__CUSTOMER", "user_id")  # a dict's key
    s = load_settings()
    assert s.runner.threads == 1 and s.sources["events"].columns == {"customer": "user_id"}
    assert warned() == []


def test_every_nightowl_variable_the_repository_names_is_a_setting_or_allowed():
    """A new test hook or CI flag read from the environment belongs in NOT_SETTINGS."""
    files = [*REPO.glob("*.md"), *REPO.glob(".ci/*"), REPO / "Makefile"]
    for folder in (
        "nightowl",
        "flows",
        "tasks",
        "warehouse",
        "schemas",
        "tests",
        "bench",
        "docs",
        "examples",
    ):
        files += [p for p in (REPO / folder).rglob("*") if p.suffix in {".py", ".md", ".toml"}]
    files.remove(Path(__file__))  # its misspelt names are on purpose
    named = {m for p in files if p.is_file() for m in re.findall(r"NIGHTOWL_\w*", p.read_text())}
    named = {n for n in named if not n.endswith("_")}  # prefixes, as in "NIGHTOWL_REQUIRE_*"
    assert {"NIGHTOWL_CRASH_AT", "NIGHTOWL_DATA_ROOT", "NIGHTOWL_REQUIRE_MOUNT"} <= named
    assert {n for n in named if n not in NOT_SETTINGS and not names_a_setting(n)} == set()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "NIGHTOWL_FUTURE_TOLERANCE_HOURS",
            "abc",
            "environment variable NIGHTOWL_FUTURE_TOLERANCE_HOURS: Input should be a valid number,"
            " unable to parse string as a number (got 'abc')",
        ),
        (
            "NIGHTOWL_SOURCES__EVENTS__TIMEZONE",
            "Mars/Base",
            "environment variable NIGHTOWL_SOURCES__EVENTS__TIMEZONE: unknown time zone "
            "'Mars/Base' (expected e.g. 'Europe/London')",
        ),
        (
            "nightowl_model__provider",  # names are case-insensitive; the message keeps its case
            "tpu",
            "environment variable nightowl_model__provider: Input should be 'auto', 'cpu' or "
            "'cuda' (got 'tpu')",
        ),
        (
            "NIGHTOWL_CHECKS__WARN_ONLY",
            "null_share",
            "environment variable NIGHTOWL_CHECKS__WARN_ONLY: expected a JSON list such as "
            '["a", "b"] (got \'null_share\')',
        ),
        (
            "NIGHTOWL_SOURCES__EVENTS",
            '{"timezone": "Mars/Base"}',
            "environment variable NIGHTOWL_SOURCES__EVENTS: timezone: unknown time zone "
            "'Mars/Base'",
        ),
    ],
)
def test_a_bad_environment_value_names_the_variable_not_the_file(
    tmp_path, monkeypatch, name, value, message
):
    cfg = _write(tmp_path / "n.toml", 'timezone = "Europe/London"\n')
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value).startswith(message) and "n.toml" not in str(info.value)


def test_a_bad_file_value_beside_environment_json_is_the_files(tmp_path, monkeypatch):
    cfg = _write(tmp_path / "n.toml", '[sources.events]\ntimezone = "Mars/Base"\n')
    monkeypatch.setenv("NIGHTOWL_SOURCES__EVENTS", '{"glob": "*.csv"}')  # merged with the file's
    monkeypatch.setenv("NIGHTOWL_RUN__IO_RETRIES", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value).splitlines() == [
        f"{cfg}: sources.events.timezone: unknown time zone 'Mars/Base' (expected e.g. "
        "'Europe/London')",
        "environment variable NIGHTOWL_RUN__IO_RETRIES: Input should be greater than or equal to "
        "0 (got '-1')",
    ]


def test_a_secret_in_a_bad_environment_value_is_not_repeated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NIGHTOWL_ALERTS", "https://hooks.example.com/T0-secret-9f1")
    with pytest.raises(ConfigError, match="NIGHTOWL_ALERTS: expected a JSON object") as info:
        load_settings()
    assert "T0-secret-9f1" not in str(info.value)


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

    from nightowl.tasks.ingest import units
    from nightowl.tasks.market.forecast import indicator_panel
    from nightowl.warehouse.store import Warehouse

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
