"""Search-space files: the model, dotted overrides, cells and the expansion into trials."""

from __future__ import annotations

from pathlib import Path

import pytest
from ablate_sweep_helpers import REPO, write_space

from orchestrator.expand import make_cells, plan_sweep
from orchestrator.plan_text import describe_plan
from orchestrator.space import SpaceFile
from trainables.config import validate_config
from trainables.errors import InputError


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))


def test_cells_are_variants_times_grid_points_with_readable_labels() -> None:
    space = validate_config(
        SpaceFile,
        {
            "name": "s",
            "grid": {"model.deep_supervision": [0, 1], "optimizer.lr": [0.001]},
            "variants": [
                {"label": "attn", "overrides": {"model.attention": True}},
                {"label": "plain", "overrides": {"model.attention": False}},
            ],
        },
    )
    cells = make_cells(space)
    assert [c.label for c in cells] == [
        "attn,deep_supervision=0,lr=0.001",
        "attn,deep_supervision=1,lr=0.001",
        "plain,deep_supervision=0,lr=0.001",
        "plain,deep_supervision=1,lr=0.001",
    ]
    assert cells[3].overrides == {
        "model.attention": False,
        "model.deep_supervision": 1,
        "optimizer.lr": 0.001,
    }
    assert cells[3].origins["model.attention"] == "variants[1].overrides.model.attention"
    assert cells[3].origins["optimizer.lr"] == "grid.optimizer.lr"


def test_axis_names_keep_the_full_path_when_last_parts_collide() -> None:
    space = validate_config(
        SpaceFile, {"name": "s", "grid": {"model.norm": ["batch"], "loss.norm": ["x"]}}
    )
    assert make_cells(space)[0].label == "model.norm=batch,loss.norm=x"


def test_plan_materialises_every_cell_and_seed(tmp_path: Path) -> None:
    space = write_space(
        tmp_path,
        "name: study\nextends: trial.yaml\nbase: {train.epochs: 1}\n"
        "grid: {model.deep_supervision: [0, 1]}\nseeds: 3\n",
    )
    plan = plan_sweep(space)
    assert [t.key for t in plan.trials] == [
        f"deep_supervision={d}/seed{s}" for d in (0, 1) for s in range(3)
    ]
    trial = plan.trials[4]
    assert trial.seed == 1 and trial.config["seed"] == 1
    assert trial.config["model"]["deep_supervision"] == 1
    assert trial.config["train"]["epochs"] == 1  # inline base on top of extends
    assert Path(trial.config["data"]["cache_dir"]) == tmp_path / "cache"  # resolved in the driver
    assert trial.overrides == {"model.deep_supervision": 1, "seed": 1}


def test_plan_applies_data_root_and_smoke(tmp_path: Path) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n")
    data = tmp_path / "data"
    plan = plan_sweep(space, data_root=data, smoke=True)
    config = plan.trials[0].config
    assert config["data"]["root"] == str(data)
    assert config["name"].endswith("-smoke") and config["train"]["epochs"] <= 2


def test_optuna_plan_keeps_cells_and_checks_ranges(tmp_path: Path) -> None:
    space = write_space(
        tmp_path,
        "name: s\nextends: trial.yaml\nvariants: [{label: a}, "
        "{label: b, overrides: {model.attention: false, seed: 0}}]\n"
        "sample: {optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}, train.batch_size: {int: [1, 2]}}\n"
        "search: {kind: optuna, num_samples: 3}\nseeds: 2\n",
    )
    with pytest.raises(InputError, match=r"variants\[1\]\.overrides\.seed: the trial seed is set"):
        plan_sweep(space)
    space.write_text(space.read_text().replace(", seed: 0", ""))
    plan = plan_sweep(space)
    assert plan.trials == [] and list(plan.cell_configs) == ["a", "b"]
    assert plan.space.effective_scheduler.kind == "asha"
    summary, rows = describe_plan(plan)
    assert "2 cells, 3 samples x 2 seeds = 6 trials" in summary
    assert rows[0]["overrides"]["optimizer.lr"] == "~loguniform(0.0001, 0.01)"


