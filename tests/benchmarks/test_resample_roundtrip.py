"""The resampling round-trip benchmark runs end to end and measures what it says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from trainables.data.synth_ct import synthesize_ct_dataset

REPO = Path(__file__).resolve().parents[2]


def test_upsampling_a_coarse_axis_and_back_is_lossless_and_downsampling_is_not(
    tmp_path: Path,
) -> None:
    synthesize_ct_dataset(tmp_path / "ct", 2, 0, (32, 32, 16), spacing=(0.8, 0.8, 4.0))
    results = {}
    for name, spacing in (("up", ["0.8", "0.8", "1.0"]), ("down", ["1.6", "1.6", "4.0"])):
        out = tmp_path / f"{name}.json"
        subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "resample_roundtrip.py"),
             str(tmp_path / "ct"), "--spacing", *spacing, "--json", str(out)],
            check=True, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        results[name] = json.loads(out.read_text())["cases"]
    # 4 mm slices to 1 mm and back: nearest neighbour along the coarse axis both ways
    assert [row["dice_fg"] for row in results["up"]] == [1.0, 1.0]
    # in-plane 0.8 -> 1.6 mm loses the small lesions' edges
    assert all(0.5 < row["dice_fg"] < 0.9 for row in results["down"])
