"""`fit`: the training loop every recipe uses, a short loop over a list of callbacks."""

import collections
import contextlib
import dataclasses
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import PyTree

from .._atomic import atomic_write
from ._callback import Callback, FitContext
from ._callbacks import Checkpointer, Evaluate, MetricsLog, NonFiniteGuard, ProgressBar, SignalStop
from ._checkpoint import DAMAGED_SUFFIX, latest_checkpoint, restore_latest
from ._errors import StepCheckError, TrainingInterrupted
from ._lock import lock_run_folder
from ._loss import Batch, Metrics
from ._metrics import read_metrics
from ._parallel import data_mesh
from ._runner import Runner
from ._state import TrainState
from ._steering import steering_names
from ._step import TrainStep
from ._writers import MetricWriter, make_writers


def _stack(batches: list[Batch]) -> Batch | None:
    """Stack K batches along a new leading axis, or `None` if their shapes differ."""
    first = batches[0]
    shapes = {k: np.shape(v) for k, v in first.items()}
    for b in batches[1:]:
        if b.keys() != first.keys() or any(np.shape(b[k]) != s for k, s in shapes.items()):
            return None
    return {k: np.stack([np.asarray(b[k]) for b in batches]) for k in first}


class _Stream:
    """The data side of the loop: one iterator over the whole run, or generated batches."""

    def __init__(self, data: Iterable[Batch] | None, data_state: dict[str, Any], total: int):
        self.consumed = int(data_state["batches"])  # batches (or generated steps) dispatched
        self.total = total
        self.iterator = None if data is None else iter(data)
        # The host batches of the last dispatches, by stream index, so that a non-finite
        # loss can be traced to its batch (metrics are read one dispatch late).
        self.recent: collections.deque[tuple[int, list[Batch]]] = collections.deque(maxlen=2)
        saved = data_state.get("iterator")
        if self.iterator is not None:
            if saved is not None and hasattr(self.iterator, "set_state"):
                self.iterator.set_state(saved)  # pyright: ignore[reportAttributeAccessIssue]
            else:  # without a resumable iterator, replay the stream up to where it stopped
                for _ in range(self.consumed):
                    next(self.iterator)

    def batch_at(self, index: int) -> Batch | None:
        """The host batch at stream position `index`, if among the last dispatches."""
        for first, batches in self.recent:
            if first <= index < first + len(batches):
                return batches[index - first]
        return None

    def state(self) -> dict[str, Any]:
        get = getattr(self.iterator, "get_state", None)
        return {"batches": self.consumed, "iterator": None if get is None else get()}

    def _pull(self, n: int) -> list[Batch]:
        assert self.iterator is not None
        out = []
        for _ in range(n):
            try:
                out.append(next(self.iterator))
            except StopIteration:
                raise ValueError(
                    f"data ran out after {self.consumed + len(out)} batches, before the "
                    f"{self.total} the run needs: make it longer (an endless dataset with "
                    "`steps_per_epoch`)"
                ) from None
        return out

    def dispatch(self, runner: Runner, n: int) -> Metrics:
        """Start `n` steps on the devices; the metrics are not waited for."""
        if self.iterator is None:
            self.consumed += n
            return runner.generated(n)
        batches = self._pull(n)
        self.recent.append((self.consumed, batches))
        self.consumed += n
        stacked = _stack(batches) if n > 1 else None
        if stacked is not None:
            return runner.scan(stacked)
        if n == 1:
            return runner.single(batches[0])
        ms = [runner.single(b) for b in batches]  # shapes differ: cannot stack, one by one
        return {k: jnp.stack([m[k] for m in ms]) for k in ms[0]}


