"""Settings: one object, built at the entry point from ``nightowl.toml`` and ``NIGHTOWL_*``.

Precedence, highest first: explicit overrides (command-line options), environment variables
(``NIGHTOWL_DATA_ROOT``, ``NIGHTOWL_SOURCES__EVENTS__TIMEZONE``…), the config file, defaults.
Relative paths in the config file are relative to the folder that holds it. Every problem is
reported at load, one line each, naming the file and setting or the environment variable.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tomllib
import types
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin
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
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from nightowl.errors import NightowlError
from nightowl.schemas.config import (
    CLEAN_CHUNK_ROWS,
    FUTURE_HORIZON_DAYS,
    RAW_COMPRESSION,
    CheckSettings,
    EvaluateSettings,
    FeedbackSettings,
    HealthSettings,
    MarketSettings,
    ModelSettings,
    QuerySettings,
    RawCompression,
    RecommendSettings,
    ReportSettings,
)
from nightowl.schemas.landing import SOURCES
from nightowl.schemas.sources import SourceConfig, known_zone
from nightowl.tasks.common.fanout import Fanout
from nightowl.tasks.common.fanout import Kind as FanoutKind

CONFIG_NAME = "nightowl.toml"
ENV_PREFIX = "NIGHTOWL_"
ENV_NESTED = "__"
#: NIGHTOWL_* variables that are not settings, read elsewhere: the crash-point test hook
#: (warehouse/crash.py), the command's --debug (nightowl/cli.py), CI's flags that turn a skipped
#: test into a failure (tests/browser.py, tests/flows/test_crash.py) and a test's example count
#: (tests/tasks/ingest/test_deliveries.py). Any other NIGHTOWL_* variable that names no setting is
#: warned about at load.
NOT_SETTINGS = frozenset(
    {
        "NIGHTOWL_CRASH_AT",
        "NIGHTOWL_DEBUG",
        "NIGHTOWL_REQUIRE_BROWSER",
        "NIGHTOWL_REQUIRE_MOUNT",
    }
)

log = logging.getLogger("nightowl")
_config_file: ContextVar[Path | None] = ContextVar("_config_file", default=None)


class ConfigError(NightowlError):
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
    fanout: FanoutKind = Field(
        default="auto",
        description="How the bucketed steps (recommend, features-user, score-users) run their "
        "hash buckets of users. auto: over the Dask cluster when kind = 'dask', else one after "
        "another in the step's process (Polars already uses every core of one machine); "
        "threads or processes: on this machine; serial: one after another; dask: over the "
        "cluster the step runs on (or at dask_address).",
    )
    fanout_workers: int | None = Field(
        default=None,
        ge=1,
        description="Threads or processes of fanout = threads | processes (none: one per core).",
    )

    def fanout_of(self) -> Fanout:
        """The fan-out these settings ask for."""
        return Fanout(self.fanout, self.fanout_workers, self.dask_address)


class Settings(BaseSettings):
    """Everything a nightly run needs to know about where data is and how to read it."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED, extra="forbid"
    )

    data_root: Path = Field(default=Path("data"), description="Landing, warehouse and state root.")
    timezone: str = Field(default="UTC", description="Business time zone: what 'yesterday' means.")
    future_tolerance_hours: float = Field(
        default=24,
        ge=0,
        description="Rows dated later than the latest run date plus this are held until their "
        "day comes (moved into the clean tables by the run that reaches them).",
    )
    future_horizon_days: int = Field(
        default=FUTURE_HORIZON_DAYS,
        ge=0,
        description="Rows dated more than this many days after the latest run date cannot be "
        "true (a clock in 2099): they are quarantined instead of held.",
    )
    clean_chunk_rows: int = Field(
        default=CLEAN_CHUNK_ROWS,
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
    evaluate: EvaluateSettings = Field(default_factory=EvaluateSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
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
        if isinstance(env_settings, EnvSettingsSource):
            # Unknown names are warned about and bad JSON reported by load_settings: left in,
            # they would fail as "extra inputs" or stop the environment source altogether.
            env_settings.env_vars = {
                name: value
                for name, value in env_settings.env_vars.items()
                if not name.upper().startswith(ENV_PREFIX)
                or (value is not None and _usable_env(name, value))
            }
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
    environ = {k: v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)}
    for name in sorted(environ):
        if not names_a_setting(name) and name.upper() not in NOT_SETTINGS:
            log.warning(_unknown_env(name))
    problems = [p for name, value in sorted(environ.items()) if (p := _env_json(name, value))]
    settings: Settings | None = None
    cause: Exception | None = None
    token = _config_file.set(config)
    try:
        settings = Settings(
            config_dir=config_dir, **{k: v for k, v in overrides.items() if v is not None}
        )
    except ValidationError as exc:
        where = str(config) if config else "settings"
        usable = {k: v for k, v in environ.items() if _usable_env(k, v)}
        problems += [_problem(err, where, usable) for err in exc.errors()]
        cause = exc
    except ConfigError as exc:  # the file is not TOML: nothing more to check in it
        problems.append(str(exc))
        cause = exc
    except SettingsError as exc:  # pragma: no cover - load_settings checks the JSON it decodes
        problems.append(f"environment variables {ENV_PREFIX}*: {exc}")
        cause = exc
    finally:
        _config_file.reset(token)
    if problems or settings is None:
        raise ConfigError("\n".join(problems)) from cause
    return settings


# ---- the environment: which NIGHTOWL_* names are settings, and where a bad value came from ----
_NOT_A_SETTING = object()


def _unwrap(annotation: Any) -> Any:
    """``X`` of ``X | None``; other annotations as they are."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _target(path: Sequence[str | int]) -> Any:
    """The type of the setting at ``path`` (field names, lower-case), or _NOT_A_SETTING."""
    node: Any = Settings
    for depth, part in enumerate(path):
        if _is_model(node):
            field = node.model_fields.get(str(part))
            if field is None or (node is Settings and part == "config_dir"):  # set, not read
                return _NOT_A_SETTING
            node = _unwrap(field.annotation)
        elif get_origin(node) is dict:
            if depth == 1 and path[0] == "sources" and part not in SOURCES:
                return _NOT_A_SETTING
            node = _unwrap(get_args(node)[1])
        else:
            return _NOT_A_SETTING
    return node


def _env_path(name: str) -> tuple[str, ...]:
    return tuple(name[len(ENV_PREFIX) :].lower().split(ENV_NESTED))


def _env_target(name: str) -> Any:
    """The type of the setting environment variable ``name`` sets, or _NOT_A_SETTING."""
    return _target(_env_path(name))


def names_a_setting(name: str) -> bool:
    """Whether the NIGHTOWL_* environment variable ``name`` (any case) sets a setting."""
    return _env_target(name) is not _NOT_A_SETTING


@cache
def _setting_env_names() -> tuple[str, ...]:
    """Every settable environment variable name (a dict's keys: only the sources')."""
    names: list[str] = []

    def walk(prefix: str, model: type[BaseModel]) -> None:
        for field_name, field in model.model_fields.items():
            if model is Settings and field_name == "config_dir":
                continue
            name = f"{prefix}{field_name.upper()}"
            names.append(name)
            annotation = _unwrap(field.annotation)
            if _is_model(annotation):
                walk(f"{name}{ENV_NESTED}", annotation)
            elif model is Settings and field_name == "sources":
                for source in SOURCES:
                    names.append(f"{name}{ENV_NESTED}{source.upper()}")
                    walk(f"{name}{ENV_NESTED}{source.upper()}{ENV_NESTED}", SourceConfig)

    walk(ENV_PREFIX, Settings)
    return tuple(names)


def _unknown_env(name: str) -> str:
    """The warning for a NIGHTOWL_* variable that is no setting, with the closest one."""
    known = {n[len(ENV_PREFIX) :]: n for n in _setting_env_names()}
    close = difflib.get_close_matches(name[len(ENV_PREFIX) :].upper(), known, n=1, cutoff=0.7)
    hint = f" (did you mean {known[close[0]]}?)" if close else ""
    return f"environment variable {name} is not a nightowl setting and is ignored{hint}"


def _is_json(annotation: Any) -> bool:
    """Whether a setting of this type is given as JSON in the environment (pydantic-settings)."""
    return _is_model(annotation) or get_origin(annotation) in (list, dict, tuple, set)


def _env_json(name: str, value: str) -> str | None:
    """The problem with a NIGHTOWL_* variable whose setting takes JSON and whose value is not."""
    target = _env_target(name)
    if target is _NOT_A_SETTING or not _is_json(target):
        return None
    try:
        json.loads(value)
    except ValueError:
        kind = "list" if get_origin(target) in (list, tuple, set) else "object"
        example = '["a", "b"]' if kind == "list" else '{"key": "value"}'
        got = "" if _holds_secret(target) else f" (got {value!r})"
        return f"environment variable {name}: expected a JSON {kind} such as {example}{got}"
    return None


def _usable_env(name: str, value: str) -> bool:
    """Whether the settings read this NIGHTOWL_* variable: a setting, JSON where JSON is due."""
    return names_a_setting(name) and _env_json(name, value) is None


def _holds_secret(annotation: Any) -> bool:
    """Whether a value of this type is or holds a secret, never to be echoed in a message."""
    if annotation is SecretStr:
        return True
    if _is_model(annotation):
        return any(_holds_secret(_unwrap(f.annotation)) for f in annotation.model_fields.values())
    return any(_holds_secret(_unwrap(a)) for a in get_args(annotation))


def _secret_at(loc: Sequence[str | int]) -> bool:
    """Whether the setting at ``loc`` (as deep as it names settings) is or holds a secret."""
    for depth in range(len(loc), 0, -1):
        target = _target(loc[:depth])
        if target is not _NOT_A_SETTING:
            return _holds_secret(target)
    return False


def _from_env(loc: Sequence[str | int], environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The NIGHTOWL_* variable (name, value) that gave the value at ``loc``, if one did."""
    by_path = {_env_path(name): (name, value) for name, value in environ.items()}
    parts = tuple(str(p).lower() for p in loc)
    for depth in range(len(parts), 0, -1):
        hit = by_path.get(parts[:depth])
        if hit is None:
            continue
        try:
            inner = json.loads(hit[1])
        except ValueError:
            return hit  # a plain value: the rest of loc is pydantic's name for its type
        if _json_holds(inner, loc[depth:]):
            return hit
    return None


def _json_holds(value: Any, path: Sequence[str | int]) -> bool:
    """Whether decoded JSON holds ``path``; a plain value ends it (pydantic names its type)."""
    for part in path:
        if not isinstance(value, dict | list):
            return True
        try:
            value = value[part]  # type: ignore[index]  # a str into a list: the TypeError below
        except (KeyError, IndexError, TypeError):
            return False  # not in this variable's JSON: merged in from the config file
    return True


def _problem(err: Mapping[str, Any], where: str, environ: Mapping[str, str]) -> str:
    """One line for one validation error: the variable, or the file and setting, and the value."""
    loc = err["loc"]
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        parent = _target(loc[:-1])
        fields = list(parent.model_fields) if _is_model(parent) else []
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.7)
        message = "not a setting" + (f" (did you mean {close[0]}?)" if close else "")
    env = _from_env(loc, environ)
    value = err.get("input")
    if env is not None and len(_env_path(env[0])) == len(loc):
        value = env[1]  # as it was written, not as pydantic-settings decoded it
    got = ""
    shown = isinstance(value, str | int | float | bool) and not _secret_at(loc)
    if shown and repr(value) not in message:
        got = f" (got {value!r})"
    if env is not None:
        inner = ".".join(str(p) for p in loc[len(_env_path(env[0])) :])  # within its JSON
        return f"environment variable {env[0]}: {f'{inner}: ' if inner else ''}{message}{got}"
    setting = ".".join(str(p) for p in loc)
    return f"{where}: {setting}: {message}{got}" if setting else f"{where}: {message}{got}"
