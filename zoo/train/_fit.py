"""`fit`: the training loop every recipe uses."""

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jaxtyping import PyTree

from ._checkpoint import checkpoint_path, latest_checkpoint, restore_checkpoint, save_checkpoint
from ._loss import Batch, Metrics
from ._metrics import MetricsLog, read_metrics
from ._parallel import allgather_json, data_mesh, global_batch, replicate
from ._state import TrainState
from ._step import Partition, TrainStep


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; nothing was saved after the last good step.

    **Attributes:** `step` (the 1-based number of the optimiser step whose loss was not
    finite), `epoch` (1-based), `loss` (its value) and `checkpoint` (the last good
    checkpoint's path, or `None`).
    """

    def __init__(self, step: int, epoch: int, loss: float, checkpoint: Path | None):
        self.step = step
        self.epoch = epoch
        self.loss = loss
        self.checkpoint = checkpoint
        where = (
            f"the last good checkpoint is {checkpoint}"
            if checkpoint is not None
            else "no checkpoint had been saved"
        )
        super().__init__(
            f"training loss is {loss} at step {step} (epoch {epoch}); stopped without saving, "
            f"{where}. Lower the learning rate, clip gradients or check the data."
        )


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT (Ctrl-C) or SIGTERM after saving a checkpoint.

    A `KeyboardInterrupt`, so `except Exception` does not swallow it; command-line entries
    catch it, print it (the message says how to resume) and exit with status 130.

    **Attributes:** `step`, `checkpoint` (the saved path, or `None` without a `workdir`) and
    `message`.
    """

    def __init__(self, message: str, step: int, checkpoint: Path | None):
        self.message = message
        self.step = step
        self.checkpoint = checkpoint
        super().__init__(message)

    def __str__(self) -> str:
        return self.message


def to_device(batch: Batch, mesh: Mesh | None = None, *, stacked: bool = False) -> Batch:
    """Put a host batch (NumPy arrays) on the devices: the one place data enters them.

    **Arguments:**

    - `batch`: this process's part of the batch, a dict of host arrays.
    - `mesh`: `None` for the default device; a mesh from [`zoo.train.data_mesh`][] to split
      the global batch along its `"data"` axis ([`zoo.train.global_batch`][]).
    - `stacked`: the arrays hold K stacked batches `(K, batch, ...)`.

    **Returns:** a dict of `jax.Array`s.
    """
    if mesh is None:
        return jax.device_put(dict(batch))
    return global_batch(batch, mesh, stacked=stacked)


def _stack(batches: list[Batch]) -> Batch | None:
    """Stack K batches along a new leading axis, or `None` if their shapes differ."""
    first = batches[0]
    shapes = {k: np.shape(v) for k, v in first.items()}
    for b in batches[1:]:
        if b.keys() != first.keys() or any(np.shape(b[k]) != s for k, s in shapes.items()):
            return None
    return {k: np.stack([np.asarray(b[k]) for b in batches]) for k in first}


def _config_json(config: Any) -> Any:
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    # Round trip so that what is compared on resume is exactly what was stored (tuples
    # become lists, paths strings).
    return json.loads(json.dumps(config, default=str))


# Config entries that only steer the run (named like `fit`'s own arguments): they may
# differ on resume without changing the result.
# `devices` too: the result is the same to float tolerance on any number of devices.
_RUN_CONTROL = frozenset({"resume", "progress", "workdir", "keep", "log_every", "devices"})


def _config_diff(saved: Any, now: Any) -> list[str]:
    """The config keys that differ between a checkpoint and a resumed run."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return [] if saved == now else ["config"]
    keys = (set(saved) | set(now)) - _RUN_CONTROL
    return sorted(k for k in keys if saved.get(k) != now.get(k))


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
        stacklevel=3,
    )
    own = saved["iterator"] if states is None else states[0]
    return {**saved, "iterator": own}


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


class _Runner:
    """The hot loop's view of a train state: its array leaves, partitioned once.

    Each dispatch passes the leaves list straight to a cached `jax.jit` function and donates
    the buffers, so steps neither re-partition the model nor keep two copies of it.
    """

    def __init__(self, step: TrainStep, train_state: TrainState, mesh: Mesh | None = None):
        self.step = step
        self.mesh = data_mesh() if mesh is None else mesh
        self.batch_size: int | None = None  # global, of the last batch placed
        self.partition, leaves = Partition.split(train_state)
        # Replicated copies, because the first dispatch donates these buffers and the caller
        # may still hold `train_state`. (`device_put` copies without compiling.)
        self.leaves = replicate(leaves, self.mesh)

    def state(self) -> TrainState:
        return self.partition.merge(self.leaves)

    def single(self, batch: Batch) -> Metrics:
        fn = self.step.compiled("single", self.partition, donate=True, mesh=self.mesh)
        device_batch = to_device(batch, self.mesh)
        self.batch_size = jax.tree.leaves(device_batch)[0].shape[0]
        self.leaves, metrics = fn(self.leaves, device_batch)
        return metrics

    def scan(self, batches: Batch) -> Metrics:
        fn = self.step.compiled("scan", self.partition, donate=True, mesh=self.mesh)
        device_batches = to_device(batches, self.mesh, stacked=True)
        self.batch_size = jax.tree.leaves(device_batches)[0].shape[1]
        self.leaves, metrics = fn(self.leaves, device_batches)
        return metrics

    def generated(self, num_steps: int) -> Metrics:
        fn = self.step.compiled(
            "generated", self.partition, num_steps=num_steps, donate=True, mesh=self.mesh
        )
        self.leaves, metrics = fn(self.leaves)
        return metrics


class _Signals:
    """Turns SIGINT/SIGTERM into a flag the loop checks between dispatches.

    The first signal only sets the flag (the loop then saves and stops); the previous
    handler is put back at once, so a second Ctrl-C interrupts immediately.
    """

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        # Python only lets the main thread install handlers.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum
        signal.signal(signum, self._previous[signum])

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def fit(
    train_state: TrainState,
    step: TrainStep,
    data: Iterable[Batch] | None = None,
    *,
    num_epochs: int = 1,
    steps_per_epoch: int | None = None,
    steps_per_dispatch: int = 1,
    eval_fn: Callable[[PyTree, eqx.nn.State | None], Mapping[str, float]] | None = None,
    workdir: str | Path | None = None,
    config: Any = None,
    resume: bool = False,
    keep: int | None = 3,
    log_every: int | None = 100,
    progress: bool = True,
    mesh: Mesh | None = None,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Train for `num_epochs` epochs of `steps_per_epoch` steps, evaluating and saving after
    each epoch.

    `data` is read as one stream of batches over the whole run (a Grain dataset's iterator,
    whose state is checkpointed): make it long enough, e.g. `zoo.data.batches(...,
    num_epochs=None)` (endless) with `steps_per_epoch=zoo.data.steps_per_epoch(n,
    batch_size)`. Without `data`, batches are generated inside the compiled step by
    `step.make_batch` (an OU process, say).

    `steps_per_dispatch=K` runs K steps per compiled call (`lax.scan` over K stacked batches,
    or over K generated ones); the last `steps_per_epoch % K` steps of each epoch run one per
    call, so nothing recompiles from epoch to epoch.

    With a `workdir`, the run writes `config.json`, appends one JSON object per line to
    `metrics.jsonl` (`"kind": "step"` every `log_every` steps, `"kind": "epoch"` after each
    epoch), and keeps the last `keep` checkpoints in `checkpoints/`.

    Training is data parallel over `mesh` (every device by default, one the same way): each
    batch is split along the mesh's `"data"` axis, the train state is replicated, and the
    compiler all-reduces the gradients, so losses match one device to float tolerance.
    With several processes (see [`zoo.train.initialize_distributed`][]), every process calls
    `fit` with its own shard of each global batch (`zoo.data.batches` reads it) and the same
    arguments otherwise; `workdir` must be one shared folder. Only process 0 writes
    `config.json`, `metrics.jsonl`, checkpoints and the progress bar; every process's
    data-iterator state is gathered into each checkpoint's header (`data_state["iterators"]`,
    in process order), and on resume each process restores its own. A signal then stops the
    run at the end of the current epoch, where the processes agree to stop.

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
    - `eval_fn`: called after each epoch as `eval_fn(model, model_state)` with the model in
      `eqx.nn.inference_mode`; returns named floats to log, e.g. a
      [`zoo.train.Evaluator`][].
    - `workdir`: the run folder; `None` writes nothing (and cannot resume).
    - `config`: the run's configuration (a dataclass or a JSON-serialisable mapping),
      written to `config.json` and into each checkpoint; resuming with a config that differs
      (other than in `resume`, `progress`, `workdir`, `keep`, `log_every`) warns.
    - `resume`: continue from the latest checkpoint in `workdir`, restoring the data
      iterator's position; the result is bit-identical to an uninterrupted run on CPU.
      Without a checkpoint, the run starts from `train_state`.
    - `keep`: checkpoints to keep (`None`: all).
    - `log_every`: steps between `"kind": "step"` records (mean loss and metrics since the
      last one); `None` for epoch records only.
    - `progress`: show a tqdm progress bar with the loss and samples/s (of the global batch).
    - `mesh`: the devices to train on, a mesh from [`zoo.train.data_mesh`][]; default all.

    **Returns:** `(train_state, history)`: the final train state and every record of
    `metrics.jsonl` (including those of earlier runs being resumed).

    **Raises:**

    - `NonFiniteLossError`: when a step's loss is NaN or infinite; it names the step and
      the last good checkpoint, and nothing is saved after it.
    - `TrainingInterrupted`: on SIGINT (Ctrl-C) or SIGTERM, after saving a checkpoint of the
      last completed step; the message says how to resume.
    - `ValueError`: for inconsistent arguments (the message names them), data that runs out
      before the last epoch, a `workdir` that already holds checkpoints without `resume`, or
      a batch that does not split evenly over the mesh's devices.
    """
    if steps_per_dispatch < 1:
        raise ValueError(f"steps_per_dispatch must be at least 1, got {steps_per_dispatch}")
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be at least 1, got {num_epochs}")
    length = None
    if data is not None and hasattr(data, "__len__"):
        length = len(data)  # pyright: ignore[reportArgumentType]
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
    total_steps = num_epochs * steps_per_epoch
    if length is not None and length < total_steps:
        raise ValueError(
            f"data has {length} batches, but {num_epochs} epochs of {steps_per_epoch} steps "
            f"need {total_steps}: repeat it over the epochs (zoo.data.batches(..., "
            "num_epochs=None), grain's `ds.repeat()`) or pass `steps_per_epoch`"
        )
    if resume and workdir is None:
        raise ValueError("resume=True needs the `workdir` to resume from")

    config_json = _config_json(config)
    mesh = data_mesh() if mesh is None else mesh
    main = jax.process_index() == 0
    workdir = None if workdir is None else Path(workdir)
    ckpt_dir = None if workdir is None else workdir / "checkpoints"
    data_state: dict[str, Any] = {"batches": 0, "iterator": None}
    keep_records_to: int | None = None
    history: list[dict[str, Any]] = []  # earlier records, for processes other than 0
    if ckpt_dir is not None:
        assert workdir is not None
        workdir.mkdir(parents=True, exist_ok=True)
        found = latest_checkpoint(ckpt_dir)
        if found is not None and not resume:
            raise ValueError(
                f"{workdir} already holds checkpoints (latest {found.name}); pass resume=True "
                "to continue that run, or choose another workdir"
            )
        if found is not None:
            train_state, header = restore_checkpoint(found, like=train_state)
            data_state = _own_data_state(header["data_state"] or data_state, found)
            keep_records_to = header["step"]
            diff = _config_diff(header.get("config"), config_json)
            if diff:
                warnings.warn(
                    f"resuming {found} with a config that differs in {diff}; the result "
                    "will not match an uninterrupted run",
                    stacklevel=2,
                )
        if config_json is not None and main:
            _write_json(workdir / "config.json", config_json)
        if main:
            log = MetricsLog(workdir / "metrics.jsonl", keep_up_to_step=keep_records_to)
        else:
            log = None
            if keep_records_to is not None and (workdir / "metrics.jsonl").exists():
                records = read_metrics(workdir / "metrics.jsonl")
                history = [r for r in records if r.get("step", 0) <= keep_records_to]
    else:
        log = None

    try:
        with _Signals() as signals:
            return _loop(
                train_state,
                step,
                data,
                data_state,
                num_epochs=num_epochs,
                steps_per_epoch=steps_per_epoch,
                steps_per_dispatch=steps_per_dispatch,
                eval_fn=eval_fn,
                ckpt_dir=ckpt_dir,
                config=config_json,
                keep=keep,
                log=log,
                log_every=log_every,
                progress=progress and main,
                signals=signals,
                mesh=mesh,
                history=history,
            )
    finally:
        if log is not None:
            log.close()


def _loop(
    train_state: TrainState,
    step: TrainStep,
    data: Iterable[Batch] | None,
    data_state: dict[str, Any],
    *,
    num_epochs: int,
    steps_per_epoch: int,
    steps_per_dispatch: int,
    eval_fn: Callable | None,
    ckpt_dir: Path | None,
    config: Any,
    keep: int | None,
    log: MetricsLog | None,
    log_every: int | None,
    progress: bool,
    signals: _Signals,
    mesh: Mesh,
    history: list[dict[str, Any]],
) -> tuple[TrainState, list[dict[str, Any]]]:
    K = steps_per_dispatch
    total = num_epochs * steps_per_epoch
    consumed = int(data_state["batches"])  # batches (or generated steps) done so far
    history = list(history) if log is None else log.records
    runner = _Runner(step, train_state, mesh)
    multiprocess = jax.process_count() > 1
    step_number = int(train_state.step)  # host mirror of train_state.step; no syncs
    last_ckpt = None if ckpt_dir is None else latest_checkpoint(ckpt_dir)

    iterator: Iterator[Batch] | None = None
    if data is not None:
        iterator = iter(data)
        saved = data_state.get("iterator")
        if saved is not None and hasattr(iterator, "set_state"):
            iterator.set_state(saved)  # pyright: ignore[reportAttributeAccessIssue]
        else:
            # Without a resumable iterator, replay the stream up to where the run stopped.
            for _ in range(consumed):
                next(iterator)
        batch_size = None
    else:
        batch_size = int(jax.tree.leaves(step.batch_shape(train_state))[0].shape[0])

    def current_data_state() -> dict[str, Any]:
        state = None
        if iterator is not None and hasattr(iterator, "get_state"):
            state = iterator.get_state()  # pyright: ignore[reportAttributeAccessIssue]
        # The running sums make a mid-epoch resume log the same means as an unbroken run.
        sums = {"epoch": epoch_sums, "epoch_steps": epoch_steps}
        sums.update(window=window_sums, window_steps=window_steps)
        return {"batches": consumed, "iterator": state, "sums": sums}

    def save() -> Path | None:
        nonlocal last_ckpt
        if ckpt_dir is None:
            return None
        data_state = current_data_state()
        if not multiprocess:
            last_ckpt = save_checkpoint(
                ckpt_dir, runner.state(), data_state=data_state, config=config, keep=keep
            )
            return last_ckpt
        # Every process's iterator state goes into process 0's file (a collective, so
        # every process saves at the same points), then all wait until the file exists.
        data_state["iterators"] = allgather_json(data_state["iterator"])
        if jax.process_index() == 0:
            save_checkpoint(
                ckpt_dir, runner.state(), data_state=data_state, config=config, keep=keep
            )
        multihost_utils.sync_global_devices(f"zoo.train.fit: checkpoint {step_number}")
        last_ckpt = checkpoint_path(ckpt_dir, step_number)
        return last_ckpt

    def any_process_signalled() -> bool:
        if not multiprocess:
            return signals.received is not None
        flags = multihost_utils.process_allgather(np.array([signals.received is not None]))
        return bool(np.any(flags))

    def pull(n: int) -> list[Batch]:
        assert iterator is not None
        out = []
        for _ in range(n):
            try:
                out.append(next(iterator))
            except StopIteration:
                raise ValueError(
                    f"data ran out after {consumed + len(out)} batches, before the "
                    f"{total} that {num_epochs} epochs of {steps_per_epoch} steps need: "
                    "make it longer (an endless dataset with `steps_per_epoch`)"
                ) from None
        return out

    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm comes with the `recipes` extra
            tqdm = None
        if tqdm is not None:
            bar = tqdm(total=total, initial=consumed, unit="step", dynamic_ncols=True)

    # Per-epoch and per-window running sums, on the host in float64.
    saved_sums = data_state.get("sums") or {}
    epoch_sums: dict[str, float] = {}
    epoch_steps = 0
    window_sums: dict[str, float] = dict(saved_sums.get("window", {}))
    window_steps = int(saved_sums.get("window_steps", 0))
    untimed_steps = 0
    last_postfix = 0.0
    epoch_t0 = time.perf_counter()

    def emit(record: dict[str, Any]) -> None:
        if log is not None:
            log.write(record)
        else:
            history.append(record)

    def process(pending: tuple[Metrics, int, int, int]) -> None:
        """Wait for one dispatch's metrics, check them, log them."""
        nonlocal epoch_steps, window_steps, window_sums, last_postfix
        metrics, n, first, epoch = pending
        # "loss" first, so records and the progress bar lead with it.
        names = ["loss"] + sorted(k for k in metrics if k != "loss")
        values = {k: np.atleast_1d(np.asarray(metrics[k], np.float64)) for k in names}
        bad = np.flatnonzero(~np.isfinite(values["loss"]))
        if bad.size:
            i = int(bad[0])
            raise NonFiniteLossError(first + i + 1, epoch + 1, float(values["loss"][i]), last_ckpt)
        for i in range(n):
            for k, v in values.items():
                epoch_sums[k] = epoch_sums.get(k, 0.0) + float(v[i])
                window_sums[k] = window_sums.get(k, 0.0) + float(v[i])
            epoch_steps += 1
            window_steps += 1
            s = first + i + 1
            if log_every is not None and s % log_every == 0:
                means = {k: v / window_steps for k, v in window_sums.items()}
                emit({"kind": "step", "step": s, "epoch": epoch + 1, **means})
                window_sums, window_steps = {}, 0
        if bar is not None:
            bar.update(n)
            now = time.perf_counter()
            if now - last_postfix > 0.25:
                last_postfix = now
                timed = epoch_steps - untimed_steps
                rate = timed * (batch_size or 0) / max(now - epoch_t0, 1e-9)
                bar.set_postfix(loss=f"{values['loss'][-1]:.4g}", samples_s=f"{rate:.4g}")

    def stop(pending, epoch: int, path: Path | None = None) -> None:
        """Finish the in-flight dispatch, save (unless `path` was just saved), and raise
        `TrainingInterrupted`."""
        if pending is not None:
            process(pending)
        if path is None:
            path = save()
        name = signal.Signals(signals.received or signal.SIGINT).name
        in_epoch = consumed - epoch * steps_per_epoch
        where = f"step {step_number} (epoch {epoch + 1}, batch {in_epoch} of {steps_per_epoch})"
        if path is None:
            message = f"training interrupted by {name} at {where}; no workdir, nothing saved"
        else:
            message = (
                f"training interrupted by {name} at {where}; saved checkpoint {path}. "
                f"To resume, run fit(..., resume=True) with workdir={path.parent.parent} "
                "(recipes: rerun the same command with --resume)"
            )
        if bar is not None:
            bar.close()
        raise TrainingInterrupted(message, step_number, path)

    try:
        for epoch in range(consumed // steps_per_epoch, num_epochs):
            epoch_start = epoch * steps_per_epoch
            if consumed > epoch_start:  # resumed mid-epoch
                epoch_sums = dict(saved_sums.get("epoch", {}))
                epoch_steps = int(saved_sums.get("epoch_steps", 0))
            else:
                epoch_sums, epoch_steps = {}, 0
            # Throughput counts only the steps timed in this process.
            untimed_steps = epoch_steps
            epoch_t0 = time.perf_counter()
            if bar is not None:
                bar.set_description(f"epoch {epoch + 1}/{num_epochs}")
            pending = None
            while consumed < epoch_start + steps_per_epoch:
                left = epoch_start + steps_per_epoch - consumed
                n = K if left >= K else 1
                if iterator is None:
                    metrics = runner.generated(n)
                else:
                    batches = pull(n)
                    stacked = _stack(batches) if n > 1 else None
                    if stacked is not None:
                        metrics = runner.scan(stacked)
                    elif n == 1:
                        metrics = runner.single(batches[0])
                    else:  # batches of different shapes cannot be stacked: one by one
                        ms = [runner.single(b) for b in batches]
                        metrics = {k: jnp.stack([m[k] for m in ms]) for k in ms[0]}
                    if batch_size is None:
                        batch_size = runner.batch_size
                first = step_number
                consumed += n
                step_number += n
                # Check the previous dispatch while this one runs: the host never waits
                # for the device except to read a loss that is already a step old.
                if pending is not None:
                    process(pending)
                pending = (metrics, n, first, epoch)
                # Several processes must stop at the same step: they agree at epoch ends.
                if signals.received is not None and not multiprocess:
                    stop(pending, epoch)
            if pending is not None:
                process(pending)
            train_time = time.perf_counter() - epoch_t0

            record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": step_number}
            record.update({f"train_{k}": v / max(epoch_steps, 1) for k, v in epoch_sums.items()})
            if eval_fn is not None:
                t = time.perf_counter()
                ts = runner.state()
                results = eval_fn(eqx.nn.inference_mode(ts.model), ts.model_state)
                record.update({k: float(v) for k, v in results.items()})
                record["eval_time_s"] = time.perf_counter() - t
            record["train_time_s"] = train_time
            timed = epoch_steps - untimed_steps
            record["samples_per_s"] = timed * (batch_size or 0) / max(train_time, 1e-9)
            emit(record)
            if bar is not None:
                summary = ", ".join(
                    f"{k} {v:.4g}"
                    for k, v in record.items()
                    if isinstance(v, float) and not k.endswith("_s") and math.isfinite(v)
                )
                bar.write(f"epoch {epoch + 1}/{num_epochs}: {summary}")
            path = save()
            if epoch + 1 < num_epochs and any_process_signalled():
                stop(None, epoch + 1, path)
    finally:
        if bar is not None:
            bar.close()
    return runner.state(), list(history)
