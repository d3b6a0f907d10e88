"""``ablate validate``'s rules across components, cells and the study's own keys (schedule vs
epochs, ASHA rungs, paper numbers, region metrics, cells that would train alike, trial caps):
each broken rule exits 2, before Ray starts, with a message naming the cell or key and why."""

from __future__ import annotations

from pathlib import Path

import pytest
from ablate_sweep_helpers import UNREACHABLE, run_validate, write_space

from orchestrator.cli import main
from orchestrator.expand import plan_sweep


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # tiny.yaml trains 2 epochs here (see tiny_trial)
            "base: {schedule.warmup_epochs: 10}\n",
            "base.schedule.warmup_epochs: schedule.warmup_epochs: 10 must be less than "
            "train.epochs (2): the warm-up would leave no epochs for the schedule",
        ),
        (
            "base: {schedule: {kind: cosine, min_lr: 0.5}}\n",
            "base.schedule: schedule.min_lr: 0.5 must not exceed optimizer.lr (0.003): the cosine "
            "anneals from the optimizer's lr down to min_lr",
        ),
        (
            "grid: {schedule.warmup_epochs: [0, 2]}\n",  # one bad cell, named by its grid key
            "grid.schedule.warmup_epochs: schedule.warmup_epochs: 2 must be less than "
            "train.epochs (2)",
        ),
        (
            "grid: {train.freeze: [{module: encodr, iterations: 1}]}\n",
            "grid.train.freeze: train.freeze.module: 'encodr' is not a sub-module of model "
            "'attention_unet' (top level: bottleneck, decoder, encoder, heads) (did you mean "
            "'encoder'?)",
        ),
    ],
)
def test_cross_component_rules_fail_validate_before_any_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    code, err = run_validate(space, capsys)
    assert code == 2 and f"{space}:" in err and expected in err
    assert not (tmp_path / "cache").exists()  # no data was generated or read


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "scheduler: {kind: asha, grace_period: 4, max_t: 4}\n",
            "scheduler.grace_period: 4 must be less than max_t (4)",
        ),
        (
            "scheduler: {kind: asha, max_t: 5}\n",
            "scheduler.max_t: 5 exceeds train.epochs (2): trials end before ASHA's last rung; "
            "set scheduler.max_t to 2 (or leave it out)",
        ),
        (
            "scheduler: {kind: asha, grace_period: 2}\n",
            "scheduler.grace_period: 2 must be less than train.epochs (2), ASHA's default max_t",
        ),
        *(  # no max_t fits cells of different epochs: the advice was to set one that broke
            (  # the other rule, or "leave it out" when it was left out
                f"scheduler: {{kind: asha}}\ngrid: {{train.epochs: [{a}, {b}]}}\n",
                "scheduler: ASHA needs every trial to train max_t epochs, but the cells train "
                f"different train.epochs ('epochs={a}' {a}, 'epochs={b}' {b}): use scheduler: "
                "{kind: fifo}, or one sweep per number of epochs",
            )
            for a, b in ((4, 1), (3, 4))
        ),
        (
            "base: {train.epochs: 3}\nscheduler: {kind: asha, max_t: 2}\n",
            "scheduler.max_t: 2 is less than train.epochs (3): ASHA would stop every trial at "
            "epoch max_t, so none would finish or be tested; set scheduler.max_t to 3",
        ),
    ],
)
def test_asha_rungs_must_fit_the_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    code, err = run_validate(space, capsys)
    assert code == 2 and expected in err


def test_a_paper_label_typo_gets_the_shared_suggestion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "variants: [{label: no-attention, overrides: {model.attention: false}}]\n"
        "paper: {citation: x, reported: {no-atention: {val/dice_mean: 0.8}}}\n"
    )
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    code, err = run_validate(space, capsys)
    assert code == 2
    assert "paper.reported.no-atention: not a cell or variant label (did you mean " in err
    assert "'no-attention'?)" in err


