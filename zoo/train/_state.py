"""The train state: everything that changes during training, as one PyTree."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Int, PRNGKeyArray, PyTree

from ._trainable import TrainableSpec, has_state, resolve_trainable, trainable_mask


def empty_state() -> eqx.nn.State:
    """The model state of a stateless model: an `eqx.nn.State` with nothing in it."""
    return eqx.nn.State(None)


def check_model_state(model: PyTree, model_state: eqx.nn.State | None) -> eqx.nn.State:
    """`model_state`, or an empty state for a stateless model given none.

    **Raises:** `ValueError` for a stateful model (one holding an `eqx.nn.StateIndex`, as
    BatchNorm does) whose state is missing or empty.
    """
    if model_state is not None and not isinstance(model_state, eqx.nn.State):
        raise TypeError(f"model_state must be an eqx.nn.State, got {type(model_state).__name__}")
    empty = model_state is None or not jax.tree.leaves(model_state)
    if empty and has_state(model):
        raise ValueError(
            f"{type(model).__name__} is stateful (it holds BatchNorm or other running "
            "statistics) but no model state was given: build it with "
            "`model, model_state = eqx.nn.make_with_state(Model)(...)` and pass "
            "`model_state=model_state`"
        )
    return empty_state() if model_state is None else model_state


class TrainState(eqx.Module):
    """Model, model state, optimiser state, step counter and PRNG key, as one PyTree.

    Every field that changes between steps is an array (the step too), so passing a new
    `TrainState` to a compiled step never triggers a recompilation. Build one with
    [`zoo.train.init_train_state`][].

    **Fields:**

    - `model`: the `eqx.Module` being trained.
    - `model_state`: its `eqx.nn.State` (BatchNorm running statistics); an empty
      `eqx.nn.State` for a stateless model.
    - `opt_state`: the optax optimiser state of the model's trainable arrays (nothing for
      frozen ones).
    - `step`: the number of optimiser updates applied so far, an `int32` scalar array.
    - `key`: the PRNG key that the next step splits (dropout, generated data).
    - `trainable`: static; one bool per leaf of `model` (`jax.tree_util` order) saying
      whether it trains, or `None` for every inexact array. Read it as a pytree with
      [`zoo.train.TrainState.trainable_mask`][].
    """

    model: PyTree
    model_state: eqx.nn.State
    opt_state: PyTree
    step: Int[Array, ""]
    key: PRNGKeyArray
    trainable: tuple[bool, ...] | None = eqx.field(static=True, default=None)

    def trainable_mask(self) -> PyTree[bool]:
        """The bool pytree of the model's structure: `True` where a leaf trains."""
        return trainable_mask(self.model, self.trainable)


def init_train_state(
    model: PyTree,
    optimizer: optax.GradientTransformation,
    *,
    key: PRNGKeyArray,
    model_state: eqx.nn.State | None = None,
    trainable: TrainableSpec = None,
) -> TrainState:
    """Start training `model`: initialise the optimiser on its trainable arrays, step 0.

    **Arguments:**

    - `model`: the model to train.
    - `optimizer`: an optax transformation, usually `optax.chain(...)` or `optax.adam(...)`.
    - `key`: the PRNG key that training steps split from.
    - `model_state`: the `eqx.nn.State` of a stateful model (the second result of
      `eqx.nn.make_with_state`); leave it out (or pass an empty state) for a stateless one.
    - `trainable`: which leaves train: `None` for every inexact array; a bool pytree with
      the model's structure or a prefix of it (Equinox's filter specs, e.g. from
      [`zoo.train.trainable_filter`][]); or a callable `f(path) -> bool` on each leaf's
      path as [`zoo.summary`][] prints it (`"head.weight"`). Frozen leaves get no
      gradients and no optimiser state.

    **Returns:** a [`zoo.train.TrainState`][] at step 0.

    **Raises:** `ValueError` for a stateful model without its `model_state`.
    """
    model_state = check_model_state(model, model_state)
    flags = resolve_trainable(model, trainable)
    params = eqx.filter(model, trainable_mask(model, flags))
    opt_state = optimizer.init(params)
    return TrainState(model, model_state, opt_state, jnp.zeros((), jnp.int32), key, flags)
