"""The edge check after verification: a copy's drawing reappears in its original once
aligned; designs that only share a template (frame, border, watermark) do not."""
import numpy as np
from PIL import Image, ImageDraw

from engine.agreement import AGREEMENT, edge_agreement
from conftest import make_design


def grey(image: Image.Image) -> np.ndarray:
    flat = Image.new("RGB", image.size, "white")
    flat.paste(image, mask=image.getchannel("A") if image.mode == "RGBA" else None)
    return np.asarray(flat.convert("L"))


def framed(seed: int) -> Image.Image:
    """A shared template (a frame, like a card's border) around a design of its own."""
    sheet = Image.new("RGBA", (256, 256), "white")
    ImageDraw.Draw(sheet).rounded_rectangle((6, 6, 249, 249), radius=12, outline="black", width=4)
    for layer in (seed, seed + 50):  # a design with as much drawing as a card's face
        design = make_design(layer, size=210)
        sheet.paste(design, (23, 23), mask=design.getchannel("A"))
    return sheet


IDENTITY = np.array([[1.0, 0, 0], [0, 1.0, 0]])


def test_a_rotated_smaller_copy_agrees_once_aligned():
    design = grey(make_design(11, size=256))
    angle, scale = 15.0, 0.6
    copy = Image.fromarray(design).rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    copy = np.asarray(copy.resize((154, 154), Image.Resampling.LANCZOS))
    # The mapping from the copy's pixels back to the design's: undo the rotation about the
    # copy's centre, then the scale.
    theta = np.deg2rad(angle)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) / scale
    centre_copy, centre = np.array([77.0, 77.0]), np.array([128.0, 128.0])
    transform = np.hstack([rotation, (centre - rotation @ centre_copy)[:, None]])
    assert edge_agreement(copy, design, transform, 1.0, 1.0) >= AGREEMENT


def test_a_mirrored_copy_agrees_when_the_check_says_mirrored():
    design = grey(make_design(12, size=200))
    mirrored = np.ascontiguousarray(design[:, ::-1])
    assert edge_agreement(mirrored, design, IDENTITY, 1.0, 1.0, mirrored=True) >= AGREEMENT
    assert edge_agreement(mirrored, design, IDENTITY, 1.0, 1.0, mirrored=False) < AGREEMENT


def test_designs_sharing_only_a_frame_do_not_agree():
    for seed in (21, 23, 25):
        assert edge_agreement(grey(framed(seed)), grey(framed(seed + 1)), IDENTITY, 1.0, 1.0) < AGREEMENT
        assert edge_agreement(grey(framed(seed)), grey(framed(seed)), IDENTITY, 1.0, 1.0) >= AGREEMENT