def test_a_paper_number_for_a_metric_no_trial_logs_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "variants: [{label: a}, {label: b, overrides: {model.attention: false}}]\n"
        "paper: {citation: x, reported: {a: {val/dice: 0.8}, b: {val/dice_mean: 0.7}}}\n"
    )
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    code, err = run_validate(space, capsys)
    assert code == 2
    assert "paper.reported.a.val/dice: not a metric the trials log (did you mean " in err
    assert "paper.reported.b" not in err


def test_a_paper_number_measured_on_test_cases_is_filed_under_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A paper's test-set numbers go under the test/ names the trials log once on their test
    cases; test/loss is no such name (only per-case region metrics are tested)."""
    text = (
        "variants: [{label: a}, {label: b, overrides: {model.attention: false}}]\n"
        "paper: {citation: x, reported: {a: {test/dice_wt: 0.9, test/dice_mean: 0.8},"
        " b: {test/loss: 0.3}}}\n"
    )
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    code, err = run_validate(space, capsys)
    assert code == 2
    assert "paper.reported.b.test/loss: not a metric the trials log" in err
    assert "paper.reported.a" not in err


def test_sweep_rejects_the_same_trial_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(
        tmp_path, "name: s\nextends: trial.yaml\nbase: {schedule.warmup_epochs: 10}\n"
    )
    storage = tmp_path / "ray_results"
    code = main(["sweep", str(space), "--storage", str(storage), "--tracking-uri", UNREACHABLE])
    err = capsys.readouterr().err
    assert code == 2 and "schedule.warmup_epochs: 10 must be less than train.epochs (2)" in err
    assert not storage.exists()


def test_a_reader_that_leaves_early_ends_the_listing_quietly() -> None:
    """``ablate validate STUDY | head -1``: the closed pipe ends the command without an error."""
    import subprocess
    import sys

    study = Path(__file__).resolve().parents[2] / "search_spaces" / "fmnet_architecture.yaml"
    command = [sys.executable, "-m", "orchestrator.cli", "validate", str(study)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "BrokenPipeError" not in err, err


def test_smoke_listing_says_the_trials_are_shrunk(capsys: pytest.CaptureFixture[str]) -> None:
    study = Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml"
    assert main(["validate", str(study), "--smoke"]) == 0
    summary = capsys.readouterr().out.splitlines()[0]
    note = "; smoke: every trial shrunk, overrides listed as the file writes them)"
    assert summary.endswith(note)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "grid: {model.attention: [true, 'yes']}\n",
            "cells 'attention=true' and 'attention=yes' give the same trial config",
        ),
        (
            "grid: {optimizer.lr: [0.001, 0.01]}\nsearch: {kind: optuna, num_samples: 2}\n"
            "sample: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}}\n",
            "sample.optimizer.lr: also a grid axis; each trial's sampled value would replace",
        ),
        (
            "variants: [{label: x, overrides: {model: {attention: false}}}]\n"
            "grid: {model.attention: [true, false]}\n",
            "variants[0].overrides.model.attention: also set by the grid axis model.attention, "
            "whose values replace the variant's in every cell",
        ),
        (  # a grid over a whole section replaces the variant's leaf in it
            "variants: [{label: a, overrides: {model.attention: false}}, {label: b}]\n"
            "grid: {model: [{attention: true}, {attention: false}]}\n",
            "variants[0].overrides.model.attention: also set by the grid axis model, whose "
            "values replace",
        ),
        (
            "variants: [{label: a, overrides: {model.attention: true}}, "
            "{label: b, overrides: {model.attention: false}}]\n"
            "search: {kind: optuna, num_samples: 2}\n"
            "sample: {model.attention: {choice: [true, false]}}\n",
            "sample.model.attention: also set by a variant (model.attention); each trial's "
            "sampled value would replace it",
        ),
    ],
)
def test_cells_that_would_train_alike_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    code, err = run_validate(space, capsys)
    assert code == 2 and expected in err, err


def test_a_region_metric_the_labels_do_not_have_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\nmetric: val/dice_fg\n")
    code, err = run_validate(space, capsys)
    assert code == 2
    assert (
        "metric: val/dice_fg is never logged by cell 'base': its labels give the regions wt, tc, "
        "et (e.g. val/dice_wt)" in err
    )
    ct = "base: {data.label_scheme: binary, data.modalities: [ct], data.synthetic.modality: ct}\n"
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\nmetric: val/dice_fg\n" + ct)
    assert run_validate(space, capsys)[0] == 0  # binary labels: the FG region is logged


def test_a_synthetic_axis_with_data_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--data replaces the synthetic cases: the two cells would train on the same data."""
    from trainables.data.synth import synthesize_dataset

    synthesize_dataset(tmp_path / "data", 6, shape=(32, 32, 32))
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\ngrid: {data.synthetic.shape: "
                        "[[32, 32, 32], [40, 40, 32]]}\n")  # fmt: skip
    code, err = run_validate(space, capsys, "--data", str(tmp_path / "data"))
    assert code == 2
    assert (
        "grid.data.synthetic.shape: has no effect: the trials read the cases in "
        f"{(tmp_path / 'data').resolve()} (data.root, or --data), not synthetic ones" in err
    )
    assert run_validate(space, capsys)[0] == 0  # without --data the axis is real