def test_sampled_bounds_are_type_checked(tmp_path: Path) -> None:
    space = write_space(
        tmp_path,
        "name: s\nextends: trial.yaml\nsample: {train.batch_size: {choice: [2, zero]}}\n"
        "search: {kind: optuna, num_samples: 2}\n",
    )
    with pytest.raises(
        InputError, match=r"sample\.train\.batch_size: train\.batch_size: .*integer"
    ):
        plan_sweep(space)


def test_sampled_axes_are_checked_together(tmp_path: Path) -> None:
    """Each range is valid against the base (lr 3e-3), but not every pair: min_lr above lr."""
    sample = (
        "sample:\n  optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
        "  schedule.min_lr: {loguniform: [1.0e-5, 2.0e-3]}\n"
    )
    head = "name: s\nextends: trial.yaml\nbase: {schedule: {kind: cosine, min_lr: 1.0e-5}}\n"
    space = write_space(tmp_path, head + sample + "search: {kind: optuna, num_samples: 2}\n")
    with pytest.raises(InputError) as caught:
        plan_sweep(space)
    assert (
        "sample: optimizer.lr=0.0001, schedule.min_lr=0.002 together give an invalid trial: "
        "schedule.min_lr: 0.002 must not exceed optimizer.lr (0.0001)" in str(caught.value)
    )
    narrowed = sample.replace("1.0e-4, 1.0e-2", "2.0e-3, 1.0e-2")  # every pair valid now
    space = write_space(tmp_path, head + narrowed + "search: {kind: optuna, num_samples: 2}\n")
    assert plan_sweep(space).space.sample


@pytest.mark.parametrize("form", ["uniform", "loguniform"])
def test_a_continuous_range_on_an_integer_field_is_refused(tmp_path: Path, form: str) -> None:
    """Whole-number bounds pass as integers; a value between them must be checked too."""
    space = write_space(
        tmp_path,
        f"name: s\nextends: trial.yaml\nsample: {{train.epochs: {{{form}: [1, 3]}}}}\n"
        "search: {kind: optuna, num_samples: 2}\n",
    )
    with pytest.raises(InputError) as error:
        plan_sweep(space)
    assert f"sample.train.epochs ({form} draws values such as " in str(error.value)
    assert "int: [1, 3] draws whole numbers): train.epochs: must be a whole number" in str(
        error.value
    )


def test_describe_plan_lists_trials_with_overrides(tmp_path: Path) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\ngrid: {optimizer.lr: [0.01]}\n")
    summary, rows = describe_plan(plan_sweep(space))
    assert "sweep 's', 1 cell x 1 seed = 1 trial (grid search, fifo scheduler" in summary
    assert rows[0].pop("config")["optimizer"]["lr"] == 0.01  # the resolved config
    assert rows == [
        {
            "key": "lr=0.01/seed0",
            "cell": "lr=0.01",
            "fold": None,
            "seed": 0,
            "overrides": {"optimizer.lr": "0.01", "seed": "0"},
        }
    ]


def test_the_repo_smoke_space_is_valid() -> None:
    plan = plan_sweep(REPO / "search_spaces" / "smoke.yaml")
    assert 2 <= len(plan.cells) <= 4 and plan.space.seeds == 2
    assert len(plan.trials) == len(plan.cells) * 2


def test_stop_takes_tune_counters_and_logged_metrics(tmp_path: Path) -> None:
    stop = "stop: {time_total_s: 60, training_iteration: 3, epoch: 2, val/dice_mean: 0.9}\n"
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + stop)
    plan = plan_sweep(space)
    assert plan.space.stop == {
        "time_total_s": 60, "training_iteration": 3, "epoch": 2, "val/dice_mean": 0.9
    }  # fmt: skip


