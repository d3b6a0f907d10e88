"""``ablate validate`` (and ``ablate sweep``'s checks before Ray) on the file itself: every
malformed file, unknown key, wrong type, empty axis or unreachable store exits 2 with a message
naming the file, the key path and the reason. The rules across components and cells are in
test_validate_rules.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from ablate_sweep_helpers import UNREACHABLE, run_validate, write_space

from orchestrator.cli import main


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "cache"))


def test_valid_space_lists_every_trial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = write_space(
        tmp_path,
        "name: s\nextends: trial.yaml\n"
        "variants: [{label: plain, overrides: {model.attention: false}}]\n"
        "grid: {model.deep_supervision: [0, 1]}\nseeds: 2\n",
    )
    assert main(["validate", str(space)]) == 0
    out = capsys.readouterr().out
    assert "sweep 's', 2 cells x 2 seeds = 4 trials" in out
    assert "plain,deep_supervision=1/seed1" in out
    assert "model.attention=false model.deep_supervision=1 seed=1" in out
    assert main(["validate", str(space), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["trials"]
    assert [r["key"] for r in rows][:2] == [
        "plain,deep_supervision=0/seed0",
        "plain,deep_supervision=0/seed1",
    ]
    # each row's resolved config, defaults filled in: what the trial trains, not only the diff
    model = rows[3]["config"]["model"]
    assert (model["attention"], model["deep_supervision"], rows[3]["config"]["seed"]) == (
        False,
        1,
        1,
    )
    assert rows[3]["config"]["validation"]["overlap"] == 0.5  # a default the file never wrote


def test_malformed_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = write_space(tmp_path, "name: s\ngrid: {model.attention: [true, false}\n")
    code, err = run_validate(space, capsys)
    assert code == 2
    assert f"{space}:2:" in err and "malformed YAML" in err


def test_a_key_written_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "name: s\nextends: trial.yaml\ngrid:\n  model.attention: [true]\n"
    space = write_space(tmp_path, text + "  model.attention: [false]\n")
    code, err = run_validate(space, capsys)
    assert code == 2
    message = "malformed YAML: duplicate key 'model.attention' (it is written twice)"
    assert f"{space}:5:3: {message}" in err


def test_extends_naming_a_study_file_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Itself or another study: the message is about extends, not about `ablate train`."""
    space = write_space(tmp_path, "name: s\nextends: space.yaml\n")
    code, err = run_validate(space, capsys)
    assert code == 2
    assert (
        f"{space}: extends: space.yaml is a study file, not a trial config; extends names a "
        "trial YAML such as base/tiny.yaml"
    ) in err