def _epoch_length(data, step: TrainStep, num_epochs: int, steps_per_epoch: int | None) -> int:
    length = None
    if data is not None and hasattr(data, "__len__"):
        length = len(data)
        if length >= sys.maxsize:  # Grain's convention for an endless dataset
            length = None
    if data is None and step.make_batch is None:
        raise ValueError("fit without `data` needs a TrainStep built with `make_batch`")
    if steps_per_epoch is None:
        if length is None:
            what = "generated data" if data is None else "data without a finite length"
            raise ValueError(
                f"fit on {what} needs `steps_per_epoch` (batches per epoch, e.g. "
                "zoo.data.steps_per_epoch(num_examples, batch_size))"
            )
        steps_per_epoch = length
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
    total = num_epochs * steps_per_epoch
    if length is not None and length < total:
        raise ValueError(
            f"data has {length} batches, but {num_epochs} epochs of {steps_per_epoch} steps "
            f"need {total}: repeat it over the epochs (zoo.data.batches(..., "
            "num_epochs=None), grain's `ds.repeat()`) or pass `steps_per_epoch`"
        )
    return steps_per_epoch


def _config_json(config: Any) -> Any:
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    # Round trip so that what is compared on resume is exactly what was stored (tuples
    # become lists, paths strings).
    return json.loads(json.dumps(config, default=str))


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(config, dict):
        return {prefix or "config": config}
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        out.update(_flat(v, name + ".") if isinstance(v, dict) and v else {name: v})
    return out


def _config_diff(saved: Any, now: Any, steering: frozenset[str]) -> list[str]:
    """The config entries (dotted for nested configs) that differ on resume, less those
    that only steer the run."""
    a, b = _flat(saved), _flat(now)
    return sorted(k for k in set(a) | set(b) if k not in steering and a.get(k) != b.get(k))


def _own_data_state(saved: dict[str, Any], path: Path) -> dict[str, Any]:
    """This process's part of a checkpoint's data state: its own iterator state."""
    states = saved.get("iterators")
    count, index = jax.process_count(), jax.process_index()
    if states is None and count == 1:
        return saved
    if states is not None and len(states) == count:
        return {**saved, "iterator": states[index]}
    saved_count = 1 if states is None else len(states)
    warnings.warn(
        f"{path} was saved by {saved_count} process(es), resumed by {count}: every process "
        "starts from process 0's data-iterator state (exact for zoo.data.batches, whose "
        "state is the global batch index; other pipelines may repeat or skip data)",
        stacklevel=4,
    )
    own = saved["iterator"] if states is None else states[0]
    return {**saved, "iterator": own}


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")


def _restore(workdir: Path, like: TrainState, resume: bool, config: Any, steering: frozenset):
    """`(train_state, data_state, history, checkpoint)` of the run in `workdir`."""
    found = latest_checkpoint(workdir / "checkpoints")
    if found is None:
        return like, {"batches": 0, "iterator": None}, [], None
    if not resume:
        raise ValueError(
            f"{workdir} already holds checkpoints (latest {found.name}); pass resume=True "
            "to continue that run, or choose another workdir"
        )
    train_state, header, found, skipped = restore_latest(workdir / "checkpoints", like)
    for bad in skipped if jax.process_index() == 0 else []:
        # Out of the way (kept for a post-mortem): a damaged file with a higher step would
        # otherwise be "the latest checkpoint" again on every resume, and outlive pruning.
        with contextlib.suppress(FileNotFoundError):
            bad.replace(bad.with_name(bad.name + DAMAGED_SUFFIX))
    data_state = _own_data_state(header["data_state"] or {"batches": 0}, found)
    diff = _config_diff(header.get("config"), config, steering)
    if diff:
        warnings.warn(
            f"resuming {found} with a config that differs in {diff}; the result will not "
            "match an uninterrupted run",
            stacklevel=3,
        )
    history = []
    metrics = workdir / "metrics.jsonl"
    if metrics.exists():
        history = [r for r in read_metrics(metrics) if r.get("step", 0) <= header["step"]]
        if jax.process_index() == 0:
            # Rewritten now, so that the torn line (if any) is warned about once, here.
            atomic_write(metrics, "".join(json.dumps(r) + "\n" for r in history))
    return train_state, data_state, history, found


def _drop_checked_callback_logs(record: logging.LogRecord) -> bool:
    """A logging filter: JAX logs the traceback of an `eqx.error_if` that fires in a step
    before raising it; `fit` raises the check's message as a `StepCheckError`, so the
    pages of callback traceback on stderr say nothing more."""
    error = record.exc_info[1] if record.exc_info else None
    return error is None or "EquinoxRuntimeError" not in type(error).__name__


