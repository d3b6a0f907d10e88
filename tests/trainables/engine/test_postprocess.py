"""``validation.test_postprocess``: the two rules on hand-made label maps, the test pass and
``ablate predict`` applying them alike, and a binary trial told that the BraTS rule is ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainables.engine.predict_helpers import TINY, random_checkpoint
from trainables.config.trial import PostprocessConfig, load_trial_config, parse_trial_config
from trainables.data.cache import PreparedDataset, prepare
from trainables.data.evaluate import evaluate_predictions
from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS
from trainables.data.synth import synthesize_dataset
from trainables.engine.bench_inference import benchmark_inference
from trainables.engine.checkpoint import BEST_MODEL_FILE, load_checkpoint
from trainables.engine.held_out import (
    TestCases,
    evaluate_cases,
    predicted_cases,
    split_validation_cases,
    weights_loaded,
)
from trainables.engine.postprocess import postprocess_labels
from trainables.engine.postprocess_decide import decide_postprocess
from trainables.engine.predict import build_predictor, majority_postprocess, postprocess_steps
from trainables.engine.predict_cases import predict_directory
from trainables.engine.runner import TrialRunner
from trainables.engine.smoke import smoke_config
from trainables.errors import InputError

NCR, ED, ET = 1, 2, 3  # internal BraTS codes


def _tumour() -> np.ndarray:
    """A 20^3 map: oedema block with a 2x2x2 ET core (8 voxels), and a 1-voxel ET speck
    touching a 1-voxel oedema speck diagonally (26- but not 6-connected), apart from it."""
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = ED
    labels[4:6, 4:6, 4:6] = ET
    labels[14, 14, 14] = ED
    labels[15, 15, 15] = ET
    return labels


def test_small_enhancing_tumour_becomes_necrosis_below_the_threshold_only() -> None:
    labels = _tumour()  # 9 ET voxels in all
    same = postprocess_labels(labels, PostprocessConfig(min_et_voxels=9), INTERNAL_BRATS)
    np.testing.assert_array_equal(same, labels)  # 9 is not fewer than 9
    out = postprocess_labels(labels, PostprocessConfig(min_et_voxels=10), INTERNAL_BRATS)
    assert (out == ET).sum() == 0 and (out == NCR).sum() == 9 and (out == ED).sum() > 0
    assert out.dtype == labels.dtype and (labels == ET).sum() == 9  # the input is kept
    binary = (labels > 0).astype(np.uint8)
    kept = postprocess_labels(binary, PostprocessConfig(min_et_voxels=10), INTERNAL_BINARY)
    np.testing.assert_array_equal(kept, binary)


def test_only_the_largest_26_connected_foreground_component_is_kept() -> None:
    labels = _tumour()
    out = postprocess_labels(labels, PostprocessConfig(largest_component=True), INTERNAL_BRATS)
    np.testing.assert_array_equal(out[:10, :10, :10], labels[:10, :10, :10])  # labels kept
    assert out[10:, 10:, 10:].sum() == 0  # the diagonal pair went as one component
    single = np.zeros_like(labels)
    single[14, 14, 14], single[15, 15, 15] = ED, ET  # diagonal neighbours: one component
    kept = postprocess_labels(single, PostprocessConfig(largest_component=True), INTERNAL_BRATS)
    np.testing.assert_array_equal(kept, single)
    off = postprocess_labels(labels, PostprocessConfig(), INTERNAL_BRATS)
    assert off is labels


def test_the_test_pass_and_predict_post_process_alike(tmp_path: Path) -> None:
    # this random model paints ~6,000 ET voxels per case, in one component: every ET goes
    rules = {"largest_component": True, "min_et_voxels": 10_000}
    ckpt = random_checkpoint(tmp_path / "ckpt" / "best.pt", validation__test_postprocess=rules)
    data = tmp_path / "data"
    synthesize_dataset(data, 2, 7, (40, 40, 36))
    predictor = build_predictor([("ckpt", ckpt)], "cpu")
    cfg, model = predictor.cfg, predictor.members[0].model
    prepare(data, tmp_path / "cache", cfg.data.preprocess)
    cache = PreparedDataset(tmp_path / "cache")
    cases = TestCases(cache, cache.case_ids, cache.scheme, cfg.data.modalities)
    cpu = torch.device("cpu")
    cleaned = evaluate_cases(model, cfg, cases, cpu, _no_autocast).per_case
    validation = cfg.validation.model_dump() | {"test_postprocess": {}}
    raw_cfg = parse_trial_config(cfg.model_dump(mode="json") | {"validation": validation})
    raw = evaluate_cases(model, raw_cfg, cases, cpu, _no_autocast).per_case
    assert all(row["test/sensitivity_et"] == 0 for row in cleaned)
    assert all(row["test/sensitivity_et"] > 0 for row in raw)
    predict_directory(predictor, data, tmp_path / "out")
    evaluated = {r["case_id"]: r for r in evaluate_predictions(tmp_path / "out", data).cases}
    for row in cleaned:
        for region in ("wt", "tc", "et"):
            got = evaluated[row["case"]][f"dice_{region}"]
            assert got == pytest.approx(row[f"test/dice_{region}"], abs=1e-9), (row, region)


def test_a_binary_trial_is_told_the_enhancing_tumour_rule_is_ignored() -> None:
    cfg = smoke_config(load_trial_config(TINY)).model_dump(mode="json")
    cfg["data"] |= {"modalities": ["ct"], "label_scheme": "binary"}
    cfg["data"]["synthetic"]["modality"] = "ct"
    cfg["validation"]["test_postprocess"] = {"min_et_voxels": 200}
    notes: list[str] = []
    TrialRunner(parse_trial_config(cfg), progress=notes.append)
    assert "validation.test_postprocess.min_et_voxels ignored: binary labels" in notes


def test_auto_decides_on_the_validation_cases_after_the_last_epoch(
    tiny: dict, tmp_path: Path
) -> None:
    tiny["train"].update(epochs=2, iterations_per_epoch=2)
    tiny["validation"]["test_postprocess"] = {"largest_component": "auto", "min_et_voxels": 5}
    notes: list[str] = []
    runner = TrialRunner(parse_trial_config(tiny), progress=notes.append)
    first = runner.run_epoch()
    assert not any(k.startswith("postprocess/") for k in first)  # only after the last epoch
    last = runner.run_epoch()
    assert last["perf/postprocess_s"] > 0 and last["perf/test_s"] > 0  # timed apart
    decided = runner.cfg.validation.test_postprocess
    assert decided.decided and decided.min_et_voxels == 5
    # the same rule on the validation cases predicted with the best weights, independently
    cases = split_validation_cases(runner.cfg, runner.data)
    assert last["postprocess/val_cases"] == len(cases.case_ids) > 0
    with weights_loaded(runner.model, runner.best.weights) as model:
        predicted = list(predicted_cases(model, runner.cfg, cases, runner.device, _no_autocast))
    pairs = [(case.labels, case.reference) for case in predicted]
    again = decide_postprocess(pairs, PostprocessConfig(min_et_voxels=5), runner.data.scheme)
    assert again.config == decided and again.metrics() == {
        k: v for k, v in last.items() if k.startswith("postprocess/")
    }
    assert any(n.startswith("post-processing decided on ") for n in notes)
    predicted_lines = [n for n in notes if n.startswith("postprocess ")]
    assert [n.split()[1] for n in predicted_lines] == [
        f"{i}/{len(pairs)}" for i in range(1, len(pairs) + 1)
    ]
    assert all(
        f" {case.case_id} predicted (" in n
        for n, case in zip(predicted_lines, predicted, strict=True)
    )
    # the saved model carries the decision; a trial restored from it keeps it
    runner.save(tmp_path)
    saved = load_checkpoint(tmp_path / BEST_MODEL_FILE)["config"]["validation"]
    assert PostprocessConfig(**saved["test_postprocess"]) == decided
    restored = TrialRunner(parse_trial_config(tiny))
    restored.restore(tmp_path)
    assert restored.cfg.validation.test_postprocess == decided


def test_an_ensemble_takes_the_steps_most_members_took() -> None:
    def cfg(fg: bool, *regions: str) -> PostprocessConfig:
        return PostprocessConfig(largest_component=fg, largest_component_regions=regions)

    voted = majority_postprocess([cfg(True, "tc", "et"), cfg(False, "et"), cfg(True)])
    assert voted == cfg(True, "et")  # tc: 1 of 3
    # every member applied tc before et: the ensemble too, whoever listed et first (review)
    assert majority_postprocess(
        [cfg(False, "et"), cfg(False, "tc", "et"), cfg(False, "tc", "et")]
    ) == (cfg(False, "tc", "et"))
    assert majority_postprocess([cfg(False, "et", "wt")] * 2) == cfg(False, "et", "wt")  # agreed
    with pytest.raises(ValueError, match="undecided largest_component 'auto'"):
        majority_postprocess([PostprocessConfig(largest_component="auto")])  # not "true"
    assert majority_postprocess([cfg(True, "et"), cfg(False)]) == cfg(False)  # a tie: left out
    assert majority_postprocess([cfg(False, "wt")]) == cfg(False, "wt")
    assert postprocess_steps(cfg(True, "et")) == (
        "largest component of the foreground, largest component of et"
    )
    assert postprocess_steps(PostprocessConfig(min_et_voxels=50)) == (
        "enhancing tumour under 50 voxels to necrosis"
    )
    assert postprocess_steps(cfg(False)) == ""


def test_predict_refuses_a_model_whose_auto_was_never_decided(tmp_path: Path) -> None:
    ckpt = random_checkpoint(
        tmp_path / "best.pt", validation__test_postprocess={"largest_component": "auto"}
    )
    with pytest.raises(InputError) as err:
        build_predictor([("runs/abc/best.pt", ckpt)], "cpu")
    assert str(err.value).startswith(
        "runs/abc/best.pt: validation.test_postprocess.largest_component is 'auto', but the "
        "run never decided it"
    )
    assert "--no-postprocess writes the label maps without post-processing" in str(err.value)
    raw = build_predictor([("runs/abc/best.pt", ckpt)], "cpu", postprocess=False)
    assert raw.postprocess == PostprocessConfig()
    assert postprocess_steps(PostprocessConfig(largest_component="auto")).endswith("(auto)")


def test_the_inference_bench_times_every_step_auto_may_choose() -> None:
    cfg = smoke_config(load_trial_config(TINY)).model_dump(mode="json")
    cfg["validation"]["test_postprocess"] = {"largest_component": "auto"}
    result = benchmark_inference(parse_trial_config(cfg), shape=(24, 24, 24))
    assert result["postprocess"] == (
        "largest component of the foreground, largest component of wt, largest component of "
        "tc, largest component of et (auto: every step it may choose)"
    )


def _no_autocast():
    from contextlib import nullcontext

    return nullcontext()
