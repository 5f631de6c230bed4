"""A convolutional classifier with BatchNorm, its running statistics held in `eqx.nn.State`."""

import math
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr

from .._typing import Array, Float, PRNGKeyArray, check_shape
from ._activations import get_activation
from ._registry import WeightSet, register_model
from ._validate import per_layer, positive_int


def _conv_hwc(conv: eqx.nn.Conv2d, x: Float[Array, "1 h w c"]) -> Float[Array, "1 h2 w2 o"]:
    """`conv` (its own OIHW weights) applied channels-last, the layout XLA:CPU's convolutions
    and per-channel reductions run fastest in."""
    y = lax.conv_general_dilated(
        x,
        conv.weight,
        conv.stride,
        conv.padding,
        rhs_dilation=conv.dilation,
        feature_group_count=conv.groups,
        dimension_numbers=("NHWC", "OIHW", "NHWC"),
    )
    return y if conv.bias is None else y + conv.bias.reshape(1, 1, 1, -1)


def _batch_norm_hwc(
    norm: eqx.nn.BatchNorm, x: Float[Array, "1 h w c"], state: eqx.nn.State
) -> tuple[Float[Array, "1 h w c"], eqx.nn.State]:
    """`eqx.nn.BatchNorm(mode="batch")` on a channels-last map: the same statistics, running
    averages and zero-debiased inference, read from and written to `norm`'s own state.

    Calling `norm` itself on `moveaxis`-ed maps is slower (a strong-preset step 178-205 ms
    against 108-136 ms measured), so its few lines are repeated here; the model tests check
    them against a NumPy BatchNorm."""
    counter_index, stats_index = norm.batch_counter, norm.batch_state_index
    assert counter_index is not None and stats_index is not None  # mode="batch" has both
    counter = state.get(counter_index)
    hidden_mean, hidden_var = state.get(stats_index)
    if norm.inference:
        debias = jnp.where(counter == 0, 1, 1 - norm.momentum**counter)
        mean, var = hidden_mean / debias, hidden_var / debias
    else:
        mean = lax.pmean(jnp.mean(x, axis=(0, 1, 2)), norm.axis_name)
        centred = x - mean.reshape(1, 1, 1, -1)
        var = lax.pmean(jnp.mean(jnp.square(centred), axis=(0, 1, 2)), norm.axis_name)
        var = jnp.maximum(0.0, var)
        m = norm.momentum
        state = state.set(counter_index, counter + 1)
        state = state.set(
            stats_index,
            (hidden_mean * m + mean * (1 - m), hidden_var * m + var * (1 - m)),
        )
    channel = (1, 1, 1, -1)
    y = (x - mean.reshape(channel)) / jnp.sqrt(var + norm.eps).reshape(channel)
    if norm.channelwise_affine:
        assert norm.weight is not None and norm.bias is not None
        y = y * norm.weight.reshape(channel) + norm.bias.reshape(channel)
    return y, state


