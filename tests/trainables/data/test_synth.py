"""Tests for the synthetic BraTS-2021-layout generator: content, learnability, files, inputs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt, uniform_filter

from trainables.data.labels import INTERNAL_BRATS, get_scheme, regions_from_labels, to_internal
from trainables.data.synth import MARKER, synthesize_case, synthesize_dataset
from trainables.data.types import BRATS_MODALITIES
from trainables.errors import InputError

SMALL = (24, 24, 16)


def _case(
    seed: int, shape: tuple[int, int, int] = (32, 32, 24), tumour: bool = True
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    return synthesize_case(f"c{seed}", shape, np.random.default_rng(seed), tumour=tumour)


def _regions(seg: np.ndarray) -> np.ndarray:
    """(3, *S) bool WT, TC, ET from a BraTS 2021 seg."""
    return regions_from_labels(to_internal(seg, get_scheme("brats2021")), INTERNAL_BRATS)


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine, img.get_data_dtype()


# --- content ----------------------------------------------------------------------------------


def test_case_arrays_head_and_labels() -> None:
    images, seg = _case(0)
    assert set(images) == set(BRATS_MODALITIES)
    assert seg.dtype == np.uint8 and seg.shape == (32, 32, 24)
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and (seg == 2).any()
    head = images["t1"] > 0
    for name, image in images.items():
        assert image.dtype == np.float32 and image.shape == (32, 32, 24), name
        assert np.array_equal(image > 0, head), f"{name}: non-zero mask differs from the head"
        assert np.array_equal(image, np.rint(image)) and image.max() < 32768
    assert not head[0].any() and not head[:, :, -1].any()  # background around the head
    assert 0.15 < head.mean() < 0.6
    assert not (seg[~head]).any()  # tumour inside the head


def test_modality_contrasts_look_like_mri() -> None:
    images, seg = _case(2, (48, 48, 32))
    head = images["t1"] > 0
    brain = (distance_transform_edt(head) > 5) & (seg == 0)  # deep in the head: normal brain
    ref = {m: float(np.median(images[m][brain])) for m in BRATS_MODALITIES}

    def rel(m: str, code: int) -> float:
        return float(images[m][seg == code].mean()) / ref[m]

    assert rel("flair", 2) > 1.5 and rel("t2", 2) > 1.3 and rel("t1", 2) < 1  # oedema
    assert rel("t1ce", 4) > 1.3 and rel("t1", 4) < 1  # enhancing: bright on T1ce only
    assert rel("t1ce", 1) < 0.85 and rel("t1", 1) < 0.7 and rel("t2", 1) > 1.5  # necrosis
    assert rel("t1ce", 4) > 1.5 * rel("t1ce", 1)
    # Normal tissue: WM bright on T1 and dark on T2, CSF and GM the other way round.
    assert np.corrcoef(images["t1"][brain], images["t2"][brain])[0, 1] < -0.4


def test_tumour_free_case_has_empty_seg_and_a_head() -> None:
    images, seg = _case(3, tumour=False)
    assert not seg.any()
    assert (images["flair"] > 0).mean() > 0.15


def test_regions_are_nested_like_an_onion() -> None:
    """WT ⊇ TC ⊇ ET, and spatially: necrosis deepest, then the enhancing rim, then oedema."""
    ordered = 0
    for seed in range(6):
        _, seg = _case(seed, (48, 48, 32))
        wt, tc, et = _regions(seg)
        assert wt.any() and (tc <= wt).all() and (et <= tc).all()
        depth = distance_transform_edt(wt)  # voxels from the outside of the whole tumour
        means = [depth[seg == code].mean() for code in (1, 4, 2) if (seg == code).sum() > 5]
        if len(means) == 3:
            assert means[0] > means[1] > means[2], f"seed {seed}: depths {means}"
            ordered += 1
    assert ordered >= 2


def test_tumour_size_and_position_vary() -> None:
    volumes, centres = [], []
    for seed in range(8):
        _, seg = _case(seed)
        where = np.argwhere(seg > 0)
        volumes.append(len(where))
        centres.append(where.mean(axis=0))
    assert np.std(volumes) / np.mean(volumes) > 0.3
    assert (np.std(centres, axis=0) > 1.0).all()  # voxels, per axis


def _features(images: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 9): intensities over their head median, their 3x3x3 local means, and a bias term.

    The median, unlike a z-score, barely moves with the tumour's size, so a threshold learnt
    on two cases transfers to a third (the scanner gain differs per case and modality)."""
    head = images["t1"] > 0
    chans = []
    for name in BRATS_MODALITIES:
        image = images[name]
        scaled = np.where(head, image / np.median(image[head]) - 1, 0)
        chans += [scaled, uniform_filter(scaled, 3)]
    return np.stack([c.ravel() for c in chans] + [np.ones(head.size)], axis=1)


