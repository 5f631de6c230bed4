"""Reading a run folder's `metrics.jsonl`: one JSON object per line."""

import json
import math
import warnings
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl` file (or of `<folder>/metrics.jsonl`).

    A torn last line, what a crash or a full disk leaves mid-append, is dropped with a
    warning naming the file and line: the records before it are intact, and `fit` writes
    every record again after its checkpoint on resume.

    **Arguments:**

    - `path`: the file, or the run folder holding it.

    **Returns:** one dict per line, in order. Step records have `"kind": "step"`; the
    per-epoch summaries written by `fit` have `"kind": "epoch"`.

    **Raises:** `ValueError` naming the file and line number of a line before the last that
    is not a JSON object (damage that is not a torn append: edit or remove the file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    records, torn = read_records(path)
    if torn is not None:
        warnings.warn(
            f"{path}:{torn}: dropped a torn last record (a crash or a full disk mid-write?); "
            "the records before it are kept",
            stacklevel=2,
        )
    return records


def read_records(path: Path) -> tuple[list[dict[str, Any]], int | None]:
    """`read_metrics` without its warning: `(records, torn)`, `torn` the number of a torn
    last line that was dropped, or `None`."""
    records = []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        number = i + 1
        try:
            record = json.loads(raw.decode())
            problem = None if isinstance(record, dict) else "is not a JSON object"
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            record, problem = None, f"is not valid JSON: {e}"
        if problem is not None:
            if i == last:
                return records, number
            raise ValueError(
                f"{path}:{number} {problem}; only a torn last line is dropped, so this file "
                "was damaged otherwise: fix or remove that line"
            )
        records.append(record)
    return records, None


def finite_or_none(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with NaN and infinity as `None`: they are not JSON, and `null` keeps every
    line parseable by any reader."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }
