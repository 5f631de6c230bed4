"""Residual networks (He et al., 2016): torchvision's ResNet v1.5 layouts and small-image
variants, with BatchNorm statistics held in `eqx.nn.State`."""

import math
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr

from .._typing import Array, Float, PRNGKeyArray, check_shape
from ._convnet import _check_batch, _conv_last  # shared with ConvNet: one copy each
from ._fastinit import normal, skeleton
from ._registry import WeightSet, register_model
from ._validate import boolean, positive_int


def _conv(
    in_channels: int, out_channels: int, kernel: int, stride: int, dtype, key: PRNGKeyArray
) -> eqx.nn.Conv2d:
    """A bias-free conv with torchvision's padding (`kernel // 2`) and initialisation
    (Kaiming normal, fan-out, for ReLU)."""
    conv = skeleton(
        eqx.nn.Conv2d,
        in_channels,
        out_channels,
        kernel,
        stride=stride,
        padding=kernel // 2,
        use_bias=False,
        dtype=dtype,
        key=key,
    )
    std = math.sqrt(2.0 / (out_channels * kernel * kernel))
    weight = normal(key, conv.weight.shape, conv.weight.dtype, std)
    return eqx.tree_at(lambda c: c.weight, conv, weight)


def _norm(channels: int, momentum: float, dtype, *, zero: bool = False) -> eqx.nn.BatchNorm:
    norm = eqx.nn.BatchNorm(
        channels, axis_name="batch", momentum=momentum, mode="batch", dtype=dtype
    )
    if zero:  # zero-init residual: each block starts as the identity
        assert norm.weight is not None
        norm = eqx.tree_at(lambda n: n.weight, norm, jnp.zeros_like(norm.weight))
    return norm


def _apply_norm(
    norm: eqx.nn.BatchNorm, x: Float[Array, "1 h w c"], state: eqx.nn.State
) -> tuple[Float[Array, "1 h w c"], eqx.nn.State]:
    """BatchNorm on a channels-last map, with `norm`'s parameters and state entries.

    Training normalises with the batch statistics (averaged over `axis_name="batch"`) and
    updates the running averages as `eqx.nn.BatchNorm(mode="batch")` does, except that the
    running variance takes the unbiased batch variance (`n / (n - 1)`), as torch's does, so
    that converted torchvision weights keep their statistics' meaning when fine-tuned.
    Inference divides the running averages by `1 - momentum**counter` (Equinox's zero
    debiasing; converted torch statistics come with a counter so large that it divides by 1)."""
    counter_index, stats_index = norm.batch_counter, norm.batch_state_index
    assert counter_index is not None and stats_index is not None  # mode="batch" has both
    counter = state.get(counter_index)
    hidden_mean, hidden_var = state.get(stats_index)
    if norm.inference:
        debias = jnp.where(counter == 0, 1, 1 - norm.momentum**counter)
        mean, var = hidden_mean / debias, hidden_var / debias
    else:
        _check_batch("ResNet", norm)
        mean = lax.pmean(jnp.mean(x, axis=(0, 1, 2)), norm.axis_name)
        centred = x - mean.reshape(1, 1, 1, -1)
        var = lax.pmean(jnp.mean(jnp.square(centred), axis=(0, 1, 2)), norm.axis_name)
        var = jnp.maximum(0.0, var)
        n = lax.psum(x.shape[1] * x.shape[2], norm.axis_name)
        unbiased = var * (n / jnp.maximum(n - 1, 1)).astype(var.dtype)
        m = norm.momentum
        state = state.set(counter_index, counter + 1)
        state = state.set(
            stats_index,
            (hidden_mean * m + mean * (1 - m), hidden_var * m + unbiased * (1 - m)),
        )
    channel = (1, 1, 1, -1)
    y = (x - mean.reshape(channel)) * lax.rsqrt(var + norm.eps).reshape(channel)
    if norm.channelwise_affine:
        assert norm.weight is not None and norm.bias is not None
        y = y * norm.weight.reshape(channel) + norm.bias.reshape(channel)
    return y, state


class BasicBlock(eqx.Module):
    """Two 3x3 convs with BatchNorm and a residual connection (ResNet-18/34, CIFAR ResNets).
    Called channels-last by `ResNet`; its parameters keep Equinox's OIHW layout."""

    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    downsample_conv: eqx.nn.Conv2d | None
    downsample_norm: eqx.nn.BatchNorm | None

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        momentum: float,
        zero_init_residual: bool,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        k1, k2, k_down = jr.split(key, 3)
        self.conv1 = _conv(in_channels, width, 3, stride, dtype, k1)
        self.bn1 = _norm(width, momentum, dtype)
        self.conv2 = _conv(width, width, 3, 1, dtype, k2)
        self.bn2 = _norm(width, momentum, dtype, zero=zero_init_residual)
        if stride != 1 or in_channels != width:
            self.downsample_conv = _conv(in_channels, width, 1, stride, dtype, k_down)
            self.downsample_norm = _norm(width, momentum, dtype)
        else:
            self.downsample_conv = self.downsample_norm = None

    def __call__(
        self, x: Float[Array, "1 h w c"], state: eqx.nn.State
    ) -> tuple[Float[Array, "1 h2 w2 o"], eqx.nn.State]:
        h, state = _apply_norm(self.bn1, _conv_last(self.conv1, x), state)
        h, state = _apply_norm(self.bn2, _conv_last(self.conv2, jax.nn.relu(h)), state)
        if self.downsample_conv is not None:
            assert self.downsample_norm is not None
            x, state = _apply_norm(self.downsample_norm, _conv_last(self.downsample_conv, x), state)
        return jax.nn.relu(h + x), state


class Bottleneck(eqx.Module):
    """1x1 reduce, 3x3 (carrying the stride: ResNet v1.5), 1x1 expand by 4, each with
    BatchNorm, and a residual connection (ResNet-50 and deeper)."""

    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    conv3: eqx.nn.Conv2d
    bn3: eqx.nn.BatchNorm
    downsample_conv: eqx.nn.Conv2d | None
    downsample_norm: eqx.nn.BatchNorm | None

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int,
        momentum: float,
        zero_init_residual: bool,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        k1, k2, k3, k_down = jr.split(key, 4)
        out = width * self.expansion
        self.conv1 = _conv(in_channels, width, 1, 1, dtype, k1)
        self.bn1 = _norm(width, momentum, dtype)
        self.conv2 = _conv(width, width, 3, stride, dtype, k2)
        self.bn2 = _norm(width, momentum, dtype)
        self.conv3 = _conv(width, out, 1, 1, dtype, k3)
        self.bn3 = _norm(out, momentum, dtype, zero=zero_init_residual)
        if stride != 1 or in_channels != out:
            self.downsample_conv = _conv(in_channels, out, 1, stride, dtype, k_down)
            self.downsample_norm = _norm(out, momentum, dtype)
        else:
            self.downsample_conv = self.downsample_norm = None

    def __call__(
        self, x: Float[Array, "1 h w c"], state: eqx.nn.State
    ) -> tuple[Float[Array, "1 h2 w2 o"], eqx.nn.State]:
        h, state = _apply_norm(self.bn1, _conv_last(self.conv1, x), state)
        h, state = _apply_norm(self.bn2, _conv_last(self.conv2, jax.nn.relu(h)), state)
        h, state = _apply_norm(self.bn3, _conv_last(self.conv3, jax.nn.relu(h)), state)
        if self.downsample_conv is not None:
            assert self.downsample_norm is not None
            x, state = _apply_norm(self.downsample_norm, _conv_last(self.downsample_conv, x), state)
        return jax.nn.relu(h + x), state


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


