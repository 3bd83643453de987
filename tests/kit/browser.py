"""Test helpers for the dashboard in headless Chromium (Selenium): start a browser, wait for the
page, read what a person sees on it (the metrics row, the sensor tiles)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROME_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,2300",
)  # fmt: skip


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip(
            "headless Chromium not found: run `make browser` (apt-get install chromium chromium-driver)"
        )
    return browser, driver


@contextmanager
def chromium(profiles: Path) -> Iterator:
    """A headless Chromium with a fresh profile under ``profiles``; skips the test when none is installed."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(dir=profiles)}")  # a fresh profile
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(what: str, check: Callable[[], object], timeout: float) -> object:
    """``check()``'s first truthy value within ``timeout`` seconds. An AssertionError from ``check``
    (e.g. "the pipeline has exited") ends the wait at once; any other error means "look again"."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except AssertionError:
            raise
        except Exception:  # the page re-renders under us (stale elements): look again
            value = None
        if value:
            print(f"{what}: {time.monotonic() - t0:.1f} s")  # shown with -s or on failure
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def metrics(driver) -> dict[str, str]:
    values = {}
    for el in driver.find_elements("css selector", '[data-testid="stMetric"]'):
        label = el.find_element("css selector", '[data-testid="stMetricLabel"]').text.strip()
        values[label] = el.find_element("css selector", '[data-testid="stMetricValue"]').text.strip()
    return values


def readings(driver) -> int:
    text = metrics(driver).get("Readings", "")
    return int(text.replace(",", "")) if text.replace(",", "").isdigit() else 0


def tiles(driver) -> list[str]:
    return [
        el.find_element("css selector", ".id").text for el in driver.find_elements("css selector", ".ss-tile")
    ]


def tile_values(driver) -> dict[str, str]:
    """Each sensor tile's id and the value it shows (``n/a`` when it has none)."""
    return {
        el.find_element("css selector", ".id").text: el.find_element("css selector", ".v").text
        for el in driver.find_elements("css selector", ".ss-tile")
    }


def chart_text(driver) -> str:
    """The text of the first chart (axis titles, legend): what a reader sees of it."""
    return driver.find_element("css selector", '[data-testid="stVegaLiteChart"]').text


def all_chart_text(driver) -> str:
    """The text of every chart on the page (facet headers, axis titles)."""
    return " ".join(el.text for el in driver.find_elements("css selector", '[data-testid="stVegaLiteChart"]'))


def why_lines(driver) -> list[str]:
    """Each sensor tile's line saying what it is judged on, or why it is red."""
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
