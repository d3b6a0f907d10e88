"""``ablate winners``: cells, bootstrap intervals, paired tests and the winner tag, on runs logged
to a real SQLite MLflow store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from ablate_sweep_helpers import log_sweep, mlflow_uri

from orchestrator.cli import main
from orchestrator.winners import bootstrap_ci, find_winners, format_table, paired_p_value
from trainables.errors import InputError

CELLS = {
    "good": [0.80, 0.82, 0.81, 0.83],
    "close": [0.805, 0.81, 0.815, 0.82],  # within noise of "good": tied
    "bad": [0.70, 0.71, 0.69, 0.72],  # clearly worse
}


def test_cells_are_ranked_with_intervals_ties_and_failures(tmp_path: Path) -> None:
    uri = mlflow_uri(tmp_path)
    client, _ = log_sweep(uri, "study", CELLS, failed={"oom": "infeasible"})
    table = find_winners(client, "study")
    assert [c.label for c in table.cells] == ["good", "close", "bad", "oom"]
    good, close, bad, oom = table.cells
    assert (good.n, good.status) == (4, "best")
    assert good.mean == pytest.approx(0.815)
    assert good.ci[0] < good.mean < good.ci[1] and good.ci[0] >= 0.80 and good.ci[1] <= 0.83
    assert close.status == "tied" and close.p_value > 0.05
    assert bad.status == "worse" and bad.p_value < 0.05
    assert (oom.n, oom.status, oom.outcomes) == (0, "no runs", {"infeasible": 1})
    assert good.dice["wt"] == pytest.approx(0.865) and good.dice["et"] == pytest.approx(0.765)
    assert good.epoch_s == pytest.approx(11.5) and good.peak_gib == pytest.approx(2.3)
    text = format_table(table)
    assert "good   4  0.8150" in text and "worse (p=" in text and "0 runs" not in text
    assert "no runs; 1 infeasible" in text


def test_the_winner_tag_marks_the_best_run_and_moves(tmp_path: Path) -> None:
    uri = mlflow_uri(tmp_path)
    client, parent = log_sweep(uri, "study", CELLS)
    table = find_winners(client, "study")
    winner = client.get_run(table.winner_run_id)
    assert (
        winner.data.tags["winner"] == "true"
        and winner.data.tags["ablate.trial_key"] == "good/seed3"
    )
    assert client.get_run(parent).data.tags["ablate.winner_cell"] == "good"
    from ablate_sweep_helpers import _child

    experiment = client.get_run(parent).info.experiment_id
    for seed, value in enumerate([0.90, 0.91, 0.92, 0.93]):
        _child(client, experiment, parent, "better", seed, value, "split-1")
    table = find_winners(client, "study")
    assert table.cells[0].label == "better"
    tagged = [r for r in client.search_runs([experiment]) if r.data.tags.get("winner") == "true"]
    assert [r.info.run_id for r in tagged] == [table.winner_run_id]


def test_runs_on_different_splits_are_not_ranked(tmp_path: Path) -> None:
    client, _ = log_sweep(mlflow_uri(tmp_path), "study", CELLS, split={"bad": "split-2"})
    with pytest.raises(
        InputError, match=r"cells were trained on different data splits .* cannot be ranked"
    ):
        find_winners(client, "study")


def test_winners_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = mlflow_uri(tmp_path)
    log_sweep(
        uri,
        "study",
        CELLS,
        paper={"citation": "Doe 2020", "rows": {"good": {"val/dice_mean": 0.9}}},
    )
    assert main(["winners", "study", "--tracking-uri", uri, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["metric"] == "val/dice_mean" and payload["citation"] == "Doe 2020"
    rows = {row["cell"]: row for row in payload["cells"]}
    assert rows["good"]["paper"] == 0.9 and rows["bad"]["paper"] is None
    assert rows["close"]["status"] == "tied" and len(rows["good"]["ci95"]) == 2
    assert main(["winners", "nosuch", "--tracking-uri", uri]) == 2
    assert "no sweep named 'nosuch'" in capsys.readouterr().err


def test_bootstrap_interval_and_paired_tests() -> None:
    values = np.array([0.5, 0.6, 0.7, 0.8])
    low, high = bootstrap_ci(values)
    assert 0.5 <= low < values.mean() < high <= 0.8
    assert all(math.isnan(v) for v in bootstrap_ci(np.array([0.5])))
    a = {("0", "s"): 0.8, ("1", "s"): 0.9, ("2", "s"): 0.85}
    assert paired_p_value(a, a, "ttest") == 1.0  # identical runs
    assert paired_p_value(a, {k: v - 0.1 for k, v in a.items()}, "ttest") == 0.0  # constant gap
    assert paired_p_value(a, {("0", "s"): 0.1}, "ttest") is None  # one pair: no test
    b = {k: v - d for (k, v), d in zip(a.items(), (0.01, 0.03, 0.02), strict=True)}
    assert 0 < paired_p_value(a, b, "ttest") < 0.1
    assert paired_p_value(a, b, "wilcoxon") == pytest.approx(0.25)  # exact test, 3 pairs
