#!/usr/bin/env python3
"""A very large library's fused-vector search: build, memory, latency, and what approximation costs.

The library is made from a real one (an index `image.py index` built of real designs,
such as Debian's openclipart-png): its own rows, then as many more as asked, each a
blend of three real designs' vectors with random weights (feature by feature with the
same weights, so a made-up design's colour and shape belong together).  Real edited
copies are planted: edits (engine/images/edits.py's kinds) of real designs in it,
extracted the way a search extracts an upload.  Then, in one run:

- build: the seconds to build the search snapshot (engine/index/snapshot.py: exact up
  to neighbours.exact_up_to rows, an inverted file of 8-bit codes beyond), and the
  process's peak RSS;
- search p50 / p95: the engine's search (engine/match/search.py) of each query's
  vectors, its candidates scored again from the stored vectors, top 10;
- recall@10: of the fused search (the snapshot's candidates, scored again from the
  stored vectors as the engine scores them) against an exact scan of every fused
  vector, for the planted copies and as many new blends (designs not in the library);
  at the shipped probes and the others asked for; and of the index's own 10 alone;
- planted-copy recall@10: the copy's original among the engine's 10, and among an
  exact scan's 10.

Thumbprints are blended the same way, and the planted copies' thumbprints looked up as a
search does (a scan of every row, or past that size the candidates of their coded index),
timed apart: the engine's search above is given vectors, not pictures.  Local features
are not in the made-up rows (docs/benchmarks.md, Scale).

With `--store milvus` the snapshot's lookups go to Milvus instead (engine/index/milvus.py):
build is then the seconds to send every row to its collections, and the searches ask it.

    python bench/scale.py --images N --cache CACHE --designs DIR [--planted 200] [--probes 8,16,64]
                          [--exact-up-to ROWS] [--store milvus [--milvus-uri URI]] [--json]

CACHE holds the real index (cache/index.npz) of the designs in DIR.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.images.edits import EDITS  # noqa: E402
from engine.config import Config  # noqa: E402
from engine.images.decode import decode  # noqa: E402
from engine.index import neighbours, store  # noqa: E402
from engine.index.snapshot import build_snapshot, fused_features  # noqa: E402
from engine.index.store import Entry, IndexData  # noqa: E402
from engine.match.search import MIN_FUSED_CANDIDATES, OVERFETCH, search  # noqa: E402
from engine.match.verify import twin_checks  # noqa: E402
from features import l2_normalize  # noqa: E402
from features.fusion import fuse  # noqa: E402
from features import FEATURE_NAMES, thumbprint  # noqa: E402

BLEND = 3  # real designs each made-up row is blended from
TOP = 10


def made_up_library(real: IndexData, features: tuple[str, ...], n: int, rng) -> IndexData:
    """`real`'s rows of `features` (and thumbprints), then blends of them up to `n` rows."""
    count = len(real)
    features = features + (("thumbprint",) if "thumbprint" in real.vectors else ())
    vectors = {name: np.empty((n, real.vectors[name].shape[1]), real.vectors[name].dtype) for name in features}
    for name in features:
        vectors[name][:count] = real.vectors[name]
    for start in range(count, n, neighbours.BLOCK):
        rows = min(neighbours.BLOCK, n - start)
        sources = rng.integers(0, count, (rows, BLEND))
        shares = rng.dirichlet(np.ones(BLEND), rows).astype(np.float32)
        for name in features:
            blend = np.einsum("rb,rbd->rd", shares, real.vectors[name][sources].astype(np.float32))
            # Thumbprints are grey levels, stored as bytes; the others unit rows.
            vectors[name][start:start + rows] = np.round(blend) if name == "thumbprint" else l2_normalize(blend)
    entries = real.entries + [Entry(f"made-up/{i:07d}.png", 1000, i, f"{i:064x}", 512, 512) for i in range(count, n)]
    present = {name: np.ones(n, bool) for name in features}
    return IndexData(entries=entries, vectors=vectors, fingerprints={f: real.fingerprints[f] for f in features},
                     present=present)


