"""``ablate bench`` on paper 003's SwinUNETR trial, shrunk like ``--smoke`` (bench has no flag)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from trainables.config.trial import load_trial_config
from trainables.engine.smoke import smoke_config

BASE = Path(__file__).resolve().parents[2] / "search_spaces" / "base" / "swin_unetr.yaml"


def test_bench_times_a_swin_unetr_step(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    trial = tmp_path / "swin_smoke.yaml"
    trial.write_text(smoke_config(load_trial_config(BASE)).to_yaml())
    args = ["bench", str(trial), "--steps", "1", "--warmup", "1", "--device", "cpu", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "swin_unetr" and result["patch_size"] == [64, 64, 64]
    assert result["step_ms_median"] > 0 and result["voxels_per_s"] > 0
