"""The engine leaves the cores to the networks' and FAISS's own thread teams."""
import faiss
from threadpoolctl import threadpool_info

from engine import Engine


def test_an_engine_caps_pool_threaded_blas_at_one_thread_and_leaves_faiss_its_cores(cfg):
    threads = faiss.omp_get_max_threads()
    Engine(cfg)
    pooled = [lib for lib in threadpool_info() if lib["user_api"] == "blas" and lib["threading_layer"] != "openmp"]
    assert pooled and all(lib["num_threads"] == 1 for lib in pooled)
    assert faiss.omp_get_max_threads() == threads  # FAISS's OpenMP team keeps every core


def test_an_engine_holds_opencv_to_one_thread_the_indexing_workers_are_its_parallelism(cfg):
    import cv2

    Engine(cfg)
    assert cv2.getNumThreads() == 1
