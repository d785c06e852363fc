"""Real extractors through the real load path, with random weights in the real formats."""
import hashlib
import logging

import numpy as np
import pytest
import torch

from engine import models
from engine import Engine
from features.clip import WEIGHTS as CLIP_WEIGHTS
from conftest import encode, make_design, unit_rows


def test_status_reports_missing_weights_where_they_are_expected(cfg):
    rows = {r.name: r for r in models.status(cfg.models_dir)}
    assert set(rows) == {"clip", "resnet"}
    assert not rows["clip"].present
    assert rows["clip"].path == str(cfg.models_dir / CLIP_WEIGHTS.filename)


def test_import_recognises_each_network_and_status_sees_it(cfg, weight_files):
    for name, path in weight_files.items():
        row = models.import_file(cfg.models_dir, path)
        assert row.name == name and row.present and row.official is False
    assert all(r.present for r in models.status(cfg.models_dir))


def test_import_refuses_a_file_that_is_not_a_known_network(cfg, tmp_path):
    junk = tmp_path / "junk.pth"
    torch.save({"some.weight": torch.zeros(2)}, junk)
    with pytest.raises(ValueError, match="not a CLIP"):
        models.import_file(cfg.models_dir, junk)


def test_extractors_load_and_give_unit_rows_of_the_right_size(with_weights, caplog):
    caplog.set_level(logging.WARNING)
    extractors, missing = models.load_extractors(with_weights.models_dir)
    assert missing == {}
    images = [make_design(i).convert("RGB") for i in range(3)]
    for name, dim in (("clip", 512), ("resnet", 2048), ("hsv", 256)):
        rows = extractors[name].embed(images)
        assert rows.shape == (3, dim) and rows.dtype == np.float32 and unit_rows(rows)
    assert "not the official file" in caplog.text
    text = extractors["clip"].embed_text(["a gold ring", "a red star"])
    assert text.shape == (2, 512) and unit_rows(text)


def test_clip_also_loads_a_torch_saved_state_dict(cfg, weight_files, tmp_path):
    from safetensors.torch import load_file

    as_bin = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(load_file(str(weight_files["clip"])), as_bin)
    models.import_file(cfg.models_dir, as_bin)
    extractors, _ = models.load_extractors(cfg.models_dir)
    assert extractors["clip"].embed([make_design(1).convert("RGB")]).shape == (1, 512)


def test_engine_with_all_three_features_finds_the_copy(with_weights, collection):
    engine = Engine(with_weights)
    report = engine.reindex()
    assert report.features == ["clip", "hsv", "orb", "orb_mirror", "regions", "resnet", "thumbprint"] and report.indexed == 12
    from conftest import encode
    results = engine.search_bytes(encode(collection["design_04.png"], "JPEG", quality=85), top_k=3)
    assert results[0].path == "design_04.png"
    assert all(v is not None for v in results[0].scores.values())


def test_a_started_web_app_loads_the_networks_before_the_first_search(with_weights):
    from web import create_app

    engine = create_app(with_weights).extensions["engine"]
    engine.networks.warm_up.result(timeout=300)  # the load it started at once; no search has been made
    assert all(engine.networks.extractors[n].loaded for n in ("clip", "resnet"))


def test_missing_weights_switch_the_feature_off_and_the_engine_keeps_working(cfg, collection, caplog, monkeypatch):
    from features import efficientnet

    monkeypatch.setattr(efficientnet, "weights_file", lambda: None)  # not even the bundled shape network
    caplog.set_level(logging.WARNING)
    engine = Engine(cfg)  # empty models folder
    assert set(engine.networks.missing) == {"clip", "resnet"}
    assert "package is not installed" in caplog.text
    assert "FEATURE OFF" in caplog.text
    engine.reindex()
    assert engine.snapshot.features == ("hsv",)
    assert engine.search_bytes((cfg.images / "design_02.png").read_bytes(), 1)[0].path == "design_02.png"


def test_text_search_and_refinement_use_clip(with_weights, collection):
    engine = Engine(with_weights)
    engine.reindex()
    by_words = engine.search_text("a red star", top_k=5)
    assert len(by_words) == 5
    assert all(r.scores["clip"] is not None and r.scores["hsv"] is None for r in by_words)
    from conftest import encode
    refined = engine.search_text("but in red", 3, encode(collection["design_04.png"]), text_weight=0.1)
    assert refined[0].path == "design_04.png"  # mostly the image: the design itself stays first


def test_text_search_without_clip_says_so(cfg, collection):
    from engine import TextSearchUnavailable

    engine = Engine(cfg)
    engine.reindex()
    with pytest.raises(TextSearchUnavailable, match="CLIP weights"):
        engine.search_text("gold ring", 5)


