"""Prepared cache: round trip, bad cases, refusals, reuse, invalidation, concurrency, real data."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.trainables.data.nifti_factory import (
    brats_case,
    ct_dataset,
    fingerprint,
    save_nifti,
    truncate,
)
from trainables.data.cache import (
    FORMAT_VERSION,
    PreparedDataset,
    default_cache_root,
    ensure_prepared,
    prepare,
    safe_name,
)
from trainables.data.labels import get_scheme
from trainables.data.layouts import discover
from trainables.data.nifti import load_case, load_label
from trainables.data.preprocess import (
    CTWindowNormalization,
    NoNormalization,
    PreprocessConfig,
    ZScoreNormalization,
    foreground_sample,
    preprocess,
)
from trainables.errors import CaseError, InputError

SHAPE = (10, 9, 8)
CFG = PreprocessConfig()
# float16 keeps 11 significant bits: relative rounding error <= 2**-11.
F16_RTOL, F16_ATOL = 2**-11, 1e-6


def padded_case(root: Path, case_id: str, seed: int = 0) -> None:
    """A BraTS-2021 case whose one-voxel outer shell is zero in every modality (to be cropped)."""
    written = brats_case(root, case_id, shape=SHAPE, seed=seed)
    for mod, data in written.images.items():
        data = data + 1  # no accidental zeros inside the box
        data[0], data[-1], data[:, 0], data[:, :, -1] = 0, 0, 0, 0
        save_nifti(written.files[mod], data.astype(np.int16))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    padded_case(root, "case_a", seed=1)
    padded_case(root, "case_b", seed=2)
    return root


def records(root: Path) -> dict:
    return {r.case_id: r for r in discover(root).cases}


def mtimes(cache_dir: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(cache_dir.rglob("*")) if p.is_file()}


# ---- prepare + load ---------------------------------------------------------------------------


def test_round_trip_matches_preprocess_of_load_case(source: Path, tmp_path: Path) -> None:
    before = fingerprint(source)
    manifest = prepare(source, tmp_path / "cache", CFG)
    assert fingerprint(source) == before  # nothing written into the source directory
    assert manifest.format_version == FORMAT_VERSION and manifest.layout == "brats2021"
    assert manifest.source == str(source.resolve()) and manifest.fingerprint == CFG.fingerprint()
    assert manifest.internal_scheme == "internal" and manifest.skipped == ()
    dataset = PreparedDataset(tmp_path / "cache")
    assert dataset.case_ids == ("case_a", "case_b")
    assert dataset.scheme.region_names == ("wt", "tc", "et")
    for case_id, record in records(source).items():
        ref = preprocess(load_case(record), CFG)
        got = dataset.load(case_id)
        assert isinstance(got.image, np.memmap) and got.image.dtype == np.float16
        assert got.image.shape == (4, 8, 8, 7) and got.bbox == ((1, 9), (1, 9), (0, 7))
        np.testing.assert_allclose(got.image, ref.image, rtol=F16_RTOL, atol=F16_ATOL)
        np.testing.assert_array_equal(got.label, ref.label)
        assert got.modalities == ("t1", "t1ce", "t2", "flair") == dataset.modalities(case_id)
        np.testing.assert_array_equal(got.affine, ref.affine)
        assert got.spacing == ref.spacing
        entry = dataset.entry(case_id)
        assert {Path(s.path).name for s in entry.sources} == {
            p.name for p in record.images.values()
        } | {record.label.name}
        assert all(s.size == Path(s.path).stat().st_size for s in entry.sources)


def test_manifest_json_is_written_last_and_readable(source: Path, tmp_path: Path) -> None:
    prepare(source, tmp_path / "cache", CFG)
    raw = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert raw["preprocess"]["normalization"]["kind"] == "zscore"
    assert raw["cases"][0]["bbox"] == [[1, 9], [1, 9], [0, 7]]
    assert sorted(os.listdir(tmp_path / "cache")) == ["cases", "manifest.json"]
    assert sorted(os.listdir(tmp_path / "cache" / "cases")) == ["case_a", "case_b"]  # no temp dirs


def test_foreground_locations_are_per_class_and_inside_the_label(source: Path, tmp_path: Path):
    prepare(source, tmp_path / "cache", CFG)
    dataset = PreparedDataset(tmp_path / "cache")
    case = dataset.load("case_a")
    coords = dataset.foreground_locations("case_a")
    assert coords.dtype == np.int32 and coords.shape[1] == 3
    assert len(coords) == int((case.label > 0).sum())  # tiny case: all voxels kept
    for cls in (1, 2, 3):
        part = dataset.foreground_locations("case_a", label=cls)
        assert len(part) == int((case.label == cls).sum()) > 0
        assert np.all(case.label[tuple(part.T)] == cls)


def test_foreground_sample_caps_each_class_and_is_deterministic() -> None:
    label = np.zeros((20, 20, 20), dtype=np.uint8)
    label[:10] = 2  # 4000 voxels
    label[15, 15, :3] = 3  # 3 voxels: kept whole
    coords, classes = foreground_sample(label, "cid", per_class=50)
    assert classes == ((2, 50), (3, 3)) and coords.shape == (53, 3)
    assert np.all(label[tuple(coords[:50].T)] == 2) and np.all(label[tuple(coords[50:].T)] == 3)
    assert len(np.unique(coords[:50], axis=0)) == 50  # sampled without replacement
    np.testing.assert_array_equal(coords, foreground_sample(label, "cid", per_class=50)[0])
    empty, none = foreground_sample(None, "cid")
    assert empty.shape == (0, 3) and none == ()


def test_channel_selection_and_full_read(source: Path, tmp_path: Path) -> None:
    prepare(source, tmp_path / "cache", CFG)
    dataset = PreparedDataset(tmp_path / "cache")
    full = np.asarray(dataset.load("case_b").image)
    picked = dataset.load("case_b", modalities=["flair", "t1"])
    assert picked.modalities == ("flair", "t1")
    np.testing.assert_array_equal(picked.image, full[[3, 0]])
    run = dataset.load("case_b", modalities=["t1ce", "t2"])
    assert isinstance(run.image, np.memmap)  # a contiguous run stays memory-mapped
    np.testing.assert_array_equal(run.image, full[1:3])
    in_memory = dataset.load("case_b", mmap=False)
    assert not isinstance(in_memory.image, np.memmap)
    assert not isinstance(in_memory.label, np.memmap)
    np.testing.assert_array_equal(in_memory.image, full)
    with pytest.raises(CaseError, match=r"modalities \['ct'\] are not in the cache"):
        dataset.load("case_b", modalities=["ct"])
    with pytest.raises(CaseError, match="no modality requested"):
        dataset.load("case_b", modalities=[])
    with pytest.raises(InputError, match="case 'nope' is not in this cache"):
        dataset.load("nope")


def test_ct_dataset_with_window_and_parallel_workers(tmp_path: Path) -> None:
    ct_dataset(tmp_path / "ct", ["ct_001", "ct_002"])
    cfg = PreprocessConfig(crop_to_nonzero=False, normalization=CTWindowNormalization())
    serial = prepare(tmp_path / "ct", tmp_path / "c1", cfg)
    parallel = prepare(tmp_path / "ct", tmp_path / "c2", cfg, workers=2)
    assert serial.cases == parallel.cases and serial.internal_scheme == "internal_binary"
    assert PreparedDataset(tmp_path / "c2").scheme.region_names == ("fg",)
    for case_id in ("ct_001", "ct_002"):
        one = PreparedDataset(tmp_path / "c1").load(case_id, mmap=False)
        two = PreparedDataset(tmp_path / "c2").load(case_id, mmap=False)
        np.testing.assert_array_equal(one.image, two.image)
        assert one.modalities == ("ct",) and one.image.min() >= 0 and one.image.max() <= 1


# ---- bad cases and refusals -------------------------------------------------------------------


def test_bad_cases_are_skipped_and_listed_while_good_ones_load(source: Path, tmp_path: Path):
    bad = brats_case(source, "case_corrupt", shape=SHAPE)
    truncate(bad.files["t2"])
    brats_case(source, "case_missing", shape=SHAPE, skip=("flair",))
    calls: list[tuple[int, int, str]] = []
    manifest = prepare(source, tmp_path / "cache", CFG, progress=lambda *a: calls.append(a))
    assert [e.case_id for e in manifest.cases] == ["case_a", "case_b"]
    skipped = {s.case_id: s.message for s in manifest.skipped}
    assert "corrupt or truncated NIfTI file" in skipped["case_corrupt"]
    assert "case_corrupt_t2.nii.gz" in skipped["case_corrupt"]
    assert "missing modality file(s): case_missing_flair.nii.gz" in skipped["case_missing"]
    assert calls == [(1, 3, "case_a"), (2, 3, "case_b"), (3, 3, "case_corrupt")]
    dataset = PreparedDataset(tmp_path / "cache")
    assert dataset.case_ids == ("case_a", "case_b")
    assert dataset.load("case_a").image.shape[0] == 4
    assert not (tmp_path / "cache" / "cases" / "case_corrupt").exists()


def test_values_beyond_float16_are_a_case_error(tmp_path: Path) -> None:
    src = tmp_path / "src"
    padded_case(src, "ok")
    huge = brats_case(src, "huge", shape=SHAPE)
    values = np.full(SHAPE, 1e6, dtype=np.float32)
    values[0, 0, 0] = 0.0  # not constant: a constant scan is refused before the cast
    save_nifti(huge.files["t1"], values)
    manifest = prepare(src, tmp_path / "cache", PreprocessConfig(normalization=NoNormalization()))
    assert [e.case_id for e in manifest.cases] == ["ok"]
    assert "does not fit the cache's float16" in manifest.skipped[0].message


def test_no_usable_case_is_an_input_error(tmp_path: Path) -> None:
    bad = brats_case(tmp_path / "src", "only", shape=SHAPE)
    truncate(bad.files["t1"])
    with pytest.raises(InputError, match=r"no case could be prepared .*only_t1\.nii\.gz"):
        prepare(tmp_path / "src", tmp_path / "cache", CFG)


def test_a_failed_prepare_leaves_an_earlier_cache_whole(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    prepare(source, out, CFG)
    before = (out / "manifest.json").read_text()
    # The same folder read as BraTS 2023: every case fails, so nothing is written over it.
    with pytest.raises(InputError, match="no case could be prepared"):
        prepare(source, out, CFG, label_scheme="brats2023")
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["cases", "manifest.json"]
    dataset = PreparedDataset(out)
    assert all(dataset.load(case).label is not None for case in dataset.case_ids)
    prepare(source, out, CFG)  # and a later run replaces it as before
    assert sorted(p.name for p in out.iterdir()) == ["cases", "manifest.json"]


def test_refuses_output_inside_source_and_source_inside_output(source: Path, tmp_path: Path):
    before = fingerprint(source)
    with pytest.raises(InputError) as err:
        prepare(source, source / "cache", CFG)
    assert str(source / "cache") in str(err.value) and str(source) in str(err.value)
    assert "is inside the source directory" in str(err.value)
    with pytest.raises(InputError, match="is inside the source directory"):
        prepare(source, source, CFG)
    with pytest.raises(InputError, match=r"the source directory .* is inside the cache directory"):
        prepare(source, tmp_path, CFG)
    assert fingerprint(source) == before


def test_refuses_a_non_empty_directory_that_is_not_a_cache(source: Path, tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(
        InputError, match=r"mine: is not empty and not a prepared cache \(found notes.txt\)"
    ):
        prepare(source, out, CFG)
    assert (out / "notes.txt").read_text() == "keep me"
    (out / "notes.txt").unlink()
    (out / "cases" / "x").mkdir(parents=True)
    (out / "cases" / "x" / "scan.nii.gz").write_text("data")
    with pytest.raises(InputError, match=r"found files other than \.npy under cases/"):
        prepare(source, out, CFG)
    assert (out / "cases" / "x" / "scan.nii.gz").exists()


def test_opening_a_non_cache_or_old_cache_names_the_directory(source: Path, tmp_path: Path):
    with pytest.raises(InputError, match=f"{tmp_path}: not a prepared cache"):
        PreparedDataset(tmp_path)
    prepare(source, tmp_path / "cache", CFG)
    path = tmp_path / "cache" / "manifest.json"
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "format_version": 0}))
    with pytest.raises(InputError, match=f"{tmp_path / 'cache'}: cache format version 0"):
        PreparedDataset(tmp_path / "cache")


def test_repreparing_replaces_cases_and_drops_stale_ones(source: Path, tmp_path: Path):
    prepare(source, tmp_path / "cache", CFG)
    truncate(next((source / "case_b").glob("*_t1.nii.gz")))
    manifest = prepare(source, tmp_path / "cache", PreprocessConfig(crop_to_nonzero=False))
    assert [e.case_id for e in manifest.cases] == ["case_a"]
    assert sorted(os.listdir(tmp_path / "cache" / "cases")) == ["case_a"]
    assert PreparedDataset(tmp_path / "cache").load("case_a").image.shape == (4, *SHAPE)


# ---- ensure_prepared --------------------------------------------------------------------------


def test_ensure_prepared_reuses_then_invalidates(source: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = ensure_prepared(source, root, CFG)
    assert first.root.parent == root.resolve() and first.root.name.startswith("src-")
    stamp = mtimes(first.root)
    again = ensure_prepared(source, root, CFG)
    assert again.root == first.root and mtimes(again.root) == stamp  # nothing rewritten

    other = ensure_prepared(
        source, root, PreprocessConfig(normalization=ZScoreNormalization(clip=2))
    )
    assert other.root != first.root and mtimes(first.root) == stamp

    old = np.array(first.load("case_a", mmap=False).image)
    t1 = next((source / "case_a").glob("*_t1.nii.gz"))
    save_nifti(t1, (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 7 + 1).astype(np.int16))
    os.utime(t1, ns=(1_000_000_000, 1_000_000_000))
    changed = ensure_prepared(source, root, CFG)
    assert changed.root == first.root and mtimes(changed.root) != stamp
    assert not np.array_equal(changed.load("case_a", mmap=False).image, old)

    shutil.rmtree(changed.root / "cases" / "case_b")  # damaged cache: rebuilt, not reused
    assert ensure_prepared(source, root, CFG).load("case_b").image.shape == (4, 8, 8, 7)

    stamp = mtimes(changed.root)
    padded_case(source, "case_c", seed=3)  # a new case also invalidates
    assert ensure_prepared(source, root, CFG).case_ids == ("case_a", "case_b", "case_c")
    assert mtimes(changed.root) != stamp


def _race(source: str, root: str, barrier, results) -> None:
    """Child process: wait for the sibling, then call ensure_prepared; report cases prepared."""
    prepared: list[str] = []
    barrier.wait()
    dataset = ensure_prepared(source, root, CFG, progress=lambda d, t, c: prepared.append(c))
    results.put((str(dataset.root), len(prepared), dataset.case_ids))


def test_concurrent_ensure_prepared_prepares_once(source: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    args = (str(source), str(tmp_path / "root"), barrier, results)
    procs = [ctx.Process(target=_race, args=args) for _ in range(2)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=30) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    roots = {root for root, _, _ in outcomes}
    assert len(roots) == 1
    assert sorted(n for _, n, _ in outcomes) == [0, 2]  # one prepared both cases, one reused
    assert all(ids == ("case_a", "case_b") for _, _, ids in outcomes)
    cache_dir = Path(roots.pop())
    assert sorted(os.listdir(cache_dir / "cases")) == ["case_a", "case_b"]
    assert PreparedDataset(cache_dir).load("case_b").image.shape == (4, 8, 8, 7)


def test_default_cache_root_and_safe_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path / "c"))
    assert default_cache_root() == tmp_path / "c"
    monkeypatch.delenv("ABLATE_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "ablate"
    assert safe_name(tmp_path / "BraTS 2021 (train)") == "BraTS_2021_train"


# ---- real data --------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_cases_prepare_and_load_cropped_to_the_brain(brats_sample_dir: Path, tmp_path: Path):
    manifest = prepare(brats_sample_dir, tmp_path / "cache", CFG)
    assert len(manifest.cases) == 3 and manifest.skipped == ()
    dataset = PreparedDataset(tmp_path / "cache")
    for case_id in dataset.case_ids:
        case = dataset.load(case_id)
        extent = tuple(hi - lo for lo, hi in case.bbox)
        assert case.image.shape == (4, *extent) and case.label.shape == extent
        assert all(
            0 <= lo < hi <= n for (lo, hi), n in zip(case.bbox, (240, 240, 155), strict=True)
        )
        assert np.prod(extent) < 0.5 * 240 * 240 * 155  # the brain is well under half the grid
        assert set(np.unique(case.label)) <= {0, 1, 2, 3} and case.label.max() > 0
        # The label was cropped with the same box, and the tumour lies inside the brain box.
        seg = next(s.path for s in dataset.entry(case_id).sources if "_seg." in s.path)
        full, _, _ = load_label(Path(seg), get_scheme("brats2021"), case_id)
        np.testing.assert_array_equal(case.label, full[tuple(slice(*b) for b in case.bbox)])
        assert np.count_nonzero(case.label) == np.count_nonzero(full)
        # Tight box: every face of the crop holds brain (non-zero after z-scoring).
        brain = np.any(np.asarray(case.image) != 0, axis=0)
        for axis in range(3):
            assert brain.take(0, axis=axis).any() and brain.take(-1, axis=axis).any()
