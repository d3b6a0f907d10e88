"""Reuse caches across trials: cache keys, the default root, prepare-once under a lock."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainables.data.cache.manifest import FORMAT_VERSION, Progress
from trainables.data.cache.prepare import prepare, source_files
from trainables.data.cache.reader import PreparedDataset
from trainables.data.layouts import discover
from trainables.data.preprocess import PreprocessConfig
from trainables.errors import InputError

# ---- reuse ------------------------------------------------------------------------------------


def default_cache_root() -> Path:
    """``$ABLATE_CACHE`` if set, else ``~/.cache/ablate``."""
    env = os.environ.get("ABLATE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ablate"


def safe_name(source: str | Path) -> str:
    """File-name-safe short form of the dataset folder's name (``BraTS 2021`` -> ``BraTS_2021``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).expanduser().resolve().name)
    return name.strip("._")[:40] or "dataset"


def cache_key(source: str | Path, preprocess: PreprocessConfig, label_scheme: str = "auto") -> str:
    """sha256 hex of what makes a cache: absolute source, preprocessing, label scheme, format."""
    payload = {
        "source": str(Path(source).expanduser().resolve()),
        "fingerprint": preprocess.fingerprint(),
        "label_scheme": label_scheme,
        "format": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def ensure_prepared(
    source: str | Path,
    cache_root: str | Path,
    preprocess: PreprocessConfig,
    label_scheme: str = "auto",
    progress: Progress | None = None,
    workers: int = 1,
) -> PreparedDataset:
    """Reuse ``<cache_root>/<name>-<key12>`` if it is current, else (re)prepare it.

    Safe to call from many processes at once (e.g. Ray trials on one machine): an exclusive
    ``flock`` on ``<cache_root>/.<name>-<key12>.lock`` lets one of them prepare while the others
    wait and then reuse its result. "Current" means same manifest settings and the same set of
    discovered cases with unchanged source file sizes and mtimes. ``workers`` as in
    :func:`prepare`.
    """
    source = Path(source).expanduser().resolve()
    root = Path(cache_root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    same = _computed_from_request(source, root, preprocess, label_scheme)
    if same is not None:
        return same
    name = _cache_name(source, preprocess, label_scheme)
    cache_dir = root / name
    with _exclusive_lock(root / f".{name}.lock"):
        if not _is_current(cache_dir, source, preprocess, label_scheme):
            prepare(source, cache_dir, preprocess, label_scheme, progress, workers)
        return PreparedDataset(cache_dir)


def _cache_name(source: Path, preprocess: PreprocessConfig, label_scheme: str) -> str:
    return f"{safe_name(source)}-{cache_key(source, preprocess, label_scheme)[:12]}"


def _computed_from_request(
    source: Path, root: Path, preprocess: PreprocessConfig, label_scheme: str
) -> PreparedDataset | None:
    """A current cache prepared from ``preprocess`` with some of its dataset numbers unset
    (:meth:`PreprocessConfig.requests`), when the numbers it computed are ``preprocess``'s: a
    trained model's config (statistics and target spacing filled in) then reuses its training
    cache instead of preparing a twin."""
    for requested in preprocess.requests():
        name = _cache_name(source, requested, label_scheme)
        if not (root / name).is_dir():
            continue
        with _exclusive_lock(root / f".{name}.lock"):
            if not _is_current(root / name, source, requested, label_scheme):
                continue
            dataset = PreparedDataset(root / name)
        if dataset.manifest.preprocess == preprocess:
            return dataset
    return None


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (released by the kernel if we crash)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_current(cache_dir: Path, source: Path, cfg: PreprocessConfig, label_scheme: str) -> bool:
    """Whether the cache matches the settings and the source files as they are now."""
    try:
        manifest = PreparedDataset(cache_dir).manifest
    except InputError:
        return False
    cases_dir = cache_dir / "cases"
    if not all((cases_dir / e.case_id / "image.npy").is_file() for e in manifest.cases):
        return False  # someone deleted case files: rebuild rather than fail at training time
    same_settings = (
        manifest.source == str(source)
        and manifest.fingerprint == cfg.fingerprint()
        and manifest.label_scheme == label_scheme
    )
    if not same_settings:
        return False
    index = discover(source, label_scheme)
    now = {r.case_id: source_files(r) for r in index.cases}
    now.update({p.case_id: () for p in index.problems})
    recorded = {e.case_id: e.sources for e in (*manifest.cases, *manifest.skipped)}
    return now == recorded
