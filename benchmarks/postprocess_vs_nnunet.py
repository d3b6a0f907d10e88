"""ablate's ``decide_postprocess`` side by side with nnU-Net v2's ``determine_postprocessing``.

Usage (from the repository root, in a Python that has ``nnunetv2``)::

    python -m venv --system-site-packages /tmp/nnvenv
    /tmp/nnvenv/bin/pip install --no-deps nnunetv2 batchgenerators batchgeneratorsv2 acvl_utils
    /tmp/nnvenv/bin/pip install SimpleITK scikit-image yacs pandas scikit-learn tqdm \\
        dicom2nifti graphviz imagecodecs tifffile blosc2 connected-components-3d
    /tmp/nnvenv/bin/python benchmarks/postprocess_vs_nnunet.py [--datasets N] [--binary M] \\
        [--seed S] [--spawn-pools] [--tie-demo]

Generates ``--datasets`` random BraTS-label datasets and ``--binary`` random binary ones
(``benchmarks/postprocess_cases.py``: 6-10 cases of about 32^3 voxels, a mix drawn per dataset
so that every step is applied, and refused, many times) and decides each twice: by
``decide_postprocess`` on the arrays, and by nnU-Net's ``determine_postprocessing`` on them
written as NIfTI into the folders it reads (a minimal plans dict with ``NibabelIO``; a
dataset.json with BraTS as nnU-Net's regions ``wt`` (1, 2, 3), ``tc`` (1, 3), ``et`` (3,), binary
as one label). Compared per dataset: the steps applied (nnU-Net's from its
``postprocessing.pkl``), the Dice each step was judged on (``Step.before/after`` against the
means of the summary files nnU-Net read) and nnU-Net's post-processed maps against
``postprocess_labels`` with nnU-Net's steps. Prints every mismatch, a summary (how often each
step was applied, agreements, wall-clock times); exits 1 on any mismatch (a decision, a step
Dice more than 1e-9 apart, a map), 0 otherwise. Where a region is empty in both maps ablate's
Dice is 1 and nnU-Net's NaN (left out of the mean): every generated reference holds every
region, so both means are over the same cases.

nnU-Net evaluates and post-processes in ``multiprocessing.get_context("spawn")`` pools (~25 s a
BraTS dataset on 2 CPUs, each pool importing torch). By default they are replaced by an
in-process ``starmap`` inside nnU-Net's two modules (its code, files and decision logic are
otherwise untouched; ``num_processes=1``); ``--spawn-pools`` runs it unpatched (few datasets).

Components tied for the largest size are all kept on both sides: nnU-Net's (``acvl_utils``'
``remove_all_but_largest_component``) and ablate's ``keep_largest_component``, which kept only
the first in scan order until this comparison found it (``--datasets 4 --binary 2 --seed 7``:
a found second lesion's core exactly as large as the main one's). The summary still counts the
masks with a tied largest component on ablate's decision path (informational), and
``--tie-demo`` runs the minimal reproducer (one binary case, two one-voxel components: Dice
0.6667 -> 0.6667, not applied, on both sides).

Needs: ``nnunetv2`` (with ``acvl_utils``, ``batchgenerators``, ``scikit-image``) in the running
Python, nibabel, scipy; CPU only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import pickle
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from a checkout

from benchmarks.postprocess_cases import FULL, Case, draw_dataset  # noqa: E402
from trainables.config.postprocess import PostprocessConfig  # noqa: E402
from trainables.data.labels import INTERNAL_BINARY, INTERNAL_BRATS, LabelScheme  # noqa: E402
from trainables.engine.postprocess import keep_largest_component, postprocess_labels  # noqa: E402
from trainables.engine.postprocess_decide import FOREGROUND, Step, decide_postprocess  # noqa: E402

DICE_TOLERANCE = 1e-9
USAGE = __doc__.split("::\n\n")[1].split("\n\n")[0]  # the venv commands
BRATS_LABELS = {"background": 0, "wt": [1, 2, 3], "tc": [1, 3], "et": [3]}
# regions_class_order: region i's channel writes this label (wt -> oedema, tc -> necrosis,
# et -> enhancing); nnU-Net only checks its length here, it never converts probabilities.
BRATS_REGIONS_CLASS_ORDER = [2, 1, 3]
BINARY_LABELS = {"background": 0, "lesion": 1}
PLANS = {"image_reader_writer": "NibabelIO", "label_manager": "LabelManager"}
SETUPS = {"brats": (INTERNAL_BRATS, BRATS_LABELS), "binary": (INTERNAL_BINARY, BINARY_LABELS)}


def _in_process_pool(processes: int | None = None) -> contextlib.AbstractContextManager:
    """Stands in for ``multiprocessing.Pool`` in nnU-Net's modules: ``starmap`` in-process."""
    del processes
    return contextlib.nullcontext(types.SimpleNamespace(starmap=_starmap))


def _starmap(fn, iterable) -> list:  # multiprocessing.Pool.starmap: in order, a list
    return list(itertools.starmap(fn, iterable))


@dataclass
class NnUNet:
    """nnU-Net's modules, the summaries its decision read (in order), and its version."""

    rcc: types.ModuleType
    version: str
    summaries: list[dict] = field(default_factory=list)

    def determine(self, pred_dir: Path, ref_dir: Path, labels: dict) -> tuple[list, list[dict]]:
        """``determine_postprocessing`` on the folders; its printed lines are swallowed."""
        dataset_json = {"labels": labels, "file_ending": ".nii.gz", "channel_names": {"0": "MR"}}
        dataset_json["numTraining"] = len(list(ref_dir.glob("*.nii.gz")))
        if labels is BRATS_LABELS:
            dataset_json["regions_class_order"] = BRATS_REGIONS_CLASS_ORDER
        self.summaries.clear()
        with contextlib.redirect_stdout(io.StringIO()):
            returned = self.rcc.determine_postprocessing(
                str(pred_dir), str(ref_dir), dict(PLANS), dataset_json, num_processes=1
            )
        with open(pred_dir / "postprocessing.pkl", "rb") as f:
            fns, kwargs = pickle.load(f)
        assert [f.__name__ for f in fns] == [f.__name__ for f in returned[0]]
        return fns, kwargs


def load_nnunet(spawn_pools: bool) -> NnUNet:
    """Import nnU-Net v2 (exit with the venv command when it is missing)."""
    scratch = Path(tempfile.gettempdir()) / "nnunet_paths_unused"
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ.setdefault(var, str(scratch / var))  # silences its "not defined" warnings
    try:
        import nnunetv2.evaluation.evaluate_predictions as ep
        import nnunetv2.postprocessing.remove_connected_components as rcc
    except ImportError as exc:
        sys.exit(
            f"nnunetv2 is not importable in {sys.executable} ({exc}).\nMake a scratch venv and "
            f"run this script with its Python:\n\n{USAGE}"
        )
    nn = NnUNet(rcc, version("nnunetv2"))
    if not spawn_pools:
        shim = types.SimpleNamespace(
            get_context=lambda method: types.SimpleNamespace(Pool=_in_process_pool)
        )
        rcc.multiprocessing = shim
        ep.multiprocessing = shim
    load = rcc.load_summary_json

    def recording_load(filename: str) -> dict:  # an observer: returns what nnU-Net reads
        result = load(filename)
        nn.summaries.append(result)
        return result

    rcc.load_summary_json = recording_load
    return nn


def nnunet_steps(kwargs: list[dict], scheme: LabelScheme) -> tuple[bool, tuple[str, ...]]:
    """(foreground step applied, regions applied) from postprocessing.pkl's kwargs: the
    foreground step is called with the list of foreground labels, a region's with its tuple
    (a label's with an int, which a one-label dataset never gets)."""
    by_codes = {tuple(sorted(c)): name for name, c in scheme.regions.items()}
    fg, regions = False, []
    for i, kw in enumerate(kwargs):
        what = kw["labels_or_regions"]
        if isinstance(what, list):
            assert i == 0 and sorted(int(c) for c in what) == list(range(1, scheme.num_classes))
            fg = True
        else:
            codes = (int(what),) if np.isscalar(what) else tuple(sorted(int(c) for c in what))
            regions.append(by_codes[codes])
    return fg, tuple(regions)


