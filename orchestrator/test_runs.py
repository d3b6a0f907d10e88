"""``ablate test``: evaluate the finished runs of a sweep on held-out test cases, afterwards.

For sweeps that finished before the engine tested every run, runs stopped early by a scheduler
(never reached their last epoch), or an external test set. For every finished child run: its
best model (MLflow artifact ``checkpoint/best.pt``, the engine's checkpoint format with the
trial config inside) predicts the test cases whole (sliding window, Gaussian weighting, the
trial's overlap) and the per-case region and lesion-wise metrics are logged on the run
(:mod:`orchestrator.test_tracking`).

- Without ``--data``: the split's own test cases, rebuilt from the config in the checkpoint
  (synthetic cases are regenerated deterministically; ``data.root`` must exist here). The split
  hash must equal the run's ``ablate.split_hash`` tag, or the "test" cases might be training ones.
- With ``--data DIR`` (any supported layout): every labelled case of DIR, prepared with the run's
  preprocessing; logged under ``test_ext/`` with the tag ``ablate.test_ext.data``.

The device is the best one here (CUDA when available), whatever the trial trained on.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from orchestrator import tracking
from orchestrator.sweep_data import preparation_counter
from orchestrator.test_tracking import (
    DATA_TAG,
    EXTERNAL,
    TEST,
    TEST_STEP,
    cases_tag,
    has_test,
    log_test,
)
from trainables.config.trial import TrialConfig, parse_trial_config
from trainables.data.cache import default_cache_root, ensure_prepared
from trainables.data.labels import LabelScheme, scheme_kind
from trainables.data.layouts import dataset_layout
from trainables.engine.checkpoint import BEST_MODEL_FILE, load_checkpoint, save_checkpoint
from trainables.engine.data import TrialData, prepare_trial_data
from trainables.engine.held_out import TestCases, TestResult, evaluate_cases, split_test_cases
from trainables.engine.per_case import write_per_case_csv
from trainables.engine.postprocess import with_postprocess
from trainables.engine.postprocess_decide import decide_on_validation
from trainables.engine.precision import autocast_context, effective_precision, resolve_device
from trainables.errors import InputError
from trainables.losses import output_channels
from trainables.models import build_model

Progress = Callable[[str], None]
LEFT_OUT_TAG = f"ablate.{EXTERNAL}.left_out"  # on each run: the --data cases not tested
CHECKPOINT_ARTIFACT = f"checkpoint/{BEST_MODEL_FILE}"


@dataclass
class EvaluationReport:
    """What ``ablate test`` did: run keys tested, failed (``key: reason``), not finished,
    (with ``--missing``) left alone because they were tested before, and the cases of
    ``--data`` left out (``<file>: <problem>``)."""

    prefix: str
    tested: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unfinished: int = 0
    already: int = 0
    left_out: list[str] = field(default_factory=list)  # --data cases that could not be prepared
    no_test_cases: int = 0  # runs whose split holds no test case (tested on nothing)


def evaluate_sweep(
    client: Any,
    sweep: str,
    data: Path | None,
    overwrite: bool,
    progress: Progress,
    missing_only: bool = False,
) -> EvaluationReport:
    """Evaluate every finished run of ``sweep``; a run that cannot be evaluated (no checkpoint,
    a split that differs...) is reported and the others continue.

    Runs that already have this prefix's metrics are refused (a test set is used once) unless
    ``overwrite`` evaluates them again or ``missing_only`` leaves them as they are (continuing
    an interrupted ``ablate test``). Each case's score is reported through ``progress``.
    """
    if data is not None and not data.is_dir():
        raise InputError(f"{data}: test data directory not found", where="--data")
    if data is not None:  # an empty or unknown folder is said once, not once per run; the
        dataset_layout(data)  # cases are read with each run's label scheme
    parent = tracking.find_sweep(client, sweep)
    runs = tracking.child_runs(client, parent)
    report = EvaluationReport(EXTERNAL if data else TEST)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    report.unfinished = len(runs) - len(finished)
    if not finished:
        raise InputError(f"sweep {sweep!r} has no finished runs to test")
    if data is not None and not overwrite:
        _refuse_other_external(finished, data.resolve(), sweep)
    if not overwrite and all(has_test(r, report.prefix) for r in finished):
        report.already = len(finished)  # nothing to do (the sweep tested every run): no error
        tag = cases_tag(report.prefix)
        report.no_test_cases = sum(r.data.tags.get(tag) == "0" for r in finished)
        return report
    if missing_only and not overwrite:
        done = [r for r in finished if has_test(r, report.prefix)]
        finished = [r for r in finished if not has_test(r, report.prefix)]
        report.already = len(done)
    _refuse_overwrite(finished, report.prefix, sweep, overwrite)
    source = CaseSource(data.resolve() if data else None, progress)
    for index, run in enumerate(finished, start=1):
        key, start = run_key(run), time.perf_counter()
        try:
            result = evaluate_run(
                client, run, source, lambda line, k=key: progress(f"  {k}: {line}")
            )
        except InputError as err:
            report.failed.append(f"{key}: {err}")
            progress(f"failed {index}/{len(finished)} {key}: {err}")
            continue
        report.tested.append(key)
        progress(
            f"tested {index}/{len(finished)} {key}: {_summary(result, report.prefix)} "
            f"({time.perf_counter() - start:.1f} s)"
        )
    report.left_out = source.left_out
    return report


def _refuse_overwrite(runs: list[Any], prefix: str, sweep: str, overwrite: bool) -> None:
    done = [run_key(r) for r in runs if has_test(r, prefix)]
    if done and not overwrite:
        raise InputError(
            f"{len(done)} of {len(runs)} finished runs of sweep {sweep!r} already have "
            f"{prefix}/ metrics (e.g. {done[0]}); pass --overwrite to evaluate them again, or "
            "--missing to test only the others"
        )


def _refuse_other_external(runs: list[Any], data: Path, sweep: str) -> None:
    """Runs hold one external test set (``test_ext/``): one tested on another folder is
    neither 'already tested' on ``data`` nor to be replaced without being asked."""
    other = [r for r in runs if has_test(r, EXTERNAL) and r.data.tags.get(DATA_TAG) != str(data)]
    if other:
        raise InputError(
            f"{len(other)} finished runs of sweep {sweep!r} hold {EXTERNAL}/ results on "
            f"{other[0].data.tags.get(DATA_TAG, 'another folder')}, not {data}; a run keeps one "
            f"external test set: pass --overwrite to replace them with {data}'s"
        )


def _summary(result: TestResult, prefix: str) -> str:
    if not result.per_case:
        return "no test cases in this split"
    return f"{prefix}/dice_mean {result.metrics[f'{prefix}/dice_mean']:.4f} on {result.cases} cases"


def run_key(run: Any) -> str:
    """The trial key (the run's name, ``<cell>/seed<i>``) or its id."""
    return run.info.run_name or run.info.run_id


def evaluate_run(
    client: Any, run: Any, source: CaseSource, progress: Progress | None = None
) -> TestResult:
    """Evaluate one run's best model on ``source``'s cases and log the result on the run;
    ``progress`` hears of each case as it is scored."""
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = _download_checkpoint(client, run_id, Path(tmp))
        cfg = parse_trial_config(checkpoint["config"], source=f"{CHECKPOINT_ARTIFACT} of {run_id}")
        split_hash = run.data.tags.get("ablate.split_hash")
        if not cfg.validation.test_postprocess.decided:  # a run stopped before its last epoch
            data = source.split_data(cfg, split_hash)
            cfg = decide_run_postprocess(client, run_id, cfg, checkpoint, data, Path(tmp), progress)
        cases = source.cases(cfg, split_hash)
        prefix = EXTERNAL if source.root else TEST
        result = evaluate_weights(cfg, checkpoint["model"], cases, prefix, progress)
        csv = write_per_case_csv(result.per_case, Path(tmp) / "per_case.csv")
        tags = {DATA_TAG: str(source.root)} if source.root else {}
        if source.root and source.left_out:  # the metrics are over the other cases
            tags[LEFT_OUT_TAG] = "\n".join(source.left_out)[: tracking.MAX_TAG]
        elif source.root and LEFT_OUT_TAG in run.data.tags:  # an earlier set's (--overwrite)
            client.delete_tag(run_id, LEFT_OUT_TAG)
        per_case = csv if result.per_case else None
        log_test(client, run_id, result.metrics, per_case, prefix, tags, run.data.metrics)
    return result


def _download_checkpoint(client: Any, run_id: str, folder: Path) -> dict[str, Any]:
    listed = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
    if CHECKPOINT_ARTIFACT not in listed:
        raise InputError(f"run {run_id} has no {CHECKPOINT_ARTIFACT} artifact (no best model)")
    return load_checkpoint(client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, str(folder)))


