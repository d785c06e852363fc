"""JPEGs decoded by the batching decoder the indexer uses on a GPU.

nvJPEG itself needs a GPU; torchvision's decode_jpeg takes the same list on the
CPU, so the batching, the shrinking, the orientation and every way back to the
CPU decoder are exercised here with device 'cpu'."""
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from engine.config import Config
from engine.images.decode import ANALYSIS_SIDE, UnreadableImage, decode
from engine.images.gpu_jpeg import GpuJpegDecoder
from engine.index.pipeline import Indexer
from conftest import encode, make_design


def _photo(seed: int, size=(1600, 1000)) -> Image.Image:
    return make_design(seed).convert("RGB").resize(size, Image.Resampling.BICUBIC)


def test_jpegs_sent_together_come_back_as_the_cpu_decodes_them():
    files = [encode(_photo(seed), "JPEG", quality=92) for seed in range(12)]
    with GpuJpegDecoder("cpu", ANALYSIS_SIDE) as decoder:
        with ThreadPoolExecutor(6) as pool:  # worker threads asking at once share batches
            batched = list(pool.map(lambda data: decode(data, gpu_jpeg=decoder), files))
    for data, picture in zip(files, batched):
        reference = decode(data)
        assert picture.image.size == reference.image.size == (ANALYSIS_SIDE, 320)
        assert (picture.width, picture.height) == (1600, 1000)
        assert np.abs(picture.array.astype(int) - reference.array.astype(int)).mean() < 3


def test_exif_orientation_is_applied_to_a_picture_decoded_there():
    image = Image.new("RGB", (800, 400), "white")
    image.paste((255, 0, 0), (0, 0, 200, 400))  # red on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90 degrees clockwise
    with GpuJpegDecoder("cpu", ANALYSIS_SIDE) as decoder:
        decoded = decode(encode(image, "JPEG", exif=exif.tobytes()), gpu_jpeg=decoder)
    assert (decoded.width, decoded.height) == (400, 800)
    assert decoded.image.size == (256, 512)
    top = decoded.array[:40].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200 and top[1] < 80  # the red band is now on top


def test_a_file_the_decoder_refuses_goes_to_the_cpu_and_spoils_no_other(monkeypatch):
    good = [encode(_photo(seed), "JPEG") for seed in range(3)]
    truncated = good[0][: len(good[0]) // 3]
    with GpuJpegDecoder("cpu", ANALYSIS_SIDE) as decoder:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda data: decoder.picture(data, 1600, 1000), good + [truncated]))
        assert all(isinstance(answer, np.ndarray) for answer in answers[:3])
        assert answers[3] is None
        # Through decode(), the refused file gets the CPU's answer: a clear reason.
        with pytest.raises(UnreadableImage, match="truncated"):
            decode(truncated, gpu_jpeg=decoder)


class _Refusing:
    """Stands in for a decoder and records what reached it."""

    def __init__(self):
        self.asked = 0

    def picture(self, data, width, height):
        self.asked += 1
        return None


def test_only_rgb_and_grey_jpegs_are_offered_and_a_refusal_is_decoded_on_the_cpu():
    spy = _Refusing()
    buffer = io.BytesIO()
    _photo(1).convert("CMYK").save(buffer, "JPEG")
    cmyk = buffer.getvalue()
    assert decode(cmyk, gpu_jpeg=spy).image.mode == "RGB"
    decode(encode(_photo(2), "PNG"), gpu_jpeg=spy)
    assert spy.asked == 0
    rgb = encode(_photo(3), "JPEG")
    assert np.array_equal(decode(rgb, gpu_jpeg=spy).array, decode(rgb).array)
    assert spy.asked == 1


def test_a_decoder_whose_device_fails_answers_none_instead_of_hanging():
    with GpuJpegDecoder("cuda:99", ANALYSIS_SIDE) as decoder:  # no such device here
        assert decoder.picture(encode(_photo(4), "JPEG"), 1600, 1000) is None
        assert decoder.picture(encode(_photo(5), "JPEG"), 1600, 1000) is None


class _OnDevice:
    def __init__(self, device):
        self.device = device

    def fingerprint(self):
        return "x"


def test_the_indexer_decodes_jpegs_on_the_gpu_its_networks_use_unless_told_not_to(tmp_path):
    config = Config(images=tmp_path, cache=tmp_path / "cache")
    assert Indexer(config, {"clip": _OnDevice("cuda"), "hsv": _OnDevice("cpu")}).jpeg_device() == "cuda"
    assert Indexer(config, {"clip": _OnDevice("cpu")}).jpeg_device() is None
    off = config.with_overrides(gpu_jpeg=False)
    assert Indexer(off, {"clip": _OnDevice("cuda")}).jpeg_device() is None
