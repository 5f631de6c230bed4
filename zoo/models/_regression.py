"""Linear and (binary) logistic regression, and the least-squares reference solution."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from .._typing import Array, Float, PRNGKeyArray, check_shape
from ._validate import positive_int


def least_squares(
    x: Float[Array, "samples features"],
    y: Float[Array, " samples"],
    *,
    fit_intercept: bool = True,
) -> tuple[Float[Array, " features"], Float[Array, ""]]:
    """The least-squares fit `y ~ x @ coef + intercept`, by `jnp.linalg.lstsq`.

    **Arguments:** `x` (design matrix), `y` (targets), `fit_intercept` (add a bias column).

    **Returns:** `(coef, intercept)`; `intercept` is 0 when `fit_intercept=False`.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"least_squares: `x` has {x.shape[0]} samples but `y` has {y.shape[0]}")
    if fit_intercept:
        design = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
        sol = jnp.linalg.lstsq(design, y)[0]
        return sol[:-1], sol[-1]
    return jnp.linalg.lstsq(x, y)[0], jnp.zeros((), x.dtype)


def _init_affine(in_features: int, dtype, key: PRNGKeyArray | None) -> tuple[Array, Array]:
    dtype = jnp.result_type(float) if dtype is None else dtype
    bias = jnp.zeros((), dtype)
    if key is None:
        return jnp.zeros(in_features, dtype), bias
    return 0.01 * jr.normal(key, (in_features,), dtype), bias


class LinearRegression(eqx.Module):
    """`y = w . x + b` for one example of `in_features` features."""

    weight: Float[Array, " features"]
    bias: Float[Array, ""]
    in_features: int = eqx.field(static=True)

    def __init__(self, in_features: int, dtype=None, *, key: PRNGKeyArray | None = None):
        """**Arguments:** `in_features`; `dtype`; `key` draws small random weights (zeros
        when `None`, the usual start for a convex problem).

        **Raises:** `ValueError` if `in_features` is not positive.
        """
        self.in_features = positive_int(type(self).__name__, "in_features", in_features)
        self.weight, self.bias = _init_affine(in_features, dtype, key)

    @classmethod
    def from_least_squares(
        cls, x: Float[Array, "samples features"], y: Float[Array, " samples"]
    ) -> "LinearRegression":
        """The exact least-squares fit, as a model."""
        coef, intercept = least_squares(x, y)
        model = cls(x.shape[1], dtype=x.dtype)
        return eqx.tree_at(lambda m: (m.weight, m.bias), model, (coef, intercept))

    def __call__(
        self, x: Float[Array, " features"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, ""]:
        """**Arguments:** `x`, one example `(in_features,)`; `key` is unused.

        **Returns:** the prediction, a scalar.
        """
        del key
        check_shape(type(self).__name__, "x", x, (self.in_features,))
        return jnp.dot(self.weight, x) + self.bias


class LogisticRegression(eqx.Module):
    """Binary logistic regression: the logit `w . x + b`; `probability` gives sigmoid of it."""

    weight: Float[Array, " features"]
    bias: Float[Array, ""]
    in_features: int = eqx.field(static=True)

    def __init__(self, in_features: int, dtype=None, *, key: PRNGKeyArray | None = None):
        """**Arguments:** as `LinearRegression`."""
        self.in_features = positive_int(type(self).__name__, "in_features", in_features)
        self.weight, self.bias = _init_affine(in_features, dtype, key)

    def __call__(
        self, x: Float[Array, " features"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, ""]:
        """**Returns:** the logit (log-odds of the positive class) for one example."""
        del key
        check_shape(type(self).__name__, "x", x, (self.in_features,))
        return jnp.dot(self.weight, x) + self.bias

    def probability(self, x: Float[Array, " features"]) -> Float[Array, ""]:
        """P(y = 1 | x) for one example."""
        return jax.nn.sigmoid(self(x))
