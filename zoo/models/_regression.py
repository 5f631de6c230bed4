"""Linear and logistic (binary or multinomial) regression, and the least-squares reference
solution."""

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


def _init_affine(shape: tuple[int, ...], dtype, key: PRNGKeyArray | None) -> tuple[Array, Array]:
    """Weights of `shape` (`(in_size,)`, or `(num_classes, in_size)`) and a bias for each
    output: zeros, or small normal weights when a `key` is given."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    bias = jnp.zeros(shape[:-1], dtype)
    if key is None:
        return jnp.zeros(shape, dtype), bias
    return 0.01 * jr.normal(key, shape, dtype), bias


class LinearRegression(eqx.Module):
    """`y = w . x + b` for one example of `in_size` features."""

    weight: Float[Array, " features"]
    bias: Float[Array, ""]
    in_size: int = eqx.field(static=True)

    def __init__(self, in_size: int, dtype=None, *, key: PRNGKeyArray | None = None):
        """**Arguments:** `in_size` (number of features); `dtype`; `key` draws small random
        weights (zeros when `None`, the usual start for a convex problem).

        **Raises:** `ValueError` if `in_size` is not positive.
        """
        self.in_size = positive_int(type(self).__name__, "in_size", in_size)
        self.weight, self.bias = _init_affine((in_size,), dtype, key)

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
        """**Arguments:** `x`, one example `(in_size,)`; `key` is unused.

        **Returns:** the prediction, a scalar.
        """
        del key
        check_shape(type(self).__name__, "x", x, (self.in_size,))
        return jnp.dot(self.weight, x) + self.bias


class LogisticRegression(eqx.Module):
    """Logistic regression: binary (one logit, `sigmoid` gives P(y = 1)) or, with
    `num_classes`, multinomial (one logit per class, `softmax` gives the probabilities).

    The binary model's logit is a scalar, to be trained with a binary cross-entropy; the
    multinomial one's logits, `(num_classes,)`, with the usual softmax cross-entropy.
    """

    weight: Float[Array, "*classes features"]
    bias: Float[Array, "*classes"]
    in_size: int = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        num_classes: int | None = None,
        dtype=None,
        *,
        key: PRNGKeyArray | None = None,
    ):
        """**Arguments:**

        - `in_size`: number of features.
        - `num_classes`: `None` for the binary model (a scalar logit), or the number of
          classes (at least 2) for the multinomial one.
        - `dtype`; `key` draws small random weights (zeros when `None`).

        **Raises:** `ValueError` naming the argument for a size that is not positive or
        `num_classes` below 2.
        """
        owner = type(self).__name__
        self.in_size = positive_int(owner, "in_size", in_size)
        if num_classes is not None and (positive_int(owner, "num_classes", num_classes) < 2):
            raise ValueError(
                f"{owner}: `num_classes` must be at least 2 (or None for the binary model), "
                f"got {num_classes}"
            )
        self.num_classes = num_classes
        shape = (in_size,) if num_classes is None else (num_classes, in_size)
        self.weight, self.bias = _init_affine(shape, dtype, key)

    def __call__(
        self, x: Float[Array, " features"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "*classes"]:
        """**Arguments:** `x`, one example `(in_size,)`; `key` is unused.

        **Returns:** the logit (log-odds of the positive class), a scalar, for the binary
        model; the logits `(num_classes,)` for the multinomial one.
        """
        del key
        check_shape(type(self).__name__, "x", x, (self.in_size,))
        return self.weight @ x + self.bias

    def probability(self, x: Float[Array, " features"]) -> Float[Array, "*classes"]:
        """P(y = 1 | x) (binary), or the class probabilities `(num_classes,)`, for one
        example."""
        logits = self(x)
        return jax.nn.sigmoid(logits) if self.num_classes is None else jax.nn.softmax(logits)
