"""Metric writers: where a run's scalars go (JSONL, TensorBoard, Weights & Biases).

A writer is anything with `write_scalars(step, scalars)`, `write_config(config)` and
`close()`, as in `clu.metric_writers` and levanter's trackers. `fit` also calls a writer's
optional `start(step)` once, before its first write, with the step the run starts from (0,
or the step a resumed run restored), so a writer can drop what an interrupted run wrote
after its last checkpoint.
"""

import importlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .._atomic import atomic_write
from ._metrics import finite_or_none, read_metrics

TRACK_EXTRA = 'pip install "equinox-zoo[track]"'


@runtime_checkable
class MetricWriter(Protocol):
    """The protocol every metric writer follows."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record named scalars at optimiser step `step` (steps never go backwards)."""
        ...

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Record the run's configuration (a JSON-like mapping) once, at the start."""
        ...

    def close(self) -> None:
        """Flush and release whatever the writer holds."""
        ...


def _import(module: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{what} needs the {module} package: {TRACK_EXTRA}") from None


class JsonlWriter:
    """A run's `metrics.jsonl`: one JSON object per line, appended and flushed at once.

    `fit` hands it whole records (`write_record`), with their `"kind"` (`"step"` or
    `"epoch"`), `"step"` and `"epoch"`; [`zoo.train.read_metrics`][] reads the file back.
    Non-finite floats are written as `null`, so every line is valid JSON.
    """

    def __init__(self, path: str | Path):
        """**Arguments:** `path`: the file, created (with its folder) on `start`."""
        self.path = Path(path)
        self._file = None

    def start(self, step: int) -> None:
        """Open the file, keeping only the records at or before `step` (those of a resumed
        run's checkpoint; none for a fresh run at step 0), rewritten atomically (a torn
        last line is dropped, with `read_metrics`'s warning)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if step > 0 and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")

    def write_record(self, record: Mapping[str, Any]) -> None:
        """Append one record as one line and flush it."""
        if self._file is None:
            self.start(0)
        assert self._file is not None
        self._file.write(json.dumps(finite_or_none(dict(record)), allow_nan=False) + "\n")
        self._file.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Append `{"step": step, **scalars}` as one line."""
        self.write_record({"step": step, **scalars})

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Nothing: `fit` writes the config to `config.json` beside this file."""

    def close(self) -> None:
        """Close the file (a later write reopens it, keeping what is there)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardWriter:
    """Scalars as TensorBoard event files (tensorboardX; the `track` extra).

    Scalars are written as `simple_value`s, which TensorBoard (and its
    `EventAccumulator.Scalars`) reads; the config goes in as text. A resumed run opens its
    event file with `purge_step` at the first step after the restored one, so TensorBoard
    hides what the interrupted run wrote after its checkpoint and no series goes backwards.
    """

    def __init__(self, logdir: str | Path):
        """**Arguments:** `logdir`: the folder for the event files, e.g. `<run>/tensorboard`.

        **Raises:** `ImportError` naming the extra to install, without tensorboardX.
        """
        self._tbx = _import("tensorboardX", "TensorBoard logging")
        self.logdir = Path(logdir)
        self._writer = None

    def start(self, step: int) -> None:
        """Open the event file; for a resumed run (`step > 0`) purge events after `step`."""
        purge = step + 1 if step > 0 else None
        # tensorboardX names event files by the second; a resumed run started within the
        # same second would overwrite the first file without a suffix of its own.
        suffix = f".{time.time_ns()}"
        self._writer = self._tbx.SummaryWriter(
            str(self.logdir), purge_step=purge, filename_suffix=suffix
        )

    def _open(self) -> Any:
        if self._writer is None:
            self.start(0)
        return self._writer

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        writer = self._open()
        for name, value in scalars.items():
            writer.add_scalar(name, float(value), global_step=step)

    def write_config(self, config: Mapping[str, Any]) -> None:
        text = json.dumps(dict(config), indent=2, default=str)
        # Markdown: indented by four spaces, TensorBoard's text tab shows it as code.
        self._open().add_text("config", "\n".join("    " + line for line in text.splitlines()))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WandbWriter:
    """Scalars and config to a Weights & Biases run (`wandb`; the `track` extra).

    Set `WANDB_MODE=offline` (or pass `mode="offline"`) to write the run to disk only, under
    `<dir>/wandb/offline-run-*`, for `wandb sync` later. (The run's transaction log,
    `run-*.wandb`, holds the history, summary and config; wandb's service process may finish
    writing it shortly after `close()` returns.)
    """

    def __init__(
        self,
        dir: str | Path,
        *,
        project: str = "zoo",
        name: str | None = None,
        mode: str | None = None,
        config: Mapping[str, Any] | None = None,
        **init_kwargs: Any,
    ):
        """**Arguments:**

        - `dir`: the folder under which W&B keeps the run (`<dir>/wandb/...`): the run folder.
        - `project`, `name`, `mode` (`"online"`, `"offline"`, `"disabled"`; default from
          `WANDB_MODE`): as `wandb.init`.
        - `config`: logged as the run's config.
        - `init_kwargs`: passed on to `wandb.init`.

        **Raises:** `ImportError` naming the extra to install, without wandb.
        """
        self._wandb = _import("wandb", "Weights & Biases logging")
        self.dir = Path(dir)
        self._init = dict(project=project, name=name, mode=mode, **init_kwargs)
        self._config = None if config is None else dict(config)
        self.run = None

    def start(self, step: int) -> None:
        """Start the W&B run (a new one each time `fit` starts)."""
        del step
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = self._wandb.init(dir=str(self.dir), config=self._config, **self._init)

    def _open(self) -> Any:
        if self.run is None:
            self.start(0)
        return self.run

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        self._open().log({k: float(v) for k, v in scalars.items()}, step=step)

    def write_config(self, config: Mapping[str, Any]) -> None:
        self._open().config.update(dict(config), allow_val_change=True)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


WRITERS = ("jsonl", "tensorboard", "wandb")


def make_writers(
    names: Sequence[str], workdir: str | Path, *, config: Mapping[str, Any] | None = None
) -> list[MetricWriter]:
    """The writers named, each writing under the run folder `workdir`.

    - `"jsonl"`: [`zoo.train.JsonlWriter`][] at `workdir/metrics.jsonl` (the default);
    - `"tensorboard"`: [`zoo.train.TensorBoardWriter`][] at `workdir/tensorboard`;
    - `"wandb"`: [`zoo.train.WandbWriter`][] with its run under `workdir/wandb`.

    **Arguments:**

    - `names`: any of the names above, each at most once.
    - `workdir`: the run folder.
    - `config`: the run's config, given to writers that take it at creation (W&B).

    **Returns:** a list of writers, in the order named.

    **Raises:** `ValueError` for an unknown or repeated name; `ImportError` with the
    command to install the `track` extra, for TensorBoard or W&B without their package.
    """
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in WRITERS]
    if unknown:
        raise ValueError(f"unknown tracker(s) {unknown}; choose from {list(WRITERS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"trackers {list(names)} name one twice")
    workdir = Path(workdir)
    writers: list[MetricWriter] = []
    for name in names:
        if name == "jsonl":
            writers.append(JsonlWriter(workdir / "metrics.jsonl"))
        elif name == "tensorboard":
            writers.append(TensorBoardWriter(workdir / "tensorboard"))
        else:
            writers.append(WandbWriter(workdir, config=config))
    return writers