def _conv_out(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "SAME":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


class ConvNet(eqx.Module):
    """Conv blocks (Conv -> optional BatchNorm -> activation -> optional max-pool), then a
    dense head. Stateful: build with `eqx.nn.make_with_state(ConvNet)(..., key=key)`.

    The defaults build the CNN of the MNIST experiment: Conv(32, 5x5, s2)+BN+ReLU,
    Conv(32, 5x5, s2)+BN+ReLU, Conv(10, 3x3, s2)+BN+ReLU, Conv(10, 3x3, s2)+ReLU (all SAME
    padding), flatten, Linear to 10 classes.

    Training mode normalises with the batch statistics (BatchNorm `mode="batch"`, batched with
    `jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))`) and updates
    the running statistics in `state`; `eqx.nn.inference_mode(model)` uses the running ones.
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    norms: tuple[eqx.nn.BatchNorm | None, ...]
    hidden: tuple[eqx.nn.Linear, ...]
    head: eqx.nn.Linear
    dropout: eqx.nn.Dropout
    pools: tuple[int, ...] = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    image_size: tuple[int, int] = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        channels: Sequence[int] = (32, 32, 10, 10),
        kernel_sizes: int | Sequence[int] = (5, 5, 3, 3),
        strides: int | Sequence[int] = 2,
        batch_norm: bool | Sequence[bool] = (True, True, True, False),
        pools: int | Sequence[int] = 1,
        hidden: Sequence[int] = (),
        in_channels: int = 1,
        image_size: int | tuple[int, int] = 28,
        num_classes: int = 10,
        padding: str = "SAME",
        activation: str = "relu",
        dropout: float = 0.0,
        bn_momentum: float = 0.99,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `channels`: output channels of each conv layer; its length sets the number of layers.
        - `kernel_sizes`, `strides`: per layer, or one value for all.
        - `batch_norm`: whether each layer has BatchNorm (per layer, or one value for all).
        - `pools`: max-pool window (= stride) after each block; 1 for none.
        - `hidden`: widths of dense layers between the flatten and the classifier head.
        - `in_channels`, `image_size` (`int` or `(height, width)`), `num_classes`.
        - `padding`: `"SAME"` or `"VALID"`.
        - `activation`: name of the activation (`"relu"`, `"gelu"`, ...).
        - `dropout`: dropout rate before each dense layer (needs `key` when training).
        - `bn_momentum`: BatchNorm's running-statistics momentum.
        - `dtype`: parameter dtype; `key`: PRNG key for the initialisation.

        **Raises:** `ValueError` naming the argument for non-positive sizes, per-layer
        arguments of the wrong length, an unknown padding or activation, or a kernel or pool
        larger than the feature map it meets.
        """
        name = "ConvNet"
        if not channels:
            raise ValueError(f"{name}: `channels` must name at least one conv layer")
        n = len(channels)
        channels = tuple(positive_int(name, "channels", c) for c in channels)
        kernels = tuple(
            positive_int(name, "kernel_sizes", k)
            for k in per_layer(name, "kernel_sizes", kernel_sizes, n)
        )
        strides_ = tuple(
            positive_int(name, "strides", s) for s in per_layer(name, "strides", strides, n)
        )
        norms_on = tuple(bool(b) for b in per_layer(name, "batch_norm", batch_norm, n))
        self.pools = tuple(
            positive_int(name, "pools", p) for p in per_layer(name, "pools", pools, n)
        )
        hidden = tuple(positive_int(name, "hidden", h) for h in hidden)
        self.in_channels = positive_int(name, "in_channels", in_channels)
        self.num_classes = positive_int(name, "num_classes", num_classes)
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = (
            positive_int(name, "image_size", image_size[0]),
            positive_int(name, "image_size", image_size[1]),
        )
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"{name}: `padding` must be 'SAME' or 'VALID', got {padding!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: `dropout` must be in [0, 1), got {dropout!r}")
        get_activation(name, activation)
        self.activation = activation

        # Trace the feature-map size through the layers so that impossible geometries fail
        # here, with the layer named, rather than as an XLA shape error at the first call.
        h, w = self.image_size
        for i, (k, s, p) in enumerate(zip(kernels, strides_, self.pools, strict=True)):
            if padding == "VALID" and (k > h or k > w):
                raise ValueError(
                    f"{name}: `kernel_sizes[{i}]`={k} is larger than the {h}x{w} feature map "
                    f"it meets with VALID padding"
                )
            h, w = _conv_out(h, k, s, padding), _conv_out(w, k, s, padding)
            if p > h or p > w:
                raise ValueError(
                    f"{name}: `pools[{i}]`={p} is larger than the {h}x{w} feature map it meets"
                )
            h, w = h // p, w // p

        keys = jr.split(key, n + len(hidden) + 1)
        ins = (self.in_channels,) + channels[:-1]
        self.convs = tuple(
            eqx.nn.Conv2d(i, o, k, stride=s, padding=padding, dtype=dtype, key=kk)
            for i, o, k, s, kk in zip(ins, channels, kernels, strides_, keys[:n], strict=True)
        )
        self.norms = tuple(
            eqx.nn.BatchNorm(c, axis_name="batch", momentum=bn_momentum, mode="batch", dtype=dtype)
            if on
            else None
            for c, on in zip(channels, norms_on, strict=True)
        )
        sizes = (channels[-1] * h * w,) + hidden
        self.hidden = tuple(
            eqx.nn.Linear(i, o, dtype=dtype, key=kk)
            for i, o, kk in zip(sizes[:-1], sizes[1:], keys[n:-1], strict=True)
        )
        self.head = eqx.nn.Linear(sizes[-1], self.num_classes, dtype=dtype, key=keys[-1])
        self.dropout = eqx.nn.Dropout(dropout)

    def __call__(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " classes"], eqx.nn.State]:
        """**Arguments:**

        - `x`: one image, shape `(in_channels, height, width)`.
        - `state`: the BatchNorm running statistics.
        - `key`: PRNG key for dropout; needed only when training with `dropout > 0`.

        **Returns:** `(logits, state)`: logits of shape `(num_classes,)` and the updated state.
        """
        check_shape("ConvNet", "x", x, (self.in_channels, *self.image_size))
        act = get_activation("ConvNet", self.activation)
        # The layers keep Equinox's channels-first parameters, but the maps flow channels-last
        # (N=1 here; vmap adds the batch): on XLA:CPU a training step runs 10-15% faster.
        h = jnp.moveaxis(x, 0, -1)[None]
        for conv, norm, pool in zip(self.convs, self.norms, self.pools, strict=True):
            h = _conv_hwc(conv, h)
            if norm is not None:
                h, state = _batch_norm_hwc(norm, h, state)
            h = act(h)
            if pool > 1:
                window = (1, pool, pool, 1)
                h = lax.reduce_window(h, -jnp.inf, lax.max, window, window, "VALID")
        x = jnp.transpose(h[0], (2, 0, 1)).reshape(-1)  # flattened (C, H, W), as the head expects
        keys = (
            [None] * (len(self.hidden) + 1) if key is None else jr.split(key, len(self.hidden) + 1)
        )
        for layer, k in zip(self.hidden, keys[:-1], strict=True):
            x = act(layer(self.dropout(x, key=k)))
        return self.head(self.dropout(x, key=keys[-1])), state


