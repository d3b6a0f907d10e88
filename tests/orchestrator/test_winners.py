"""``ablate winners``: cells, t intervals, comparisons with the best, region columns, per-case
data, costs and the winner tag, on runs logged to a real SQLite MLflow store."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from ablate_sweep_helpers import log_sweep, mlflow_uri

from orchestrator.cli import main
from orchestrator import tracking
from orchestrator.winners import find_winners, format_table
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
    # Student t, 3 d.o.f.: mean ± 3.182 * sd / 2 (sd of 0.80..0.83 is 0.01291)
    assert good.ci == pytest.approx((0.815 - 0.020540, 0.815 + 0.020540), abs=1e-5)
    assert close.status == "tied" and close.p_value > 0.05
    assert bad.status == "worse" and bad.p_value < 0.05
    assert bad.comparison.delta == pytest.approx(0.705 - 0.815)
    assert bad.comparison.ci[0] < bad.comparison.delta < bad.comparison.ci[1] < 0
    assert "paired t over 4 run pairs" in bad.comparison.method
    assert good.p_rank1 > close.p_rank1 > bad.p_rank1 == 0.0
    assert (oom.n, oom.status, oom.outcomes) == (0, "no runs", {"infeasible": 1})
    assert good.dice["wt"] == pytest.approx(0.865) and good.dice["et"] == pytest.approx(0.765)
    assert good.epoch_s == pytest.approx(11.5) and good.peak_gib == pytest.approx(2.3)
    text = format_table(table)
    assert "good   4  0.8150" in text and "  worse  " in text and "0 runs" not in text
    assert "WT      TC      ET" in text and "FG" not in text
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


