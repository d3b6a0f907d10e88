"""The preview PNG: encoder round trip and outline colours."""

from __future__ import annotations

import struct
import zlib

import numpy as np

from trainables.engine.preview import encode_png, render_outlines


def _decode_png(data: bytes) -> np.ndarray:
    """Minimal decoder for the encoder's output (8-bit RGB, filter 0 rows)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat_length = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    rows = np.frombuffer(zlib.decompress(data[41 : 41 + idat_length]), np.uint8)
    rows = rows.reshape(height, 1 + width * 3)
    assert not rows[:, 0].any()
    return rows[:, 1:].reshape(height, width, 3)


def test_png_encoder_round_trip() -> None:
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_decode_png(encode_png(image)), image)


def test_outlines_are_drawn_in_region_colours() -> None:
    image = np.zeros((8, 8), np.float32)
    image[1:7, 1:7] = 1.0
    ref = np.zeros((3, 8, 8), bool)
    ref[0, 2:6, 2:6] = True  # WT: a 4x4 square
    pred = np.zeros((3, 8, 8), bool)
    pixels = _decode_png(render_outlines(image, ref, pred, size=8))
    assert pixels.shape == (8, 8 + 4 + 8, 3)
    left = pixels[:, :8]
    green = (left == (0, 255, 0)).all(axis=2)
    assert green.sum() == 12  # the square's border; its 2x2 inside stays grey
    assert not (pixels[:, 12:] == (0, 255, 0)).all(axis=2).any()  # empty prediction