# ----------------------------------------------------------------------------------------------
# Registered architectures and their pretrained weights.

CNN_MNIST_WEIGHTS = {
    "fashion": WeightSet(
        dataset="fashion-mnist",
        metrics={"test_accuracy": 0.9028},
        preprocess={"layout": "chw", "normalize": "unit"},
        description="trained by recipes.mnist_cnn (10 epochs)",
    ),
}


@register_model(head=lambda m: m.head, default_tag="fashion", weights=CNN_MNIST_WEIGHTS)
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

CNN_MNIST_STRONG_WEIGHTS = {
    "fashion": WeightSet(
        dataset="fashion-mnist",
        metrics={"test_accuracy": 0.9356},
        preprocess={"layout": "chw", "normalize": "unit"},
        description="trained by recipes.mnist_cnn --preset strong (15 epochs)",
    ),
}


@register_model(head=lambda m: m.head, default_tag="fashion", weights=CNN_MNIST_STRONG_WEIGHTS)
def cnn_mnist_strong(
    *, key: PRNGKeyArray, num_classes: int | None = None, **kwargs: Any
) -> tuple[ConvNet, eqx.nn.State]:
    """A stronger `zoo.ConvNet` for Fashion-MNIST: 2 x (conv3-BN-ReLU-maxpool2), dense 256
    with dropout 0.3."""
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return eqx.nn.make_with_state(ConvNet)(**{**STRONG_CNN, **kwargs}, key=key)
