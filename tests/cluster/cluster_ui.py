"""The MLflow UI in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``
packages, driven by Selenium), for test f in test_multinode.py.

The UI is a single-page app over an ag-grid table: the parent run is a row whose expander
reveals one row per trial (``row-id`` = run id); a run's page lists its tags as
``name\\n: value`` lines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from cluster_harness import MlflowServer
from cluster_sweeps import Sweep

from tests import browser

PAGE_S = 60.0  # the UI's first load compiles a large bundle: slow on a busy CPU


def chromium() -> Iterator[Any]:
    """A headless Chromium under Selenium (skips the test when either is not installed)."""
    yield from browser.chromium(("--window-size=1600,1200",))


def wait_for(
    check: Callable[[], Any], what: str, timeout_s: float = PAGE_S, required: bool = True
) -> Any:
    """:func:`tests.browser.wait_for` with the MLflow UI's page-load timeout."""
    return browser.wait_for(check, what, timeout_s, required)


def tag_winner(mlflow: MlflowServer, sweep: Sweep) -> str:
    """``ablate winners`` on the sweep (it tags the best run); the winner's run id."""
    command = [sys.executable, "-m", "orchestrator.cli", "winners", sweep.name]
    command += ["--tracking-uri", mlflow.uri, "--json"]
    out = subprocess.run(command, env=sweep.cluster.env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    winner = json.loads(out.stdout)["winner_run_id"]
    assert winner, out.stdout
    return str(winner)


def visible_rows(driver: Any) -> dict[str, str]:
    """``{run id: row text}`` of the runs table's rows (a row is split over pinned columns)."""
    from selenium.webdriver.common.by import By

    rows: dict[str, str] = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "[role=row][row-id]"):
        run_id = row.get_attribute("row-id")
        rows[run_id] = f"{rows.get(run_id, '')} {row.text}".strip()
    return rows


def rows_with(driver: Any, run_ids: set[str]) -> dict[str, str] | None:
    """The visible rows once every run in ``run_ids`` is among them, else None."""
    rows = visible_rows(driver)
    return rows if run_ids <= set(rows) else None


def expand_parent(driver: Any, parent_id: str, child_ids: set[str]) -> dict[str, str]:
    """The rows once the parent run's children ``child_ids`` show, clicking the expander in
    the parent's name cell unless the UI already shows them (it remembers expanded rows)."""
    from selenium.webdriver.common.by import By

    shown = wait_for(lambda: rows_with(driver, child_ids), "child runs", 3.0, required=False)
    if shown:
        return shown
    row = f'[role=row][row-id="{parent_id}"]'
    button = driver.find_element(By.CSS_SELECTOR, f'{row} [col-id="attributes.`Run Name`"] button')
    button.click()
    return wait_for(lambda: rows_with(driver, child_ids), f"child runs {sorted(child_ids)}")


page_text = browser.page_text
