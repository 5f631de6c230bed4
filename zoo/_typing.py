"""Shape aliases shared across zoo's annotations."""

from jaxtyping import Array, Float, Int, PRNGKeyArray, Shaped

__all__ = ["Array", "Float", "Int", "PRNGKeyArray", "Shaped", "Scalar"]

Scalar = Float[Array, ""]
