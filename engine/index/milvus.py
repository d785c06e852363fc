"""Milvus as the store searches ask for neighbours: fused vectors, thumbprints, ORB descriptors.

The metadata, and every vector the search scores its candidates with again,
stay in Lookalike's own index file; Milvus holds copies it can search, one
collection per lookup, named `<prefix>_fused`, `<prefix>_thumbprints` and
`<prefix>_orb`.  Each collection is brought up to date with the index file
row by row (keyed by the design's path and bytes), so an interrupted update
goes on where it stopped, and a design that did not change is never sent
again.  A collection's description records which Lookalike index wrote it
and with which features: another index's collection is refused, and this
index's own collection of an older feature set is rebuilt, never mixed.

A path ending in `.db` is Milvus Lite, in this process; an http(s) address is
a Milvus server.  Lite builds only exact indexes (FLAT, BIN_FLAT); a server gets
the index FAISS would get in this process for as many rows: flat, then IVF_SQ8
and BIN_IVF_FLAT (`index_kind`; docs/deploy-milvus.md).
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from engine.index import neighbours
from engine.index.neighbours import CODE_PROBES, EXACT_CODES_BELOW, IN_PROCESS, CodeIndex, code_lists
from features.files import atomic_write

log = logging.getLogger(__name__)

# A descriptor's id is its owner's key shifted past its slot (ORB keeps at most 400 points,
# features/orb.py): both within Milvus's signed 64-bit primary key.
SLOT_BITS = 10
KEY_BITS = 63 - SLOT_BITS
# An insert request carries about this many bytes of vectors (at most INSERT_ROWS rows):
# Milvus Lite 2.5 took 0.9 s to take 8,192 rows of 1,536 floats in 1.5 MB requests and
# 171 s in one 50 MB request (its cost grows faster than the request).
INSERT_BYTES = 512 * 1024
INSERT_ROWS = 4096
# Queries per search request.
SEARCH_VECTORS = 256
SEARCH_CODES = 4096
# Milvus's own bound on a query iterator's batch.
ITERATOR_BATCH = 16384
# Milvus Lite keeps a store's binary codes only up to this many (its flat scan is then as
# fast as FAISS's; neighbours.EXACT_CODES_BELOW); beyond, they are searched in this process.
LITE_CODES = EXACT_CODES_BELOW
# The owners' ledger: Milvus needs a vector in every collection; this one's is a placeholder.
LEDGER_DIM = 2
LEDGER_VECTOR = [1.0, 0.0]
OWNERS_PER_DELETE = 64
# After a failed connection, requests fail at once for this long instead of each waiting.
RETRY_AFTER_S = 5.0
MAGIC = "lookalike"


class StoreError(RuntimeError):
    """The store cannot answer; searches fail with 503 and this message."""


class StoreUnavailable(StoreError):
    """The Milvus server (or Lite file) cannot be reached; the message says why."""


class StoreMismatch(StoreError):
    """A collection holds another index's vectors, or has the wrong shape."""


def key_of(*parts: str) -> int:
    """A stable KEY_BITS-bit key of a row's identity (its path and its bytes' hash)."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - KEY_BITS)


def owner_id(cache: Path) -> str:
    """This index's name in the collections it writes, kept beside the index file."""
    path = cache / "milvus-owner"
    if path.exists():
        return path.read_text().strip()
    owner = uuid.uuid4().hex
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda out: out.write(owner.encode()))
    return owner


def is_lite(uri: str) -> bool:
    return uri.endswith(".db")


def open_store(config) -> "MilvusStore | None":
    """The store `config` asks for: None searches in this process (FAISS)."""
    if config.store != "milvus":
        return None
    return MilvusStore(config.milvus_address, config.collection, owner_id(config.cache),
                       token=os.environ.get("LOOKALIKE_MILVUS_TOKEN", ""))


