"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``, through Selenium) and a real
``mlflow ui`` on 127.0.0.1, for the screenshot tests; the approach of tests/cluster/cluster_ui.py.

Screenshots go to the test's tmp dir and, when ``ABLATE_SCREENSHOTS=DIR`` is set, are copied
there (the README's pictures come from such a run).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests import browser

PAGE_S = 90.0  # the UI's first load compiles a large bundle: slow on a busy CPU
page_text = browser.page_text


def chromium() -> Iterator[Any]:
    """A headless Chromium under Selenium (skips the test when either is not installed)."""
    yield from browser.chromium(("--window-size=1600,1100", "--hide-scrollbars"))


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = PAGE_S) -> Any:
    """:func:`tests.browser.wait_for` with the MLflow UI's page-load timeout."""
    return browser.wait_for(check, what, timeout_s)


def close_assistant(driver: Any) -> None:
    """Close MLflow's "MLflow Assistant" side panel if it is open (it hides half the table).

    MLflow 3.17 labels the panel's close button "Close" (the only such button on the runs
    view); older layouts are searched for the panel's last header button instead.
    """
    driver.execute_script(
        """const close = document.querySelector('button[aria-label="Close"]');
           if (close) { close.click(); return; }
           for (const el of document.querySelectorAll('*')) {
             if (el.childElementCount === 0 && el.textContent.trim() === 'MLflow Assistant') {
               let box = el; for (let i = 0; i < 6 && box; i++) { box = box.parentElement;
                 const buttons = box ? box.querySelectorAll('button') : [];
                 if (buttons.length >= 2) { buttons[buttons.length - 1].click(); return; } } } }"""
    )


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    """Save a PNG of the window in ``folder`` (and in ``$ABLATE_SCREENSHOTS`` if set)."""
    path = folder / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000, f"{path} looks blank"
    if os.environ.get("ABLATE_SCREENSHOTS"):
        target = Path(os.environ["ABLATE_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def mlflow_ui(uri: str, log: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """``mlflow ui --backend-store-uri uri`` on a free port of 127.0.0.1; yields its URL."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{url}/health", timeout=2), "health", timeout_s)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
