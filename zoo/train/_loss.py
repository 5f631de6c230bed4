"""Loss and metric functions in the one shape every step takes, and adapters to it.

A *loss function* is `loss_fn(model, model_state, batch, key) -> (loss, (model_state,
metrics))`: it sees a whole batch (a dict of arrays with a leading batch axis), returns a
scalar loss to differentiate, the updated model state (an `eqx.nn.State`, empty for
stateless models) and a dict of scalar metrics reported beside the loss. A *metric function*
is `metric_fn(model, model_state, batch) -> metrics` with one value per example (shape
`(batch,)`), so that evaluation can mask padded examples out.
"""

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._state import check_model_state
from ._trainable import has_state

Batch: TypeAlias = Mapping[str, Any]
Metrics: TypeAlias = dict[str, Array]
LossFn: TypeAlias = Callable[
    [PyTree, eqx.nn.State, Batch, PRNGKeyArray],
    tuple[Array, tuple[eqx.nn.State, Metrics]],
]
MetricFn: TypeAlias = Callable[[PyTree, eqx.nn.State, Batch], Metrics]


def _takes_state(model: Callable) -> bool:
    """Whether `model` is called as `model(x, state)`: it holds state, or (a ConvNet built
    without BatchNorm, say) its `__call__` still names a `state` argument."""
    if has_state(model):
        return True
    try:
        params = inspect.signature(model).parameters
    except (TypeError, ValueError):
        return False
    return "state" in params


def batch_apply(
    model: Callable,
    model_state: eqx.nn.State | None,
    x: PyTree,
    *,
    key: PRNGKeyArray | None = None,
) -> tuple[PyTree, eqx.nn.State]:
    """Apply a one-example model to a batch, for stateless and stateful models alike.

    Stateless models are called `model(x, key=key)`; stateful ones `model(x, state,
    key=key)` under `jax.vmap(..., axis_name="batch", in_axes=(0, None), out_axes=(0,
    None))`, so BatchNorm (`axis_name="batch"`) sees the whole batch.

    **Arguments:**

    - `model`: the model; it handles one example per call and accepts a keyword `key`.
    - `model_state`: its `eqx.nn.State` (empty, or left out as `None`, for a stateless
      model).
    - `x`: the inputs, with a leading batch axis (an array or a PyTree of arrays).
    - `key`: split into one key per example (dropout); `None` passes `key=None`.

    **Returns:** `(outputs, model_state)`: the outputs with a leading batch axis, and the
    updated state (unchanged, and empty, for a stateless model).

    **Raises:** `ValueError` for a stateful model without its state.
    """
    model_state = check_model_state(model, model_state)
    size = jax.tree.leaves(x)[0].shape[0]
    keys = None if key is None else jr.split(key, size)
    if not _takes_state(model):
        return jax.vmap(lambda xi, ki: model(xi, key=ki))(x, keys), model_state
    return jax.vmap(
        lambda xi, s, ki: model(xi, s, key=ki),
        axis_name="batch",
        in_axes=(0, None, 0),
        out_axes=(0, None),
    )(x, model_state, keys)


def stateless(
    fn: Callable[[PyTree, Batch, PRNGKeyArray], Any],
) -> LossFn:
    """Adapt a loss of a stateless model, `fn(model, batch, key) -> loss` or `-> (loss,
    metrics)`, to the loss-function signature that [`zoo.train.TrainStep`][] takes.

    **Arguments:**

    - `fn`: returns a scalar loss, or a scalar loss and a dict of scalar metrics.

    **Returns:** `loss_fn(model, model_state, batch, key) -> (loss, (model_state, metrics))`,
    passing `model_state` (empty) through unchanged.
    """

    def loss_fn(model, model_state, batch, key):
        out = fn(model, batch, key)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        return loss, (model_state, dict(metrics))

    return loss_fn


def batch_entry(batch: Batch, key: str, argument: str) -> Any:
    """`batch[key]`, or a `KeyError` naming the missing entry, the entries present and the
    `argument` that chose the name."""
    try:
        return batch[key]
    except KeyError:
        raise KeyError(
            f"the batch has no entry {key!r} (it has {sorted(batch)}); pass "
            f"{argument}= with the name of the entry to use"
        ) from None


def _inputs(batch: Batch, input_key: str, prepare: Callable | None) -> Any:
    x = batch_entry(batch, input_key, "input_key")
    return x if prepare is None else prepare(x)