def test_a_sweep_name_that_is_no_folder_name_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n")
    args = ["sweep", str(space), "--name", "bad name/x", "--storage", str(tmp_path / "ray")]
    assert main(args) == 2
    assert "--name: 'bad name/x' must start with a letter or digit" in capsys.readouterr().err
    assert not (tmp_path / "ray").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("grdi: {}\n", "grdi: unknown key (allowed: base, description, extends, folds, grid, "),
        (
            "scheduler: {kind: asha, grace: 2}\n",
            "scheduler.grace: unknown key (allowed: grace_period, ",
        ),
        (
            "variants: [{label: a, overrides: {model: {deep_supervison: 1}}}]\n",
            "variants[0].overrides.model: model.deep_supervison: unknown key (allowed: attention, "
            "bottleneck_depth",
        ),
        (
            "paper: {citation: x, reported: {a: {val/dice_mean: 1}}, doi: y}\n",
            "paper.doi: unknown key",
        ),
        (  # a field with an alias is listed as a file writes it
            "sample: {train.epochs: {int_: [1, 3]}}\nsearch: {kind: optuna, num_samples: 2}\n",
            "sample.train.epochs.int_: unknown key (allowed: choice, int, loguniform, uniform; "
            "did you mean 'int'?)",
        ),
    ],
)
def test_unknown_keys_at_any_depth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    code, err = run_validate(space, capsys)
    assert code == 2 and str(space) in err and expected in err
    assert f"{space}: invalid search space:" in err  # one header, whichever part is wrong


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        (
            "{model.deep_supervison: [0, 1]}",
            "grid.model.deep_supervison: model.deep_supervison: unknown key (allowed: attention, "
            "bottleneck_depth, deep_supervision, filters, group_norm_groups, kind, "
            "negative_slope, norm, spatial_dims; did you mean 'deep_supervision'?)",
        ),
        ("{trian.epochs: [1]}", "grid.trian.epochs: trian: unknown key (allowed: augment, data, "),
        ("{train.epochs.max: [1]}", "cell 'max=1': train.epochs is a value (2), not a section"),
    ],
)
def test_dotted_paths_that_do_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], grid: str, expected: str
) -> None:
    space = write_space(tmp_path, f"name: s\nextends: trial.yaml\ngrid: {grid}\n")
    code, err = run_validate(space, capsys)
    assert code == 2 and f"{space}: invalid search space:" in err and expected in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "grid: {train.batch_size: [2, three]}\n",
            "grid.train.batch_size: train.batch_size: Input should be a valid integer",
        ),
        (
            "grid: {model.norm: [layer]}\n",  # the attention U-Net's norms: batch/group/instance
            "grid.model.norm: model.norm: 'layer' is not one of batch, group, instance",
        ),
        ("seeds: two\n", "seeds: Input should be a valid integer"),
        ("resources: {cpu: lots}\n", "resources.cpu: Input should be a valid number"),
        (
            "metric: val/dice_mena\n",
            "metric: unknown metric 'val/dice_mena' (did you mean 'val/dice_mean'?)",
        ),
        ("mode: maximum\n", "mode: 'maximum' is not one of max, min"),
        (
            "metric: val/loss\n",  # mode defaults to max: a loss must not be ranked highest first
            "mode: max ranks the highest val/loss first, but val/loss is better lower: "
            "use mode: min",
        ),
        (
            "metric: val/dice_wt\nmode: min\n",
            "val/dice_wt is better higher: use mode: max",
        ),
        (
            "stop: {time_total: 60}\n",
            "stop: unknown stop criterion 'time_total' (did you mean 'time_total_s'?)",
        ),
        (
            "base: {seed: 3}\n",
            "base: seed: 3 would be replaced by 'seeds:' (repeat i trains with seed i); drop it",
        ),
    ],
)
def test_values_of_the_wrong_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    code, err = run_validate(space, capsys)
    assert code == 2 and str(space) in err and expected in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("grid: {}\n", "grid: empty grid: name at least one dotted path and its values"),
        ("grid: {model.attention: []}\n", "grid: grid axis 'model.attention' has no values"),
        ("variants: []\n", "variants: empty variants: give at least one row"),
    ],
)
def test_empty_axes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n" + text)
    code, err = run_validate(space, capsys)
    assert code == 2 and expected in err


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ("{data.synthetic.cases: [8, 12]}", "'cases=8' and 'cases=12' split different cases "
         "(they differ in data.synthetic.cases): `ablate winners` ranks cells on one split"),
        ("{data.split.seed: [0, 1]}", "(they differ in data.split.seed)"),
        # the same case ids, other images: pairing them case by case would mean nothing
        ("{data.synthetic.seed: [0, 1]}", "(they differ in data.synthetic.seed)"),
        ("{data.split.fractions: [[0.6, 0.2, 0.2], [0.8, 0.1, 0.1]]}",
         "(they differ in data.split.fractions)"),
    ],
)  # fmt: skip
def test_cells_over_different_cases_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], grid: str, expected: str
) -> None:
    space = write_space(tmp_path, f"name: s\nextends: trial.yaml\ngrid: {grid}\n")
    code, err = run_validate(space, capsys)
    assert code == 2 and expected in err


def test_cells_over_sizes_of_the_same_cases_are_valid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = "{data.synthetic.shape: [[32, 32, 32], [40, 40, 32]]}"  # same case ids, same split
    space = write_space(tmp_path, f"name: s\nextends: trial.yaml\ngrid: {grid}\n")
    assert run_validate(space, capsys)[0] == 0


@pytest.mark.parametrize("seeds", [0, -1])
def test_seeds_below_one(tmp_path: Path, capsys: pytest.CaptureFixture[str], seeds: int) -> None:
    space = write_space(tmp_path, f"name: s\nextends: trial.yaml\nseeds: {seeds}\n")
    code, err = run_validate(space, capsys)
    assert code == 2 and "seeds: Input should be greater than or equal to 1" in err


@pytest.mark.parametrize("key", ["seeds", "folds"])
def test_a_yes_is_no_count(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str) -> None:
    space = write_space(tmp_path, f"name: s\nextends: trial.yaml\n{key}: true\n")
    code, err = run_validate(space, capsys)
    assert code == 2 and f"{key}: Input should be a valid integer (got True)" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPUs")
