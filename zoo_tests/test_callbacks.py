"""fit's callbacks: the order they are called in, user callbacks, replacing defaults,
plain progress lines off a terminal, checkpoints that survive a failing evaluation."""

import io
import json
from typing import Any

import _train_helpers as h
import numpy as np
import pytest

import zoo.train as zt

KW: dict[str, Any] = dict(steps_per_epoch=h.STEPS_PER_EPOCH, steps_per_dispatch=3, progress=False)


class Recorder(zt.Callback):
    def __init__(self):
        self.calls: list[tuple] = []
        self.state = {"n": 0}

    def on_fit_start(self, ctx):
        self.calls.append(("fit_start", ctx.step))
        self.state = ctx.restored_state(self) or {"n": 0}

    def on_epoch_start(self, ctx):
        self.calls.append(("epoch_start", ctx.epoch))

    def on_dispatch_end(self, ctx, metrics):
        assert list(metrics)[0] == "loss" and metrics["loss"].dtype == np.float64
        self.calls.append(("dispatch", ctx.step, len(metrics["loss"])))
        self.state["n"] += len(metrics["loss"])

    def on_record(self, ctx, record):
        self.calls.append(("record", record["kind"], record["step"]))

    def on_epoch_end(self, ctx):
        self.calls.append(("epoch_end", ctx.epoch, ctx.checkpoint is not None))
        ctx.record["steps_seen"] = self.state["n"]

    def on_interrupt(self, ctx):
        self.calls.append(("interrupt", ctx.step))

    def on_fit_end(self, ctx):
        self.calls.append(("fit_end", ctx.step))

    def state_dict(self):
        return dict(self.state)


def test_callback_order_and_records(tmp_path):
    train_state, step = h.setup()
    rec = Recorder()
    _, history = zt.fit(
        train_state,
        step,
        h.dataset(),
        num_epochs=2,
        workdir=tmp_path,
        log_every=4,
        callbacks=[rec],
        **KW,
    )
    dispatches = [c for c in rec.calls if c[0] == "dispatch"]
    # 8 steps per epoch, 3 per dispatch: 3, 3, then a tail of one by one.
    assert [c[2] for c in dispatches] == [3, 3, 1, 1] * 2
    assert [c[1] for c in dispatches] == [3, 6, 7, 8, 11, 14, 15, 16]
    assert rec.calls[0] == ("fit_start", 0) and rec.calls[-1] == ("fit_end", 16)
    names = [c[0] for c in rec.calls]
    assert names.count("epoch_start") == names.count("epoch_end") == 2
    # The epoch's checkpoint is saved before the user's epoch-end callback runs.
    assert ("epoch_end", 0, True) in rec.calls
    epochs = [r for r in history if r["kind"] == "epoch"]
    assert [r["steps_seen"] for r in epochs] == [8, 16]
    assert [c[1:] for c in rec.calls if c[0] == "record"] == [
        (r["kind"], r["step"]) for r in history
    ]


def test_request_stop_saves_and_resumes_callback_state(tmp_path):
    class StopAt(zt.Callback):
        def on_dispatch_end(self, ctx, metrics):
            if ctx.step >= 11:
                ctx.request_stop("StopAt")

    train_state, step = h.setup()
    rec = Recorder()
    with pytest.raises(zt.TrainingInterrupted) as info:
        zt.fit(
            train_state,
            step,
            h.dataset(),
            num_epochs=3,
            workdir=tmp_path,
            callbacks=[rec, StopAt()],
            **KW,
        )
    err = info.value
    assert "interrupted by StopAt at step 14 (epoch 2, batch 6 of 8)" in str(err)
    assert err.step == 14 and err.checkpoint == tmp_path / "checkpoints" / "step_000000014.ckpt"
    assert ("interrupt", 14) in rec.calls and rec.calls[-1] == ("fit_end", 14)
    assert err.checkpoint is not None
    header = zt.read_checkpoint_header(err.checkpoint)
    assert header["data_state"]["callbacks"]["Recorder"] == {"n": 14}
    # Resumed: the callback's saved state comes back; the run finishes.
    train_state, step = h.setup()
    again = Recorder()
    out, history = zt.fit(
        train_state,
        step,
        h.dataset(),
        num_epochs=3,
        workdir=tmp_path,
        resume=True,
        callbacks=[again],
        **KW,
    )
    assert int(out.step) == 24 and again.calls[0] == ("fit_start", 14)
    assert [r["steps_seen"] for r in history if r["kind"] == "epoch"] == [8, 16, 24]


