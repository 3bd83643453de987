"""The deployment files under deploy/: systemd units that systemd accepts, an environment file of
real settings, and a container file whose commands (health check included) are real CLI commands.

No container engine runs here, so the image is not built; what can be checked without one is.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sensorstream.config import ENV_PREFIX, Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
INSTALLED = "/opt/sensorstream/.venv/bin/sensorstream"  # where the units expect the CLI (deploy/README.md)


def unit_settings(unit: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (every section), values of repeated keys in order."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def cli_accepts(args: list[str]) -> subprocess.CompletedProcess:
    """Does ``sensorstream ARGS --help`` succeed, i.e. are the command and its options real?"""
    return subprocess.run(
        [sys.executable, "-m", "sensorstream", *args, "--help"], capture_output=True, text=True, timeout=60
    )


def test_there_are_units_for_broker_stream_and_dashboard():
    assert {u.name for u in UNITS} == {
        "sensorstream-kafka.service",
        "sensorstream-stream.service",
        "sensorstream-dashboard.service",
    }


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (`make test` installs it as root: apt-get install systemd)",
)
def test_systemd_analyze_verify_accepts_the_units(tmp_path):
    # verify checks that ExecStart's binary exists: point it at this checkout's CLI, nothing else changes.
    cli = Path(sys.executable).with_name("sensorstream")
    assert cli.exists()
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALLED, str(cli)))
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "sensorstream" in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


@pytest.mark.process  # `sensorstream ... --help` for each unit's command
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_each_unit_runs_a_real_command_restarts_on_failure_and_reads_the_environment_file(unit):
    keys = unit_settings(unit)
    exec_start = shlex.split(keys["ExecStart"][0])
    assert exec_start[0] == INSTALLED
    result = cli_accepts(exec_start[1:])
    assert result.returncode == 0, (
        f"{unit.name}: {keys['ExecStart'][0]} is not a CLI command: {result.stderr}"
    )
    assert keys["Restart"] == ["on-failure"]  # exit 0 = stopped on request; anything else restarts
    assert keys["EnvironmentFile"] == ["/etc/sensorstream/sensorstream.env"]
    # The stop must fit in the time systemd allows before SIGKILL (the stream needs about 5 s).
    assert float(keys["TimeoutStopSec"][0]) >= 20


def test_the_environment_file_example_holds_only_real_valid_settings(tmp_path):
    values = {}
    for line in (DEPLOY / "systemd" / "sensorstream.env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert key.startswith(ENV_PREFIX), key
            values[key.removeprefix(ENV_PREFIX).lower()] = value
    fields = set(Settings.model_fields)
    assert set(values) <= fields, set(values) - fields
    settings = load_settings(**values)  # a bad value raises, naming the setting
    assert settings.stop_grace == 3.0 and settings.bootstrap_servers == values["bootstrap_servers"]


def _instructions(text: str) -> list[tuple[str, str]]:
    """Containerfile instructions as (KEYWORD, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in joined.splitlines() if ln.strip()]


@pytest.mark.process
def test_the_container_file_health_check_and_commands_are_real_cli_commands():
    instructions = _instructions((DEPLOY / "Containerfile").read_text())
    by_keyword: dict[str, list[str]] = {}
    for keyword, args in instructions:
        by_keyword.setdefault(keyword, []).append(args)

    (health,) = by_keyword["HEALTHCHECK"]
    options, _, check = health.partition(" CMD ")
    assert "--interval" in options and "--timeout" in options
    words = shlex.split(check)
    assert words[:2] == ["sensorstream", "status"], check
    args = words[1 : words.index(">")] if ">" in words else words[1:]
    assert cli_accepts(args).returncode == 0, check
    # Docker reserves exit code 2, which `status` uses for "broker down": anything unhealthy must be 1.
    assert check.rstrip().endswith("|| exit 1")

    import json

    entrypoint = json.loads(by_keyword["ENTRYPOINT"][0])
    command = json.loads(by_keyword["CMD"][-1])
    assert entrypoint[0].endswith("tini") and entrypoint[-1] == "sensorstream"  # tini forwards SIGTERM
    assert cli_accepts(command).returncode == 0
    # What it copies exists, and it installs from the lock like `make` does.
    root = DEPLOY.parent
    for copy in by_keyword["COPY"]:
        for source in shlex.split(copy)[:-1]:
            assert (root / source).exists(), source
    assert any("-c constraints.txt" in run for run in by_keyword["RUN"])