def _callbacks(defaults: list[Callback], extra: Sequence[Callback]) -> list[Callback]:
    """`defaults`, each replaced by a callback of its type from `extra`; the rest appended."""
    out, extra = list(defaults), list(extra)
    for cb in list(extra):
        for i, d in enumerate(out):
            if type(d) in type(cb).__mro__ and d in defaults:
                out[i] = cb
                extra.remove(cb)
                break
    return out + extra


def _writers(
    trackers: Sequence[str | MetricWriter], workdir: Path | None, config: Any
) -> list[MetricWriter]:
    if workdir is None:
        if any(isinstance(t, str) and t != "jsonl" for t in trackers):
            raise ValueError(f"trackers {list(trackers)} write into the run folder: pass `workdir`")
        return [t for t in trackers if not isinstance(t, str)]
    made = iter(make_writers([t for t in trackers if isinstance(t, str)], workdir, config=config))
    return [next(made) if isinstance(t, str) else t for t in trackers]


def fit(
    train_state: TrainState,
    step: TrainStep,
    data: Iterable[Batch] | None = None,
    *,
    num_epochs: int = 1,
    steps_per_epoch: int | None = None,
    steps_per_dispatch: int = 1,
    eval_fn: Callable[[PyTree, eqx.nn.State], Mapping[str, float]] | None = None,
    workdir: str | Path | None = None,
    config: Any = None,
    resume: bool = False,
    keep: int | None = 3,
    log_every: int | None = 100,
    progress: bool = True,
    mesh: Mesh | None = None,
    trackers: Sequence[str | MetricWriter] = ("jsonl",),
    callbacks: Sequence[Callback] = (),
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Train for `num_epochs` epochs of `steps_per_epoch` steps, saving and evaluating after
    each epoch.

    The loop only dispatches steps; everything else is a [`zoo.train.Callback`][], called
    in order. The default list is `SignalStop()`, `NonFiniteGuard()`,
    `MetricsLog(writers, log_every=log_every)`, `Checkpointer(keep)` (with a `workdir`),
    `Evaluate(eval_fn)` (with an `eval_fn`) and `ProgressBar()` (with `progress`); each of
    `callbacks` replaces the default of its class (or a base class), or is appended.

    `data` is read as one stream of batches over the whole run (a Grain dataset's iterator,
    whose state is checkpointed): make it long enough, e.g. `zoo.data.batches(...,
    num_epochs=None)` (endless) with `steps_per_epoch=zoo.data.steps_per_epoch(n,
    batch_size)`. Without `data`, batches are generated inside the compiled step by
    `step.make_batch` (an OU process, say).

    `steps_per_dispatch=K` runs K steps per compiled call (`lax.scan` over K stacked batches,
    or over K generated ones); the last `steps_per_epoch % K` steps of each epoch run one per
    call, so nothing recompiles from epoch to epoch.

    With a `workdir`, the run writes `config.json` (once it has restored any checkpoint),
    one JSON object per line to `metrics.jsonl` (`"kind": "step"` every `log_every` steps,
    `"kind": "epoch"` after each epoch), what other `trackers` write, and keeps the last
    `keep` checkpoints in `checkpoints/`.

    Training is data parallel over `mesh` (every device by default, one the same way): each
    batch is split along the mesh's `"data"` axis, the train state is replicated, and the
    compiler all-reduces the gradients, so losses match one device to float tolerance.
    With several processes (see [`zoo.train.initialize_distributed`][]), every process calls
    `fit` with its own shard of each global batch (`zoo.data.batches` reads it) and the same
    arguments otherwise; `workdir` must be one shared folder. Only process 0 writes files
    and progress; every process's data-iterator state is saved in each checkpoint, and on
    resume each process restores its own. A signal then stops the run at the end of the
    current epoch, where the processes agree to stop.

    **Arguments:**

    - `train_state`: the starting [`zoo.train.TrainState`][] (also the structure a resumed
      checkpoint is loaded into).
    - `step`: the [`zoo.train.TrainStep`][] (loss and optimiser).
    - `data`: an iterable of dict batches with a fixed batch size, or `None` to generate
      them with `step.make_batch`.
    - `num_epochs`: the number of epochs to train in all (a resumed run counts those
      already done).
    - `steps_per_epoch`: batches per epoch; default `len(data)`, so a finite dataset of one
      epoch needs nothing more. Required for endless or generated data.
    - `steps_per_dispatch`: K, the optimiser steps per compiled call.
    - `eval_fn`: called after each epoch (after its checkpoint) as `eval_fn(model,
      model_state)` with the model in `eqx.nn.inference_mode`; returns named floats to log,
      e.g. a [`zoo.train.Evaluator`][].
    - `workdir`: the run folder; `None` writes nothing (and cannot resume).
    - `config`: the run's configuration (a dataclass or a JSON-serialisable mapping),
      written to `config.json` and into each checkpoint; resuming with a config that differs
      warns, except in fields that only steer the run: a dataclass's fields declared with
      [`zoo.train.steering_field`][], or for a mapping the entries named like `fit`'s own
      arguments (`resume`, `progress`, `workdir`, `keep`, `log_every`, `devices`).
    - `resume`: continue from the latest checkpoint in `workdir`, restoring the data
      iterator's position and the running metric sums, so the result equals an
      uninterrupted run bit for bit. Without it, a `workdir` holding checkpoints is an error.
    - `keep`: checkpoints to keep (`None`: all).
    - `log_every`: steps per `"step"` record (`None`: epoch records only).
    - `progress`: show a progress bar (plain lines when not on a terminal).
    - `mesh`: the data-parallel mesh, from [`zoo.train.data_mesh`][].
    - `trackers`: where records go: names for [`zoo.train.make_writers`][] (`"jsonl"`,
      `"tensorboard"`, `"wandb"`, each writing under `workdir`) or writer objects.
    - `callbacks`: extra [`zoo.train.Callback`][]s, or replacements for the defaults.

    **Returns:** `(train_state, history)`: the trained state and every record logged (also
    those of the run's earlier part when resumed).

    **Raises:** [`zoo.train.TrainingInterrupted`][] on SIGINT/SIGTERM (after saving);
    [`zoo.train.NonFiniteLossError`][] on a NaN or infinite loss (nothing saved after the
    last good step; zoo's classification losses make it NaN for labels outside
    `[0, num_classes)`, which the error then names); [`zoo.train.StepCheckError`][] when a
    check inside the step fails (an `eqx.error_if` in your loss), with the check's message;
    [`zoo.train.RunFolderLockedError`][] when another run holds `workdir`;
    [`zoo.train.CheckpointCorruptError`][] when resuming and no checkpoint verifies;
    `ValueError` for inconsistent arguments.
    """
    steps_per_epoch = _epoch_length(data, step, num_epochs, steps_per_epoch)
    if resume and workdir is None:
        raise ValueError("resume=True needs the `workdir` to resume from")
    workdir = None if workdir is None else Path(workdir)
    config_json = _config_json(config)
    main = jax.process_index() == 0
    writers = _writers(trackers, workdir, config_json)
    defaults: list[Callback] = [SignalStop(), NonFiniteGuard()]
    defaults.append(MetricsLog(writers, log_every=log_every))
    defaults += [Checkpointer(keep)] if workdir is not None else []
    defaults += [Evaluate(eval_fn)] if eval_fn is not None else []
    defaults += [ProgressBar(log_every or 100)] if progress else []
    parts = _callbacks(defaults, callbacks)

    with contextlib.ExitStack() as held:
        data_state, history, found = {"batches": 0, "iterator": None}, [], None
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            if main:  # one writer per run folder, for the whole run
                held.enter_context(lock_run_folder(workdir))
            steering = steering_names(config)
            train_state, data_state, history, found = _restore(
                workdir, train_state, resume, config_json, steering
            )
            if config_json is not None and main:
                _write_json(workdir / "config.json", config_json)
        stream = _Stream(data, data_state, num_epochs * steps_per_epoch)
        restored = data_state.get("callbacks") or {}
        if not restored and data_state.get("sums"):  # a checkpoint from before callbacks
            restored = {"MetricsLog": data_state["sums"]}
        ctx = FitContext(
            Runner(step, train_state, data_mesh() if mesh is None else mesh),
            num_epochs=num_epochs,
            steps_per_epoch=steps_per_epoch,
            steps_per_dispatch=steps_per_dispatch,
            step=int(train_state.step),
            consumed=stream.consumed,
            workdir=workdir,
            config=config_json,
            history=history,
            checkpoint=found,
            is_main=main,
            restored=restored,
            data_state=stream.state,
            batch_at=stream.batch_at,
        )
        ctx.callbacks = parts
        if data is None:
            ctx.batch_size = int(jax.tree.leaves(step.batch_shape(train_state))[0].shape[0])
        callback_log = logging.getLogger("jax._src.callback")
        callback_log.addFilter(_drop_checked_callback_logs)
        held.callback(callback_log.removeFilter, _drop_checked_callback_logs)
        try:
            try:
                _loop(ctx, stream)
            except Exception as e:  # jax's error (its type varies by version), or Equinox's
                checked = StepCheckError.from_runtime_error(e, ctx.step, ctx.checkpoint)
                if checked is None:
                    raise
                # The check's own message, not pages of XLA callback traceback.
                raise checked from None
        finally:
            for cb in parts:
                cb.on_fit_end(ctx)
        return ctx.runner.state(), list(ctx.history)


def _loop(ctx: FitContext, stream: _Stream) -> None:
    for cb in ctx.callbacks:
        cb.on_fit_start(ctx)
    for epoch in range(ctx.consumed // ctx.steps_per_epoch, ctx.num_epochs):
        ctx.epoch = epoch
        if not _epoch(ctx, stream):
            _interrupt(ctx)
        if ctx.stop_reason is not None and epoch + 1 < ctx.num_epochs:
            ctx.epoch = epoch + 1
            _interrupt(ctx)


def _epoch(ctx: FitContext, stream: _Stream) -> bool:
    """Run one epoch (or what is left of it); `False` if it stopped early."""
    for cb in ctx.callbacks:
        cb.on_epoch_start(ctx)
    end, K = (ctx.epoch + 1) * ctx.steps_per_epoch, ctx.steps_per_dispatch
    pending = None
    while stream.consumed < end:
        metrics = stream.dispatch(ctx.runner, K if end - stream.consumed >= K else 1)
        if ctx.batch_size is None:
            ctx.batch_size = ctx.runner.batch_size
        # Read the previous dispatch while this one runs: the host never waits for the
        # device except for metrics that are already a dispatch old.
        if pending is not None:
            _dispatch_end(ctx, pending)
        pending = metrics
        if ctx.stop_reason is not None:
            break
    if pending is not None:
        _dispatch_end(ctx, pending)
    if ctx.stop_reason is not None:
        return False
    ctx.record = {"kind": "epoch", "epoch": ctx.epoch + 1, "step": ctx.step}
    for cb in ctx.callbacks:
        cb.on_epoch_end(ctx)
    ctx.log(ctx.record)
    return True


def _dispatch_end(ctx: FitContext, metrics: Metrics) -> None:
    # "loss" first, so records and the progress bar lead with it.
    names = ["loss"] + sorted(k for k in metrics if k != "loss")
    host = {k: np.atleast_1d(np.asarray(metrics[k], np.float64)) for k in names}
    n = len(host["loss"])
    ctx.step += n
    ctx.consumed += n
    for cb in ctx.callbacks:
        cb.on_dispatch_end(ctx, host)


def _interrupt(ctx: FitContext) -> None:
    for cb in ctx.callbacks:
        cb.on_interrupt(ctx)
    in_epoch = ctx.consumed - ctx.epoch * ctx.steps_per_epoch
    where = f"step {ctx.step} (epoch {ctx.epoch + 1}, batch {in_epoch} of {ctx.steps_per_epoch})"
    path = ctx.checkpoint if ctx.workdir is not None else None
    if path is None:
        message = f"training interrupted by {ctx.stop_reason} at {where}; nothing saved"
    else:
        message = (
            f"training interrupted by {ctx.stop_reason} at {where}; saved checkpoint {path}. "
            f"To resume, run fit(..., resume=True) with workdir={ctx.workdir} "
            "(recipes: rerun the same command with --resume)"
        )
    raise TrainingInterrupted(message, ctx.step, path)
