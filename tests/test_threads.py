"""The engine leaves the cores to the networks' and FAISS's own thread teams."""
from threadpoolctl import threadpool_info

from engine.core import Engine


def test_an_engine_caps_every_bundled_blas_at_one_thread(cfg):
    Engine(cfg)
    blas = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert blas and all(lib["num_threads"] == 1 for lib in blas)
