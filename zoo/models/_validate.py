"""Constructor argument checks shared by the models: errors that name the argument."""

from collections.abc import Sequence


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
