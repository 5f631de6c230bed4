"""The callbacks `fit` is built from: signals, loss guard, metrics, checkpoints, evaluation,
progress."""

import io
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import PyTree

from ._callback import Callback, FitContext
from ._checkpoint import checkpoint_path, save_checkpoint
from ._checks import batch_problems, class_count
from ._errors import NonFiniteLossError
from ._parallel import allgather_json
from ._writers import MetricWriter


class SignalStop(Callback):
    """Turns SIGINT (Ctrl-C) and SIGTERM into a clean stop: save, then raise
    [`zoo.train.TrainingInterrupted`][].

    The first signal only asks the loop to stop (after the current dispatch, or with several
    processes at the end of the epoch, where they agree: any process signalled stops all);
    the previous handler is put back at once, so a second Ctrl-C interrupts immediately.
    """

    def __init__(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)):
        """**Arguments:** `signals`: the signals that stop the run cleanly."""
        self.signals = tuple(signals)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        self.received = signum
        signal.signal(signum, self._previous[signum])

    def on_fit_start(self, ctx: FitContext) -> None:
        self.received = None
        # Python only lets the main thread install handlers.
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _stop(self, ctx: FitContext) -> None:
        ctx.request_stop(signal.Signals(self.received or signal.SIGINT).name)

    def on_dispatch_end(self, ctx: FitContext, metrics: dict[str, np.ndarray]) -> None:
        if self.received is not None and jax.process_count() == 1:
            self._stop(ctx)

    def on_epoch_end(self, ctx: FitContext) -> None:
        flag = self.received is not None
        if jax.process_count() > 1:  # a collective: every process calls it at every epoch
            flag = bool(np.any(multihost_utils.process_allgather(np.array([flag]))))
        if flag:
            self._stop(ctx)

    def on_fit_end(self, ctx: FitContext) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def _num_classes(ctx: FitContext) -> int | None:
    """The class count of the model (zoo's classifiers have `num_classes`), else of the
    config, else `None`."""
    n = class_count(getattr(ctx.train_state.model, "num_classes", None))
    if n is None and isinstance(ctx.config, Mapping):
        return class_count(ctx.config.get("num_classes"))
    return n


class NonFiniteGuard(Callback):
    """Stops the run with [`zoo.train.NonFiniteLossError`][] at the first NaN or infinite
    loss, before it is logged or saved. Put it before the callbacks that log.

    It checks the batch of that step ([`zoo.train.FitContext.batch_of_step`][]): inputs that
    are not finite, or labels outside `[0, num_classes)` (the model's `num_classes`, else the
    config's), are named in the error instead of advice about the learning rate.
    """

    def on_dispatch_end(self, ctx: FitContext, metrics: dict[str, np.ndarray]) -> None:
        loss = metrics["loss"]
        bad = np.flatnonzero(~np.isfinite(loss))
        if bad.size:
            i = int(bad[0])
            step = ctx.step - len(loss) + i + 1
            batch = ctx.batch_of_step(step)
            cause = None
            if isinstance(batch, Mapping):
                cause = "; ".join(batch_problems(batch, _num_classes(ctx))) or None
            raise NonFiniteLossError(step, ctx.epoch + 1, float(loss[i]), ctx.checkpoint, cause)


