"""Helpers for the dashboard's real-browser tests: serve a Dash app on loopback, drive
Debian's headless Chromium through chromedriver (selenium)."""

from __future__ import annotations

import shutil
import tempfile
import threading
from contextlib import contextmanager

from ports import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@contextmanager
def serve_dash(app):
    """Run the app's Flask server on a free 127.0.0.1 port in a thread; yield its URL."""
    from werkzeug.serving import make_server

    port = free_port()
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.shutdown()
        t.join(timeout=10)


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="gridtwin-chromium-")
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--no-first-run", "--disable-quic",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, predicate, timeout_s: float = 30.0, what: str = "condition"):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Dash redraws tables and the page navigates on login/logout: an element that went stale
    # between finding and reading it means "not yet", not a failure
    return WebDriverWait(driver, timeout_s, poll_frequency=0.2,
                         ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)).until(
        lambda d: predicate(d), message=f"timed out after {timeout_s}s waiting for {what}")


def text_when(driver, element_id: str, predicate, timeout_s: float = 30.0, what: str = "text"):
    """The element's text once `predicate(text)` holds: read inside the wait, so a Dash redraw
    between finding the element and reading it (a stale reference) is retried, not a failure."""
    from selenium.webdriver.common.by import By

    def ready(d):
        text = d.find_element(By.ID, element_id).text
        return text if predicate(text) else False

    return wait_for(driver, ready, timeout_s=timeout_s, what=f"{what} in #{element_id}")