def test_a_forged_hash_memo_cannot_make_a_code_carrying_archive_official(cfg):
    """The memo beside the weights is a convenience anyone with the folder can edit; a load
    that would run code (TorchScript, weights_only=False) hashes the file itself."""
    import json
    import zipfile

    from features.clip import ClipExtractor
    from features.weights import file_sha256

    cfg.models_dir.mkdir(parents=True)
    archive = cfg.models_dir / CLIP_WEIGHTS.filename
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("ViT-B-32/constants.pkl", b"not really pickled code")
        out.writestr("ViT-B-32/data.pkl", b"")
    file_sha256(archive, cfg.models_dir / models.HASH_MEMO)  # the memo records the real hash...
    memo = cfg.models_dir / models.HASH_MEMO
    forged = {key: CLIP_WEIGHTS.sources[1].sha256 for key in json.loads(memo.read_text())}  # ...then claims the official one
    memo.write_text(json.dumps(forged))
    assert next(r for r in models.status(cfg.models_dir) if r.name == "clip").present
    extractor = ClipExtractor(archive, file_sha256(archive, memo))
    with pytest.raises(ValueError, match="TorchScript archive with an unofficial hash refused"):
        extractor.embed([make_design(1).convert("RGB")])


def test_without_resnet_weights_the_bundled_network_provides_shape(cfg, collection, weight_files):
    engine = Engine(cfg)  # no weights downloaded
    assert set(engine.networks.missing) == {"clip"}
    assert "EfficientNet-Lite0" in engine.status()["shape_network"]
    first = engine.reindex()
    assert "resnet" in engine.snapshot.features and first.indexed == 12
    rows = engine.snapshot.data.vectors["resnet"]
    assert rows.shape == (12, 1280) and unit_rows(rows)
    copy = engine.search_bytes((cfg.images / "design_04.png").read_bytes(), 2)
    assert copy[0].path == "design_04.png" and copy[0].scores["resnet"] > 0.99
    # ResNet50's weights arrive: only the shape feature is extracted again, never mixed.
    models.import_file(cfg.models_dir, weight_files["resnet"])
    again = engine.reindex()
    assert again.extracted == 12 and engine.snapshot.data.vectors["resnet"].shape == (12, 2048)
    assert "ResNet50" in engine.status()["shape_network"]


def test_a_tampered_bundled_file_is_refused_and_the_feature_is_off(cfg, tmp_path, monkeypatch, caplog):
    from features import efficientnet

    tampered = tmp_path / "efficientnet-lite0.pth"
    data = bytearray(efficientnet.weights_file().read_bytes())
    data[-1] ^= 0xFF
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(efficientnet, "weights_file", lambda: tampered)
    caplog.set_level(logging.WARNING)
    extractors, missing = models.load_extractors(cfg.models_dir)
    assert "resnet" not in extractors and "resnet" in missing
    assert "is not the recorded one" in caplog.text


def test_the_bundled_network_is_loaded_strictly():
    from features import efficientnet

    source = torch.load(efficientnet.weights_file(), map_location="cpu", weights_only=True)
    import timm

    target = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0).state_dict()
    assert len(efficientnet.map_state(source, target)) == len([k for k in target if "num_batches" not in k])
    order = list(source)
    i = order.index("_blocks.3._expand_conv.weight")
    order[i], order[i + 1] = order[i + 1], order[i]  # two tensors out of place
    with pytest.raises(efficientnet.WeightsRefused):
        efficientnet.map_state({k: source[k] for k in order}, target)
    # A changed package or preprocessing moves the bundled design's vector: refused.
    moved = efficientnet.EfficientNetLite0Extractor(efficientnet.weights_file(), efficientnet.SHA256,
                                                  sample=models.precision_sample)
    moved.mean = moved.mean * 0 + 0.5
    with pytest.raises(efficientnet.WeightsRefused, match="vector moved"):
        moved.embed([make_design(1).convert("RGB")])


def test_a_bundled_network_that_refuses_at_its_build_is_switched_off_and_the_index_finishes(
        cfg, collection, tmp_path, monkeypatch):
    """The known answer is checked when the network is first built, inside an index run: the
    run goes on without the feature, the page says why, and later runs do not build it again."""
    from features import efficientnet

    elsewhere = tmp_path / "moved_known_answer.npy"
    np.save(elsewhere, np.random.default_rng(0).standard_normal(1280).astype(np.float32))
    monkeypatch.setattr(efficientnet, "KNOWN_ANSWER", elsewhere)  # as if the package's numbers moved
    builds = []
    real_build = efficientnet.EfficientNetLite0Extractor._build
    monkeypatch.setattr(efficientnet.EfficientNetLite0Extractor, "_build",
                        lambda self: builds.append(1) or real_build(self))

    engine = Engine(cfg)
    assert "resnet" in engine.networks.extractors  # the file itself is the recorded one
    report = engine.reindex()
    assert report.indexed == 12 and "resnet" not in report.features
    status = engine.status()
    assert "resnet" not in status["features"] and "vector moved" in status["features_off"]["resnet"]
    assert engine.search_bytes(encode(collection["design_03.png"]), 3)[0].path == "design_03.png"
    tried = len(builds)
    engine.reindex()  # a re-scan reloads the extractors: the refused one stays off, unbuilt
    assert len(builds) == tried and "resnet" not in engine.networks.extractors
