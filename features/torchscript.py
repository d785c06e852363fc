"""TorchScript is compiled, traced and loaded one model at a time in a process.

torch builds its table of builtin operators on the first compile, lazily and
without a lock (torch.jit._builtins._get_builtin_table publishes the table
empty, then fills it): a second thread compiling meanwhile finds F.pad missing
("builtin cannot be used as a value") and its network fails to build.  The
networks are built on several threads (the warm-up on the query thread, an
index run, a calibration), so every TorchScript step here holds this lock.
"""
from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager

_lock = threading.Lock()


@contextmanager
def one_at_a_time():
    """Hold while compiling, tracing, freezing or loading TorchScript.  torch 2.14 warns
    that TorchScript is deprecated at each step: quiet, it is what keeps networks ready."""
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
