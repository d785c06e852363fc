"""A network made ready to run is kept between starts; only an archive this install wrote,
that still gives its probe vector, is ever loaded."""
import logging
import shutil

import numpy as np
import pytest
import torch

from engine import models
from features import clip as clip_feature
from features import efficientnet, resnet
from features.ready import KEY_FILE, ReadyNetworks
from conftest import make_design

KEY = "tiny:0123:torch-x:machine"


def tiny_network():
    torch.manual_seed(3)
    return torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                                torch.nn.Flatten()).eval())


BATCH = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def probe(module):
    with torch.inference_mode():
        return module(BATCH).numpy()[0]


def kept(folder, network=None):
    network = network or tiny_network()
    ReadyNetworks(folder).save("tiny", KEY, network, probe, expected=probe(network))
    return network


def test_a_kept_network_loads_at_the_next_start_and_gives_the_same_vectors(tmp_path):
    network = kept(tmp_path)
    loaded = ReadyNetworks(tmp_path).load("tiny", KEY, probe)
    assert loaded is not None and np.allclose(probe(loaded), probe(network))
    assert ReadyNetworks(tmp_path).load("tiny", "other weights", probe) is None


def test_a_network_kept_for_new_weights_replaces_the_one_kept_for_the_old(tmp_path):
    kept(tmp_path)
    network = tiny_network()
    ReadyNetworks(tmp_path).save("tiny", "new weights", network, probe, expected=probe(network))
    assert len(list(tmp_path.glob("tiny-*.pt"))) == 1
    assert ReadyNetworks(tmp_path).load("tiny", KEY, probe) is None
    assert ReadyNetworks(tmp_path).load("tiny", "new weights", probe) is not None


def test_an_archive_changed_after_it_was_written_is_refused_and_removed(tmp_path, caplog):
    kept(tmp_path)
    archive, = tmp_path.glob("tiny-*.pt")
    with open(archive, "ab") as out:
        out.write(b"\0")
    with caplog.at_level(logging.WARNING):
        assert ReadyNetworks(tmp_path).load("tiny", KEY, probe) is None
    assert "signature does not match" in caplog.text
    assert not archive.exists()  # the next start builds and keeps a good one


def test_an_archive_another_install_wrote_is_refused(tmp_path):
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    kept(theirs)
    ReadyNetworks(ours)._key()  # this install's own key
    for path in theirs.glob("tiny-*"):
        shutil.copy(path, ours / path.name)
    assert ReadyNetworks(ours).load("tiny", KEY, probe) is None
    assert (ours / KEY_FILE).stat().st_mode & 0o077 == 0  # the key is readable by its owner only


def test_a_network_that_no_longer_gives_its_probe_vector_is_refused(tmp_path, caplog):
    kept(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert ReadyNetworks(tmp_path).load("tiny", KEY, lambda module: -probe(module)) is None
    assert "probe vector" in caplog.text


def test_a_traced_form_that_differs_from_the_model_is_not_kept(tmp_path, caplog):
    network = tiny_network()
    with caplog.at_level(logging.WARNING):
        ReadyNetworks(tmp_path).save("tiny", KEY, network, probe, expected=-probe(network))
    assert not list(tmp_path.glob("tiny-*.pt")) and "not kept" in caplog.text


def test_a_folder_that_cannot_be_written_costs_only_time(tmp_path, caplog):
    blocked = tmp_path / "networks"
    blocked.write_text("a file where the folder should be")
    with caplog.at_level(logging.WARNING):
        kept(blocked)
    assert "could not keep" in caplog.text
    assert ReadyNetworks(blocked).load("tiny", KEY, probe) is None


def must_not_build(self):
    raise AssertionError(f"{self.name} was built from its weights again")


def test_both_networks_load_ready_at_the_second_start(with_weights, monkeypatch):
    cfg = with_weights
    images = [make_design(i).convert("RGB") for i in range(5)]
    first, _ = models.load_extractors(cfg.models_dir, batch_size=2, ready_dir=cfg.ready_networks_dir)
    rows = {name: first[name].embed(images) for name in ("clip", "resnet")}
    monkeypatch.setattr(clip_feature.ClipExtractor, "_build", must_not_build)
    monkeypatch.setattr(resnet.ResnetExtractor, "_build", must_not_build)
    again, _ = models.load_extractors(cfg.models_dir, batch_size=2, ready_dir=cfg.ready_networks_dir)
    for name in ("clip", "resnet"):
        assert again[name].fingerprint() == first[name].fingerprint()
        cosines = np.sum(again[name].embed(images) * rows[name], axis=1)  # batches of 2 and of 1
        # The traced int8 network and the one built from weights round alike only within the
        # kernels a CPU has: 0.99989 on one without AVX-512, 0.9999+ with it.
        assert cosines.min() >= 0.9995, name
    words = again["clip"].embed_text(["a red star"])  # the text tower loads on its own when asked
    assert words.shape == (1, 512) and np.isclose(np.linalg.norm(words), 1, atol=1e-4)


def test_the_bundled_shape_network_loads_ready_at_the_second_start(cfg, monkeypatch):
    if efficientnet.weights_file() is None:
        pytest.skip(f"{efficientnet.PACKAGE} is not installed")
    images = [make_design(i).convert("RGB") for i in range(3)]
    first = models.load_extractors(cfg.models_dir, ready_dir=cfg.ready_networks_dir)[0]["resnet"]
    rows = first.embed(images)
    monkeypatch.setattr(efficientnet.EfficientNetLite0Extractor, "_build", must_not_build)
    again = models.load_extractors(cfg.models_dir, ready_dir=cfg.ready_networks_dir)[0]["resnet"]
    assert again.fingerprint() == first.fingerprint()
    assert np.sum(again.embed(images) * rows, axis=1).min() >= 0.9999


def test_networks_built_on_two_threads_at_once_both_build(monkeypatch):
    """torch fills its table of builtin operators on the first compile without a lock; a
    second compile meanwhile failed ("builtin cannot be used as a value").  The window is
    widened here so that, without Lookalike's own lock, the second thread falls into it."""
    import threading
    import time

    import torch.jit._builtins as builtins
    import torchvision

    from features.resnet import ResnetExtractor

    table = builtins._get_builtin_table()
    filling = {"by": None}  # the thread filling the table for the first time, then "done"

    def first_fill_seen_from_other_threads():
        me = threading.get_ident()
        if filling["by"] is None:
            filling["by"] = me
            time.sleep(0.5)  # the first compile fills the table meanwhile
            filling["by"] = "done"
        elif filling["by"] not in ("done", me):
            return {}  # what torch publishes while it fills it
        return table

    monkeypatch.setattr(builtins, "_get_builtin_table", first_fill_seen_from_other_threads)
    failures = []

    def build():
        try:
            ResnetExtractor._frozen(torchvision.models.resnet18(weights=None).eval())
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
