"""Settings: the documented defaults, env overrides, and bad values named at start-up."""

import pytest

from sensorstream.config import SettingsError, load_settings, parse_duration


def test_defaults_match_the_design_notes(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("SENSORSTREAM_"):
            monkeypatch.delenv(key)
    s = load_settings()
    assert s.bootstrap_servers == "localhost:9092"
    assert s.topic == "sensor-data"
    assert str(s.db) == "data/sensorstream.duckdb"
    assert s.window == 60 and s.allowed_lateness == 30 and s.trigger == 0.5
    assert s.starting_offsets == "earliest"
    assert (s.dashboard_port, s.api_port, s.metrics_port) == (8501, 8765, 9108)


def test_the_store_engine_gets_half_the_cores(monkeypatch):
    # Reads share the store's DuckDB threads with the writer; the other half is Spark's and the sink's.
    cores = len(__import__("os").sched_getaffinity(0))
    assert load_settings().db_threads == max(1, cores // 2)
    monkeypatch.setenv("SENSORSTREAM_DB_THREADS", "3")
    assert load_settings().db_threads == 3


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1 minute", 60), ("30 seconds", 30), ("500 ms", 0.5), ("2h", 7200), ("15", 15), ("1.5 minutes", 90)],
)
def test_durations_read_like_spark_intervals(text, seconds):
    assert parse_duration(text) == seconds


def test_env_overrides_default(monkeypatch):
    monkeypatch.setenv("SENSORSTREAM_WINDOW", "5 minutes")
    assert load_settings().window == 300


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("SENSORSTREAM_WINDOW", "1 fortnight", "SENSORSTREAM_WINDOW"),
        ("SENSORSTREAM_ALLOWED_LATENESS", "soon", "SENSORSTREAM_ALLOWED_LATENESS"),
        ("SENSORSTREAM_STARTING_OFFSETS", "middle", "SENSORSTREAM_STARTING_OFFSETS"),
        ("SENSORSTREAM_PARTITIONS", "zero", "SENSORSTREAM_PARTITIONS"),
        ("SENSORSTREAM_API_PORT", "70000", "SENSORSTREAM_API_PORT"),
        ("SENSORSTREAM_HOST", "0.0.0.0", "SENSORSTREAM_HOST"),
        ("SENSORSTREAM_VALID_RANGES", '{"temperature": [NaN, 100]}', "SENSORSTREAM_VALID_RANGES"),
        ("SENSORSTREAM_VALID_RANGES", '{"temperature": [100, -100]}', "SENSORSTREAM_VALID_RANGES"),
        ("SENSORSTREAM_DB_THREADS", "0", "SENSORSTREAM_DB_THREADS"),
    ],
)
def test_bad_setting_fails_at_startup_naming_it(monkeypatch, env, value, named):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert named in str(err.value)


def test_cli_reports_bad_setting_with_its_name(monkeypatch):
    from typer.testing import CliRunner

    from sensorstream.cli import app

    monkeypatch.setenv("SENSORSTREAM_TRIGGER", "whenever")
    result = CliRunner().invoke(app, ["kafka", "status"])
    assert result.exit_code == 2
    assert "SENSORSTREAM_TRIGGER" in result.output
