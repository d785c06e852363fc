"""Ordered parallel map with a bounded number of items in flight."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def ordered_map(fn: Callable[[In], Out], items: Iterable[In], workers: int, window: int) -> Iterator[Out]:
    """Like map(), run in `workers` threads, never holding more than `window` results.

    ThreadPoolExecutor.map submits everything at once; with decoded images as
    results that would hold the whole collection in memory.
    """
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
