"""Run one function over many items on all cores, in order, with a progress bar."""

from __future__ import annotations

import multiprocessing
import signal
from typing import Callable, Sequence, TypeVar

from tqdm import tqdm

from demakeup_dist.machine import available_cores

T = TypeVar("T")
R = TypeVar("R")


def worker_count(workers: int | None) -> int:
    """`--workers`: None means every core this process may use; less than 1 is an error."""
    workers = available_cores() if workers is None else workers
    if workers < 1:
        raise ValueError(f"--workers {workers}: must be at least 1")
    return workers


def ignore_sigint() -> None:
    # Ctrl-C must reach only the parent, which stops the pool and removes its temporary output;
    # otherwise every worker prints its own KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int | None,
    desc: str,
    progress: bool,
    weights: Sequence[int] | None = None,
    unit: str = "it",
) -> list[R]:
    """[fn(item) for item in items], spread over `workers` processes (None: all cores).

    `fn` must be a picklable top-level function. The bar advances by `weights[i]` when item i is done
    (default 1 each). Results keep the order of `items`, so the output never depends on `workers`.
    """
    workers = worker_count(workers)
    weights = list(weights) if weights is not None else [1] * len(items)
    results: list[R] = []
    with tqdm(total=sum(weights), desc=desc, unit=unit, disable=not progress, dynamic_ncols=True) as bar:
        if workers == 1 or len(items) <= 1:
            for item, weight in zip(items, weights):
                results.append(fn(item))
                bar.update(weight)
            return results
        chunksize = max(1, min(16, len(items) // (workers * 8)))
        with multiprocessing.Pool(min(workers, len(items)), initializer=ignore_sigint) as pool:
            for result, weight in zip(pool.imap(fn, items, chunksize=chunksize), weights):
                results.append(result)
                bar.update(weight)
    return results
