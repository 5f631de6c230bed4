"""The train state: everything that changes during training, as one PyTree."""

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PRNGKeyArray, PyTree


class TrainState(eqx.Module):
    """Model, model state, optimiser state, step counter and PRNG key, as one PyTree.

    Every field that changes between steps is an array (the step too), so passing a new
    `TrainState` to a compiled step never triggers a recompilation. Build one with
    [`zoo.train.init_train_state`][].

    **Fields:**

    - `model`: the `eqx.Module` being trained.
    - `model_state`: its `eqx.nn.State` (BatchNorm running statistics), or `None` for a
      stateless model.
    - `opt_state`: the optax optimiser state of the model's inexact arrays.
    - `step`: the number of optimiser updates applied so far, an `int32` scalar array.
    - `key`: the PRNG key that the next step splits (dropout, generated data).
    """

    model: PyTree
    model_state: eqx.nn.State | None
    opt_state: PyTree
    step: Int[Array, ""]
    key: PRNGKeyArray


def init_train_state(
    model: PyTree,
    optimizer: optax.GradientTransformation,
    *,
    key: PRNGKeyArray,
    model_state: eqx.nn.State | None = None,
) -> TrainState:
    """Start training `model`: initialise the optimiser on its inexact arrays, step 0.

    **Arguments:**

    - `model`: the model to train.
    - `optimizer`: an optax transformation, usually `optax.chain(...)` or `optax.adam(...)`.
    - `key`: the PRNG key that training steps split from.
    - `model_state`: the `eqx.nn.State` of a stateful model (the second result of
      `eqx.nn.make_with_state`); `None` for a stateless one.

    **Returns:** a [`zoo.train.TrainState`][] at step 0.
    """
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    return TrainState(model, model_state, opt_state, jnp.zeros((), jnp.int32), key)
