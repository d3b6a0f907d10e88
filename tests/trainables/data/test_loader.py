"""PatchDataset determinism and foreground share, the train loader and the device prefetcher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data import loader as loader_module
from trainables.data.augment import AugmentConfig, needs_margin
from trainables.data.loader import (
    DevicePrefetcher,
    PatchDataset,
    _move,
    _tensors,
    make_train_loader,
)
from trainables.data.sampling import SamplingConfig
from trainables.data.sources import SourceBatch
from trainables.errors import InputError


class ToyCases:
    """Picklable ``load(i)``: case ``i`` is 24^3 with a 2^3 foreground block near a corner."""

    def __init__(self, count: int = 3) -> None:
        self.cases = []
        for i in range(count):
            rng = np.random.default_rng(100 + i)
            image = rng.standard_normal((2, 24, 24, 24)).astype(np.float16)
            label = np.zeros((24, 24, 24), dtype=np.uint8)
            label[i : i + 2, :2, :2] = 1 + i % 3
            self.cases.append((image, label, np.argwhere(label > 0)))

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self.cases[i]


def _dataset(patch: tuple[int, ...] = (8, 8, 8), **kwargs: object) -> PatchDataset:
    cfg = SamplingConfig(patch_size=patch)
    args = {"num_cases": 3, "samples_per_epoch": 12, "cfg": cfg, "seed": 11, **kwargs}
    return PatchDataset(ToyCases(), **args)  # type: ignore[arg-type]


def test_items_have_expected_shapes_and_dtypes() -> None:
    image, label, draws = _dataset()[0]
    assert image.shape == (2, 8, 8, 8) and image.dtype == torch.float32 and draws is None
    assert label.shape == (8, 8, 8) and label.dtype == torch.int64
    image, label, _ = _dataset(patch=(8, 8))[0]
    assert image.shape == (2, 8, 8) and label.shape == (8, 8)


@pytest.mark.parametrize("patch", [(8, 8, 8), (8, 8)])
def test_items_to_be_rotated_or_scaled_are_cut_with_the_margin(patch: tuple[int, ...]) -> None:
    """With augmentation left to the device, an item carries its draws and keeps the cache's
    float16; the ones that drew a rotation or scale are cut with nnU-Net's margin (8 voxels at
    30 degrees: 8 x (cos 30 + sin 30) / 0.85 = 12.9, so 12; 2-D, up to 180 degrees: the
    diagonal 8 x 1.414 / 0.85 = 13.3, so 13, made even: 14), and their middle is exactly the
    patch the same item is without the margin."""
    cfg = AugmentConfig()
    wide = (12, 12, 12) if len(patch) == 3 else (14, 14)
    with_margin = _dataset(patch, augment=cfg, samples_per_epoch=40)
    without = _dataset(patch, augment=cfg.model_copy(update={"crop_margin": False}),
                       samples_per_epoch=40)  # fmt: skip
    shapes = []
    for k in range(40):
        image, label, draws = with_margin[k]
        plain_image, plain_label, plain_draws = without[k]
        assert draws is not None and plain_draws is not None
        assert np.array_equal(draws.decisions, plain_draws.decisions)
        spatial = needs_margin(cfg, draws.decisions)
        assert image.dtype == torch.float16  # the cache's; labels of the margin travel as uint8
        assert label.dtype == (torch.uint8 if spatial else torch.int64)
        assert plain_label.dtype == torch.int64  # no margin: the configured dtype throughout
        assert tuple(image.shape[1:]) == (wide if spatial else patch)
        shapes.append(spatial)
        sizes = zip(image.shape[1:], patch, strict=True)
        middle = tuple(slice((w - p) // 2, (w + p) // 2) for w, p in sizes)
        assert torch.equal(image[(slice(None), *middle)], plain_image)
        assert torch.equal(label[middle].long(), plain_label)
    assert 0 < sum(shapes) < 40  # 1 - 0.8^2 = 36% expected


def test_items_augmented_in_the_workers_are_float32_patches() -> None:
    ds = _dataset(augment=AugmentConfig(rotation_prob=1.0), augment_in_workers=True)
    image, label, draws = ds[0]
    assert image.shape == (2, 8, 8, 8) and image.dtype == torch.float32 and draws is None
    assert label.shape == (8, 8, 8)


def test_items_are_a_function_of_seed_epoch_and_index() -> None:
    ds = _dataset()
    first = ds[3]
    assert torch.equal(first[0], ds[3][0]) and torch.equal(ds[(0, 3)][0], first[0])
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], first[0])
    assert torch.equal(_dataset(seed=11)[(1, 3)][0], ds[3][0])
    assert not torch.equal(_dataset(seed=12)[3][0], first[0])


def test_bernoulli_foreground_share_matches_fraction() -> None:
    cfg = SamplingConfig(patch_size=(6, 6, 6), foreground_fraction=0.4)
    ds = PatchDataset(ToyCases(), 3, 600, cfg, seed=0)
    share = np.mean([bool(ds[k][1].any()) for k in range(600)])
    # Random 6^3 patches hit the 2^3 block with probability ~(3/19)^3 = 0.004.
    assert share == pytest.approx(0.4, abs=0.06)


def test_batch_foreground_share_is_exact_per_batch() -> None:
    ds = _dataset(samples_per_epoch=30, batch_size=3)  # fraction 1/3: last item of each batch
    forced = [ds._forced(k, 0.99) for k in range(30)]
    assert forced == [False, False, True] * 10
    assert all(ds[k][1].any() for k in range(2, 30, 3))


@pytest.mark.parametrize("fraction", [0.0, 0.33, 0.5, 1.0])
def test_at_batch_1_the_configured_foreground_share_is_sampled(fraction: float) -> None:
    """The exact-share rule cannot split one item: at 0.5 it forced every item (round(0.5) is
    0 unforced), at 0.33 none; one item per batch is forced with the configured probability."""
    cfg = SamplingConfig(patch_size=(6, 6, 6), foreground_fraction=fraction)
    ds = PatchDataset(ToyCases(), 3, 600, cfg, seed=0, batch_size=1)
    share = np.mean([ds._forced(k, float(np.random.default_rng(k).random())) for k in range(600)])
    assert share == pytest.approx(fraction, abs=0.06)
    hits = np.mean([bool(ds[k][1].any()) for k in range(600)])
    assert hits == pytest.approx(fraction, abs=0.06)  # random 6^3 patches hit ~0.4 %


def test_loader_identical_for_0_and_2_workers_across_epochs() -> None:
    """Batches group the items cut at the patch size and those cut with the margin; every
    tensor and every host draw is the same whatever the number of workers."""

    def batches(workers: int) -> list[list[SourceBatch]]:
        ds = _dataset(augment=AugmentConfig(rotation_prob=0.5))
        loader = make_train_loader(ds, batch_size=4, num_workers=workers, pin_memory=False)
        out = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            out.append(list(loader))
        return out

    serial, parallel = batches(0), batches(2)
    assert len(serial[0]) == 3  # 12 samples / batch 4
    for a, b in zip(serial, parallel, strict=True):
        for x, y in zip(a, b, strict=True):
            assert x.rows == y.rows == 4
            assert all(torch.equal(u, v) for u, v in zip(_tensors(x), _tensors(y), strict=True))
            assert np.array_equal(x.decisions, y.decisions)
    every = [batch for epoch in serial for batch in epoch]
    assert any(b.wide_image is not None for b in every)  # some items cut with the margin
    assert any(b.plain_image is not None for b in every)  # and some at the patch size
    assert not np.array_equal(serial[0][0].decisions, serial[1][0].decisions)  # epochs differ


def test_loader_validation_messages() -> None:
    with pytest.raises(InputError, match=r"samples_per_epoch: 12 samples per epoch is fewer"):
        make_train_loader(_dataset(), batch_size=16, num_workers=0, pin_memory=False)
    with pytest.raises(InputError, match=r"batch_size: 2 differs from the dataset's batch_size 3"):
        make_train_loader(_dataset(batch_size=3), batch_size=2, num_workers=0, pin_memory=False)
    with pytest.raises(InputError, match=r"num_cases: must be >= 1, got 0"):
        _dataset(num_cases=0)


def test_device_prefetcher_passes_batches_through_on_cpu() -> None:
    ds = _dataset()
    loader = make_train_loader(ds, batch_size=4, num_workers=0, pin_memory=False)
    fetched = list(DevicePrefetcher(loader, "cpu"))
    assert len(fetched) == len(DevicePrefetcher(loader, "cpu")) == 3
    for batch, reference in zip(fetched, loader, strict=True):
        for tensor, ref in zip(_tensors(batch), _tensors(reference), strict=True):
            assert tensor.device.type == "cpu" and torch.equal(tensor, ref)


@pytest.mark.cuda
def test_device_prefetcher_moves_batches_to_cuda() -> None:
    ds = _dataset()
    loader = make_train_loader(ds, batch_size=4, num_workers=0, pin_memory=True)
    fetched = list(DevicePrefetcher(loader, "cuda"))
    assert len(fetched) == 3
    for batch, reference in zip(fetched, loader, strict=True):
        assert isinstance(batch, SourceBatch) and batch.decisions is None  # stays on the host
        for tensor, ref in zip(_tensors(batch), _tensors(reference), strict=True):
            assert tensor.is_cuda and torch.equal(tensor.cpu(), ref)


def test_move_and_tensors_reach_every_tensor_of_a_nested_batch() -> None:
    """The CUDA path copies with ``_move`` and calls ``record_stream`` on what ``_tensors``
    yields: both must reach every tensor of a nested batch and keep the structure."""
    batch = (torch.ones(2), [torch.zeros(3), (torch.arange(4), "case-id")])
    moved = _move(batch, torch.device("cpu"), non_blocking=False)
    assert isinstance(moved, tuple) and isinstance(moved[1], list) and moved[1][1][1] == "case-id"
    assert [t.numel() for t in _tensors(moved)] == [2, 3, 4]


class _FakeCuda:
    """Just enough of ``torch.cuda`` (streams, events, the stream context) to log what the
    prefetcher's CUDA path queues where, on a machine without CUDA."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.compute = self.current = self._stream("compute")
        self.events = 0

    def _stream(self, name: str) -> object:
        log = self.log

        class Stream:
            def wait_event(self, event: object) -> None:
                log.append(f"{name} waits {event}")

            def wait_stream(self, other: object) -> None:
                log.append(f"{name} waits all of {other}")

            def __repr__(self) -> str:
                return name

        return Stream()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = self

        class Event:
            def __init__(self) -> None:
                self.name = f"e{fake.events}"
                fake.events += 1

            def record(self, stream: object) -> None:
                fake.log.append(f"{self.name} recorded on {stream}")

            def __repr__(self) -> str:
                return self.name

        class StreamContext:
            def __init__(self, stream: object) -> None:
                self.stream = stream

            def __enter__(self) -> None:
                fake.current = self.stream

            def __exit__(self, *exc: object) -> None:
                fake.current = fake.compute

        def move(batch: object, device: torch.device, non_blocking: bool) -> object:
            fake.log.append(f"copy {batch} on {fake.current}")
            return batch

        monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: self._stream("side"))
        monkeypatch.setattr(torch.cuda, "Event", Event)
        monkeypatch.setattr(torch.cuda, "stream", StreamContext)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: fake.current)
        monkeypatch.setattr(loader_module, "_move", move)