def decide_run_postprocess(
    client: Any,
    run_id: str,
    cfg: TrialConfig,
    checkpoint: dict[str, Any],
    data: TrialData,
    folder: Path,
    progress: Progress | None = None,
) -> TrialConfig:
    """``largest_component: auto`` left undecided (the run stopped before its last epoch):
    decide it on the run's validation cases as the run would have, log ``postprocess/...`` on
    the run (step 0) and replace its ``checkpoint/best.pt`` with one whose config carries the
    decision, so ``ablate predict`` applies it too. Returns ``cfg`` with it."""
    model, device, autocast = load_model(cfg, checkpoint["model"], data.scheme, data.modalities)
    decision = decide_on_validation(model, cfg, data, device, autocast, progress)
    cfg = with_postprocess(cfg, decision.config)
    decided = save_checkpoint(
        checkpoint | {"config": cfg.model_dump(mode="json")}, folder / BEST_MODEL_FILE
    )
    client.log_artifact(run_id, str(decided), "checkpoint")
    tracking.log_metrics(client, run_id, decision.metrics(), TEST_STEP)
    return cfg


def evaluate_weights(
    cfg: TrialConfig,
    weights: dict[str, torch.Tensor],
    cases: TestCases,
    prefix: str,
    progress: Progress | None = None,
) -> TestResult:
    """Build the trial's model on the best device here, load ``weights`` and test ``cases``."""
    model, device, autocast = load_model(cfg, weights, cases.scheme, cases.modalities)
    return evaluate_cases(model, cfg, cases, device, autocast, prefix=prefix, progress=progress)