@pytest.mark.parametrize(
    ("stop", "expected"),
    [
        ("{time_total_s: -5}", "stop: time_total_s: -5 would stop every trial at its first result"),
        ("{epoch: 0}", "stop: epoch: 0 would stop every trial at its first result"),
        (  # was accepted: a loss starts at its worst, so every trial stopped after one epoch
            "{val/loss: 0.5}",
            "stop: val/loss: Tune stops a trial when a result reaches the value (>= 0.5), and a "
            "lower-is-better metric starts at its worst",
        ),
        (  # trial.yaml trains 2 epochs
            "{training_iteration: 1}",
            "stop.training_iteration: 1 ends every trial of cell 'base' before its train.epochs "
            "(2), with its schedule unfinished; set train.epochs instead",
        ),
    ],
)
def test_stop_criteria_that_end_every_trial_early_are_refused(
    tmp_path: Path, stop: str, expected: str
) -> None:
    space = write_space(tmp_path, f"name: s\nextends: trial.yaml\nstop: {stop}\n")
    with pytest.raises(InputError) as err:
        plan_sweep(space)
    assert expected in str(err.value), err.value


def test_names_and_labels_say_which_characters_they_take(tmp_path: Path) -> None:
    """Were pydantic's regular expressions ("String should match pattern '^[^/|#\\s]...")."""
    space = write_space(tmp_path, "name: my sweep\nextends: trial.yaml\nvariants: [{label: a/b}]\n")
    with pytest.raises(InputError) as err:
        plan_sweep(space)
    assert (
        "name: 'my sweep' must start with a letter or digit and hold only letters, digits, '_', "
        "'.' and '-' (it names a folder and an MLflow experiment)"
    ) in str(err.value)
    assert ("variants.0.label: 'a/b' may not hold '/', '|' or '#' nor start with a space") in str(
        err.value
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "paper: {citation: X, reported: {base: {val/dice_mean: 81}}}\n",
            "base.val/dice_mean: 81 is above 1, a percentage? the table compares fractions: "
            "write 0.81",
        ),
        ("max_failures: true\n", "max_failures: Input should be a valid integer"),  # was 1
        ("grid: {optimizer.lr: [1, 1.0]}\n", "grid axis 'optimizer.lr' repeats a value: [1, 1.0]"),
        (  # said "repeats a value" of two different values
            "grid: {optimizer.lr: [0.00010001, 0.0001]}\n",
            "grid axis 'optimizer.lr': 0.00010001 and 0.0001 give one cell label (0.0001; labels "
            "keep 4 significant digits): space them apart",
        ),
        (
            "search: {kind: optuna, num_samples: 2}\n"
            "sample: {model.attention: {choice: [1, true]}}\n",
            "sample.model.attention: choice repeats a value: [1, True] (Optuna would weigh it "
            "twice)",
        ),
    ],
)
def test_values_that_read_as_something_else_are_refused(tmp_path: Path, text: str, expected: str):
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    with pytest.raises(InputError) as err:
        plan_sweep(space)
    assert expected in str(err.value), err.value


def test_extends_naming_a_folder_says_so(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    for extends in ("base", "''"):
        space = write_space(tmp_path, f"name: s\nextends: {extends}\n")
        with pytest.raises(InputError, match=r"names a folder, not a trial YAML such as base/tiny"):
            plan_sweep(space)
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    space = write_space(tmp_path, "name: s\nextends: empty.yaml\n")
    with pytest.raises(InputError, match=r"empty\.yaml: is empty: a trial config maps model:"):
        plan_sweep(space)


def test_docs_study_files_describes_every_key() -> None:
    """docs/study-files.md has one table row per study-file key, no more, no fewer."""
    import re

    text = (REPO / "docs" / "study-files.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.MULTILINE))
    assert documented == set(SpaceFile.model_fields)
