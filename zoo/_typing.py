"""Shape aliases and the shape check shared across zoo's models."""

from jaxtyping import Array, Float, Int, PRNGKeyArray, Shaped

__all__ = ["Array", "Float", "Int", "PRNGKeyArray", "Shaped", "Scalar", "check_shape"]

Scalar = Float[Array, ""]


def check_shape(
    owner: str, argument: str, x: Array, expected: tuple[int | str | None, ...]
) -> None:
    """Raise a `ValueError` unless `x.shape` matches `expected`.

    Each entry of `expected` is a size the axis must have, or the name of an axis of any size
    (`"time"`), printed by meaning in the error: `(time, 40)`, not `(*, 40)`; `None` matches
    any size too (printed `*`).

    jaxtyping checks ranks and dtypes, but it cannot tie an axis to a model's hyperparameter
    (a 783-feature input into a 784-input MLP), so models call this at trace time: it costs
    nothing inside `jit` and guards users whether or not runtime checking is switched on.
    """
    ok = len(x.shape) == len(expected) and all(
        not isinstance(e, int) or e == s for e, s in zip(expected, x.shape, strict=True)
    )
    if not ok:
        dims = ["*" if e is None else str(e) for e in expected]
        want = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
        raise ValueError(
            f"{owner}: argument `{argument}` must have shape {want}, got {tuple(x.shape)}"
        )
