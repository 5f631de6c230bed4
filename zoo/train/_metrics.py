"""Reading a run folder's `metrics.jsonl`: one JSON object per line."""

import json
import math
from pathlib import Path
from typing import Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl` file (or of `<folder>/metrics.jsonl`).

    **Arguments:**

    - `path`: the file, or the run folder holding it.

    **Returns:** one dict per line, in order. Step records have `"kind": "step"`; the
    per-epoch summaries written by `fit` have `"kind": "epoch"`.

    **Raises:** `ValueError` naming the line number of a line that is not a JSON object.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    records = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number} is not valid JSON: {e}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number} is not a JSON object")
            records.append(record)
    return records


def finite_or_none(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with NaN and infinity as `None`: they are not JSON, and `null` keeps every
    line parseable by any reader."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }
