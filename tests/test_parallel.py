"""The indexer's worker map: every item once, slow items never block fast ones, bounded memory."""
import threading

from engine.index import parallel
from engine.index.parallel import completed_map


def test_every_result_arrives_once():
    results = list(completed_map(lambda x: x * x, range(50), workers=2, window=4))
    assert sorted(results) == [x * x for x in range(50)]


def test_a_slow_item_does_not_hold_back_those_behind_it():
    released = threading.Event()

    def work(x):
        if x == 0:  # an enormous PNG: done only once the caller has had something else
            assert released.wait(timeout=300)
        return x

    results = completed_map(work, range(6), workers=2, window=4)
    first = next(results)
    released.set()
    assert first != 0
    assert sorted([first, *results]) == list(range(6))


def test_no_more_than_the_window_is_taken_ahead_of_the_caller():
    taken = []

    def items():
        for x in range(100):
            taken.append(x)
            yield x

    results = completed_map(lambda x: x, items(), workers=1, window=3)
    next(results)
    assert len(taken) <= 3
    results.close()


def test_stopping_early_cancels_the_items_not_started(monkeypatch):
    # Ctrl-C during a reindex must not first work through the whole window of queued images.
    # The worker holds its second item until the pool has cancelled what is queued, so
    # how the scheduler shares the cores cannot change which items get started.
    cancelled = threading.Event()

    class Pool(parallel.ThreadPoolExecutor):
        def shutdown(self, wait=True, *, cancel_futures=False):
            super().shutdown(wait=False, cancel_futures=cancel_futures)
            cancelled.set()
            super().shutdown(wait=wait)

    monkeypatch.setattr(parallel, "ThreadPoolExecutor", Pool)
    calls = []

    def work(x):
        calls.append(x)
        if x > 0:
            assert cancelled.wait(timeout=60), "the map was never shut down"
        return x

    results = completed_map(work, range(200), workers=1, window=64)
    assert next(results) == 0
    results.close()
    assert set(calls) <= {0, 1}  # the one item running at close may finish; no queued one starts
