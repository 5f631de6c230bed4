"""The run folder's `metrics.jsonl`: one JSON object per line, appended and flushed."""

import json
import math
import os
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


def _finite_or_none(record: dict[str, Any]) -> dict[str, Any]:
    # NaN and infinity are not JSON; `null` keeps every line parseable by any reader.
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


class MetricsLog:
    """Appends records to a `metrics.jsonl` file, one line each, flushed at once."""

    def __init__(self, path: str | Path, *, keep_up_to_step: int | None = None):
        """**Arguments:**

        - `path`: the file; created if missing.
        - `keep_up_to_step`: when resuming, drop existing records with a `"step"` above this
          (they were written after the checkpoint being resumed from); `None` starts a new,
          empty file.
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        if keep_up_to_step is not None and self.path.exists():
            self.records = [
                r for r in read_metrics(self.path) if r.get("step", 0) <= keep_up_to_step
            ]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as f:
            for r in self.records:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.path)
        self._file = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line and flush it (non-finite floats become `null`)."""
        record = _finite_or_none(record)
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        self.records.append(record)

    def close(self) -> None:
        self._file.close()
