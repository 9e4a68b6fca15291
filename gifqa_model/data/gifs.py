"""Probe, validate, decode and encode GIF bytes.

Untrusted GIFs reach this module (ingest folders, TSVs of URLs, serving uploads), so the cheap
checks come first: :func:`probe_gif` walks the GIF block structure itself (header, extensions,
image descriptors, trailer) without decompressing any pixels, so a 10,000-frame bomb or a
65535x65535 canvas is refused in milliseconds. Only then does :func:`decode_frames` hand the
bytes to Pillow, whose sequential seek composites frames (palettes, transparency, disposal).

:func:`encode_gif` writes the GIF container itself and borrows Pillow only for the LZW
compression of each frame: Pillow's own multi-frame writer merges identical consecutive frames
into one, which would silently change a generated GIF's frame count.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from gifqa_model.core.config import GifLimits

GifSource = str | Path | bytes | bytearray | memoryview

GIF_MAGICS = (b"GIF87a", b"GIF89a")
_EXTENSION, _IMAGE, _TRAILER = 0x21, 0x2C, 0x3B
_GRAPHIC_CONTROL = 0xF9

# Browsers play a frame delay of 0 or 1 (1/100 s) at 100 ms; so do we when summing durations.
_MIN_DELAY_CS = 2
_DEFAULT_DELAY_MS = 100


class GifError(ValueError):
    """A GIF that cannot or must not be decoded.

    ``reason`` is a short machine-readable tag (``missing_file``, ``empty_file``,
    ``too_large_bytes``, ``not_a_gif``, ``truncated``, ``zero_frames``, ``too_many_frames``,
    ``too_many_pixels``, ``decode_error``) used to group quarantined inputs; the message is for
    humans.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class GifInfo:
    n_frames: int
    width: int
    height: int
    duration_ms: int


@dataclass(frozen=True)
class _Image:
    """One image (frame) found by the block walker; ``data`` spans LZW code size to terminator."""

    left: int
    top: int
    width: int
    height: int
    delay_cs: int
    data: tuple[int, int]


def _read_bytes(src: GifSource, limits: GifLimits) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        if len(data) > limits.max_bytes:
            raise GifError("too_large_bytes", f"{len(data)} bytes > limit {limits.max_bytes}")
    else:
        path = Path(src)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise GifError("missing_file", f"no such file: {path}") from None
        # Refuse by size before reading, so an oversized file never lands in memory.
        if size > limits.max_bytes:
            raise GifError("too_large_bytes", f"{size} bytes > limit {limits.max_bytes}")
        data = path.read_bytes()
    if not data:
        raise GifError("empty_file", "the file is empty")
    return data


def _skip_sub_blocks(buf: bytes, pos: int) -> int:
    """Return the position just past a chain of data sub-blocks (ends with a 0-length block)."""
    n = len(buf)
    while True:
        if pos >= n:
            raise GifError("truncated", "data ends inside a sub-block chain")
        size = buf[pos]
        pos += 1
        if size == 0:
            return pos
        pos += size
        if pos > n:
            raise GifError("truncated", "data ends inside a sub-block")


def _walk(buf: bytes, limits: GifLimits) -> tuple[int, int, list[_Image]]:
    """Parse the container: canvas size and every image, stopping as soon as a limit is hit."""
    if buf[:6] not in GIF_MAGICS:
        raise GifError("not_a_gif", "the data does not start with GIF87a or GIF89a")
    if len(buf) < 13:
        raise GifError("truncated", "data ends inside the logical screen descriptor")
    width, height, packed = struct.unpack_from("<HHB", buf, 6)
    if width == 0 or height == 0:
        raise GifError("decode_error", f"empty canvas {width}x{height}")
    if width * height > limits.max_pixels:
        raise GifError(
            "too_many_pixels", f"canvas {width}x{height} > limit {limits.max_pixels} pixels"
        )
    pos = 13
    if packed & 0x80:  # global colour table
        pos += 3 * (2 ** ((packed & 0x07) + 1))

    images: list[_Image] = []
    delay_cs = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise GifError("truncated", f"data ends after {len(images)} frames, before the trailer")
        block = buf[pos]
        if block == _TRAILER:
            return width, height, images
        if block == _EXTENSION:
            if pos + 2 > n:
                raise GifError("truncated", "data ends inside an extension")
            label = buf[pos + 1]
            # The graphic control extension holds the delay of the image that follows it.
            if label == _GRAPHIC_CONTROL and pos + 6 <= n and buf[pos + 2] >= 4:
                delay_cs = struct.unpack_from("<H", buf, pos + 4)[0]
            pos = _skip_sub_blocks(buf, pos + 2)
        elif block == _IMAGE:
            if pos + 10 > n:
                raise GifError("truncated", "data ends inside an image descriptor")
            left, top, w, h, flags = struct.unpack_from("<HHHHB", buf, pos + 1)
            if w * h > limits.max_pixels:
                raise GifError("too_many_pixels", f"frame {w}x{h} > limit {limits.max_pixels}")
            if len(images) >= limits.max_frames:
                raise GifError("too_many_frames", f"more than {limits.max_frames} frames")
            pos += 10
            if flags & 0x80:  # local colour table
                pos += 3 * (2 ** ((flags & 0x07) + 1))
            if pos >= n:
                raise GifError("truncated", "data ends before the image data")
            if not 2 <= buf[pos] <= 11:
                raise GifError("decode_error", f"invalid LZW minimum code size {buf[pos]}")
            start = pos
            pos = _skip_sub_blocks(buf, pos + 1)
            images.append(_Image(left, top, w, h, delay_cs, (start, pos)))
            delay_cs = 0
        else:
            raise GifError("decode_error", f"unknown block 0x{block:02x} at byte {pos}")