class ResNet(eqx.Module):
    """A residual network: a stem, stages of residual blocks (the first block of every stage
    after the first halves the resolution), global average pooling and a linear head.
    Stateful: build with `eqx.nn.make_with_state(ResNet)(..., key=key)`.

    The defaults are torchvision's `resnet18`; `block="bottleneck", layers=(3, 4, 6, 3)` is
    `resnet50` (v1.5: the stride sits on the 3x3 conv). `stem="small"` replaces the 7x7/2
    conv and 3x3/2 max-pool by one 3x3/1 conv, for 28x28 or 32x32 inputs (the CIFAR ResNets:
    `widths=(16, 32, 64), layers=(3, 3, 3), stem_width=16` is ResNet-20). Shortcuts that
    change shape are 1x1 conv + BatchNorm projections.

    Training mode normalises with the batch statistics (batch with
    `jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))`) and updates
    the running statistics in `state`; `eqx.nn.inference_mode(model)` uses the running ones.
    The feature maps flow channels-last inside (faster on XLA:CPU); parameters keep
    Equinox's (and torch's) OIHW layout, and every map a method returns is channels-first.
    """

    stem_conv: eqx.nn.Conv2d
    stem_norm: eqx.nn.BatchNorm
    stages: tuple[tuple[BasicBlock | Bottleneck, ...], ...]
    head: eqx.nn.Linear
    block: str = eqx.field(static=True)
    layers: tuple[int, ...] = eqx.field(static=True)
    widths: tuple[int, ...] = eqx.field(static=True)
    stem: str = eqx.field(static=True)
    stem_width: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    bn_momentum: float = eqx.field(static=True)
    zero_init_residual: bool = eqx.field(static=True)

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem: str = "imagenet",
        stem_width: int = 64,
        in_channels: int = 3,
        num_classes: int = 1000,
        bn_momentum: float = 0.9,
        zero_init_residual: bool = False,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `block`: `"basic"` (two 3x3 convs) or `"bottleneck"` (1x1, 3x3, 1x1 x4).
        - `layers`: blocks per stage; its length sets the number of stages.
        - `widths`: each stage's block width (a bottleneck's output is 4x this).
        - `stem`: `"imagenet"` (7x7/2 conv, 3x3/2 max-pool: input size / 4) or `"small"`
          (3x3/1 conv, no pooling: for 28x28 and 32x32 images).
        - `stem_width`: the stem's output channels.
        - `in_channels`, `num_classes`.
        - `bn_momentum`: BatchNorm's running-average momentum (0.9 is torch's 0.1).
        - `zero_init_residual`: start each block's last BatchNorm scale at 0 (each residual
          branch then starts as the identity).
        - `dtype`: parameter dtype; `key`: PRNG key for the initialisation.

        **Raises:** `ValueError` naming the argument for an unknown block or stem,
        non-positive sizes, `layers` and `widths` of different lengths, or a momentum
        outside (0, 1).
        """
        name = "ResNet"
        if block not in _BLOCKS:
            raise ValueError(f"{name}: `block` must be 'basic' or 'bottleneck', got {block!r}")
        if stem not in ("imagenet", "small"):
            raise ValueError(f"{name}: `stem` must be 'imagenet' or 'small', got {stem!r}")
        if not layers:
            raise ValueError(f"{name}: `layers` must name at least one stage")
        if len(widths) != len(layers):
            raise ValueError(
                f"{name}: `widths` must have one entry per stage of `layers` ({len(layers)}), "
                f"got {len(widths)}"
            )
        if not 0.0 < bn_momentum < 1.0:
            raise ValueError(f"{name}: `bn_momentum` must be in (0, 1), got {bn_momentum!r}")
        self.block = block
        self.layers = tuple(positive_int(name, "layers", n) for n in layers)
        self.widths = tuple(positive_int(name, "widths", w) for w in widths)
        self.stem = stem
        # Every argument is kept as a field of its name: zoo.hub.constructor_config reads
        # them back to rebuild the model.
        self.stem_width = stem_width = positive_int(name, "stem_width", stem_width)
        self.in_channels = positive_int(name, "in_channels", in_channels)
        self.num_classes = num_classes = positive_int(name, "num_classes", num_classes)
        self.bn_momentum = float(bn_momentum)
        self.zero_init_residual = boolean(name, "zero_init_residual", zero_init_residual)

        cls = _BLOCKS[block]
        k_stem, k_head, *k_stages = jr.split(key, 2 + len(self.layers))
        kernel, stride = (7, 2) if stem == "imagenet" else (3, 1)
        self.stem_conv = _conv(self.in_channels, stem_width, kernel, stride, dtype, k_stem)
        self.stem_norm = _norm(stem_width, bn_momentum, dtype)
        stages = []
        channels = stem_width
        for i, (n, width, k) in enumerate(zip(self.layers, self.widths, k_stages, strict=True)):
            blocks = []
            for j, kb in enumerate(jr.split(k, n)):
                s = 2 if i > 0 and j == 0 else 1
                blocks.append(
                    cls(channels, width, s, bn_momentum, zero_init_residual, dtype, key=kb)
                )
                channels = width * cls.expansion
            stages.append(tuple(blocks))
        self.stages = tuple(stages)
        self.head = eqx.nn.Linear(channels, num_classes, dtype=dtype, key=k_head)

    @property
    def num_features(self) -> int:
        """The width of the pooled features (`forward_features`) that the head reads."""
        return self.head.in_features  # pyright: ignore[reportReturnType]

    def _maps(
        self, x: Float[Array, "channels height width"], state: eqx.nn.State
    ) -> tuple[list[Float[Array, "1 h w c"]], eqx.nn.State]:
        """The stem's output and each stage's, channels-last with a leading axis of 1."""
        check_shape("ResNet", "x", x, (self.in_channels, None, None))
        h = jnp.moveaxis(x, 0, -1)[None]
        h, state = _apply_norm(self.stem_norm, _conv_last(self.stem_conv, h), state)
        h = jax.nn.relu(h)
        if self.stem == "imagenet":
            window, strides = (1, 3, 3, 1), (1, 2, 2, 1)
            pad = ((0, 0), (1, 1), (1, 1), (0, 0))
            h = lax.reduce_window(h, -jnp.inf, lax.max, window, strides, pad)
        maps = [h]
        for stage in self.stages:
            for block in stage:
                h, state = block(h, state)
            maps.append(h)
        return maps, state

    def forward_intermediates(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[tuple[Float[Array, "_ _ _"], ...], eqx.nn.State]:
        """The feature maps after the stem and after each stage.

        **Arguments:** `x`, one image `(in_channels, height, width)`; `state`; `key` unused.

        **Returns:** `(maps, state)`: `maps[0]` is the stem's output (after the max-pool of
        the ImageNet stem; torchvision's `maxpool`), `maps[i]` stage `i`'s (`layer{i}`), each
        `(channels, height, width)`.
        """
        del key
        maps, state = self._maps(x, state)
        return tuple(jnp.transpose(m[0], (2, 0, 1)) for m in maps), state

    def forward_features(
        self,
        x: Float[Array, "channels height width"],
        state: eqx.nn.State,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, " features"], eqx.nn.State]:
        """The globally average-pooled features that the head reads.

        **Returns:** `(features, state)` with `features` of shape `(num_features,)`.
        """
        del key
        maps, state = self._maps(x, state)
        return jnp.mean(maps[-1], axis=(0, 1, 2)), state

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
        - `key`: unused (a ResNet has no dropout); accepted so every zoo model shares one
          call signature.

        **Returns:** `(logits, state)`: logits of shape `(num_classes,)` and the new state.
        """
        features, state = self.forward_features(x, state, key=key)
        return self.head(features), state

    def reset_head(self, num_classes: int, *, key: PRNGKeyArray) -> "ResNet":
        """**Returns:** this network with a freshly initialised head for `num_classes`."""
        num_classes = positive_int("ResNet", "num_classes", num_classes)
        head = eqx.nn.Linear(self.num_features, num_classes, dtype=self.head.weight.dtype, key=key)
        return _with_head(self, head, num_classes)