def _fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 25) -> np.ndarray:
    """Ridge-regularised logistic regression by Newton's method; returns weights (F,)."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(x @ w, -30, 30)))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(x.shape[1])
        w -= np.linalg.solve(hessian, x.T @ (p - y) + 1e-3 * w)
    return w


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    return 2 * float((pred & ref).sum()) / max(float(pred.sum() + ref.sum()), 1.0)


def test_regions_are_learnable_by_a_per_voxel_linear_classifier() -> None:
    """The point of the generator: a tiny model trained on two cases segments a third."""
    cases = [_case(seed, (48, 48, 32)) for seed in (0, 1, 2)]
    x_train = np.concatenate([_features(images) for images, _ in cases[:2]])
    x_test = _features(cases[2][0])
    train_regions = np.concatenate([_regions(seg).reshape(3, -1) for _, seg in cases[:2]], axis=1)
    test_regions = _regions(cases[2][1]).reshape(3, -1)
    assert test_regions[2].sum() > 100  # the held-out case has an enhancing tumour
    dice = {}
    for r, name in ((0, "wt"), (2, "et")):  # TC = dark NCR + bright ET: not one linear cut
        w = _fit_logistic(x_train, train_regions[r].astype(float))
        dice[name] = _dice(x_test @ w > 0, test_regions[r])
    assert dice["wt"] > 0.8 and dice["et"] > 0.6, dice


def test_one_default_size_case_is_fast() -> None:
    start = time.perf_counter()
    _case(0, (64, 64, 48))
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{elapsed:.2f} s for one 64x64x48 case"  # ~0.2 s; slack for shared CPUs


# --- files ------------------------------------------------------------------------------------


def test_dataset_files_load_with_shape_affine_and_dtype(tmp_path: Path) -> None:
    calls = []
    dirs = synthesize_dataset(
        tmp_path / "out", 2, seed=1, shape=SMALL, spacing=(1.0, 1.2, 2.0),
        progress=lambda done, total, case_id: calls.append((done, total, case_id)),
    )  # fmt: skip
    assert [d.name for d in dirs] == ["Synth_0000", "Synth_0001"]
    assert calls == [(1, 2, "Synth_0000"), (2, 2, "Synth_0001")]
    for d in dirs:
        seg, seg_affine, seg_dtype = _load(d / f"{d.name}_seg.nii.gz")
        assert seg.shape == SMALL and seg_dtype == np.uint8
        assert np.allclose(seg_affine, np.diag([1.0, 1.2, 2.0, 1.0]))
        for name in BRATS_MODALITIES:
            image, affine, dtype = _load(d / f"{d.name}_{name}.nii.gz")
            assert image.shape == SMALL and dtype == np.int16 and (image > 0).any()
            assert np.array_equal(affine, seg_affine)
    meta = json.loads((tmp_path / "out" / MARKER).read_text())
    assert meta["seed"] == 1 and meta["shape"] == list(SMALL) and meta["cases"] == 2
    assert meta["complete"] is True


def _arrays(case_dir: Path) -> list[np.ndarray]:
    names = [*BRATS_MODALITIES, "seg"]
    return [_load(case_dir / f"{case_dir.name}_{n}.nii.gz")[0] for n in names]


def test_same_seed_gives_identical_arrays_and_prefixes(tmp_path: Path) -> None:
    short = synthesize_dataset(tmp_path / "a", 2, seed=5, shape=SMALL)
    long = synthesize_dataset(tmp_path / "b", 3, seed=5, shape=SMALL)
    other = synthesize_dataset(tmp_path / "c", 1, seed=6, shape=SMALL)
    for a, b in zip(short, long, strict=False):
        for x, y in zip(_arrays(a), _arrays(b), strict=True):
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert _arrays(other[0])[0].tobytes() != _arrays(short[0])[0].tobytes()
    assert _arrays(long[1])[0].tobytes() != _arrays(long[2])[0].tobytes()


def test_tumour_free_fraction(tmp_path: Path) -> None:
    free = synthesize_dataset(tmp_path / "free", 2, shape=SMALL, tumour_free_fraction=1.0)
    assert all(not _arrays(d)[-1].any() for d in free)
    half = synthesize_dataset(tmp_path / "half", 4, seed=3, shape=SMALL, tumour_free_fraction=0.5)
    assert sum(not _arrays(d)[-1].any() for d in half) == 2


def test_regenerating_over_a_synth_output_replaces_it(tmp_path: Path) -> None:
    synthesize_dataset(tmp_path, 3, shape=SMALL)
    dirs = synthesize_dataset(tmp_path, 1, seed=2, shape=SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MARKER, "Synth_0000"])
    assert dirs == [tmp_path / "Synth_0000"]
    assert json.loads((tmp_path / MARKER).read_text())["case_ids"] == ["Synth_0000"]


def test_refuses_a_non_empty_directory_without_marker(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match=r"not empty and has no synth\.json") as err:
        synthesize_dataset(tmp_path, 1, shape=SMALL)
    assert str(tmp_path) in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_refuses_a_foreign_marker(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_text('{"generator": "someone else"}')
    with pytest.raises(InputError, match="not a synth marker"):
        synthesize_dataset(tmp_path, 1, shape=SMALL)


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"shape": (24, 15, 16)}, "shape: every dimension must be >= 16 voxels"),
        ({"shape": (24, 24)}, "shape: must be three integers"),
        ({"cases": 0}, "cases: must be an integer >= 1"),
        ({"seed": -1}, "seed: must be an integer >= 0"),
        ({"tumour_free_fraction": 1.5}, "tumour_free_fraction: must be in"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing: must be three positive"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict, text: str) -> None:
    args = {"cases": 1, "shape": SMALL} | kwargs
    with pytest.raises(InputError, match=text):
        synthesize_dataset(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_synthesize_case_rejects_small_shape() -> None:
    with pytest.raises(InputError, match="synth case x: shape: every dimension"):
        synthesize_case("x", (8, 32, 32), np.random.default_rng(0))


def test_parallel_workers_write_the_same_cases_in_order(tmp_path: Path) -> None:
    calls = []
    serial = synthesize_dataset(tmp_path / "serial", 3, seed=4, shape=SMALL)
    parallel = synthesize_dataset(
        tmp_path / "parallel", 3, seed=4, shape=SMALL, workers=2,
        progress=lambda done, total, case_id: calls.append((done, total)),
    )  # fmt: skip
    assert [d.name for d in parallel] == [d.name for d in serial]
    assert calls == [(1, 3), (2, 3), (3, 3)]  # as cases finish, in any case order
    for a, b in zip(serial, parallel, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b), strict=True))
    meta = json.loads((tmp_path / "parallel" / MARKER).read_text())
    assert meta["complete"] is True


def test_synthesis_workers_only_for_large_cases() -> None:
    from trainables.engine.data import synthesis_workers

    assert synthesis_workers(10, (48, 48, 40)) == 1  # a process start costs more than a case
    assert synthesis_workers(4, (240, 240, 155)) == min(4, max(1, (os.cpu_count() or 2) // 2))
    assert synthesis_workers(1, (240, 240, 155)) == 1