class MetricsLog(Callback):
    """Averages the step metrics and writes them: a `"step"` record of the means over every
    `log_every` steps, and `train_<name>` means, `train_time_s` and `samples_per_s` in each
    epoch's record; every record goes to each of `writers`.

    Its running sums are saved in checkpoints, so a run resumed mid-epoch logs the same
    numbers as an unbroken one. Writers with a `write_record` method (the
    [`zoo.train.JsonlWriter`][]) get whole records; the others get `write_scalars(step,
    numbers)`.
    """

    def __init__(self, writers: Sequence[MetricWriter] = (), *, log_every: int | None = 100):
        """**Arguments:**

        - `writers`: where records go, e.g. from [`zoo.train.make_writers`][]; written by
          process 0 only.
        - `log_every`: steps per `"step"` record; `None` for epoch records only.
        """
        if log_every is not None and log_every < 1:
            raise ValueError(f"log_every must be at least 1 (or None), got {log_every}")
        self.writers = list(writers)
        self.log_every = log_every
        self.epoch_sums: dict[str, float] = {}
        self.epoch_steps = 0
        self.window_sums: dict[str, float] = {}
        self.window_steps = 0
        self._saved: dict[str, Any] = {}

    def on_fit_start(self, ctx: FitContext) -> None:
        self._saved = ctx.restored_state(self) or {}
        self.window_sums = dict(self._saved.get("window", {}))
        self.window_steps = int(self._saved.get("window_steps", 0))
        if not ctx.is_main:
            self.writers = []
        for writer in self.writers:
            start = getattr(writer, "start", None)
            if start is not None:
                start(ctx.start_step)
            if isinstance(ctx.config, Mapping):
                writer.write_config(ctx.config)

    def on_epoch_start(self, ctx: FitContext) -> None:
        if ctx.consumed > ctx.epoch * ctx.steps_per_epoch:  # resumed mid-epoch
            self.epoch_sums = dict(self._saved.get("epoch", {}))
            self.epoch_steps = int(self._saved.get("epoch_steps", 0))
        else:
            self.epoch_sums, self.epoch_steps = {}, 0
        self._untimed = self.epoch_steps  # throughput counts the steps timed here only
        self._t0 = time.perf_counter()

    def on_dispatch_end(self, ctx: FitContext, metrics: dict[str, np.ndarray]) -> None:
        first = ctx.step - len(metrics["loss"])
        for i in range(len(metrics["loss"])):
            for k, v in metrics.items():
                self.epoch_sums[k] = self.epoch_sums.get(k, 0.0) + float(v[i])
                self.window_sums[k] = self.window_sums.get(k, 0.0) + float(v[i])
            self.epoch_steps += 1
            self.window_steps += 1
            s = first + i + 1
            if self.log_every is not None and s % self.log_every == 0:
                means = {k: v / self.window_steps for k, v in self.window_sums.items()}
                ctx.log({"kind": "step", "step": s, "epoch": ctx.epoch + 1, **means})
                self.window_sums, self.window_steps = {}, 0

    def on_epoch_end(self, ctx: FitContext) -> None:
        train_time = time.perf_counter() - self._t0
        n = max(self.epoch_steps, 1)
        ctx.record.update({f"train_{k}": v / n for k, v in self.epoch_sums.items()})
        ctx.record["train_time_s"] = train_time
        timed = self.epoch_steps - self._untimed
        ctx.record["samples_per_s"] = timed * (ctx.batch_size or 0) / max(train_time, 1e-9)

    def on_record(self, ctx: FitContext, record: dict[str, Any]) -> None:
        for writer in self.writers:
            write_record = getattr(writer, "write_record", None)
            if write_record is not None:
                write_record(record)
            else:
                numbers = {
                    k: float(v)
                    for k, v in record.items()
                    if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
                }
                writer.write_scalars(int(record["step"]), numbers)

    def on_fit_end(self, ctx: FitContext) -> None:
        for writer in self.writers:
            writer.close()

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch_sums,
            "epoch_steps": self.epoch_steps,
            "window": self.window_sums,
            "window_steps": self.window_steps,
        }


class Checkpointer(Callback):
    """Saves a checkpoint in `<workdir>/checkpoints` at the end of each epoch (first, before
    evaluation, so a failing evaluation loses nothing) and when the run is interrupted,
    keeping the newest `keep`.

    With several processes, every process's data-iterator state goes into process 0's file
    (`data_state["iterators"]`, in process order), and all wait until it exists.
    """

    def __init__(self, keep: int | None = 3):
        """**Arguments:** `keep`: how many of the newest checkpoints to keep; `None`, all."""
        if keep is not None and keep < 1:
            raise ValueError(f"keep must be at least 1 (or None to keep all), got {keep}")
        self.keep = keep
        self._saved_step: int | None = None

    def on_fit_start(self, ctx: FitContext) -> None:
        if ctx.workdir is None:
            raise ValueError("Checkpointer needs fit(..., workdir=...) to save into")
        self._saved_step = ctx.start_step if ctx.checkpoint is not None else None

    def save(self, ctx: FitContext) -> None:
        """Save the current train state, unless this step is already saved."""
        if self._saved_step == ctx.step:
            return
        assert ctx.workdir is not None
        directory = ctx.workdir / "checkpoints"
        data_state = ctx.data_state()
        state = ctx.train_state
        if jax.process_count() == 1:
            ctx.checkpoint = save_checkpoint(
                directory, state, data_state=data_state, config=ctx.config, keep=self.keep
            )
        else:
            data_state["iterators"] = allgather_json(data_state["iterator"])
            if ctx.is_main:
                save_checkpoint(
                    directory, state, data_state=data_state, config=ctx.config, keep=self.keep
                )
            multihost_utils.sync_global_devices(f"zoo.train.fit: checkpoint {ctx.step}")
            ctx.checkpoint = checkpoint_path(directory, ctx.step)
        self._saved_step = ctx.step

    def on_epoch_end(self, ctx: FitContext) -> None:
        self.save(ctx)

    def on_interrupt(self, ctx: FitContext) -> None:
        self.save(ctx)


