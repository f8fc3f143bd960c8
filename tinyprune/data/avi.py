"""A small reader and writer for uncompressed RIFF AVI files (24-bit DIB frames).

Why this exists: UBFC-rPPG ships ``vid.avi`` as uncompressed 8-bit RGB, and this machine has no
video codec library (no OpenCV, no PyAV, no ffmpeg). Uncompressed AVI is simple enough to read and
write with the standard library: a ``RIFF 'AVI '`` file holds a ``LIST 'hdrl'`` (main header
``avih``, one ``LIST 'strl'`` per stream with ``strh`` + ``strf``; for video ``strf`` is a
BITMAPINFOHEADER) and a ``LIST 'movi'`` whose ``##db`` / ``##dc`` chunks are the frames. A DIB frame
stores BGR pixels, rows bottom-up unless the height is negative, each row padded to 4 bytes.

Files over 1 GB use the OpenDML extension: further top-level ``RIFF 'AVIX'`` chunks, each with its
own ``LIST 'movi'``. The reader walks all of them (it ignores the ``idx1`` / ``indx`` indexes). The
writer produces a plain AVI 1.0 file and refuses to exceed the 1 GB RIFF limit.
Other codecs (MJPG, FFV1, H.264, ...) raise :class:`ConfigError` naming the FourCC and the way out.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tinyprune.errors import ConfigError
from tinyprune.fileio import write_bytes_atomic

#: Frames larger than this (width x height) are refused as corrupt headers.
MAX_FRAME_PIXELS = 64 * 1024 * 1024

_RIFF_LIMIT = 1 << 30
_AVIF_HASINDEX = 0x10


@dataclass(frozen=True)
class AviInfo:
    """What the headers of an AVI file say about its video stream."""

    width: int
    height: int
    fps: float
    bit_count: int
    compression: str
    bottom_up: bool
    declared_frames: int


def write_avi(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write uint8 RGB frames ``[T, H, W, 3]`` as an uncompressed 24-bit AVI (atomically).

    Args:
        path: Destination ``.avi`` file.
        frames: ``uint8`` array ``[T, H, W, 3]`` in RGB order.
        fps: Frame rate stored in the headers (rounded to 1/1000 s ticks).

    Returns:
        The path written.

    Raises:
        ConfigError: wrong array shape/dtype, non-positive fps, or a file over 1 GB.
    """
    frames = _check_frames(frames)
    if not fps > 0:
        msg = f"AVI frame rate must be > 0, got {fps!r}"
        raise ConfigError(msg)
    t, h, w, _ = frames.shape
    stride = (w * 3 + 3) & ~3
    frame_bytes = stride * h
    if t * (frame_bytes + 24) + 4096 > _RIFF_LIMIT:
        msg = (
            f"{t} frames of {w}x{h} exceed the 1 GB AVI 1.0 limit of this writer; "
            "write fewer frames or a smaller frame size"
        )
        raise ConfigError(msg)
    hdrl = _header_list(t, w, h, fps, frame_bytes)
    movi = bytearray(b"movi")
    index = bytearray()
    for frame in frames:
        offset = len(movi)
        movi += b"00db" + struct.pack("<I", frame_bytes) + _encode_dib(frame, stride)
        index += b"00db" + struct.pack("<III", 0x10, offset, frame_bytes)
    body = b"AVI " + _chunk(b"LIST", hdrl) + _chunk(b"LIST", bytes(movi)) + _chunk(b"idx1", index)
    return _atomic_write(Path(path), _chunk(b"RIFF", body))


def read_avi_info(path: str | Path) -> AviInfo:
    """Parse the headers of ``path`` (no frame data is read)."""
    if not Path(path).is_file():
        msg = f"video file {path} not found; expected an uncompressed RIFF AVI at that path"
        raise ConfigError(msg)
    with open(path, "rb") as f:
        info, _ = _scan(f, Path(path), want_frames=False)
    return info


def read_avi(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, float]:
    """Read an uncompressed AVI into uint8 RGB frames ``[T, H, W, 3]``.

    Args:
        path: The ``.avi`` file.
        max_frames: Stop after this many frames (``None`` reads all).

    Returns:
        ``(frames, fps)``.

    Raises:
        ConfigError: missing file, not a RIFF AVI, or a compressed codec.
    """
    p = Path(path)
    info = read_avi_info(p)
    frames = list(iter_avi(p, max_frames))
    if not frames:
        msg = f"{p} holds no video frames"
        raise ConfigError(msg)
    return np.stack(frames), info.fps


