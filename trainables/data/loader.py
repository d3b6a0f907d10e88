"""Deterministic training samples, a worker-backed DataLoader and a device prefetcher.

Item ``k`` of epoch ``e`` is a pure function of ``(seed, e, k)``: it seeds its own
``np.random.default_rng([seed, e, k])`` to pick the case, whether to force foreground and the
patch. An epoch's samples are therefore identical whatever the number of workers, their
scheduling, and whether the run was resumed from a checkpoint at that epoch.

The epoch travels *with the index* (the sampler yields ``(epoch, k)`` pairs from the main
process), because persistent workers hold their own copy of the dataset and would never see a
``set_epoch`` made after they started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainables.data.augment import (
    AugmentConfig,
    augment_sources,
    decision_columns,
    needs_margin,
    source_shape,
)
from trainables.data.sampling import SamplingConfig, sample_patch, sample_slice
from trainables.data.sources import Sample, SampleDraws, SourceBatch, collate_sources
from trainables.errors import InputError

# load(i) -> (image (C, *S), label (*S) uint8, fg_locations (N, ndim) int or None)
CaseLoader = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray | None]]


class PatchDataset(Dataset[Sample]):
    """``samples_per_epoch`` random patches per epoch, drawn from ``num_cases`` cases.

    Foreground forcing: with ``batch_size=None`` every item is forced with probability
    ``cfg.foreground_fraction`` (Bernoulli). With ``batch_size`` of 2 or more, the share is exact
    as in nnU-Net: in each consecutive block of ``batch_size`` items the last
    ``batch_size - round(batch_size * (1 - fraction))`` are forced; this needs the loader to
    batch items in order (:func:`make_train_loader` does; items are random already, so there is
    no shuffling). A batch of 1 cannot hold a share (the rule would force every item at 0.5,
    ``round(0.5) == 0``, and none at 0.33), so at ``batch_size=1`` items are Bernoulli too.

    Augmentation: each item draws its transforms' decisions from its own generator (seed,
    epoch, k, 2). An item that will be rotated or scaled is cut with nnU-Net's margin
    (:func:`~trainables.data.augment_config.source_shape`) and resampled into the patch by
    :func:`~trainables.data.augment.augment_sources`, on the training device (the fast path)
    or here, in the loader's CPU workers (``augment_in_workers``: the baseline of FM-Net's
    data-pipeline comparison).

    Args:
        load: ``load(i)`` returns ``(image (C, *S), label (*S) uint8, fg_locations | None)`` of
            case ``i``; cheap (memory-mapped) because it runs once per item.
        num_cases: number of training cases; each item picks one uniformly.
        samples_per_epoch: items per epoch.
        cfg: patch size (2 sizes select 2-D slices), foreground fraction, empty-slice drop.
        seed: non-negative base seed of the trial.
        batch_size: enables the exact per-batch foreground share from 2 up (see above).
        augment: the augmentation; None (or disabled): items are the patches as cut.
        augment_in_workers: augment each item here, with a CPU generator seeded from
            (seed, epoch, k, 1), instead of leaving it to the training device.
        label_dtype: dtype of the label tensors: int64, or uint8 (``train.speed.uint8_labels``:
            1/8 of the bytes through pinned memory and the host-to-device copy).
    """

    def __init__(
        self,
        load: CaseLoader,
        num_cases: int,
        samples_per_epoch: int,
        cfg: SamplingConfig,
        seed: int,
        batch_size: int | None = None,
        augment: AugmentConfig | None = None,
        augment_in_workers: bool = False,
        label_dtype: torch.dtype = torch.int64,
    ) -> None:
        _require_positive(num_cases, "num_cases")
        _require_positive(samples_per_epoch, "samples_per_epoch")
        if seed < 0:
            raise InputError(f"must be >= 0, got {seed}", where="seed")
        if batch_size is not None:
            _require_positive(batch_size, "batch_size")
        self.load = load
        self.num_cases = num_cases
        self.samples_per_epoch = samples_per_epoch
        self.cfg = cfg
        self.seed = seed
        self.batch_size = batch_size
        self.augment = augment if augment is not None and augment.enabled else None
        self.augment_in_workers = augment_in_workers
        self.label_dtype = label_dtype
        self.epoch = 0
        patch = tuple(cfg.patch_size)
        wide = source_shape(self.augment, patch) if self.augment else patch
        margin = tuple((w - p) // 2 for w, p in zip(wide, patch, strict=True))
        self.margin = margin if any(margin) else None  # None: every item cut at the patch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples the next iteration yields."""
        if epoch < 0:
            raise InputError(f"must be >= 0, got {epoch}", where="epoch")
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int | tuple[int, int]) -> Sample:
        """Item ``k`` (of the current epoch) or ``(epoch, k)``.

        Returns:
            ``(image, label, draws)``: the ``(C, *P)`` patch, or ``(C, *E)`` for an item cut
            with the margin (float16 from a float16 cache, else float32), its ``(*P)`` label
            (``label_dtype``) or ``(*E)`` label (uint8) and its :class:`SampleDraws`;
            augmented here, or without augmentation: the float32 patch, its label
            (``label_dtype``) and None.
        """
        epoch, k = index if isinstance(index, tuple) else (self.epoch, index)
        rng = np.random.default_rng([self.seed, epoch, k])
        case = int(rng.integers(self.num_cases))
        draw = rng.random()  # always drawn, so both forcing rules leave the same stream
        image, label, fg = self.load(case)
        draws = self._draws(epoch, k, image.shape[0])
        spatial = draws is not None and needs_margin(self.augment, draws.decisions)
        margin = self.margin if spatial else None
        on_device = draws is not None and not self.augment_in_workers
        dtype = np.float16 if on_device and image.dtype == np.float16 else np.float32
        args = (image, label, self.cfg.patch_size, rng, self._forced(k, draw))
        if self.cfg.is_2d:
            img, lab = sample_slice(*args, self.cfg.empty_slice_drop, fg, margin, dtype)
        else:
            img, lab = sample_patch(*args, fg, margin, dtype)
        # codes 0..3; the margin's labels always travel as uint8 (8x fewer bytes; the device
        # resamples them into the patch first and then gives them the configured dtype)
        small = self.label_dtype == torch.uint8 or margin is not None
        np_dtype = np.uint8 if small else np.int64
        image_t, label_t = torch.from_numpy(img), torch.from_numpy(lab.astype(np_dtype))
        if draws is None or on_device:
            return image_t, label_t, draws
        seed = int(np.random.SeedSequence([self.seed, epoch, k, 1]).generate_state(1)[0])
        batch = self.collate([(image_t, label_t, draws)])
        generator = torch.Generator().manual_seed(seed)
        patch = tuple(self.cfg.patch_size)
        image_t, label_t = augment_sources(batch, self.augment, patch, generator, self.label_dtype)
        return image_t[0], label_t[0], None

    def _draws(self, epoch: int, k: int, channels: int) -> SampleDraws | None:
        """Item ``k``'s augmentation draws (None without augmentation), from its own stream."""
        if self.augment is None:
            return None
        rng = np.random.default_rng([self.seed, epoch, k, 2])
        ndim = len(self.cfg.patch_size)
        return SampleDraws(rng.random(decision_columns(ndim)), rng.random((channels, 2)))

    def collate(self, samples: list[Sample]) -> SourceBatch:
        """The loader's ``collate_fn``: :func:`~trainables.data.sources.collate_sources`."""
        return collate_sources(samples, tuple(self.cfg.patch_size))

    def _forced(self, k: int, draw: float) -> bool:
        """Whether item ``k`` must contain foreground (see the class docstring)."""
        fraction = self.cfg.foreground_fraction
        if self.batch_size is None or self.batch_size == 1:
            return draw < fraction
        unforced = round(self.batch_size * (1.0 - fraction))
        return k % self.batch_size >= unforced


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(dataset.epoch, k)`` for ``k`` in order, reading the epoch at each iteration."""

    def __init__(self, dataset: PatchDataset) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.dataset.epoch
        return iter([(epoch, k) for k in range(len(self.dataset))])

    def __len__(self) -> int:
        return len(self.dataset)


def make_train_loader(
    dataset: PatchDataset, batch_size: int, num_workers: int, pin_memory: bool
) -> DataLoader[SourceBatch]:
    """A DataLoader over ``dataset`` in item order, with persistent, prefetching workers.

    Batches are :class:`~trainables.data.sources.SourceBatch` es of ``batch_size`` samples
    (labels in the dataset's ``label_dtype``); an incomplete last batch is dropped so every
    step sees the same shape (stable for cudnn autotuning, compilation and CUDA graphs).
    Call ``dataset.set_epoch(e)`` before iterating epoch ``e``.
    """
    _require_positive(batch_size, "batch_size")
    if num_workers < 0:
        raise InputError(f"must be >= 0, got {num_workers}", where="num_workers")
    if dataset.batch_size is not None and dataset.batch_size != batch_size:
        raise InputError(
            f"{batch_size} differs from the dataset's batch_size {dataset.batch_size}, which "
            "places the forced-foreground items",
            where="batch_size",
        )
    if len(dataset) < batch_size:
        raise InputError(
            f"{len(dataset)} samples per epoch is fewer than one batch of {batch_size}",
            where="samples_per_epoch",
        )
    workers = {"persistent_workers": True, "prefetch_factor": 4} if num_workers > 0 else {}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(dataset),
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        collate_fn=dataset.collate,
        **workers,
    )


class DevicePrefetcher:
    """Iterates a loader, copying each batch to ``device`` one batch ahead of its use.

    On CUDA, batch ``i + 1`` is taken from the loader and its host-to-device copy queued on a
    side stream (``non_blocking``: asynchronous from pinned host memory) *before* batch ``i`` is
    handed out, and an event is recorded on the side stream right after each batch's copy. When
    batch ``i`` is handed out, the compute (current) stream waits on batch ``i``'s event only,
    so the work the caller then queues on batch ``i`` runs on the device concurrently with batch
    ``i + 1``'s copy; the host never waits (both waits are device-side). ``record_stream`` keeps
    the caching allocator from reusing a batch's memory before the compute stream is done with
    it. On other devices batches pass through ``.to`` one at a time, without read-ahead.
    """

    def __init__(self, loader: DataLoader[Any], device: torch.device | str) -> None:
        self.loader = loader
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield _move(batch, self.device, non_blocking=False)
            return
        yield from self._cuda_iter()

    def _cuda_iter(self) -> Iterator[Any]:
        stream = torch.cuda.Stream(self.device)
        pending: tuple[Any, torch.cuda.Event] | None = None
        for batch in self.loader:
            with torch.cuda.stream(stream):
                moved = _move(batch, self.device, non_blocking=True)
                # Marks the end of this batch's copy alone: waiting on the whole side stream
                # (wait_stream) would also wait for the next batch's copy, queued before this
                # batch is handed out, and so serialise every copy with compute.
                copied = torch.cuda.Event()
                copied.record(stream)
            if pending is not None:
                yield self._ready(*pending)
            pending = (moved, copied)
        if pending is not None:
            yield self._ready(*pending)

    def _ready(self, batch: Any, copied: torch.cuda.Event) -> Any:
        """``batch`` made safe to use on the current stream: a device-side wait on its copy's
        event (the host does not block) and ``record_stream`` for the caching allocator."""
        current = torch.cuda.current_stream(self.device)
        current.wait_event(copied)
        for tensor in _tensors(batch):
            tensor.record_stream(current)
        return batch


def _move(batch: Any, device: torch.device, non_blocking: bool) -> Any:
    """``batch`` (a tensor or nested tuple/list of tensors) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(_move(b, device, non_blocking) for b in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_move(b, device, non_blocking) for b in batch)
    return batch  # None, numpy arrays (host draws) and the like stay as they are


def _tensors(batch: Any) -> Iterator[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, list | tuple):
        for item in batch:
            yield from _tensors(item)


def _require_positive(value: int, field: str) -> None:
    if value < 1:
        raise InputError(f"must be >= 1, got {value}", where=field)
