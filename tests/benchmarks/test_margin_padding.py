"""The margin-padding measurement runs and shows the margin removing the padding."""

from __future__ import annotations

import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "margin_padding.py"


def test_margin_leaves_less_padding_than_the_patch_alone() -> None:
    module = runpy.run_path(str(SCRIPT))
    result = module["main"](["--samples", "6"])
    for patch in ("64x64x64", "80x80x20", "96x96"):
        bare, wide = result[f"{patch} no margin"], result[f"{patch} margin"]
        assert bare["mean"] > 0.02  # 6 rotated or scaled samples: some padding for sure
        assert wide["mean"] < bare["mean"] / 5