def nnunet_step_dice(summaries: list[dict], scheme: LabelScheme) -> list[tuple[float, float]]:
    """(before, after) per step tried, as ablate's ``Decision.steps``: the foreground mean for
    the foreground step, the region's mean for a region's, from the summaries in the order
    ``determine_postprocessing`` loads them (2 for the foreground step, 2 per region, 2 final)."""
    out = [(summaries[0]["foreground_mean"]["Dice"], summaries[1]["foreground_mean"]["Dice"])]
    if len(scheme.regions) > 1:
        for i, codes in enumerate(scheme.regions.values()):
            before, after = summaries[2 + 2 * i], summaries[3 + 2 * i]
            out.append((before["mean"][codes]["Dice"], after["mean"][codes]["Dice"]))
    return out


@dataclass
class Outcome:
    kind: str
    index: int
    ablate: tuple[bool, tuple[str, ...]]
    nnunet: tuple[bool, tuple[str, ...]]
    ablate_dice: list[tuple[float, float]]
    nnunet_dice: list[tuple[float, float]]
    names: list[str]
    maps_same: int  # cases whose nnU-Net output equals ablate's postprocess with nnU-Net's steps
    cases: int
    ties: int  # masks on ablate's decision path whose largest component is tied in size
    defensive: bool  # nnU-Net: foreground mean up, a region down, step refused
    seconds_ablate: float
    seconds_nnunet: float

    @property
    def dice_gap(self) -> float:
        pairs = zip(self.ablate_dice, self.nnunet_dice, strict=True)
        return max(abs(a - b) for pa, pn in pairs for a, b in zip(pa, pn, strict=True))

    @property
    def agree(self) -> bool:
        """Same decision, step Dice within tolerance, every post-processed map equal."""
        same_maps = self.maps_same == self.cases
        return self.ablate == self.nnunet and self.dice_gap <= DICE_TOLERANCE and same_maps


def tied_largest(mask: np.ndarray) -> bool:
    """More than one component of the largest size (both sides keep them all)."""
    components, count = ndimage.label(mask, FULL)
    if count <= 1:
        return False
    sizes = np.bincount(components.ravel())[1:]
    return int((sizes == sizes.max()).sum()) > 1


def count_ties(cases: list[Case], steps: Sequence[Step], scheme: LabelScheme) -> int:
    """Tied masks among those ablate's decision cut (each step's input, along its path)."""
    maps, ties = [pred for pred, _ in cases], 0
    for step in steps:
        fg = step.name == FOREGROUND
        codes = range(1, scheme.num_classes) if fg else scheme.regions[step.name]
        ties += sum(tied_largest(np.isin(m, codes)) for m in maps)
        if step.applied:
            maps = [keep_largest_component(m, codes) for m in maps]
    return ties


