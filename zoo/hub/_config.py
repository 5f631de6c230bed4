"""A model's constructor configuration, read back from the model itself."""

import dataclasses
import inspect
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

# Never part of a config: the key is not a hyperparameter, and the dtype is read from the
# parameters themselves.
_SKIPPED = ("self", "key", "dtype")


def constructor_config(model: Any) -> dict[str, Any]:
    """The constructor arguments of `model`, read from the fields that keep them.

    Equinox models keep their hyperparameters as (static) fields named like the constructor's
    arguments (`zoo.MLP(width=256)` has `model.width == 256`); this reads every argument of
    `type(model).__init__` that has such a field, and the parameters' dtype when it is not
    JAX's default float. `zoo.save_pretrained` stores the result (less the builder's
    defaults) as the card's `config`, and checks that it rebuilds the model.

    ```python
    import jax.random as jr, zoo

    zoo.hub.constructor_config(zoo.MLP(width=8, depth=1, key=jr.PRNGKey(0)))
    # {'in_size': 784, 'num_classes': 10, 'width': 8, 'depth': 1, 'activation': 'relu'}
    ```

    **Arguments:** `model`, an `eqx.Module` (or its `eqx.filter_eval_shape` skeleton).

    **Returns:** `{argument: value}`; arguments without a field of their name are left out
    (and keep the builder's defaults when the model is rebuilt).
    """
    cls = type(model)
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    fields = (
        {f.name for f in dataclasses.fields(model)} if dataclasses.is_dataclass(model) else set()
    )
    config: dict[str, Any] = {}
    for name, p in parameters.items():
        if name in _SKIPPED or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in fields:
            value = getattr(model, name)
            if not eqx.is_array(value) and not isinstance(value, eqx.Module | jax.ShapeDtypeStruct):
                config[name] = value
    if "dtype" in parameters:
        floats = [
            leaf
            for leaf in jax.tree.leaves(model)
            if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)
        ]
        if floats and np.dtype(floats[0].dtype) != np.dtype(jnp.result_type(float)):
            config["dtype"] = np.dtype(floats[0].dtype).name
    return config
