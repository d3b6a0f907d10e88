"""The winners table's test side: the test column, comparisons on test cases, the caption, on
runs logged to a real SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ablate_sweep_helpers import mlflow_uri

from orchestrator import provenance, tracking
from orchestrator.cli import main
from orchestrator.winners import find_winners, format_table


def _sweep(uri: str) -> tuple[object, str, str]:
    client = tracking.connect(uri)
    experiment = tracking.ensure_experiment(client, "study")
    tags = provenance.parent_tags({"ablate.metric": "val/dice_mean", "ablate.mode": "max"})
    return client, experiment, tracking.open_parent_run(client, experiment, "study", "/r", tags)


def _csv(split: str, values: np.ndarray) -> bytes:
    rows = "".join(f"case{i},{v}\n" for i, v in enumerate(values))
    return f"case,{split}/dice_mean\n{rows}".encode()


def _run(client, experiment, parent, cell, seed, val, test=None, test_cases=None) -> str:
    """A finished run: per-case validation values ``val``, test values ``test`` (logged as
    test/dice_mean at step 0 and per_case/test.csv), or a tag saying how many test cases."""
    tags = {"ablate.cell": cell, "ablate.seed": str(seed), "ablate.split_hash": "s1"}
    run_id, _ = tracking.open_child_run(client, experiment, parent, f"{cell}/{seed}", tags)
    tracking.log_metrics(client, run_id, {"best/val/dice_mean": float(np.mean(val))}, 0)
    tracking.log_bytes(client, run_id, _csv("val", val), "val.csv", "per_case")
    if test is not None:
        tracking.log_metrics(client, run_id, {"test/dice_mean": float(np.mean(test))}, 0)
        tracking.log_bytes(client, run_id, _csv("test", test), "test.csv", "per_case")
    if test_cases is not None:
        tracking.set_tags(client, run_id, {"ablate.test_cases": str(test_cases)})
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def test_comparisons_use_the_test_cases_when_every_run_has_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = mlflow_uri(tmp_path)
    client, experiment, parent = _sweep(uri)
    rng = np.random.default_rng(0)
    hard_val, hard_test = rng.normal(0, 0.1, 10), rng.normal(0, 0.1, 12)
    # validation: "b" is close to "a"; test: "b" is clearly below "a"
    for cell, val_level, test_level in (("a", 0.8, 0.8), ("b", 0.79, 0.6)):
        for seed in range(3):
            val = val_level + hard_val + rng.normal(0, 0.02, 10)
            test = test_level + hard_test + rng.normal(0, 0.02, 12)
            _run(client, experiment, parent, cell, seed, val, test)
    table = find_winners(client, "study", tag=False)
    rows = {c.label: c for c in table.cells}
    assert [c.label for c in table.cells] == ["a", "b"] and rows["b"].status == "worse"
    assert table.case_split == "test" and table.test_metric == "test/dice_mean"
    method = rows["b"].comparison.method
    assert method.startswith("case-paired: 3 run pairs x 12 cases") and method.endswith(
        "on test cases"
    )
    assert rows["b"].comparison.delta == pytest.approx(rows["b"].test_mean - rows["a"].test_mean)
    assert rows["b"].test_mean < 0.65 < rows["a"].test_mean
    assert rows["a"].mean == pytest.approx(rows["a"].test_mean)  # ranked on what is compared
    assert rows["b"].val_mean == pytest.approx(np.mean(list(rows["b"].runs.values())))
    text = format_table(table)
    assert text.splitlines()[0].startswith(
        f"sweep study (parent run {parent}): ranked on test/dice_mean and compared on its test "
        "cases (each run's checkpoint selected by val/dice_mean (max) on validation cases, then "
        "evaluated once on the split's test cases); val = mean over runs of val/dice_mean at the "
        "selected epochs; "
    )
    header = text.splitlines()[1].split()
    assert header[:6] == ["cell", "n", "mean", "95%", "CI", "val"]
    assert main(["winners", "study", "--tracking-uri", uri, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["compared_on"] == "test" and payload["test_note"] is None
    assert payload["ranked_metric"] == "test/dice_mean"
    assert {r["cell"]: round(r["test_mean"], 6) for r in payload["cells"]} == {
        label: round(c.test_mean, 6) for label, c in rows.items()
    }


def test_region_columns_are_on_the_cases_the_mean_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Beside a test mean the WT column showed the selected epochs' validation Dice, unlabelled
    (found by two audits: the README's own table averaged to its val column)."""
    uri = mlflow_uri(tmp_path)
    client, experiment, parent = _sweep(uri)
    run_ids = [
        _run(client, experiment, parent, "a", seed, np.full(4, 0.8), np.full(5, 0.6))
        for seed in range(2)
    ]
    for run_id, (val, test) in zip(run_ids, [(0.9, 0.5), (0.8, 0.7)], strict=True):
        tracking.log_metrics(client, run_id, {"best/val/dice_wt": val, "test/dice_wt": test}, 0)
    table = find_winners(client, "study", tag=False)
    assert table.case_split == "test" and table.cells[0].dice == {"wt": pytest.approx(0.6)}
    header, row = format_table(table).splitlines()[1:3]
    assert row[header.index("test WT") :].startswith("0.6000")
    assert main(["winners", "study", "--tracking-uri", uri, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["regions_on"] == "test" and payload["cells"][0]["dice"]["wt"] == 0.6


def test_the_paper_column_says_which_split_its_numbers_are(tmp_path: Path) -> None:
    """A paper's val/dice_mean sat unlabelled beside a test mean, and a test/dice_mean it
    reported was accepted but shown nowhere (audit)."""
    client, experiment, parent = _sweep(mlflow_uri(tmp_path))
    for seed in range(2):
        _run(client, experiment, parent, "a", seed, np.full(4, 0.8), np.full(5, 0.6))
    rows = {"a": {"val/dice_mean": 0.85}}
    tracking.log_json(client, parent, {"citation": "P", "rows": rows}, "paper.json")
    table = find_winners(client, "study", tag=False)
    assert (table.paper_metric, table.cells[0].paper) == ("val/dice_mean", 0.85)
    assert "paper (val)" in format_table(table).splitlines()[1]
    rows["a"]["test/dice_mean"] = 0.7  # the number for what the table ranks on wins
    rows["a"]["test/dice_wt"] = 0.925  # FM-Net reports region Dice: listed beside ours
    tracking.log_json(client, parent, {"citation": "P", "rows": rows}, "paper.json")
    table = find_winners(client, "study", tag=False)
    assert (table.paper_metric, table.cells[0].paper) == ("test/dice_mean", 0.7)
    text = format_table(table)
    assert "paper (test)" in text.splitlines()[1]
    # beside ours where the table shows it: the val column; no test WT column here
    assert "paper, a: val/dice_mean 0.8500 (ours 0.8000), test/dice_wt 0.9250\n" in text


def test_one_run_without_test_cases_keeps_the_comparison_on_validation(tmp_path: Path) -> None:
    client, experiment, parent = _sweep(mlflow_uri(tmp_path))
    for cell in ("a", "b"):
        for seed in range(2):
            val = np.full(4, 0.8 if cell == "a" else 0.7) + seed / 100
            test = None if (cell, seed) == ("b", 1) else val - 0.1
            _run(client, experiment, parent, cell, seed, val, test)
    table = find_winners(client, "study", tag=False)
    assert table.case_split == "val"
    assert "on test cases" not in table.cells[1].comparison.method
    caption = format_table(table).splitlines()[0]
    assert "test = mean over runs of test/dice_mean" in caption and "compared on" not in caption
    assert "ranked on val/dice_mean (max) at each run's selected epoch" in caption
    assert table.cells[0].mean == pytest.approx(np.mean(list(table.cells[0].runs.values())))


def test_the_best_on_test_is_ranked_first_and_never_called_worse(tmp_path: Path) -> None:
    """Validation picks "valbest" (0.85 vs 0.84), the test cases say "testbest" (0.80 vs 0.70):
    ranked on validation and compared on test, "testbest" was shown 0.10 *above* the best and
    labelled "worse" with P(rank 1) 1.00 (an acceptance audit's finding)."""
    client, experiment, parent = _sweep(mlflow_uri(tmp_path))
    rng = np.random.default_rng(1)
    for cell, val_level, test_level in (("valbest", 0.85, 0.70), ("testbest", 0.84, 0.80)):
        for seed in range(3):
            val = val_level + rng.normal(0, 0.01, 10)
            _run(client, experiment, parent, cell, seed, val, test_level + rng.normal(0, 0.01, 12))
    table = find_winners(client, "study", tag=False)
    best, other = table.cells
    assert (best.label, best.status) == ("testbest", "best") and best.p_rank1 > 0.95
    assert other.label == "valbest" and other.status == "worse"
    assert other.comparison.delta == pytest.approx(other.mean - best.mean)
    assert other.comparison.delta < 0


def test_a_run_stopped_early_does_not_move_the_comparison_off_the_test_cases(
    tmp_path: Path,
) -> None:
    """ASHA-stopped runs are FINISHED in MLflow but never tested (nor ranked): they must not
    stand for "a run without test cases"."""
    client, experiment, parent = _sweep(mlflow_uri(tmp_path))
    for cell in ("a", "b"):
        for seed in range(2):
            val = np.full(4, 0.8 if cell == "a" else 0.7) + seed / 100
            _run(client, experiment, parent, cell, seed, val, val - 0.1)
    tags = {"ablate.cell": "b", "ablate.seed": "2", "ablate.outcome": "stopped"}
    stopped, _ = tracking.open_child_run(client, experiment, parent, "b/2", tags)
    client.set_terminated(stopped, status="FINISHED")
    table = find_winners(client, "study", tag=False)
    assert table.case_split == "test" and table.cells[1].missing == 1


def test_a_split_without_test_cases_says_so_in_the_caption(tmp_path: Path) -> None:
    client, experiment, parent = _sweep(mlflow_uri(tmp_path))
    for cell in ("a", "b"):
        _run(client, experiment, parent, cell, 0, np.full(3, 0.5), test_cases=0)
    table = find_winners(client, "study", tag=False)
    assert table.test_note == "no test cases in this split"
    assert "; test: no test cases in this split" in format_table(table).splitlines()[0]
