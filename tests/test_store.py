"""The index file: round trip, atomic replacement, corruption set aside, nothing executed."""
import numpy as np
import pytest

from engine.index import store
from engine.index.store import CorruptIndex, Entry, IndexData


def sample(n=3):
    data = IndexData(entries=[Entry(f"d{i}.png", 10 + i, 5, f"{i:064x}", 20, 30) for i in range(n)],
                     fingerprints={"hsv": "v1"}, indexed_at=123.0)
    data.vectors["hsv"] = np.eye(n, 4, dtype=np.float32)
    data.present["hsv"] = np.ones(n, dtype=bool)
    return data


def test_round_trip(tmp_path):
    path = tmp_path / "index.npz"
    store.save(sample(), path)
    loaded = store.load(path)
    assert [e.path for e in loaded.entries] == ["d0.png", "d1.png", "d2.png"]
    assert np.array_equal(loaded.vectors["hsv"], sample().vectors["hsv"])
    assert loaded.fingerprints == {"hsv": "v1"}


def test_failed_write_leaves_the_previous_index(tmp_path, monkeypatch):
    path = tmp_path / "index.npz"
    store.save(sample(3), path)

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError):
        store.save(sample(5), path)
    assert len(store.load(path)) == 3


@pytest.mark.parametrize("damage", ["truncate", "flip", "pickle"])
def test_damaged_or_tampered_index_is_set_aside(tmp_path, damage, caplog):
    path = tmp_path / "index.npz"
    store.save(sample(), path)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    else:  # a pickle that would run code if anything unpickled it
        import pickle
        raw = bytearray(pickle.dumps(print))
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptIndex):
        store.load(path)
    assert len(store.load_or_empty(path)) == 0
    assert not path.exists()
    assert list(tmp_path.glob("index.npz.corrupt-*"))
    assert "corrupt" in caplog.text


def test_tampered_vectors_are_detected(tmp_path):
    path = tmp_path / "index.npz"
    data = sample()
    store.save(data, path)
    with np.load(path) as archive:
        arrays = dict(archive)
    arrays["vec_hsv"] = arrays["vec_hsv"] * 2  # valid npz, wrong content
    np.savez(path, **arrays)
    with pytest.raises(CorruptIndex, match="checksum"):
        store.load(path)
