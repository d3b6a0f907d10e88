"""Re-take the README's quickstart table and its two pictures from one real smoke sweep.

Runs, in a fresh temporary directory (its own MLflow store and cache), exactly the README's
command (``ablate sweep search_spaces/smoke.yaml`` then ``ablate winners smoke``), writes the
HTML report, opens the MLflow runs view the sweep links to (a real ``mlflow ui`` on 127.0.0.1)
and the report in a headless Chromium, and saves ``docs/img/mlflow-runs-view.png`` and
``docs/img/report.png``. The winners table is printed for the README. Needs ``chromium``,
``chromium-driver`` and ``selenium`` (the screenshot tests' packages); about 2 minutes on 2 cores::

    python docs/img/take_readme_pictures.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "orchestrator")]

from headless import chromium, close_assistant, mlflow_ui, page_text, wait_for  # noqa: E402

from orchestrator import tracking  # noqa: E402
from orchestrator.mlflow_ui import LOCAL_UI, runs_url  # noqa: E402

IMG = REPO / "docs" / "img"
ROWS = "[role=row][row-index]"  # the runs table's rows (see test_ui_screenshots.py)


def ablate(*args: str, cwd: Path) -> str:
    """Run an ``ablate`` command as a user would; its stdout (stderr passes through)."""
    command = [sys.executable, "-m", "orchestrator.cli", *args]
    env = {**os.environ, "ABLATE_CACHE": str(cwd / "cache"), "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ablate {' '.join(args)} exited {done.returncode}")
    return done.stdout


def take(work: Path) -> None:
    """The sweep, the table, the report, then both screenshots of that one sweep."""
    ablate("sweep", str(REPO / "search_spaces" / "smoke.yaml"), cwd=work)
    print(ablate("winners", "smoke", cwd=work))
    report = work / "smoke.html"
    ablate("report", "smoke", "--out", str(report), cwd=work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    experiment = tracking.find_sweep(tracking.connect(uri), "smoke").info.experiment_id
    session = chromium()  # a generator: kept, or its cleanup quits the browser at once
    driver = next(session)
    try:
        driver.set_window_size(1920, 1000)  # every preset column in view
        with mlflow_ui(uri, work / "mlflow-ui.log") as server:
            driver.get(runs_url(uri, experiment).replace(LOCAL_UI, server))
            wait_for(lambda: len(driver.find_elements("css selector", ROWS)) >= 8, "8 runs")
            close_assistant(driver)
            driver.save_screenshot(str(IMG / "mlflow-runs-view.png"))
        driver.set_window_size(1600, 1100)
        driver.get(report.as_uri())
        wait_for(lambda: "Provenance" in page_text(driver), "the report")
        driver.save_screenshot(str(IMG / "report.png"))
    finally:
        session.close()  # quits the browser
    print(f"wrote {IMG / 'mlflow-runs-view.png'} and {IMG / 'report.png'}")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="ablate-readme-") as tmp:
        take(Path(tmp))