def test_gpu_request_without_gpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\nresources: {cpu: 1, gpu: 0.5}\n")
    assert main(["validate", str(space)]) == 0  # valid: it says where it can run
    out = capsys.readouterr().out
    assert "valid, but not runnable here as written: resources.gpu: 0.5 GPU per trial" in out
    assert f"ablate sweep {space} --smoke" in out and "--address auto" in out
    start = time.monotonic()
    assert main(["sweep", str(space), "--storage", str(tmp_path / "ray")]) == 2  # no hang
    assert "this machine has no GPU" in capsys.readouterr().err
    assert time.monotonic() - start < 30 and not (tmp_path / "ray").exists()


def test_unreachable_tracking_uri_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n")
    code, err = run_validate(space, capsys, "--tracking-uri", UNREACHABLE)
    assert code == 2 and f"MLflow tracking URI '{UNREACHABLE}' is unreachable" in err
    start = time.monotonic()
    storage = tmp_path / "ray"
    args = ["sweep", str(space), "--tracking-uri", UNREACHABLE, "--storage", str(storage)]
    assert main(args) == 2
    assert f"MLflow tracking URI '{UNREACHABLE}' is unreachable" in capsys.readouterr().err
    assert time.monotonic() - start < 30
    assert not (storage / "s").exists()  # failed before Tune created anything


def test_sqlite_tracking_uri_in_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n")
    uri = f"sqlite:///{tmp_path}/missing/mlflow.db"
    code, err = run_validate(space, capsys, "--tracking-uri", uri)
    assert (
        code == 2
        and f"MLflow tracking URI '{uri}': folder {tmp_path / 'missing'} does not exist" in err
    )


def test_other_space_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    optuna = "search: {kind: optuna, num_samples: 1}\n"
    cases = {
        "extends: nowhere.yaml\n": f"extends: trial file {tmp_path / 'nowhere.yaml'} not found",
        "sample: {optimizer.lr: {uniform: [0.1, 0.01]}}\n" + optuna: (
            "sample.optimizer.lr: uniform needs low < high, got [0.1, 0.01]"
        ),
        "sample: {optimizer.lr: {uniform: [0.01, 0.1]}}\n": (
            "'sample' ranges need search: {kind: optuna"
        ),
        "base: {device: cuda}\n": "cell 'base': device 'cuda' but resources.gpu is 0",
        "variants: [{label: a}]\npaper: {citation: x, reported: {b: {val/dice_mean: 0.8}}}\n": (
            "paper.reported.b: not a cell or variant label; labels: a"
        ),
    }
    for text, expected in cases.items():
        head = "name: s\n" if text.startswith("extends:") else "name: s\nextends: trial.yaml\n"
        space = write_space(tmp_path, head + text)
        code, err = run_validate(space, capsys)
        assert code == 2 and expected in err, err


def test_a_data_root_in_the_study_is_checked_like_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing data.root passed validate, then failed every trial on its worker."""
    missing = tmp_path / "nowhere"
    space = write_space(tmp_path, f"name: s\nextends: trial.yaml\nbase: {{data.root: {missing}}}\n")
    assert main(["validate", str(space)]) == 2
    assert f"data.root: {missing}: dataset directory does not exist" in capsys.readouterr().err


def test_a_warm_start_checkpoint_that_is_not_there_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--smoke drops the warm start, so only a full sweep would have found it, in every trial."""
    missing = tmp_path / "best.pt"
    text = f"name: s\nextends: trial.yaml\nbase: {{train.init: {{checkpoint: {missing}}}}}\n"
    space = write_space(tmp_path, text)
    assert main(["validate", str(space)]) == 2
    assert (
        f"train.init.checkpoint: {missing} is not a file (cell 'base')" in capsys.readouterr().err
    )
    assert main(["validate", str(space), "--smoke"]) == 0


def test_more_cpus_than_this_machine_has_is_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\nresources: {cpu: 100000}\n")
    assert main(["validate", str(space)]) == 0  # valid: it says where it can run
    out = capsys.readouterr().out
    assert "valid, but not runnable here as written: resources.cpu: 100000 CPUs per trial " in out


def test_an_address_no_ray_head_answers_at_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """validate passed a study for a head that `ablate sweep` then refused."""
    space = write_space(tmp_path, "name: s\nextends: trial.yaml\n")
    code, err = run_validate(space, capsys, "--address", "127.0.0.1:9")  # the discard port
    assert code == 2 and "--address: no Ray head answers at 127.0.0.1:9" in err, err
