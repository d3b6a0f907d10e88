"""``ablate winners``: cells, t intervals, comparisons with the best, region columns, per-case
data, costs and the winner tag, on runs logged to a real SQLite MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ablate_sweep_helpers import log_sweep, mlflow_uri

from orchestrator import provenance, tracking
from orchestrator.cli import main
from orchestrator.report_markdown import winner_line
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
    assert "val WT  val TC  val ET" in text and "FG" not in text  # the ranked split's Dice
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


def _sweep(uri: str, name: str) -> tuple[object, str, str]:
    """An empty sweep: (client, experiment id, parent run id)."""
    client = tracking.connect(uri)
    experiment = tracking.ensure_experiment(client, name)
    tags = provenance.parent_tags({"ablate.metric": "val/dice_mean", "ablate.mode": "max"})
    return client, experiment, tracking.open_parent_run(client, experiment, name, "/r", tags)


def _run(
    client, experiment, parent, cell, seed, best, cases=None, epoch_s=10.0, finish=True, key=""
):
    """A child run whose ``best/*`` metrics are ``best``; ``cases`` -> per_case/val.csv rows.
    ``key`` tells apart two trials of one cell and seed (an Optuna suggestion repeated)."""
    tags = {"ablate.cell": cell, "ablate.seed": str(seed), "ablate.split_hash": "s1"}
    run_id, _ = tracking.open_child_run(client, experiment, parent, f"{cell}/{seed}{key}", tags)
    for epoch in (1, 2, 3, 4):
        tracking.log_metrics(client, run_id, {"perf/epoch_s": epoch_s}, epoch)
    tracking.log_metrics(client, run_id, {f"best/{k}": v for k, v in best.items()}, 0)
    tracking.log_metrics(client, run_id, {"summary/epoch_s": epoch_s}, 0)
    if cases is not None:
        text = "case,val/dice_mean,val/loss\n" + "".join(
            f"case{i},{'' if v is None else v},0.5\n" for i, v in enumerate(cases)
        )
        tracking.log_bytes(client, run_id, text.encode(), "val.csv", "per_case")
    if finish:
        tracking.set_tags(client, run_id, {"ablate.outcome": "finished"})
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def test_a_running_a_stopped_and_an_empty_sweep_say_so(tmp_path: Path) -> None:
    """A table read mid-sweep or after Ctrl-C ranks only what finished: it says so; a sweep
    where nothing finished has no winner and says that too."""
    client, experiment, parent = _sweep(mlflow_uri(tmp_path), "state")
    _run(client, experiment, parent, "a", 0, {"val/dice_mean": 0.5})
    _run(client, experiment, parent, "b", 0, {"val/dice_mean": 0.4}, finish=False)
    table = find_winners(client, "state")  # the parent run is RUNNING
    assert "Note: the sweep is still running: this ranks the runs finished so far" in (
        winner_line(table)  # the report's winner line says it too
    )
    text = format_table(table)
    assert text.endswith(
        "note: the sweep is still running: this ranks the runs finished so far, and the winner "
        "may change; run winners again when it ends"
    )
    client.set_terminated(parent, status="KILLED")
    table = find_winners(client, "state")
    assert table.to_json()["sweep_status"] == "KILLED"
    assert "note: the sweep stopped before its end (parent run KILLED): trials it never ran " in (
        format_table(table)
    )
    (tmp_path / "2").mkdir()
    client, experiment, parent = _sweep(mlflow_uri(tmp_path / "2"), "none")
    _run(client, experiment, parent, "a", 0, {}, finish=False)
    client.set_terminated(parent, status="FINISHED")
    text = format_table(find_winners(client, "none"))
    assert text.splitlines()[-1] == "no winner: no run finished with val/dice_mean"


def test_a_ct_sweep_shows_the_fg_dice_column(tmp_path: Path) -> None:
    client, experiment, parent = _sweep(mlflow_uri(tmp_path), "ct")
    for cell, base in (("a", 0.70), ("b", 0.60)):
        for seed in range(3):
            value = base + seed / 100
            _run(
                client,
                experiment,
                parent,
                cell,
                seed,
                {"val/dice_mean": value, "val/dice_fg": value},
            )
    table = find_winners(client, "ct", tag=False)
    assert table.regions == ("fg",) and table.cells[0].dice == {"fg": pytest.approx(0.71)}
    lines = format_table(table).splitlines()
    assert "FG" in lines[1].split() and "WT" not in lines[1].split()
    column = lines[1].index("val FG")  # the columns are aligned: read the FG column of row "a"
    assert lines[2].startswith("a ") and lines[2][column : column + 6] == "0.7100"


def test_per_case_comparisons_single_runs_running_runs_and_the_cheapest_tie(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = mlflow_uri(tmp_path)
    client, experiment, parent = _sweep(uri, "cases")
    rng = np.random.default_rng(0)
    hardness = rng.normal(0, 0.1, 20)  # case effects shared by every cell
    cells = {"best": (0.80, 20.0), "same": (0.80, 5.0), "worse": (0.70, 5.0)}
    for cell, (level, epoch_s) in cells.items():
        for seed in range(3):
            cases = level + hardness + rng.normal(0, 0.02, 20)
            listed = [float(v) for v in cases]
            listed[3] = None if cell == "same" else listed[3]  # a missing value reads as NaN
            value = float(np.nanmean(np.array(listed, dtype=float)))
            _run(client, experiment, parent, cell, seed, {"val/dice_mean": value}, listed, epoch_s)
    _run(client, experiment, parent, "single", 0, {"val/dice_mean": 0.5})
    _run(client, experiment, parent, "worse", 3, {"val/dice_mean": 0.1}, finish=False)
    # stopped by a scheduler after 1 of 4 epochs: FINISHED in MLflow, but not a complete run
    stopped = _run(client, experiment, parent, "same", 4, {"val/dice_mean": 0.2}, epoch_s=0.1)
    tracking.set_tags(client, stopped, {"ablate.outcome": "stopped_early"})
    table = find_winners(client, "cases")
    rows = {c.label: c for c in table.cells}
    assert [c.label for c in table.cells][-1] == "single"
    assert rows["worse"].status == "worse" and rows["worse"].missing == 1 and table.missing == 2
    assert rows["worse"].comparison.method.startswith("case-paired: 3 run pairs x 20 cases (t, ")
    assert rows["same"].comparison.method.startswith("case-paired: 3 run pairs x 19 cases")
    assert {rows["best"].status, rows["same"].status} == {"best", "tied"}
    cheap = [c.label for c in table.cells if c.cheapest]
    assert cheap == ["same"] and rows["same"].cost_hours == pytest.approx(5.0 * 4 / 3600)
    assert rows["single"].ci is None and rows["single"].status == "untested"
    text = format_table(table)
    assert "n=1: no interval" in text and "cheapest tie" in text and "nan" not in text.lower()
    assert rows["same"].outcomes == {"finished": 3, "stopped_early": 1}
    assert len(rows["same"].runs) == 3
    assert "2 runs not ranked (not finished, stopped early or without val/dice_mean" in text
    tags = client.get_run(next(iter(rows["worse"].runs))).data.tags
    assert tags["ablate.table.status"] == '"worse"' and tags["ablate.table.p_adjusted"] != "null"
    assert main(["winners", "cases", "--tracking-uri", uri, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    single = next(r for r in payload["cells"] if r["cell"] == "single")
    assert single["ci95"] is None and single["delta_ci95"] is None and single["p_adjusted"] is None
    assert payload["missing_runs"] == 2 and payload["regions"] == []


def test_a_cell_that_lost_a_seed_is_ranked_on_its_marginal_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 2 is easy for every cell (+0.1) and ``b`` lost it: its plain mean (0.76) would
    trail ``a`` (0.7867), though ``b`` is 0.02 ahead on each seed both have."""
    uri = mlflow_uri(tmp_path)
    client, experiment, parent = _sweep(uri, "lost")
    for cell, level, seeds in (("a", 0.74, (0, 1, 2)), ("b", 0.76, (0, 1))):
        for seed in seeds:
            value = level + (0.1 if seed == 2 else 0.0)
            _run(client, experiment, parent, cell, seed, {"val/dice_mean": value})
    table = find_winners(client, "lost", tag=False)
    b, a = table.cells
    assert (b.label, b.status, a.status) == ("b", "best", "worse")
    assert b.mean == pytest.approx((0.76 + 0.76 + 0.86) / 3)
    assert b.adjustment == pytest.approx(0.1 / 3) and a.adjustment == 0.0
    text = format_table(table)
    assert "ranked on its estimated marginal mean" in text
    assert "best; mean +0.0333 for lost runs" in text
    assert main(["winners", "lost", "--tracking-uri", uri, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["cells"]
    assert rows[0]["mean_adjustment"] == pytest.approx(0.1 / 3)


@pytest.mark.parametrize(
    ("resources", "column", "per_trial"),
    [
        ({"resources.cpu": "2", "resources.gpu": "0"}, "CPU h", 2.0),  # a CPU-only sweep
        ({"resources.cpu": "4", "resources.gpu": "0.5"}, "GPU h", 0.5),  # two trials per GPU
        ({}, "GPU h", 1.0),  # a sweep logged before resources were: one GPU per trial
    ],
)
def test_the_cost_column_counts_the_devices_a_trial_held(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    resources: dict[str, str],
    column: str,
    per_trial: float,
) -> None:
    uri = mlflow_uri(tmp_path)
    client, experiment, parent = _sweep(uri, "cost")
    tracking.log_params(client, parent, resources)
    for cell, level in (("a", 0.8), ("b", 0.6)):
        for seed in range(3):
            _run(client, experiment, parent, cell, seed, {"val/dice_mean": level + seed / 100})
    table = find_winners(client, "cost", tag=False)
    hours = 10.0 * 4 * per_trial / 3600  # epoch_s x 4 epochs x devices per trial
    assert table.cost_device == column.split()[0]
    assert table.cells[0].cost_hours == pytest.approx(hours)
    header = format_table(table).splitlines()[1]
    assert f"  {column}  " in header
    other = "GPU h" if column == "CPU h" else "CPU h"
    assert other not in header
    assert main(["winners", "cost", "--tracking-uri", uri, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["cost_unit"] == f"{column.split()[0]}-hours"
    assert payload["cells"][0]["cost_hours"] == pytest.approx(hours)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--correction", "bonferroni"],
            "--correction must be one of holm, none, got 'bonferroni'",
        ),
        (["--alpha", "1.5"], "--alpha must be between 0 and 1 (exclusive), got 1.5"),
    ],
)
def test_winners_cli_rejects_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    uri = mlflow_uri(tmp_path)
    log_sweep(uri, "study", {"a": [0.8, 0.81]})
    assert main(["winners", "study", "--tracking-uri", uri, *args]) == 2
    assert message in capsys.readouterr().err


def _tagged_sweep(uri: str, name: str, tags: dict[str, str]) -> tuple[object, str, str]:
    """An empty sweep whose parent carries exactly ``tags`` (and the provenance tags)."""
    client = tracking.connect(uri)
    experiment = tracking.ensure_experiment(client, name)
    return (
        client,
        experiment,
        tracking.open_parent_run(client, experiment, name, "/r", provenance.parent_tags(tags)),
    )


def test_the_direction_is_the_mode_tag_or_the_metrics_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the tag the table was ranked "max": an HD95 sweep crowned its blurriest cell.
    A tag other than max or min (``maximize``) was read as min."""
    uri = mlflow_uri(tmp_path)
    client, experiment, parent = _tagged_sweep(uri, "hd", {"ablate.metric": "val/hd95_wt"})
    for cell, level in (("sharp", 7.0), ("blurry", 16.0)):
        for seed in range(3):
            _run(client, experiment, parent, cell, seed, {"val/hd95_wt": level + seed / 10})
    table = find_winners(client, "hd", tag=False)
    assert (table.mode, [c.label for c in table.cells]) == ("min", ["sharp", "blurry"])
    assert table.cells[1].status == "worse" and "worse = above the best" in format_table(table)
    client.set_tag(parent, "ablate.mode", "maximize")
    assert main(["winners", "hd", "--tracking-uri", uri]) == 2
    assert (
        f"parent run {parent}: tag ablate.mode is 'maximize'; expected max or min"
        in capsys.readouterr().err
    )


def test_runs_without_the_metric_are_counted_on_their_row(tmp_path: Path) -> None:
    """A finished run with a NaN best value, or none, was left out with nothing on its row:
    the cell read as if it had run fewer seeds."""
    client, experiment, parent = _sweep(mlflow_uri(tmp_path), "nan")
    for seed in range(3):
        _run(client, experiment, parent, "a", seed, {"val/dice_mean": 0.80 + seed / 100})
        _run(client, experiment, parent, "b", seed, {"val/dice_mean": 0.70 + seed / 100})
    _run(client, experiment, parent, "b", 3, {"val/dice_mean": float("nan")})
    _run(client, experiment, parent, "b", 4, {})
    table = find_winners(client, "nan", tag=False)
    b = table.cells[1]
    assert (b.label, b.n, b.outcomes) == ("b", 3, {"finished": 3, "without val/dice_mean": 2})
    text = format_table(table)
    assert "worse; 2 without val/dice_mean" in text
    assert "2 runs not ranked" in text and "Holm-adjusted over 1 pair of cells compared" in text


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("case0,0.8,0.5\ncase0,0.7,0.5\n", "line 3: case 'case0' is listed twice"),
        ("case0,0.8,0.5,9\n", "line 2: the row's fields do not match the header"),
        ("case0,0.8\n", "line 2: the row's fields do not match the header"),
        ("case0,0.8o,0.5\n", "line 2: val/dice_mean is '0.8o', not a number"),
    ],
)
def test_a_damaged_per_case_file_names_the_run_and_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: str, problem: str
) -> None:
    """Read leniently, a duplicate case or a shifted row moved Δ and p with nothing said."""
    uri = mlflow_uri(tmp_path)
    client, experiment, parent = _sweep(uri, "csv")
    for seed in range(2):
        _run(client, experiment, parent, "a", seed, {"val/dice_mean": 0.8}, [0.8, 0.7])
    damaged = _run(client, experiment, parent, "b", 0, {"val/dice_mean": 0.8})
    text = "case,val/dice_mean,val/loss\n" + rows
    tracking.log_bytes(client, damaged, text.encode(), "val.csv", "per_case")
    assert main(["winners", "csv", "--tracking-uri", uri]) == 2
    assert f"run {damaged}: per_case/val.csv {problem}" in capsys.readouterr().err


def test_one_run_per_cell_says_no_pair_could_be_tested(tmp_path: Path) -> None:
    """A --smoke sweep (one seed): the caption read "Holm-adjusted over 0 pairs"."""
    client, experiment, parent = _sweep(mlflow_uri(tmp_path), "smoke")
    for cell, value in (("a", 0.36), ("b", 0.15)):
        _run(client, experiment, parent, cell, 0, {"val/dice_mean": value})
    text = format_table(find_winners(client, "smoke", tag=False))
    assert "p two-sided, but no pair of cells could be tested (a test needs two runs of each)" in (
        text
    )
    assert "SMOKE" not in text
    # --smoke shrinks the swept sizes too: audits saw patch-size cells ranked that trained alike
    tracking.set_tags(client, parent, {"ablate.smoke": "true"})
    assert format_table(find_winners(client, "smoke", tag=False)).startswith(
        "SMOKE SWEEP (--smoke): every trial shrunk to seconds (patch size, epochs, cases, one "
        "seed), a check that the study runs; its numbers rank nothing. sweep smoke (parent run "
    )


def test_a_cell_ahead_of_the_winner_is_said_under_the_table(tmp_path: Path) -> None:
    """``skips`` leaves its hardest case undefined and ranks first on its own mean; ``full``
    is ahead on every case both have. The winner line said nothing of it."""
    client, experiment, parent = _sweep(mlflow_uri(tmp_path), "ahead")
    rng = np.random.default_rng(5)
    hardness = np.r_[-0.75, rng.normal(0, 0.1, 19)]
    for seed in range(3):
        values = 0.75 + hardness + rng.normal(0, 0.01) + rng.normal(0, 0.01, 20)
        for cell, shift, skip in (("skips", 0.0, True), ("full", 0.02, False)):
            cases = [float(v) + shift for v in values]
            cases[0] = None if skip else cases[0]
            mean = float(np.nanmean(np.array(cases, dtype=float)))
            _run(client, experiment, parent, cell, seed, {"val/dice_mean": mean}, cases)
    client.set_terminated(parent, status="FINISHED")
    table = find_winners(client, "ahead", tag=False)
    assert [(c.label, c.status) for c in table.cells] == [("skips", "best"), ("full", "ahead")]
    text = format_table(table)
    assert text.splitlines()[-1] == (
        "note: full is ahead of the winner skips on the runs and cases both have: the winner's "
        "lead rests on runs or cases it lacks; check those runs before relying on it"
    )
    assert "ahead = separated from the best in the cell's favour" in text
    assert "Note: full is ahead of the winner skips" in winner_line(table)


def test_a_repeated_seed_counts_once_for_the_interval(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs of seed 0 are one sample once averaged: the cell has no interval, is listed
    after the cells that have one, and says so (it showed "-" and no caption before)."""
    uri = mlflow_uri(tmp_path)
    client, experiment, parent = _sweep(uri, "repeat")
    for key, (cell, seed, value) in enumerate(
        (("x", 0, 0.90), ("x", 0, 0.88), ("y", 0, 0.60), ("y", 1, 0.62))
    ):
        _run(client, experiment, parent, cell, seed, {"val/dice_mean": value}, key=f"#{key}")
    client.set_terminated(parent, status="FINISHED")
    table = find_winners(client, "repeat", tag=False)
    assert [(c.label, c.n, c.keys) for c in table.cells] == [("y", 2, 2), ("x", 2, 1)]
    text = format_table(table)
    assert "n=1: no interval" in text and "1 repeated seed averaged" in text
    assert "cells with one run (no interval, nothing to test) are listed after the rest" in text
    assert main(["winners", "repeat", "--tracking-uri", uri, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["pairs_compared"] == 0 and payload["note"] is None