def load_model(
    cfg: TrialConfig,
    weights: dict[str, torch.Tensor],
    scheme: LabelScheme,
    modalities: Sequence[str],
) -> tuple[nn.Module, torch.device, Callable[[], AbstractContextManager]]:
    """The trial's model with ``weights`` on the best device here, that device and the
    trial's autocast there; InputError when the weights do not fit ``scheme``'s outputs."""
    device = resolve_device("auto")
    precision = effective_precision(cfg.train.precision, device)
    channels = output_channels(cfg.loss, scheme)
    model = build_model(cfg.model, len(modalities), channels).to(device)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:  # torch's first line is a header ending in ':'
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines if "size mismatch" in line), lines[-1])
        kind = scheme_kind(scheme)
        raise InputError(
            f"the checkpoint does not fit a {cfg.model.kind} with {channels} outputs for the "
            f"{kind} labels of the test data: the run was trained on other labels ({detail})"
        ) from None
    autocast = lambda: autocast_context(precision, device)  # noqa: E731
    return model, device, autocast


class CaseSource:
    """The test cases of a run: its split's own (``root`` None) or every labelled case of
    ``root``; prepared data is reused across the runs that read the same data config."""

    def __init__(self, root: Path | None, progress: Progress | None = None) -> None:
        self.root = root
        self.progress = progress
        self.left_out: list[str] = []  # cases of ``root`` that could not be prepared
        self._prepared: dict[str, Any] = {}

    def cases(self, cfg: TrialConfig, split_hash: str | None) -> TestCases:
        """The cases to evaluate ``cfg``'s run on; ``split_hash`` is the run's tag, if any."""
        if self.root is None:
            return self._split_cases(cfg, split_hash)
        return self._external_cases(cfg)

    def _split_cases(self, cfg: TrialConfig, split_hash: str | None) -> TestCases:
        return split_test_cases(cfg, self.split_data(cfg, split_hash))

    def split_data(self, cfg: TrialConfig, split_hash: str | None) -> TrialData:
        """The run's own data and split (prepared once per data config); ``split_hash`` is
        the run's tag, if any."""
        key = json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)
        data = self._prepared.get(key) or prepare_trial_data(cfg.data)
        self._prepared[key] = data
        if split_hash and data.split.hash != split_hash:
            raise InputError(
                f"the data gives split {data.split.hash}, the run trained on split {split_hash} "
                "(the dataset changed?): its test cases cannot be rebuilt"
            )
        return data

    def _external_cases(self, cfg: TrialConfig) -> TestCases:
        assert self.root is not None
        if not self.root.is_dir():
            raise InputError("test data directory not found", self.root)
        norm = cfg.data.preprocess.normalization
        if norm.kind == "foreground" and norm.stats is None:  # never from the test cases' labels
            raise InputError(
                "the run's 'foreground' normalisation carries no training-set statistics (a "
                "model trained before ablate stored them); they cannot be taken from the test "
                "data's labels, so retrain it to test it on other data",
                where="data.preprocess.normalization.stats",
            )
        resample = cfg.data.preprocess.resample
        if resample.kind == "target_spacing" and resample.spacing is None:  # training's grid
            raise InputError(
                "the run's 'target_spacing' resampling carries no spacing (training fills it "
                "in), so the grid it trained on is unknown; the test data's own spacing is not "
                "that grid",
                where="data.preprocess.resample.spacing",
            )
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_root()
        key = json.dumps([cfg.data.preprocess.model_dump(mode="json"), cfg.data.label_scheme])
        dataset = self._prepared.get(key)
        if dataset is None:
            counter = preparation_counter(self.root, self.progress) if self.progress else None
            dataset = ensure_prepared(
                self.root, cache, cfg.data.preprocess, cfg.data.label_scheme, counter
            )
            self._note_left_out(dataset.left_out)
        self._prepared[key] = dataset
        labelled = [c for c in dataset.case_ids if dataset.entry(c).has_label]
        if not labelled:
            raise InputError("no labelled case to test on", self.root)
        return TestCases(dataset, labelled, dataset.scheme, tuple(cfg.data.modalities))

    def _note_left_out(self, messages: list[str]) -> None:
        """Name each newly left-out case once (several preprocessings may skip the same)."""
        new = [m for m in messages if m not in self.left_out]
        self.left_out += new
        if new and self.progress:
            self.progress(f"{len(new)} case(s) of {self.root} left out of the test:")
            for message in new:
                self.progress(f"  {message}")
