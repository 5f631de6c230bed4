"""Flax NNX: the same models as `nnx.Module`s, trained three ways.

- `FlaxJit`: the default step of Flax's guides: `@nnx.jit def train_step(model, optimizer,
  batch)` with `nnx.value_and_grad` and `optimizer.update(model, grads)` (an
  `nnx.Optimizer(model, tx, wrt=nnx.Param)`), called with the objects every step.
- `FlaxCachedPartial` and `FlaxSplit`: the two faster practices of Flax's "Performance
  considerations" guide: `nnx.cached_partial(train_step, model, optimizer)`, which caches the
  object-graph traversal, and the functional loop, `nnx.split((model, optimizer))` once, a
  plain `jax.jit` step that merges, steps and returns `nnx.state(...)`.

Layers are Flax's own (`nnx.Linear`, `nnx.Conv` NHWC with SAME padding, `nnx.BatchNorm` with
its defaults but zoo's momentum and epsilon); the GRU cell, which Flax defines with other
equations than zoo's, holds `nnx.Param`s and runs raw JAX's `gru_scan`, so the model is the
same.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from . import _workloads as W
from ._base import JaxPerStep
from .raw_jax import gru_scan


def _const(value):
    """An initialiser that returns zoo's initial weights (their shape already fits)."""
    value = jnp.asarray(value)

    def init(key, shape, dtype=jnp.float32):
        del key
        if tuple(shape) != value.shape:
            raise ValueError(f"initial weights of shape {value.shape}, layer wants {shape}")
        return value.astype(dtype)

    return init


def _linear(weight, bias, rngs):
    out_features, in_features = weight.shape
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=_const(weight.T),
        bias_init=_const(bias),
        rngs=rngs,
    )


class MLP(nnx.Module):
    def __init__(self, w: W.MLPWeights, rngs: nnx.Rngs):
        self.layers = nnx.List([_linear(k, b, rngs) for k, b in w.layers])

    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        *hidden, last = self.layers
        for layer in hidden:
            x = nnx.relu(layer(x))
        return last(x)


class ConvNet(nnx.Module):
    def __init__(self, w: W.ConvNetWeights, rngs: nnx.Rngs):
        self.convs = nnx.List(
            [
                nnx.Conv(
                    k.shape[1],
                    k.shape[0],
                    k.shape[2:],
                    strides=s,
                    padding="SAME",
                    kernel_init=_const(k.transpose(2, 3, 1, 0)),
                    bias_init=_const(b),
                    rngs=rngs,
                )
                for (k, b), s in zip(w.convs, w.strides)
            ]
        )
        self.has_norm = tuple(n is not None for n in w.norms)
        self.norms = nnx.List(
            [
                nnx.BatchNorm(
                    n[0].shape[0],
                    momentum=w.bn_momentum,
                    epsilon=w.bn_eps,
                    scale_init=_const(n[0]),
                    bias_init=_const(n[1]),
                    rngs=rngs,
                )
                for n in w.norms
                if n is not None
            ]
        )
        c, h, wd = w.feature_shape
        head_k, head_b = w.head
        # zoo flattens (C, H, W); NHWC flattens (H, W, C): permute the head's inputs to match.
        head_k = head_k.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(-1, c * h * wd)
        self.head = _linear(head_k, head_b, rngs)

    def __call__(self, x):
        x = x[..., None]
        norms = iter(self.norms)
        for conv, has_norm in zip(self.convs, self.has_norm):
            x = conv(x)
            if has_norm:
                x = next(norms)(x)
            x = nnx.relu(x)
        return self.head(x.reshape(x.shape[0], -1))


class GRU(nnx.Module):
    def __init__(self, w: W.GRUWeights, rngs: nnx.Rngs):
        self.embed = _linear(*w.embed, rngs)
        self.w_ih = nnx.Param(jnp.asarray(w.weight_ih.T))
        self.w_hh = nnx.Param(jnp.asarray(w.weight_hh.T))
        self.bias = nnx.Param(jnp.asarray(w.bias))
        self.h0 = nnx.Param(jnp.asarray(w.h0))
        self.readout = _linear(*w.readout, rngs)

    def __call__(self, xs):
        xw = nnx.relu(self.embed(xs)) @ self.w_ih[...] + self.bias[...]
        hs = gru_scan(xw, self.h0[...], self.w_hh[...])
        return jnp.swapaxes(self.readout(hs), 0, 1)


def build(weights: W.Weights) -> nnx.Module:
    """The Flax model holding `weights`."""
    rngs = nnx.Rngs(0)  # unused: every initialiser returns zoo's weights
    if isinstance(weights, W.MLPWeights):
        return MLP(weights, rngs)
    if isinstance(weights, W.ConvNetWeights):
        return ConvNet(weights, rngs)
    return GRU(weights, rngs)


def loss_function(weights: W.Weights):
    """`loss(model, batch)`: cross-entropy for the classifiers, mean squared error for the GRU."""
    if isinstance(weights, W.GRUWeights):
        return lambda model, batch: jnp.mean(jnp.square(model(batch["x"]) - batch["y"]))

    def cross_entropy(model, batch):
        logits = model(batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    return cross_entropy


def _train_step(loss):
    def train_step(model, optimizer, batch):
        value, grads = nnx.value_and_grad(lambda m: loss(m, batch))(model)
        optimizer.update(model, grads)
        return value

    return train_step


class FlaxJit(JaxPerStep):
    """Flax NNX's default: an `nnx.jit` train step called with the model and optimiser."""

    key = "flax_jit"
    label = "Flax NNX, nnx.jit per step"

    def __init__(self, workload: W.Workload, weights: W.Weights):
        self.model = build(weights)
        self.optimizer = nnx.Optimizer(
            self.model, optax.adam(workload.learning_rate), wrt=nnx.Param
        )
        self._step = nnx.jit(_train_step(loss_function(weights)))

    def step(self, batch) -> jax.Array:
        return self._step(self.model, self.optimizer, batch)

    def sync(self) -> None:
        jax.block_until_ready(nnx.state((self.model, self.optimizer)))


class FlaxCachedPartial(FlaxJit):
    """The same `nnx.jit` step through `nnx.cached_partial(step, model, optimizer)`."""

    key = "flax_cached"
    label = "Flax NNX, nnx.cached_partial"

    def __init__(self, workload: W.Workload, weights: W.Weights):
        super().__init__(workload, weights)
        self._cached = nnx.cached_partial(self._step, self.model, self.optimizer)

    def step(self, batch) -> jax.Array:
        return self._cached(batch)


class FlaxSplit(JaxPerStep):
    """The functional loop: `nnx.split` once, `jax.jit` over the state, `nnx.merge` inside."""

    key = "flax_split"
    label = "Flax NNX, jax.jit over nnx.split"

    def __init__(self, workload: W.Workload, weights: W.Weights):
        model = build(weights)
        optimizer = nnx.Optimizer(model, optax.adam(workload.learning_rate), wrt=nnx.Param)
        self.graphdef, self.state = nnx.split((model, optimizer))
        train_step = _train_step(loss_function(weights))

        @jax.jit
        def jax_train_step(graphdef, state, batch):
            model, optimizer = nnx.merge(graphdef, state)
            loss = train_step(model, optimizer, batch)
            return loss, nnx.state((model, optimizer))

        self._step = jax_train_step

    def step(self, batch) -> jax.Array:
        loss, self.state = self._step(self.graphdef, self.state, batch)
        return loss
