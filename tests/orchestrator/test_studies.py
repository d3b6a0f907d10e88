"""Every seed-paper study file: it validates, its trial count is the paper's grid times the
seeds, it cites its paper, and (slow) it runs end to end with ``--smoke`` on a CPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from orchestrator.cli import main

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"

# study -> (cells in the paper's grid or table, seeds per cell)
STUDIES: dict[str, tuple[int, int]] = {
    "btrseg_table1": (6, 3),  # the six rows of BTRSeg Table I
    "fmnet_architecture": (12, 3),  # final model + 11 one-factor changes (attention, DS, ...)
    "fmnet_speed": (4, 2),  # AMP x GPU data pipeline (FM-Net Table I)
    "fmnet_inputs": (10, 3),  # 5 modality sets x 2-D/3-D
    "nnunet_ct_haemorrhage": (8, 3),  # CT window x deep supervision x oversampling
    "unet_penalty": (20, 3),  # penalty {1,2,3,5,8} x 2-D/3-D x cosine/step
    "unet_models": (3, 3),  # 2-D U-Net vs 3-D U-Net vs SwinUNETR (paper 003 Table 9)
    "clstm_memory": (8, 2),  # checkpointing x 4 volume depths
    "smoke": (4, 2),
}
WITH_PAPER_NUMBERS = {
    "btrseg_table1",
    "fmnet_architecture",
    "fmnet_speed",
    "nnunet_ct_haemorrhage",
    "clstm_memory",
    "unet_models",
}


def test_every_study_file_is_covered() -> None:
    assert {p.stem for p in SPACES.glob("*.yaml")} == set(STUDIES)


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_study_validates_with_the_papers_trial_count(
    name: str, capsys: pytest.CaptureFixture
) -> None:
    # --address: checked for a cluster, so the GPU studies validate on a CPU machine too.
    assert main(["validate", str(SPACES / f"{name}.yaml"), "--address", "auto", "--json"]) == 0
    trials = json.loads(capsys.readouterr().out)["trials"]
    cells, seeds = STUDIES[name]
    assert len(trials) == cells * seeds
    assert len({t["key"].rsplit("/", 1)[0] for t in trials}) == cells
    # --smoke shrinks every trial to the same sizes: cells that differ only in size still plan
    assert main(["validate", str(SPACES / f"{name}.yaml"), "--smoke", "--json"]) == 0
    smoke = json.loads(capsys.readouterr().out)["trials"]
    assert len(smoke) == cells


@pytest.mark.parametrize("name", sorted(set(STUDIES) - {"smoke"}))
def test_study_cites_its_paper_and_repeats_seeds(name: str) -> None:
    text = (SPACES / f"{name}.yaml").read_text()
    space = yaml.safe_load(text)
    assert text.startswith("#") and "paper" in space and space["paper"]["citation"]
    assert space["seeds"] >= 2
    assert bool(space["paper"].get("reported")) == (name in WITH_PAPER_NUMBERS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_study_runs_end_to_end_with_smoke(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path.parent / "ablate-cache"))
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["sweep", str(SPACES / f"{name}.yaml"), "--smoke", "--tracking-uri", uri]
    assert main([*args, "--storage", str(tmp_path / "ray")]) == 0
    err = capsys.readouterr().err
    cells = STUDIES[name][0]
    assert f"sweep {name}-smoke: {cells} finished" in err
    out = tmp_path / "report.md"
    assert main(["report", f"{name}-smoke", "--tracking-uri", uri, "--out", str(out)]) == 0
    report = out.read_text()
    if name in WITH_PAPER_NUMBERS:  # the paper's column beside ours
        header = next(line for line in report.splitlines() if line.startswith("| cell"))
        # its split when the paper's metric has one (val/, test/), else plain (perf/...)
        assert re.search(r"\| paper( \((val|test)\))? \|", header), header
