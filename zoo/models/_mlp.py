"""The multi-layer perceptron."""

from typing import Any

import equinox as eqx
import jax.random as jr

from .._typing import Array, Float, PRNGKeyArray, check_shape
from ._activations import get_activation
from ._init import compiled_init
from ._registry import WeightSet, register_model
from ._validate import non_negative_int, positive_int


@compiled_init
def _init_linears(sizes: tuple[int, ...], dtype, key: PRNGKeyArray) -> tuple[eqx.nn.Linear, ...]:
    keys = jr.split(key, len(sizes) - 1)
    return tuple(
        eqx.nn.Linear(i, o, dtype=dtype, key=k)
        for i, o, k in zip(sizes[:-1], sizes[1:], keys, strict=True)
    )


class MLP(eqx.Module):
    """A fully connected network: `depth` hidden layers of `width` units, then a linear head.

    The defaults build the 784-512-512-10 ReLU network of the MNIST MLP experiment.
    """

    layers: tuple[eqx.nn.Linear, ...]
    in_size: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        in_size: int = 784,
        num_classes: int = 10,
        width: int = 512,
        depth: int = 2,
        activation: str = "relu",
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: number of input features.
        - `num_classes`: number of outputs (classes, for a classifier; 1 for a regression).
        - `width`: units in each hidden layer.
        - `depth`: number of hidden layers (0 gives a linear model).
        - `activation`: name of the hidden activation (`"relu"`, `"gelu"`, `"tanh"`, ...).
        - `dtype`: parameter dtype (default: JAX's default float).
        - `key`: PRNG key for the initialisation.

        **Raises:** `ValueError` naming the argument if a size is not positive or the
        activation is unknown.
        """
        self.in_size = positive_int("MLP", "in_size", in_size)
        self.num_classes = positive_int("MLP", "num_classes", num_classes)
        self.width = positive_int("MLP", "width", width)
        self.depth = non_negative_int("MLP", "depth", depth)
        get_activation("MLP", activation)
        self.activation = activation
        sizes = (in_size,) + (width,) * depth + (num_classes,)
        self.layers = _init_linears(sizes, dtype, key)

    def __call__(
        self, x: Float[Array, " in_size"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " num_classes"]:
        """**Arguments:**

        - `x`: one example, shape `(in_size,)`; flatten images first (`x.reshape(-1)`).
        - `key`: unused; accepted so that every zoo model shares one call signature.

        **Returns:** the outputs (logits), shape `(num_classes,)`.
        """
        del key
        check_shape("MLP", "x", x, (self.in_size,))
        act = get_activation("MLP", self.activation)
        for layer in self.layers[:-1]:
            x = act(layer(x))
        return self.layers[-1](x)


# ----------------------------------------------------------------------------------------------
# Registered architectures and their pretrained weights.

MLP_MNIST_WEIGHTS = {
    "fashion": WeightSet(
        dataset="fashion-mnist",
        metrics={"test_accuracy": 0.898},
        preprocess={"layout": "flat", "normalize": "unit"},
        description="trained by recipes.mnist_mlp (10 epochs)",
    ),
}


@register_model(head=lambda m: m.layers[-1], default_tag="fashion", weights=MLP_MNIST_WEIGHTS)
def mlp_mnist(*, key: PRNGKeyArray, **kwargs: Any) -> tuple[MLP, eqx.nn.State]:
    """The 784-512-512-10 ReLU MLP of the MNIST experiment (`zoo.MLP`'s defaults)."""
    return eqx.nn.make_with_state(MLP)(**kwargs, key=key)
