"""Compact binary storage of float vectors: little-endian float32 bytes, 4 bytes a value."""

from __future__ import annotations

import numpy as np

DTYPE = np.dtype("<f4")


def encode(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=DTYPE).tobytes()


def encode_rows(matrix: np.ndarray) -> list[bytes]:
    """One ``bytes`` per row of a 2-D array."""
    m = np.ascontiguousarray(matrix, dtype=DTYPE)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {m.shape}")
    width = m.shape[1] * DTYPE.itemsize
    if width == 0:  # no values: one empty row each (a step of 0 would stop range)
        return [b""] * m.shape[0]
    raw = m.tobytes()
    return [raw[i : i + width] for i in range(0, len(raw), width)]


def decode_rows(blobs: list[bytes], width: int) -> np.ndarray:
    """Stack stored rows back into an ``(n, width)`` float32 array."""
    if not blobs:
        return np.zeros((0, width), dtype=np.float32)
    size = width * DTYPE.itemsize
    if any(len(b) != size for b in blobs):  # checked row by row: a short row and a long one would add up
        raise ValueError(f"stored vectors are not all {width} float32 values wide")
    return np.frombuffer(b"".join(blobs), dtype=DTYPE).reshape(len(blobs), width).astype(np.float32)
