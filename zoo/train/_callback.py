"""`Callback`, the unit `fit`'s loop is built from, and `FitContext`, what callbacks see."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._metrics import finite_or_none
from ._runner import Runner
from ._state import TrainState


class FitContext:
    """The state of a `fit` run, shared by its callbacks.

    **Attributes:**

    - `num_epochs`, `steps_per_epoch`, `steps_per_dispatch`, `total_steps`: the run's shape.
    - `step`: optimiser steps done whose metrics have been read (the device may be one
      dispatch ahead; at epoch ends and interrupts the two agree).
    - `consumed`: batches (or generated steps) trained on so far in this run's stream, which
      places the run in its epochs (`step` counts from the train state's own counter).
    - `epoch`: the 0-based epoch under way.
    - `start_step`: the step the run started from (0, or the restored checkpoint's).
    - `workdir`: the run folder, or `None`.
    - `config`: the run's config as JSON (dicts, lists, numbers, strings), or `None`.
    - `history`: every record logged so far (those of a resumed run's earlier part too).
    - `record`: during `on_epoch_end`, the epoch's record being built: callbacks add their
      entries (`train_loss`, `eval_accuracy`, ...); it is logged after the last of them.
    - `checkpoint`: the last checkpoint saved (or restored), or `None`.
    - `is_main`: whether this is process 0, the one that writes files.
    - `batch_size`: the global batch size, once known.
    - `stop_reason`: set by [`zoo.train.FitContext.request_stop`][]; `fit` then stops.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        num_epochs: int,
        steps_per_epoch: int,
        steps_per_dispatch: int,
        step: int,
        consumed: int,
        workdir: Path | None,
        config: Any,
        history: list[dict[str, Any]],
        checkpoint: Path | None,
        is_main: bool,
        restored: dict[str, Any],
        data_state: Callable[[], dict[str, Any]],
        batch_at: Callable[[int], Any] | None = None,
    ):
        self.runner = runner
        self.num_epochs = num_epochs
        self.steps_per_epoch = steps_per_epoch
        self.steps_per_dispatch = steps_per_dispatch
        self.total_steps = num_epochs * steps_per_epoch
        self.step = self.start_step = step
        self.consumed = consumed
        self.epoch = consumed // steps_per_epoch
        self.workdir = workdir
        self.config = config
        self.history = history
        self.record: dict[str, Any] = {}
        self.checkpoint = checkpoint
        self.is_main = is_main
        self.batch_size: int | None = None
        self.stop_reason: str | None = None
        self.callbacks: list[Callback] = []
        self._restored = restored
        self._data_state = data_state
        self._batch_at = batch_at

    @property
    def train_state(self) -> TrainState:
        """The current train state (its arrays are donated by the next dispatch: read or copy
        them within the callback)."""
        return self.runner.state()

    def log(self, record: dict[str, Any]) -> None:
        """Add a record (a dict with `"kind"` and `"step"`) to the history and hand it to
        every callback's `on_record` (where the metric writers write it)."""
        record = finite_or_none(record)
        self.history.append(record)
        for callback in self.callbacks:
            callback.on_record(self, record)

    def request_stop(self, reason: str) -> None:
        """Ask `fit` to save and stop: after this dispatch during an epoch, or at its end.
        `fit` then raises [`zoo.train.TrainingInterrupted`][] naming `reason`."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def restored_state(self, callback: "Callback") -> Any:
        """What `callback.state_dict()` returned when the resumed checkpoint was saved."""
        return self._restored.get(type(callback).__name__)

    def batch_of_step(self, step: int) -> Any:
        """The host batch that optimiser step `step` (1-based, as `ctx.step` counts) trained
        on, while it is one of the last two dispatches' batches; `None` for older steps and
        for batches generated inside the step."""
        if self._batch_at is None:
            return None
        # `step` and `consumed` advance together, so they differ by a constant.
        return self._batch_at(step - 1 - (self.step - self.consumed))

    def data_state(self) -> dict[str, Any]:
        """The resumable state saved in a checkpoint's header: batches consumed, the data
        iterator's state and every callback's `state_dict()`."""
        state = self._data_state()
        states = {type(c).__name__: c.state_dict() for c in self.callbacks}
        state["callbacks"] = {k: v for k, v in states.items() if v is not None}
        return state


class Callback:
    """A part of the training loop: `fit` calls its methods at fixed points.

    Every method does nothing by default; override those you need. `fit` calls them, for
    each callback in order, at: the start (after any resume), each epoch's start, after
    each dispatch of `steps_per_dispatch` steps (one dispatch late, so the host never waits
    for the device), each logged record, each epoch's end, an interrupt, and the end
    (always, however the run ends: close what you opened there).

    !!! example "A callback that stops when the training loss is low enough"

        ```python
        class StopAtLoss(zoo.train.Callback):
            def __init__(self, target):
                self.target = target

            def on_dispatch_end(self, ctx, metrics):
                if metrics["loss"][-1] < self.target:
                    ctx.request_stop(f"loss below {self.target}")

        zoo.train.fit(train_state, step, data, ..., callbacks=[StopAtLoss(0.1)])
        ```

    A callback that must resume exactly returns JSON from `state_dict` (saved in each
    checkpoint) and reads it back with `ctx.restored_state(self)` in `on_fit_start`.
    """

    def on_fit_start(self, ctx: FitContext) -> None:
        """The run starts (or resumes from `ctx.start_step`)."""

    def on_epoch_start(self, ctx: FitContext) -> None:
        """Epoch `ctx.epoch` starts (or resumes mid-way)."""

    def on_dispatch_end(self, ctx: FitContext, metrics: dict[str, np.ndarray]) -> None:
        """A dispatch finished: `metrics` holds one float64 value per step (`"loss"`
        first), the steps `ctx.step - n + 1 ... ctx.step` for `n = len(metrics["loss"])`."""

    def on_record(self, ctx: FitContext, record: dict[str, Any]) -> None:
        """A record was logged (`record["kind"]` is `"step"` or `"epoch"`)."""

    def on_epoch_end(self, ctx: FitContext) -> None:
        """Epoch `ctx.epoch` finished; add entries to `ctx.record`."""

    def on_interrupt(self, ctx: FitContext) -> None:
        """The run is stopping early (`ctx.stop_reason`), before `TrainingInterrupted`."""

    def on_fit_end(self, ctx: FitContext) -> None:
        """The run ended: finished, interrupted or failed."""

    def state_dict(self) -> Any:
        """JSON-serialisable state to save in checkpoints, or `None` (the default)."""
        return None
