"""Decoding rules: formats, 16-bit, channel conversion, resize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_factory import write_image

from raylung.data.images import decode as decode_image
from raylung.data.images import load_image, resize_to, to_uint8


def test_16bit_single_channel_tiff_is_stretched_per_image(tmp_path: Path) -> None:
    # a 12-bit DAPI-like image: dark background, a few bright nuclei, far below 65535
    array = np.full((24, 32), 100, dtype=np.uint16)
    array[5:10, 5:10] = 4000
    array[15:20, 20:25] = 2000
    path = write_image(tmp_path / "dapi.tif", array)
    assert decode_image(path).dtype == np.uint16
    gray = load_image(path, in_chans=1)
    assert gray.shape == (24, 32, 1) and gray.dtype == np.uint8
    assert gray[0, 0, 0] == 0 and gray[7, 7, 0] == 255  # full-range /257 would give 0 and 16
    assert 100 < gray[17, 22, 0] < 140  # 2000 sits half-way between 100 and 4000
    rgb = load_image(path, in_chans=3)
    assert rgb.shape == (24, 32, 3)
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 2])  # gray -> 3 channels by replication


def test_16bit_png_and_planar_tiff(tmp_path: Path) -> None:
    rgb16 = (np.arange(24 * 32 * 3).reshape(24, 32, 3) * 20).astype(np.uint16)
    png = load_image(write_image(tmp_path / "a.png", rgb16), in_chans=3)
    planar = load_image(write_image(tmp_path / "b.tif", np.moveaxis(rgb16, -1, 0).copy()), in_chans=3)
    assert png.shape == planar.shape == (24, 32, 3)
    assert np.array_equal(png, planar)
    assert png[..., 0].max() == 255 and png[..., 0].min() == 0


def test_rgb_to_gray_uses_luminance_and_alpha_is_dropped(tmp_path: Path) -> None:
    rgba = np.zeros((24, 32, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 7
    path = write_image(tmp_path / "rgba.png", rgba)
    assert load_image(path, in_chans=3)[0, 0].tolist() == [200, 100, 50]
    expected = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert abs(int(load_image(path, in_chans=1)[0, 0, 0]) - expected) <= 1


def test_grayscale_jpeg_to_three_channels(tmp_path: Path) -> None:
    gray = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))
    image = load_image(write_image(tmp_path / "g.jpg", gray), in_chans=3)
    assert image.shape == (24, 32, 3)
    assert np.array_equal(image[..., 0], image[..., 1])


def test_float_and_constant_images() -> None:
    assert to_uint8(np.full((4, 4, 1), 7.0, dtype=np.float32)).max() == 0
    ramp = np.linspace(0, 1, 1000, dtype=np.float32).reshape(10, 100, 1)
    out = to_uint8(ramp)
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_resize_to_target(keep_aspect: bool) -> None:
    image = np.full((100, 100, 3), 255, dtype=np.uint8)
    out = resize_to(image, (40, 20), keep_aspect)
    assert out.shape == (20, 40, 3)
    if keep_aspect:  # 20x20 content centred, black bars left and right
        assert out[:, :10].max() == 0 and out[:, 30:].max() == 0 and out[:, 10:30].min() == 255
    else:
        assert out.min() == 255


def test_large_jpeg_reduced_decode_matches_size(tmp_path: Path) -> None:
    big = np.random.default_rng(0).integers(0, 256, (960, 1280, 3), dtype=np.uint8)
    path = write_image(tmp_path / "big.jpg", big)
    image = load_image(path, in_chans=3, size=(320, 240))
    assert image.shape == (240, 320, 3)
    assert decode_image(path, target=(320, 240)).shape[:2] == (240, 320)  # 1/4 DCT scale
