"""One contract for every neighbours store: FAISS in this process, Milvus Lite, and a Milvus
server when LOOKALIKE_TEST_MILVUS_URI names one.  Each answers the same questions the same
way: the k nearest by inner product (ids and scores of exact search), rows above a score,
nearest binary codes, rows the library no longer has, a reopened store, and two
instances' collections kept apart."""
from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest

from engine.index import milvus, neighbours
from engine.index.milvus import MilvusStore, StoreMismatch, StoreUnavailable, key_of
from features import l2_normalize

SERVER = os.environ.get("LOOKALIKE_TEST_MILVUS_URI")
KINDS = ["faiss", "milvus-lite"] + (["milvus-server"] if SERVER else [])


class Stores:
    """Opens stores of one kind; two opened with one name see the same collections."""

    def __init__(self, kind: str, folder) -> None:
        self.kind, self._folder, self._open = kind, folder, []
        self._run = f"t{uuid.uuid4().hex[:10]}"  # a server's collections outlive the test

    def open(self, name: str = "main", owner: str = "owner-a"):
        if self.kind == "faiss":
            return neighbours.FaissStore()
        uri = str(self._folder / "milvus.db") if self.kind == "milvus-lite" else SERVER
        store = MilvusStore(uri, f"{self._run}_{name}", owner)
        self._open.append(store)
        return store

    def close(self, store) -> None:
        if isinstance(store, MilvusStore):
            store.close()

    def finish(self) -> None:
        for store in self._open:
            if self.kind == "milvus-server":
                try:
                    client = store._client_now()
                    for name in client.list_collections():
                        if name.startswith(store.prefix):
                            client.drop_collection(name)
                except StoreUnavailable:
                    pass
            store.close()


@pytest.fixture(params=KINDS)
def stores(request, tmp_path):
    opened = Stores(request.param, tmp_path)
    yield opened
    opened.finish()


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.standard_normal((40, dim), dtype=np.float32))
    return l2_normalize(centres[rng.integers(0, 40, n)] + 0.5 * l2_normalize(rng.standard_normal((n, dim), dtype=np.float32)))


def keys_of(n: int, tag: str = "") -> np.ndarray:
    return np.array([key_of(f"design_{i}.png{tag}", "sha") for i in range(n)], np.int64)


def exact(vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None):
    rows = np.arange(len(vectors)) if rows is None else rows
    scores = queries @ vectors[rows].T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), rows[order]


def test_top_ten_ids_and_scores_are_exact_searchs(stores):
    vectors = unit_rows(600, 32, 1)
    queries = l2_normalize(vectors[::37] + 0.05)
    index = stores.open().vectors("fused", 32, keys_of(600), lambda which: vectors[which], "sig")
    scores, rows = index.search(queries, 10)
    want_scores, want_rows = exact(vectors, queries, 10)
    assert (rows == want_rows).all()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_rows_left_out_are_never_answered(stores):
    vectors = unit_rows(300, 16, 2)
    present = np.arange(300) % 3 != 0
    index = stores.open().vectors("thumbprints", 16, keys_of(300), lambda which: vectors[which], "sig", present)
    scores, rows = index.search(vectors[:30], 5)
    want_scores, want_rows = exact(vectors, vectors[:30], 5, np.flatnonzero(present))
    assert (rows == want_rows).all()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_a_range_query_answers_every_row_above_the_score_and_no_other(stores):
    vectors = unit_rows(400, 16, 3)
    index = stores.open().vectors("fused", 16, keys_of(400), lambda which: vectors[which], "sig")
    scores, rows = index.above(vectors[:20], 0.8, 400)
    for query, (found_scores, found_rows) in enumerate(zip(scores, rows)):
        want = set(np.flatnonzero(vectors @ vectors[query] > 0.8 + 1e-5))
        near_edge = set(np.flatnonzero(np.abs(vectors @ vectors[query] - 0.8) <= 1e-5))
        found = set(found_rows[found_rows >= 0].tolist())
        assert want <= found <= want | near_edge
        assert (found_scores[found_rows >= 0] > 0.8 - 1e-5).all()
        assert query in found  # each row is above any threshold to itself


def test_rows_the_library_lost_are_gone_and_the_rest_still_exact(stores):
    vectors = unit_rows(500, 16, 4)
    store = stores.open()
    store.vectors("fused", 16, keys_of(500), lambda which: vectors[which], "sig")
    # 100 designs deleted from the collection: the same store is brought up to date.
    kept = np.r_[0:200, 300:500]
    index = store.vectors("fused", 16, keys_of(500)[kept], lambda which: vectors[kept][which], "sig")
    assert len(index) == 400
    scores, rows = index.search(vectors[200:300], 10)
    want_scores, want_rows = exact(vectors[kept], vectors[200:300], 10)
    assert (rows == want_rows).all()  # row numbers of the new list, none of the deleted designs
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_a_reopened_store_answers_as_before(stores):
    vectors = unit_rows(300, 16, 5)
    store = stores.open()
    before = store.vectors("fused", 16, keys_of(300), lambda which: vectors[which], "sig").search(vectors[:10], 5)
    stores.close(store)
    again = stores.open()
    after = again.vectors("fused", 16, keys_of(300), lambda which: vectors[which], "sig").search(vectors[:10], 5)
    assert (before[1] == after[1]).all()
    np.testing.assert_allclose(before[0], after[0], atol=1e-6)


def test_two_instances_never_see_each_others_designs(stores):
    first, second = unit_rows(200, 16, 6), unit_rows(150, 16, 7)
    a = stores.open("studio_a", "owner-a").vectors("fused", 16, keys_of(200, "a"), lambda which: first[which], "sig")
    b = stores.open("studio_b", "owner-b").vectors("fused", 16, keys_of(150, "b"), lambda which: second[which], "sig")
    scores, rows = b.search(first[:10], 5)  # studio A's designs asked of studio B
    want_scores, want_rows = exact(second, first[:10], 5)
    assert (rows == want_rows).all() and (rows < 150).all()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert len(a) == 200 and len(b) == 150


def test_nearest_binary_codes_are_exact_searchs(stores):
    rng = np.random.default_rng(8)
    counts = rng.integers(0, 60, 40)
    codes = rng.integers(0, 256, (int(counts.sum()), 32), dtype=np.uint8)
    queries = codes[::25].copy()
    queries[:, 0] ^= 0b101  # two bits away from a stored code
    index = stores.open().codes("orb", keys_of(40), counts, codes, "sig")
    distances, ids = index.search(queries, 4)
    truth = neighbours.binary_codes(codes, 10**9, 1, 1, 1)  # FAISS's exact scan
    want_distances, _ = truth.search(queries, 4)
    assert (distances == want_distances).all()
    assert (ids[:, 0] == np.arange(0, len(codes), 25)).all()
    bits = np.unpackbits(codes[ids] ^ queries[:, None], axis=2).sum(axis=2)
    assert (bits == distances).all()  # each id is the stored code at that distance


def test_codes_of_a_changed_owner_are_replaced(stores):
    rng = np.random.default_rng(9)
    counts = np.full(10, 20)
    codes = rng.integers(0, 256, (200, 32), dtype=np.uint8)
    store = stores.open()
    store.codes("orb", keys_of(10), counts, codes, "sig")
    # Owner 3's file changed (a new key); owner 9 left the library.
    keys, renewed = keys_of(10)[:9].copy(), rng.integers(0, 256, (20, 32), dtype=np.uint8)
    keys[3] = key_of("design_3.png", "new bytes")
    now = np.concatenate([codes[:60], renewed, codes[80:180]])
    index = store.codes("orb", keys, counts[:9], now, "sig")
    distances, ids = index.search(np.concatenate([renewed[:5], codes[60:65], codes[180:185]]), 1)
    assert (distances[:5, 0] == 0).all() and (ids[:5, 0] == np.arange(60, 65)).all()
    assert (distances[5:, 0] > 0).all()  # the old codes of owner 3 and owner 9's are gone
    assert ((ids[5:, 0] >= 0) & (ids[5:, 0] < len(now))).all()


# -- Milvus's own promises ---------------------------------------------------------

