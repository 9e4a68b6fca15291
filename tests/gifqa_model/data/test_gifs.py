"""GIF probing, decoding and encoding on generated, real and hostile inputs."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gifqa_model.data.gifs import (
    GifError,
    GifLimits,
    decode_frames,
    encode_gif,
    probe_gif,
    sample_indices,
    verify_gif,
)

PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]


def _frames(n: int = 6, size: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, len(PALETTE), (size, size + 4)).astype(np.uint8) for _ in range(n)]
    if n > 2:
        frames[2] = frames[1].copy()  # identical neighbours must stay two frames
    return frames


def _tiny_frame() -> bytes:
    """A 1x1 image block: descriptor, LZW code size 2, one sub-block, terminator."""
    return b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"


def _header(width: int = 1, height: int = 1) -> bytes:
    # Global table of 2 colours (flag 0x80, size bits 0).
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00" * 6


def _reason(src, **kwargs) -> str:
    with pytest.raises(GifError) as err:
        probe_gif(src, GifLimits(**kwargs) if kwargs else None)
    return err.value.reason


@pytest.fixture(scope="module")
def real_gifs(shared_data: Path) -> list[Path]:
    paths = sorted((shared_data / "real_gifs").glob("*.gif"))
    assert len(paths) == 5
    return paths


def test_encode_decode_roundtrip_keeps_every_frame_and_pixel():
    frames = _frames()
    data = encode_gif(frames, PALETTE, duration_ms=80)
    info = probe_gif(data)
    assert (info.n_frames, info.width, info.height, info.duration_ms) == (6, 20, 16, 480)
    decoded = decode_frames(data)
    expected = np.array(PALETTE, dtype=np.uint8)[np.stack(frames)]
    assert decoded.dtype == np.uint8 and decoded.shape == (6, 16, 20, 3)
    np.testing.assert_array_equal(decoded, expected)
    assert Image.open(io.BytesIO(data)).n_frames == 6  # Pillow agrees on the count
    assert encode_gif(frames, PALETTE, duration_ms=80) == data  # deterministic bytes


def test_decode_indices_order_and_resize():
    data = encode_gif(_frames(), PALETTE)
    full = decode_frames(data)
    picked = decode_frames(data, indices=[4, 0, 4])
    np.testing.assert_array_equal(picked, full[[4, 0, 4]])
    assert decode_frames(data, indices=[1, 3], size=32).shape == (2, 32, 32, 3)
    with pytest.raises(IndexError):
        decode_frames(data, indices=[6])


def test_real_gifs_probe_and_decode(real_gifs: list[Path]):
    for path in real_gifs:
        info = probe_gif(path)
        with Image.open(path) as pil:
            assert info.n_frames == pil.n_frames
            assert (info.width, info.height) == pil.size
        assert 27 <= info.n_frames <= 42
        assert 225 <= max(info.width, info.height) <= 240
        assert info.duration_ms > 1000
        frames = decode_frames(path)
        assert frames.shape == (info.n_frames, info.height, info.width, 3)
        # Real footage: frames change over time, and are not blank.
        assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 1
        assert frames.std() > 10
        idx = sample_indices(info.n_frames, 8)
        np.testing.assert_array_equal(decode_frames(path, idx), frames[idx])
        assert decode_frames(path, idx, size=64).shape == (8, 64, 64, 3)
        assert verify_gif(path) == info


def test_real_gif_composites_like_pillow(real_gifs: list[Path]):
    """Delta frames (transparency + disposal) come out as whole pictures, as Pillow shows them."""
    path = next(p for p in real_gifs if p.name == "tgifqa_4.gif")
    ours = decode_frames(path, [0, 10])
    with Image.open(path) as pil:
        pil.seek(10)
        theirs = np.asarray(pil.convert("RGB"))
    # Pillow's own RGB view differs only where the frame is still transparent (never drawn).
    assert (ours[1] == theirs).all(axis=-1).mean() > 0.95


def test_truncated_gif(real_gifs: list[Path]):
    half = real_gifs[0].read_bytes()
    half = half[: len(half) // 2]
    assert _reason(half) == "truncated"
    with pytest.raises(GifError, match="truncated"):
        decode_frames(half)


def test_empty_file(tmp_path: Path):
    empty = tmp_path / "empty.gif"
    empty.write_bytes(b"")
    assert _reason(empty) == "empty_file"
    assert _reason(b"") == "empty_file"


def test_not_a_gif():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="PNG")
    assert _reason(buf.getvalue()) == "not_a_gif"
    assert _reason(b"GIF8") == "not_a_gif"


def test_corrupt_blocks_and_corrupt_image_data():
    data = bytearray(encode_gif(_frames(2), PALETTE))
    garbage = bytes(data[:25]) + b"\x99" * 50  # header and palette, then nonsense
    assert _reason(garbage) == "decode_error"
    # Valid block structure, garbage LZW codes: only decoding can tell.
    start = 6 + 7 + 12 + 19 + 8 + 10  # header, screen, palette, loop ext, control ext, descriptor
    data[start + 2 : start + 12] = b"\xff" * 10
    probe_gif(bytes(data))  # the structure is fine
    with pytest.raises(GifError) as err:
        verify_gif(bytes(data))
    assert err.value.reason == "decode_error"


def test_zero_frames():
    assert _reason(_header() + b"\x3b") == "zero_frames"
    assert _reason(_header()) == "truncated"  # no trailer at all


def test_frame_bomb_is_rejected_without_decoding(monkeypatch):
    bomb = _header() + _tiny_frame() * 10_000 + b"\x3b"

    def no_decoding(*args, **kwargs):
        raise AssertionError("Pillow was asked to decode a GIF the probe must refuse")

    monkeypatch.setattr("gifqa_model.data.gifs.Image.open", no_decoding)
    assert _reason(bomb) == "too_many_frames"
    with pytest.raises(GifError, match="too_many_frames"):
        decode_frames(bomb)
    monkeypatch.undo()
    # The same file under a higher limit is counted exactly, still without decoding.
    assert probe_gif(bomb, GifLimits(max_frames=20_000)).n_frames == 10_000


def test_huge_canvas_and_huge_frame():
    assert _reason(_header(60_000, 60_000) + _tiny_frame() + b"\x3b") == "too_many_pixels"
    big_frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 5000, 5000, 0) + b"\x02\x00"
    assert _reason(_header() + big_frame + b"\x3b") == "too_many_pixels"


def test_too_large_bytes(real_gifs: list[Path]):
    assert _reason(real_gifs[0], max_bytes=1000) == "too_large_bytes"
    assert _reason(real_gifs[0].read_bytes(), max_bytes=1000) == "too_large_bytes"


def test_zero_delay_counts_as_100ms():
    frames = _frames(3)
    assert probe_gif(encode_gif(frames, PALETTE, duration_ms=0)).duration_ms == 300
    assert probe_gif(encode_gif(frames, PALETTE, duration_ms=[50, 0, 200])).duration_ms == 350


def test_sample_indices():
    assert sample_indices(16, 4) == [2, 6, 10, 14]
    assert sample_indices(40, 1) == [20]
    assert sample_indices(3, 5) == [0, 0, 1, 2, 2]  # repeats when asking for more
    for n, k in [(27, 8), (42, 8), (16, 16), (1000, 7)]:
        idx = sample_indices(n, k)
        assert len(idx) == k and idx == sorted(idx) and 0 <= idx[0] and idx[-1] < n
    with pytest.raises(ValueError):
        sample_indices(0, 4)