def probe_gif(src: GifSource, limits: GifLimits | None = None) -> GifInfo:
    """Validate the container and count frames without decoding any pixels.

    Checks, in order: byte size, emptiness, magic bytes, canvas pixels, then every block up to
    the trailer (frame count and per-frame pixels are checked as the walk goes, so a bomb is
    refused at frame ``max_frames + 1``). Raises :class:`GifError`.
    """
    limits = limits or GifLimits()
    buf = _read_bytes(src, limits)
    width, height, images = _walk(buf, limits)
    if not images:
        raise GifError("zero_frames", "the GIF contains no image")
    duration = sum(
        im.delay_cs * 10 if im.delay_cs >= _MIN_DELAY_CS else _DEFAULT_DELAY_MS for im in images
    )
    return GifInfo(n_frames=len(images), width=width, height=height, duration_ms=duration)


def _frame_rgb(im: Image.Image) -> np.ndarray:
    """The current frame as RGB; transparent pixels become black, as on a dark page."""
    if im.mode == "RGB":
        return np.asarray(im)
    if im.mode == "RGBA" or "transparency" in im.info:
        rgba = np.asarray(im.convert("RGBA"))
        return np.where(rgba[..., 3:] > 0, rgba[..., :3], 0).astype(np.uint8)
    return np.asarray(im.convert("RGB"))


def _open(buf: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(buf), formats=["GIF"])
    except Exception as exc:  # Pillow raises several types for bad headers
        raise GifError("decode_error", f"Pillow cannot open the GIF: {exc}") from exc


def decode_frames(
    src: GifSource,
    indices: Sequence[int] | None = None,
    size: int | None = None,
    limits: GifLimits | None = None,
) -> np.ndarray:
    """Fully composited frames as uint8 ``(T, H, W, 3)``, in the order of ``indices``.

    Frames are decoded by Pillow's sequential seek, which applies palettes, transparency and
    disposal methods, so frame ``i`` looks as a browser shows it. ``size`` resizes every frame
    to ``size x size`` (bilinear). The container is probed first, so limits apply here too.
    """
    limits = limits or GifLimits()
    buf = _read_bytes(src, limits)
    info = probe_gif(buf, limits)
    wanted = list(range(info.n_frames)) if indices is None else [int(i) for i in indices]
    for i in wanted:
        if not 0 <= i < info.n_frames:
            raise IndexError(f"frame index {i} out of range for {info.n_frames} frames")
    needed = set(wanted)
    out: dict[int, np.ndarray] = {}
    im = _open(buf)
    i = 0
    try:
        for i in range(max(needed) + 1 if needed else 0):
            im.seek(i)  # sequential: each frame is composited onto the previous one
            if i in needed:
                frame = im
                if size is not None:
                    frame = Image.fromarray(_frame_rgb(im)).resize(
                        (size, size), Image.Resampling.BILINEAR
                    )
                out[i] = np.array(_frame_rgb(frame), dtype=np.uint8)
    except GifError:
        raise
    except Exception as exc:  # OSError (truncated data), EOFError, decoder errors
        raise GifError("decode_error", f"frame {i}: {exc}") from exc
    finally:
        im.close()
    if not wanted:
        h, w = (size, size) if size is not None else (info.height, info.width)
        return np.zeros((0, h, w, 3), dtype=np.uint8)
    return np.stack([out[i] for i in wanted])


