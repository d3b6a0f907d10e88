"""What a person looks at, in a real headless Chromium: the MLflow runs view the sweep links to
(a real ``mlflow ui``) and the self-contained HTML report, with screenshots kept as artifacts.

The sweep is logged through the tracking helpers as the sweep's callbacks log it (child runs
with the swept params, per-epoch metrics, the best-epoch summary), with the experiment set up
by :func:`orchestrator.mlflow_ui.setup_experiment` from a real plan; ``find_winners`` tags the
winner and writes the parent's description, as ``ablate winners`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ablate_sweep_helpers import log_sweep, mlflow_uri, write_space
from headless import chromium, close_assistant, mlflow_ui, page_text, screenshot, wait_for

from orchestrator import tracking
from orchestrator.expand import plan_sweep
from orchestrator.mlflow_ui import LOCAL_UI, runs_url, setup_experiment
from orchestrator.report import write_report
from orchestrator.winners import find_winners

pytestmark = pytest.mark.slow  # an MLflow server and a browser: ~1 min on 2 busy cores

WINNER, OTHER = "attention=true,deep_supervision=1", "attention=false,deep_supervision=0"
SPACE = """name: study
extends: trial.yaml
grid:
  model.attention: [true, false]
  model.deep_supervision: [0, 1]
seeds: 2
metric: val/dice_mean
mode: max
"""


@pytest.fixture(scope="module")
def browser() -> Any:
    yield from chromium()


@pytest.fixture
def study(tmp_path: Path) -> tuple[str, Any, str]:
    """(tracking URI, client, experiment id) of a two-cell sweep whose winner is WINNER."""
    uri = mlflow_uri(tmp_path)
    client, parent = log_sweep(uri, "study", {WINNER: [0.8, 0.82], OTHER: [0.6, 0.61]})
    experiment = client.get_run(parent).info.experiment_id
    setup_experiment(client, experiment, plan_sweep(write_space(tmp_path, SPACE)))
    for run in tracking.child_runs(client, client.get_run(parent)):
        attention, deep = (p.split("=")[1] for p in run.data.tags["ablate.cell"].split(","))
        params = {"model.attention": attention, "model.deep_supervision": deep}
        tracking.log_params(client, run.info.run_id, params)
    find_winners(client, "study")  # tags the winner, writes the parent's description
    return uri, client, experiment


def ordered_rows(driver: Any) -> list[str]:
    """The runs table's rows top to bottom, each row's text over its pinned parts."""
    from selenium.webdriver.common.by import By

    rows: dict[int, str] = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "[role=row][row-index]"):
        index = int(row.get_attribute("row-index"))
        rows[index] = f"{rows.get(index, '')} {row.text}".strip()
    return [rows[i] for i in sorted(rows)]


def test_runs_view_shows_the_winner_first_with_its_metric(
    study: tuple[str, Any, str], browser: Any, tmp_path: Path
) -> None:
    uri, client, experiment = study
    browser.set_window_size(1920, 1000)  # every preset column in view (the grid virtualises)
    with mlflow_ui(uri, tmp_path / "mlflow-ui.log") as server:
        browser.get(runs_url(uri, experiment).replace(LOCAL_UI, server))
        rows = wait_for(lambda: len(ordered_rows(browser)) == 4 and ordered_rows(browser), "runs")
        close_assistant(browser)
        text = page_text(browser)
        screenshot(browser, tmp_path, "mlflow-runs-view.png")
        assert "Traces 0" not in text and "Runs" in text  # the model-training workflow
        for column in ("best/val/dice_mean", "model.attention", "ablate.cell", "winner"):
            assert column in text, f"column {column} missing from the runs view:\n{text}"
        first = rows[0]  # sorted by the metric, best first
        assert f"{WINNER}/seed1" in first and "0.82" in first and "true" in first, rows
        assert all(OTHER in row for row in rows[2:]), rows

        parent = tracking.find_sweep(client, "study").info.run_id
        browser.get(
            f"{server}/#/experiments/{experiment}/runs/{parent}?workflowType=machine_learning"
        )
        page = wait_for(
            lambda: "Ablation table" in page_text(browser) and page_text(browser),
            "the parent run's description",
        )
        screenshot(browser, tmp_path, "mlflow-parent-run.png")
    assert f"Winner: {WINNER} (val/dice_mean 0.8100)" in page
    assert "P(rank 1)" in page and OTHER in page


def test_html_report_is_self_contained_and_shows_the_winner(
    study: tuple[str, Any, str], browser: Any, tmp_path: Path
) -> None:
    _, client, _ = study
    out = tmp_path / "sent" / "report.html"
    write_report(client, find_winners(client, "study"), out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no side folder
    browser.get(out.as_uri())
    text = wait_for(lambda: "Provenance" in page_text(browser) and page_text(browser), "report")
    screenshot(browser, tmp_path, "report.png")
    assert f"Winner: {WINNER}, val/dice_mean 0.8100" in text
    for header in ("cell", "95% CI", "Δ to best", "P(rank 1)", "status"):
        assert header in text
    assert "`" not in text  # no Markdown shown literally
    widths = browser.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
    )
    assert len(widths) >= 3 and all(w > 0 for w in widths), widths