def _with_head(model: Any, head: eqx.nn.Linear, num_classes: int) -> Any:
    """`model` with `head` and the static field `num_classes` to match."""
    new = eqx.tree_at(lambda m: m.head, model, head)
    # tree_at replaces leaves only; `new` is a fresh instance (unflattened), so setting its
    # static field cannot change `model`.
    object.__setattr__(new, "num_classes", num_classes)
    return new


# --------------------------------------------------------------------------- registry
# No weight sets yet: the Fashion-MNIST recipe and converted torchvision weights come later.

_RESNET18: dict[str, Any] = {"block": "basic", "layers": (2, 2, 2, 2)}
_RESNET34: dict[str, Any] = {"block": "basic", "layers": (3, 4, 6, 3)}
_RESNET50: dict[str, Any] = {"block": "bottleneck", "layers": (3, 4, 6, 3)}
# The CIFAR-10 ResNets of He et al. (2016), section 4.2, with projection shortcuts.
_CIFAR: dict[str, Any] = {
    "widths": (16, 32, 64),
    "stem": "small",
    "stem_width": 16,
    "num_classes": 10,
}


def _build(defaults: dict[str, Any], key: PRNGKeyArray, kwargs: Any) -> tuple[ResNet, eqx.nn.State]:
    return eqx.nn.make_with_state(ResNet)(**{**defaults, **kwargs}, key=key)


