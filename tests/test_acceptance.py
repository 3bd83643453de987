"""The README is the acceptance test: what a new user does, on a fresh clone, end to end.

`git clone` of this repository's HEAD, then `make run` exactly as the README says (the clone
installs its own .venv and fetches its own jars through the Makefile), on a terminal (a pty, so
Ctrl-C is the terminal's). Then, as a user would:

- headless Chromium shows every simulated sensor with a value, and no "Store unreachable"; then,
  as a person looks at it while data flows: numbers that grow, drawn charts on a 24-hour UTC
  clock, a reason on every tile, a small chart per sensor, no Deploy button, and the page
  narrowing to one sensor when it is picked in the sidebar (screenshots in test-artifacts/);
- the README's quick-start read commands (`sensorstream status`, `query`, `sql`, psql on the
  PostgreSQL endpoint) run from the clone's venv and exit 0;
- records no event can be (`b"[" * 1000`, a tombstone, bytes that are not UTF-8, deep nesting) sent
  between valid events become dead letters with a reason, the valid events around them are
  stored, and the stream keeps committing;
- Ctrl-C ends `make run` with exit 0 within 5 s, no traceback or ERROR line anywhere in its output,
  and nothing it started left running.

The pipeline uses the README's default ports, so nothing else may hold them; the test says so
when one is taken. It runs `make run` and every part of it: hold the heavy lock when running it by
hand (`flock /tmp/sensorstream-heavy.lock .venv/bin/pytest tests/test_acceptance.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer

from kit.browser import (
    all_chart_text,
    chart_text,
    chromium,
    metrics,
    pick_sensor,
    readings,
    tile_values,
    tiles,
    wait_for,
    why_lines,
)
from kit.readme import quick_start_commands
from kit.stop import STOP_WITHIN, ctrl_c, descendants, gone, java_descendants, launch
from sensorstream.cli import app
from sensorstream.config import ENV_PREFIX, Settings, load_settings
from sensorstream.dashboard.charts import MAX_SERIES
from sensorstream.procs import port_in_use
from sensorstream.serve.client import StoreClient

pytestmark = [
    pytest.mark.broker, pytest.mark.spark, pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(600),
]  # fmt: skip

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
DEFAULTS = Settings()
# Every wait is bounded; these are generous for two shared cores, not performance figures.
INSTALL_AND_START = 420.0  # a fresh .venv (pip's cache warm), the jars (~/.m2 warm), broker, parts
FIRST_COMMIT = 120.0
PAGE = 90.0
COMMAND = 30.0
POISON = 60.0
STOP = 60.0
# Records that are no event: each must become a dead letter with a reason.
POISON_VALUES = [
    b"[" * 1000,
    None,
    b"\xff\xfe\xfd not utf-8",
    b'{"event_id": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]


def simulated_sensors() -> int:
    """How many sensors `sensorstream run` simulates by default, as its --sensors option says."""
    run = typer.main.get_command(app).get_command(typer.Context(typer.main.get_command(app)), "run")
    return next(p.default for p in run.params if p.name == "sensors")


def readme_ports() -> dict[str, int]:
    kafka = int(DEFAULTS.bootstrap_servers.rsplit(":", 1)[1])
    return {"dashboard": DEFAULTS.dashboard_port, "read API": DEFAULTS.api_port, "postgres": DEFAULTS.pg_port,
            "metrics": DEFAULTS.metrics_port, "kafka": kafka}  # fmt: skip


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.replace("\r", "").splitlines()[-lines:])


def event(sensor: str, value: float) -> bytes:
    return json.dumps({"event_id": f"acceptance-{uuid.uuid4().hex}", "sensor_id": sensor, "value": value,
                       "event_time": datetime.now(UTC).isoformat(), "sensor_type": "temperature"}).encode()  # fmt: skip


@pytest.fixture
def user_env(monkeypatch):
    """The environment of a user's shell: none of this test run's Python paths or settings."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) or name in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}:
            monkeypatch.delenv(name)


