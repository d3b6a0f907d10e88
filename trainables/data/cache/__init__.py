"""The prepared cache: every case decoded and preprocessed once, stored as memory-mappable .npy.

Decoding a BraTS case's four .nii.gz files costs ~0.25 s of CPU (gzip + scaling); reading the
same preprocessed case back from an uncompressed float16 ``.npy`` costs a few ms, and memory
mapping lets a patch sampler touch only the pages it needs. Layout::

    <cache>/manifest.json                     Manifest (written last: no manifest = no cache)
    <cache>/cases/<case_id>/image.npy         (C, X, Y, Z) float16, all modalities, canonical order
    <cache>/cases/<case_id>/label.npy         (X, Y, Z) uint8 internal codes (absent if unlabelled)
    <cache>/cases/<case_id>/source_label.npy  (X, Y, Z) uint8 the label before resampling
                                              (only for cases resampled to a target spacing)
    <cache>/cases/<case_id>/fg_locations.npy  (N, 3) int32 foreground voxel coordinates

``fg_locations`` holds, **per internal class** 1..K, a random subsample of up to 10k
(:data:`~trainables.data.preprocess.FG_SAMPLES_PER_CLASS`) voxel coordinates of that class,
concatenated in class order (the manifest's ``fg_classes`` gives the count per class). Per class
rather than for the whole foreground so a small class (enhancing tumour) is as well represented
as a large one: a uniform draw over all rows picks each class about equally often once classes
exceed the cap. Coordinates index the cached (cropped) arrays.

Every case is written into a temporary directory and renamed into place, and the manifest is
written last, so an interrupted run never leaves a cache that looks complete. The cache never
writes into the source directory.

Modules: :mod:`.manifest` (the manifest model), :mod:`.prepare` (decode and write),
:mod:`.reader` (:class:`PreparedDataset`), :mod:`.reuse` (cache keys and prepare-once).
"""

from trainables.data.cache.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    CaseEntry,
    Manifest,
    SkippedCase,
    SourceFile,
    read_manifest,
)
from trainables.data.cache.prepare import prepare
from trainables.data.cache.reader import PreparedDataset
from trainables.data.cache.reuse import cache_key, default_cache_root, ensure_prepared, safe_name

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST",
    "CaseEntry",
    "Manifest",
    "PreparedDataset",
    "SkippedCase",
    "SourceFile",
    "cache_key",
    "default_cache_root",
    "ensure_prepared",
    "prepare",
    "read_manifest",
    "safe_name",
]
