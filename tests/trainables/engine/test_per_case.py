"""Per-case validation metrics CSV: round trip, NaN, and a file that is not one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from trainables.engine.per_case import read_per_case_csv, write_per_case_csv
from trainables.errors import InputError


def test_round_trip_keeps_cases_columns_values_and_nan(tmp_path: Path) -> None:
    rows = [
        {"case": "BraTS_001", "val/dice_wt": 0.9, "val/hd95_wt": 3.25, "val/loss": 0.1},
        {"case": "BraTS_002", "val/dice_wt": 1 / 3, "val/hd95_wt": math.nan, "val/loss": 0.2},
    ]
    path = write_per_case_csv(rows, tmp_path / "sub" / "per_case_val.csv")
    assert path.read_text().splitlines()[0] == "case,val/dice_wt,val/hd95_wt,val/loss"
    back = read_per_case_csv(path)
    assert [r["case"] for r in back] == ["BraTS_001", "BraTS_002"]
    assert back[0] == rows[0] and back[1]["val/dice_wt"] == rows[1]["val/dice_wt"]  # exact
    assert math.isnan(back[1]["val/hd95_wt"])


def test_empty_cells_read_as_nan_and_a_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("case,val/dice_wt\nA,\n")
    assert math.isnan(read_per_case_csv(path)[0]["val/dice_wt"])
    path.write_text("id,val/dice_wt\nA,0.5\n")
    with pytest.raises(InputError, match=r"x.csv: not a per-case metrics file"):
        read_per_case_csv(path)
    path.write_text("case,val/dice_wt\nA,high\n")
    with pytest.raises(InputError, match=r"x.csv: line 2: could not convert"):
        read_per_case_csv(path)
