"""`zoo.summary`: a table of every parameter a model holds."""

import equinox as eqx
import jax
import numpy as np


def _path(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator=".")


def summary(model: eqx.Module, state: eqx.nn.State | None = None) -> str:
    """Describe every array in `model` (and optionally its `state`): path, shape, dtype, size,
    mean and standard deviation, with totals — the parameter overview known from clu.

    **Arguments:**

    - `model`: any PyTree; its inexact (floating) arrays are the trainable parameters.
    - `state`: an optional `eqx.nn.State` (BatchNorm statistics), listed as non-trainable.

    **Returns:** the table as a string (print it).
    """
    rows: list[tuple[str, str, str, int, str, str]] = []
    totals = {"trainable": [0, 0], "state": [0, 0]}

    def collect(tree, kind: str, prefix: str) -> None:
        leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_array))[0]
        for path, leaf in leaves:
            arr = np.asarray(leaf)
            is_float = np.issubdtype(arr.dtype, np.inexact) and arr.size > 0
            mean = f"{arr.mean():.4g}" if is_float else "-"
            std = f"{arr.std():.4g}" if is_float else "-"
            rows.append((prefix + _path(path), str(arr.shape), str(arr.dtype), arr.size, mean, std))
            totals[kind][0] += arr.size
            totals[kind][1] += arr.nbytes

    collect(model, "trainable", "")
    if state is not None:
        collect(state, "state", "state:")

    header = ("Name", "Shape", "Dtype", "Size", "Mean", "Std")
    table = [header] + [(r[0], r[1], r[2], f"{r[3]:,}", r[4], r[5]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def fmt(row) -> str:
        cells = [c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "| " + " | ".join(cells) + " |"

    rule = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    lines = [rule, fmt(header), rule, *(fmt(r) for r in table[1:]), rule]
    n, nbytes = totals["trainable"]
    lines.append(f"Total: {n:,} parameters ({nbytes / 2**20:.2f} MiB) in {type(model).__name__}")
    if state is not None and totals["state"][0]:  # an empty state (a stateless model) adds no line
        n, nbytes = totals["state"]
        lines.append(f"State: {n:,} values ({nbytes / 2**20:.2f} MiB), not trained")
    return "\n".join(lines)
