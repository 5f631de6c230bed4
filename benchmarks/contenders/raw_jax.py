"""Raw JAX: parameters as plain pytrees, pure functions, one `jax.jit` call per step.

Written as the classic JAX tutorials write a training loop: `predict(params, x)` on a
whole batch, `jax.value_and_grad` of the loss, an optax update, the step under `jax.jit`,
the new parameters returned to a Python loop. Layouts are the ones a JAX user picks by
default: dense kernels `(in, out)`, images NHWC with HWIO kernels (`lax.conv_general_dilated`
with SAME padding), the GRU over a whole batch `(batch, hidden)` in a `lax.scan` over time.
No buffer donation: the tutorials do not donate, and neither does Flax's guide.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.lax as lax
import jax.numpy as jnp
import optax

from . import _workloads as W
from ._base import JaxPerStep


def _cross_entropy(logits, labels):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


# --- MLP -----------------------------------------------------------------------------------


def mlp_params(w: W.MLPWeights) -> list[tuple[jax.Array, jax.Array]]:
    return [(jnp.asarray(k.T), jnp.asarray(b)) for k, b in w.layers]


def mlp_predict(params, x):
    x = x.reshape(x.shape[0], -1)
    for k, b in params[:-1]:
        x = jax.nn.relu(x @ k + b)
    k, b = params[-1]
    return x @ k + b


# --- ConvNet with BatchNorm ----------------------------------------------------------------


def cnn_params(w: W.ConvNetWeights) -> tuple[dict, list]:
    """Parameters (NHWC layouts) and BatchNorm running statistics `(mean, var)` per layer."""
    c, h, wd = w.feature_shape
    head_k, head_b = w.head
    # zoo flattens (C, H, W); NHWC flattens (H, W, C): permute the head's input rows to match.
    head_k = head_k.reshape(-1, c, h, wd).transpose(2, 3, 1, 0).reshape(c * h * wd, -1)
    params = {
        "convs": [(jnp.asarray(k.transpose(2, 3, 1, 0)), jnp.asarray(b)) for k, b in w.convs],
        "norms": [None if n is None else tuple(map(jnp.asarray, n)) for n in w.norms],
        "head": (jnp.asarray(head_k), jnp.asarray(head_b)),
    }
    stats = [None if n is None else (jnp.zeros_like(n[0]), jnp.ones_like(n[0])) for n in w.norms]
    return params, stats


def cnn_predict(params, stats, x, *, strides: Sequence[int], momentum: float, eps: float):
    """Logits and the updated running statistics; BatchNorm uses the batch's statistics."""
    x = x[..., None]
    new_stats = []
    for (k, b), norm, stat, s in zip(params["convs"], params["norms"], stats, strides):
        x = lax.conv_general_dilated(
            x, k, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        x = x + b
        if norm is not None:
            scale, offset = norm
            mean = jnp.mean(x, axis=(0, 1, 2))
            var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
            x = (x - mean) * lax.rsqrt(var + eps) * scale + offset
            ra_mean, ra_var = stat
            stat = (
                momentum * ra_mean + (1 - momentum) * mean,
                momentum * ra_var + (1 - momentum) * var,
            )
        new_stats.append(stat)
        x = jax.nn.relu(x)
    k, b = params["head"]
    return x.reshape(x.shape[0], -1) @ k + b, new_stats


# --- GRU on the OU task ----------------------------------------------------------------------


def gru_params(w: W.GRUWeights) -> dict:
    return {
        "embed": (jnp.asarray(w.embed[0].T), jnp.asarray(w.embed[1])),
        "w_ih": jnp.asarray(w.weight_ih.T),
        "w_hh": jnp.asarray(w.weight_hh.T),
        "bias": jnp.asarray(w.bias),
        "h0": jnp.asarray(w.h0),
        "readout": (jnp.asarray(w.readout[0].T), jnp.asarray(w.readout[1])),
    }


def gru_scan(xw, h0, w_hh):
    """zoo.GRUCell's recurrence over time: `xw` `(batch, time, 3n)` holds every step's input
    projection, `h0` `(n,)`, `w_hh` `(n, 3n)`; returns every hidden state `(time, batch, n)`.
    Shared with the NNX contender, whose GRU is the same model."""
    n = h0.shape[0]
    u_zr, u_h = w_hh[:, : 2 * n], w_hh[:, 2 * n :]

    def cell(h, xw_t):
        zr = jax.nn.sigmoid(xw_t[:, : 2 * n] + h @ u_zr)
        z, r = zr[:, :n], zr[:, n:]
        c = jnp.tanh(xw_t[:, 2 * n :] + (r * h) @ u_h)
        h = z * h + (1 - z) * c
        return h, h

    _, hs = lax.scan(cell, jnp.broadcast_to(h0, (xw.shape[0], n)), jnp.swapaxes(xw, 0, 1))
    return hs


def gru_predict(params, xs):
    """zoo.GRU's equations on a batch: `xs` `(batch, time, 1)` -> `(batch, time, 1)`."""
    k, b = params["embed"]
    xw = jax.nn.relu(xs @ k + b) @ params["w_ih"] + params["bias"]  # all time steps at once
    hs = gru_scan(xw, params["h0"], params["w_hh"])
    k, b = params["readout"]
    return jnp.swapaxes(hs @ k + b, 0, 1)


# --- the contender -------------------------------------------------------------------------


def _mlp_loss(params, stats, batch):
    return _cross_entropy(mlp_predict(params, batch["image"]), batch["label"]), stats


def _cnn_loss(params, stats, batch, **options):
    logits, stats = cnn_predict(params, stats, batch["image"], **options)
    return _cross_entropy(logits, batch["label"]), stats


def _gru_loss(params, stats, batch):
    return jnp.mean(jnp.square(gru_predict(params, batch["x"]) - batch["y"])), stats


class RawJax(JaxPerStep):
    """Pure functions and `jax.jit`, one call per step (see the module docstring)."""

    key = "raw_jax"
    label = "raw JAX, jax.jit per step"

    def __init__(self, workload: W.Workload, weights: W.Weights):
        tx = optax.adam(workload.learning_rate)
        loss_fn: Callable
        if isinstance(weights, W.MLPWeights):
            params, stats, loss_fn = mlp_params(weights), None, _mlp_loss
        elif isinstance(weights, W.ConvNetWeights):
            params, stats = cnn_params(weights)
            loss_fn = functools.partial(
                _cnn_loss,
                strides=weights.strides,
                momentum=weights.bn_momentum,
                eps=weights.bn_eps,
            )
        else:
            params, stats, loss_fn = gru_params(weights), None, _gru_loss

        @jax.jit
        def update(params, stats, opt_state, batch):
            (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, batch)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), stats, opt_state, loss

        self._update = update
        self.state = (params, stats, tx.init(params))

    def step(self, batch) -> jax.Array:
        params, stats, opt_state, loss = self._update(*self.state, batch)
        self.state = (params, stats, opt_state)
        return loss
