"""Headless Chromium for the UI tests (Debian's ``chromium`` and ``chromium-driver`` packages,
driven by Selenium): the browser, polling for what a page shows, and its visible text. Shared by
the cluster's MLflow-UI test (tests/cluster/cluster_ui.py) and the screenshot tests
(tests/orchestrator/headless.py)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
BASE_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run",
)  # fmt: skip


def chromium(extra_flags: Sequence[str] = ()) -> Iterator[Any]:
    """A headless Chromium under Selenium; skips the test when either is not installed."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("headless browser missing: apt-get install chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*BASE_FLAGS, *extra_flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], Any], what: str, timeout_s: float, required: bool = True) -> Any:
    """Poll ``check()`` (exceptions count as not yet) until it returns something truthy;
    past the timeout, fail the test (or return None when not ``required``)."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception as err:  # elements re-render while the page loads
            last, found = err, None
        if found:
            return found
        time.sleep(0.5)
    if not required:
        return None
    raise AssertionError(f"the page never showed {what} ({last})")


def page_text(driver: Any) -> str:
    """Everything the page shows as text."""
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.TAG_NAME, "body").text)
