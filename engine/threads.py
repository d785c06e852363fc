"""One BLAS thread: the cores belong to the networks' and FAISS's OpenMP teams.

NumPy, FAISS and OpenCV each bring their own OpenBLAS, and each keeps worker
threads spinning for a while after every call.  The engine's own BLAS calls
are matrix-vector products (a query against the thumbprints, cosines of a few
dozen rows) that gain nothing from threads, but the spinning workers they
leave behind took the two cores from the local-feature search that follows:
on 8,121 designs its FAISS scan took 41-56 ms per view instead of 25, and a
whole search (no networks) 156 ms instead of 98 (p50, 40 uploads).
"""
from __future__ import annotations

import threading

from threadpoolctl import threadpool_limits

_done = threading.Lock()
_limited = False


def one_blas_thread() -> None:
    """Limit every BLAS library loaded so far to one thread (once per process)."""
    global _limited
    with _done:
        if not _limited:
            threadpool_limits(limits=1, user_api="blas")
            _limited = True
