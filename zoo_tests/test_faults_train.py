"""Fault injection for training: damaged checkpoints, torn metrics, two runs in one folder,
an unwritable compilation cache, bad labels. Every loop is bounded in count and time."""

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import _train_helpers as h
import numpy as np
import pytest

import zoo.train as zt

HELPER = str(Path(__file__).with_name("_train_helpers.py"))
TESTS = str(Path(__file__).parent)


def _trained(steps: int = 1):
    train_state, step = h.setup()
    for batch in h.dataset():
        if int(train_state.step) == steps:
            break
        train_state, _ = step(train_state, batch)
    return train_state


def _arrays_equal(a, b) -> None:
    for x, y in zip(h.arrays_of(a), h.arrays_of(b), strict=True):
        np.testing.assert_array_equal(x, y)


# --- checksums (finding 6) ----------------------------------------------------------------


def test_a_flipped_byte_anywhere_is_an_error_naming_the_file(tmp_path):
    path = zt.save_checkpoint(tmp_path, _trained())
    good = path.read_bytes()
    like, _ = h.setup()
    header_end = 8 + 8 + 32 + struct.unpack("<Q", good[8:16])[0]
    # Positions in every part: magic, length, header digest, header, and 12 in the arrays.
    rng = np.random.default_rng(0)
    payload = rng.integers(header_end, len(good), 12).tolist()
    for pos in [0, 9, 20, 60, header_end - 5, *payload, len(good) - 1]:
        damaged = bytearray(good)
        damaged[pos] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(zt.CheckpointCorruptError) as info:
            zt.restore_checkpoint(path, like)
        assert str(path) in str(info.value), pos
        with pytest.raises(zt.CheckpointCorruptError):
            zt.verify_checkpoint(path)
    path.write_bytes(good)
    assert zt.verify_checkpoint(path)["payload_bytes"] == len(good) - header_end


