"""``benchmarks/bench_monai.py`` at toy size: both sides run and the table names them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_monai as bench


def test_sliding_window_side_by_side_at_toy_size(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "bench.json"
    args = ["--repeats", "1", "--volume", "64", "32", "32", "--roi", "32", "--skip-metrics"]
    assert bench.main([*args, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| sliding_window |" in table and "monai 1." in table
    result = json.loads(out.read_text())["sliding_window"]
    assert result["ours_ms"] > 0 and result["monai_ms"] > 0
    assert result["volume"] == [64, 32, 32] and 0.0 <= result["argmax_agreement"] <= 1.0
