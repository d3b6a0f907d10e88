"""Trial config: every shipped base YAML validates; impossible trials fail before data is read."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainables.config.trial import load_trial_config, load_yaml, parse_trial_config
from trainables.engine.smoke import smoke_config
from trainables.errors import InputError

BASE_DIR = Path(__file__).resolve().parents[3] / "search_spaces" / "base"
BASE_FILES = sorted(BASE_DIR.glob("*.yaml"))


def _tiny(**overrides: object) -> dict:
    data = yaml.safe_load((BASE_DIR / "tiny.yaml").read_text())
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return data


def _error(data: dict) -> str:
    with pytest.raises(InputError) as err:
        parse_trial_config(data, source="trial.yaml")
    return str(err.value)


def test_the_base_directory_ships_a_config_per_seed_paper() -> None:
    names = {p.stem for p in BASE_FILES}
    assert {"btrseg", "fmnet", "nnunet_ct", "unet2d_penalty", "unet3d_small", "clstm"} <= names


@pytest.mark.parametrize("path", BASE_FILES, ids=lambda p: p.stem)
def test_every_base_config_validates_round_trips_and_shrinks(path: Path) -> None:
    cfg = load_trial_config(path)
    assert parse_trial_config(yaml.safe_load(cfg.to_yaml())) == cfg
    smoke = smoke_config(cfg)
    assert smoke.train.epochs <= 2 and smoke.model.kind == cfg.model.kind
    assert smoke.loss == cfg.loss and smoke.optimizer == cfg.optimizer


def test_patch_not_divisible_by_the_network_stride() -> None:
    msg = _error(_tiny(sampling__patch_size=[36, 32, 32]))
    assert (
        "sampling.patch_size: [36, 32, 32] must be divisible by [8, 8, 8] "
        "(the total stride of model 'attention_unet')" in msg
    )


def test_a_patch_that_leaves_a_one_voxel_bottleneck() -> None:
    msg = _error(_tiny(sampling__patch_size=[8, 8, 8]))
    assert (
        "sampling.patch_size: [8, 8, 8] leaves a 1-voxel bottleneck in model 'attention_unet'"
        in msg
    )
    assert "use at least [16, 16, 16]" in msg


def test_two_d_patch_for_a_three_d_model() -> None:
    msg = _error(_tiny(sampling__patch_size=[32, 32]))
    assert (
        "sampling.patch_size: [32, 32] has 2 axes but model 'attention_unet' takes 3-D input" in msg
    )


def test_more_deep_supervision_heads_than_decoder_levels() -> None:
    msg = _error(_tiny(model__deep_supervision=3))
    assert "model: deep_supervision=3 needs more decoder levels" in msg
    assert "so at most 2 extra heads" in msg


def test_unknown_kind_unknown_key_and_wrong_type_are_listed_together() -> None:
    msg = _error(_tiny(loss={"kind": "dice_cee"}, train__epochs="ten", optimizer__lrr=1.0))
    assert "loss.kind: 'dice_cee' is not one of" in msg and "(did you mean 'dice_ce'?)" in msg
    assert "train.epochs: Input should be a valid integer" in msg
    assert "optimizer.lrr: unknown key" in msg and "did you mean 'lr'?" in msg


def test_unknown_modality_and_label_scheme() -> None:
    msg = _error(_tiny(data__modalities=["flair", "t1c"], data__label_scheme="brats2022"))
    assert "data.modalities: 't1c' is not one of t1, t1ce, t2, flair, ct" in msg
    assert "data.label_scheme: 'brats2022' is not one of auto, brats2021" in msg


def test_post_processing_switch_regions_and_auto_are_checked() -> None:
    field = "validation__test_postprocess"
    msg = _error(_tiny(**{field: {"largest_component": "Auto"}}))
    assert (
        "validation.test_postprocess.largest_component: 'Auto' is not one of true, false, auto "
        "(did you mean 'auto'?)"
    ) in msg
    msg = _error(_tiny(**{field: {"largest_component_regions": ["et", "ett", "et"]}}))
    assert "'ett' is not one of wt, tc, et, fg (did you mean 'et'?)" in msg
    msg = _error(_tiny(**{field: {"largest_component_regions": ["et", "et"]}}))
    assert "largest_component_regions: ['et', 'et'] names a region twice" in msg
    msg = _error(
        _tiny(**{field: {"largest_component": "auto", "largest_component_regions": ["et"]}})
    )
    assert "largest_component 'auto' decides largest_component_regions itself" in msg
    cfg = parse_trial_config(_tiny(**{field: {"largest_component": "auto"}}))
    assert not cfg.validation.test_postprocess.decided
    quoted = parse_trial_config(_tiny(**{field: {"largest_component": "true"}}))
    assert quoted.validation.test_postprocess.largest_component is True  # as every bool field


def test_post_processing_regions_must_be_the_labels_regions_where_the_config_says_which() -> None:
    field = "validation__test_postprocess"
    ct = {"modalities": ["ct"], "synthetic": {"modality": "ct"}}
    msg = _error(_tiny(data=ct, **{field: {"largest_component_regions": ["et", "wt"]}}))
    assert (
        "validation.test_postprocess.largest_component_regions: 'et', 'wt' are not regions of "
        "binary (foreground) labels (regions: fg)"
    ) in msg
    msg = _error(_tiny(**{field: {"largest_component_regions": ["fg"]}}))
    assert "'fg' is not a region of BraTS labels (regions: wt, tc, et)" in msg
    named = _tiny(data__label_scheme="binary", **{field: {"largest_component_regions": ["tc"]}})
    assert "'tc' is not a region of binary (foreground) labels" in _error(named)
    # real data whose layout decides the labels: checked when the data is read
    layout = _tiny(data__root="/data/any", **{field: {"largest_component_regions": ["fg"]}})
    assert parse_trial_config(layout).validation.test_postprocess.largest_component_regions


def test_malformed_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {kind: unet\n")
    with pytest.raises(InputError, match=r"bad.yaml:3:1: malformed YAML"):
        load_trial_config(bad)


def test_a_file_that_is_not_utf8_text_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: x  # caf\u00e9\n".encode("latin-1"))
    with pytest.raises(InputError) as err:
        load_yaml(bad)
    assert str(err.value) == (
        f"{bad}: not UTF-8 text: byte 0xe9 at offset 14; save the file as UTF-8"
    )
    with pytest.raises(InputError, match="is not a regular file"):
        load_yaml("/dev/null")


def test_yaml_merge_keys_work_and_duplicates_are_still_refused(tmp_path: Path) -> None:
    """``<<: *anchor`` merges (a key written after it overrides the merged one); a key
    written twice in one mapping is still an error."""
    merged = tmp_path / "merge.yaml"
    merged.write_text("base: &b {lr: 0.1, momentum: 0.9}\nopt:\n  <<: *b\n  lr: 0.01\n")
    assert load_yaml(merged)["opt"] == {"lr": 0.01, "momentum": 0.9}
    twice = tmp_path / "twice.yaml"
    twice.write_text("opt:\n  <<: {lr: 0.1}\n  lr: 0.01\n  lr: 0.02\n")
    with pytest.raises(InputError, match=r"twice.yaml:4:3: malformed YAML: duplicate key 'lr'"):
        load_yaml(twice)
