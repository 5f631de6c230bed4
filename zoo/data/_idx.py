"""The IDX format of MNIST-style datasets: a gzipped header of big-endian sizes, then bytes."""

import gzip
import os
import struct
import zlib

import numpy as np


class CorruptDatasetError(ValueError):
    """A dataset file that cannot be decoded: bad gzip stream, header, size or values."""


# IDX element types (the third magic byte); MNIST-style datasets only use unsigned bytes.
_UBYTE = 0x08
_TYPE_NAMES = {
    0x08: "ubyte",
    0x09: "byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Decode a gzipped IDX file of unsigned bytes.

    **Arguments:**

    - `path`: the `.gz` file.
    - `ndim`: the number of dimensions the file must declare.

    **Returns:** a read-only uint8 array of the declared shape, sharing the decompressed bytes.

    **Raises:**

    - `CorruptDatasetError`: naming `path` and the problem, for a bad gzip stream, bad magic
      number, an element type other than ubyte, the wrong number of dimensions, or a byte
      count that differs from the header's shape.
    - `OSError`: when `path` cannot be read.
    """
    with open(path, "rb") as f:
        compressed = f.read()
    try:
        raw = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as e:
        # BadGzipFile is an OSError; a cut-off stream is an EOFError.
        raise CorruptDatasetError(f"{path}: not a valid gzip stream ({e})") from None
    if len(raw) < 4:
        raise CorruptDatasetError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    zero, dtype, got_ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise CorruptDatasetError(
            f"{path}: bad IDX magic number {raw[:4].hex()} (must start with 0000)"
        )
    if dtype != _UBYTE:
        name = _TYPE_NAMES.get(dtype, "unknown")
        raise CorruptDatasetError(
            f"{path}: IDX element type 0x{dtype:02x} ({name}), expected 0x08 (ubyte)"
        )
    if got_ndim != ndim:
        raise CorruptDatasetError(f"{path}: IDX file has {got_ndim} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDatasetError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "trailing bytes"
        raise CorruptDatasetError(
            f"{path}: {state}: {len(raw)} bytes, but shape {shape} needs {expected}"
        )
    # frombuffer on the bytes is zero-copy (and so read-only): decoding costs only the gunzip.
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
