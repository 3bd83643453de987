"""All settings, in one place (env prefix ``SENSORSTREAM_``; CLI flags override).

Every other module takes a :class:`Settings` and derives what it needs from it, so a default
changes here and nowhere else. Bad values fail at start-up with the setting's env name in the
message (see :func:`load_settings`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ByteSize, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "SENSORSTREAM_"

_UNITS = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as ``"1 minute"``, ``"30 seconds"``, ``"500 ms"`` or ``"2h"``.

    A bare number means seconds. Spark's own interval strings use the same words, so one string
    serves both our code and Spark's ``window()``.
    """
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        stripped = text.strip()
        try:
            seconds = float(stripped)
        except ValueError:
            match = _DURATION.match(stripped)
            if not match or match.group(2).lower() not in _UNITS:
                raise ValueError(
                    f"{text!r} is not a duration; write it like '1 minute', '30 seconds' or '500 ms'"
                ) from None
            seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds < 0:
        raise ValueError(f"{text!r} is negative; a duration must be >= 0")
    return seconds


def _duration(value: Any) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]
"""A duration in seconds, given as a number or a string like ``"1 minute"``."""


def _names(value: Any) -> Any:
    if isinstance(value, str):
        if value.lstrip().startswith("["):  # a JSON list, as settings_env writes one
            with contextlib.suppress(ValueError):  # or a name such as [::1], written by hand
                return json.loads(value)
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


NameList = Annotated[list[str], NoDecode, BeforeValidator(_names)]
"""A list of names, given comma-separated (``"a,b"``), as a JSON list, or as a list."""


def half_the_cores() -> int:
    """Half the cores this process may run on (at least one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def spark_interval(seconds: float) -> str:
    """Spark interval text for a duration (Spark wants words, not floats)."""
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis} milliseconds"
    return f"{millis // 1000} seconds"


# Physically possible ranges per sensor type; a reading outside them is a dead letter
# (`out_of_range`), not an anomaly: the sensor or the wire is broken, not the plant.
DEFAULT_VALID_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-90.0, 150.0),  # C
    "humidity": (0.0, 100.0),  # %
    "pressure": (800.0, 1200.0),  # hPa
    "vibration": (0.0, 100.0),  # mm/s
    "power": (-1_000.0, 1_000_000.0),  # W (inverters can report small negatives at night)
    "irradiance": (-50.0, 2_000.0),  # W/m2
}

# Plausible operating ranges; a reading outside them is an anomaly (rule `threshold`).
DEFAULT_ANOMALY_THRESHOLDS: dict[str, tuple[float, float]] = {
    "temperature": (-30.0, 60.0),
    "humidity": (5.0, 95.0),
    "pressure": (950.0, 1060.0),
    "vibration": (0.0, 12.0),
}

# The smallest sigma a reading is judged with, per type (the unit's meaningful resolution).
DEFAULT_SIGMA_FLOORS: dict[str, float] = {
    "temperature": 0.05,
    "humidity": 0.2,
    "pressure": 0.05,
    "vibration": 0.05,
    "*": 1e-6,
}


# The endpoint's password when none is set: fine on loopback, refused on any other address.
DEFAULT_PG_PASSWORD = "sensorstream"


class Settings(BaseSettings):
    """Pipeline settings. Env: ``SENSORSTREAM_<NAME>``; nested dicts are JSON."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=None, extra="ignore", validate_default=True, frozen=True
    )

    # --- where things live -------------------------------------------------------------------
    data_dir: Path = Path("data")
    db: Path = Path("data/sensorstream.duckdb")
    checkpoint_dir: Path = Path("data/checkpoints")
    cache_dir: Path = Field(Path(".cache"), description="Maven-resolved jars (git-ignored)")

    # --- Kafka ---------------------------------------------------------------------------------
    bootstrap_servers: str = "localhost:9092"
    topic: str = "sensor-data"
    partitions: int = Field(3, ge=1, le=1000)
    replication_factor: int = Field(1, ge=1, le=10)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_ca_location: str | None = None

    # --- the streaming job ---------------------------------------------------------------------
    window: Duration = 60.0
    slide: Duration | None = None
    allowed_lateness: Duration = 30.0
    # Half a second: a trigger's fixed cost (Spark's job, the two logs, the sink's statements) is
    # ~0.5 s here, so a 1 s interval left an event waiting up to a second for the next trigger; at
    # 5 K events/s the event->commit p99 went from 1.8 s to 1.3 s. A busier job runs its triggers
    # back to back whatever the interval, so throughput is the same.
    trigger: Duration = 0.5
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    spark_master: str = "local[*]"
    shuffle_partitions: int = Field(2, ge=1, le=10_000)
    max_offsets_per_trigger: int = Field(200_000, ge=1)
    spark_driver_memory: str = "2g"
    valid_ranges: dict[str, tuple[float, float]] = Field(default_factory=lambda: dict(DEFAULT_VALID_RANGES))
    anomaly_thresholds: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: dict(DEFAULT_ANOMALY_THRESHOLDS)
    )
    # How sensors are judged (see sink/judge.py). A reading is compared with its sensor's own
    # baseline: an exponentially weighted mean and variance over about its last
    # ANOMALY_BASELINE_READINGS normal readings, whatever the sensor's rate.
    anomaly_zscore: float = Field(5.0, gt=0)
    anomaly_baseline_readings: int = Field(300, ge=2, le=1_000_000)
    # No statistical verdict before a sensor has this many normal readings behind it.
    anomaly_warmup: int = Field(30, ge=2, le=1_000_000)
    # sigma is at least this (in the sensor's unit), per sensor type; `*` for any other type. Keeps
    # a very steady sensor from alarming at a change in its last decimal.
    anomaly_sigma_floor: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SIGMA_FLOORS))
    # This many identical values in a row: `stuck` (0 turns the rule off).
    anomaly_stuck_readings: int = Field(10, ge=0)
    # CUSUM limit, in sigmas, for a sustained shift away from the baseline: `drift` (0: off).
    anomaly_drift_limit: float = Field(15.0, ge=0)
    # After this many flagged readings in a row the sensor has a new normal: its baseline is learnt again.
    anomaly_relearn_readings: int = Field(300, ge=1)
    # An anomaly state clears after this many normal readings in a row.
    anomaly_clear_readings: int = Field(10, ge=1)
    # Ignored, with a warning at start-up: the z-score uses the last ANOMALY_BASELINE_READINGS readings.
    anomaly_history_windows: int | None = Field(None, ge=2)
    # On SIGINT/SIGTERM the batch in flight gets this long to commit; a slower one (a huge backlog
    # batch) is abandoned and replayed on restart, so a stop stays within a supervisor's patience.
    stop_grace: Duration = 3.0

    # --- the store -----------------------------------------------------------------------------
    retention: Duration = 24 * 3600.0
    retention_interval: Duration = 60.0
    # Aggregates and per-batch metrics are small but grow for ever without a horizon: one
    # window row per sensor and WINDOW, one metrics row per trigger. 0 keeps them.
    window_retention: Duration = 90 * 24 * 3600.0
    metrics_retention: Duration = 7 * 24 * 3600.0
    snapshot_path: Path = Path("data/snapshot.duckdb")
    snapshot_interval: Duration = 0.0  # 0 = off

    # --- reads: the read API, `sensorstream sql` and any other endpoint (reads/) ----------
    # Host header values the read API answers to; a page using DNS rebinding sends its own name.
    api_allowed_hosts: NameList = Field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])
    read_timeout: Duration = 10.0  # wall clock per read
    read_max_rows: int = Field(10_000, ge=1, le=1_000_000)
    read_max_bytes: ByteSize = Field(ByteSize(16 * 2**20), ge=1024)  # an answer's size
    read_max_sql_bytes: ByteSize = Field(ByteSize(16_384), ge=256, le=2**20)  # the SQL text's size
    read_max_columns: int = Field(200, ge=1, le=10_000)
    read_max_concurrent: int = Field(2, ge=1, le=64)  # ad-hoc SQL reads at once
    read_memory_limit: ByteSize = Field(ByteSize(256 * 2**20), ge=16 * 2**20)  # growth per read
    db_memory_limit: ByteSize | None = None  # DuckDB's buffer manager, writer included; None: 80 % of RAM
    # DuckDB's worker threads for the store, shared by the writer's statements and every read. A
    # read's parallel work runs on them at the writer's CPU priority (only the read's own thread is
    # lowered, see reads.priority), so they are capped at half the cores: the other half stays Spark's
    # and the sink's. The sink's parse has its own engine (sink.parse) with every core.
    db_threads: int = Field(default_factory=half_the_cores, ge=1, le=1024)

    # --- serving and monitoring ----------------------------------------------------------------
    host: str = "127.0.0.1"
    dashboard_port: int = Field(8501, ge=1, le=65535)
    api_port: int = Field(8765, ge=0, le=65535)  # 0 = any free port (tests run side by side)
    metrics_port: int = Field(9108, ge=0, le=65535)  # 0 = off
    dashboard_refresh: Duration = 2.0
    stale_after: Duration = 30.0
    alert_lag_batches: int = Field(5, ge=1)
    alert_min_lag: int = Field(1000, ge=0)  # lag_growing fires only above this many waiting records

    # --- the PostgreSQL endpoint (read-only, password-protected; for Grafana, Tableau, psql ...) ---
    pg_port: int = Field(5433, ge=-1, le=65535)  # 0 = any free port, -1 = off
    pg_host: str = "127.0.0.1"  # a container reaching the host needs e.g. 0.0.0.0 (and a real password)
    pg_user: str = Field("sensorstream", min_length=1)
    # A plain string (the stream's subprocess gets it through the environment), kept out of repr().
    pg_password: str = Field(DEFAULT_PG_PASSWORD, min_length=1, repr=False)
    pg_max_connections: int = Field(32, ge=1, le=1000)  # authenticated sessions at once
    pg_workers: int = Field(4, ge=1, le=64)  # threads running the endpoint's parsing and queries
    # The endpoint is reachable before anyone proves the password, so every stage before that is
    # bounded: a connection must finish start-up and SCRAM within PG_AUTH_TIMEOUT (a driver needs
    # milliseconds; PostgreSQL allows 60 s), and at most PG_MAX_AUTHENTICATING are in that stage at
    # once, in a budget of their own: a newcomer beyond it drops the oldest of the address holding
    # the most, so silent sockets can neither take the authenticated slots nor keep a client out.
    pg_auth_timeout: Duration = 5.0
    pg_max_authenticating: int = Field(16, ge=1, le=1000)
    # Authenticated sessions one client address may hold, so one host (a runaway pool, a script
    # in a loop) cannot take every PG_MAX_CONNECTIONS slot from the others.
    pg_max_connections_per_address: int = Field(16, ge=1, le=1000)
    # A session that sends nothing (or stops reading its answers) this long is closed, as
    # PostgreSQL's idle_session_timeout does: a vanished client's slot comes back. 0 = never.
    pg_idle_timeout: Duration = 1800.0
    # The endpoint's own process (protocol, authentication, parsing, translation) holds at most
    # this much resident memory; past it, it exits with a sentence and the writer starts it again.
    pg_memory_limit: ByteSize = Field(ByteSize(512 * 2**20), ge=256 * 2**20)  # it starts at ~180 MB

    # --- logging -------------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="before")
    @classmethod
    def _paths_under_data_dir(cls, data: Any) -> Any:
        # DB, checkpoints and the snapshot live under DATA_DIR unless set one by one, so pointing
        # DATA_DIR elsewhere moves the whole state (tests, a second pipeline on one machine).
        if isinstance(data, dict):
            base = Path(data.get("data_dir") or "data")
            data.setdefault("db", base / "sensorstream.duckdb")
            data.setdefault("checkpoint_dir", base / "checkpoints")
            data.setdefault("snapshot_path", base / "snapshot.duckdb")
        return data

    @field_validator("window", "trigger", "pg_auth_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value

    @field_validator("host")
    @classmethod
    def _loopback(cls, value: str) -> str:
        # The dashboard, API and metrics are unauthenticated: keep them on this machine.
        if not (value.startswith("127.") or value in {"localhost", "::1"}):
            raise ValueError("must be a loopback address (127.x.x.x, localhost or ::1)")
        return value

    @model_validator(mode="after")
    def _pg_exposed_needs_password(self) -> Settings:
        # Off loopback the endpoint is reachable by others: a password from the README is no lock.
        loopback = self.pg_host.startswith("127.") or self.pg_host in {"localhost", "::1"}
        if not loopback and self.pg_password == DEFAULT_PG_PASSWORD:
            raise ValueError(
                f"SENSORSTREAM_PG_HOST={self.pg_host} exposes the PostgreSQL endpoint beyond this machine: "
                "set SENSORSTREAM_PG_PASSWORD to a password of your own"
            )
        return self

    @field_validator("read_timeout")
    @classmethod
    def _read_timeout(cls, value: float) -> float:
        if not 0 < value <= 3600:
            raise ValueError("must be more than 0 and at most 1 hour")
        return value

    @field_validator("valid_ranges", "anomaly_thresholds")
    @classmethod
    def _ranges(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for kind, (low, high) in value.items():
            if math.isnan(low) or math.isnan(high):
                raise ValueError(
                    f"range for {kind!r} has a NaN bound; use numbers (or -1e999 / 1e999 for none)"
                )
            if low > high:
                raise ValueError(f"range for {kind!r} has low {low} > high {high}")
        return value

    @field_validator("anomaly_sigma_floor")
    @classmethod
    def _floors(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"every floor must be > 0 (got {bad})")
        return {"*": DEFAULT_SIGMA_FLOORS["*"], **value}

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.slide is not None and not (0 < self.slide <= self.window):
            raise ValueError("SENSORSTREAM_SLIDE must be > 0 and <= SENSORSTREAM_WINDOW")
        if self.retention and self.retention < self.window + self.allowed_lateness:
            # Windows are recomputed from `readings`; it must hold every open window's rows.
            raise ValueError("SENSORSTREAM_RETENTION must be >= WINDOW + ALLOWED_LATENESS")
        return self

    # --- derived values ------------------------------------------------------------------------
    @property
    def window_step(self) -> float:
        """Seconds between window starts: SLIDE for sliding windows, WINDOW for tumbling ones.

        The stream tags each event with the latest window start on this grid; the sink derives
        the earlier windows of a sliding event from it."""
        return self.slide or self.window

    @property
    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings shared by our producer, consumer and admin client."""
        conf = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        optional = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": self.kafka_sasl_password,
            "ssl.ca.location": self.kafka_ssl_ca_location,
        }
        conf.update({k: v for k, v in optional.items() if v})
        return conf

    @property
    def spark_kafka_options(self) -> dict[str, str]:
        """The same connection for Spark's Kafka source (Java client names, `kafka.` prefix)."""
        opts = {
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "kafka.security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            opts["kafka.sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username and self.kafka_sasl_password:
            module = (
                "org.apache.kafka.common.security.scram.ScramLoginModule"
                if (self.kafka_sasl_mechanism or "").startswith("SCRAM")
                else "org.apache.kafka.common.security.plain.PlainLoginModule"
            )
            opts["kafka.sasl.jaas.config"] = (
                f'{module} required username="{self.kafka_sasl_username}" '
                f'password="{self.kafka_sasl_password}";'
            )
        if self.kafka_ssl_ca_location:
            opts["kafka.ssl.truststore.location"] = self.kafka_ssl_ca_location
        return opts

    @property
    def window_interval(self) -> str:
        return spark_interval(self.window)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"


def env_text(value: Any) -> str:
    """The text of a ``SENSORSTREAM_*`` variable that :class:`Settings` reads back as ``value``."""
    if isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)  # the shortest text that parses back to the same float, 'inf' included
    if isinstance(value, int):
        return str(int(value))  # ByteSize too: its str() would be '16.0MiB', which rounds
    # Lists and dicts as JSON, which pydantic-settings decodes (and Python's json reads Infinity).
    return json.dumps(value)


def settings_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment by default) with every setting as ``SENSORSTREAM_*``.

    The one way settings travel to a child process: a child that calls :func:`load_settings` on
    this environment gets ``settings`` back field for field. A field that is ``None`` is removed, so
    a value inherited from ``base`` cannot come back in its place.
    """
    ours = {f"{ENV_PREFIX}{name.upper()}": getattr(settings, name) for name in type(settings).model_fields}
    # Names are read case-insensitively: an inherited 'sensorstream_window' would compete with ours.
    env = {k: v for k, v in (os.environ if base is None else base).items() if k.upper() not in ours}
    env.update({key: env_text(value) for key, value in ours.items() if value is not None})
    return env


class SettingsError(ValueError):
    """A setting is wrong; the message names it by its env name."""


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment plus CLI overrides (``None`` means "not given").

    Turns pydantic's error into one line per bad setting, named as the user would set it.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            name = f"{ENV_PREFIX}{field.upper()}" if field else "settings"
            value = err.get("input")
            lines.append(f"{name}={value!r}: {err['msg']}")
        raise SettingsError("invalid setting: " + "; ".join(lines)) from None
    if settings.anomaly_history_windows is not None:
        logging.getLogger(__name__).warning(
            "%sANOMALY_HISTORY_WINDOWS is deprecated and ignored: a reading is judged against its "
            "sensor's last readings; set %sANOMALY_BASELINE_READINGS (how many) instead",
            ENV_PREFIX,
            ENV_PREFIX,
        )
    return settings
