"""Shared fixtures: the optional real BraTS sample and small synthetic datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BRATS_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "brats-sample"


@pytest.fixture(scope="session")
def brats_sample_dir() -> Path:
    """The three real BraTS cases beside the checkout; skips the test when they are absent."""
    if not any(BRATS_SAMPLE.glob("*/*_seg.nii*")):
        pytest.skip(f"real BraTS sample not found at {BRATS_SAMPLE}")
    return BRATS_SAMPLE


@pytest.fixture(autouse=True)
def _private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prepared caches and synthetic datasets go to one per-session temp dir, never ~/.cache."""
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path_factory.getbasetemp() / "ablate-cache"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip without a CUDA device (``pytest -m cuda`` selects them;
    ``benchmarks/gpu_check.py`` runs them on a lent GPU)."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
