import json
import logging
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import _train_helpers as h
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import zoo.train as zt

HELPER = str(Path(__file__).with_name("_train_helpers.py"))


def _batches(k: int, seed: int = 0):
    it = iter(h.dataset(seed))
    return [next(it) for _ in range(k)]


def _stack(batches):
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def _assert_trees_equal(a, b, exact=True):
    la, lb = h.arrays_of(a), h.arrays_of(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


# --- steps --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stateless", "stateful"])
def test_scan_equals_single_steps(kind):
    train_state, step = h.setup(kind)
    batches = _batches(5)
    single = train_state
    losses = []
    for b in batches:
        single, m = step(single, b)
        losses.append(float(m["loss"]))
    fused, metrics = step.scan(train_state, _stack(batches))
    assert metrics["loss"].shape == (5,)
    assert metrics["accuracy"].shape == (5,)
    np.testing.assert_allclose(np.asarray(metrics["loss"]), losses, rtol=1e-5)
    assert int(fused.step) == int(single.step) == 5
    _assert_trees_equal(fused, single, exact=False)
    # The train state passed in is untouched (public calls do not donate).
    assert int(train_state.step) == 0
    if kind == "stateful":
        # BatchNorm's running statistics moved, identically in both.
        assert fused.model_state is not None
        _assert_trees_equal(fused.model_state, single.model_state, exact=False)


def _ou_batch(key):
    """A noisy AR(1) sequence batch, generated inside JAX (like the OU task)."""
    noise = jr.normal(key, (8, 6, 1))
    xs = jnp.cumsum(noise, axis=1) * 0.1
    return {"x": xs[:, :-1], "y": xs[:, 1:]}


def test_scan_generated_equals_single_steps(getkey):
    model = eqx.nn.MLP(1, 1, 8, 1, key=getkey())

    def loss(model, batch, key):
        pred = jax.vmap(jax.vmap(model))(batch["x"])
        return jnp.mean((pred - batch["y"]) ** 2)

    optimizer = optax.sgd(0.1)
    train_state = zt.init_train_state(model, optimizer, key=getkey())
    step = zt.TrainStep(zt.stateless(loss), optimizer, make_batch=_ou_batch)
    fused, metrics = step.scan_generated(train_state, 4)
    single = train_state
    for _ in range(4):
        single, m = step.scan_generated(single, 1)
        assert m["loss"].shape == (1,)
    _assert_trees_equal(fused, single, exact=False)
    assert int(fused.step) == 4
    with pytest.raises(ValueError, match="make_batch"):
        zt.TrainStep(zt.stateless(loss), optimizer).scan_generated(train_state, 2)


def test_generated_batches_made_together_train_as_in_each_step(getkey, monkeypatch):
    """`scan_generated` makes its K batches in one vmapped call before the steps when they
    fit in `STACKED_GENERATION_BYTES`, else one inside each step. The batches are the same
    bits either way; the steps then compile into different fusions, which for the OU
    recipe's shapes (batch 64) give the same bits too (its 1,000-step run writes identical
    weights; other shapes, batch 16 say, agree to float rounding)."""
    batch_size = 64
    import zoo
    from zoo.data import ou_process
    from zoo.train import _step

    def make_batch(key):
        clean, noisy = ou_process(key, batch_size, 10)
        return {"x": noisy[:, :-1, None], "y": clean[:, 1:, None]}

    model, _ = zoo.create_model("gru_ou", key=getkey(), hidden_size=12)
    optimizer = optax.adam(1e-2)
    train_state = zt.init_train_state(model, optimizer, key=getkey())
    stacked = 7 * 2 * batch_size * 9 * 4  # 7 batches of x and y, float32
    results, top_level_scans = {}, {}
    for name, limit in (("in each step", stacked - 1), ("made together", stacked)):
        monkeypatch.setattr(_step, "STACKED_GENERATION_BYTES", limit)
        step = zt.TrainStep(zt.regression_loss(), optimizer, make_batch=make_batch)
        assert step._stacked_bytes(train_state, 7) == stacked
        results[name] = step.scan_generated(train_state, 7)
        partition, leaves = _step.Partition.split(train_state)
        jaxpr = jax.make_jaxpr(step.compiled("generated", partition, num_steps=7))(leaves)
        inner = jaxpr.eqns[0].params["jaxpr"].eqns  # inside the jit
        top_level_scans[name] = sum(e.primitive.name == "scan" for e in inner)
    # One scan of steps, or the key chain, the vmapped OU paths and the steps.
    assert top_level_scans == {"in each step": 1, "made together": 3}
    (per_step, m1), (together, m2) = results["in each step"], results["made together"]
    assert m1["loss"].shape == (7,) and int(together.step) == 7
    np.testing.assert_array_equal(m1["loss"], m2["loss"])
    _assert_trees_equal(per_step, together, exact=True)


def test_rbg_keys_make_each_generated_batch_in_its_step(getkey):
    """rbg draws other bits under `vmap`, so its batches are never made together: the data
    stay `make_batch(key)`'s for every key."""
    from zoo.train import _step

    def make_batch(key):
        return {"x": jr.normal(key, (4, 1)), "y": jr.normal(jr.fold_in(key, 1), (4, 1))}

    model = eqx.nn.Linear(1, 1, key=getkey())
    optimizer = optax.sgd(0.1)
    with jax.default_prng_impl("rbg"):
        key = jr.PRNGKey(0)
        assert not _step._draws_alike_under_vmap(key)
        train_state = zt.init_train_state(model, optimizer, key=key)
        step = zt.TrainStep(zt.regression_loss(), optimizer, make_batch=make_batch)
        partition, leaves = _step.Partition.split(train_state)
        jaxpr = jax.make_jaxpr(step.compiled("generated", partition, num_steps=3))(leaves)
        inner = jaxpr.eqns[0].params["jaxpr"].eqns
        assert sum(e.primitive.name == "scan" for e in inner) == 1
        _, metrics = step.scan_generated(train_state, 3)
        # The first step's loss, from make_batch on the first data key, by hand.
        _, data_key, _ = jr.split(key, 3)
        batch = make_batch(data_key)
        expected = jnp.mean((jax.vmap(model)(batch["x"]) - batch["y"]) ** 2)
        np.testing.assert_allclose(metrics["loss"][0], expected, rtol=1e-6)
    assert _step._draws_alike_under_vmap(jr.PRNGKey(0))
    assert _step._draws_alike_under_vmap(jr.key(0))
    assert not _step._draws_alike_under_vmap(jr.key(0, impl="unsafe_rbg"))


def test_no_recompilation(tmp_path, caplog):
    traces = []
    base = zt.classification_loss(input_key="x", label_key="y")

    def loss_fn(*args):
        traces.append(1)  # runs once per trace, never when a compiled call is reused
        return base(*args)

    train_state, _ = h.setup()
    step = zt.TrainStep(loss_fn, optax.adam(1e-2))
    # 7 steps per epoch with 3 per dispatch: two fused calls and a tail of one, each epoch.
    kwargs: dict[str, Any] = dict(
        num_epochs=3, steps_per_epoch=7, steps_per_dispatch=3, progress=False
    )
    out, _ = zt.fit(train_state, step, h.dataset(), **kwargs)
    assert len(traces) == 2  # the K-step scan and the single step, once each
    assert int(out.step) == 21
    # The public single step (which does not donate) compiles once, then is reused.
    s1, _ = step(out, _batches(1)[0])
    step(s1, _batches(1)[0])
    assert len(traces) == 3
    # A second fit, from another train state and into a workdir, compiles no step.
    with jax.log_compiles(), caplog.at_level(logging.DEBUG):
        zt.fit(out, step, h.dataset(), workdir=tmp_path, **kwargs)
    assert len(traces) == 3
    compiled = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
    assert not [m for m in compiled if "train_" in m], compiled


# --- fit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stateless", "stateful"])
def test_fit_trains_and_logs(kind, tmp_path):
    train_state, step = h.setup(kind)
    x, y = h.arrays()
    evaluator = zt.Evaluator(
        zt.classification_metrics(input_key="x", label_key="y"), {"x": x, "y": y}, batch_size=24
    )
    out, history = zt.fit(
        train_state,
        step,
        h.dataset(),
        num_epochs=4,
        steps_per_epoch=h.STEPS_PER_EPOCH,
        steps_per_dispatch=3,
        eval_fn=evaluator,
        workdir=tmp_path,
        config={"kind": kind, "lr": 1e-2},
        log_every=4,
        progress=False,
    )
    epochs = [r for r in history if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert [r["step"] for r in epochs] == [8, 16, 24, 32]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[-1]["eval_loss"] < epochs[0]["eval_loss"]
    assert epochs[-1]["eval_accuracy"] > 0.8
    assert {"train_accuracy", "samples_per_s", "train_time_s", "eval_time_s"} <= set(epochs[0])
    steps = [r for r in history if r["kind"] == "step"]
    assert [r["step"] for r in steps] == list(range(4, 33, 4))
    # metrics.jsonl: one valid JSON object per line, the same records fit returned.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == history
    assert json.loads((tmp_path / "config.json").read_text()) == {"kind": kind, "lr": 1e-2}
    assert [p.name for p in zt.list_checkpoints(tmp_path / "checkpoints")] == [
        f"step_{s:09d}.ckpt" for s in (16, 24, 32)
    ]
    if kind == "stateful":
        # Training updated BatchNorm's running statistics.
        assert not np.allclose(
            h.arrays_of(out.model_state)[0], h.arrays_of(train_state.model_state)[0]
        )


def test_fit_generated_data():
    model = eqx.nn.MLP(1, 1, 8, 1, key=jr.PRNGKey(0))

    def loss(model, batch, key):
        return jnp.mean((jax.vmap(jax.vmap(model))(batch["x"]) - batch["y"]) ** 2)

    optimizer = optax.adam(1e-2)
    train_state = zt.init_train_state(model, optimizer, key=jr.PRNGKey(1))
    step = zt.TrainStep(zt.stateless(loss), optimizer, make_batch=_ou_batch)
    out, history = zt.fit(
        train_state, step, num_epochs=2, steps_per_epoch=10, steps_per_dispatch=5, progress=False
    )
    assert int(out.step) == 20
    epochs = [r for r in history if r["kind"] == "epoch"]
    assert epochs[0]["samples_per_s"] > 0 and len(epochs) == 2


@pytest.mark.parametrize("k", [1, 3])
def test_resume_is_bit_identical(k, tmp_path):
    kwargs: dict[str, Any] = dict(
        steps_per_epoch=h.STEPS_PER_EPOCH, steps_per_dispatch=k, progress=False, log_every=4
    )
    train_state, step = h.setup("stateful")
    full, full_history = zt.fit(
        train_state, step, h.dataset(), num_epochs=3, workdir=tmp_path / "a", **kwargs
    )
    # "Interrupted" after epoch 1, then resumed with fresh objects, as a new process would.
    train_state, step = h.setup("stateful")
    zt.fit(train_state, step, h.dataset(), num_epochs=1, workdir=tmp_path / "b", **kwargs)
    train_state, step = h.setup("stateful")
    resumed, history = zt.fit(
        train_state,
        step,
        h.dataset(),
        num_epochs=3,
        workdir=tmp_path / "b",
        resume=True,
        **kwargs,
    )
    assert int(resumed.step) == 3 * h.STEPS_PER_EPOCH
    _assert_trees_equal(resumed, full, exact=True)

    def losses(records):
        return [(r["kind"], r["step"], r.get("loss", r.get("train_loss"))) for r in records]

    assert losses(history) == losses(full_history)


def test_fit_argument_errors(tmp_path):
    train_state, step = h.setup()
    with pytest.raises(ValueError, match="steps_per_epoch"):
        zt.fit(train_state, step, h.dataset(), progress=False)
    with pytest.raises(ValueError, match="need 24"):
        zt.fit(train_state, step, _batches(8), num_epochs=3, progress=False)
    with pytest.raises(ValueError, match="data ran out after 8 batches"):
        zt.fit(
            train_state, step, iter(_batches(8)), num_epochs=2, steps_per_epoch=8, progress=False
        )
    with pytest.raises(ValueError, match="make_batch"):
        zt.fit(train_state, step, None, steps_per_epoch=3, progress=False)
    config = {"lr": 0.01, "resume": False}
    zt.fit(train_state, step, _batches(8), workdir=tmp_path, config=config, progress=False)
    with pytest.raises(ValueError, match="resume=True"):
        zt.fit(train_state, step, _batches(8), workdir=tmp_path, progress=False)
    # Resuming warns about a config that changes the run, not about run-control entries.
    again: dict[str, Any] = dict(workdir=tmp_path, resume=True, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zt.fit(train_state, step, _batches(8), config={"lr": 0.01, "resume": True}, **again)
    with pytest.warns(UserWarning, match=r"differs in \['lr'\]"):
        zt.fit(train_state, step, _batches(8), config={"lr": 0.1, "resume": True}, **again)


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    train_state, step = h.setup()
    nan_at = h.STEPS_PER_EPOCH + 5  # the 6th batch of epoch 2, i.e. step 14
    with pytest.raises(zt.NonFiniteLossError) as info:
        zt.fit(
            train_state,
            step,
            h.dataset(nan_at=nan_at),
            num_epochs=3,
            steps_per_epoch=h.STEPS_PER_EPOCH,
            steps_per_dispatch=3,
            workdir=tmp_path,
            progress=False,
        )
    good = tmp_path / "checkpoints" / "step_000000008.ckpt"
    err = info.value
    assert err.step == nan_at + 1 and err.epoch == 2 and err.checkpoint == good
    assert "step 14" in str(err) and str(good) in str(err)
    assert zt.list_checkpoints(tmp_path / "checkpoints") == [good]
    restored, header = zt.restore_checkpoint(good, train_state)
    assert header["step"] == 8
    assert all(np.all(np.isfinite(a)) for a in h.arrays_of(restored.model))
    # Nothing in metrics.jsonl holds a NaN loss.
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["step"] <= 12 and np.isfinite(record.get("loss", record.get("train_loss")))
    # save_checkpoint itself refuses non-finite parameters.
    bad = eqx.tree_at(
        lambda s: s.model.layers[0].bias,
        restored,
        jnp.full_like(restored.model.layers[0].bias, jnp.inf),
    )
    with pytest.raises(ValueError, match=r"non-finite.*layers\[0\]\.bias"):
        zt.save_checkpoint(tmp_path / "checkpoints", bad)
    assert zt.list_checkpoints(tmp_path / "checkpoints") == [good]


# --- checkpoints --------------------------------------------------------------------------


def test_checkpoint_round_trip_and_keep(tmp_path):
    train_state, step = h.setup("stateful")
    # A typed PRNG key round-trips too.
    train_state = eqx.tree_at(lambda s: s.key, train_state, jr.key(3))
    paths = []
    for i, batch in enumerate(_batches(5)):
        train_state, _ = step(train_state, batch)
        paths.append(
            zt.save_checkpoint(
                tmp_path, train_state, data_state={"i": i}, config={"a": [1, 2]}, keep=2
            )
        )
    assert zt.list_checkpoints(tmp_path) == paths[-2:]
    assert zt.latest_checkpoint(tmp_path) == paths[-1]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    like, _ = h.setup("stateful")
    like = eqx.tree_at(lambda s: s.key, like, jr.key(0))
    restored, header = zt.restore_checkpoint(tmp_path, like)
    _assert_trees_equal(restored, train_state, exact=True)
    assert jnp.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    # Into shapes only, without allocating a model first.
    from_shapes, _ = zt.restore_checkpoint(tmp_path, eqx.filter_eval_shape(lambda: like))
    _assert_trees_equal(from_shapes, train_state, exact=True)
    assert header["step"] == 5 and header["data_state"] == {"i": 4}
    assert header["config"] == {"a": [1, 2]} and header["version"] == 2
    assert header["leaves"][0] == {
        "path": ".model.lin1.weight",
        "shape": [16, 4],
        "dtype": "float32",
    }
    with pytest.raises(ValueError, match="keep"):
        zt.save_checkpoint(tmp_path, train_state, keep=0)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        zt.restore_checkpoint(tmp_path / "empty", like)


def test_checkpoint_mismatch_names_the_leaf(tmp_path):
    train_state, _ = h.setup("stateless")
    path = zt.save_checkpoint(tmp_path, train_state)
    model, _ = h.make_model("stateless", jr.PRNGKey(0), width=8)
    narrower = zt.init_train_state(model, optax.adam(1e-2), key=jr.PRNGKey(0))
    with pytest.raises(zt.CheckpointMismatchError) as info:
        zt.restore_checkpoint(path, narrower)
    msg = str(info.value)
    assert "`.model.layers[0].weight`" in msg
    assert "float32[16, 4] in the checkpoint" in msg and "float32[8, 4] in the train state" in msg
    other, _ = h.setup("stateful")
    with pytest.raises(zt.CheckpointMismatchError, match=r"\.model\.lin1\.weight"):
        zt.restore_checkpoint(path, other)
    (tmp_path / "junk").mkdir()
    bogus = tmp_path / "junk" / "step_000000001.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a zoo checkpoint"):
        zt.restore_checkpoint(bogus, train_state)


# --- evaluation ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stateless", "stateful"])
def test_evaluate_pads_without_recompiling(kind):
    train_state, _ = h.setup(kind)
    x, y = h.arrays()
    x, y = x[:10], y[:10]
    calls = []
    base = zt.classification_metrics(input_key="x", label_key="y")

    def metric_fn(*args):
        calls.append(1)
        return base(*args)

    got = zt.evaluate(
        metric_fn, train_state.model, train_state.model_state, {"x": x, "y": y}, batch_size=4
    )
    assert len(calls) == 1  # batches of 4, 4 and 2 (padded): one compile
    model = eqx.nn.inference_mode(train_state.model)
    logits, _ = zt.batch_apply(model, train_state.model_state, jnp.asarray(x))
    want_loss = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y)).mean()
    want_acc = np.mean(np.argmax(np.asarray(logits), -1) == y)
    assert got["loss"] == pytest.approx(float(want_loss), rel=1e-5)
    assert got["accuracy"] == pytest.approx(want_acc)
    # The same from an iterable of batches with a short last one.
    batches = [{"x": x[i : i + 4], "y": y[i : i + 4]} for i in range(0, 10, 4)]
    again = zt.evaluate(metric_fn, train_state.model, train_state.model_state, batches)
    assert again == pytest.approx(got)
    preds = zt.predict(model, train_state.model_state, x, batch_size=4)
    np.testing.assert_allclose(np.asarray(preds), np.asarray(logits), rtol=1e-5, atol=1e-6)


