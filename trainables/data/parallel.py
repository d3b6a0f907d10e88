"""One case at a time, in this process or a pool of processes: shared by cache preparation and
synthetic-data generation, whose cases are independent and cost seconds each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, TypeVar

Result = TypeVar("Result")


def map_cases(
    fn: Callable[..., Result],
    jobs: Sequence[tuple[Any, ...]],
    names: Sequence[str],
    workers: int,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Result]:
    """``fn(*job)`` for every job, the results in job order.

    Args:
        fn: a module-level function (the pool pickles it by name).
        jobs: one argument tuple per case.
        names: each job's case id, for ``progress``.
        workers: processes (1 or fewer: serially, in this process).
        progress: called as ``progress(done, total, name)`` as each job finishes (in any order
            with a pool).
    """
    total = len(jobs)
    if workers <= 1 or total <= 1:
        results = []
        for done, (job, name) in enumerate(zip(jobs, names, strict=True), start=1):
            results.append(fn(*job))
            if progress:
                progress(done, total, name)
        return results
    # spawn, not fork: callers (Ray workers, torch) run threads that fork would copy mid-lock.
    spawn = get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=spawn) as pool:
        futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
        slots: list[Any] = [None] * total
        for done, future in enumerate(as_completed(futures), start=1):
            i = futures[future]
            slots[i] = future.result()
            if progress:
                progress(done, total, names[i])
    return slots
