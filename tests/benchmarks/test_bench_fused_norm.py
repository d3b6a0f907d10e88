"""The fused-norm benchmark's --dry-run (toy sizes, triton's CPU interpreter) runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainables.models.fused_norm import triton_available

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not triton_available(), reason="triton is not installed (pip install triton)")
def test_dry_run_times_both_sides_and_reports_the_error(tmp_path: Path) -> None:
    out = tmp_path / "fused.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)  # the script enables the interpreter itself
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_fused_norm.py"), "--dry-run",
         "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "per-step estimate (channels_last" in proc.stdout
    result = json.loads(out.read_text())
    assert result["environment"]["interpreter"] is True
    assert {r["format"] for r in result["rows"]} == {"contiguous", "channels_last"}
    for row in result["rows"]:
        assert row["reference_ms"] > 0 and row["fused_ms"] > 0
        assert max(row["error_vs_float32"].values()) < 1e-3  # float16 input
