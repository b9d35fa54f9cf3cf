"""The review page in a real browser: Debian's chromium + chromedriver, driven by Selenium,
against a running ``fakescan serve`` over a really scanned bucket. Nothing downloads a browser:
the driver is the system's ``chromedriver`` and Selenium Manager runs offline.

The run writes screenshots of the three pages to ``build/screenshots/`` (ignored by git), or to
``$FAKESCAN_SCREENSHOTS`` when set: ``FAKESCAN_SCREENSHOTS=docs/screenshots`` refreshes the ones
committed for docs/api.md, so an ordinary test run leaves the work tree clean.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from selenium.common.exceptions import TimeoutException

from tests import services
from tests.api_support import scan_bucket

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]
SCREENSHOTS = PROJECT / os.environ.get("FAKESCAN_SCREENSHOTS", "build/screenshots")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def served(s3_service):
    """``fakescan serve`` (no token: loopback only) in a child process over a scanned bucket."""
    home = Path(tempfile.mkdtemp(prefix="fakescan-browser-"))
    settings, fixture = scan_bucket(s3_service.url, f"sqlite:///{home / 'fakescan.db'}", home)
    port = services.free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("FAKESCAN_")}
    env.update(FAKESCAN_HOME=str(home), FAKESCAN_DATABASE_URL=settings.resolved_database_url(),
               FAKESCAN_S3_ENDPOINT_URL=s3_service.url)
    log = home / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "fakescan.cli", "serve", "--port", str(port)],
                                   env=env, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        services.wait_until(lambda: urllib.request.urlopen(f"{base}/readyz").status == 200, "fakescan serve", 60)
        yield base, fixture, log
    finally:
        process.terminate()
        process.wait(timeout=15)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("chromium and chromium-driver are needed (apt packages; docker/install.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--user-data-dir=" + tempfile.mkdtemp(prefix="chromium-")):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def api(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path) as response:
        return json.loads(response.read())


def wait_for(browser, condition, timeout=30):
    """Selenium's explicit wait; TimeoutException when ``condition`` stays false."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def test_the_service_says_it_binds_loopback_only(served):
    _, _, log = served
    assert "binding to 127.0.0.1 only" in log.read_text()


def test_gallery_shows_every_flagged_thumbnail_and_scrolls_for_more(served, browser):
    base, fixture, _ = served
    flagged = [item["object_id"] for item in
               api(base, f"/api/v1/objects?scan={fixture.scan_id}&verdict=fake&limit=200")["items"]]
    assert len(flagged) > 4, "the fixture set flags enough objects to need a second page"
    browser.get(f"{base}/gallery?scan={fixture.scan_id}&verdict=fake&limit=4")

    def cards(driver):
        return driver.find_elements("css selector", ".card")

    wait_for(browser, lambda d: len(cards(d)) >= 4)
    for _ in range(len(flagged)):  # scroll until the cursor runs out
        browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        try:
            wait_for(browser, lambda d: "end of results" in d.find_element("id", "gallery-end").text, timeout=3)
            break
        except TimeoutException:
            pass  # the next page is still loading: scroll again
    shown = [int(card.get_attribute("data-object-id")) for card in cards(browser)]
    assert shown == flagged  # same order as the API, no duplicate, none missing
    wait_for(browser, lambda d: d.execute_script(
        "return Array.from(document.images).filter(i => i.classList.contains('thumb'))"
        ".every(i => i.complete && i.naturalWidth > 0)"))
    assert "C2PA: fakescan test signer, trainedAlgorithmicMedia" in browser.page_source
    browser.execute_script("window.scrollTo(0, 0)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.get(f"{base}/gallery?scan={fixture.scan_id}&verdict=fake")
    wait_for(browser, lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"))
    browser.save_screenshot(str(SCREENSHOTS / "gallery.png"))


def test_a_key_press_records_a_review_that_the_api_returns(served, browser):
    base, fixture, _ = served
    target = api(base, f"/api/v1/objects?scan={fixture.scan_id}&verdict=fake&limit=1")["items"][0]["object_id"]
    browser.get(f"{base}/objects/{target}")
    wait_for(browser, lambda d: d.execute_script("return document.getElementById('full-image').naturalWidth > 0"))
    browser.find_element("tag name", "body").send_keys("f")
    wait_for(browser, lambda d: d.find_element("id", "review-status").get_attribute("data-recorded")
             == "confirmed-fake")
    reviews = api(base, f"/api/v1/reviews?object_id={target}")["items"]
    assert [(r["decision"], r["reviewer"]) for r in reviews] == [("confirmed-fake", "local")]
    assert api(base, f"/api/v1/objects/{target}")["review"] == "confirmed-fake"
    browser.save_screenshot(str(SCREENSHOTS / "object.png"))


def test_scan_page_plots_a_histogram_per_detector(served, browser):
    base, fixture, _ = served
    browser.get(f"{base}/scans/{fixture.scan_id}")
    figures = browser.find_elements("css selector", "figure.histogram")
    assert {figure.get_attribute("data-detector") for figure in figures} == {"bright", "provenance"}
    bright = next(f for f in figures if f.get_attribute("data-detector") == "bright")
    bars = bright.find_elements("css selector", "rect.hist-bar")
    heights = [float(bar.get_attribute("height")) for bar in bars]
    assert len(bars) == 20 and sum(h > 0 for h in heights) >= 10
    assert bright.find_element("css selector", "svg").size["height"] > 100  # drawn, not an empty box
    assert "decompression-bomb" in browser.find_element("id", "error-kinds").text
    browser.save_screenshot(str(SCREENSHOTS / "scan.png"))