def iter_avi(path: str | Path, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield the frames of an uncompressed AVI one by one (uint8 RGB ``[H, W, 3]``)."""
    p = Path(path)
    if not p.is_file():
        msg = f"video file {p} not found; expected an uncompressed RIFF AVI at that path"
        raise ConfigError(msg)
    with open(p, "rb") as f:
        info, offsets = _scan(f, p, want_frames=True, max_frames=max_frames)
        for off, size in offsets:
            f.seek(off)
            yield _decode_dib(f.read(size), info, p)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] == 0:
        msg = f"frames must be uint8 [T, H, W, 3] with T >= 1, got {arr.dtype} {arr.shape}"
        raise ConfigError(msg)
    return arr


def _chunk(fourcc: bytes, payload: bytes) -> bytes:
    pad = b"\x00" if len(payload) % 2 else b""
    return fourcc + struct.pack("<I", len(payload)) + payload + pad


def _header_list(t: int, w: int, h: int, fps: float, frame_bytes: int) -> bytes:
    us_per_frame = round(1e6 / fps)
    rate, scale = round(fps * 1000), 1000
    avih = struct.pack(
        "<14I",
        us_per_frame,
        int(frame_bytes * fps),
        0,
        _AVIF_HASINDEX,
        t,
        0,
        1,
        frame_bytes,
        w,
        h,
        0,
        0,
        0,
        0,
    )
    strh = (
        b"vids"
        + b"DIB "
        + struct.pack("<IHHIIIIIIII", 0, 0, 0, 0, scale, rate, 0, t, frame_bytes, 0xFFFFFFFF, 0)
        + struct.pack("<4h", 0, 0, w, h)
    )
    strf = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, frame_bytes, 0, 0, 0, 0)
    strl = b"strl" + _chunk(b"strh", strh) + _chunk(b"strf", strf)
    return b"hdrl" + _chunk(b"avih", avih) + _chunk(b"LIST", strl)


def _encode_dib(frame: np.ndarray, stride: int) -> bytes:
    h, w, _ = frame.shape
    rows = np.zeros((h, stride), np.uint8)
    rows[:, : w * 3] = frame[::-1, :, ::-1].reshape(h, w * 3)
    return rows.tobytes()


def _decode_dib(data: bytes, info: AviInfo, path: Path) -> np.ndarray:
    bpp = info.bit_count // 8
    stride = (info.width * bpp + 3) & ~3
    if len(data) < stride * info.height:
        msg = f"{path}: truncated frame ({len(data)} bytes, expected {stride * info.height})"
        raise ConfigError(msg)
    rows = np.frombuffer(data, np.uint8, stride * info.height).reshape(info.height, stride)
    pix = rows[:, : info.width * bpp].reshape(info.height, info.width, bpp)[:, :, 2::-1]
    return pix[::-1] if info.bottom_up else pix


def _scan(
    f: BinaryIO, path: Path, *, want_frames: bool, max_frames: int | None = None
) -> tuple[AviInfo, list[tuple[int, int]]]:
    """Walk the RIFF tree; return stream info and (offset, size) of each video frame chunk."""
    try:
        return _scan_riff(f, path, want_frames, max_frames)
    except (struct.error, RecursionError, ValueError, OverflowError, MemoryError) as e:
        if isinstance(e, ConfigError):
            raise
        msg = f"{path}: corrupt AVI structure ({type(e).__name__}: {e})"
        raise ConfigError(msg) from e


def _scan_riff(
    f: BinaryIO, path: Path, want_frames: bool, max_frames: int | None
) -> tuple[AviInfo, list[tuple[int, int]]]:
    size = os.fstat(f.fileno()).st_size
    info: AviInfo | None = None
    offsets: list[tuple[int, int]] = []
    pos = 0
    while pos + 12 <= size:
        f.seek(pos)
        tag, length, form = struct.unpack("<4sI4s", f.read(12))
        if tag != b"RIFF" or form not in (b"AVI ", b"AVIX"):
            if pos == 0:
                msg = f"{path} is not a RIFF AVI file (starts with {tag!r} {form!r})"
                raise ConfigError(msg)
            break
        info, stop = _walk(
            f, pos + 12, pos + 8 + length, path, info, offsets, want_frames, max_frames
        )
        if stop:
            break
        pos += 8 + length + (length & 1)
    if info is None:
        msg = f"{path}: no video stream header (LIST 'hdrl' with a 'vids' stream) found"
        raise ConfigError(msg)
    return info, offsets


def _walk(
    f: BinaryIO,
    start: int,
    end: int,
    path: Path,
    info: AviInfo | None,
    offsets: list[tuple[int, int]],
    want_frames: bool,
    max_frames: int | None,
) -> tuple[AviInfo | None, bool]:
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        tag, length = struct.unpack("<4sI", f.read(8))
        if tag == b"LIST":
            kind = f.read(4)
            if kind == b"hdrl":
                info = _parse_hdrl(f.read(max(length - 4, 0)), path)
            elif kind == b"movi":
                if not want_frames:
                    return info, True
                if info is None:
                    msg = f"{path}: frame data found before the stream headers"
                    raise ConfigError(msg)
                if _collect(f, pos + 12, pos + 8 + length, offsets, max_frames):
                    return info, True
        pos += 8 + length + (length & 1)
    return info, False


def _collect(
    f: BinaryIO, start: int, end: int, offsets: list[tuple[int, int]], max_frames: int | None
) -> bool:
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        tag, length = struct.unpack("<4sI", f.read(8))
        if tag == b"LIST":  # 'rec ' groups: descend
            if _collect(f, pos + 12, pos + 8 + length, offsets, max_frames):
                return True
        elif tag[2:] in (b"db", b"dc") and length > 0:
            offsets.append((pos + 8, length))
            if max_frames is not None and len(offsets) >= max_frames:
                return True
        pos += 8 + length + (length & 1)
    return False


def _parse_hdrl(data: bytes, path: Path) -> AviInfo:
    pos, fps, declared = 0, 0.0, 0
    if data[:4] == b"avih" and len(data) >= 8 + 56:
        us = struct.unpack_from("<I", data, 8)[0]
        declared = struct.unpack_from("<I", data, 24)[0]
        fps = 1e6 / us if us else 0.0
    while pos + 8 <= len(data):
        tag, length = struct.unpack_from("<4sI", data, pos)
        if tag == b"LIST" and data[pos + 8 : pos + 12] == b"strl":
            found = _parse_strl(data[pos + 12 : pos + 8 + length], path, fps, declared)
            if found is not None:
                return found
        pos += 8 + length + (length & 1)
    msg = f"{path}: no video ('vids') stream in the AVI headers"
    raise ConfigError(msg)


def _parse_strl(data: bytes, path: Path, fps: float, declared: int) -> AviInfo | None:
    strh = strf = b""
    pos = 0
    while pos + 8 <= len(data):
        tag, length = struct.unpack_from("<4sI", data, pos)
        if tag == b"strh":
            strh = data[pos + 8 : pos + 8 + length]
        elif tag == b"strf":
            strf = data[pos + 8 : pos + 8 + length]
        pos += 8 + length + (length & 1)
    if strh[:4] != b"vids" or len(strf) < 40:
        return None
    if len(strh) >= 28:
        scale, rate = struct.unpack_from("<II", strh, 20)
        if scale and rate:
            fps = rate / scale
    if not (math.isfinite(fps) and fps > 0):
        msg = (
            f"{path}: the AVI headers give no frame rate (avih dwMicroSecPerFrame and strh "
            "dwRate/dwScale are 0); the file is corrupt or was not written by a video tool. "
            "Re-mux it, e.g. `ffmpeg -i vid.avi -c copy -r 30 fixed.avi`"
        )
        raise ConfigError(msg)
    _, w, h, _, bits, comp = struct.unpack_from("<IiiHHI", strf, 0)
    if w <= 0 or h == 0 or w * abs(h) > MAX_FRAME_PIXELS:
        msg = f"{path}: the AVI headers give an invalid frame size {w} x {h}"
        raise ConfigError(msg)
    fourcc = struct.pack("<I", comp).decode("latin-1") if comp > 3 else f"BI_{comp}"
    if comp not in (0, 3) or bits not in (24, 32):
        msg = (
            f"{path}: video codec {fourcc!r} with {bits} bits per pixel is not supported; this "
            "reader handles uncompressed 24/32-bit RGB only. Convert the file, e.g. "
            "`ffmpeg -i vid.avi -c:v rawvideo -pix_fmt bgr24 vid_raw.avi`"
        )
        raise ConfigError(msg)
    return AviInfo(w, abs(h), fps, bits, fourcc, h > 0, declared)


def _atomic_write(path: Path, data: bytes) -> Path:
    return write_bytes_atomic(path, data)
