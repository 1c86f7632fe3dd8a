"""PNG encodings of the returned maps: what a client decodes is what the service meant."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from service.encoding import (
    DEPTH_INVALID,
    DEPTH_MAX_VALUE,
    DEPTH_SCALE_TO_METRES,
    DEPTH_SKY,
    decode_depth_png,
    decode_png,
    depth_png,
    from_base64,
    instance_png,
    overlay_png,
    semantic_png,
    to_base64,
)
from training.data.classes import palette

RNG = np.random.default_rng(0)


def test_semantic_round_trips_exactly_including_the_ignore_index() -> None:
    train_ids = RNG.integers(0, 19, (60, 100)).astype(np.uint8)
    train_ids[0, :10] = 255
    decoded = decode_png(semantic_png(train_ids))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, train_ids)


def test_instance_map_round_trips_exactly_as_16_bit() -> None:
    instance_map = RNG.integers(0, 65536, (60, 100)).astype(np.uint16)
    instance_map[0, 0], instance_map[0, 1] = 0, 65535
    data = instance_png(instance_map)
    np.testing.assert_array_equal(decode_png(data), instance_map)
    # What a client with plain Pillow sees: a 16-bit greyscale image, not 8-bit.
    assert np.asarray(Image.open(io.BytesIO(data))).dtype == np.uint16


def test_depth_round_trips_within_half_a_quantisation_step() -> None:
    depth_m = RNG.uniform(0.5, 1000.0, (60, 100))
    data, encoding = depth_png((1.0 / depth_m).astype(np.float32))
    decoded = decode_depth_png(data, encoding)
    assert decoded.dtype == np.float32
    # rtol: float32 inverse depth costs a little relative precision on top of the rounding.
    np.testing.assert_allclose(decoded, depth_m, atol=DEPTH_SCALE_TO_METRES / 2, rtol=1e-6)
    assert encoding.scale_to_metres == DEPTH_SCALE_TO_METRES
    assert encoding.min_m == pytest.approx(depth_m.min(), rel=1e-6)
    assert encoding.max_m == pytest.approx(depth_m.max(), rel=1e-6)


def test_sky_decodes_to_inf_and_invalid_to_nan() -> None:
    inverse_depth = np.full((4, 5), 0.1, dtype=np.float32)  # 10 m
    inverse_depth[0, 0] = 0.0  # sky
    inverse_depth[0, 1] = -0.002  # a regression overshooting sky is still sky
    inverse_depth[1, 0] = np.nan
    inverse_depth[1, 1] = np.inf
    data, encoding = depth_png(inverse_depth)
    values = decode_png(data)
    assert values[0, 0] == values[0, 1] == DEPTH_SKY
    assert values[1, 0] == values[1, 1] == DEPTH_INVALID
    depth = decode_depth_png(data, encoding)
    assert np.isposinf(depth[0, 0]) and np.isposinf(depth[0, 1])
    assert np.isnan(depth[1, 0]) and np.isnan(depth[1, 1])
    assert depth[2, 2] == pytest.approx(10.0, abs=DEPTH_SCALE_TO_METRES / 2)
    assert encoding.min_m == encoding.max_m == pytest.approx(10.0)
    assert not encoding.beyond_range


def test_depth_beyond_range_saturates_and_a_tiny_depth_is_not_sky() -> None:
    inverse_depth = np.array([[1 / 5000.0, 1e6]], dtype=np.float32)  # 5 km and 1 µm
    data, encoding = depth_png(inverse_depth)
    np.testing.assert_array_equal(decode_png(data), [[DEPTH_MAX_VALUE, 1]])
    # The PNG stops at 1023.97 m: max_m says so rather than quoting a depth no pixel can hold.
    assert encoding.max_m == pytest.approx(DEPTH_MAX_VALUE * DEPTH_SCALE_TO_METRES)
    assert encoding.beyond_range
    assert encoding.min_m == DEPTH_SCALE_TO_METRES  # 1 µm is one step, the nearest the PNG holds
    far, near = decode_depth_png(data, encoding)[0]
    assert far == pytest.approx(DEPTH_MAX_VALUE * DEPTH_SCALE_TO_METRES) and np.isfinite(near)


def test_an_all_sky_image_has_no_depth_range() -> None:
    data, encoding = depth_png(np.zeros((3, 3), dtype=np.float32))
    assert encoding.min_m is None and encoding.max_m is None
    assert np.isposinf(decode_depth_png(data, encoding)).all()


def test_overlay_blends_class_colours_and_outlines_instances_in_white() -> None:
    image = np.full((20, 30, 3), 100, dtype=np.uint8)
    semantic = np.zeros((20, 30), dtype=np.uint8)  # road
    semantic[5:15, 10:20] = 13  # car
    instance_map = np.zeros((20, 30), dtype=np.uint16)
    instance_map[5:15, 10:20] = 1
    colours = palette()
    blended = decode_png(overlay_png(image, semantic, instance_map, colours, alpha=0.25))
    assert blended.shape == (20, 30, 3) and blended.dtype == np.uint8
    expected_road = np.rint(0.75 * 100 + 0.25 * colours[0].astype(np.float64))
    np.testing.assert_array_equal(blended[0, 0], expected_road)
    np.testing.assert_array_equal(
        blended[10, 15], np.rint(0.75 * 100 + 0.25 * colours[13].astype(np.float64))
    )
    assert (blended[5, 10:20] == 255).all() and (blended[14, 10:20] == 255).all()  # outline
    assert not (blended[10, 15] == 255).all()  # the inside keeps its colour


def test_overlay_alpha_zero_is_the_image_and_no_instance_map_draws_no_outlines() -> None:
    image = RNG.integers(0, 256, (20, 30, 3)).astype(np.uint8)
    semantic = RNG.integers(0, 19, (20, 30)).astype(np.uint8)
    np.testing.assert_array_equal(decode_png(overlay_png(image, semantic, None, palette(), alpha=0.0)), image)
    solid = decode_png(overlay_png(image, semantic, None, palette(), alpha=1.0))
    np.testing.assert_array_equal(solid, palette()[semantic])


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_overlay_refuses_alpha_outside_zero_to_one(alpha: float) -> None:
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="alpha"):
        overlay_png(image, np.zeros((4, 4), dtype=np.uint8), None, palette(), alpha=alpha)


def test_maps_of_the_wrong_type_are_refused() -> None:
    with pytest.raises(ValueError, match="train_ids must be uint8"):
        semantic_png(np.zeros((4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="instance_map must be uint16"):
        instance_png(np.zeros((4, 4), dtype=np.int32))


def test_decoding_something_that_is_not_a_png_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a readable PNG"):
        decode_png(b"definitely not a png")
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4)).save(jpeg, format="JPEG")
    with pytest.raises(ValueError, match="expected a PNG"):
        decode_png(jpeg.getvalue())


def test_base64_round_trips_and_refuses_garbage() -> None:
    data = semantic_png(np.zeros((3, 3), dtype=np.uint8))
    text = to_base64(data)
    assert text.isascii() and from_base64(text) == data
    with pytest.raises(ValueError, match="base64"):
        from_base64("not base64!")