def test_device_prefetcher_cuda_path_waits_on_each_batch_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CUDA path's order of operations, with fake streams and events: batch k + 1's copy
    is queued before batch k is handed out, and the compute stream then waits on batch k's own
    event (recorded on the side stream right after its copy), never on the whole side stream,
    which would include batch k + 1's copy. (The real overlap is the ``cuda``-marked test.)"""
    fake = _FakeCuda()
    fake.install(monkeypatch)
    for batch in DevicePrefetcher(["b0", "b1", "b2"], "cuda"):  # type: ignore[arg-type]
        fake.log.append(f"use {batch}")
    assert fake.log == [
        "copy b0 on side",
        "e0 recorded on side",
        "copy b1 on side",
        "e1 recorded on side",
        "compute waits e0",
        "use b0",
        "copy b2 on side",
        "e2 recorded on side",
        "compute waits e1",
        "use b1",
        "compute waits e2",
        "use b2",
    ]


@pytest.mark.cuda
def test_device_prefetcher_waits_for_each_batch_copy_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The compute stream waits for the batch it is handed and for nothing queued later.

    Long kernels (``torch.cuda._sleep``) go on the prefetcher's side stream: one before batch
    0's copy (if the compute stream did not wait for that copy, the clone below would read the
    buffer before the data arrives) and one after batch 1's copy, which is queued before batch
    0 is handed out. Work on batch 0 must finish while that second kernel still runs; with a
    ``wait_stream`` on the side stream it would finish only after it.
    """
    cycles = 1_000_000_000  # ~0.5 s at the H200's ~2 GHz: far beyond a few-microsecond copy
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(2, 2, 16, 16, 16, generator=g).pin_memory(),
            torch.randint(0, 4, (2, 16, 16, 16), generator=g).pin_memory(),
        )
        for _ in range(3)
    ]
    after_batch1_copy = torch.cuda.Event()
    calls: list[int] = []

    def slow_move(batch: object, device: torch.device, non_blocking: bool) -> object:
        # Called inside ``with torch.cuda.stream(side)``: these kernels queue on the side stream.
        if not calls:
            torch.cuda._sleep(cycles)
        moved = _move(batch, device, non_blocking)
        if len(calls) == 1:
            torch.cuda._sleep(cycles)
            after_batch1_copy.record()
        calls.append(len(calls))
        return moved

    monkeypatch.setattr(loader_module, "_move", slow_move)
    batches_out = iter(DevicePrefetcher(batches, "cuda"))  # type: ignore[arg-type]
    image, label = next(batches_out)
    fetched = [(image.clone(), label.clone())]  # queued on the compute stream
    used = torch.cuda.Event()
    used.record()
    used.synchronize()
    assert not after_batch1_copy.query(), "batch 0's consumer waited for batch 1's copy"
    fetched += [(image.clone(), label.clone()) for image, label in batches_out]
    torch.cuda.synchronize()
    assert len(fetched) == len(batches) and calls == [0, 1, 2]
    for (image, label), (ref_image, ref_label) in zip(fetched, batches, strict=True):
        assert image.is_cuda and torch.equal(image.cpu(), ref_image)
        assert torch.equal(label.cpu(), ref_label)
