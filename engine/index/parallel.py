"""Parallel map that yields results as they finish, with a bounded number in flight."""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, Iterator, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def completed_map(fn: Callable[[In], Out], items: Iterable[In], workers: int, window: int) -> Iterator[Out]:
    """fn over items in `workers` threads, each result yielded as soon as it is ready.

    In finishing order, not input order: one slow item (a 600 MP PNG takes
    seconds to stream) must not hold back the results behind it while the
    caller, which feeds them to the networks, sits idle.  At most `window`
    items are in flight: ThreadPoolExecutor.map submits everything at once,
    and with decoded images as results that would hold the whole collection
    in memory.  When the caller stops early (Ctrl-C, an error), items not yet
    started are cancelled instead of being worked through first.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    pending: set[Future] = set()
    try:
        for item in items:
            pending.add(pool.submit(fn, item))
            if len(pending) >= window:
                pending = yield from _first_finished(pending)
        while pending:
            pending = yield from _first_finished(pending)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _first_finished(pending: set[Future]):
    """Wait for at least one of `pending`, yield the results that are ready, return the rest."""
    done, rest = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        yield future.result()
    return rest
