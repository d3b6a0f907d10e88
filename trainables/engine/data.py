"""Turn a trial's ``data`` config into prepared, split, memory-mapped cases.

Decoding NIfTI happens once per dataset and preprocessing config (``ensure_prepared``); trials of
a sweep share the cache. Without ``data.root`` the trial trains on synthetic cases generated once
into the cache root, so every command works from a fresh clone.
"""

from __future__ import annotations

import fcntl
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.config.trial import DataConfig, SyntheticConfig, TrialConfig
from trainables.data.cache import PreparedDataset, default_cache_root, ensure_prepared
from trainables.data.labels import LabelScheme
from trainables.data.preprocess import PreprocessConfig
from trainables.data.splits import Split, make_split
from trainables.data.synth import synthesize_dataset
from trainables.data.synth_ct import synthesize_ct_dataset
from trainables.errors import InputError

Progress = Callable[[str], None]


@dataclass
class TrialData:
    """The cases one trial reads.

    Attributes:
        dataset: the prepared cache (memory-mapped arrays).
        split: train/val/test case ids and the split hash.
        scheme: the internal label scheme (regions WT/TC/ET, or FG).
        modalities: input channels in order.
        source: the dataset directory the cache was prepared from.
    """

    dataset: PreparedDataset
    split: Split
    scheme: LabelScheme
    modalities: tuple[str, ...]
    source: Path

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing the cached arrays went through, dataset statistics included."""
        return self.dataset.manifest.preprocess

    def load(self, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(image (C, *S) float16 memmap, label (*S) uint8, foreground locations (N, 3))."""
        case = self.dataset.load(case_id, modalities=self.modalities, mmap=True)
        assert case.label is not None  # the split holds labelled cases only (labelled_cases)
        return case.image, case.label, self.dataset.foreground_locations(case_id)


def applied_config(cfg: TrialConfig, data: TrialData) -> TrialConfig:
    """``cfg`` with ``data.preprocess`` replaced by what the cache applied (for ``foreground``
    normalisation: the dataset's statistics), so the checkpoints it saves make ``ablate
    predict`` and ``ablate test --data`` normalise new cases with the training's numbers."""
    if cfg.data.preprocess == data.preprocess:
        return cfg
    section = cfg.data.model_copy(update={"preprocess": data.preprocess})
    return cfg.model_copy(update={"data": section})


def prepare_trial_data(cfg: DataConfig, progress: Progress | None = None) -> TrialData:
    """Prepare (or reuse) the cache for ``cfg`` and split its labelled cases.

    Cases that could not be prepared and cases without a label file are left out, each named
    with its problem through ``progress`` (the trial's log), so a partly bad dataset still trains
    on its good cases and says what it left out.
    """
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root()
    source = Path(cfg.root) if cfg.root else synthetic_dataset(cfg.synthetic, cache_root, progress)
    if not source.is_dir():
        raise InputError(f"dataset directory {source} not found", where="data.root")
    counter = _counter(progress, "prepare")
    dataset = ensure_prepared(source, cache_root, cfg.preprocess, cfg.label_scheme, counter)
    report_left_out(dataset.left_out, progress)
    cases = labelled_cases(dataset, source, progress)
    _check_modalities(dataset, cfg.modalities)
    split = make_split(cases, cfg.split)
    if not split.train or not split.val:
        raise InputError(
            f"{len(cases)} usable labelled cases cannot give non-empty train and validation "
            f"sets with split {cfg.split.model_dump()}",
            where=str(source),
        )
    if not split.test and progress:
        progress(
            f"data: the split of {len(cases)} labelled cases has no test cases, so this trial "
            "logs no test/ metrics (more cases, or `ablate test SWEEP --data DIR` afterwards)"
        )
    return TrialData(dataset, split, dataset.scheme, tuple(cfg.modalities), source)


def labelled_cases(
    dataset: PreparedDataset, source: Path, progress: Progress | None = None
) -> tuple[str, ...]:
    """The prepared cases with a label, in cache order; the others are named via ``progress``.

    Raises:
        InputError: naming ``source`` when no case has a label (training needs labels).
    """
    labelled = tuple(c for c in dataset.case_ids if dataset.entry(c).has_label)
    unlabelled = [c for c in dataset.case_ids if c not in labelled]
    if not labelled:
        raise InputError(
            f"none of its {len(unlabelled)} cases has a label file, and training needs labels "
            "(use `ablate predict` for unlabelled scans)",
            where=str(source),
        )
    if unlabelled and progress:
        progress(
            f"data: {len(unlabelled)} case(s) without a label left out of training and "
            f"evaluation: {', '.join(unlabelled)}"
        )
    return labelled


def report_left_out(messages: list[str], progress: Progress | None) -> None:
    """One line per case the cache could not prepare (``<file>: <problem>``), under a count."""
    if messages and progress:
        progress(f"data: {len(messages)} case(s) could not be prepared and are left out:")
        for message in messages:
            progress(f"  {message}")


def synthetic_dataset(cfg: SyntheticConfig, cache_root: Path, progress: Progress | None) -> Path:
    """Generate (once, under a file lock shared by concurrent trials) the synthetic cases."""
    shape = "x".join(str(s) for s in cfg.shape)
    out = cache_root / "synthetic" / f"{cfg.modality}-seed{cfg.seed}-n{cfg.cases}-{shape}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "synth.json").is_file():
            if progress:
                progress(f"generating {cfg.cases} synthetic cases {shape} in {out}")
            counter = _counter(progress, "synth")
            if cfg.modality == "ct":
                synthesize_ct_dataset(out, cfg.cases, cfg.seed, cfg.shape, progress=counter)
            else:
                workers = synthesis_workers(cfg.cases, cfg.shape)
                synthesize_dataset(out, cfg.cases, cfg.seed, cfg.shape, progress=counter,
                                   workers=workers)  # fmt: skip
    return out


def synthesis_workers(cases: int, shape: tuple[int, int, int]) -> int:
    """Processes for generating synthetic MRI: one per case up to 4 (and half the CPUs) once a
    case is large enough (>= 2M voxels, ~2 s) to repay starting a process (~1-2 s)."""
    if math.prod(shape) < 2_000_000:
        return 1
    return max(1, min(cases, 4, (os.cpu_count() or 2) // 2))


def _check_modalities(dataset: PreparedDataset, wanted: tuple[str, ...]) -> None:
    for case_id in dataset.case_ids:
        missing = [m for m in wanted if m not in dataset.modalities(case_id)]
        if missing:
            raise InputError(
                f"case {case_id} has no {', '.join(missing)} (it has "
                f"{', '.join(dataset.modalities(case_id))}); choose data.modalities accordingly",
                where="data.modalities",
            )


def _counter(progress: Progress | None, verb: str) -> Callable[[int, int, str], None] | None:
    if progress is None:
        return None
    return lambda done, total, name: progress(f"{verb} {done}/{total} {name}")