class MilvusStore:
    """One connection to Milvus, shared by every collection of one Lookalike index."""

    def __init__(self, uri: str, prefix: str, owner: str, timeout_s: float = 10.0, token: str = "") -> None:
        self.uri, self.prefix, self.owner = uri, prefix, owner
        self.address = _without_secrets(uri)  # what messages and /health show
        self._timeout_s, self._token = timeout_s, token
        self._client = None
        self._failed_at = 0.0
        self._lock = threading.Lock()
        self.problem: str | None = None  # the last failure, until a request succeeds again
        self.local_features_here = False  # Lite, with too many codes to scan flat (LITE_CODES)

    # -- the lookups ---------------------------------------------------------
    def vectors(self, name: str, dim: int, keys: np.ndarray, rows: Callable, signature: str,
                present: np.ndarray | None = None) -> "MilvusVectors":
        """Unit float vectors searched by inner product: row i is `rows` of i, keyed keys[i];
        rows not `present` are left out.  Searches answer row numbers."""
        wanted = np.flatnonzero(np.ones(len(keys), bool) if present is None else present)
        collection = self._collection(name, signature, dim, binary=False, size=len(wanted))
        have = self._ids(collection)
        gone = np.setdiff1d(have, keys[wanted])
        self._delete(collection, gone)
        missing = wanted[~np.isin(keys[wanted], have)]
        step = rows_per_insert(dim * 4)
        for start in range(0, len(missing), step):
            which = np.sort(missing[start:start + step])
            block = np.asarray(rows(which), np.float32)
            self._request("insert", collection, [{"id": int(keys[r]), "vector": v} for r, v in zip(which, block)])
        if len(missing) or len(gone):
            self._request("flush", collection)
        kind = index_kind(self.uri, False, len(wanted), dim)
        self._index_for(collection, "vector", kind)
        return MilvusVectors(self, collection, keys, wanted, kind)

    def codes(self, name: str, keys: np.ndarray, counts: np.ndarray, codes: np.ndarray,
              signature: str) -> CodeIndex:
        """Binary codes searched by Hamming distance: owner i (keyed keys[i]) holds the next
        counts[i] rows of `codes`.  Searches answer each code's position in `codes`."""
        if is_lite(self.uri) and len(codes) > LITE_CODES:
            # Lite's one binary index is a flat scan: a search's 800 points against 8,121
            # designs' 3.2 million codes took 4.6 s there, against milliseconds in FAISS's lists.
            if not self.local_features_here:
                log.info("Milvus Lite: the %d local-feature codes are searched in this process "
                         "(Lite scans binary codes flat; a Milvus server keeps them)", len(codes))
            self.local_features_here = True
            return IN_PROCESS.codes(name, keys, counts, codes, signature)
        self.local_features_here = False
        collection = self._collection(name, signature, codes.shape[1] * 8, binary=True, size=len(codes))
        # One row per owner whose codes have all arrived, written after them: an update reads
        # the owners (one a design), not every code (hundreds a design).
        ledger = self._collection(f"{name}_owners", signature, LEDGER_DIM, binary=False, size=len(keys))
        complete = self._ids(ledger)
        gone = np.setdiff1d(complete, keys)
        self._delete_owners(collection, gone)
        self._delete(ledger, gone)
        if len(gone):  # a server counts deleted rows until a flush applies the deletes
            self._request("flush", collection)
        sent = np.isin(keys, complete)
        if self._count(collection) != int(counts[sent].sum()):
            self._delete_strays(collection, keys[sent])  # an update stopped between codes and ledger
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        step, batch, finished = rows_per_insert(codes.shape[1]), [], []
        for owner in np.flatnonzero(~sent):
            key = int(keys[owner])
            batch += [{"id": (key << SLOT_BITS) | slot, "code": codes[offsets[owner] + slot].tobytes()}
                      for slot in range(int(counts[owner]))]
            finished.append(key)
            if len(batch) >= step:
                self._send_codes(collection, ledger, batch, finished)
                batch, finished = [], []
        if finished:
            self._send_codes(collection, ledger, batch, finished)
        if (~sent).any():  # sealed, for the server to index, and the ledger seen by the next process
            self._request("flush", collection)
            self._request("flush", ledger)
        kind = index_kind(self.uri, True, len(codes), codes.shape[1] * 8)
        self._index_for(collection, "code", kind)
        return MilvusCodes(self, collection, keys, offsets, kind)

    def _index_for(self, collection: str, field: str, kind: dict) -> None:
        """Build the index this many rows call for, where the collection has another: it grew
        past a flat scan's size (or shrank below it), or its lists are half or twice as many
        as its rows now call for (not at every change: a server rebuilds every row)."""
        found = self._request("describe_index", collection, index_name=field) or {}
        lists, wanted = int(found.get("nlist", 0) or 0), kind.get("params", {}).get("nlist", 0)
        if found.get("index_type") == kind["index_type"] and (not wanted or wanted / 2 <= lists <= wanted * 2):
            return
        from pymilvus import MilvusClient

        log.info("Milvus collection %s: %s index for %s", collection, kind["index_type"], field)
        params = MilvusClient.prepare_index_params()
        params.add_index(field, **kind)
        self._request("release_collection", collection)
        self._request("drop_index", collection, index_name=field)
        self._request("create_index", collection, params)
        self._request("load_collection", collection)

    def _send_codes(self, collection: str, ledger: str, batch: list[dict], owners: list[int]) -> None:
        """Codes first, then their owners in the ledger: a ledger row promises its codes are there."""
        if batch:
            self._request("insert", collection, batch)
        self._request("insert", ledger, [{"id": key, "vector": LEDGER_VECTOR} for key in owners])

    def _delete_owners(self, collection: str, owners: np.ndarray) -> None:
        """Every code of these owners: the ids from key << SLOT_BITS up to the next key's."""
        for start in range(0, len(owners), OWNERS_PER_DELETE):
            ranges = [f"(id >= {int(k) << SLOT_BITS} and id < {(int(k) + 1) << SLOT_BITS})"
                      for k in owners[start:start + OWNERS_PER_DELETE]]
            self._request("delete", collection, filter=" or ".join(ranges))

    def _delete_strays(self, collection: str, complete: np.ndarray) -> None:
        """Codes of owners the ledger does not list: read every id once, delete the strays."""
        ids = self._ids(collection)
        self._delete(collection, ids[~np.isin(ids >> SLOT_BITS, complete)])

    def _count(self, collection: str) -> int:
        answer = self._request("query", collection, filter="", output_fields=["count(*)"])
        return int(answer[0]["count(*)"])

    def describe(self) -> dict:
        """Where the store is and whether it answers, for /health and the page."""
        return {"kind": "milvus", "uri": self.address, "collection": self.prefix, "problem": self.problem,
                "local_features": "this process" if self.local_features_here else "milvus"}

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # a server already gone has nothing left to close
                pass

    # -- collections ---------------------------------------------------------
    def _collection(self, name: str, signature: str, dim: int, binary: bool, size: int) -> str:
        """The collection for `name`, made or rebuilt for this signature; refuses another index's.

        Reads see this connection's own writes ("Session"): "Strong", which waits for every
        client's, added about 200 ms to each search on a server.  An update that changed
        anything ends with a flush: it seals what was sent, for the server to index, and
        a server's searches then no longer return the rows it deleted."""
        from pymilvus import DataType, MilvusClient

        collection = f"{self.prefix}_{name}"
        description = f"{MAGIC} {self.owner} {signature} {dim}"
        if self._request("has_collection", collection):
            found = self._request("describe_collection", collection).get("description", "")
            words = found.split()
            if len(words) != 4 or words[0] != MAGIC or words[1] != self.owner:
                raise StoreMismatch(
                    f"Milvus collection {collection!r} was written by another Lookalike index "
                    f"(or not by Lookalike); give this one a prefix of its own with LOOKALIKE_COLLECTION")
            if found == description:
                return collection
            log.info("Milvus collection %s holds vectors of another feature set (%s); rebuilding it",
                     collection, " ".join(words[2:]))
            self._request("drop_collection", collection)
        schema = MilvusClient.create_schema(auto_id=False, description=description)
        schema.add_field("id", DataType.INT64, is_primary=True)
        field = "code" if binary else "vector"
        schema.add_field(field, DataType.BINARY_VECTOR if binary else DataType.FLOAT_VECTOR, dim=dim)
        params = MilvusClient.prepare_index_params()
        params.add_index(field, **index_kind(self.uri, binary, size, dim))
        self._request("create_collection", collection, schema=schema, index_params=params,
                      consistency_level="Session")
        return collection

    def _ids(self, collection: str) -> np.ndarray:
        iterator = self._request("query_iterator", collection, batch_size=ITERATOR_BATCH,
                                 filter="id >= 0", output_fields=["id"])
        found: list[int] = []
        try:
            while batch := self._guarded(iterator.next):
                found.extend(row["id"] for row in batch)
        finally:
            iterator.close()
        ids = np.array(found, np.int64)
        unique, counts = np.unique(ids, return_counts=True)
        # Milvus does not refuse a second row of one id (two processes updating at once):
        # such ids are deleted, every copy, and sent again.
        self._delete(collection, unique[counts > 1])
        return unique[counts == 1]

    def _delete(self, collection: str, ids: np.ndarray) -> None:
        for start in range(0, len(ids), INSERT_ROWS):
            self._request("delete", collection, ids=[int(i) for i in ids[start:start + INSERT_ROWS]])

    # -- the connection --------------------------------------------------------
    def _client_now(self):
        with self._lock:
            if self._client is not None:
                return self._client
            if time.monotonic() - self._failed_at < RETRY_AFTER_S and self.problem:
                raise StoreUnavailable(self.problem)
            try:
                from pymilvus import MilvusClient
            except ImportError as exc:
                raise self._failed(f"the Milvus client is not installed ({exc}); "
                                   "pip install -r requirements.txt") from exc
            if is_lite(self.uri):
                Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
            # Milvus Lite warns at import that it uses pkg_resources (hence setuptools<81 in the
            # requirements), and its query iterator that Lite keeps no server timestamp: neither
            # is anything a user can act on.
            logging.getLogger("pymilvus").setLevel(logging.ERROR)
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
                    # A connection of its own: pymilvus shares one per address, and closing
                    # any client sharing it would cut off the others.  (One Lite file is one
                    # server in this process, and must be shared.)
                    own = {} if is_lite(self.uri) else {"alias": f"lookalike-{uuid.uuid4().hex}"}
                    self._client = MilvusClient(self.uri, token=self._token, timeout=self._timeout_s, **own)
            except Exception as exc:  # pymilvus raises its own, gRPC's and OS errors alike
                raise self._failed(self._explain(exc)) from exc
            return self._client

    def _request(self, method: str, *args, **kwargs):
        """One request to Milvus, within the timeout."""
        client = self._client_now()
        return self._guarded(lambda: getattr(client, method)(*args, timeout=self._timeout_s, **kwargs))

    def _guarded(self, call: Callable):
        """Any failure of the connection becomes StoreUnavailable, and the next request reconnects."""
        try:
            answer = call()
        except StoreError:
            raise
        except Exception as exc:
            with self._lock:
                self._client = None  # reconnect on the next request
                raise self._failed(f"Milvus at {self.address}: {_message(exc)}") from exc
        self.problem = None
        return answer

    def _failed(self, message: str) -> StoreUnavailable:
        self._failed_at, self.problem = time.monotonic(), message
        log.error("%s", message)
        return StoreUnavailable(message)

    def _explain(self, exc: Exception) -> str:
        text = _message(exc)
        if is_lite(self.uri) and "Open local milvus failed" in text:
            return (f"Milvus Lite could not open {self.uri}: another Lookalike process has it open "
                    "(one process at a time can), or the file is damaged")
        return f"cannot reach Milvus at {self.address}: {text}"


