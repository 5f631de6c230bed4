"""Loss and metric functions in the one shape every step takes, and adapters to it.

A *loss function* is `loss_fn(model, model_state, batch, key) -> (loss, (model_state,
metrics))`: it sees a whole batch (a dict of arrays with a leading batch axis), returns a
scalar loss to differentiate, the updated model state (`None` for stateless models) and a dict
of scalar metrics reported beside the loss. A *metric function* is `metric_fn(model,
model_state, batch) -> metrics` with one value per example (shape `(batch,)`), so that
evaluation can mask padded examples out.
"""

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

Batch: TypeAlias = Mapping[str, Any]
Metrics: TypeAlias = dict[str, Array]
LossFn: TypeAlias = Callable[
    [PyTree, eqx.nn.State | None, Batch, PRNGKeyArray],
    tuple[Array, tuple[eqx.nn.State | None, Metrics]],
]
MetricFn: TypeAlias = Callable[[PyTree, eqx.nn.State | None, Batch], Metrics]


def batch_apply(
    model: Callable,
    model_state: eqx.nn.State | None,
    x: PyTree,
    *,
    key: PRNGKeyArray | None = None,
) -> tuple[PyTree, eqx.nn.State | None]:
    """Apply a one-example model to a batch, for stateless and stateful models alike.

    Stateless models are called `model(x, key=key)`; stateful ones `model(x, state,
    key=key)` under `jax.vmap(..., axis_name="batch", in_axes=(0, None), out_axes=(0,
    None))`, so BatchNorm (`axis_name="batch"`) sees the whole batch.

    **Arguments:**

    - `model`: the model; it handles one example per call and accepts a keyword `key`.
    - `model_state`: its `eqx.nn.State`, or `None` for a stateless model.
    - `x`: the inputs, with a leading batch axis (an array or a PyTree of arrays).
    - `key`: split into one key per example (dropout); `None` passes `key=None`.

    **Returns:** `(outputs, model_state)`: the outputs with a leading batch axis, and the
    updated state (`None` for a stateless model).
    """
    size = jax.tree.leaves(x)[0].shape[0]
    keys = None if key is None else jr.split(key, size)
    if model_state is None:
        return jax.vmap(lambda xi, ki: model(xi, key=ki))(x, keys), None
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
    passing `model_state` (`None`) through unchanged.
    """

    def loss_fn(model, model_state, batch, key):
        out = fn(model, batch, key)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        return loss, (model_state, dict(metrics))

    return loss_fn


def _inputs(batch: Batch, name: str, prepare: Callable | None) -> Array:
    x = batch[name]
    return x if prepare is None else prepare(x)


def classification_loss(
    *,
    inputs: str = "image",
    labels: str = "label",
    prepare: Callable | None = None,
    augment: Callable[[Array, PRNGKeyArray], Array] | None = None,
    label_smoothing: float = 0.0,
) -> LossFn:
    """Softmax cross-entropy with integer labels, with accuracy as a metric.

    Works for stateless and stateful (BatchNorm) models through [`zoo.train.batch_apply`][].

    **Arguments:**

    - `inputs`, `labels`: the batch entries holding the inputs and the integer labels.
    - `prepare`: applied to the whole input batch first, e.g.
      `lambda x: x.reshape(x.shape[0], -1)` to flatten images for an MLP.
    - `augment`: `augment(x, key) -> x`, applied to the input batch before `prepare` with a
      key split off the step's key, e.g. [`zoo.data.random_flip`][]. Training only: the
      matching metric function sees the data as it is.
    - `label_smoothing`: the weight moved from the true class to a uniform distribution over
      all classes (`optax.smooth_labels`); 0 is plain cross-entropy.

    **Returns:** a loss function; its metrics are `{"accuracy": ...}`.

    **Raises:** `ValueError` for a `label_smoothing` outside `[0, 1)`.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")

    def loss_fn(model, model_state, batch, key):
        x = batch[inputs]
        if augment is not None:
            k_augment, key = jr.split(key)
            x = augment(x, k_augment)
        if prepare is not None:
            x = prepare(x)
        logits, model_state = batch_apply(model, model_state, x, key=key)
        y = jnp.asarray(batch[labels]).astype(jnp.int32)
        if label_smoothing:
            targets = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype)
            targets = optax.smooth_labels(targets, label_smoothing)
            loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
        else:
            loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(logits.dtype))
        return loss, (model_state, {"accuracy": accuracy})

    return loss_fn


def classification_metrics(
    *, inputs: str = "image", labels: str = "label", prepare: Callable | None = None
) -> MetricFn:
    """Per-example cross-entropy and accuracy, for [`zoo.train.evaluate`][].

    **Arguments:** as [`zoo.train.classification_loss`][].

    **Returns:** `metric_fn(model, model_state, batch) -> {"loss": (batch,), "accuracy":
    (batch,)}`.
    """

    def metric_fn(model, model_state, batch):
        logits, _ = batch_apply(model, model_state, _inputs(batch, inputs, prepare))
        y = jnp.asarray(batch[labels]).astype(jnp.int32)
        return {
            "loss": optax.softmax_cross_entropy_with_integer_labels(logits, y),
            "accuracy": (jnp.argmax(logits, axis=-1) == y).astype(logits.dtype),
        }

    return metric_fn


def _per_example_mse(pred: Array, target: Array) -> Float[Array, " batch"]:
    err = jnp.square(pred - target.astype(pred.dtype))
    return jnp.mean(err.reshape(err.shape[0], -1), axis=1)


def regression_loss(
    *, inputs: str = "x", targets: str = "y", prepare: Callable | None = None
) -> LossFn:
    """Mean squared error between the model's outputs and `batch[targets]`.

    **Arguments:**

    - `inputs`, `targets`: the batch entries holding inputs and targets (any shapes with
      a leading batch axis; the outputs must match the targets' shape).
    - `prepare`: applied to the whole input batch first.

    **Returns:** a loss function with no extra metrics.
    """

    def loss_fn(model, model_state, batch, key):
        pred, model_state = batch_apply(
            model, model_state, _inputs(batch, inputs, prepare), key=key
        )
        return jnp.mean(_per_example_mse(pred, batch[targets])), (model_state, {})

    return loss_fn


def regression_metrics(
    *, inputs: str = "x", targets: str = "y", prepare: Callable | None = None
) -> MetricFn:
    """Per-example mean squared error, `{"mse": (batch,)}`, for [`zoo.train.evaluate`][]."""

    def metric_fn(model, model_state, batch):
        pred, _ = batch_apply(model, model_state, _inputs(batch, inputs, prepare))
        return {"mse": _per_example_mse(pred, batch[targets])}

    return metric_fn