def test_a_fresh_clone_runs_as_the_readme_says(tmp_path, user_env):
    for tool in ("git", "make", "psql"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found (`make test` installs psql when run as root)")
    taken = {name: port for name, port in readme_ports().items() if port_in_use(port)}
    assert not taken, f"the README's default ports are taken, so `make run` cannot start: {taken}"
    clone = tmp_path / "sensorstream"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    head = subprocess.run(["git", "-C", str(clone), "log", "--oneline", "-1"], capture_output=True, text=True)
    print(f"clone of {head.stdout.strip()}")
    sensors = simulated_sensors()
    started = time.monotonic()
    run = launch(["make", "--no-print-directory", "-C", str(clone), "run"], {}, "terminal")
    try:

        def running() -> None:
            assert run.proc.poll() is None, f"make run exited with {run.proc.returncode}"

        def said(text: str) -> bool:
            running()
            return text in run.output

        # The last recipe line make echoes: every dependency before it is installed.
        wait_for("the install (make deps)", lambda: said(".venv/bin/sensorstream run"), INSTALL_AND_START)
        installed = time.monotonic()
        wait_for("sensorstream running", lambda: said("sensorstream running"), INSTALL_AND_START)
        commits = clone / "data" / "checkpoints" / "sensorstream" / "commits"
        wait_for("a committed batch", lambda: running() or any(commits.glob("[0-9]*")), FIRST_COMMIT)
        print(f"install {installed - started:.0f} s, up and committing {time.monotonic() - installed:.0f} s")

        with chromium(tmp_path) as browser:
            browser.get(f"http://{DEFAULTS.host}:{DEFAULTS.dashboard_port}")

            def every_sensor_with_a_value() -> bool:
                running()
                assert "Store unreachable" not in browser.page_source, "the dashboard cannot read the store"
                values = tile_values(browser)
                return len(values) == sensors and all(v and v != "n/a" for v in values.values())

            wait_for(f"{sensors} sensor tiles with a value", every_sensor_with_a_value, PAGE)
            the_live_page(browser, sensors, running)

        run_quick_start(clone, sensors)
        poison_records_become_dead_letters(clone, running)

        # Everything make run started: the broker's and the stream's JVMs, Streamlit, the API's processes.
        parts = descendants(run.proc.pid)
        assert java_descendants(run.proc.pid), "no Spark or Kafka JVM under make run"
        ctrl_c(run)
        stopped = time.monotonic()
        code = run.wait(STOP)
        took = time.monotonic() - stopped
        print(f"Ctrl-C to exit: {took:.1f} s; whole run {time.monotonic() - started:.0f} s")
        assert code == 0, f"make run exited with {code} after Ctrl-C"
        # Before, the dashboard got the terminal's SIGINT first, `run` logged `ERROR dashboard exited
        # with code 0` and exited 1, and make reported `Error 1`.
        assert "Traceback" not in run.output and " ERROR " not in run.output
        assert "pipeline stopped" in run.output and "make:" not in run.output
        assert took <= STOP_WITHIN, f"make run exited {took:.1f} s after Ctrl-C"
        assert gone(parts, 10), f"left running after Ctrl-C: {parts}"
        # Every part it started has stopped: the broker, the stream, the dashboard free their ports.
        wait_for(
            "the README's ports free again", lambda: not any(map(port_in_use, readme_ports().values())), 15
        )
    except BaseException:
        print(f"--- the last lines of make run's output ---\n{tail(run.output)}")
        raise
    finally:
        stop_what_is_left(run)


def the_live_page(browser, sensors: int, running) -> None:
    """The page as a person sees it while `make run` feeds it: numbers that grow, charts drawn on
    a 24-hour UTC clock, a reason on every tile, a small chart per sensor (up to the charts' limit),
    a viewer's toolbar; then one sensor picked in the sidebar narrows tiles and charts to it."""
    first = wait_for("the readings count on the page", lambda: running() or readings(browser), PAGE)
    second = wait_for("more readings", lambda: running() or ((n := readings(browser)) > first and n), 20)
    assert second > first
    chart = wait_for(
        "a drawn chart",
        lambda: browser.find_elements(
            "css selector", '[data-testid="stVegaLiteChart"] svg, [data-testid="stVegaLiteChart"] canvas'
        ),
        20,
    )
    assert chart
    # Time axes on a 24-hour clock in UTC: the labels carry this hour as the UTC wall clock says it.
    hours = {(datetime.now(UTC) - timedelta(minutes=m)).strftime("%H:") for m in (0, 5)}
    wait_for("24-hour UTC time labels", lambda: any(h in chart_text(browser) for h in hours), 20)
    # A viewer's toolbar: no Deploy button for whoever looks at the page.
    assert not browser.find_elements("xpath", '//*[normalize-space()="Deploy"]')
    # Each tile says what its sensor is judged on (or why it is red), in words.
    wait_for(
        "a reason on every tile", lambda: len(why_lines(browser)) == sensors and all(why_lines(browser)), 20
    )
    assert all(any(w in line for w in ("warming up", "normal", "since", "last anomaly"))
               for line in why_lines(browser))  # fmt: skip
    # One small chart per sensor: the facet headers name them (the first MAX_SERIES of them).
    shown = [f"sensor-{i:04d}" for i in range(1, min(sensors, MAX_SERIES) + 1)]
    wait_for("a small chart per sensor", lambda: all(s in all_chart_text(browser) for s in shown), 20)
    # The lag tile is there; its "n/a" without monitoring is tests/test_dashboard.py's.
    assert "Consumer lag" in metrics(browser)
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(1.5)  # let the charts finish their transitions before the picture
    browser.save_screenshot(str(ARTIFACTS / "acceptance-dashboard.png"))
    for heading in browser.find_elements("css selector", '[data-testid="stHeading"] h3'):
        name = re.sub(r"[^a-z0-9]+", "-", heading.text.split("(")[0].lower()).strip("-")
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", heading)
        time.sleep(0.3)
        browser.save_screenshot(str(ARTIFACTS / f"panel-{name[:40]}.png"))
    browser.execute_script("window.scrollTo(0, 0)")

    pick_sensor(browser, "sensor-0003")
    wait_for("only sensor-0003's tile", lambda: tiles(browser) == ["sensor-0003"], 20)
    # The charts redraw with that sensor alone (no panel of another sensor).
    wait_for(
        "charts of sensor-0003 alone",
        lambda: "sensor-0003" in all_chart_text(browser) and "sensor-0001" not in all_chart_text(browser),
        20,
    )
    time.sleep(1.5)
    browser.save_screenshot(str(ARTIFACTS / "dashboard-filtered.png"))


def run_quick_start(clone: Path, sensors: int) -> None:
    """The README's quick-start lines, pasted into a shell in the clone: each exits 0, no traceback."""
    setup, commands = quick_start_commands()
    assert any(c.startswith("sensorstream status") for c in commands), "the quick start lost `status`"
    for command in commands:
        t0 = time.monotonic()
        while True:
            done = subprocess.run(
                ["bash", "-c", "\n".join([*setup, command])], cwd=clone, capture_output=True, text=True,
                timeout=COMMAND,
            )  # fmt: skip
            out = done.stdout + done.stderr
            # `status` says "stalled" while the first batches still catch up with the producer's
            # backlog; a user who looks again a few seconds later sees it healthy.
            if done.returncode == 0 or time.monotonic() - t0 > COMMAND:
                break
            time.sleep(2)
        print(f"$ {command}\n{tail(out, 30)}\n(exit {done.returncode}, {time.monotonic() - t0:.1f} s)")
        assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{out}"
        assert "Traceback" not in out, out
        if "count(*)" in command:  # the store's readings, counted through the API and through psql
            assert re.search(r"^\s*[1-9]\d*\s*$", done.stdout, re.M), f"no count in {command!r}:\n{out}"
        if " query sensors" in command:
            assert all(f"sensor-{i:04d}" in done.stdout for i in range(1, sensors + 1)), out


def poison_records_become_dead_letters(clone: Path, running) -> None:
    """Records no event can be, between valid events: dead letters with a reason; the valid events
    before and after them are stored, and the stream commits batches after them."""
    from confluent_kafka import Producer

    settings = load_settings(data_dir=clone / "data")
    sensor = "acceptance-probe"  # not one of the simulator's: the dashboard's sensors stay as they were
    delivered: list[tuple[bytes | None, int, int]] = []

    def record(err, msg) -> None:
        assert err is None, err
        delivered.append((msg.value(), msg.partition(), msg.offset()))

    before = [event(sensor, 21.0 + i / 10) for i in range(5)]
    after = [event(sensor, 22.0 + i / 10) for i in range(5)]
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "enable.idempotence": True})
    for value in [*before, *POISON_VALUES, *after]:  # one key: one partition, in this order
        producer.produce(settings.topic, key=sensor.encode(), value=value, on_delivery=record)
    assert producer.flush(30) == 0, "the broker did not take every record"
    poison = [(p, o) for v, p, o in delivered if v not in before and v not in after]
    assert len(poison) == len(POISON_VALUES)
    ids = [json.loads(v)["event_id"] for v in [*before, *after]]

    with StoreClient(settings) as store:

        def last_batch() -> int:
            return int(store.sql("SELECT coalesce(max(batch_id), -1) AS b FROM sink_commits")["b"].iloc[0])

        def stored():
            running()
            listed = ", ".join(f"'{i}'" for i in ids)  # our own hex ids: nothing to escape
            found = store.sql(f"SELECT count(*) AS n FROM readings WHERE event_id IN ({listed})")
            letters = store.sql(
                "SELECT kafka_partition, kafka_offset, error FROM dead_letters WHERE kafka_topic = ? "
                "AND kafka_partition = ? AND kafka_offset BETWEEN ? AND ?",
                [settings.topic, poison[0][0], min(o for _, o in poison), max(o for _, o in poison)],
            )
            complete = int(found["n"].iloc[0]) == len(ids) and len(letters) == len(poison)
            return letters.to_dict("records") if complete else None

        letters = wait_for("the valid events stored, the poison in dead_letters", stored, POISON)
        print("dead letters:", letters)
        assert all(letter["error"].strip() for letter in letters), "a dead letter without a reason"
        batch = last_batch()
        wait_for("a batch committed after them", lambda: running() or last_batch() > batch, POISON)


def stop_what_is_left(run) -> None:
    """After a failure: stop make run's parts (their own sessions) and make itself, leaving nothing."""
    if run.proc.poll() is None:
        left = descendants(run.proc.pid)
        ctrl_c(run)
        try:
            run.proc.wait(STOP)
        except subprocess.TimeoutExpired:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):  # gone meanwhile
                    os.kill(pid, signal.SIGKILL)
    run.kill()
