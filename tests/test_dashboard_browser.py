"""The dashboard in a real headless Chromium, served by ``streamlit run``.

The page is started with :func:`modelog.dashboard.launch.dashboard_command`
against a filled DuckDB file (no projector runs, so it reads the file
read-only); the test waits for the drift alert, writes a new alert into the
file and checks the page shows it by itself -- without a reload.

Needs ``chromium`` and ``chromedriver`` (Debian packages); skipped when they
are absent unless ``MODELOG_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from modelog.config import Settings, env_for
from modelog.dashboard.launch import dashboard_command
from modelog.streams.broker import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NEW_MESSAGE = "fresh drift on churn seen by ddm"


def _scenario_module() -> ModuleType:
    """``test_dashboard.py`` (its scenario builder), loaded by path."""
    path = Path(__file__).with_name("test_dashboard.py")
    spec = importlib.util.spec_from_file_location("_dashboard_scenario", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scenario = _scenario_module()


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    reason = (f"{' and '.join(missing)} not found; install Debian's chromium and "
              "chromium-driver packages to run the browser tests")
    if os.environ.get("MODELOG_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (MODELOG_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
        with (contextlib.suppress(OSError),
              urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp):
            if resp.status == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"streamlit did not answer at {url} within {timeout:g} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """The dashboard served on a free port over a filled DuckDB file."""
    _require_browser()
    root = tmp_path_factory.mktemp("dash-browser")
    settings = Settings(data_dir=root / "data")
    scenario.fill_scenario(settings.duckdb_path)
    port = free_port()
    log = root / "streamlit.log"
    env = {**os.environ, **env_for(settings)}
    env.pop("MODELOG_QUERY_URL", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(dashboard_command(settings, port=port), env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, timeout=60)
        yield url, settings
    finally:  # stop the whole process group: politely, then for sure
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
                break


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium driven by Selenium."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1500,1400",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _page_text(driver: Any) -> str:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:  # the DOM was being replaced
        return ""


def _wait_for_text(driver: Any, text: str, timeout: float) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.25).until(
            lambda d: text in _page_text(d))
    except Exception:
        pytest.fail(f"{text!r} did not appear within {timeout:g} s; the page shows:\n"
                    f"{_page_text(driver)[:3000]}")


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_alerts_appear_live_without_reload(served: tuple[str, Settings], browser: Any,
                                           tmp_path: Path) -> None:
    url, settings = served
    browser.get(url)
    _wait_for_text(browser, scenario.DRIFT_MESSAGE, timeout=60)
    body = _page_text(browser)
    assert "Live monitoring" in body and "Dead-lettered" in body
    assert NEW_MESSAGE not in body
    # a marker that a reload would wipe out
    browser.execute_script("window.__modelogMarker = 'still here';")

    scenario.add_alert(settings.duckdb_path, "a-new-drift", NEW_MESSAGE)
    _wait_for_text(browser, NEW_MESSAGE, timeout=30)
    assert browser.execute_script("return window.__modelogMarker;") == "still here"
    assert "Traceback" not in _page_text(browser)
    # the per-feature drift charts (one Vega canvas or svg per chart) and the learning curve
    _wait_for_text(browser, "Online learning curve", timeout=30)
    body = _page_text(browser)
    assert "Feature drift" in body and "Prediction distribution" in body
    assert "drifting now" in body and "tenure" in body
    charts = browser.execute_script(
        "return document.querySelectorAll('.vega-embed canvas, .vega-embed svg').length;")
    assert charts >= 5  # error rate, anomaly, feature drift, distribution, learning curve

    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    width, height = _png_size(shot)
    assert width >= 800 and height >= 600
    assert shot.stat().st_size > 20_000  # a real rendered page, not a blank image
