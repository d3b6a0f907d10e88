"""``unet_models.yaml`` (paper 003, Table 9): each variant is exactly its model's base config."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.expand import plan_sweep
from trainables.config.trial import load_trial_config, parse_trial_config

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
ROWS = {"unet2d": "unet2d_penalty", "unet3d": "unet3d_small", "swin_unetr": "swin_unetr"}


@pytest.mark.parametrize(("label", "base"), sorted(ROWS.items()))
def test_each_variant_trains_its_model_with_the_papers_settings(label: str, base: str) -> None:
    plan = plan_sweep(SPACES / "unet_models.yaml")
    cell = parse_trial_config(plan.cell_configs[label])
    expected = load_trial_config(SPACES / "base" / f"{base}.yaml")
    ignore = {"name": True, "data": {"cache_dir"}}  # the driver resolves the cache directory
    assert cell.model_dump(exclude=ignore) == expected.model_dump(exclude=ignore)


def test_paper_numbers_are_keyed_by_the_variant_labels() -> None:
    plan = plan_sweep(SPACES / "unet_models.yaml")
    assert plan.space.paper is not None
    assert set(plan.space.paper.reported) == set(ROWS) == {c.label for c in plan.cells}
    assert plan.space.paper.reported["swin_unetr"] == {"val/dice_mean": 0.7740}