def _as_version_1(path: Path) -> None:
    """Rewrite a checkpoint in the layout of version 1: no digests."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[48 : 48 + length])
    payload = data[48 + length :]
    for k in ("payload_bytes", "payload_sha256"):
        del header[k]
    header["version"] = 1
    raw = json.dumps(header).encode()
    path.write_bytes(b"ZOOCKPT1" + struct.pack("<Q", len(raw)) + raw + payload)


def test_a_checkpoint_without_checksum_restores_with_a_warning(tmp_path):
    state = _trained()
    path = zt.save_checkpoint(tmp_path, state)
    _as_version_1(path)
    like, _ = h.setup()
    with pytest.warns(UserWarning, match="no checksum"):
        restored, header = zt.restore_checkpoint(path, like)
    assert header["version"] == 1
    _arrays_equal(restored, state)


# --- damaged latest checkpoint (finding 7) ------------------------------------------------


def _damage(path: Path, how: str) -> Path:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "bad header":
        path.write_bytes(data[:48] + b"{not json" + data[57:])
    elif how == "huge header length":  # today a MemoryError
        path.write_bytes(data[:8] + struct.pack("<Q", 2**62) + data[16:])
    elif how == "stray file":  # a newer name that is not a checkpoint at all
        path = path.with_name("step_000000099.ckpt")
        path.write_text("notes about the run\n")
    return path


DAMAGE = ["truncated", "empty", "bad header", "huge header length", "stray file"]


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, how):
    states = [_trained(1), _trained(2)]
    saved = [zt.save_checkpoint(tmp_path, s) for s in states]
    bad = _damage(saved[-1], how)
    # A stray newer file leaves the real latest checkpoint intact.
    want = 1 if how == "stray file" else 0
    like, _ = h.setup()
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match=f"{bad.name}.*damaged.*restored {saved[want].name}"):
        restored, header = zt.restore_checkpoint(tmp_path, like)
    assert time.perf_counter() - t0 < 30
    assert header["step"] == want + 1
    _arrays_equal(restored, states[want])
    # The damaged file alone is an error naming it.
    with pytest.raises(zt.CheckpointCorruptError, match=bad.name):
        zt.restore_checkpoint(bad, like)


def test_no_intact_checkpoint_is_an_error_naming_each(tmp_path):
    a = _damage(zt.save_checkpoint(tmp_path, _trained(1)), "truncated")
    b = _damage(zt.save_checkpoint(tmp_path, _trained(2)), "empty")
    like, _ = h.setup()
    with pytest.raises(zt.CheckpointCorruptError, match="none of its 2") as info:
        zt.restore_checkpoint(tmp_path, like)
    assert a.name in str(info.value) and b.name in str(info.value)


def _fit(workdir: Path, num_epochs: int, **kwargs: Any):
    train_state, step = h.setup()
    return zt.fit(
        train_state,
        step,
        h.dataset(),
        num_epochs=num_epochs,
        steps_per_epoch=h.STEPS_PER_EPOCH,
        workdir=workdir,
        log_every=4,
        progress=False,
        **kwargs,
    )


def test_fit_resumes_past_a_damaged_latest_checkpoint(tmp_path):
    _fit(tmp_path, 2)
    ckpts = zt.list_checkpoints(tmp_path / "checkpoints")
    assert [int(p.name[5:14]) for p in ckpts] == [8, 16]
    _damage(ckpts[-1], "truncated")
    with pytest.warns(UserWarning, match="step_000000016.ckpt is damaged"):
        resumed, history = _fit(tmp_path, 3, resume=True)
    full, full_history = _fit(tmp_path / "full", 3)
    _arrays_equal(resumed, full)
    assert [r["step"] for r in history] == [r["step"] for r in full_history]
    # The damaged file is kept aside, out of the list of checkpoints.
    assert (tmp_path / "checkpoints" / "step_000000016.ckpt.damaged").exists()
    names = [p.name for p in zt.list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["step_000000008.ckpt", "step_000000016.ckpt", "step_000000024.ckpt"]
    zt.verify_checkpoint(tmp_path / "checkpoints" / "step_000000016.ckpt")


# --- torn metrics (finding 8) -------------------------------------------------------------


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path):
    _fit(tmp_path, 1)
    metrics = tmp_path / "metrics.jsonl"
    before = zt.read_metrics(metrics)
    with open(metrics, "a") as f:
        f.write('{"kind": "step", "step": 12, "lo')  # what a crash mid-append leaves
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed, history = _fit(tmp_path, 2, resume=True)
    torn = [w for w in caught if "torn last record" in str(w.message)]
    assert len(torn) == 1 and f"{metrics}:{len(before) + 1}" in str(torn[0].message)
    _, full_history = _fit(tmp_path / "full", 2)
    assert [r["step"] for r in history] == [r["step"] for r in full_history]
    lines = metrics.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [r["step"] for r in full_history]


def test_a_bad_metrics_line_before_the_last_is_an_error_naming_it(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n{"step": 2, \n{"step": 3}\n')
    with pytest.raises(ValueError, match=f"{metrics}:2 is not valid JSON"):
        zt.read_metrics(metrics)
    metrics.write_text('{"step": 1}\n{"step": 2}\n[3]')  # last, but whole and not a record
    with pytest.warns(UserWarning, match=f"{metrics}:3: dropped a torn"):
        assert zt.read_metrics(tmp_path) == [{"step": 1}, {"step": 2}]


# --- one writer per run folder (finding 9) ------------------------------------------------

_HOLD = """
import sys, time
sys.path.insert(0, {tests!r})
import _train_helpers as h
import zoo.train as zt

def on_index(i):
    if i == 2:
        print("READY", flush=True)

train_state, step = h.setup()
zt.fit(train_state, step, h.dataset(delay=0.2, on_index=on_index), num_epochs=50,
       steps_per_epoch=h.STEPS_PER_EPOCH, workdir={workdir!r}, progress=False)
