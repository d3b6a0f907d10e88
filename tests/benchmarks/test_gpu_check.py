"""``benchmarks/gpu_check.py --dry-run``: the GPU check's whole sequence at toy size on a CPU,
with ray and mlflow made unimportable (the lent GPU machine has neither)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BLOCKED_RUN = (
    "import runpy, sys; sys.modules['ray'] = None; sys.modules['mlflow'] = None; "
    "sys.argv = ['benchmarks/gpu_check.py', *sys.argv[1:]]; "
    "runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')"
)


@pytest.mark.slow
def test_dry_run_writes_every_stage_without_ray_or_mlflow(tmp_path: Path) -> None:
    command = [sys.executable, "-c", BLOCKED_RUN, "--dry-run", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    record = json.loads((tmp_path / "gpu_check.json").read_text())
    assert record["dry_run"] is True
    assert {"gpu", "driver", "torch", "cuda", "cudnn", "triton"} <= set(record["environment"])
    stages = record["stages"]
    assert list(stages) == ["tests", "train", "nnunet", "pipeline", "clstm", "dice"]
    assert all(s["status"] == "ok" and s["seconds"] <= s["budget_s"] + 30 for s in stages.values())
    assert stages["tests"]["result"]["returncode"] == 0  # every cuda test skips on a CPU
    trials = stages["train"]["result"]["trials"]
    assert set(trials) == {f"{c}/{p}" for c in ("tiny", "btrseg", "clstm", "unet2d_penalty")
                           for p in ("fp32", "bf16")}  # fmt: skip
    assert all(t["ok"] and len(t["fixed_batch_losses"]) == 3 for t in trials.values())
    pipeline = stages["pipeline"]["result"]
    assert set(pipeline) == {"int64_labels", "no_margin", "uint8_labels"}
    assert all(0 <= row["data_wait_frac"] < 1 for row in pipeline.values())
    assert {"checkpointing", "no_checkpointing"} == set(stages["clstm"]["result"])
    nnunet = stages["nnunet"]["result"]
    assert nnunet.get("status") == "skipped" or "plain" in nnunet["variants"]
    dice = stages["dice"]["result"]
    assert "cuda_graphs" not in " ".join(dice["switches"])  # refused on a CPU
    assert set(dice["runs"]["plain"]) == set(dice["runs"]["all_switches"]) == {"seed 0", "seed 1"}
    assert dice["comparison"]["pairs"] == 2 and dice["comparison"]["within_noise"] is not None
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| GPU | driver | torch | CUDA | cuDNN |" in markdown
    assert "| train | tiny/bf16 | ok |" in markdown
    assert "| dice | plain vs switches |" in markdown
