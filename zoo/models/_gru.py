"""Gated recurrent units: a single-step cell, and sequence models that scan it over time."""

from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr

from .._typing import Array, Float, PRNGKeyArray, check_shape
from ._registry import WeightSet, register_model
from ._validate import positive_int


class GRUCell(eqx.Module):
    """One GRU step, exactly:

    z = sigmoid(W_z x + U_z h + b_z), r = sigmoid(W_r x + U_r h + b_r),
    c = tanh(W_h x + U_h (r * h) + b_h), h' = z * h + (1 - z) * c.

    The input half (`W x + b`, all three gates at once) is separate from the recurrent half
    (`step`) so that sequence models can project every time step in one matmul before the scan.
    """

    weight_ih: Float[Array, "3*hidden input"]
    weight_hh: Float[Array, "3*hidden hidden"]
    bias: Float[Array, " 3*hidden"]
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)

    def __init__(self, input_size: int, hidden_size: int, dtype=None, *, key: PRNGKeyArray):
        """**Arguments:** `input_size`, `hidden_size`, `dtype`, and `key` for the
        initialisation (uniform in +-1/sqrt(hidden_size), as is usual for GRUs).

        **Raises:** `ValueError` naming the argument if a size is not positive.
        """
        self.input_size = positive_int("GRUCell", "input_size", input_size)
        self.hidden_size = positive_int("GRUCell", "hidden_size", hidden_size)
        dtype = jnp.result_type(float) if dtype is None else dtype
        k_ih, k_hh, k_b = jr.split(key, 3)
        lim = 1.0 / jnp.sqrt(hidden_size)
        self.weight_ih = jr.uniform(k_ih, (3 * hidden_size, input_size), dtype, -lim, lim)
        self.weight_hh = jr.uniform(k_hh, (3 * hidden_size, hidden_size), dtype, -lim, lim)
        self.bias = jr.uniform(k_b, (3 * hidden_size,), dtype, -lim, lim)

    def project(self, x: Float[Array, "*time input"]) -> Float[Array, "*time gates"]:
        """`W x + b` for the three gates (z, r, h), for one step or a whole sequence."""
        # Explicit broadcast: zoo runs under jax_numpy_rank_promotion="raise" in its tests.
        return x @ self.weight_ih.T + jnp.broadcast_to(self.bias, (*x.shape[:-1], self.bias.size))

    def step(
        self, h: Float[Array, " hidden"], xw: Float[Array, " gates"]
    ) -> Float[Array, " hidden"]:
        """The recurrent half of one step, given the projected input `xw = project(x)`."""
        n = self.hidden_size
        u_zr, u_h = self.weight_hh[: 2 * n], self.weight_hh[2 * n :]
        zr = jax.nn.sigmoid(xw[: 2 * n] + u_zr @ h)
        z, r = zr[:n], zr[n:]
        c = jnp.tanh(xw[2 * n :] + u_h @ (r * h))
        return z * h + (1 - z) * c

    def __call__(
        self,
        x: Float[Array, " input"],
        h: Float[Array, " hidden"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " hidden"]:
        """**Arguments:** `x` (input, `(input_size,)`), `h` (hidden state, `(hidden_size,)`).

        **Returns:** the next hidden state, `(hidden_size,)`.
        """
        del key
        check_shape("GRUCell", "x", x, (self.input_size,))
        check_shape("GRUCell", "h", h, (self.hidden_size,))
        return self.step(h, self.project(x))


class GRUEncoder(eqx.Module):
    """Linear + ReLU on each input, then a `GRUCell` scanned over time with `lax.scan`;
    returns every hidden state. Shared by `GRU` and `GRUClassifier`."""

    embed: eqx.nn.Linear
    cell: GRUCell
    initial_state: Float[Array, " hidden"] | None
    in_size: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden_size: int,
        learn_initial_state: bool,
        dtype=None,
        *,
        key: PRNGKeyArray,
        owner: str = "GRUEncoder",
    ):
        self.in_size = positive_int(owner, "in_size", in_size)
        hidden_size = positive_int(owner, "hidden_size", hidden_size)
        k_embed, k_cell = jr.split(key)
        self.embed = eqx.nn.Linear(in_size, hidden_size, dtype=dtype, key=k_embed)
        self.cell = GRUCell(hidden_size, hidden_size, dtype=dtype, key=k_cell)
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.initial_state = jnp.zeros(hidden_size, dtype) if learn_initial_state else None

    def __call__(
        self, xs: Float[Array, "time features"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "time hidden"]:
        del key
        h0 = self.initial_state
        if h0 is None:
            h0 = jnp.zeros(self.cell.hidden_size, xs.dtype)
        # Every step's input projection in one matmul; the scan carries one array.
        xw = self.cell.project(jax.nn.relu(jax.vmap(self.embed)(xs)))

        def body(h, xw_t):
            h = self.cell.step(h, xw_t)
            return h, h

        _, hs = lax.scan(body, h0, xw)
        return hs


class GRU(eqx.Module):
    """Sequence to sequence: a `GRUEncoder` (Linear + ReLU, then the GRU cell scanned over
    time) and a Linear readout of every hidden state.

    The defaults (1 input feature, 12 hidden units, 1 output, learned initial state) are the
    model of the Ornstein-Uhlenbeck denoising experiment.
    """

    encoder: GRUEncoder
    readout: eqx.nn.Linear

    def __init__(
        self,
        in_size: int = 1,
        hidden_size: int = 12,
        out_size: int = 1,
        learn_initial_state: bool = True,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_size` (features per step), `hidden_size`, `out_size`,
        `learn_initial_state` (a trained initial hidden state, or zeros), `dtype`, `key`.

        **Raises:** `ValueError` naming the argument if a size is not positive.
        """
        k_enc, k_out = jr.split(key)
        self.encoder = GRUEncoder(
            in_size, hidden_size, learn_initial_state, dtype, key=k_enc, owner="GRU"
        )
        out_size = positive_int("GRU", "out_size", out_size)
        self.readout = eqx.nn.Linear(hidden_size, out_size, dtype=dtype, key=k_out)

    def __call__(
        self, xs: Float[Array, "time features"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "time out"]:
        """**Arguments:** `xs`, one sequence of shape `(time, in_size)`; `key` is unused.

        **Returns:** one output per time step, `(time, out_size)`.
        """
        del key
        check_shape("GRU", "xs", xs, (None, self.encoder.in_size))
        hs = self.encoder(xs)
        return jax.vmap(self.readout)(hs)


class GRUClassifier(eqx.Module):
    """Sequence classification: a `GRUEncoder` and logits read from the last hidden state
    (for example image rows as time steps: `GRUClassifier(in_size=28)`)."""

    encoder: GRUEncoder
    readout: eqx.nn.Linear

    def __init__(
        self,
        in_size: int = 28,
        hidden_size: int = 128,
        num_classes: int = 10,
        learn_initial_state: bool = False,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_size` (features per step), `hidden_size`, `num_classes`,
        `learn_initial_state`, `dtype`, `key`.

        **Raises:** `ValueError` naming the argument if a size is not positive.
        """
        k_enc, k_out = jr.split(key)
        self.encoder = GRUEncoder(
            in_size, hidden_size, learn_initial_state, dtype, key=k_enc, owner="GRUClassifier"
        )
        num_classes = positive_int("GRUClassifier", "num_classes", num_classes)
        self.readout = eqx.nn.Linear(hidden_size, num_classes, dtype=dtype, key=k_out)

    def __call__(
        self, xs: Float[Array, "time features"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " classes"]:
        """**Arguments:** `xs`, one sequence `(time, in_size)`; `key` is unused.

        **Returns:** logits from the last hidden state, `(num_classes,)`.
        """
        del key
        check_shape("GRUClassifier", "xs", xs, (None, self.encoder.in_size))
        return self.readout(self.encoder(xs)[-1])


# ----------------------------------------------------------------------------------------------
# Registered architectures and their pretrained weights.

GRU_OU_WEIGHTS = {
    "ou": WeightSet(
        dataset="ou-process",
        metrics={"test_mse": 0.03517019376158714},
        description="denoising a noisy Ornstein-Uhlenbeck path (recipes.ou_gru)",
    ),
}


@register_model(default_tag="ou", weights=GRU_OU_WEIGHTS)
def gru_ou(
    *, key: PRNGKeyArray, num_classes: int | None = None, **kwargs: Any
) -> tuple[GRU, eqx.nn.State]:
    """The GRU of the Ornstein-Uhlenbeck denoising experiment (`zoo.GRU`'s defaults:
    Linear 1->12, ReLU, GRU 12, Linear 12->1)."""
    if num_classes is not None:
        raise ValueError("gru_ou is a sequence-to-sequence model: it has no `num_classes`")
    return eqx.nn.make_with_state(GRU)(**kwargs, key=key)


@register_model(head=lambda m: m.readout, default_tag="fashion")
def gru_rows(
    *, key: PRNGKeyArray, num_classes: int | None = None, **kwargs: Any
) -> tuple[GRUClassifier, eqx.nn.State]:
    """A `zoo.GRUClassifier` reading 28x28 images row by row (28 steps of 28 pixels)."""
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return eqx.nn.make_with_state(GRUClassifier)(**kwargs, key=key)