"""


def _spawn(code: str) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    timer = threading.Timer(timeout, proc.kill)  # a stuck child ends the wait
    timer.start()
    try:
        for line in proc.stdout:
            if line.strip() == marker:
                return
            if time.monotonic() > deadline:
                break
    finally:
        timer.cancel()
    proc.kill()
    raise AssertionError(f"no {marker!r} from the subprocess: {proc.stderr.read()}")  # pyright: ignore


def test_a_second_run_in_the_same_folder_fails_at_once_naming_the_holder(tmp_path):
    proc = _spawn(_HOLD.format(tests=TESTS, workdir=str(tmp_path)))
    try:
        _wait_for(proc, "READY")
        t0 = time.perf_counter()
        # (RuntimeError: before the fix, the second run trained into the same folder.)
        with pytest.raises(RuntimeError, match=f"PID {proc.pid}") as info:
            _fit(tmp_path, 1, resume=True)
        assert time.perf_counter() - t0 < 10
        assert isinstance(info.value, zt.RunFolderLockedError)
        assert info.value.pid == proc.pid and "\n" not in str(info.value)
        # SIGKILL leaves no stale lock: the folder is free as soon as the holder is gone.
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with zt.lock_run_folder(tmp_path):
            pass
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_writer_never_deletes_the_temporary_file_of_a_live_one(tmp_path):
    # The helper saves step 1, then stalls while its step-2 file is still temporary.
    proc = subprocess.Popen(
        [sys.executable, HELPER, "sigkill", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    try:
        _wait_for(proc, "WRITING")
        # The live writer's temporary file, whatever the naming scheme.
        (theirs,) = [p for p in tmp_path.iterdir() if p.name.startswith(".step_")]
        state = _trained(3)
        saver = threading.Thread(target=zt.save_checkpoint, args=(tmp_path, state))
        saver.start()
        saver.join(timeout=2.0)
        # Our save waits for the live writer instead of clearing its file.
        assert saver.is_alive() and theirs.exists()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        saver.join(timeout=60)
        assert not saver.is_alive()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # Now the writer is dead, its leftover is cleared by the next save.
    assert not theirs.exists()
    names = [p.name for p in zt.list_checkpoints(tmp_path)]
    assert names == ["step_000000001.ckpt", "step_000000003.ckpt"]


def test_the_lock_is_reentrant_in_a_process_but_not_across_threads(tmp_path):
    with zt.lock_run_folder(tmp_path):
        with zt.lock_run_folder(tmp_path):  # a recipe holds it while fit takes it again
            pass
        errors = []

        def other():
            try:
                with zt.lock_run_folder(tmp_path):
                    pass
            except zt.RunFolderLockedError as e:
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join(timeout=10)
        assert len(errors) == 1 and "another thread of this process" in str(errors[0])
    assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())


# --- compilation cache (finding 13) -------------------------------------------------------


def test_an_unwritable_zoo_home_disables_the_compilation_cache_with_one_warning(
    tmp_path, monkeypatch
):
    import jax

    # Root ignores file modes, so "read-only" is a ZOO_HOME below a plain file: creating
    # the cache folder fails as on a read-only mount.
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "file" / "zoo"))
    before = getattr(jax.config, "jax_compilation_cache_dir")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert zt.enable_compilation_cache() is None
    assert len(caught) == 1 and "compilation cache disabled" in str(caught[0].message)
    assert str(tmp_path / "file" / "zoo" / "jax") in str(caught[0].message)
    assert getattr(jax.config, "jax_compilation_cache_dir") == before


# --- messages: a non-finite loss from bad labels ------------------------------------------


def _unchecked_cross_entropy(model, batch, key):
    """A user's own loss, without label checks (zoo's make a bad label's loss NaN)."""
    import jax
    import optax

    logits = jax.vmap(model)(batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def _label_batches():
    x, y = h.arrays()
    return [{"x": x[i * 8 : i * 8 + 8], "y": y[i * 8 : i * 8 + 8].copy()} for i in range(4)]


def test_labels_outside_the_classes_are_named_instead_of_learning_rate_advice(getkey):
    import optax

    import zoo

    model = zoo.MLP(in_size=h.FEATURES, num_classes=2, width=8, depth=1, key=getkey())
    optimizer = optax.sgd(1e-2)
    train_state = zt.init_train_state(model, optimizer, key=getkey())
    step = zt.TrainStep(zt.stateless(_unchecked_cross_entropy), optimizer)
    batches = _label_batches()
    batches[2]["y"][3] = 2  # one class too far: cross-entropy takes a logit that is not there
    with pytest.raises(zt.NonFiniteLossError) as info:
        zt.fit(train_state, step, batches, progress=False)
    message = str(info.value)
    assert info.value.step == 3
    assert "'y' range from 0 to 2, outside [0, 2)" in message
    assert "learning rate" not in message
    # Inputs that are not finite are named the same way.
    batches[2]["y"][3] = 1
    batches[2]["x"] = batches[2]["x"].copy()
    batches[2]["x"][0, :2] = np.nan
    with pytest.raises(zt.NonFiniteLossError, match="'x' holds 2 NaN") as info:
        zt.fit(train_state, step, batches, progress=False, steps_per_dispatch=2)
    assert info.value.step == 3 and "learning rate" not in str(info.value)


@pytest.mark.parametrize("label, seen", [(-1, "from -1 to 1"), (2, "from 0 to 2")])
def test_zoos_loss_stops_fit_at_a_bad_label_and_names_it(getkey, tmp_path, label, seen):
    """-1 ("ignore") is the label optax's cross-entropy reads silently as the last class."""
    import optax

    import zoo

    model = zoo.MLP(in_size=h.FEATURES, num_classes=2, width=8, depth=1, key=getkey())
    optimizer = optax.sgd(1e-2)
    train_state = zt.init_train_state(model, optimizer, key=getkey())
    step = zt.TrainStep(zt.classification_loss(input_key="x", label_key="y"), optimizer)
    batches = _label_batches()
    batches[1]["y"][0] = label
    with pytest.raises(zt.NonFiniteLossError) as info:
        zt.fit(train_state, step, batches, workdir=tmp_path, progress=False)
    assert info.value.step == 2
    assert f"labels 'y' range {seen}, outside [0, 2)" in str(info.value)
    assert zt.list_checkpoints(tmp_path / "checkpoints") == []


def test_a_failed_check_inside_the_step_is_its_own_message(getkey, tmp_path, caplog):
    import equinox as eqx
    import jax.numpy as jnp
    import optax

    import zoo

    def checked(model, batch, key):
        y = eqx.error_if(batch["y"], jnp.max(batch["y"]) >= 2, "labels must be below 2")
        return _unchecked_cross_entropy(model, {**batch, "y": y}, key)

    model = zoo.MLP(in_size=h.FEATURES, num_classes=2, width=8, depth=1, key=getkey())
    optimizer = optax.sgd(1e-2)
    train_state = zt.init_train_state(model, optimizer, key=getkey())
    step = zt.TrainStep(zt.stateless(checked), optimizer)
    batches = _label_batches()
    batches[3]["y"][0] = 5
    # (ValueError: before, pages of XLA callback traceback in a JaxRuntimeError.)
    with pytest.raises(ValueError, match="^labels must be below 2 \\(after step") as info:
        zt.fit(train_state, step, batches, num_epochs=1, workdir=tmp_path, progress=False)
    assert isinstance(info.value, zt.StepCheckError) and "\n" not in str(info.value)
    assert zt.list_checkpoints(tmp_path / "checkpoints") == []
    # Nor is JAX's copy of the callback's traceback logged to stderr.
    assert not [r for r in caplog.records if r.name == "jax._src.callback"]
