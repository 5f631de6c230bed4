"""Constructor argument checks shared by the models: errors that name the argument."""

from collections.abc import Sequence

import numpy as np


def positive_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: `{name}` must be a positive integer, got {value!r}")
    return value


def non_negative_int(owner: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{owner}: `{name}` must be a non-negative integer, got {value!r}")
    return value


def per_layer(owner: str, name: str, value: object, n: int) -> tuple:
    """Broadcast a scalar to `n` layers, or check a sequence has exactly `n` entries."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(
                f"{owner}: `{name}` must have one entry per layer ({n}), got {len(value)}"
            )
        return tuple(value)
    return (value,) * n


def boolean(owner: str, name: str, value: object) -> bool:
    """`value` if it is a bool (or NumPy's); anything else is refused, since `bool("no")` and
    `bool("false")` are True: a config string must not switch a layer on."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{owner}: `{name}` must be True or False, got {value!r}")
    return bool(value)
