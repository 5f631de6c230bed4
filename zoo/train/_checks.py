"""What is wrong in a host batch that would make a loss or a metric non-finite."""

from collections.abc import Mapping
from typing import Any

import numpy as np


def class_count(value: Any) -> int | None:
    """`value` if it is a usable number of classes (a positive int), else `None`: what a
    model's `num_classes` attribute (zoo's classifiers have one) or a config entry gives."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def batch_problems(batch: Mapping[str, Any], num_classes: int | None) -> list[str]:
    """What is wrong in a host batch that would make a loss non-finite: inputs holding NaN
    or infinity, and integer labels (one per example) that are negative or, given
    `num_classes`, not below it.

    **Returns:** one phrase per problem (empty if the batch looks sound).
    """
    problems = []
    for name, value in batch.items():
        try:
            a = np.asarray(value)
        except Exception:  # not an array (a string, a nested dict): nothing to check
            continue
        if a.size == 0:
            continue
        if np.issubdtype(a.dtype, np.inexact):
            bad = int(np.count_nonzero(~np.isfinite(a)))
            if bad:
                problems.append(f"batch entry {name!r} holds {bad} NaN or infinite value(s)")
        elif np.issubdtype(a.dtype, np.integer) and a.ndim == 1:
            low, high = int(a.min()), int(a.max())
            top = num_classes
            if low < 0 or (top is not None and high >= top):
                where = f"[0, {top})" if top is not None else "[0, num_classes)"
                problems.append(
                    f"labels {name!r} range from {low} to {high}, outside {where}: labels "
                    "must be class indices; fix the data (or num_classes)"
                )
    return problems