@pytest.fixture(params=[k for k in KINDS if k != "faiss"])
def milvus_stores(request, tmp_path):
    opened = Stores(request.param, tmp_path)
    yield opened
    opened.finish()


def test_another_indexs_collection_is_refused_not_mixed(milvus_stores):
    vectors = unit_rows(50, 16, 10)
    milvus_stores.open("shared", "owner-a").vectors("fused", 16, keys_of(50), lambda which: vectors[which], "sig")
    with pytest.raises(StoreMismatch, match="another Lookalike index"):
        milvus_stores.open("shared", "owner-b").vectors("fused", 16, keys_of(50), lambda which: vectors[which], "sig")


def test_a_new_feature_set_rebuilds_the_collection(milvus_stores):
    store = milvus_stores.open()
    old = unit_rows(80, 16, 11)
    store.vectors("fused", 16, keys_of(80), lambda which: old[which], "colour-only")
    new = unit_rows(80, 24, 12)  # the weights arrived: wider vectors of another feature set
    index = store.vectors("fused", 24, keys_of(80), lambda which: new[which], "with-networks")
    scores, rows = index.search(new[:5], 3)
    want_scores, want_rows = exact(new, new[:5], 3)
    assert (rows == want_rows).all()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def watch_inserts(monkeypatch, cut_after: int | None = None) -> list[int]:
    """Rows in each insert request from now on; the connection is lost at insert `cut_after`."""
    sent, real = [], MilvusStore._request

    def request(self, method, *args, **kwargs):
        if method == "insert":
            if len(sent) == cut_after:
                raise StoreUnavailable("connection lost")
            sent.append(len(args[1]))
        return real(self, method, *args, **kwargs)

    monkeypatch.setattr(MilvusStore, "_request", request)
    return sent


def test_an_update_cut_off_goes_on_where_it_stopped(milvus_stores, monkeypatch):
    monkeypatch.setattr(milvus, "INSERT_BYTES", 50 * 16 * 4)  # 50 rows of 16 floats a request
    vectors = unit_rows(400, 16, 13)
    store = milvus_stores.open()
    first = watch_inserts(monkeypatch, cut_after=3)
    with pytest.raises(StoreUnavailable):
        store.vectors("fused", 16, keys_of(400), lambda which: vectors[which], "sig")
    assert first == [50, 50, 50]
    monkeypatch.undo()
    second = watch_inserts(monkeypatch)
    index = store.vectors("fused", 16, keys_of(400), lambda which: vectors[which], "sig")
    assert sum(second) == 250  # only what the cut-off run did not send
    assert len(index) == 400
    _, rows = index.search(vectors[:20], 10)
    assert (rows == exact(vectors, vectors[:20], 10)[1]).all()


def test_an_unreachable_server_fails_at_once_with_a_message():
    store = MilvusStore("http://127.0.0.1:9", "lookalike", "owner-a", timeout_s=2)
    with pytest.raises(StoreUnavailable, match="cannot reach Milvus at http://127.0.0.1:9"):
        store.vectors("fused", 16, keys_of(3), lambda which: np.eye(3, 16, dtype=np.float32)[which], "sig")
    assert "cannot reach Milvus" in store.describe()["problem"]
    with pytest.raises(StoreUnavailable):  # within the retry pause: no second wait
        store.vectors("fused", 16, keys_of(3), lambda which: np.eye(3, 16, dtype=np.float32)[which], "sig")