def rows_per_insert(row_bytes: int) -> int:
    return int(np.clip(INSERT_BYTES // max(row_bytes, 1), 1, INSERT_ROWS))


def index_kind(uri: str, binary: bool, size: int, dim: int) -> dict:
    """The index a collection of `size` rows gets: on a server, the one this process would
    build for as many (neighbours.py), so results do not depend on the store; in Lite,
    which builds no other, a flat scan.  Binary codes: flat below EXACT_CODES_BELOW, then
    an inverted file with the same lists.  Floats: flat while a scan reads at most
    EXACT_SCAN_VALUES, then 8-bit codes in sqrt(n) lists, searched in SEARCH_PROBES of
    them (an HNSW graph, M 16, found 0.94 of the 10 nearest at 10,000 made-up designs
    whatever its breadth; bench/scale.py --store milvus)."""
    if binary and (is_lite(uri) or size < EXACT_CODES_BELOW):
        return {"index_type": "BIN_FLAT", "metric_type": "HAMMING"}
    if binary:
        return {"index_type": "BIN_IVF_FLAT", "metric_type": "HAMMING", "params": {"nlist": code_lists(size)}}
    if is_lite(uri) or size <= neighbours.exact_up_to(dim):
        return {"index_type": "FLAT", "metric_type": "IP"}
    return {"index_type": "IVF_SQ8", "metric_type": "IP", "params": {"nlist": int(np.sqrt(size))}}


def _search_params(kind: dict, k: int, probes: int | None = None) -> dict:
    """A search of an index of `kind`: the lists scanned (the caller's, else as in this
    process), or a graph's breadth."""
    params = {"metric_type": kind["metric_type"], "params": {}}
    if kind["index_type"] == "BIN_IVF_FLAT":
        params["params"]["nprobe"] = probes or CODE_PROBES
    elif kind["index_type"] == "IVF_SQ8":
        params["params"]["nprobe"] = probes or neighbours.SEARCH_PROBES
    return params


def _without_secrets(uri: str) -> str:
    """The address as /health shows it: a password written into it is left out."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                                            + (f":{parts.port}" if parts.port else "")))


def _message(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


class MilvusVectors:
    """A collection of float vectors as a neighbours.VectorIndex: answers row numbers."""

    def __init__(self, store: MilvusStore, collection: str, keys: np.ndarray, rows: np.ndarray, kind: dict) -> None:
        self._store, self._collection, self._kind = store, collection, kind  # kind: the collection's index_kind
        order = np.argsort(keys[rows], kind="stable")
        self._sorted_keys, self._row = keys[rows][order], rows[order]

    def __len__(self) -> int:
        return len(self._row)

    def search(self, queries: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self._answers(queries, k, _search_params(self._kind, k, probes))

    def above(self, queries: np.ndarray, min_score: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Like `search`, but only rows scoring more than `min_score` (Milvus's range search)."""
        params = _search_params(self._kind, k)
        params["params"].update(radius=float(min_score), range_filter=2.0)
        return self._answers(queries, k, params)

    def vectors(self) -> np.ndarray:
        raise TypeError("the vectors are in Milvus")

    def _answers(self, queries: np.ndarray, k: int, params: dict) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, np.float32).reshape(len(queries), -1)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        rows = np.full((len(queries), k), -1, np.int64)
        for i, stored, score in _hits(self._store, self._collection, "vector", list(queries), k, params, SEARCH_VECTORS):
            at, known = _find(self._sorted_keys, stored)
            rows[i, :known.sum()], scores[i, :known.sum()] = self._row[at[known]], score[known]
        return scores, rows


class MilvusCodes:
    """A collection of binary codes as a neighbours.CodeIndex: answers positions in the codes."""

    def __init__(self, store: MilvusStore, collection: str, keys: np.ndarray, offsets: np.ndarray,
                 kind: dict) -> None:
        self._store, self._collection, self._kind = store, collection, kind  # kind: the collection's index_kind
        self._order = np.argsort(keys, kind="stable")
        self._sorted_keys, self._offsets = keys[self._order], offsets

    def search(self, codes: np.ndarray, k: int, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        distances = np.full((len(codes), k), np.iinfo(np.int32).max, np.int32)
        ids = np.full((len(codes), k), -1, np.int64)
        params = _search_params(self._kind, k, probes)
        for i, stored, distance in _hits(self._store, self._collection, "code", [c.tobytes() for c in codes], k,
                                         params, SEARCH_CODES):
            at, known = _find(self._sorted_keys, stored >> SLOT_BITS)
            positions = self._offsets[self._order[at[known]]] + (stored[known] & ((1 << SLOT_BITS) - 1))
            ids[i, :len(positions)], distances[i, :len(positions)] = positions, distance[known]
        return distances, ids


def _hits(store: MilvusStore, collection: str, field: str, queries: list, k: int, params: dict, per_request: int):
    """(query number, stored ids, distances) of each query's hits, asked `per_request` at a time."""
    for start in range(0, len(queries), per_request):
        answers = store._request("search", collection, data=queries[start:start + per_request], limit=k,
                                 anns_field=field, search_params=params)
        for i, found in enumerate(answers, start):
            yield i, np.array([hit["id"] for hit in found], np.int64), np.array([hit["distance"] for hit in found])


def _find(sorted_keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `wanted` is in `sorted_keys`, and whether it is there at all (a hit on a
    row this index no longer holds is dropped)."""
    if not len(sorted_keys):
        return np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
    at = np.searchsorted(sorted_keys, wanted).clip(0, len(sorted_keys) - 1)
    return at, sorted_keys[at] == wanted