def test_a_gpu_only_metric_without_a_gpu_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = "name: s\nextends: trial.yaml\nmetric: perf/peak_gpu_mem_gib\nmode: min\n"
    code, err = run_validate(write_space(tmp_path, text), capsys)
    assert code == 2 and (
        "metric: perf/peak_gpu_mem_gib is logged only by trials on a GPU, and resources.gpu is "
        "0, so no trial would log it" in err
    )


def test_a_grid_over_seed_gives_one_message_not_a_cascade(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\ngrid: {seed: [0, 1]}\n")
    code, err = run_validate(space, capsys)
    assert code == 2 and "grid.seed: the trial seed is set by 'seeds:'" in err
    assert "give the same trial config" not in err


def test_a_study_of_more_trials_than_max_trials_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lrs = ", ".join(f"{k}.0e-4" for k in range(1, 41))
    grid = f"grid: {{optimizer.lr: [{lrs}], train.batch_size: [1, 2, 3, 4, 5]}}\nseeds: 6\n"
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + grid)
    code, err = run_validate(space, capsys)  # the default cap: 1000
    assert code == 2 and (
        "the study plans 1200 trials (200 cells x 6 seeds), more than --max-trials 1000; check "
        "the axes, or pass --max-trials 1200 to run it as written" in err
    )
    # 10^7 cells: refused from the axis sizes (building the cells first ran out of memory)
    axes = ", ".join(f"a{i}: [{', '.join(map(str, range(10)))}]" for i in range(7))
    huge = write_space(tmp_path, f"name: s\nextends: trial.yaml\ngrid: {{{axes}}}\n", "huge.yaml")
    code, err = run_validate(huge, capsys)
    assert code == 2 and "the study plans 10000000 trials (10000000 cells x 1 seeds)" in err, err
    small = write_space(tmp_path, "name: s\nextends: trial.yaml\nseeds: 4\n", "small.yaml")
    assert run_validate(small, capsys, "--max-trials", "3")[0] == 2
    assert run_validate(small, capsys, "--max-trials", "4")[0] == 0