def verify_gif(src: GifSource, limits: GifLimits | None = None) -> GifInfo:
    """Probe, then decompress every frame once, so corrupt LZW data is caught at ingest."""
    limits = limits or GifLimits()
    buf = _read_bytes(src, limits)
    info = probe_gif(buf, limits)
    im = _open(buf)
    i = 0
    try:
        for i in range(info.n_frames):
            im.seek(i)
            im.load()
    except Exception as exc:
        raise GifError("decode_error", f"frame {i}: {exc}") from exc
    finally:
        im.close()
    return info


def sample_indices(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread uniformly over ``n_frames`` (segment centres, in time order).

    When ``k > n_frames`` frames repeat, so callers always get exactly ``k`` indices.
    """
    if n_frames <= 0:
        raise ValueError(f"n_frames must be positive, got {n_frames}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return [min(n_frames - 1, int((j + 0.5) * n_frames / k)) for j in range(k)]


def _lzw_image_data(indices: np.ndarray, palette: bytes) -> bytes:
    """LZW-compressed image data (code size byte + sub-blocks) of one palette-index frame.

    Pillow compresses a "P" image without touching the indices when asked for no palette
    optimisation and no interlacing, so its codes are exactly our indices in row order; we cut
    them out of its output and write our own descriptor around them. (Giving Pillow the small
    palette rather than an "L" image halves the time: no 256-entry greyscale table is built.)
    """
    im = Image.fromarray(indices)
    im.putpalette(palette)
    buf = io.BytesIO()
    im.save(buf, format="GIF", optimize=False, interlace=False)
    data = buf.getvalue()
    _, _, images = _walk(data, GifLimits(max_bytes=len(data), max_pixels=indices.size))
    start, end = images[0].data
    return data[start:end]


def encode_gif(
    frames: Sequence[np.ndarray],
    palette: Sequence[tuple[int, int, int]],
    duration_ms: int | Sequence[int] = 100,
    loop: int = 0,
) -> bytes:
    """An animated GIF from full-canvas frames of palette indices (uint8 ``(H, W)`` arrays).

    Every frame is written whole (no delta cropping, no merging of identical frames), so the
    file has exactly ``len(frames)`` frames; output bytes depend only on the inputs.
    """
    if not frames:
        raise ValueError("at least one frame is needed")
    if not 1 <= len(palette) <= 256:
        raise ValueError("palette must hold 1..256 colours")
    height, width = frames[0].shape
    bits = max(1, int(np.ceil(np.log2(len(palette)))))
    table = bytearray()
    for rgb in palette:
        table += bytes(int(c) for c in rgb)
    table += b"\x00" * (3 * 2**bits - len(table))
    delays = [duration_ms] * len(frames) if isinstance(duration_ms, int) else list(duration_ms)
    if len(delays) != len(frames):
        raise ValueError("one duration per frame is needed")

    out = bytearray(b"GIF89a")
    # Global colour table flag, colour resolution, table size; background 0; no aspect ratio.
    out += struct.pack("<HHBBB", width, height, 0x80 | ((bits - 1) << 4) | (bits - 1), 0, 0)
    out += table
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01" + struct.pack("<H", loop) + b"\x00"
    for frame, delay in zip(frames, delays, strict=True):
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.shape != (height, width):
            raise ValueError(f"frame shape {frame.shape} != {(height, width)}")
        if int(frame.max()) >= len(palette):
            raise ValueError("frame uses an index outside the palette")
        # Graphic control: disposal 1 (keep), delay in 1/100 s, no transparency.
        out += b"\x21\xf9\x04\x04" + struct.pack("<H", round(delay / 10)) + b"\x00\x00"
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
        out += _lzw_image_data(frame, bytes(table))
    out += b"\x3b"
    return bytes(out)


def reverse_gif(src: GifSource, limits: GifLimits | None = None) -> bytes:
    """The GIF played backwards: its composited frames in reverse order, re-encoded with one
    frame delay (the mean of the original's). Fails with GifError on more than 256 colours."""
    info = probe_gif(src, limits)
    frames = decode_frames(src, limits=limits)[::-1]  # (T, H, W, 3)
    flat = frames.reshape(-1, 3)
    colours, index = np.unique(flat, axis=0, return_inverse=True)
    if len(colours) > 256:
        raise GifError("too_many_colours", f"{len(colours)} colours: a GIF holds 256")
    indices = index.reshape(frames.shape[:3]).astype(np.uint8)
    delay = max(10, int(round(info.duration_ms / max(info.n_frames, 1))))
    return encode_gif(list(indices), [tuple(int(v) for v in c) for c in colours], delay)
