"""Dotted paths: set (kind-aware merge), overrides, get, and the one label format."""

from __future__ import annotations

import pytest

from trainables.config.dotted import apply_overrides, format_value, get_dotted, set_dotted


def test_set_dotted_creates_merges_and_replaces_by_kind() -> None:
    data = {"model": {"kind": "unet", "filters": [4, 8], "upsample": "transpose"}}
    set_dotted(data, "train.epochs", 3)
    assert data["train"] == {"epochs": 3}
    set_dotted(data, "model", {"upsample": "nearest"})  # same kind: merged
    assert data["model"] == {"kind": "unet", "filters": [4, 8], "upsample": "nearest"}
    # a new kind keeps what both kinds inherit (spatial_dims), not what each declares on its
    # own under one name (filters, upsample: the new kind's defaults apply)
    data["model"]["spatial_dims"] = 3
    set_dotted(data, "model", {"kind": "attention_unet", "attention": False})
    assert data["model"] == {"kind": "attention_unet", "spatial_dims": 3, "attention": False}
    set_dotted(data, "model.kind", "clstm")  # the dotted spelling does the same
    assert data["model"] == {"kind": "clstm"}  # the C-LSTM shares none of them
    optimizer = {"kind": "adam", "lr": 5e-4, "weight_decay": 1e-5, "betas": [0.9, 0.99]}
    set_dotted(data, "optimizer", optimizer)
    set_dotted(data, "optimizer.kind", "sgd")  # the optimizers share lr and weight decay
    assert data["optimizer"] == {"kind": "sgd", "lr": 5e-4, "weight_decay": 1e-5}
    set_dotted(data, "schedule", {"kind": "exponential", "gamma": 0.985, "warmup_epochs": 2})
    set_dotted(data, "schedule", {"kind": "step", "step_size": 10})  # gamma: another meaning
    assert data["schedule"] == {"kind": "step", "warmup_epochs": 2, "step_size": 10}
    data["other"] = {"kind": "a", "x": 1}  # a section whose kinds the trial config does not know
    set_dotted(data, "other", {"kind": "b"})
    assert data["other"] == {"kind": "b"}
    with pytest.raises(ValueError, match=r"train\.epochs is a value \(3\), not a section"):
        set_dotted(data, "train.epochs.x", 1)


def test_kind_switches_are_applied_before_the_settings_beside_them() -> None:
    """A cell's ``schedule.min_lr`` set before the grid's kind switch was dropped by it."""
    base = {"schedule": {"kind": "poly", "exponent": 0.9}}
    out = apply_overrides(base, {"schedule.min_lr": 1e-4, "schedule.kind": "cosine"})
    assert out == {"schedule": {"kind": "cosine", "min_lr": 1e-4}}


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "data.split.test": {"kind": "holdout", "fractions": [0.8, 0, 0.2]},
            "data.split.kind": "kfold",
        },
        {
            "data": {"split": {"kind": "kfold"}},
            "data.split.test": {"kind": "holdout", "fractions": [0.8, 0, 0.2]},
        },
        {
            "data.split.kind": "kfold",
            "data.split.test": {"kind": "holdout", "fractions": [0.8, 0, 0.2]},
        },
    ],
)
def test_a_nested_setting_survives_its_sections_switch_in_any_order_and_spelling(
    overrides: dict,
) -> None:
    """A section's own kind is switched before a setting inside it, however the file wrote
    them: ``data.split.test`` written before ``data.split.kind`` (both two dots deep), or the
    switch spelled as a nested mapping, lost the test hold-out."""
    out = apply_overrides({"data": {"split": {"kind": "holdout"}}}, overrides)
    test = {"kind": "holdout", "fractions": [0.8, 0, 0.2]}
    assert out == {"data": {"split": {"kind": "kfold", "test": test}}}


def test_the_clstm_slice_unet_written_before_the_model_switch_is_kept() -> None:
    slice_unet = {"kind": "unet", "filters": [8, 16], "norm": "group"}
    out = apply_overrides(
        {"model": {"kind": "attention_unet"}}, {"model.unet": slice_unet, "model.kind": "clstm"}
    )
    assert out == {"model": {"kind": "clstm", "unet": slice_unet}}


@pytest.mark.parametrize(
    "spelling", [{"model.unet.kind": "unet"}, {"model.unet": {"kind": "unet"}}]
)
def test_writing_the_kind_a_nested_section_already_has_keeps_its_settings(spelling: dict) -> None:
    """The C-LSTM's slice U-Net has one kind; writing it is not a switch (it wiped the section)."""
    base = {"model": {"kind": "clstm", "unet": {"norm": "group", "filters": [8, 16]}}}
    out = apply_overrides(base, spelling)
    assert out["model"]["unet"] == {"norm": "group", "filters": [8, 16], "kind": "unet"}


def test_apply_overrides_leaves_the_base_untouched() -> None:
    base = {"train": {"epochs": 2}, "seed": 0}
    out = apply_overrides(base, {"train.epochs": 5, "seed": 1})
    assert out == {"train": {"epochs": 5}, "seed": 1}
    assert base == {"train": {"epochs": 2}, "seed": 0}


def test_format_value_is_short_and_stable() -> None:
    assert format_value(3e-3) == "0.003"
    assert format_value([8, 16]) == "[8,16]"
    assert format_value(True) == "true"


def test_set_dotted_rejects_empty_components() -> None:
    with pytest.raises(ValueError, match=r"'model\.\.norm' is not a dotted path"):
        set_dotted({}, "model..norm", "group")


def test_get_dotted_reads_nested_values_and_defaults() -> None:
    data = {"model": {"kind": "unet", "filters": [4, 8]}, "seed": 1}
    assert get_dotted(data, "model.filters") == [4, 8]
    assert get_dotted(data, "seed") == 1
    assert get_dotted(data, "train.epochs", None) is None
    assert get_dotted(data, "seed.x", "none") == "none"  # through a value: missing, not a crash
    with pytest.raises(KeyError, match=r"model\.norm"):
        get_dotted(data, "model.norm")


def test_format_value_of_floats_and_mappings() -> None:
    assert format_value(0.1 + 0.2) == "0.3"
    assert format_value(float("inf")) == "inf"
    assert format_value({"kind": "unet", "attention": False}) == "{kind=unet,attention=false}"
    assert format_value((1.0, "a")) == "[1,a]"


def test_a_value_set_twice_in_one_mapping_is_refused() -> None:
    """Applied in order, the later of a dotted key and a nested mapping silently won."""
    data = {"model": {"attention": False, "filters": [4, 8]}}
    with pytest.raises(ValueError) as err:
        apply_overrides(data, {"model.attention": True, "model": {"attention": False}})
    assert str(err.value) == (
        "model.attention is set twice, by 'model.attention' and by 'model'; set it once"
    )
    # a section replaced and another of its fields set: two values, each set once
    out = apply_overrides(data, {"model": {"attention": True}, "model.filters": [8, 16]})
    assert out["model"] == {"attention": True, "filters": [8, 16]}