def test_compilation_cache(tmp_path):
    from jax.experimental.compilation_cache import compilation_cache

    names = (
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
    )
    before = {n: getattr(jax.config, n) for n in names}
    try:
        path = zt.enable_compilation_cache(tmp_path / "jax")
        assert path == tmp_path / "jax"
        jax.jit(lambda v: jnp.sin(v) * 3.0 + 17.0)(jnp.arange(5.0)).block_until_ready()
        assert path is not None and any(path.iterdir())
    finally:
        for n, v in before.items():
            jax.config.update(n, v)
        compilation_cache.reset_cache()


def test_zoo_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    assert zt.zoo_cache_dir() == tmp_path
    monkeypatch.delenv("ZOO_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zt.zoo_cache_dir() == tmp_path / "xdg" / "zoo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert zt.zoo_cache_dir() == Path.home() / ".cache" / "zoo"


# --- signals ------------------------------------------------------------------------------


def _spawn(mode: str, workdir: Path) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, HELPER, mode, str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(proc: subprocess.Popen, marker: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == marker:
            return
    proc.wait()
    raise AssertionError(f"no {marker!r} from the subprocess: {proc.stderr.read()}")  # pyright: ignore


def test_sigint_saves_and_resumes(tmp_path):
    proc = _spawn("sigint", tmp_path)
    try:
        _wait_for(proc, "READY")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "resume=True" in err and "SIGINT" in err
    latest = zt.latest_checkpoint(tmp_path / "checkpoints")
    assert latest is not None
    header = zt.read_checkpoint_header(latest)
    total = h.SIGINT_EPOCHS * h.SIGINT_SPE
    assert 0 < header["step"] < total
    # Resuming finishes the run with exactly the parameters of an uninterrupted one.
    kwargs: dict[str, Any] = dict(
        num_epochs=h.SIGINT_EPOCHS,
        steps_per_epoch=h.SIGINT_SPE,
        steps_per_dispatch=h.SIGINT_K,
        log_every=h.SIGINT_LOG_EVERY,
        progress=False,
    )
    train_state, step = h.setup()
    resumed, history = zt.fit(
        train_state, step, h.dataset(), workdir=tmp_path, resume=True, **kwargs
    )
    train_state, step = h.setup()
    full, full_history = zt.fit(train_state, step, h.dataset(), **kwargs)
    assert int(resumed.step) == total
    _assert_trees_equal(resumed, full, exact=True)
    # The metrics too, though the run broke mid-epoch and mid-window (timings aside).
    untimed = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in history]
    assert untimed == [{k: v for k, v in r.items() if not k.endswith("_s")} for r in full_history]


def test_sigkill_during_write_keeps_previous_checkpoint(tmp_path):
    proc = _spawn("sigkill", tmp_path)
    try:
        _wait_for(proc, "WRITING")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # The second checkpoint was fully written to a temporary file, never renamed.
    assert [p.name for p in zt.list_checkpoints(tmp_path)] == ["step_000000001.ckpt"]
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert len(leftovers) == 1
    like, _ = h.setup()
    restored, header = zt.restore_checkpoint(tmp_path, like)
    assert int(restored.step) == 1 and header["data_state"] == {"batches": 1}
    # The next save clears the dead writer's temporary file.
    zt.save_checkpoint(tmp_path, restored)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_classification_loss_label_smoothing(getkey):
    import zoo

    model = zoo.MLP(in_size=4, num_classes=3, width=8, depth=1, key=getkey())
    batch = {"image": jr.normal(getkey(), (5, 4)), "label": jnp.array([0, 1, 2, 1, 0])}
    logits = np.asarray(jax.vmap(model)(batch["image"]), np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = 0.8 * np.eye(3)[np.asarray(batch["label"])] + 0.2 / 3
    expected = -(targets * log_p).sum(-1).mean()
    loss, _ = zt.classification_loss(label_smoothing=0.2)(model, zt.empty_state(), batch, getkey())
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    plain, _ = zt.classification_loss()(model, zt.empty_state(), batch, getkey())
    np.testing.assert_allclose(
        plain, -log_p[np.arange(5), np.asarray(batch["label"])].mean(), rtol=1e-5
    )
    with pytest.raises(ValueError, match="label_smoothing"):
        zt.classification_loss(label_smoothing=1.0)


# --- losses -------------------------------------------------------------------------------


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_losses_name_the_batch_entries(getkey):

    model = eqx.nn.MLP(4, 3, 8, 1, key=getkey())
    x = np.asarray(jr.normal(getkey(), (6, 4)))
    y = np.array([0, 1, 2, 1, 0, 2])
    state = zt.empty_state()
    batch = {"pixels": x, "target": y}
    loss, (out_state, metrics) = zt.classification_loss(input_key="pixels", label_key="target")(
        model, state, batch, getkey()
    )
    log_p = _log_softmax(np.asarray(jax.vmap(model)(jnp.asarray(x)), np.float64))
    np.testing.assert_allclose(loss, -log_p[np.arange(6), y].mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean(log_p.argmax(-1) == y), rtol=1e-6)
    assert isinstance(out_state, eqx.nn.State)
    per_example = zt.classification_metrics(input_key="pixels", label_key="target")(
        model, state, batch
    )
    np.testing.assert_allclose(per_example["loss"], -log_p[np.arange(6), y], rtol=1e-5)
    with pytest.raises(KeyError, match=r"no entry 'image' \(it has \['pixels', 'target'\]\)"):
        zt.classification_loss()(model, state, batch, getkey())
    with pytest.raises(KeyError, match=r"no entry 'label'.*label_key="):
        zt.classification_metrics(input_key="pixels")(model, state, batch)
    # Regression against NumPy: the mean over examples of each one's mean squared error.
    reg = eqx.nn.MLP(4, 2, 8, 1, key=getkey())
    t = np.asarray(jr.normal(getkey(), (6, 2)))
    pred = np.asarray(jax.vmap(reg)(jnp.asarray(x)), np.float64)
    got = zt.regression_metrics(input_key="a", target_key="b")(reg, state, {"a": x, "b": t})
    np.testing.assert_allclose(got["mse"], ((pred - t) ** 2).mean(1), rtol=1e-5)
    with pytest.raises(KeyError, match="target_key="):
        zt.regression_loss(input_key="a")(reg, state, {"a": x}, getkey())


def test_binary_classification_against_numpy(getkey):
    import zoo

    model = zoo.LogisticRegression(5, key=getkey())
    x = np.asarray(jr.normal(getkey(), (9, 5)))
    y = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1])
    z = np.asarray(x, np.float64) @ np.asarray(model.weight, np.float64) + float(model.bias)
    # -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))], written stably.
    want = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    batch = {"x": x, "y": y}
    loss, (_, metrics) = zt.binary_classification_loss()(model, zt.empty_state(), batch, getkey())
    np.testing.assert_allclose(loss, want.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], np.mean((z > 0) == y), rtol=1e-6)
    per = zt.binary_classification_metrics()(model, zt.empty_state(), batch)
    np.testing.assert_allclose(per["loss"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(per["accuracy"], ((z > 0) == y).astype(np.float32))
    # The multi-class loss refuses a single-logit model and names the binary one.
    with pytest.raises(ValueError, match="binary_classification_loss"):
        zt.classification_loss(input_key="x", label_key="y")(
            model, zt.empty_state(), batch, getkey()
        )
    # Trained with it, logistic regression separates a separable problem.
    optimizer = optax.adam(0.1)
    ts = zt.init_train_state(model, optimizer, key=getkey())
    step = zt.TrainStep(zt.binary_classification_loss(), optimizer)
    sep = {"x": x, "y": (x[:, 0] > 0).astype(np.int32)}
    for _ in range(100):
        ts, m = step(ts, sep)
    assert float(m["accuracy"]) == 1.0


# --- model state --------------------------------------------------------------------------


def test_one_shape_of_model_state(getkey):
    train_state, step = h.setup("stateless")
    assert isinstance(train_state.model_state, eqx.nn.State)
    assert jax.tree.leaves(train_state.model_state) == []
    out, _ = step(train_state, _batches(1)[0])
    assert isinstance(out.model_state, eqx.nn.State)
    # Leaving the state out of a stateless model is the same as passing an empty one.
    model, _ = h.make_model("stateless", getkey())
    ts = zt.init_train_state(model, optax.sgd(0.1), key=getkey())
    assert isinstance(ts.model_state, eqx.nn.State)


def test_stateful_model_without_its_state(getkey):
    model, state = h.make_model("stateful", getkey())
    with pytest.raises(ValueError, match=r"eqx\.nn\.make_with_state.*model_state="):
        zt.init_train_state(model, optax.sgd(0.1), key=getkey())
    with pytest.raises(ValueError, match="make_with_state"):
        zt.init_train_state(model, optax.sgd(0.1), key=getkey(), model_state=zt.empty_state())
    x = np.zeros((3, h.FEATURES), np.float32)
    with pytest.raises(ValueError, match="make_with_state"):
        zt.batch_apply(model, None, x)
    with pytest.raises(ValueError, match="make_with_state"):
        zt.predict(model, zt.empty_state(), x, batch_size=3)
    out, new_state = zt.batch_apply(model, state, x)
    assert out.shape == (3, 2) and isinstance(new_state, eqx.nn.State)


# --- steering fields and config.json ------------------------------------------------------


def test_steering_fields_and_the_resume_check(tmp_path):
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Inner:
        width: int = 16
        trackers: tuple[str, ...] = zt.steering_field(("jsonl",))

    @dataclasses.dataclass(frozen=True)
    class Config:
        lr: float = 0.01
        inner: Inner = dataclasses.field(default_factory=Inner)
        resume: bool = zt.steering_field(False)
        publish: str | None = zt.steering_field(None, metadata={"help": "tag"})

    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert zt.is_steering(fields["resume"]) and zt.is_steering(fields["publish"])
    assert not zt.is_steering(fields["lr"]) and fields["publish"].metadata["help"] == "tag"
    train_state, step = h.setup()
    kwargs: dict[str, Any] = dict(workdir=tmp_path, progress=False)
    zt.fit(train_state, step, _batches(8), config=Config(), **kwargs)
    steered = Config(resume=True, publish="x.y", inner=Inner(trackers=("tensorboard",)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zt.fit(train_state, step, _batches(8), config=steered, resume=True, **kwargs)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["publish"] == "x.y" and saved["inner"]["trackers"] == ["tensorboard"]
    changed = Config(lr=0.1, inner=Inner(width=8))
    with pytest.warns(UserWarning, match=r"differs in \['inner\.width', 'lr'\]"):
        zt.fit(train_state, step, _batches(8), config=changed, resume=True, **kwargs)


def test_config_json_is_written_only_after_a_successful_restore(tmp_path):
    train_state, step = h.setup()
    zt.fit(train_state, step, _batches(8), workdir=tmp_path, config={"a": 1}, progress=False)
    other, _ = h.setup("stateful")
    with pytest.raises(zt.CheckpointMismatchError):
        zt.fit(
            other,
            step,
            _batches(8),
            workdir=tmp_path,
            config={"a": 2},
            resume=True,
            progress=False,
        )
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}


@pytest.mark.parametrize("batch_size", [None, 0, -5])
def test_an_evaluator_of_whole_arrays_without_a_batch_size_fails_at_once(batch_size):
    # At construction, not at the first evaluation after an epoch of training.
    metrics = zt.classification_metrics()
    data = {"image": np.zeros((4, 3), np.float32), "label": np.zeros(4, np.int32)}
    with pytest.raises(ValueError, match="needs a positive `batch_size`"):
        zt.Evaluator(metrics, data, batch_size=batch_size)