def planted_queries(real: IndexData, designs: Path, engine, features, count: int, rng
                    ) -> tuple[list[dict], list[int], list[np.ndarray]]:
    """Query vectors of edited copies of `count` real designs, each one's row, and its thumbprint."""
    pick = random.Random(int(rng.integers(1 << 30)))
    queries, rows, grids = [], [], []
    for row in rng.permutation(len(real)):
        if len(rows) == count:
            break
        try:
            image = decode((designs / real.entries[row].path).read_bytes()).image
        except (OSError, ValueError):
            continue
        edit = pick.choice(sorted(EDITS))
        upload = io.BytesIO()
        EDITS[edit](image, pick).save(upload, "PNG")
        picture = engine.decode_query(upload.getvalue()).image
        queries.append(engine.networks.embed(picture, features))
        rows.append(int(row))
        grids.append(thumbprint.grid(picture))
    return queries, rows, grids


def new_designs(real: IndexData, features, count: int, rng) -> list[dict]:
    """Blends not in the library: queries whose nearest rows are whatever they are."""
    sources = rng.integers(0, len(real), (count, BLEND))
    shares = rng.dirichlet(np.ones(BLEND), count).astype(np.float32)
    blends = {n: l2_normalize(np.einsum("rb,rbd->rd", shares, real.vectors[n][sources])) for n in features}
    return [{n: blends[n][i:i + 1] for n in features} for i in range(count)]


def exact_top(data: IndexData, features, weights, fused_queries: np.ndarray) -> np.ndarray:
    """Each query's TOP rows by an exact scan of every fused vector, block by block."""
    best_scores = np.full((len(fused_queries), TOP), -np.inf, np.float32)
    best_rows = np.zeros((len(fused_queries), TOP), np.int64)
    for start in range(0, len(data), neighbours.BLOCK):
        block = fuse({n: data.vectors[n][start:start + neighbours.BLOCK] for n in features}, weights)
        scores = np.concatenate([best_scores, fused_queries @ block.T], axis=1)
        rows = np.concatenate([best_rows, np.broadcast_to(np.arange(start, start + len(block)),
                                                          (len(fused_queries), len(block)))], axis=1)
        keep = np.argsort(-scores, axis=1)[:, :TOP]
        best_scores, best_rows = np.take_along_axis(scores, keep, 1), np.take_along_axis(rows, keep, 1)
    return best_rows


def nearest_real(data: IndexData, real_count: int, features, weights, rng, sample: int = 300) -> tuple[float, float]:
    """Median cosine of a real row to its nearest other real row, and of a made-up row to
    its nearest real row: whether the made-up rows sit among the real ones as they sit
    among themselves."""
    real = fuse({n: data.vectors[n][:real_count] for n in features}, weights)
    own = rng.choice(real_count, sample, replace=False)
    scores = real[own] @ real.T
    scores[np.arange(sample), own] = -1
    made_up = rng.integers(real_count, len(data), sample) if len(data) > real_count else own
    blends = fuse({n: data.vectors[n][made_up] for n in features}, weights)
    return float(np.median(scores.max(axis=1))), float(np.median((blends @ real.T).max(axis=1)))


def rescored(snapshot, fused_queries: np.ndarray, probes: int | None) -> np.ndarray:
    """The TOP rows of the search's fused candidates by their exact scores, as the engine
    ranks them (engine/match/search.py scores its candidates from the stored vectors)."""
    candidates = max(TOP * OVERFETCH, MIN_FUSED_CANDIDATES)
    _, rows = snapshot.index.search(fused_queries, candidates, probes=probes)
    best = []
    for query, found in zip(fused_queries, rows):
        found = found[found >= 0]
        exact = fuse({n: snapshot.data.vectors[n][found] for n in snapshot.features}, snapshot.weights) @ query
        best.append(found[np.argsort(-exact)[:TOP]])
    return np.array(best)


