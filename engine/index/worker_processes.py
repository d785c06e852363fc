"""The indexing workers as processes, for machines with many cores.

A worker's C calls (decoding, OpenCV, resizing) release Python's global
interpreter lock, but the Python between them does not: on 16 cores, 16
worker threads did four times the work of one and no more than eight
(docs/benchmarks.md, Devices).  Processes each have their own lock.  They pay
for it in a start (importing OpenCV, NumPy and Pillow: about half a second
each, all at once) and in sending each prepared file back (the networks'
224-pixel input, the rows, region crops), so small runs and small machines
keep threads.

Processes are started fresh ('spawn'), never forked: the parent holds torch's
threads, perhaps a CUDA context and a running web server, none of which a
forked copy may touch.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

from engine.config import Config
from engine.index.parallel import completed_map
from features import registry

# Below this many files to extract, the processes' start costs more than threads lose.
PROCESS_MIN_FILES = 200
# Below this many cores, threads lose little: the lock is contended only by many.
PROCESS_MIN_CORES = 8
# Windows waits on at most 63 handles, the pool's own among them.
WINDOWS_MAX_PROCESSES = 61

_worker = None  # this process's Indexer, when it is a worker process


def stage(indexer, files: int) -> tuple[Callable[[list], Iterator], bool]:
    """How a run extracting `files` files prepares them: a function from the work to the
    prepared files, in finishing order, and whether it uses processes.

    Processes build their own extractors, so only from what the feature registry
    builds: anything else the indexer was handed (a stand-in) stays in threads."""
    config = indexer.config
    window = 4 * indexer.batch_size  # files in flight: the workers never wait for the networks
    names = sorted(registry.IN_WORKERS & set(indexer.extractors))
    own = all(type(indexer.extractors[name]) is registry.BY_NAME[name].build for name in names)
    if not (own and wanted(config, files)):
        return (lambda work: completed_map(indexer.prepare, work, config.threads, window)), False

    def new_pool(workers: int | None) -> ProcessPoolExecutor:
        return pool(config, names, workers)

    return (lambda work: completed_in_processes(prepare, work, window, new_pool, _crashed)), True


def completed_in_processes(fn: Callable, items: Iterable, window: int,
                           new_pool: Callable[[int | None], ProcessPoolExecutor],
                           crashed: Callable) -> Iterator:
    """fn over items in processes, each result as soon as it is ready (as completed_map).

    A process that dies (a crash inside a decoder, the kernel's out-of-memory killer)
    breaks the whole pool and every file in flight with it.  Each of those is then
    tried alone in a fresh process: the one that kills it again is answered
    crashed(item), the others their results, and the run goes on in a new pool."""
    items = iter(items)
    workers = new_pool(None)
    pending: dict[Future, object] = {}
    try:
        while True:
            for item in items:
                pending[workers.submit(fn, item)] = item
                if len(pending) >= window:
                    break
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = []
            for future in done:
                item = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken.append(item)
                    continue
                yield result
            if broken:
                suspects, pending = broken + list(pending.values()), {}
                workers.shutdown(wait=True, cancel_futures=True)
                for item in suspects:
                    yield _alone(fn, item, new_pool, crashed)
                workers = new_pool(None)
    finally:
        workers.shutdown(wait=True, cancel_futures=True)


def _alone(fn: Callable, item, new_pool: Callable[[int | None], ProcessPoolExecutor], crashed: Callable):
    with new_pool(1) as single:
        try:
            return single.submit(fn, item).result()
        except BrokenProcessPool:
            return crashed(item)


def wanted(config: Config, files: int) -> bool:
    """Whether a run extracting `files` files runs its workers as processes."""
    choice = config.worker_processes.lower()
    if choice in ("on", "yes", "1", "true"):
        return True
    if choice in ("off", "no", "0", "false"):
        return False
    return (os.cpu_count() or 1) >= PROCESS_MIN_CORES and files >= PROCESS_MIN_FILES


def pool(config: Config, feature_names: list[str], workers: int | None = None) -> ProcessPoolExecutor:
    """Worker processes (`config.threads` unless told), each with its own copies of the
    worker-stage extractors named."""
    workers = max(1, workers or config.threads)
    if os.name == "nt":
        workers = min(workers, WINDOWS_MAX_PROCESSES)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start, initargs=(config, feature_names))


def prepare(item):
    """The worker stage for one file, in a worker process (Indexer.prepare)."""
    return _worker.prepare(item)


def _crashed(item):
    from engine.index.pipeline import Prepared

    file, needs = item
    return Prepared(file=file, needs=needs, error="a worker process ended while reading this file "
                                                  "(a crash in a decoder, or out of memory)")


def _start(config: Config, feature_names: list[str]) -> None:
    global _worker
    from engine.index.pipeline import Indexer
    from engine.models.threads import quiet_helper_pools

    quiet_helper_pools()  # one picture per process: OpenCV's own threads would only compete
    # Ctrl-C reaches the whole process group: the parent stops the run and saves a checkpoint,
    # and shuts the pool down; a worker interrupted mid-file would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker = Indexer(config, {name: registry.build(name) for name in feature_names})
