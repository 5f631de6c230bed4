"""The IDX format of MNIST-style datasets: a gzipped header of big-endian sizes, then bytes."""

import os
import struct
import zlib
from typing import BinaryIO

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
    """Decode a gzipped IDX file of unsigned bytes, reading no more than its header implies.

    The gzip stream is decompressed incrementally: the header first, then exactly the bytes
    its shape needs, then one byte more to refuse trailing data. A small file that inflates
    to gigabytes (a "gzip bomb") is refused after the header's size, not decompressed whole.

    **Arguments:**

    - `path`: the `.gz` file.
    - `ndim`: the number of dimensions the file must declare.

    **Returns:** a read-only uint8 array of the declared shape.

    **Raises:**

    - `CorruptDatasetError`: naming `path` and the problem, for a bad gzip stream, bad magic
      number, an element type other than ubyte, the wrong number of dimensions, or a byte
      count that differs from the header's shape.
    - `OSError`: when `path` cannot be read.
    """
    with open(path, "rb") as f:
        stream = _Inflate(f, path)
        head = stream.read(4)
        if len(head) < 4:
            raise CorruptDatasetError(f"{path}: {len(head)} bytes, too short for an IDX header")
        zero, dtype, got_ndim = struct.unpack(">HBB", head)
        if zero != 0:
            raise CorruptDatasetError(
                f"{path}: bad IDX magic number {head.hex()} (must start with 0000)"
            )
        if dtype != _UBYTE:
            name = _TYPE_NAMES.get(dtype, "unknown")
            raise CorruptDatasetError(
                f"{path}: IDX element type 0x{dtype:02x} ({name}), expected 0x08 (ubyte)"
            )
        if got_ndim != ndim:
            raise CorruptDatasetError(
                f"{path}: IDX file has {got_ndim} dimensions, expected {ndim}"
            )
        dims = stream.read(4 * ndim)
        header = 4 + len(dims)
        if len(dims) < 4 * ndim:
            raise CorruptDatasetError(f"{path}: truncated IDX header ({header} bytes)")
        shape = struct.unpack(f">{ndim}I", dims)
        size = int(np.prod(shape, dtype=np.int64))
        expected = 4 + 4 * ndim + size
        # Deflate inflates at most ~1032:1, so a shape this large cannot be in the file: say
        # so now rather than reserve memory for it.
        if size > _MAX_RATIO * stream.compressed_size:
            raise CorruptDatasetError(
                f"{path}: truncated: shape {shape} needs {expected} bytes, more than a "
                f"{stream.compressed_size}-byte gzip file can hold"
            )
        data = bytearray(size)  # zero pages are mapped lazily: only what is written costs
        got = header + stream.read_into(memoryview(data))
        if got < expected:
            raise CorruptDatasetError(
                f"{path}: truncated: {got} bytes, but shape {shape} needs {expected}"
            )
        if stream.read(1):
            raise CorruptDatasetError(
                f"{path}: trailing bytes: more than the {expected} bytes that shape {shape} needs"
            )
    array = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    array.flags.writeable = False  # decoded arrays are cached and shared between callers
    return array


# Deflate's largest expansion (258-byte matches coded in ~2 bits), with room to spare.
_MAX_RATIO = 1100
_CHUNK = 1 << 16


class _Inflate:
    """A gzip file decompressed on demand, at most as many bytes as asked for.

    Handles concatenated gzip members, as `gzip.decompress` does; every decoding error
    becomes a `CorruptDatasetError` naming the file."""

    def __init__(self, f: BinaryIO, path: str | os.PathLike):
        self._f = f
        self._path = path
        self.compressed_size = os.fstat(f.fileno()).st_size
        self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: a gzip header and trailer
        self._pending = b""  # compressed input not yet consumed
        self._started = False  # whether the current member has received input

    def _bad(self, why: object) -> CorruptDatasetError:
        return CorruptDatasetError(f"{self._path}: not a valid gzip stream ({why})")

    def _step(self, limit: int) -> bytes | None:
        """Up to `limit` decompressed bytes; `b""` when none came out of this step's input,
        `None` at the end of the file."""
        if self._z.eof:
            rest = self._pending  # what follows the member just ended
            if not rest:
                rest = self._f.read(_CHUNK)
            if not rest:
                return None
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._started = False
            self._pending = rest
        if not self._pending:
            self._pending = self._f.read(_CHUNK)
            if not self._pending:
                if self._started:
                    raise self._bad("the stream ends before its end-of-stream marker")
                return None
        self._started = True
        try:
            out = self._z.decompress(self._pending, limit)
        except zlib.error as e:
            raise self._bad(e) from None
        # At a member's end, the input left over is `unused_data` (`unconsumed_tail` may
        # repeat it); otherwise it is the `unconsumed_tail` that `limit` held back.
        self._pending = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
        return out

    def read_into(self, buffer: memoryview) -> int:
        """Fill `buffer` as far as the stream goes; the number of bytes written."""
        filled = 0
        while filled < len(buffer):
            out = self._step(len(buffer) - filled)
            if out is None:
                break
            buffer[filled : filled + len(out)] = out
            filled += len(out)
        return filled

    def read(self, n: int) -> bytes:
        buffer = bytearray(n)
        return bytes(buffer[: self.read_into(memoryview(buffer))])