def _class_logits(logits: Array) -> Array:
    if logits.ndim == 1:
        raise ValueError(
            "classification_loss needs one logit per class, shape (batch, classes); this "
            f"model gives one scalar per example, shape {logits.shape}: use "
            "zoo.train.binary_classification_loss (and binary_classification_metrics) for a "
            "single-logit model such as zoo.LogisticRegression"
        )
    return logits


def checked_labels(labels: Any, num_classes: int) -> tuple[Array, Array]:
    """`labels` as int32, and whether any lies outside `[0, num_classes)`.

    Without the check, optax's cross-entropy silently reads an out-of-range label as a
    clamped or NaN target and training goes on. The losses turn such a batch's values NaN
    (`_poisoned`), which cannot be missed; `fit`'s [`zoo.train.NonFiniteGuard`][] and
    [`zoo.train.evaluate`][] then name the bad labels from the host's copy of the batch.
    (An `eqx.error_if` would raise in the step itself, but an executable holding a host
    callback is never served from JAX's persistent compilation cache: every run would
    compile its steps again.)"""
    y = jnp.asarray(labels).astype(jnp.int32)
    if y.size == 0:
        return y, jnp.asarray(False)
    return y, (jnp.min(y) < 0) | (jnp.max(y) >= num_classes)


def _poisoned(x: Array, bad: Array, *, differentiable: bool = False) -> Array:
    """`x`, or NaN where `bad`. `differentiable`: a product with exactly 1.0 or NaN, so the
    gradients are NaN too and a sound step keeps every bit; otherwise `where`, since XLA
    rewrites `float(correct) * nan` as a select that drops the NaN."""
    if differentiable:
        return x * jnp.where(bad, jnp.nan, 1.0).astype(x.dtype)
    return jnp.where(bad, jnp.nan, x).astype(x.dtype)


