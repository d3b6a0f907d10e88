"""The trial-config reference page is generated from the models and kept current."""

from __future__ import annotations

import re
from pathlib import Path

from trainables.config.reference import reference_markdown
from trainables.config.trial import load_trial_config

PAGE = Path(__file__).resolve().parents[3] / "docs" / "trial-config.md"
BASES = PAGE.parents[1] / "search_spaces" / "base"


def test_the_page_is_what_the_models_generate() -> None:
    assert PAGE.read_text() == reference_markdown(), (
        "docs/trial-config.md is stale: python -m trainables.config.reference > "
        "docs/trial-config.md"
    )


def _leaves(data: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        out |= _leaves(value, f"{path}.") if isinstance(value, dict) else {path}
    return out


def test_every_key_a_shipped_base_sets_is_listed() -> None:
    """Each leaf a base trial file writes appears as a row (`path`), so the page covers what
    the studies use."""
    listed = set(re.findall(r"^\| `([^`]+)` \|", reference_markdown(), flags=re.M))
    for base in sorted(BASES.glob("*.yaml")):
        config = load_trial_config(base).model_dump(mode="json", exclude_none=True)
        keys = {
            k for k in _leaves(config) if not k.startswith("data.preprocess.normalization.stats")
        }
        assert keys <= listed, (base.name, sorted(keys - listed))


def test_kinds_have_their_own_sections() -> None:
    page = reference_markdown()
    assert "## `optimizer (kind: radam)`" in page and "## `model (kind: swin_unetr)`" in page
    assert "| `optimizer.lr` | float, > 0.0 | `0.0005` |" in page
    # a section's own default, not its model's: the C-LSTM's slice U-Net (helper review)
    assert "| `model.unet.filters` | list of int | `[16, 32, 64, 128, 256]` |" in page
