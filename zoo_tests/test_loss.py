"""zoo.train's classification loss and metrics: values against NumPy, and the error for
labels outside [0, classes)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _model(getkey):
    import zoo

    return zoo.MLP(in_size=4, num_classes=3, width=5, depth=1, key=getkey())


def _numpy_cross_entropy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(y)), y]


@pytest.mark.parametrize("jit", [False, True])
def test_loss_and_metrics_match_numpy(getkey, jit):
    import zoo.train

    model = _model(getkey)
    x = jax.random.normal(getkey(), (6, 4))
    y = jnp.array([0, 1, 2, 2, 1, 0])
    batch = {"x": x, "y": y}
    loss_fn = zoo.train.classification_loss(input_key="x", label_key="y")
    metric_fn = zoo.train.classification_metrics(input_key="x", label_key="y")
    state = eqx.nn.State(model)
    loss = (eqx.filter_jit(loss_fn) if jit else loss_fn)(model, state, batch, getkey())[0]
    metrics = (eqx.filter_jit(metric_fn) if jit else metric_fn)(model, state, batch)
    logits = np.asarray(jax.vmap(model)(x), np.float64)
    expected = _numpy_cross_entropy(logits, np.asarray(y))
    np.testing.assert_allclose(float(loss), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(metrics["loss"]), expected, rtol=1e-5)
    np.testing.assert_array_equal(
        np.asarray(metrics["accuracy"]), (logits.argmax(1) == np.asarray(y)).astype(np.float32)
    )


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("labels", [[0, -1, 2, 1], [0, 3, 2, 1], [0, 1, 2, 10**6]])
def test_out_of_range_labels_give_nan_not_a_plausible_loss(getkey, jit, labels):
    """The old loss accepted -1 (and `num_classes`) and returned a finite loss."""
    import zoo.train

    model = _model(getkey)
    batch = {"x": jax.random.normal(getkey(), (4, 4)), "y": jnp.array(labels)}
    state = eqx.nn.State(model)
    loss_fn = zoo.train.classification_loss(input_key="x", label_key="y")
    metric_fn = zoo.train.classification_metrics(input_key="x", label_key="y")
    call_loss = eqx.filter_jit(loss_fn) if jit else loss_fn
    call_metrics = eqx.filter_jit(metric_fn) if jit else metric_fn
    loss, (_, metrics) = call_loss(model, state, batch, getkey())
    assert np.isnan(float(loss)) and np.isnan(float(metrics["accuracy"]))
    per_example = call_metrics(model, state, batch)
    assert np.isnan(np.asarray(per_example["loss"])).all()
    assert np.isnan(np.asarray(per_example["accuracy"])).all()


def test_label_check_under_grad_and_label_smoothing(getkey):
    """Inside a differentiated, jitted step (as in TrainStep): sound labels give exactly
    the unchecked gradients, a bad one NaN gradients (no silently drifting weights)."""
    import optax

    import zoo.train

    model = _model(getkey)
    loss_fn = zoo.train.classification_loss(input_key="x", label_key="y", label_smoothing=0.1)
    state = eqx.nn.State(model)

    def unchecked(m, batch):
        targets = optax.smooth_labels(jax.nn.one_hot(batch["y"], 3), 0.1)
        return jnp.mean(optax.softmax_cross_entropy(jax.vmap(m)(batch["x"]), targets))

    @eqx.filter_jit
    def grads(model, batch, key):
        return eqx.filter_grad(lambda m: loss_fn(m, state, batch, key)[0])(model)

    x = jax.random.normal(getkey(), (4, 4))
    sound = {"x": x, "y": jnp.array([0, 1, 2, 0])}
    good = grads(model, sound, getkey())
    reference = eqx.filter_jit(eqx.filter_grad(unchecked))(model, sound)
    for g, r in zip(jax.tree.leaves(good), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-6, atol=1e-7)
    bad = grads(model, {"x": x, "y": jnp.array([0, -1, 2, 0])}, getkey())
    # NaN wherever a gradient flows (a ReLU that is off for every example passes zeros).
    assert bool(jnp.all(jnp.isnan(bad.layers[-1].weight)))
    assert all(bool(jnp.any(jnp.isnan(g))) for g in jax.tree.leaves(bad))


def test_evaluate_names_labels_outside_the_classes(getkey):
    import zoo.train

    model = _model(getkey)
    metric_fn = zoo.train.classification_metrics(input_key="x", label_key="y")
    x = np.asarray(jax.random.normal(getkey(), (10, 4)))
    good = zoo.train.evaluate(
        metric_fn, model, None, {"x": x, "y": np.arange(10) % 3}, batch_size=4
    )
    assert np.isfinite(good["loss"]) and 0 <= good["accuracy"] <= 1
    y = np.arange(10) % 3
    y[5] = 3  # 1-based labels: `num_classes` itself
    with pytest.raises(
        ValueError, match=r"examples 4-7, labels 'y' range from 0 to 3, outside \[0, 3\)"
    ):
        zoo.train.evaluate(metric_fn, model, None, {"x": x, "y": y}, batch_size=4)


def test_a_classification_step_is_served_from_the_persistent_cache(tmp_path):
    """A host callback in the step (the label check was once an `eqx.error_if`) keeps JAX
    from ever serving it from the persistent compilation cache: every run compiled again."""
    import subprocess
    import sys

    code = f"""
import jax, jax.numpy as jnp, jax.random as jr, optax, zoo, zoo.train
import jax.monitoring as monitoring
hits = []
monitoring.register_event_listener(lambda name, **kw: hits.append(name))
zoo.train.enable_compilation_cache({str(tmp_path)!r})
model = zoo.MLP(in_size=4, num_classes=3, width=5, depth=1, key=jr.PRNGKey(0))
optimizer = optax.sgd(0.1)
state = zoo.train.init_train_state(model, optimizer, key=jr.PRNGKey(1))
step = zoo.train.TrainStep(zoo.train.classification_loss(input_key="x", label_key="y"), optimizer)
state, metrics = step(state, {{"x": jnp.ones((8, 4)), "y": jnp.arange(8) % 3}})
jax.block_until_ready(metrics)
print(hits.count("/jax/compilation_cache/compile_requests_use_cache"),
      hits.count("/jax/compilation_cache/cache_hits"))
"""
    runs = [
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    requests, hits = (int(n) for n in runs[1].stdout.split()[-2:])
    assert requests > 0 and hits == requests  # the second process compiles nothing again
