"""Gated recurrent units: a single-step cell, and sequence models that scan it over time."""

from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr

from .._typing import Array, Float, PRNGKeyArray, check_shape
from ._init import compiled_init
from ._registry import WeightSet, register_model
from ._validate import boolean, positive_int


class GRUCell(eqx.Module):
    """One GRU step. With the default `reset_after=False` (the form of the tutorial GRU):

    z = sigmoid(W_z x + U_z h + b_z), r = sigmoid(W_r x + U_r h + b_r),
    c = tanh(W_h x + U_h (r * h) + b_h), h' = z * h + (1 - z) * c;

    with `reset_after=True` the candidate is the form of `torch.nn.GRU`, `eqx.nn.GRUCell` and
    cuDNN (Keras' `reset_after=True`), with a separate recurrent bias `b_u` (`bias_hh`):

    c = tanh(W_h x + b_h + r * (U_h h + b_u)),

    so that weights from `torch.nn.GRU` load exactly (reorder its gates (r, z, n) to zoo's
    (z, r, h) and add its two z and r biases; its `bias_hh_l0`'s n part is `bias_hh`).

    The input half (`W x + b`, all three gates at once) is separate from the recurrent half
    (`step`) so that sequence models can project every time step in one matmul before the scan.
    """

    weight_ih: Float[Array, "3*hidden input"]
    weight_hh: Float[Array, "3*hidden hidden"]
    bias: Float[Array, " 3*hidden"]
    bias_hh: Float[Array, " hidden"] | None
    in_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    reset_after: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden_size: int,
        reset_after: bool = False,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_size` (features per step), `hidden_size`, `reset_after` (the
        PyTorch/Equinox candidate form, with its recurrent bias), `dtype`, and `key` for the
        initialisation (uniform in +-1/sqrt(hidden_size), as is usual for GRUs).

        **Raises:** `ValueError` naming the argument if a size is not positive.
        """
        self.in_size = positive_int("GRUCell", "in_size", in_size)
        self.hidden_size = positive_int("GRUCell", "hidden_size", hidden_size)
        self.reset_after = boolean("GRUCell", "reset_after", reset_after)
        dtype = jnp.result_type(float) if dtype is None else dtype
        # Three keys as before the torch form existed, so tutorial-form weights stay the same.
        k_ih, k_hh, k_b, *k_u = jr.split(key, 4 if reset_after else 3)
        lim = 1.0 / jnp.sqrt(hidden_size)
        self.weight_ih = jr.uniform(k_ih, (3 * hidden_size, in_size), dtype, -lim, lim)
        self.weight_hh = jr.uniform(k_hh, (3 * hidden_size, hidden_size), dtype, -lim, lim)
        self.bias = jr.uniform(k_b, (3 * hidden_size,), dtype, -lim, lim)
        self.bias_hh = jr.uniform(k_u[0], (hidden_size,), dtype, -lim, lim) if k_u else None

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
        if self.bias_hh is None:
            c = jnp.tanh(xw[2 * n :] + u_h @ (r * h))
        else:
            c = jnp.tanh(xw[2 * n :] + r * (u_h @ h + self.bias_hh))
        return z * h + (1 - z) * c

    def __call__(
        self,
        x: Float[Array, " input"],
        h: Float[Array, " hidden"],
        *,
        key: PRNGKeyArray | None = None,
    ) -> Float[Array, " hidden"]:
        """**Arguments:** `x` (input, `(in_size,)`), `h` (hidden state, `(hidden_size,)`).

        **Returns:** the next hidden state, `(hidden_size,)`.
        """
        del key
        check_shape("GRUCell", "x", x, (self.in_size,))
        check_shape("GRUCell", "h", h, (self.hidden_size,))
        return self.step(h, self.project(x))


class GRUEncoder(eqx.Module):
    """An optional input projection (Linear + ReLU on each step), then a `GRUCell` scanned over
    time with `lax.scan`; returns every hidden state. Shared by `GRU` and `GRUClassifier`."""

    embed: eqx.nn.Linear | None
    cell: GRUCell
    initial_state: Float[Array, " hidden"] | None
    in_size: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden_size: int,
        learn_initial_state: bool,
        input_projection: bool = True,
        reset_after: bool = False,
        dtype=None,
        *,
        key: PRNGKeyArray,
        owner: str = "GRUEncoder",
    ):
        """**Arguments:** `in_size` (features per step), `hidden_size`, `learn_initial_state`
        (a trained initial hidden state, or zeros), `input_projection` (Linear `in_size ->
        hidden_size` + ReLU before the cell; `False` feeds the raw features to the cell),
        `reset_after` (the cell's candidate form, see `GRUCell`), `dtype`, `key`; `owner`
        names the model in errors."""
        self.in_size = positive_int(owner, "in_size", in_size)
        hidden_size = positive_int(owner, "hidden_size", hidden_size)
        learn_initial_state = boolean(owner, "learn_initial_state", learn_initial_state)
        input_projection = boolean(owner, "input_projection", input_projection)
        reset_after = boolean(owner, "reset_after", reset_after)
        k_embed, k_cell = jr.split(key)
        if input_projection:
            self.embed = eqx.nn.Linear(in_size, hidden_size, dtype=dtype, key=k_embed)
            cell_in = hidden_size
        else:
            self.embed, cell_in = None, in_size
        self.cell = GRUCell(cell_in, hidden_size, reset_after, dtype=dtype, key=k_cell)
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.initial_state = jnp.zeros(hidden_size, dtype) if learn_initial_state else None

    def __call__(
        self, xs: Float[Array, "time features"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "time hidden"]:
        """**Arguments:** `xs`, one sequence `(time, in_size)`. **Returns:** `(time, hidden)`."""
        del key
        h0 = self.initial_state
        if h0 is None:
            h0 = jnp.zeros(self.cell.hidden_size, xs.dtype)
        # Every step's input projection in one matmul; the scan carries one array.
        if self.embed is not None:
            xs = jax.nn.relu(jax.vmap(self.embed)(xs))
        xw = self.cell.project(xs)

        def body(h, xw_t):
            h = self.cell.step(h, xw_t)
            return h, h

        _, hs = lax.scan(body, h0, xw)
        return hs


@compiled_init
def _init_sequence_model(
    owner: str,
    in_size: int,
    hidden_size: int,
    out_size: int,
    learn_initial_state: bool,
    input_projection: bool,
    reset_after: bool,
    dtype,
    key: PRNGKeyArray,
) -> tuple[GRUEncoder, eqx.nn.Linear]:
    k_enc, k_out = jr.split(key)
    encoder = GRUEncoder(
        in_size,
        hidden_size,
        learn_initial_state,
        input_projection,
        reset_after,
        dtype,
        key=k_enc,
        owner=owner,
    )
    return encoder, eqx.nn.Linear(hidden_size, out_size, dtype=dtype, key=k_out)


class GRU(eqx.Module):
    """Sequence to sequence: a `GRUEncoder` (an optional Linear + ReLU, then the GRU cell
    scanned over time) and a Linear readout of every hidden state.

    The defaults (1 input feature, 12 hidden units, 1 output, learned initial state) are the
    model of the Ornstein-Uhlenbeck denoising experiment.
    """

    encoder: GRUEncoder
    readout: eqx.nn.Linear
    in_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    learn_initial_state: bool = eqx.field(static=True)
    input_projection: bool = eqx.field(static=True)
    reset_after: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int = 1,
        hidden_size: int = 12,
        out_size: int = 1,
        learn_initial_state: bool = True,
        input_projection: bool = True,
        reset_after: bool = False,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_size` (features per step), `hidden_size`, `out_size` (outputs
        per step), `learn_initial_state` (a trained initial hidden state, or zeros),
        `input_projection` (Linear + ReLU before the cell, or the raw features into it),
        `reset_after` (the PyTorch/Equinox candidate form, see `GRUCell`), `dtype`, `key`.

        **Raises:** `ValueError` naming the argument if a size is not positive or a flag is
        not a bool.
        """
        self.in_size = positive_int("GRU", "in_size", in_size)
        self.hidden_size = positive_int("GRU", "hidden_size", hidden_size)
        self.out_size = positive_int("GRU", "out_size", out_size)
        self.learn_initial_state = boolean("GRU", "learn_initial_state", learn_initial_state)
        self.input_projection = boolean("GRU", "input_projection", input_projection)
        self.reset_after = boolean("GRU", "reset_after", reset_after)
        self.encoder, self.readout = _init_sequence_model(
            "GRU",
            self.in_size,
            self.hidden_size,
            self.out_size,
            self.learn_initial_state,
            self.input_projection,
            self.reset_after,
            dtype,
            key,
        )

    def __call__(
        self, xs: Float[Array, "time features"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "time out"]:
        """**Arguments:** `xs`, one sequence of shape `(time, in_size)`; `key` is unused.

        **Returns:** one output per time step, `(time, out_size)`.
        """
        del key
        check_shape("GRU", "xs", xs, ("time", self.in_size))
        hs = self.encoder(xs)
        return jax.vmap(self.readout)(hs)


class GRUClassifier(eqx.Module):
    """Sequence classification: a `GRUEncoder` and logits read from the last hidden state
    (for example image rows as time steps: `GRUClassifier(in_size=28)`, or a plain GRU over
    a 1-D signal: `GRUClassifier(in_size=1, input_projection=False)` on `(40, 1)` inputs)."""

    encoder: GRUEncoder
    readout: eqx.nn.Linear
    in_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    learn_initial_state: bool = eqx.field(static=True)
    input_projection: bool = eqx.field(static=True)
    reset_after: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int = 28,
        hidden_size: int = 128,
        num_classes: int = 10,
        learn_initial_state: bool = False,
        input_projection: bool = True,
        reset_after: bool = False,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `in_size` (features per step), `hidden_size`, `num_classes`,
        `learn_initial_state`, `input_projection`, `reset_after` (as for `GRU`), `dtype`,
        `key`.

        **Raises:** `ValueError` naming the argument if a size is not positive or a flag is
        not a bool.
        """
        owner = "GRUClassifier"
        self.in_size = positive_int(owner, "in_size", in_size)
        self.hidden_size = positive_int(owner, "hidden_size", hidden_size)
        self.num_classes = positive_int(owner, "num_classes", num_classes)
        self.learn_initial_state = boolean(owner, "learn_initial_state", learn_initial_state)
        self.input_projection = boolean(owner, "input_projection", input_projection)
        self.reset_after = boolean(owner, "reset_after", reset_after)
        self.encoder, self.readout = _init_sequence_model(
            owner,
            self.in_size,
            self.hidden_size,
            self.num_classes,
            self.learn_initial_state,
            self.input_projection,
            self.reset_after,
            dtype,
            key,
        )

    def __call__(
        self, xs: Float[Array, "time features"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " classes"]:
        """**Arguments:** `xs`, one sequence `(time, in_size)`; `key` is unused.

        **Returns:** logits from the last hidden state, `(num_classes,)`.
        """
        del key
        check_shape("GRUClassifier", "xs", xs, ("time", self.in_size))
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
def gru_ou(*, key: PRNGKeyArray, **kwargs: Any) -> tuple[GRU, eqx.nn.State]:
    """The GRU of the Ornstein-Uhlenbeck denoising experiment (`zoo.GRU`'s defaults:
    Linear 1->12, ReLU, GRU 12, Linear 12->1)."""
    return eqx.nn.make_with_state(GRU)(**kwargs, key=key)


@register_model(head=lambda m: m.readout, default_tag="fashion")
def gru_rows(*, key: PRNGKeyArray, **kwargs: Any) -> tuple[GRUClassifier, eqx.nn.State]:
    """A `zoo.GRUClassifier` reading 28x28 images row by row (28 steps of 28 pixels)."""
    return eqx.nn.make_with_state(GRUClassifier)(**kwargs, key=key)