def compare(kind: str, index: int, cases: list[Case], nn: NnUNet, work: Path) -> Outcome:
    """Decide ``cases`` on both sides and compare decisions, step Dice and maps."""
    scheme, labels = SETUPS[kind]
    start = time.perf_counter()
    decision = decide_postprocess(cases, PostprocessConfig(), scheme)
    seconds_ablate = time.perf_counter() - start

    folder = work / f"{kind}_{index:04d}"
    pred_dir, ref_dir = folder / "pred", folder / "ref"
    pred_dir.mkdir(parents=True)
    ref_dir.mkdir()
    for i, (pred, ref) in enumerate(cases):
        nib.save(nib.Nifti1Image(pred, np.eye(4)), pred_dir / f"case_{i:03d}.nii.gz")
        nib.save(nib.Nifti1Image(ref, np.eye(4)), ref_dir / f"case_{i:03d}.nii.gz")
    start = time.perf_counter()
    _, kwargs = nn.determine(pred_dir, ref_dir, labels)
    seconds_nnunet = time.perf_counter() - start
    nnunet = nnunet_steps(kwargs, scheme)

    # nnU-Net's post-processed maps (read back in the files' own axis order) against ablate's
    # post-processing with nnU-Net's steps
    chosen = PostprocessConfig(largest_component=nnunet[0], largest_component_regions=nnunet[1])
    maps_same = 0
    for i, (pred, _) in enumerate(cases):
        theirs = np.asarray(nib.load(pred_dir / "postprocessed" / f"case_{i:03d}.nii.gz").dataobj)
        maps_same += int(np.array_equal(theirs, postprocess_labels(pred, chosen, scheme)))
    shutil.rmtree(folder)

    first = [s["foreground_mean"]["Dice"] for s in nn.summaries[:2]]
    return Outcome(
        kind=kind,
        index=index,
        ablate=(bool(decision.config.largest_component), decision.config.largest_component_regions),
        nnunet=nnunet,
        ablate_dice=[(s.before, s.after) for s in decision.steps],
        nnunet_dice=nnunet_step_dice(nn.summaries, scheme),
        names=[s.name for s in decision.steps],
        maps_same=maps_same,
        cases=len(cases),
        ties=count_ties(cases, decision.steps, scheme),
        defensive=first[1] > first[0] and not nnunet[0],
        seconds_ablate=seconds_ablate,
        seconds_nnunet=seconds_nnunet,
    )


def steps_text(d: tuple[bool, tuple[str, ...]]) -> str:
    return "+".join((["foreground"] if d[0] else []) + list(d[1])) or "none"


def describe(o: Outcome) -> str:
    lines = [
        f"MISMATCH {o.kind} dataset {o.index}: ablate {steps_text(o.ablate)}, nnU-Net "
        f"{steps_text(o.nnunet)}; step Dice max |difference| {o.dice_gap:.3g}; post-processed "
        f"maps equal in {o.maps_same}/{o.cases} cases; tied largest components on the path: "
        f"{o.ties}"
    ]
    for name, (ab, aa), (nb, na) in zip(o.names, o.ablate_dice, o.nnunet_dice, strict=True):
        lines.append(f"    {name:>10}: ablate {ab:.6f} -> {aa:.6f}   nnU-Net {nb:.6f} -> {na:.6f}")
    return "\n".join(lines)


def summarize(kind: str, outcomes: list[Outcome], scheme: LabelScheme) -> None:
    if not outcomes:
        return
    n, cases = len(outcomes), sum(o.cases for o in outcomes)
    names = [FOREGROUND, *(scheme.region_names if len(scheme.regions) > 1 else ())]

    def applied(decision: tuple[bool, tuple[str, ...]], name: str) -> bool:
        return decision[0] if name == FOREGROUND else name in decision[1]

    print(f"\n{kind}: {n} datasets, {cases} cases")
    print(f"  {'step':<12}{'nnU-Net applied':>17}{'ablate applied':>16}{'agree':>10}")
    for name in names:
        nn_count = sum(applied(o.nnunet, name) for o in outcomes)
        ab_count = sum(applied(o.ablate, name) for o in outcomes)
        agree = sum(applied(o.nnunet, name) == applied(o.ablate, name) for o in outcomes)
        print(f"  {name:<12}{nn_count:>11}/{n:<5}{ab_count:>10}/{n:<5}{agree:>5}/{n}")
    decisions = sum(o.ablate == o.nnunet for o in outcomes)
    distinct = len({o.nnunet for o in outcomes})
    print(f"  whole decision agrees: {decisions}/{n}; {distinct} distinct decisions")
    defensive = sum(o.defensive for o in outcomes)
    print(f"  defensive refusals (foreground mean up, a region down): {defensive}")
    values = sum(2 * len(o.ablate_dice) for o in outcomes)
    print(
        f"  step Dice, ablate vs nnU-Net: max |difference| {max(o.dice_gap for o in outcomes):.3g} "
        f"over {values} values"
    )
    margins = [abs(a - b) for o in outcomes for (b, a) in o.ablate_dice if a != b]
    if margins:
        print(f"  smallest nonzero |after - before| a decision hinged on: {min(margins):.3g}")
    print(
        f"  post-processed maps equal (nnU-Net's files vs ablate with nnU-Net's steps): "
        f"{sum(o.maps_same for o in outcomes)}/{cases} cases"
    )
    ties = [o.ties for o in outcomes]
    print(
        f"  masks with a tied largest component on the decision path (all kept on both sides): "
        f"{sum(ties)}, in {sum(t > 0 for t in ties)} datasets"
    )
    t_ab = sum(o.seconds_ablate for o in outcomes)
    t_nn = sum(o.seconds_nnunet for o in outcomes)
    print(
        f"  wall clock: ablate decide_postprocess {t_ab:.2f} s ({1000 * t_ab / n:.1f} ms a "
        f"dataset), nnU-Net determine_postprocessing {t_nn:.1f} s ({1000 * t_nn / n:.0f} ms "
        f"a dataset, file I/O included)"
    )


