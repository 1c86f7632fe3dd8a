"""The stages as plain functions: decoding any image, resizing maps, measuring instances."""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from scene_contract.card import ModelCard
from service.errors import CorruptImageError, TooManyPixelsError, UnsupportedMediaTypeError
from service.imaging import decode_image, decode_upload, preprocess, resize_bilinear, resize_nearest
from service.instances import measure_instances, measure_resized
from service.postprocess import group_instances
from service.responses import classes_present

EXIF_ORIENTATION = 0x0112


def encode(image: Image.Image, image_format: str = "PNG", **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    return buffer.getvalue()


def gradient(height: int = 20, width: int = 40) -> npt.NDArray[np.uint8]:
    """``uint8 [H, W, 3]`` whose red channel grows left to right."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    return rgb


@pytest.mark.parametrize(
    ("mode", "image_format"),
    [("RGB", "PNG"), ("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("LA", "PNG"), ("1", "PNG"),
     ("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "WEBP"), ("RGBA", "WEBP")],
)  # fmt: skip
def test_every_colour_mode_decodes_to_rgb(mode: str, image_format: str) -> None:
    data = encode(Image.fromarray(gradient()).convert(mode), image_format)
    rgb = decode_image(data, max_pixels=10_000)
    assert rgb.shape == (20, 40, 3) and rgb.dtype == np.uint8


def test_sixteen_bit_greys_are_scaled_not_clipped() -> None:
    grey = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    rgb = decode_image(encode(Image.fromarray(grey)), max_pixels=100)
    assert rgb[0, :, 0].tolist() == [0, 100, 255]


def test_palette_image_with_transparency_keeps_its_colours() -> None:
    image = Image.fromarray(gradient()).convert("P")
    image.info["transparency"] = 0
    rgb = decode_image(encode(image, transparency=0), max_pixels=10_000)
    assert rgb[..., 0].max() > 200


def test_exif_orientation_is_applied() -> None:
    # A 40-wide, 20-high picture tagged "rotate 90° clockwise to view" is 20 wide, 40 high.
    image = Image.fromarray(gradient(20, 40))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    rgb = decode_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95), max_pixels=10_000)
    assert rgb.shape == (40, 20, 3)
    # The red ramp that ran left → right now runs top → bottom.
    assert rgb[0, :, 0].mean() < 40 and rgb[-1, :, 0].mean() > 215


def test_truncated_image_is_corrupt() -> None:
    data = encode(Image.fromarray(gradient()))
    with pytest.raises(CorruptImageError):
        decode_image(data[: len(data) // 2], max_pixels=10_000)


def test_bytes_that_are_no_image_are_corrupt() -> None:
    with pytest.raises(CorruptImageError):
        decode_image(b"not an image at all", max_pixels=10_000)


def test_an_image_in_another_format_is_unsupported() -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="GIF"):
        decode_image(encode(Image.fromarray(gradient()), "GIF"), max_pixels=10_000)


def test_too_many_pixels_are_refused_before_decoding() -> None:
    data = encode(Image.fromarray(gradient(20, 40)))  # 800 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(TooManyPixelsError):
            decode_image(data, max_pixels=799)
    with pytest.raises(TooManyPixelsError):  # over twice the limit: Pillow's own error
        decode_image(data, max_pixels=300)
    assert decode_image(data, max_pixels=800).shape == (20, 40, 3)


def test_preprocess_resizes_to_the_model_input() -> None:
    resized = preprocess(gradient(20, 40), (8, 12))
    assert resized.shape == (8, 12, 3) and resized.dtype == np.uint8


def test_nearest_resize_keeps_labels_and_dtype() -> None:
    labels = np.array([[1, 2], [3, 40000]], dtype=np.uint16)
    up = resize_nearest(labels, (4, 6))
    assert up.dtype == np.uint16 and set(np.unique(up)) == {1, 2, 3, 40000}
    assert (up[:2, :3] == 1).all() and (up[2:, 3:] == 40000).all()
    assert resize_nearest(np.zeros((2, 8, 8), np.float32), (4, 4)).shape == (2, 4, 4)


def test_bilinear_resize_interpolates() -> None:
    ramp = np.array([[0.0, 1.0]], dtype=np.float32)
    up = resize_bilinear(ramp, (1, 4))
    assert up.dtype == np.float32 and np.all(np.diff(up[0]) >= 0) and 0 < up[0, 1] < 1


@pytest.mark.parametrize("size", [(128, 256), (97, 301), (20, 300), (10, 20)])
def test_bilinear_resize_gives_pillows_values_up_and_down(size: tuple[int, int]) -> None:
    """Enlarging goes through OpenCV, shrinking through Pillow; both agree with Pillow."""
    values = np.random.default_rng(1).random((32, 48)).astype(np.float32)
    pillow = Image.fromarray(values, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    got = resize_bilinear(values, size)
    assert got.shape == size and got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(pillow), atol=1e-5)


def test_instances_are_measured_on_the_map() -> None:
    instance_map = np.zeros((10, 10), dtype=np.uint16)
    instance_map[2:4, 3:7] = 13001  # 2 rows × 4 columns
    instance_map[8, 9] = 11001
    stats = {s.id: s for s in measure_instances(instance_map, {13001: 13, 11001: 11})}
    assert stats[13001].class_id == 13 and stats[13001].pixel_count == 8
    assert stats[13001].bbox == (3, 2, 7, 4)  # end-exclusive pixel edges
    assert stats[13001].centroid == (5.0, 3.0)  # mean of pixel centres
    assert stats[11001].bbox == (9, 8, 10, 9) and stats[11001].pixel_count == 1
    assert measure_instances(np.zeros((3, 3), np.uint16), {}) == ()


def test_classes_present_are_largest_first_with_names(card: ModelCard) -> None:
    semantic = np.zeros((4, 5), dtype=np.uint8)
    semantic[0] = 10
    semantic[1, :2] = 13
    confidence = np.full((4, 5), 0.5, dtype=np.float32)
    present = classes_present(semantic, confidence, card)
    assert [(c.name, c.pixel_fraction) for c in present] == [("road", 0.65), ("sky", 0.25), ("car", 0.1)]
    assert all(c.mean_confidence == pytest.approx(0.5) for c in present)


def test_grouped_instances_are_measured_on_their_map() -> None:
    # Two blocks whose offsets point at their own centres: a car and a person.
    semantic = np.zeros((32, 48), dtype=np.uint8)
    offsets = np.zeros((2, 32, 48), dtype=np.float32)
    rows, cols = np.mgrid[0:32, 0:48]
    for class_id, (y0, y1, x0, x1) in ((13, (4, 14, 6, 30)), (11, (18, 30, 34, 42))):
        semantic[y0:y1, x0:x1] = class_id
        block = (slice(y0, y1), slice(x0, x1))
        offsets[0][block] = (y0 + y1 - 1) / 2 - rows[block]
        offsets[1][block] = (x0 + x1 - 1) / 2 - cols[block]
    grouped = group_instances(semantic, offsets, (11, 13))
    assert grouped.class_of == {1: 13, 2: 11}
    car, person = grouped.instances
    assert (car.id, car.class_id, car.pixel_count, car.bbox) == (1, 13, 240, (6, 4, 30, 14))
    assert car.centroid == pytest.approx((18.0, 9.0))
    assert (person.id, person.class_id, person.pixel_count, person.bbox) == (2, 11, 96, (34, 18, 42, 30))
    assert person.centroid == pytest.approx((38.0, 24.0))


@pytest.mark.parametrize("size", [(32, 48), (97, 211), (13, 7), (64, 30), (1, 1)])
def test_measuring_from_the_small_map_equals_measuring_the_resized_one(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    small = np.zeros((16, 24), dtype=np.uint16)
    for k in range(1, 7):  # blocks of six instances, some overlapping, one a single pixel
        y, x = rng.integers(0, 16), rng.integers(0, 24)
        small[y : y + rng.integers(1, 6), x : x + rng.integers(1, 9)] = k
    small[15, 23] = 9
    class_of = {k: 10 + k for k in range(1, 10)}
    expected = measure_instances(resize_nearest(small, size), class_of)
    got = measure_resized(small, class_of, size)
    assert got == expected  # ids, classes, counts, boxes and centroids, exactly
    assert measure_resized(np.zeros((16, 24), np.uint16), class_of, size) == ()


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_jpeg_for_the_model_alone_is_decoded_at_a_reduced_scale(orientation: int) -> None:
    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = encode(stored, "JPEG", exif=exif.tobytes())
    upright = (2048, 1024) if orientation == 6 else (1024, 2048)  # 6: turned a quarter
    full, full_size = decode_upload(data, 10**7)
    assert full.shape[:2] == full_size == upright
    reduced, size = decode_upload(data, 10**7, at_least=(128, 256))
    assert size == upright  # the maps still come back at the upload's size
    # The largest reduction whose upright sides still cover 128x256: 1/8 of 1024x2048;
    # 1/4 of 2048x1024, whose 256 px width allows no more.
    scale = 4 if orientation == 6 else 8
    assert reduced.shape[:2] == (upright[0] // scale, upright[1] // scale)
    assert reduced.shape[0] >= 128 and reduced.shape[1] >= 256
    png, png_size = decode_upload(encode(stored), 10**7, at_least=(128, 256))
    assert png.shape[:2] == png_size == (1024, 2048)  # only JPEG scales in the decoder
