"""Which leaves train: filter specs, resolved once into one bool per model leaf."""

import dataclasses
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import equinox as eqx
import jax
import jax.tree_util as jtu
from jaxtyping import PyTree

# `None` (every inexact array trains), a bool pytree that is a prefix of the model (as
# Equinox's filter specs), or a callable on each leaf's path (`"layers.0.weight"`).
TrainableSpec: TypeAlias = PyTree[bool] | Callable[[str], bool] | None


def leaf_path(path: Any) -> str:
    """A leaf's path as `zoo.summary` prints it, e.g. `"convs.0.weight"`."""
    return jtu.keystr(path, simple=True, separator=".")


def _is_state_index(x: Any) -> bool:
    return isinstance(x, eqx.nn.StateIndex)


def has_state(model: PyTree) -> bool:
    """Whether `model` holds an `eqx.nn.StateIndex` (BatchNorm and other stateful layers)."""
    return any(_is_state_index(x) for x in jax.tree.leaves(model, is_leaf=_is_state_index))


def _state_index_leaves(model: PyTree) -> list[bool]:
    """For each leaf of `model`, whether it is the initial value held by a `StateIndex`
    (running statistics are model state, never parameters)."""
    out: list[bool] = []
    for node in jax.tree.leaves(model, is_leaf=_is_state_index):
        n = len(jax.tree.leaves(node)) if _is_state_index(node) else 1
        out.extend([_is_state_index(node)] * n)
    return out


def resolve_trainable(model: PyTree, trainable: TrainableSpec) -> tuple[bool, ...] | None:
    """One bool per leaf of `model` (in `jax.tree_util` order): whether it trains.

    Only inexact arrays ever train. `None` stays `None`, the default: every inexact array.
    """
    if trainable is None:
        return None
    leaves_with_path = jtu.tree_flatten_with_path(model)[0]
    if callable(trainable) and not isinstance(trainable, eqx.Module):
        wanted = [bool(trainable(leaf_path(p))) for p, _ in leaves_with_path]
        in_state = _state_index_leaves(model)
        wanted = [w and not s for w, s in zip(wanted, in_state, strict=True)]
    else:
        try:
            full = jtu.tree_map(
                lambda flag, sub: jtu.tree_map(lambda _: bool(flag), sub), trainable, model
            )
        except ValueError as e:
            raise ValueError(
                "`trainable` must be a bool pytree with the model's structure (or a prefix of "
                f"it, as Equinox filter specs), or a callable on leaf paths: {e}"
            ) from None
        wanted = jax.tree.leaves(full)
    return tuple(
        bool(w) and eqx.is_inexact_array(x)
        for w, (_, x) in zip(wanted, leaves_with_path, strict=True)
    )


def trainable_mask(model: PyTree, trainable: tuple[bool, ...] | None) -> PyTree[bool]:
    """The bool pytree of `model`'s structure that `eqx.partition` takes."""
    if trainable is None:
        return jtu.tree_map(eqx.is_inexact_array, model)
    leaves, treedef = jtu.tree_flatten(model)
    if len(leaves) != len(trainable):
        raise ValueError(
            f"the trainable filter has {len(trainable)} entries but the model has "
            f"{len(leaves)} leaves: build it for this model"
        )
    return jtu.tree_unflatten(treedef, list(trainable))


def trainable_filter(
    model: PyTree,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] = (),
) -> PyTree[bool]:
    """A bool pytree saying which leaves of `model` train, from glob patterns on their paths.

    Paths are written as [`zoo.summary`][] prints them: `"convs.0.weight"`, `"head.bias"`.
    A leaf trains if it is an inexact array, matches one of `include` (every leaf when
    `include` is `None`) and none of `exclude`. BatchNorm running statistics (the values an
    `eqx.nn.StateIndex` holds) never train.

    !!! example

        ```python
        probe = zoo.train.trainable_filter(model, include="head.*")  # a linear probe
        no_norms = zoo.train.trainable_filter(model, exclude="norms.*")
        train_state = zoo.train.init_train_state(model, opt, key=key, trainable=probe)
        ```

    **Arguments:**

    - `model`: the model to fine-tune.
    - `include`: a pattern or patterns (`fnmatch`: `*`, `?`, `[...]`) of paths that train.
    - `exclude`: a pattern or patterns of paths that stay frozen, applied after `include`.

    **Returns:** a bool pytree of `model`'s structure, to pass as `trainable=` to
    [`zoo.train.init_train_state`][] (or to `eqx.partition`).

    **Raises:** `ValueError` if no leaf trains (a pattern that matches nothing, say), naming
    the patterns and a few of the model's paths.
    """
    includes = None if include is None else ([include] if isinstance(include, str) else include)
    excludes = [exclude] if isinstance(exclude, str) else list(exclude)

    def trains(path: str) -> bool:
        if includes is not None and not any(fnmatch.fnmatchcase(path, p) for p in includes):
            return False
        return not any(fnmatch.fnmatchcase(path, p) for p in excludes)

    flags = resolve_trainable(model, trains)
    assert flags is not None
    if not any(flags):
        paths = [
            leaf_path(p) for p, x in jtu.tree_flatten_with_path(model)[0] if eqx.is_inexact_array(x)
        ]
        raise ValueError(
            f"trainable_filter(include={include!r}, exclude={exclude!r}) leaves nothing to "
            f"train; the model's parameter paths include {paths[:6]}"
        )
    leaves, treedef = jtu.tree_flatten(model)
    return jtu.tree_unflatten(treedef, list(flags))


def _is_norm_layer(x: Any) -> bool:
    """A layer with an `inference` switch and running statistics (BatchNorm)."""
    if not isinstance(x, eqx.Module) or not dataclasses.is_dataclass(x):
        return False
    if "inference" not in {f.name for f in dataclasses.fields(x)}:
        return False
    return has_state(x)


def norms_in_inference_mode(model: PyTree, mask: PyTree[bool]) -> PyTree:
    """`model` with every BatchNorm-like layer that has nothing to train in inference mode,
    so that it normalises with, and keeps, its running statistics."""

    def fix(layer, layer_mask):
        if _is_norm_layer(layer) and not any(jax.tree.leaves(layer_mask)):
            return eqx.tree_at(lambda m: m.inference, layer, True)
        return layer

    return jtu.tree_map(fix, model, mask, is_leaf=_is_norm_layer)