def test_a_section_rule_names_the_cell_when_several_axes_set_its_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two axes inside ``model``: either may be the cause, so both are named with the cell."""
    grid = "grid: {model.filters: [[4, 8, 16, 32], [4, 8]], model.attention: [true, false]}\n"
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + grid)
    code, err = run_validate(space, capsys)
    assert code == 2 and (
        "cell 'filters=[4,8],attention=true' (grid.model.filters, grid.model.attention): model: "
        "deep_supervision=1 needs more decoder levels" in err
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # passed validate, then crashed the sweep (exit 1, parent left RUNNING)
            "search: {kind: optuna, num_samples: 1, seed: -1}\n"
            "sample: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}}\n",
            ("search.seed: Input should be greater than or equal to 0",),
        ),
        (  # with validation.hd95 off only Dice is computed: ranking by HD95 left no winner
            "base: {validation.hd95: false}\nmetric: val/hd95_wt\nmode: min\n",
            ("metric: val/hd95_wt is never logged by cell 'base': validation.hd95 is false there",),
        ),
        (  # the switch drops attention_unet's own fields and keeps the shared ones
            "grid: {model.kind: [attention_unet, plain_unet]}\n",
            (
                "cell 'kind=plain_unet': sampling.patch_size: [32, 32, 32] leaves a 1-voxel "
                "bottleneck in model 'plain_unet'",
            ),
        ),
    ],
)
def test_settings_a_sweep_would_fail_on_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: tuple[str, ...]
) -> None:
    code, err = run_validate(write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text), capsys)
    assert code == 2 and all(part in err for part in expected), err


def test_a_nested_synthetic_axis_with_data_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The dotted form was refused with --data; the nested one trained two alike cells."""
    from tests.trainables.data.nifti_factory import brats_case

    for case_id in ("c0", "c1", "c2"):
        brats_case(tmp_path / "data", case_id)
    text = (
        "name: s\nextends: trial.yaml\nvariants: [{label: a, overrides: {data: {synthetic: "
        "{cases: 6}}}}, {label: b, overrides: {data: {synthetic: {cases: 8}}}}]\n"
    )
    space = write_space(tmp_path, text)
    code, err = run_validate(space, capsys, "--data", str(tmp_path / "data"))
    assert code == 2 and "variants[0].overrides.data: has no effect: the trials read" in err, err


def test_too_many_folds_under_smoke_says_smoke_shrank_the_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\nfolds: 8\n")
    code, err = run_validate(space, capsys, "--smoke")
    assert code == 2 and "use at most 6 folds (--smoke generates fewer synthetic cases)" in err, err


def test_a_cells_setting_lands_in_the_kind_the_cell_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Kind switches are applied first: a variant's cosine ``min_lr`` under the grid's
    ``schedule.kind: poly`` vanished (the poly cell trained without it, labelled as if it had
    it); now the cosine cell keeps it and the poly cell is refused for a key poly lacks."""
    text = (
        "name: s\nextends: trial.yaml\ngrid: {schedule.kind: [cosine, poly]}\n"
        "variants: [{label: low, overrides: {schedule.min_lr: 0.0001}}]\n"
    )
    code, err = run_validate(write_space(tmp_path, text), capsys)
    unknown = "schedule.min_lr: unknown key (allowed: exponent, kind, warmup_epochs)"
    assert code == 2 and f"variants[0].overrides.schedule.min_lr: {unknown}" in err, err
    text = text.replace("[cosine, poly]", "[cosine]")
    schedules = {
        k: c["schedule"] for k, c in plan_sweep(write_space(tmp_path, text)).cell_configs.items()
    }
    assert schedules["low,kind=cosine"]["min_lr"] == 0.0001


def test_a_variants_kind_switch_and_a_grid_inside_the_section_combine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A variant mapping is merged, so it sets its leaves, not the whole section: a cosine
    variant beside a grid over ``schedule.warmup_epochs`` was refused as an overlap."""
    text = (
        "name: s\nextends: trial.yaml\nbase: {train.epochs: 4}\n"
        "grid: {schedule.warmup_epochs: [0, 1]}\n"
        "variants: [{label: cos, overrides: {schedule: {kind: cosine, min_lr: 0.0001}}}]\n"
    )
    path = write_space(tmp_path, text)
    code, err = run_validate(path, capsys)
    assert code == 0, err
    schedules = {k: c["schedule"] for k, c in plan_sweep(path).cell_configs.items()}
    assert schedules["cos,warmup_epochs=1"] == {
        "kind": "cosine", "min_lr": 0.0001, "warmup_epochs": 1, "period_epochs": None
    }  # fmt: skip