def thumbprint_lookups(snapshot, grids: list[np.ndarray], originals: list[int]) -> dict:
    """Twins of the planted copies' thumbprints by a scan of every row against the snapshot's
    own way (its coded index's candidates, where it has one): times, how many of the
    scan's twins it finds (it keeps the TWIN_CANDIDATES nearest), and whether the copy's
    original is among them, as it is among the scan's."""
    whole, own, found, twins, originals_found = [], [], 0, 0, [0, 0]
    for grid, original in zip(grids, originals):
        started = time.perf_counter()
        every = twin_checks(grid, snapshot.thumbprints)
        whole.append(time.perf_counter() - started)
        started = time.perf_counter()
        mine = twin_checks(grid, snapshot.thumbprints, rows=snapshot.thumbprint_candidates(grid))
        own.append(time.perf_counter() - started)
        twins, found = twins + len(every), found + len(every.keys() & mine.keys())
        originals_found[0] += original in mine
        originals_found[1] += original in every
    kind = "in the store" if snapshot.in_store else "8-bit codes"
    return {"thumbprint_index": kind if snapshot.thumbprint_index is not None else "scanned whole",
            "thumbprint_scan_p50_ms": round(1000 * float(np.median(whole)), 1),
            "thumbprint_lookup_p50_ms": round(1000 * float(np.median(own)), 1),
            "thumbprint_twins_found": f"{found} of {twins}",
            "planted_original_a_twin": f"{originals_found[0]} (scan: {originals_found[1]}) of {len(grids)}"}


def coded(index) -> bool:
    """Whether the snapshot chose 8-bit codes for this index (they keep no vectors)."""
    try:
        index.vectors()
    except TypeError:
        return True
    return False


