"""The parent run's provenance tags: ablate's version and commit, the study folder's commit."""

from __future__ import annotations

from pathlib import Path

from orchestrator import provenance


def test_git_commit_names_the_checkout_and_marks_uncommitted_changes(tmp_path: Path) -> None:
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    assert provenance.git_commit(tmp_path) == "unknown"  # not a repository (or no commit yet)
    git("init", "-q")
    (tmp_path / "study.yaml").write_text("name: a\n")
    git("add", "study.yaml")
    git("commit", "-qm", "study")
    head = git("rev-parse", "HEAD")
    assert provenance.git_commit(tmp_path) == head
    (tmp_path / "notes.txt").write_text("untracked files do not change the results\n")
    assert provenance.git_commit(tmp_path) == head
    (tmp_path / "study.yaml").write_text("name: b\n")
    assert provenance.git_commit(tmp_path) == f"{head}-dirty"


def test_parent_tags_name_ablate_itself() -> None:
    tags = provenance.parent_tags({"ablate.git_commit": "abc"})
    assert tags["ablate.git_commit"] == "abc" and tags["ablate.version"] != "unknown"
    repo = Path(provenance.__file__).resolve().parent.parent
    assert tags["ablate.code_commit"] == provenance.git_commit(repo)  # "unknown" from a wheel
