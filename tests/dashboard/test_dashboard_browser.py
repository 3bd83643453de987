"""The dashboard in a real browser against a running pipeline.

Kafka (session broker) -> the simulator (``sensorstream.produce``) -> the Spark job in this
process (``StreamJob``, with ``StoreService`` serving the read API) -> Streamlit started with
``start_dashboard`` -> headless Chromium driven by Selenium. The page must show numbers that grow
while data flows, draw a chart, and narrow down when a filter is picked. A screenshot goes to
test-artifacts/dashboard.png for a person to look at.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kit.browser import chromium, metrics, readings, tiles, wait_for
from sensorstream.dashboard.launch import dashboard_url, start_dashboard, stop_dashboard
from sensorstream.kafka.topics import create_topic
from sensorstream.produce import ProducePlan, produce
from sensorstream.serve.store_service import StoreService
from sensorstream.sink.merge import BatchMerger
from sensorstream.store.db import connect
from sensorstream.stream.job import StreamJob
from sensorstream.tools.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator:
    with chromium(tmp_path) as driver:
        yield driver


def test_the_live_dashboard_in_chromium(kafka, spark, topic, make_settings, tmp_path, browser):
    started = time.monotonic()
    api_port, dashboard_port = free_ports(2)
    settings = make_settings(
        bootstrap_servers=kafka.bootstrap_servers, topic=topic, trigger="500 ms", window="10 seconds",
        allowed_lateness="5 seconds", api_port=api_port, dashboard_port=dashboard_port, dashboard_refresh=1,
    )  # fmt: skip
    create_topic({"bootstrap.servers": kafka.bootstrap_servers}, topic, 3)
    con = connect(settings.db)
    job = StreamJob(spark, settings, BatchMerger(con, settings))
    service = StoreService(con, settings).start()
    stop = threading.Event()
    plan = ProducePlan(sensors=6, rate=80, duration=120, malformed=0.02, late=0.02, seed=7)
    producer = threading.Thread(target=produce, args=(settings, plan), kwargs={"stop": stop}, daemon=True)
    dashboard = None
    try:
        job.start()
        producer.start()
        with open(tmp_path / "streamlit.log", "w") as log:
            dashboard = start_dashboard(settings, log=log)
        print(f"pipeline and dashboard up: {time.monotonic() - started:.1f} s")
        browser.get(dashboard_url(settings))

        first = wait_for("the first readings on the page", lambda: readings(browser), 60)
        time.sleep(2)  # the producer keeps sending; the fragments refresh every second
        second = wait_for("more readings", lambda: (n := readings(browser)) > first and n, 20)
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
        wait_for("six sensor tiles", lambda: len(tiles(browser)) == 6, 20)
        # Each tile says what its sensor is judged on (or why it is red), in words.
        wait_for(
            "a reason on every tile", lambda: all(why_lines(browser)) and len(why_lines(browser)) == 6, 20
        )
        assert all(any(w in line for w in ("warming up", "normal", "since", "last anomaly"))
                   for line in why_lines(browser))  # fmt: skip
        # One small chart per sensor: the facet headers name them.
        wait_for(
            "a small chart per sensor",
            lambda: all(f"sensor-000{i}" in all_chart_text(browser) for i in range(1, 7)),
            20,
        )
        assert metrics(browser)["Consumer lag"] == "n/a"  # no monitoring in this test
        ARTIFACTS.mkdir(exist_ok=True)
        time.sleep(1.5)  # let the charts finish their transitions before the picture
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
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
    finally:
        stop.set()
        if dashboard is not None:
            stop_dashboard(dashboard)
        producer.join(10) if producer.is_alive() else None
        job.stop()
        service.stop()
        con.close()
    # Bounded for CI (not a performance figure): with Chromium, Streamlit, Spark, the broker and the
    # producer on two cores the whole run takes 90-120 s; the waits above are each bounded too.
    assert time.monotonic() - started < 240


def chart_text(driver) -> str:
    """The text of the first chart (axis titles, legend): what a reader sees of it."""
    return driver.find_element("css selector", '[data-testid="stVegaLiteChart"]').text


def all_chart_text(driver) -> str:
    """The text of every chart on the page (facet headers, axis titles)."""
    return " ".join(el.text for el in driver.find_elements("css selector", '[data-testid="stVegaLiteChart"]'))


def why_lines(driver) -> list[str]:
    return [el.text for el in driver.find_elements("css selector", ".ss-tile .why")]


def pick_sensor(driver, sensor: str) -> None:
    """Choose ``sensor`` in the sidebar's "Sensor" select the way a user does: click, type, Enter."""
    from selenium.webdriver.common.keys import Keys

    box = wait_for(
        "the Sensor select",
        lambda: driver.find_element(
            "xpath",
            '//section[@data-testid="stSidebar"]//div[@data-testid="stSelectbox"]'
            '[.//label[normalize-space()="Sensor"]]//input',
        ),
        10,
    )
    box.click()
    box.send_keys(sensor)
    box.send_keys(Keys.ENTER)
