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


def _message(error: BaseException, owner: str) -> str:
    lines = [line for line in str(error).splitlines() if f"{owner}:" in line]
    assert lines, str(error)
    return lines[0]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(
    "labels, named",
    [
        ([0, -1, 2, 1], "the label -1"),
        ([0, 3, 2, 1], "the label 3"),  # 1-based labels: `num_classes` itself
        ([0, 1, 2, 7], "the label 7"),
        ([0, -1, 2, 5], "the label -1"),  # below the range reported first
        ([0, -1000, 2, 1], "a label below -16"),
        ([0, 1, 2, 10**6], "a label above 18"),
    ],
)
def test_out_of_range_labels_are_an_error(getkey, jit, labels, named):
    """The old loss accepted -1 (and `num_classes`) and returned a finite loss."""
    import zoo.train

    model = _model(getkey)
    batch = {"x": jax.random.normal(getkey(), (4, 4)), "y": jnp.array(labels)}
    state = eqx.nn.State(model)
    for owner, fn in [
        ("classification_loss", zoo.train.classification_loss(input_key="x", label_key="y")),
        ("classification_metrics", zoo.train.classification_metrics(input_key="x", label_key="y")),
    ]:
        call = eqx.filter_jit(fn) if jit else fn
        args = (model, state, batch, getkey()) if owner.endswith("loss") else (model, state, batch)
        with pytest.raises(eqx.EquinoxRuntimeError) as e:
            jax.block_until_ready(call(*args))
        message = _message(e.value, owner)
        assert "batch['y'] must hold class indices in [0, 3)" in message
        assert f"holds {named};" in message


def test_label_check_under_grad_and_label_smoothing(getkey):
    """The check sits inside a differentiated, jitted step too (as in TrainStep)."""
    import zoo.train

    model = _model(getkey)
    loss_fn = zoo.train.classification_loss(input_key="x", label_key="y", label_smoothing=0.1)
    state = eqx.nn.State(model)

    @eqx.filter_jit
    def grads(model, batch, key):
        return eqx.filter_grad(lambda m: loss_fn(m, state, batch, key)[0])(model)

    x = jax.random.normal(getkey(), (4, 4))
    good = grads(model, {"x": x, "y": jnp.array([0, 1, 2, 0])}, getkey())
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(good))
    with pytest.raises(eqx.EquinoxRuntimeError, match="holds the label -1"):
        jax.block_until_ready(grads(model, {"x": x, "y": jnp.array([0, -1, 2, 0])}, getkey()))