@register_model(head=lambda m: m.head)
def resnet18(*, key: PRNGKeyArray, **kwargs: Any) -> tuple[ResNet, eqx.nn.State]:
    """ResNet-18, torchvision's layout (`zoo.ResNet`: basic blocks (2, 2, 2, 2))."""
    return _build(_RESNET18, key, kwargs)


@register_model(head=lambda m: m.head)
def resnet34(*, key: PRNGKeyArray, **kwargs: Any) -> tuple[ResNet, eqx.nn.State]:
    """ResNet-34, torchvision's layout (`zoo.ResNet`: basic blocks (3, 4, 6, 3))."""
    return _build(_RESNET34, key, kwargs)


@register_model(head=lambda m: m.head)
def resnet50(*, key: PRNGKeyArray, **kwargs: Any) -> tuple[ResNet, eqx.nn.State]:
    """ResNet-50 v1.5, torchvision's layout (`zoo.ResNet`: bottlenecks (3, 4, 6, 3))."""
    return _build(_RESNET50, key, kwargs)


RESNET20_WEIGHTS = {
    "fashion": WeightSet(
        dataset="fashion-mnist",
        metrics={"test_accuracy": 0.9274},
        preprocess={"layout": "chw", "normalize": "auto"},
        description="trained by recipes.mnist_resnet (5 epochs, in_channels=1)",
    ),
}


@register_model(head=lambda m: m.head, default_tag="fashion", weights=RESNET20_WEIGHTS)
def resnet20(*, key: PRNGKeyArray, **kwargs: Any) -> tuple[ResNet, eqx.nn.State]:
    """ResNet-20 for 32x32 or 28x28 images (`zoo.ResNet`: 3x3 stem, 3 x 3 basic blocks of
    16/32/64 channels); `in_channels=1` for Fashion-MNIST."""
    return _build({**_CIFAR, "layers": (3, 3, 3)}, key, kwargs)


@register_model(head=lambda m: m.head)
def resnet32(*, key: PRNGKeyArray, **kwargs: Any) -> tuple[ResNet, eqx.nn.State]:
    """ResNet-32 for 32x32 or 28x28 images (`zoo.ResNet`: 3x3 stem, 3 x 5 basic blocks of
    16/32/64 channels)."""
    return _build({**_CIFAR, "layers": (5, 5, 5)}, key, kwargs)