def classification_loss(
    *,
    input_key: str = "image",
    label_key: str = "label",
    prepare: Callable | None = None,
    augment: Callable[[Array, PRNGKeyArray], Array] | None = None,
    label_smoothing: float = 0.0,
) -> LossFn:
    """Softmax cross-entropy with integer labels, with accuracy as a metric.

    Works for stateless and stateful (BatchNorm) models through [`zoo.train.batch_apply`][].

    **Arguments:**

    - `input_key`, `label_key`: the names of the batch entries holding the inputs and the
      integer labels.
    - `prepare`: applied to the whole input batch first, e.g.
      `lambda x: x.reshape(x.shape[0], -1)` to flatten images for an MLP.
    - `augment`: `augment(x, key) -> x`, applied to the input batch before `prepare` with a
      key split off the step's key, e.g. [`zoo.data.random_flip`][]. Training only: the
      matching metric function sees the data as it is.
    - `label_smoothing`: the weight moved from the true class to a uniform distribution over
      all classes (`optax.smooth_labels`); 0 is plain cross-entropy.

    **Returns:** a loss function; its metrics are `{"accuracy": ...}`.

    **Raises:** `ValueError` for a `label_smoothing` outside `[0, 1)`; when called, a
    `KeyError` naming a missing batch entry, and a `ValueError` for a model with one output
    per example (use [`zoo.train.binary_classification_loss`][]). A batch holding a label
    outside `[0, classes)` gives a NaN loss, accuracy and gradients, which `fit` stops at
    with a [`zoo.train.NonFiniteLossError`][] naming the labels.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")

    def loss_fn(model, model_state, batch, key):
        x = batch_entry(batch, input_key, "input_key")
        labels = batch_entry(batch, label_key, "label_key")
        if augment is not None:
            k_augment, key = jr.split(key)
            x = augment(x, k_augment)
        if prepare is not None:
            x = prepare(x)
        logits, model_state = batch_apply(model, model_state, x, key=key)
        logits = _class_logits(logits)
        y, bad = checked_labels(labels, logits.shape[-1])
        if label_smoothing:
            targets = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
            targets = optax.smooth_labels(targets, label_smoothing)
            loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
        else:
            loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(logits.dtype))
        metrics = {"accuracy": _poisoned(accuracy, bad)}
        return _poisoned(loss, bad, differentiable=True), (model_state, metrics)

    return loss_fn


def classification_metrics(
    *, input_key: str = "image", label_key: str = "label", prepare: Callable | None = None
) -> MetricFn:
    """Per-example cross-entropy and accuracy, for [`zoo.train.evaluate`][].

    **Arguments:** as [`zoo.train.classification_loss`][].

    **Returns:** `metric_fn(model, model_state, batch) -> {"loss": (batch,), "accuracy":
    (batch,)}`, NaN for every example of a batch holding a label outside `[0, classes)`
    ([`zoo.train.evaluate`][] then raises, naming it).
    """

    def metric_fn(model, model_state, batch):
        x = _inputs(batch, input_key, prepare)
        logits = _class_logits(batch_apply(model, model_state, x)[0])
        labels = batch_entry(batch, label_key, "label_key")
        y, bad = checked_labels(labels, logits.shape[-1])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        accuracy = (jnp.argmax(logits, axis=-1) == y).astype(logits.dtype)
        return {
            "loss": _poisoned(loss, bad),
            "accuracy": _poisoned(accuracy, bad),
        }

    return metric_fn


def _binary(logits: Array, labels: Any) -> tuple[Array, Array]:
    """Per-example `(cross-entropy, correct)` for one logit per example."""
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim != 1:
        raise ValueError(
            "binary classification needs one logit per example, shape (batch,) or (batch, 1); "
            f"got {logits.shape}: use zoo.train.classification_loss for several classes"
        )
    y = jnp.asarray(labels).astype(logits.dtype).reshape(logits.shape)
    loss = optax.sigmoid_binary_cross_entropy(logits, y)
    correct = ((logits > 0).astype(logits.dtype) == y).astype(logits.dtype)
    return loss, correct


def binary_classification_loss(
    *, input_key: str = "x", label_key: str = "y", prepare: Callable | None = None
) -> LossFn:
    """Sigmoid cross-entropy for a single-logit model (e.g. `zoo.LogisticRegression`),
    labels 0 or 1, with accuracy (logit > 0 read as class 1) as a metric.

    **Arguments:** `input_key`, `label_key` and `prepare` as in
    [`zoo.train.classification_loss`][].

    **Returns:** a loss function; its metrics are `{"accuracy": ...}`.
    """

    def loss_fn(model, model_state, batch, key):
        x = _inputs(batch, input_key, prepare)
        logits, model_state = batch_apply(model, model_state, x, key=key)
        loss, correct = _binary(logits, batch_entry(batch, label_key, "label_key"))
        return jnp.mean(loss), (model_state, {"accuracy": jnp.mean(correct)})

    return loss_fn


def binary_classification_metrics(
    *, input_key: str = "x", label_key: str = "y", prepare: Callable | None = None
) -> MetricFn:
    """Per-example sigmoid cross-entropy and accuracy of a single-logit model, for
    [`zoo.train.evaluate`][]: `{"loss": (batch,), "accuracy": (batch,)}`."""

    def metric_fn(model, model_state, batch):
        logits, _ = batch_apply(model, model_state, _inputs(batch, input_key, prepare))
        loss, correct = _binary(logits, batch_entry(batch, label_key, "label_key"))
        return {"loss": loss, "accuracy": correct}

    return metric_fn


def _per_example_mse(pred: Array, target: Array) -> Float[Array, " batch"]:
    err = jnp.square(pred - target.astype(pred.dtype))
    return jnp.mean(err.reshape(err.shape[0], -1), axis=1)


def regression_loss(
    *, input_key: str = "x", target_key: str = "y", prepare: Callable | None = None
) -> LossFn:
    """Mean squared error between the model's outputs and `batch[target_key]`.

    **Arguments:**

    - `input_key`, `target_key`: the names of the batch entries holding inputs and targets
      (any shapes with a leading batch axis; the outputs must match the targets' shape).
    - `prepare`: applied to the whole input batch first.

    **Returns:** a loss function with no extra metrics.
    """

    def loss_fn(model, model_state, batch, key):
        x = _inputs(batch, input_key, prepare)
        target = jnp.asarray(batch_entry(batch, target_key, "target_key"))
        pred, model_state = batch_apply(model, model_state, x, key=key)
        return jnp.mean(_per_example_mse(pred, target)), (model_state, {})

    return loss_fn


def regression_metrics(
    *, input_key: str = "x", target_key: str = "y", prepare: Callable | None = None
) -> MetricFn:
    """Per-example mean squared error, `{"mse": (batch,)}`, for [`zoo.train.evaluate`][]."""

    def metric_fn(model, model_state, batch):
        pred, _ = batch_apply(model, model_state, _inputs(batch, input_key, prepare))
        target = jnp.asarray(batch_entry(batch, target_key, "target_key"))
        return {"mse": _per_example_mse(pred, target)}

    return metric_fn
