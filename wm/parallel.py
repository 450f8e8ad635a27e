"""The one parallel abstraction: `WorkerPool.map(fn, items)` over worker processes, results in input order."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

from wm.interrupt import raise_if_interrupted


def _init_worker_process(initializer: Callable, initargs: tuple) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core: intra-op threads would only contend
    initializer(*initargs)


class WorkerPool:
    """`map(fn, items)` over `workers` processes, results in input order; in-process when workers == 1.

    concurrent.futures rather than multiprocessing.Pool: a worker that dies (or whose initializer
    raises) surfaces as BrokenProcessPool instead of a Pool that silently respawns workers and hangs.
    spawn, not fork: workers must not inherit torch's thread pools or the parent's open HDF5 handles.
    The pool lives as long as the `with` block, so per-worker set-up (envs, models) is paid once. Worker
    processes run torch on one thread; with one worker, the work runs in this process, threads untouched.
    """

    def __init__(self, workers: int, initializer: Callable, initargs: tuple):
        self.pool = None
        if workers == 1:
            initializer(*initargs)
        else:
            context = mp.get_context("spawn")
            self.pool = ProcessPoolExecutor(workers, context, _init_worker_process, (initializer, initargs))

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        results = map(fn, items) if self.pool is None else self.pool.map(fn, items)
        for result in results:
            raise_if_interrupted()
            yield result

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:  # on an early exit (error, Ctrl-C) drop queued work instead of finishing it
            self.pool.shutdown(wait=True, cancel_futures=True)