def test_replacing_a_default_callback(tmp_path):
    train_state, step = h.setup()
    zt.fit(
        train_state,
        step,
        h.dataset(),
        num_epochs=3,
        workdir=tmp_path,
        callbacks=[zt.Checkpointer(keep=1)],
        **KW,
    )
    assert [p.name for p in zt.list_checkpoints(tmp_path / "checkpoints")] == [
        "step_000000024.ckpt"
    ]
    with pytest.raises(ValueError, match="keep must be at least 1"):
        zt.Checkpointer(keep=0)
    with pytest.raises(ValueError, match="needs fit\\(\\.\\.\\., workdir"):
        zt.fit(train_state, step, h.dataset(), callbacks=[zt.Checkpointer()], **KW)


def test_failing_evaluation_keeps_the_epochs_checkpoint(tmp_path):
    calls = []

    def eval_fn(model, model_state):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation broke")
        return {"eval_x": 1.0}

    train_state, step = h.setup()
    with pytest.raises(RuntimeError, match="evaluation broke"):
        zt.fit(
            train_state, step, h.dataset(), num_epochs=3, workdir=tmp_path, eval_fn=eval_fn, **KW
        )
    assert zt.latest_checkpoint(tmp_path / "checkpoints") == (
        tmp_path / "checkpoints" / "step_000000016.ckpt"
    )
    # Resuming goes on from there: epoch 2's checkpoint, epoch 3 still to train.
    train_state, step = h.setup()
    out, history = zt.fit(
        train_state,
        step,
        h.dataset(),
        num_epochs=3,
        workdir=tmp_path,
        resume=True,
        eval_fn=lambda m, s: {"eval_x": 2.0},
        **KW,
    )
    assert int(out.step) == 24
    assert [r.get("eval_x") for r in history if r["kind"] == "epoch"] == [1.0, 2.0]


def test_progress_plain_lines_off_a_terminal():
    out = io.StringIO()
    train_state, step = h.setup()
    kwargs = {**KW, "progress": True}
    zt.fit(
        train_state,
        step,
        h.dataset(),
        num_epochs=2,
        callbacks=[zt.ProgressBar(5, file=out)],
        **kwargs,
    )
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    steps = [line for line in lines if " step " in line]
    # A line at the first dispatch that reaches each multiple of 5: steps 6, 11, 15.
    assert [line.split(" step ")[1].split(":")[0] for line in steps] == ["6/16", "11/16", "15/16"]
    summaries = [line for line in lines if line.startswith("epoch ") and " step " not in line]
    assert len(summaries) == 2 and "train_loss" in summaries[0]
    with pytest.raises(ValueError, match="every"):
        zt.ProgressBar(0)


def test_metrics_log_writes_to_jsonl_and_its_state_is_saved(tmp_path):
    train_state, step = h.setup()
    _, history = zt.fit(
        train_state, step, h.dataset(), num_epochs=1, workdir=tmp_path, log_every=3, **KW
    )
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == history
    assert [r["step"] for r in history if r["kind"] == "step"] == [3, 6]
    latest = zt.latest_checkpoint(tmp_path / "checkpoints")
    assert latest is not None
    header = zt.read_checkpoint_header(latest)
    sums = header["data_state"]["callbacks"]["MetricsLog"]
    assert sums["window_steps"] == 2 and sums["epoch_steps"] == 8
    with pytest.raises(ValueError, match="log_every"):
        zt.MetricsLog(log_every=0)
