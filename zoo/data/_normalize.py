"""Input scaling shared by `zoo.data.batches` and the hub's `Preprocess`, so that a model is
fed at evaluation exactly what it was trained on, bit for bit."""

from collections.abc import Sequence
from typing import Literal

import numpy as np

Normalize = Literal["auto", "unit", "standard"]
NORMALIZE_MODES = ("auto", "unit", "standard", None)

Stat = float | Sequence[float]


def resolve_normalize(mode: str | None, dtype: np.dtype) -> str | None:
    """What `mode` does to inputs of `dtype`: `"auto"` is `"unit"` for unsigned integers
    (raw pixels, 0..255) and `None` (unchanged) for everything else; other modes are kept."""
    if mode == "auto":
        return "unit" if np.issubdtype(dtype, np.unsignedinteger) else None
    return mode


def check_stat(owner: str, name: str, value: Stat, *, positive: bool = False) -> Stat:
    """A float, or a non-empty sequence of floats (one per channel); checked finite (and
    positive for a standard deviation)."""
    values = np.asarray(value, dtype=np.float64)
    if values.ndim > 1 or values.size == 0:
        raise ValueError(f"{owner}: `{name}` must be a number or one number per channel")
    if not np.all(np.isfinite(values)) or (positive and not np.all(values > 0)):
        want = "positive" if positive else "finite"
        raise ValueError(f"{owner}: `{name}` must be {want}, got {value!r}")
    return float(values) if values.ndim == 0 else tuple(float(v) for v in values)


def normalize(x: np.ndarray, mode: str | None, mean: Stat = 0.0, std: Stat = 1.0) -> np.ndarray:
    """Scale a whole batch of inputs as `mode` says.

    **Arguments:**

    - `x`: the inputs, any shape with the examples first; channels, if any, last.
    - `mode`: `"auto"` (`"unit"` for unsigned-integer inputs, unchanged otherwise),
      `"unit"` (divide by 255, for 0..255 pixels), `"standard"` (`(x - mean) / std`) or
      `None` (unchanged).
    - `mean`, `std`: for `"standard"`: one number, or one per channel (the last axis).

    **Returns:** float32 inputs for `"unit"` and `"standard"`; `x` itself when unchanged.

    **Raises:** `ValueError` when per-channel statistics do not match the last axis.
    """
    mode = resolve_normalize(mode, x.dtype)
    # One fused ufunc each, writing float32 directly; exact division (not a multiply by the
    # reciprocal) so batches equal the obvious `x.astype(np.float32) / 255` bit for bit.
    if mode == "unit":
        return np.divide(x, np.float32(255), dtype=np.float32)
    if mode == "standard":
        m = np.asarray(mean, dtype=np.float32)
        s = np.asarray(std, dtype=np.float32)
        for name, stat in (("mean", m), ("std", s)):
            if stat.ndim and (x.ndim < 2 or stat.shape[0] != x.shape[-1]):
                raise ValueError(
                    f"normalize: {stat.shape[0]} per-channel `{name}` values, but the inputs "
                    f"of shape {x.shape} have {x.shape[-1] if x.ndim >= 2 else 'no'} channels "
                    f"on their last axis"
                )
        out = np.subtract(x, m, dtype=np.float32)
        out /= s
        return out
    return x