def overlap(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / TOP for f, t in zip(found, truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--cache", type=Path, required=True, help="cache folder holding the real designs' index")
    parser.add_argument("--designs", type=Path, required=True, help="the folder that index was built of")
    parser.add_argument("--planted", type=int, default=200)
    parser.add_argument("--probes", default="8,16,64", help="other probe counts to report recall at")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--exact-up-to", type=int, help="rows up to which the search index is exact "
                        "(to measure the choice; default: neighbours.exact_up_to of the fused vectors' size)")
    parser.add_argument("--store", choices=("faiss", "milvus"), default="faiss")
    parser.add_argument("--milvus-uri", help="a Milvus server (default: Milvus Lite in a temporary folder)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from engine import Engine

    rng = np.random.default_rng(args.seed)
    engine = Engine(Config(images=args.designs, cache=args.cache))
    config_weights = engine.config.weights
    real = store.load(args.cache / "index.npz")
    features, weights = fused_features(real, tuple(FEATURE_NAMES), config_weights)
    dim = sum(real.vectors[n].shape[1] for n in features)
    if args.exact_up_to is not None:
        neighbours.EXACT_SCAN_VALUES = args.exact_up_to * dim
    planted, originals, grids = planted_queries(real, args.designs, engine, features, args.planted, rng)
    others = new_designs(real, features, args.planted, rng)
    engine.close()
    del engine
    data = made_up_library(real, features, max(args.images, len(real)), rng)
    real_count = len(real)
    del real

    milvus = milvus_store(args.milvus_uri) if args.store == "milvus" else None
    started = time.perf_counter()
    snapshot = build_snapshot(data, features, weights, store=milvus)
    if milvus is not None:
        indexed(milvus)
    build_s = time.perf_counter() - started
    queries = planted + others
    fused_queries = np.concatenate([fuse({n: q[n].reshape(1, -1) for n in features}, weights) for q in queries])
    truth = exact_top(data, features, weights, fused_queries)

    seconds, engine_top = [], []
    for query in queries:
        started = time.perf_counter()
        results = search(snapshot, query, None, TOP, config_weights, FEATURE_NAMES)
        seconds.append(time.perf_counter() - started)
        engine_top.append([snapshot.row_of[r.path] for r in results])
    planted_engine = np.mean([row in top for row, top in zip(originals, engine_top)])
    planted_exact = np.mean([row in top for row, top in zip(originals, truth)])
    approximate = coded(snapshot.index) and not snapshot.in_store
    shipped = neighbours.SEARCH_PROBES if approximate else None
    recalls, raw = {}, {}
    for probes in sorted({shipped, *(int(p) for p in args.probes.split(",") if p)}) if approximate else [None]:
        key = "exact" if probes is None else probes
        _, found = snapshot.index.search(fused_queries, TOP, probes=probes)
        raw[key] = overlap(found, truth)
        recalls[key] = overlap(rescored(snapshot, fused_queries, probes), truth)
    figures = {
        "images": len(data), "features": list(features), "dim": dim,
        "index": index_kind(snapshot, milvus, approximate), "probes": shipped, "build_s": round(build_s, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "search_p50_ms": round(1000 * float(np.percentile(seconds, 50)), 1),
        "search_p95_ms": round(1000 * float(np.percentile(seconds, 95)), 1),
        "recall_at_10": round(recalls[shipped if approximate else "exact"], 4),
        "recall_at_10_by_probes": {str(k): round(v, 4) for k, v in recalls.items()},
        "index_alone_recall_at_10_by_probes": {str(k): round(v, 4) for k, v in raw.items()},
        "planted_recall_at_10": round(float(planted_engine), 4),
        "planted_recall_at_10_exact": round(float(planted_exact), 4),
        "queries": len(queries), "planted": len(planted),
        **(thumbprint_lookups(snapshot, grids, originals) if snapshot.thumbprints is not None else {}),
        "nearest_real_cosine_median": dict(zip(("real", "made_up"), (
            round(c, 3) for c in nearest_real(data, real_count, features, weights, rng)))),
    }
    if milvus is not None:
        for name in ("fused", "thumbprints"):  # a server keeps them: a bench's are its own to drop
            milvus._request("drop_collection", f"{milvus.prefix}_{name}")
        milvus.close()
    for key, value in figures.items():
        print(f"{key}: {value}")
    if args.json:
        print(json.dumps(figures))


def milvus_store(uri: str | None):
    """A store of collections of their own: in Milvus Lite in a temporary folder, or on `uri`."""
    from engine.index.milvus import MilvusStore

    uri = uri or str(Path(tempfile.mkdtemp(prefix="lookalike-scale-")) / "scale.db")
    name = f"scale_{uuid.uuid4().hex[:8]}"
    return MilvusStore(uri, name, name, timeout_s=600)


def indexed(milvus, limit_s: float = 1800) -> None:
    """Wait for a server to finish indexing what it was sent: until then it searches the new
    rows through a coarse interim index, which is not the index being measured."""
    deadline = time.monotonic() + limit_s
    for name, field in (("fused", "vector"), ("thumbprints", "vector")):
        while time.monotonic() < deadline:
            state = milvus._request("describe_index", f"{milvus.prefix}_{name}", index_name=field)
            if int(state.get("pending_index_rows", 0)) == 0 and state.get("indexed_rows") == state.get("total_rows"):
                break
            time.sleep(1)  # a server's progress is only visible by asking


def index_kind(snapshot, milvus, approximate: bool) -> str:
    if milvus is not None:
        from engine.index.milvus import index_kind as kind_on

        dim = sum(snapshot.data.vectors[n].shape[1] for n in snapshot.features)
        return f"milvus {kind_on(milvus.uri, False, snapshot.size, dim)['index_type']} ({milvus.uri})"
    return "ivf-sq8" if approximate else "exact"


if __name__ == "__main__":
    main()
