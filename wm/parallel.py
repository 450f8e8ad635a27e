"""The one parallel abstraction: `pool.map(fn, items)` over workers, results in input order.

Two backends behind it, picked by the runtime setting ``WM_BACKEND`` (it changes where work runs, never what
it computes): local processes (`WorkerPool`, the default) or Ray actors (`RayWorkerPool`), which run on this
machine or on the cluster that ``RAY_ADDRESS`` names. Every work item is a pure function of its inputs (each
episode seeds its own track and noise) and results come back in input order, so outputs are byte-identical
on either backend and for any worker count (tests/test_parallel.py).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from wm.errors import WmError
from wm.interrupt import raise_if_interrupted
from wm.runtime import RuntimeSettings, available_cores

# How often a worker looks for its parent; an orphan plays at most this long past its stage's death.
_PARENT_POLL_S = 0.5


def _exit_with_parent(parent: int) -> None:
    """A worker's watchdog: exit once the stage process is gone. Killed by SIGKILL or the OOM killer, the stage
    cannot shut its pool down, and its workers would play out their queued episodes as orphans."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os._exit(1)


def _init_worker_process(initializer: Callable, initargs: tuple, parent: int | None) -> None:
    """Set up a local pool's process (`parent`: the stage's pid) or a Ray actor (None: Ray ends its actors)."""
    import torch

    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="exit-with-parent").start()
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
        self.workers = workers
        self.pool = None
        if workers == 1:
            initializer(*initargs)
        else:
            context = mp.get_context("spawn")
            init = (initializer, initargs, os.getpid())
            self.pool = ProcessPoolExecutor(workers, context, _init_worker_process, init)

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        results = map(fn, items) if self.pool is None else self.pool.map(fn, items)
        for result in results:
            raise_if_interrupted()
            yield result

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.pool is None:
            return
        if exc_type is not None:  # an early exit (error, Ctrl-C, SIGTERM): stop the work in flight too
            # Python 3.14 has ProcessPoolExecutor.terminate_workers; before it, the executor's process table.
            for process in list(self.pool._processes.values()):
                process.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)  # drop queued work instead of finishing it


# Work items in flight per Ray actor: the next one is queued while the current one runs, so an actor on another
# node never waits a network round trip between items.
_RAY_QUEUE_DEPTH = 2


class _RayWorker:
    """A Ray actor holding one worker's state (envs, models), set up once like a pool process."""

    def __init__(self, initializer: Callable, initargs: tuple):
        _init_worker_process(initializer, initargs, None)

    def run(self, fn: Callable, item: object) -> object:
        return fn(item)


def connect_ray(num_cpus: int | None = None) -> None:
    """Join the Ray cluster that ``RAY_ADDRESS`` names, or start Ray on this machine with `num_cpus` CPUs
    (default: its available cores). Once connected, later calls keep the connection.

    The `wm` package is shipped to the workers (`py_modules`), so cluster nodes need the locked dependencies
    (requirements.lock) but not this checkout.
    """
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"py_modules": [str(Path(__file__).resolve().parent)]}
    # Worker logs reach this terminal; Ray's own INFO lines (start-up, autoscaler) would bury the progress bar.
    options = {"runtime_env": runtime_env, "logging_level": logging.WARNING, "configure_logging": True}
    try:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(**options)
        else:
            ray.init(num_cpus=num_cpus or available_cores(), include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise WmError(f"WM_BACKEND=ray: cannot start or reach Ray ({err}); check RAY_ADDRESS") from None


class RayWorkerPool(WorkerPool):
    """`map(fn, items)` over `workers` Ray actors of one CPU each, results in input order.

    Items go to whichever actor frees up first (like the process pool's shared queue), so a slow node
    does not hold back the others; results are reordered before they are yielded.
    """

    def __init__(self, workers: int, initializer: Callable, initargs: tuple):
        import ray

        connect_ray()
        self.workers, self.pool = workers, None
        actor = ray.remote(num_cpus=1)(_RayWorker)
        self.actors = [actor.remote(initializer, initargs) for _ in range(workers)]

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        import ray

        todo = enumerate(items)
        pending: dict = {}  # ObjectRef -> (item index, actor)
        done: dict[int, object] = {}

        def give(actor) -> None:
            for i, item in itertools.islice(todo, 1):
                pending[actor.run.remote(fn, item)] = (i, actor)

        for actor in self.actors:
            for _ in range(_RAY_QUEUE_DEPTH):
                give(actor)
        following = 0
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            i, actor = pending.pop(ref)
            done[i] = ray.get(ref)  # re-raises the item's exception (a subclass of the original type)
            give(actor)
            while following in done:
                raise_if_interrupted()
                yield done.pop(following)
                following += 1

    def __exit__(self, *exc) -> None:
        import ray

        for actor in self.actors:  # queued and running items die with their actors
            ray.kill(actor)


def ray_cpus() -> int:
    """CPUs of the Ray cluster this process is connected to (starting one locally if needed)."""
    import ray

    connect_ray()
    return int(ray.cluster_resources().get("CPU", 1))


def pool_workers(runtime: RuntimeSettings, most: int) -> int:
    """The workers `open_pool` starts for at most `most` work items: the runtime's (0 = every core of this
    machine or of the Ray cluster), no more than `most` since more would idle."""
    if runtime.backend == "ray":
        return max(1, min(runtime.workers or ray_cpus(), most))
    return max(1, min(runtime.num_workers, most))


def open_pool(runtime: RuntimeSettings, most: int, initializer: Callable, initargs: tuple) -> WorkerPool:
    """The pool the runtime settings ask for (backend, `pool_workers` workers)."""
    pool = RayWorkerPool if runtime.backend == "ray" else WorkerPool
    return pool(pool_workers(runtime, most), initializer, initargs)