def test_a_precision_axis_on_a_cpu_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """fp16 runs as fp32 on a CPU: the fp16 and fp32 cells trained alike, loss for loss, and
    were ranked as two cells (found by two audits)."""
    text = "name: s\nextends: trial.yaml\ngrid: {train.precision: [fp16, bf16, fp32]}\n"
    code, err = run_validate(write_space(tmp_path, text), capsys)
    alike = "cells 'precision=fp16' and 'precision=fp32' train alike: "
    on_cpu = (
        "fp16 runs as fp32 on a CPU, where these trials train (resources.gpu: 0 or device: cpu)"
    )
    fix = "; train them on a GPU (resources.gpu, device auto or cuda), or leave train.precision"
    assert code == 2 and alike + on_cpu + fix in err, err
    assert "bf16" not in err  # bf16 autocast does run on a CPU
    code, err = run_validate(write_space(tmp_path, text + "resources: {gpu: 1}\n"), capsys)
    assert "train alike" not in err
    sampled = (
        "name: s\nextends: trial.yaml\nsearch: {kind: optuna, num_samples: 2}\n"
        "sample: {train.precision: {choice: [fp16, fp32]}}\n"
    )
    code, err = run_validate(write_space(tmp_path, sampled), capsys)
    assert code == 2 and f"sample.train.precision: {on_cpu}; sample it on a GPU" in err, err
    # A GPU study's --smoke sweep runs on this CPU with resources.gpu 0 on purpose: validate
    # recommended --smoke and --smoke refused it.
    on_gpu = write_space(tmp_path, sampled + "resources: {gpu: 1}\n")
    assert run_validate(on_gpu, capsys, "--smoke") == (0, "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # the keys listed were train's, not init's
            "base: {train.init: {checkpoint: x.pt, foo: 1}}\n",
            "base.train.init: train.init.foo: unknown key (allowed: checkpoint, prefix, strict)",
        ),
        (  # YAML 1.1: an unquoted off is false
            "variants: [{label: off, overrides: {train.epochs: 3}}]\n",
            "variants.0.label: YAML reads an unquoted yes/no/on/off/true/false as a boolean (here "
            "false): quote it to mean the word, e.g. 'off'",
        ),
        (  # the same on a field of named options
            "base: {model.norm: off}\n",
            "model.norm: False is not one of batch, group, instance (YAML reads an unquoted "
            "yes/no/on/off/true/false as a boolean (here false))",
        ),
        (  # 2.113 is the check's own probe: say where it comes from and what to write
            "search: {kind: optuna, num_samples: 2}\n"
            "sample: {train.batch_size: {uniform: [1, 4]}}\n",
            "sample.train.batch_size (uniform draws values such as 2.113; int: [1, 4] draws whole "
            "numbers): train.batch_size: must be a whole number (got 2.113)",
        ),
    ],
)
def test_messages_say_what_to_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    code, err = run_validate(write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text), capsys)
    assert code == 2 and expected in err, err


def test_a_grid_over_a_section_sets_only_its_values_leaves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Grid values are mappings merged into the section: a grid over ``optimizer`` kinds beside
    a variant's ``optimizer.lr`` was refused as if the grid replaced the section (review)."""
    text = (
        "name: s\nextends: trial.yaml\ngrid: {optimizer: [{kind: nadam}, {kind: radam}]}\n"
        "variants: [{label: a, overrides: {optimizer.lr: 0.001}}]\n"
    )
    code, err = run_validate(write_space(tmp_path, text), capsys)
    assert code == 0, err
    code, err = run_validate(write_space(tmp_path, text.replace("kind: nadam", "lr: 0.1")), capsys)
    assert (
        code == 2
        and "variants[0].overrides.optimizer.lr: also set by the grid axis optimizer" in err
    )
