"""One thread for the BLAS libraries that keep their own: the cores belong to the
networks' and FAISS's OpenMP teams.

NumPy and OpenCV each bring an OpenBLAS built on its own thread pool, whose
workers keep spinning for a while after every call.  The engine's own BLAS
calls are matrix-vector products (a query against the thumbprints, cosines of
a few dozen rows) that gain nothing from threads, but the spinning workers they
left behind took the two cores from the local-feature search that follows (on
8,121 designs its FAISS scan ran at half speed).

FAISS's own OpenBLAS is left alone: it is built on OpenMP, and setting its
threads sets the calling thread's OpenMP team, which is FAISS's own (its scan
would run on one core).
"""
from __future__ import annotations

import threading

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_done = False


def one_blas_thread() -> None:
    """Limit every pool-threaded BLAS loaded so far to one thread (once per process)."""
    global _done
    with _lock:
        if _done:
            return
        for library in ThreadpoolController().select(user_api="blas").lib_controllers:
            if library.info().get("threading_layer") != "openmp":
                library.set_num_threads(1)
        _done = True