class Evaluate(Callback):
    """Evaluates the model after each epoch and adds the results to the epoch's record.

    `eval_fn(model, model_state)` is called with the model in `eqx.nn.inference_mode` and
    returns named floats, e.g. a [`zoo.train.Evaluator`][]; `eval_time_s` is added too.
    """

    def __init__(self, eval_fn: Callable[[PyTree, eqx.nn.State], Mapping[str, float]]):
        """**Arguments:** `eval_fn`: `eval_fn(model, model_state) -> {name: value}`."""
        self.eval_fn = eval_fn

    def on_epoch_end(self, ctx: FitContext) -> None:
        t = time.perf_counter()
        ts = ctx.train_state
        results = self.eval_fn(eqx.nn.inference_mode(ts.model), ts.model_state)
        ctx.record.update({k: float(v) for k, v in results.items()})
        ctx.record["eval_time_s"] = time.perf_counter() - t


class ProgressBar(Callback):
    """Progress on a terminal: a tqdm bar with the loss and samples/s, and one summary line
    per epoch. Written to a file that is not a terminal (a CI log), it prints one plain line
    every `every` steps instead of redrawing the bar. Process 0 only.
    """

    def __init__(self, every: int = 100, *, file: io.TextIOBase | None = None):
        """**Arguments:**

        - `every`: steps between plain lines when `file` is not a terminal.
        - `file`: where to write; `sys.stderr` by default (tqdm's choice).
        """
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        self.every = every
        self.file = file
        self._bar = None
        self._last = 0.0

    def _out(self) -> Any:
        return sys.stderr if self.file is None else self.file

    def on_fit_start(self, ctx: FitContext) -> None:
        self._plain = not (hasattr(self._out(), "isatty") and self._out().isatty())
        self._enabled = ctx.is_main
        if self._enabled and not self._plain:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # tqdm comes with the `recipes` extra
                self._plain = True
            else:
                total, initial = ctx.total_steps, ctx.start_step
                self._bar = tqdm(
                    total=total, initial=initial, unit="step", file=self._out(), dynamic_ncols=True
                )

    def on_epoch_start(self, ctx: FitContext) -> None:
        self._t0, self._steps = time.perf_counter(), 0
        if self._bar is not None:
            self._bar.set_description(f"epoch {ctx.epoch + 1}/{ctx.num_epochs}")

    def on_dispatch_end(self, ctx: FitContext, metrics: dict[str, np.ndarray]) -> None:
        if not self._enabled:
            return
        n = len(metrics["loss"])
        self._steps += n
        rate = self._steps * (ctx.batch_size or 0) / max(time.perf_counter() - self._t0, 1e-9)
        loss = float(metrics["loss"][-1])
        if self._bar is not None:
            self._bar.update(n)
            now = time.perf_counter()
            if now - self._last > 0.25:
                self._last = now
                self._bar.set_postfix(loss=f"{loss:.4g}", samples_s=f"{rate:.4g}")
        elif ctx.step // self.every > (ctx.step - n) // self.every:
            print(
                f"epoch {ctx.epoch + 1}/{ctx.num_epochs} step {ctx.step}/{ctx.total_steps}: "
                f"loss {loss:.4g}, {rate:.4g} samples/s",
                file=self._out(),
                flush=True,
            )

    def on_record(self, ctx: FitContext, record: dict[str, Any]) -> None:
        if not self._enabled or record.get("kind") != "epoch":
            return
        summary = ", ".join(
            f"{k} {v:.4g}"
            for k, v in record.items()
            if isinstance(v, float) and not k.endswith("_s") and math.isfinite(v)
        )
        line = f"epoch {record['epoch']}/{ctx.num_epochs}: {summary}"
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, file=self._out(), flush=True)

    def on_fit_end(self, ctx: FitContext) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
