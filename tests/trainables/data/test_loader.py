"""PatchDataset determinism and foreground share, the train loader and the device prefetcher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainables.data.loader import DevicePrefetcher, PatchDataset, make_train_loader
from trainables.data.sampling import SamplingConfig
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
    image, label = _dataset()[0]
    assert image.shape == (2, 8, 8, 8) and image.dtype == torch.float32
    assert label.shape == (8, 8, 8) and label.dtype == torch.int64
    image, label = _dataset(patch=(8, 8))[0]
    assert image.shape == (2, 8, 8) and label.shape == (8, 8)


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


def test_loader_identical_for_0_and_2_workers_across_epochs() -> None:
    def batches(workers: int) -> list[list[torch.Tensor]]:
        ds = _dataset()
        loader = make_train_loader(ds, batch_size=4, num_workers=workers, pin_memory=False)
        out = []
        for epoch in range(2):
            ds.set_epoch(epoch)
            out.append([t for batch in loader for t in batch])
        return out

    serial, parallel = batches(0), batches(2)
    assert len(serial[0]) == 6  # 12 samples / batch 4 = 3 batches of (image, label)
    for a, b in zip(serial, parallel, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(serial[0][0], serial[1][0])  # epochs differ


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
    for (image, label), (ref_image, ref_label) in zip(fetched, loader, strict=True):
        assert image.device.type == "cpu" and torch.equal(image, ref_image)
        assert torch.equal(label, ref_label)


@pytest.mark.cuda
def test_device_prefetcher_moves_batches_to_cuda() -> None:
    ds = _dataset()
    loader = make_train_loader(ds, batch_size=4, num_workers=0, pin_memory=True)
    fetched = list(DevicePrefetcher(loader, "cuda"))
    assert len(fetched) == 3
    for (image, label), (ref_image, ref_label) in zip(fetched, loader, strict=True):
        assert image.is_cuda and torch.equal(image.cpu(), ref_image)
        assert torch.equal(label.cpu(), ref_label)