def tie_demo(nn: NnUNet, work: Path) -> Outcome:
    """The largest component tied in size, minimal: both sides keep both components."""
    ref = np.zeros((5, 6, 7), np.uint8)
    ref[1, 1, 1] = 1
    pred = ref.copy()
    pred[3, 4, 5] = 1  # a false positive exactly as large as the true positive
    o = compare("binary", 0, [(pred, ref)], nn, work / "tie_demo")
    print(
        "\ntie demo (binary, one case, 5x6x7): reference voxel (1,1,1); prediction voxels "
        "(1,1,1) and (3,4,5), two components of one voxel each, both kept on both sides"
    )
    line = "  {}: Dice {:.4f} -> {:.4f}, {}applied".format
    print(line("ablate ", *o.ablate_dice[0], "" if o.ablate[0] else "not "))
    print(line("nnU-Net", *o.nnunet_dice[0], "" if o.nnunet[0] else "not "))
    print(f"  {'agree' if o.agree else describe(o)}")
    return o


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=int, default=200, help="BraTS-label datasets")
    parser.add_argument("--binary", type=int, default=100, help="binary-label datasets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spawn-pools", action="store_true", help="nnU-Net's own (slow)")
    parser.add_argument("--tie-demo", action="store_true", help="also the tie reproducer")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    args = parser.parse_args(argv)

    nn = load_nnunet(args.spawn_pools)
    print(
        f"nnunetv2 {nn.version} ({'spawn pools' if args.spawn_pools else 'in-process pools'}), "
        f"seed {args.seed}: {args.datasets} BraTS-label + {args.binary} binary datasets"
    )
    rng = np.random.default_rng(args.seed)
    outcomes: dict[str, list[Outcome]] = {"brats": [], "binary": []}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        jobs = [("brats", i) for i in range(args.datasets)]
        jobs += [("binary", i) for i in range(args.binary)]
        for kind, i in jobs:
            outcome = compare(kind, i, draw_dataset(rng, kind), nn, work)
            outcomes[kind].append(outcome)
            if not outcome.agree:
                print(describe(outcome))
        summarize("BraTS labels (regions wt, tc, et)", outcomes["brats"], INTERNAL_BRATS)
        summarize("binary labels (fg)", outcomes["binary"], INTERNAL_BINARY)
        demo = [tie_demo(nn, work)] if args.tie_demo else []
    everything = outcomes["brats"] + outcomes["binary"]
    decisions = sum(o.ablate == o.nnunet for o in everything)
    agree = sum(o.agree for o in everything + demo)
    print(
        f"\nall: decisions agree in {decisions}/{len(everything)} datasets; no mismatch of any "
        f"kind in {agree}/{len(everything) + len(demo)} comparisons"
        + (" (the tie demo included)" if demo else "")
    )
    return 0 if agree == len(everything) + len(demo) else 1


if __name__ == "__main__":
    sys.exit(main())
