"""``ablate report``: Markdown/HTML with PNG plots beside the paper's numbers, logged to MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from ablate_sweep_helpers import log_sweep, mlflow_uri

from orchestrator import tracking
from orchestrator.cli import main
from orchestrator.report import mean_curve, write_report
from orchestrator.report_plots import _cost_unit
from orchestrator.winners import find_winners

PNG = b"\x89PNG\r\n\x1a\n"
PAPER = {"citation": "Doe et al. 2020, Table 2", "rows": {"a": {"val/dice_mean": 0.91}}}


@pytest.fixture
def sweep(tmp_path: Path) -> tuple[str, object, str]:
    uri = mlflow_uri(tmp_path)
    client, parent = log_sweep(
        uri, "study", {"a": [0.8, 0.82], "b": [0.6, 0.61]}, failed={"c": "failed"}, paper=PAPER
    )
    return uri, client, parent


def test_markdown_report_with_plots_and_the_paper_column(sweep, tmp_path: Path) -> None:
    _, client, parent = sweep
    out = tmp_path / "out" / "report.md"
    written = write_report(client, find_winners(client, "study"), out)
    assert written[0] == out and len(written) == 4
    assert all(p.read_bytes().startswith(PNG) for p in written[1:])
    text = out.read_text()
    assert "Paper column: Doe et al. 2020, Table 2." in text
    # Student t with 1 d.o.f. over two runs: 0.81 ± 12.706 * 0.01414 / sqrt(2)
    assert (
        "| a | 2 | 0.8100 | [0.6829, 0.9371] | - | - | - | - | 1.00 | 0.8600 | 0.8100 | 0.7600 "
        "| 10.5 | 0.009 | 2.10 | 0.9100 | best | - |" in text
    )
    row_b = "| b | 2 | 0.6050 | [0.5415, 0.6685] | - | -0.2050 | [-0.2685, -0.1415] | 0.016 |"
    assert row_b in text
    assert "paired t over 2 run pairs (no per-case data)" in text
    assert "test: not evaluated on test cases (ablate test SWEEP does it)" in text
    assert "| c | 0 | - |" in text and "1 failed" in text
    assert "![val/dice_mean per cell (mean, 95% CI)](report_files/metric_per_cell.png)" in text
    # the parts the HTML page has: the winner, each figure's caption, provenance
    assert "**Winner: a**, val/dice_mean **0.8100** (max)." in text
    assert "*dot: mean over runs; whisker: Student-t 95% interval" in text
    provenance = "## Provenance\n\n- sweep (MLflow experiment): `study`\n"
    assert f"{provenance}- parent run: `{parent}`" in text
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert logged == {"report/report.md", "report/report_files"}
    plots = {a.path for a in client.list_artifacts(parent, "report/report_files")}
    assert plots == {f"report/report_files/{p.name}" for p in written[1:]}


def test_a_cpu_only_sweep_plots_cpu_hours(sweep, tmp_path: Path) -> None:
    _, client, parent = sweep
    write_report(client, find_winners(client, "study"), tmp_path / "gpu.md")
    gpu = (tmp_path / "gpu.md").read_text()
    assert "val/dice_mean against GPU-hours" in gpu and "the lowest GPU-hours among" in gpu
    tracking.log_params(client, parent, {"resources.cpu": "2", "resources.gpu": "0"})
    written = write_report(client, find_winners(client, "study"), tmp_path / "cpu.md")
    assert (tmp_path / "cpu_files" / "cost.png") in written  # named by what it plots
    text = (tmp_path / "cpu.md").read_text()
    assert "val/dice_mean against CPU-hours" in text and "x CPUs per trial" in text
    assert "| CPU h |" in text and "GPU h" not in text and "GPU-hours" not in text
    assert "Cheapest tie: the lowest CPU-hours among the best and the cells tied" in text


def test_html_report_via_the_cli(sweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri, _, _ = sweep
    out = tmp_path / "report.html"
    assert main(["report", "study", "--out", str(out), "--tracking-uri", uri]) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<td>0.9100</td>" in page
    assert "<img src='data:image/png;base64," in page and "report_files" not in page
    assert not (tmp_path / "report_files").exists()  # self-contained: no side folder
    assert main(["report", "study", "--out", str(tmp_path / "r.pdf"), "--tracking-uri", uri]) == 2
    assert "the report must be named <name>.md or <name>.html" in capsys.readouterr().err
    assert main(["report", "study", "--out", str(tmp_path / ".html"), "--tracking-uri", uri]) == 2
    assert "the report must be named <name>.md or <name>.html" in capsys.readouterr().err
    (tmp_path / "m_files").write_text("not a folder")
    assert main(["report", "study", "--out", str(tmp_path / "m.md"), "--tracking-uri", uri]) == 2
    assert f"{tmp_path / 'm_files'}: is a file, where the Markdown report puts its figures" in (
        capsys.readouterr().err
    )
    # before the store is read (and the winner tagged): a store that is not there is not seen
    missing = f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}"
    assert (
        main(["report", "study", "--out", str(tmp_path / "r.pdf"), "--tracking-uri", missing]) == 2
    )
    assert "the report must be named <name>.md or <name>.html" in capsys.readouterr().err


def test_mean_curve_averages_seeds_per_epoch(sweep) -> None:
    _, client, _ = sweep
    cell = next(c for c in find_winners(client, "study", tag=False).cells if c.label == "a")
    curve = mean_curve(client, list(cell.runs), "val/dice_mean")
    assert [s for s, _ in curve] == [1, 2, 3]
    assert curve[-1][1] == pytest.approx(0.81) and curve[0][1] == pytest.approx(0.405)


@pytest.mark.parametrize(
    ("hours", "expected"),
    [
        ([2.5, 0.4], (1.0, "hours")),
        ([0.5, 0.02], (60.0, "minutes")),  # 30 and 1.2 minutes
        ([0.00105, 0.00131], (3600.0, "seconds")),  # a CPU smoke sweep: 3.8 to 4.7 s
        ([math.nan], (1.0, "hours")),
    ],
)
def test_the_cost_axis_unit_keeps_tiny_costs_readable(
    hours: list[float], expected: tuple[float, str]
) -> None:
    assert _cost_unit(hours) == expected
