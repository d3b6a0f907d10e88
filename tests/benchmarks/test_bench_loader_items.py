"""The loader-item benchmark runs at toy size and reports what it claims to measure."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_loader_items.py"


def _module() -> ModuleType:  # a script, loaded as a module
    spec = importlib.util.spec_from_file_location("bench_loader_items", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_run_reports_times_and_bytes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "items.json"
    sizes = ["--patch", "8", "8", "8", "--shape", "20", "20", "12"]
    argv = ["--items", "30", "--repeats", "1", *sizes, "--augment-batches", "2"]
    result = _module().main([*argv, "--json", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["source_shape"] == [12, 12, 12]  # 8 (cos 30 + sin 30) / 0.85 = 12.9
    mib = result["mb_per_item"]
    assert mib["float32 patches"] == pytest.approx(8**3 * (4 * 4 + 8) / 2**20)
    assert mib["float16, no margin"] == pytest.approx(8**3 * (4 * 2 + 8) / 2**20)
    wide, plain = 12**3 * (4 * 2 + 1) / 2**20, 8**3 * (4 * 2 + 8) / 2**20
    assert min(wide, plain) < mib["float16, margin"] < max(wide, plain)  # a mix of both
    assert result["mb_per_item_expected"] == pytest.approx(0.36 * wide + 0.64 * plain)
    assert all(ms > 0 for ms in result["ms_per_item"].values())
    augment = result["augment_ms_per_batch"]
    assert set(augment) == {"float16, no margin", "float16, margin"}
    assert all(len(runs) == 1 and runs[0] > 0 for runs in augment.values())
    assert "float16, margin" in capsys.readouterr().out
