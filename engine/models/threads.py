"""One thread for the helper libraries that keep pools of their own: the cores
belong to the indexing workers and to the networks' and FAISS's OpenMP teams.

NumPy and OpenCV each bring an OpenBLAS built on its own thread pool, and
OpenCV has a pool of its own for its functions; all of them keep their
threads spinning for a while after every call.  The engine's calls into them
gain nothing from threads: its BLAS calls are matrix-vector products (a query
against the thumbprints, cosines of a few dozen rows), and its OpenCV calls
(local features, colour, resizing) run in the indexing workers, one picture
each, already as many as there are cores.  The spinning workers they left
behind took the cores from the local-feature search that follows (on 8,121
designs its FAISS scan ran at half speed), and from the other workers.

FAISS's own OpenBLAS is left alone: it is built on OpenMP, and setting its
threads sets the calling thread's OpenMP team, which is FAISS's own (its scan
would run on one core).
"""
from __future__ import annotations

import contextlib
import threading

from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_done = False


def quiet_helper_pools() -> None:
    """One thread for every pool-threaded BLAS loaded so far, and for OpenCV (once per process)."""
    global _done
    with _lock:
        if _done:
            return
        import cv2

        cv2.setNumThreads(1)
        for library in ThreadpoolController().select(user_api="blas").lib_controllers:
            if library.info().get("threading_layer") != "openmp":
                library.set_num_threads(1)
        _done = True


@contextlib.contextmanager
def torch_on_one_thread(when: bool):
    """torch's CPU work on one thread for the block, `when` the networks run on a GPU.

    The thread that feeds a GPU does little on the CPU (stacking pictures, copies), but
    each of torch's parallel calls wakes its OpenMP team, which then spins waiting for
    more and takes the cores from the indexing workers: on a 16-core machine with
    worker processes, the pipeline ran at 221 img/s with the team and 285 without it
    (docs/benchmarks.md, Devices)."""
    if not when:
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
