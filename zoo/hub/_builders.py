"""The architectures zoo registers: the experiments' models, by name.

Each builder takes JSON-valued keyword arguments (they are what `config.json` stores) and
returns `(model, state)`; `eqx.nn.make_with_state` gives stateless models an empty state.
"""

from typing import Any

import equinox as eqx

from .._typing import PRNGKeyArray
from ..models import GRU, MLP, ConvNet, GRUClassifier
from ._registry import register_model


@register_model(head=lambda m: m.layers[-1], default_tag="fashion")
def mlp_mnist(
    *, key: PRNGKeyArray, num_classes: int | None = None, **kwargs: Any
) -> tuple[MLP, eqx.nn.State]:
    """The 784-512-512-10 ReLU MLP of the MNIST experiment (`zoo.MLP`; `num_classes` sets
    `out_size`)."""
    # `num_classes` is the hub-wide spelling; it wins over `out_size` so that
    # `create_model(..., num_classes=n)` can replace a saved config's value.
    if num_classes is not None:
        kwargs["out_size"] = num_classes
    return eqx.nn.make_with_state(MLP)(**kwargs, key=key)


@register_model(head=lambda m: m.head, default_tag="fashion")
def cnn_mnist(
    *, key: PRNGKeyArray, num_classes: int | None = None, **kwargs: Any
) -> tuple[ConvNet, eqx.nn.State]:
    """The BatchNorm ConvNet of the MNIST experiment (`zoo.ConvNet`'s defaults)."""
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return eqx.nn.make_with_state(ConvNet)(**kwargs, key=key)


# A stronger network for Fashion-MNIST, the "2 conv + pooling + BN" row of the dataset's
# published benchmark table: two blocks of conv3-BN-ReLU-maxpool2, then a 256-unit dense
# layer with dropout. Two convs per block would be stronger still, but cost 4x the compute.
STRONG_CNN: dict[str, Any] = {
    "channels": (32, 64),
    "kernel_sizes": 3,
    "strides": 1,
    "batch_norm": True,
    "pools": 2,
    "hidden": (256,),
    "dropout": 0.3,
}


@register_model(head=lambda m: m.head, default_tag="fashion")
def cnn_mnist_strong(
    *, key: PRNGKeyArray, num_classes: int | None = None, **kwargs: Any
) -> tuple[ConvNet, eqx.nn.State]:
    """A stronger `zoo.ConvNet` for Fashion-MNIST: 2 x (conv3-BN-ReLU-maxpool2), dense 256
    with dropout 0.3."""
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return eqx.nn.make_with_state(ConvNet)(**{**STRONG_CNN, **kwargs}, key=key)


@register_model(default_tag="ou")
def gru_ou(
    *, key: PRNGKeyArray, num_classes: int | None = None, **kwargs: Any
) -> tuple[GRU, eqx.nn.State]:
    """The GRU of the Ornstein-Uhlenbeck denoising experiment (`zoo.GRU`'s defaults:
    Linear 1->12, ReLU, GRU 12, Linear 12->1)."""
    if num_classes is not None:
        raise ValueError("gru_ou is a sequence-to-sequence model: it has no `num_classes`")
    return eqx.nn.make_with_state(GRU)(**kwargs, key=key)


@register_model(head=lambda m: m.readout, default_tag="fashion")
def gru_rows(
    *, key: PRNGKeyArray, num_classes: int | None = None, **kwargs: Any
) -> tuple[GRUClassifier, eqx.nn.State]:
    """A `zoo.GRUClassifier` reading 28x28 images row by row (28 steps of 28 pixels)."""
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return eqx.nn.make_with_state(GRUClassifier)(**kwargs, key=key)