def test_codes_cut_off_before_their_owners_were_recorded_are_sent_again(milvus_stores, monkeypatch):
    monkeypatch.setattr(milvus, "INSERT_BYTES", 40 * 32)  # 40 codes a request: two owners
    rng = np.random.default_rng(14)
    counts = np.full(12, 20)
    codes = rng.integers(0, 256, (240, 32), dtype=np.uint8)
    store = milvus_stores.open()
    sent, real = [], MilvusStore._request

    def lost_after_codes(self, method, *args, **kwargs):
        if method == "insert" and args[0].endswith("_owners") and len(sent) == 2:
            raise StoreUnavailable("connection lost")  # the third batch's codes are in, its owners not
        answer = real(self, method, *args, **kwargs)
        if method == "insert" and not args[0].endswith("_owners"):
            sent.append(len(args[1]))
        return answer

    monkeypatch.setattr(MilvusStore, "_request", lost_after_codes)
    with pytest.raises(StoreUnavailable):
        store.codes("orb", keys_of(12), counts, codes, "sig")
    monkeypatch.setattr(MilvusStore, "_request", real)
    index = store.codes("orb", keys_of(12), counts, codes, "sig")
    assert store._count(f"{store.prefix}_orb") == 240  # the unrecorded owners' codes once, not twice
    distances, ids = index.search(codes, 2)
    assert (ids[:, 0] == np.arange(240)).all() and (distances[:, 0] == 0).all()
    assert (distances[:, 1] > 0).all()  # no second copy of any code


def test_milvus_lite_keeps_many_codes_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setattr(milvus, "LITE_CODES", 100)
    rng = np.random.default_rng(15)
    codes = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    store = MilvusStore(str(tmp_path / "milvus.db"), "studio", "owner-a")
    index = store.codes("orb", keys_of(3), np.array([100, 100, 100]), codes, "sig")
    assert store.describe()["local_features"] == "this process"
    assert "studio_orb" not in store._client_now().list_collections()
    distances, ids = index.search(codes[::7], 1)
    assert (ids[:, 0] == np.arange(0, 300, 7)).all() and (distances == 0).all()
    store.close()


def test_designs_gone_from_the_library_leave_every_collection(milvus_stores, monkeypatch):
    scans = []  # reading every code's id: what a million designs' update must not need
    real_scan = MilvusStore._delete_strays
    monkeypatch.setattr(MilvusStore, "_delete_strays", lambda self, *a: scans.append(a) or real_scan(self, *a))
    rng = np.random.default_rng(16)
    vectors, codes = unit_rows(30, 16, 16), rng.integers(0, 256, (300, 32), dtype=np.uint8)
    store = milvus_stores.open()
    store.vectors("fused", 16, keys_of(30), lambda which: vectors[which], "sig")
    store.codes("orb", keys_of(30), np.full(30, 10), codes, "sig")
    store.vectors("fused", 16, keys_of(30)[:20], lambda which: vectors[which], "sig")
    store.codes("orb", keys_of(30)[:20], np.full(20, 10), codes[:200], "sig")
    assert store._count(f"{store.prefix}_fused") == 20
    assert store._count(f"{store.prefix}_orb") == 200 and store._count(f"{store.prefix}_orb_owners") == 20
    assert scans == []


def test_binary_codes_get_lists_once_past_a_flat_scans_size(milvus_stores, monkeypatch):
    """On a server the codes' index is the one FAISS would use for as many: flat, then lists."""
    monkeypatch.setattr(milvus, "EXACT_CODES_BELOW", 500)
    rng = np.random.default_rng(17)
    codes = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    store = milvus_stores.open()
    store.codes("orb", keys_of(4), np.full(4, 100), codes[:400], "sig")
    first = store._request("describe_index", f"{store.prefix}_orb", index_name="code")["index_type"]
    index = store.codes("orb", keys_of(20), np.full(20, 100), codes, "sig")
    second = store._request("describe_index", f"{store.prefix}_orb", index_name="code")["index_type"]
    assert (first, second) == (("BIN_FLAT", "BIN_FLAT") if milvus_stores.kind == "milvus-lite" else ("BIN_FLAT", "BIN_IVF_FLAT"))
    distances, ids = index.search(codes[::50], 1)
    assert (ids[:, 0] == np.arange(0, 2000, 50)).all() and (distances == 0).all()


def test_a_password_in_the_address_is_never_shown():
    store = MilvusStore("http://studio:s3cret@127.0.0.1:9", "lookalike", "owner-a", timeout_s=2)
    with pytest.raises(StoreUnavailable) as refused:
        store.vectors("fused", 16, keys_of(3), lambda which: np.eye(3, 16, dtype=np.float32)[which], "sig")
    shown = str(refused.value) + json.dumps(store.describe())
    assert "s3cret" not in shown and "studio:***@127.0.0.1:9" in shown
