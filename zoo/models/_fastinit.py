"""Random initialisation that stays fast on a CPU for models with hundreds of weight arrays.

Drawing each array with its own `jax.random.normal(key, shape)` compiles one PRNG kernel per
distinct shape (eagerly) or one per array (under `jit`): building ResNet-50 either way took
20-45 s on this project's 2-core machines. Here every array is cut from fixed-size chunks of
normal numbers, so a single kernel, compiled once per process, serves every model; the
values depend only on the key (the same with or without `jit`).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._typing import Array, PRNGKeyArray

_CHUNK = 1 << 16


def normal(key: PRNGKeyArray, shape: tuple[int, ...], dtype=None, std: float = 1.0) -> Array:
    """Normal numbers of standard deviation `std`: `shape`, in `dtype` (default float)."""
    n = math.prod(shape)
    chunks = [jr.normal(jr.fold_in(key, i), (_CHUNK,)) for i in range(-(-n // _CHUNK))]
    dtype = jnp.zeros((), dtype).dtype  # None -> JAX's default float
    try:  # NumPy cuts and scales without compiling a kernel per shape
        flat = np.concatenate([np.asarray(c) for c in chunks])[:n] * np.float32(std)
    except jax.errors.TracerArrayConversionError:  # under `jit`: the same numbers, traced
        return (jnp.concatenate(chunks)[:n] * std).reshape(shape).astype(dtype)
    return jnp.asarray(flat.reshape(shape), dtype=dtype)


def skeleton(cls, *args, **kwargs):
    """`cls(*args, **kwargs)` with `jax.ShapeDtypeStruct`s for its arrays: nothing is drawn or
    computed. The caller replaces every array leaf (with `eqx.tree_at`)."""
    return eqx.filter_eval_shape(cls, *args, **kwargs)
