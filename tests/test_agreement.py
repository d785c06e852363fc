"""The edge check after verification: a copy's drawing reappears in its original once
aligned; designs that only share a template (frame, border, watermark) do not."""
import cv2
import numpy as np
from PIL import Image, ImageDraw

from engine.match import agreement
from engine.match.agreement import content_agreement, edge_agreement
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
    assert edge_agreement(copy, design, transform, 1.0, 1.0).shared()


def test_a_mirrored_copy_agrees_when_the_check_says_mirrored():
    design = grey(make_design(12, size=200))
    mirrored = np.ascontiguousarray(design[:, ::-1])
    assert edge_agreement(mirrored, design, IDENTITY, 1.0, 1.0, mirrored=True).close()
    assert not edge_agreement(mirrored, design, IDENTITY, 1.0, 1.0, mirrored=False).shared()


def test_designs_sharing_only_a_frame_do_not_agree():
    for seed in (21, 23, 25):
        assert not edge_agreement(grey(framed(seed)), grey(framed(seed + 1)), IDENTITY, 1.0, 1.0).shared()
        assert edge_agreement(grey(framed(seed)), grey(framed(seed)), IDENTITY, 1.0, 1.0).close()


def sign(seed: int) -> Image.Image:
    """A warning sign: a heavy shared triangle around a small pictogram of its own."""
    sheet = Image.new("RGBA", (256, 256), "white")
    ImageDraw.Draw(sheet).polygon([(128, 10), (246, 236), (10, 236)], outline="black", width=14)
    design = make_design(seed, size=90)
    sheet.paste(design, (83, 120), mask=design.getchannel("A"))
    return sheet


def test_siblings_on_one_template_share_much_but_neither_contains_the_other():
    for seed in (31, 33, 35):
        agreement = edge_agreement(grey(sign(seed)), grey(sign(seed + 1)), IDENTITY, 1.0, 1.0)
        assert agreement.least >= 0.6  # the triangle alone makes most of each drawing agree
        assert not agreement.shared()


def test_a_watermarked_copy_contains_its_original():
    design = sign(31)
    marked = design.copy()
    ImageDraw.Draw(marked).text((20, 40), "SAMPLE", fill=(120, 120, 120), font_size=40)
    agreement = edge_agreement(grey(marked), grey(design), IDENTITY, 1.0, 1.0)
    assert agreement.shared() and agreement.most >= 0.95


def test_twins_are_aligned_by_their_designs_extents():
    design = make_design(41, size=200)
    on_canvas = Image.new("RGBA", (300, 260), "white")
    smaller = design.resize((120, 120), Image.Resampling.LANCZOS).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    on_canvas.paste(smaller, (150, 90), mask=smaller.getchannel("A"))
    assert content_agreement(grey(on_canvas), grey(design)).close()
    assert not content_agreement(grey(make_design(42, size=200)), grey(design)).shared()


def photographed(design: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The design as a photo taken at an angle (corners pulled in by up to a tenth of the
    side), and the perspective mapping the photo's pixels back onto the design's."""
    corners = np.float32([[0, 0], [256, 0], [256, 256], [0, 256]])
    seen = np.float32([[22, 10], [240, 25], [250, 232], [8, 246]])
    to_photo = cv2.getPerspectiveTransform(corners, seen)
    photo = cv2.warpPerspective(design, to_photo, (256, 256), flags=cv2.INTER_CUBIC, borderValue=255)
    return photo, np.linalg.inv(to_photo)


def closest_similarity(mapping: np.ndarray) -> np.ndarray:
    """The rotation, scale and shift closest to a perspective (least squares over the picture)."""
    grid = np.float32([[x, y] for x in range(0, 257, 32) for y in range(0, 257, 32)])
    similarity, _ = cv2.estimateAffinePartial2D(grid, cv2.perspectiveTransform(grid[None], mapping)[0],
                                                method=cv2.RANSAC, ransacReprojThreshold=1000)
    return similarity


def test_a_copy_photographed_at_an_angle_agrees_once_aligned_by_its_perspective():
    design = grey(make_design(13, size=256))
    photo, back = photographed(design)
    assert edge_agreement(photo, design, back, 1.0, 1.0).close()


def test_a_photo_whose_points_gave_only_a_rough_mapping_agrees_once_the_pictures_are_lined_up():
    # Points matched on one part of a design fit that part; the rest of the drawing is left
    # pixels apart (here: up to 12 at the corners), as if the copy had drawing of its own.
    for seed in (13, 14, 15):
        design = grey(make_design(seed, size=256))
        photo, back = photographed(design)
        assert edge_agreement(photo, design, closest_similarity(back), 1.0, 1.0).shared()


def test_lining_up_siblings_on_one_template_does_not_make_them_copies():
    nudge = np.array([[1.01, 0.01, 3.0], [-0.01, 0.99, -2.0]])  # a few pixels off, as points leave it
    for seed in (31, 33, 35):
        assert not edge_agreement(grey(sign(seed)), grey(sign(seed + 1)), nudge, 1.0, 1.0).shared()
    for seed in (21, 23):
        assert not edge_agreement(grey(framed(seed)), grey(framed(seed + 1)), nudge, 1.0, 1.0).shared()


def test_a_refinement_that_leaves_drawing_out_of_the_comparison_is_not_used(monkeypatch):
    # Squeezing one picture into a corner would leave only a sliver of the two to compare.
    squeeze = np.array([[0.2, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 1.0]])
    monkeypatch.setattr(agreement, "_refined", lambda *args: squeeze)
    first, second = grey(sign(31)), grey(sign(32))
    assert edge_agreement(first, second, IDENTITY, 1.0, 1.0) == agreement._shares(
        first, second, np.eye(3), agreement.TOLERANCE)[0]


def test_a_refinement_that_agrees_worse_than_the_points_alignment_is_not_used(monkeypatch):
    # A copy a pixel off as its points aligned it, so that it just misses: a refinement that
    # settles farther off keeps the overlap but must not replace the closer alignment.
    design = grey(make_design(13, size=256))
    nudge = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, 0.0]])
    farther = np.array([[1.0, 0.0, 6.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    monkeypatch.setattr(agreement, "_refined", lambda *args: farther)
    as_aligned = agreement._shares(design, design, np.vstack([nudge, [0.0, 0.0, 1.0]]), agreement.TOLERANCE)[0]
    assert not as_aligned.shared()
    assert edge_agreement(design, design, nudge, 1.0, 1.0) == as_aligned
