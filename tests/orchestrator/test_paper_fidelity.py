"""The shipped studies say what their papers say: each number checked here is quoted from the
paper in the study's YAML comments and explained in docs/papers.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.expand import plan_sweep
from trainables.config.trial import TrialConfig, load_trial_config, parse_trial_config

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def cells(study: str) -> dict[str, TrialConfig]:
    """Cell label -> its validated trial config (seed 0)."""
    plan = plan_sweep(SPACES / f"{study}.yaml")
    return {label: parse_trial_config(cfg) for label, cfg in plan.cell_configs.items()}


# ---- paper 003: Different U-Nets on MRI --------------------------------------------------------


@pytest.mark.parametrize("base", ["unet2d_penalty", "unet3d_small"])
def test_paper_003_bases_use_table_1_and_no_normalisation(base: str) -> None:
    cfg = load_trial_config(SPACES / "base" / f"{base}.yaml")
    opt, sched = cfg.optimizer, cfg.schedule
    assert (opt.kind, opt.lr, opt.momentum, opt.nesterov, opt.weight_decay) == (
        "sgd", 0.1, 0.0, False, 0.0)  # fmt: skip
    assert (sched.kind, sched.period_epochs, sched.min_lr, cfg.train.epochs) == (
        "cosine", 100, 0.0, 30)  # fmt: skip
    assert cfg.data.preprocess.normalization.kind == "none"


def test_unet_penalty_rows_use_table_1_or_table_2() -> None:
    studied = cells("unet_penalty")
    assert len(studied) == 20
    for label, cfg in studied.items():
        if "-step" in label:  # Table 2: lr 0.05, StepLR step_size 3, gamma 0.8
            assert cfg.optimizer.lr == 0.05, label
            assert (cfg.schedule.kind, cfg.schedule.step_size, cfg.schedule.gamma) == (
                "step", 3, 0.8)  # fmt: skip
        else:  # Table 1: lr 0.1, CosineAnnealingLR T_max 100
            assert cfg.optimizer.lr == 0.1, label
            assert (cfg.schedule.kind, cfg.schedule.period_epochs) == ("cosine", 100), label
        assert cfg.optimizer.momentum == 0.0 and cfg.data.preprocess.normalization.kind == "none"
    assert {c.model.spatial_dims for c in studied.values()} == {2, 3}


def test_unet_models_keeps_swin_unetrs_own_settings() -> None:
    studied = cells("unet_models")
    for label in ("unet2d", "unet3d"):
        assert studied[label].data.preprocess.normalization.kind == "none"
        assert studied[label].schedule.period_epochs == 100
        assert studied[label].optimizer.momentum == 0.0
    swin = studied["swin_unetr"]
    assert swin.data.preprocess.normalization.kind == "zscore"  # MONAI's pipeline normalises
    assert (swin.optimizer.kind, swin.schedule.period_epochs) == ("adamw", 100)


# ---- paper 004: C-LSTM -------------------------------------------------------------------------


def test_clstm_pretraining_draws_1000_random_slices_one_per_batch() -> None:
    """ "for 1000 randomly picked slices with one slice per batch": no slice forced to hold
    foreground (at batch 1 the share is a per-slice probability, test_loader checks it)."""
    cfg = load_trial_config(SPACES / "base" / "clstm_pretrain_unet.yaml")
    assert cfg.sampling.foreground_fraction == 0.0 and cfg.sampling.empty_slice_drop == 0.0
    assert cfg.train.batch_size == 1
    assert cfg.train.epochs * cfg.train.iterations_per_epoch == 1000


# ---- paper 000: BTRSeg -------------------------------------------------------------------------


def test_btrseg_rows_see_one_pass_over_the_training_split_per_epoch() -> None:
    """70 % of BraTS 2020's 369 cases is 258 training cases; every Table I row's epoch draws
    258 patches whatever its batch size (a fixed 250 iterations gave batch 6 three times the
    patches of batch 2)."""
    from trainables.data.splits import holdout_counts

    train_cases = holdout_counts(369, (0.7, 0.1, 0.2))[0]
    assert train_cases == 258
    rows = cells("btrseg_table1")
    assert {c.train.batch_size for c in rows.values()} == {2, 3, 6}
    for label, cfg in rows.items():
        assert cfg.train.iterations_per_epoch * cfg.train.batch_size == train_cases, label
    base = load_trial_config(SPACES / "base" / "btrseg.yaml")
    assert base.train.iterations_per_epoch * base.train.batch_size == train_cases


def test_btrseg_rows_all_keep_the_papers_optimizer_settings() -> None:
    """Table I: lr 5e-4 and weight decay 1e-5 in every row. The RAdam rows' kind switch
    (``optimizer: {kind: radam}``) replaced the section and trained them with no decay."""
    rows = cells("btrseg_table1")
    assert {c.optimizer.kind for c in rows.values()} == {"adam", "radam"}
    for label, cfg in rows.items():
        assert (cfg.optimizer.lr, cfg.optimizer.weight_decay) == (5e-4, 1e-5), label


def test_btrseg_cites_its_single_author_and_title() -> None:
    from orchestrator.space import load_space_file

    space, _ = load_space_file(SPACES / "btrseg_table1.yaml")
    assert space.paper is not None
    assert space.paper.citation.startswith("Carmo D. Preliminary Results: Automated Glioma")
    assert "Rittner" not in space.paper.citation and "Lotufo" not in space.paper.citation


# ---- reported numbers: filed where the paper measured them -------------------------------------


def _paper(study: str):
    from orchestrator.space import load_space_file

    space, _ = load_space_file(SPACES / f"{study}.yaml")
    assert space.paper is not None
    return space.paper


@pytest.mark.parametrize(
    "study, row, metrics",
    [
        ("fmnet_architecture", "final", {"test/dice_wt", "test/dice_tc", "test/dice_et"}),
        (
            "nnunet_ct_haemorrhage",
            "window,deep_supervision=true,foreground_fraction=0.333",
            {"test/dice_fg", "test/nsd_fg", "test/rvd_fg"},
        ),
        ("clstm_memory", "checkpointing=true,patch_size=[512,512,320]",
         {"perf/peak_gpu_mem_gib", "test/dice_fg"}),
    ],
)  # fmt: skip
def test_test_set_numbers_are_not_filed_as_validation(study: str, row: str, metrics: set) -> None:
    assert set(_paper(study).reported[row]) == metrics


def test_fmnet_citations_quote_what_the_paper_reports() -> None:
    inputs = _paper("fmnet_inputs").citation
    assert "0.08-0.1" in inputs and "0.2-0.25" in inputs and "binary" in inputs
    assert "no numbers reported" not in inputs
    architecture = _paper("fmnet_architecture").citation
    assert "Table II: TEST Dice" in architecture and "longer epochs" in architecture


# ---- defaults the papers did not use -----------------------------------------------------------

UNCLIPPED = ["btrseg", "fmnet", "unet2d_penalty", "unet3d_small", "swin_unetr",
             "clstm_pretrain_unet", "clstm"]  # fmt: skip


@pytest.mark.parametrize("base", UNCLIPPED)
def test_papers_that_never_clip_gradients_do_not(base: str) -> None:
    assert load_trial_config(SPACES / "base" / f"{base}.yaml").train.grad_clip is None


@pytest.mark.parametrize("base", ["nnunet_brats", "nnunet_ct"])
def test_nnunet_bases_keep_nnunets_gradient_clipping(base: str) -> None:
    assert load_trial_config(SPACES / "base" / f"{base}.yaml").train.grad_clip == 12.0


@pytest.mark.parametrize("base", ["nnunet_brats", "nnunet_ct"])
def test_nnunet_bases_let_nnunets_rule_decide_the_post_processing(base: str) -> None:
    cfg = load_trial_config(SPACES / "base" / f"{base}.yaml")
    assert cfg.validation.test_postprocess.largest_component == "auto"


def test_the_fidelity_page_covers_every_paper_study_and_is_linked() -> None:
    root = SPACES.parent
    page = (root / "docs" / "papers.md").read_text()
    studies = sorted(p.name for p in SPACES.glob("*.yaml") if p.stem != "smoke")
    bases = sorted(p.name for p in (SPACES / "base").glob("*.yaml"))
    missing = [n for n in studies if f"`{n}`" not in page]
    missing += [n for n in bases if n not in ("tiny.yaml", "nnunet_brats.yaml") and n not in page]
    assert not missing, missing
    assert "(docs/papers.md)" in (root / "README.md").read_text()
    assert "(papers.md)" in (root / "docs" / "study-files.md").read_text()
