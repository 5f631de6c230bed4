"""The `.safetensors` format (named tensors behind a JSON header; nothing executable), read
and written with NumPy alone, and the export of zoo models in torchvision/timm naming.

The format, as specified by Hugging Face's `safetensors`: an unsigned little-endian 64-bit
header length `n`, `n` bytes of JSON (`{name: {"dtype": "F32", "shape": [...],
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`, padded with spaces), then the
tensors' little-endian bytes, contiguous, offsets relative to the end of the header.
"""

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import ml_dtypes
import numpy as np

from .._atomic import atomic_open
from ._convert import to_state_dict
from ._errors import WeightsError

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's limit


def save_safetensors(
    tensors: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write `tensors` to a `.safetensors` file, atomically (a temporary file in the same
    folder, flushed to disk, then renamed over `path`).

    **Arguments:** `tensors`, names to arrays (float64/32/16, bfloat16, int64/32/16/8, uint8,
    bool); `path`; `metadata`, an optional string-to-string mapping stored in the header.

    **Returns:** `path` as a `Path`. **Raises:** `TypeError` for an unsupported dtype.
    """
    path = Path(path)
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        code = _CODES.get(np.dtype(dtype))
        if code is None:
            raise TypeError(f"save_safetensors: tensor {name!r} has unsupported dtype {a.dtype}")
        blob = np.ascontiguousarray(a, dtype=dtype).tobytes()
        header[name] = {
            "dtype": code,
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with atomic_open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    return path


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a `.safetensors` file as a NumPy array (bfloat16 as
    `ml_dtypes.bfloat16`).

    **Raises:** `WeightsError` naming the file for a malformed header, an unknown dtype, or
    offsets that do not tile the data exactly (a truncated or padded file).
    """
    path = Path(path)
    data = path.read_bytes()

    def bad(why: str) -> WeightsError:
        return WeightsError(f"{path}: not a valid .safetensors file ({why})")

    if len(data) < 8:
        raise bad("shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise bad(f"header length {n} does not fit the file's {len(data)} bytes")
    try:
        header = json.loads(data[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    header.pop("__metadata__", None)
    body = memoryview(data)[8 + n :]
    out: dict[str, np.ndarray] = {}
    spans = []
    for name, info in header.items():
        try:
            dtype = _DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"tensor {name!r} has a malformed entry {info!r}") from None
        if not 0 <= begin <= end <= len(body):
            raise bad(f"tensor {name!r} lies outside the data ({begin}..{end} of {len(body)})")
        if end - begin != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise bad(f"tensor {name!r}: {end - begin} bytes for shape {shape} of {info['dtype']}")
        spans.append((begin, end, name))
        out[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).copy()
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise bad(f"tensor {name!r} starts at {begin}, not at {position}: a hole or overlap")
        position = end
    if position != len(body):
        raise bad(f"{len(body) - position} bytes after the last tensor")
    return out


def export_safetensors(
    model: Any,
    state: eqx.nn.State,
    path: str | os.PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a `zoo.ResNet` or `zoo.VisionTransformer` as a `.safetensors` file in
    torchvision or timm naming ([`zoo.hub.to_state_dict`][]), loadable with
    `model.load_state_dict(safetensors.torch.load_file(path))` and back into zoo with
    `zoo.hub.convert_state_dict(model, state, zoo.hub.load_safetensors(path))`.

    **Arguments:** `model`, `state`; `path` (written atomically); `metadata`, optional
    strings stored in the header.

    **Returns:** `path` as a `Path`.
    """
    return save_safetensors(to_state_dict(model, state), path, metadata=metadata)
