"""Settings: one object, built at the entry point from ``nightowl.toml`` and ``NIGHTOWL_*``.

Precedence, highest first: explicit overrides (command-line options), environment variables
(``NIGHTOWL_DATA_ROOT``, ``NIGHTOWL_SOURCES__EVENTS__TIMEZONE``…), the config file, defaults.
Relative paths in the config file are relative to the folder that holds it.
"""

from __future__ import annotations

import tomllib
from contextvars import ContextVar
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from schemas.config import (
    RAW_COMPRESSION,
    CheckSettings,
    FeedbackSettings,
    MarketSettings,
    ModelSettings,
    RawCompression,
    RecommendSettings,
    ReportSettings,
    SourceConfig,
    known_zone,
)
from schemas.landing import SOURCES

CONFIG_NAME = "nightowl.toml"
_config_file: ContextVar[Path | None] = ContextVar("_config_file", default=None)


class ConfigError(Exception):
    """The configuration cannot be used; the message says which file and setting."""


class ScheduleSettings(BaseModel):
    """When the nightly deployment runs (in the business time zone)."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(default="0 2 * * *", description="Cron expression; default 02:00 daily.")
    deployment: str = Field(default="nightly", description="Deployment name in Prefect.")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from cronsim import CronSim, CronSimError

        try:
            CronSim(value, datetime(2026, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"not a cron expression: {value!r} ({exc})") from exc
        return value


class ServerSettings(BaseModel):
    """Where `nightowl server` listens, and where `nightowl serve` finds it."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Loopback unless you put auth in front.")
    port: int = Field(default=4200, ge=1, le=65535)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"


class RunSettings(BaseModel):
    """How steps of a nightly run behave when things go wrong."""

    model_config = ConfigDict(extra="forbid")

    io_retries: int = Field(default=2, ge=0, description="Retries of a step after an I/O error.")
    retry_delay_seconds: float = Field(
        default=10, ge=0, description="First retry delay; each next one is 3 times longer."
    )
    step_timeout_minutes: float | None = Field(
        default=180, gt=0, description="A step still working after this stops (none: no limit)."
    )
    min_free_mb: float = Field(
        default=100, ge=0, description="A run does not start with less free disk on the data root."
    )

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_mb * 2**20)


class AlertSettings(BaseModel):
    """Who hears about a failed nightly run."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: SecretStr | None = Field(
        default=None,
        description="POSTed a JSON body when a nightly run fails (Slack, Teams…). A secret: its "
        "path often holds the token, so it is never printed or logged, only its host.",
    )
    timeout_seconds: float = Field(default=10, gt=0)


class RunnerSettings(BaseModel):
    """Where steps run: threads in the flow's process, or a Dask cluster."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["threads", "dask"] = "threads"
    threads: int | None = Field(
        default=None,
        ge=1,
        description="Steps run at once in threads (none: as many as are ready); 1 runs them one "
        "at a time, in the flow's order, for the least memory.",
    )
    dask_address: str | None = Field(
        default=None, description="Scheduler address (tcp://host:8786); none: a local cluster."
    )
    dask_workers: int = Field(default=2, ge=1, description="Workers of the local cluster.")


class Settings(BaseSettings):
    """Everything a nightly run needs to know about where data is and how to read it."""

    model_config = SettingsConfigDict(
        env_prefix="NIGHTOWL_", env_nested_delimiter="__", extra="forbid"
    )

    data_root: Path = Field(default=Path("data"), description="Landing, warehouse and state root.")
    timezone: str = Field(default="UTC", description="Business time zone: what 'yesterday' means.")
    future_tolerance_hours: float = Field(
        default=24, ge=0, description="Rows dated later than the run date plus this are rejected."
    )
    clean_chunk_rows: int = Field(
        default=4_000_000,
        ge=1,
        description="Raw rows the clean step holds at once: its days are cleaned in slices of "
        "about this many rows (the first night's 90 days as well as one late day).",
    )
    raw_compression: RawCompression = Field(
        default=RAW_COMPRESSION,
        description="How the raw layer's Parquet is compressed: lz4 is the fastest to write and "
        "read back at about snappy's size, zstd the smallest (about 40% smaller), uncompressed "
        "the least CPU (about 1.5 times snappy's size). Clean and later layers are snappy.",
    )
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    checks: CheckSettings = Field(default_factory=CheckSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    market: MarketSettings = Field(default_factory=MarketSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    recommend: RecommendSettings = Field(default_factory=RecommendSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    config_dir: Path = Field(default=Path("."), description="Folder of the config file (set).")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_zone(value)

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; the sources are {list(SOURCES)}")
        self.sources = {s: self.sources.get(s, SourceConfig()) for s in SOURCES}
        if not self.data_root.is_absolute():
            self.data_root = (self.config_dir / self.data_root).absolute()
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls, _config_file.get()))

    def yesterday(self) -> date:
        """The default run date: yesterday in the business time zone."""
        return (datetime.now(ZoneInfo(self.timezone)) - timedelta(days=1)).date()


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # pragma: no cover - __call__ does the work

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = tomllib.loads(self.path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{self.path}: not valid TOML ({exc})") from exc
        return data


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config`` (or ``./nightowl.toml`` if present), the environment, overrides."""
    if config is None and Path(CONFIG_NAME).is_file():
        config = Path(CONFIG_NAME)
    if config is not None and not config.is_file():
        raise ConfigError(f"{config}: config file not found")
    config_dir = config.parent.absolute() if config else Path.cwd()
    token = _config_file.set(config)
    try:
        return Settings(
            config_dir=config_dir, **{k: v for k, v in overrides.items() if v is not None}
        )
    except ValidationError as exc:
        where = str(config) if config else "settings"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from exc
    finally:
        _config_file.reset(token)
