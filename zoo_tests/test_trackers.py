"""Metric writers, read back with the real readers: TensorBoard's EventAccumulator and the
W&B offline run folder."""

import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import _train_helpers as h
import numpy as np
import pytest

import zoo.train as zt


def _fit(workdir, num_epochs, *, resume=False, trackers=("jsonl", "tensorboard"), **kwargs):
    train_state, step = h.setup()
    x, y = h.arrays()
    evaluator = zt.Evaluator(
        zt.classification_metrics(input_key="x", label_key="y"), {"x": x, "y": y}, batch_size=32
    )
    return zt.fit(
        train_state,
        step,
        h.dataset(),
        num_epochs=num_epochs,
        steps_per_epoch=h.STEPS_PER_EPOCH,
        steps_per_dispatch=2,
        eval_fn=evaluator,
        workdir=workdir,
        config={"lr": 1e-2},
        resume=resume,
        keep=None,
        log_every=2,
        progress=False,
        trackers=trackers,
        **kwargs,
    )


def _scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    events = acc.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


def _series(history, kind, name):
    return [r["step"] for r in history if r["kind"] == kind], [
        r[name] for r in history if r["kind"] == kind
    ]


def test_tensorboard_loss_and_accuracy_series(tmp_path):
    _, history = _fit(tmp_path, 2)
    logdir = tmp_path / "tensorboard"
    assert list(logdir.glob("events.out.tfevents.*"))
    for kind, tag in [("step", "loss"), ("step", "accuracy"), ("epoch", "eval_accuracy")]:
        steps, values = _scalars(logdir, tag)
        want_steps, want_values = _series(history, kind, tag)
        assert steps == want_steps
        np.testing.assert_allclose(values, want_values, rtol=1e-6)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert "config" in " ".join(acc.Tags()["tensors"])


def test_tensorboard_resume_never_goes_backwards(tmp_path):
    _, full = _fit(tmp_path / "full", 3)
    # An interrupted run: it trained 2 epochs (and logged them) but its last checkpoint is
    # from epoch 1 (the process died before the next one landed).
    run = tmp_path / "run"
    _fit(run, 2)
    checkpoints = zt.list_checkpoints(run / "checkpoints")
    checkpoints[-1].unlink()
    _, resumed = _fit(run, 3, resume=True)
    steps, values = _scalars(run / "tensorboard", "loss")
    want_steps, want_values = _series(full, "step", "loss")
    assert steps == want_steps  # strictly increasing, no duplicates left by the first run
    np.testing.assert_allclose(values, want_values, rtol=1e-6)
    assert _series(resumed, "step", "loss")[0] == want_steps


def _wandb_records(path: Path) -> list[Any]:
    """The records of a W&B transaction log (`run-*.wandb`), parsed with wandb's own
    protobuf types. The framing is LevelDB's log format, as wandb writes it: a 7-byte file
    header, then 32 KiB blocks of chunks, each `crc32 (4) | length (2) | type (1) | data`,
    a record split over chunks FIRST (2), MIDDLE (3), LAST (4), or whole in one FULL (1)."""
    from wandb.proto import wandb_internal_pb2

    data, block, header = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B", data[:header]
    pos, parts, records = header, b"", []
    while pos + header <= len(data):
        if block - pos % block < header:  # too little room for a chunk: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        if pos + header + length > len(data):  # still being written
            break
        parts += data[pos + header : pos + header + length]
        pos += header + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()  # pyright: ignore[reportAttributeAccessIssue]
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def _wandb_summary(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """`(summary, config)` of an offline run folder: `files/wandb-summary.json` where wandb
    writes one, else the summary and config updates of its transaction log, in order."""
    summary_file = run_dir / "files" / "wandb-summary.json"
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    log = next(run_dir.glob("run-*.wandb"))
    # wandb's service process may still be writing the log when `finish()` returns: the run
    # is complete once its exit record is there.
    deadline = time.monotonic() + 60

    def finished(records):
        return bool(records) and records[-1].WhichOneof("record_type") == "exit"

    records = _wandb_records(log)
    while not finished(records) and time.monotonic() < deadline:
        time.sleep(0.2)
        records = _wandb_records(log)
    assert finished(records), f"the W&B run in {run_dir} never finished writing"
    for record in records:
        kind = record.WhichOneof("record_type")
        items = record.summary.update if kind == "summary" else record.config.update
        if kind in ("summary", "config"):
            target = summary if kind == "summary" else config
            for item in items:
                key = item.key or ".".join(item.nested_key)
                target[key] = json.loads(item.value_json)
    if summary_file.exists():
        summary = json.loads(summary_file.read_text())
    return summary, config


def test_wandb_offline_summary(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    _, history = _fit(tmp_path, 2, trackers=("jsonl", "wandb"))
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))
    summary, config = _wandb_summary(runs[0])
    last_epoch = [r for r in history if r["kind"] == "epoch"][-1]
    last_step = [r for r in history if r["kind"] == "step"][-1]
    for name in ("train_loss", "train_accuracy", "eval_accuracy", "eval_loss"):
        assert summary[name] == pytest.approx(last_epoch[name], rel=1e-6)
    assert summary["loss"] == pytest.approx(last_step["loss"], rel=1e-6)
    assert summary["_step"] == last_epoch["step"] == 16
    assert config["lr"] == 1e-2


def test_jsonl_writer_and_make_writers(tmp_path, monkeypatch):
    writer = zt.JsonlWriter(tmp_path / "m.jsonl")
    assert isinstance(writer, zt.MetricWriter)
    writer.write_scalars(3, {"loss": 0.5, "bad": float("nan")})
    writer.close()
    assert zt.read_metrics(tmp_path / "m.jsonl") == [{"step": 3, "loss": 0.5, "bad": None}]
    # Resuming at step 2 drops what an interrupted run wrote after it.
    writer.start(2)
    writer.close()
    assert zt.read_metrics(tmp_path / "m.jsonl") == []

    writers = zt.make_writers(["jsonl", "tensorboard"], tmp_path)
    assert [type(w) for w in writers] == [zt.JsonlWriter, zt.TensorBoardWriter]
    assert isinstance(writers[1], zt.TensorBoardWriter)
    assert writers[1].logdir == tmp_path / "tensorboard"
    with pytest.raises(ValueError, match=r"unknown tracker\(s\) \['csv'\]"):
        zt.make_writers(["csv"], tmp_path)
    with pytest.raises(ValueError, match="twice"):
        zt.make_writers(["jsonl", "jsonl"], tmp_path)
    # A missing optional package: one line naming the extra to install.
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r'pip install "equinox-zoo\[track\]"') as info:
        zt.make_writers(["tensorboard"], tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="pass `workdir`"):
        train_state, step = h.setup()
        zt.fit(train_state, step, h.dataset(), steps_per_epoch=2, trackers=["tensorboard"])


def test_a_writer_object_as_tracker(tmp_path):
    class Recorder:
        def __init__(self):
            self.scalars: list[tuple[int, dict[str, Any]]] = []
            self.config = None
            self.closed = False

        def write_scalars(self, step, scalars):
            self.scalars.append((step, dict(scalars)))

        def write_config(self, config):
            self.config = config

        def close(self):
            self.closed = True

    recorder = Recorder()
    _, history = _fit(tmp_path, 1, trackers=("jsonl", recorder))
    assert recorder.closed and recorder.config == {"lr": 1e-2}
    assert [s for s, _ in recorder.scalars] == [r["step"] for r in history]
    epoch = recorder.scalars[-1][1]
    assert "kind" not in epoch and epoch["epoch"] == 1.0 and "eval_accuracy" in epoch
