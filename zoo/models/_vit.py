"""The Vision Transformer (Dosovitskiy et al., 2021) in timm's layout: patch embedding, a
class token, learned position embeddings and pre-norm blocks on `eqx.nn.MultiheadAttention`."""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from .._typing import Array, Float, PRNGKeyArray, check_shape
from ._fastinit import normal, skeleton
from ._registry import WeightSet, register_model
from ._validate import positive_int

# timm's ViTs: LayerNorm eps 1e-6, Linear weights drawn with std 0.02 and zero biases.
_LN_EPS = 1e-6
_STD = 0.02


def _linear(in_features: int, out_features: int, dtype, key: PRNGKeyArray) -> eqx.nn.Linear:
    layer = skeleton(eqx.nn.Linear, in_features, out_features, dtype=dtype, key=key)
    weight = normal(key, layer.weight.shape, layer.weight.dtype, _STD)
    bias = jnp.zeros(layer.weight.shape[:1], layer.weight.dtype)
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (weight, bias))


def _check_rate(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"VisionTransformer: `{name}` must be in [0, 1), got {value!r}")
    return float(value)


class DropPath(eqx.Module):
    """Stochastic depth: drop a whole residual branch of one example with probability
    `rate`, scaling kept branches by `1 / (1 - rate)`; the identity in inference mode."""

    inference: bool
    rate: float = eqx.field(static=True)

    def __init__(self, rate: float = 0.0, inference: bool = False):
        self.rate = rate
        self.inference = inference

    def __call__(self, x: Float[Array, "..."], *, key: PRNGKeyArray | None) -> Float[Array, "..."]:
        if self.inference or self.rate == 0.0:
            return x
        if key is None:
            raise RuntimeError(
                "DropPath: a `key` is needed in training mode with a drop-path rate > 0 (or "
                "switch to inference with `eqx.nn.inference_mode(model)`)"
            )
        keep = jr.bernoulli(key, 1.0 - self.rate)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


class ViTBlock(eqx.Module):
    """A pre-norm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`, the MLP
    `fc1 -> GELU -> fc2`, with dropout after the attention projection and in the MLP, and
    stochastic depth on both branches."""

    norm1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    dropout: eqx.nn.Dropout
    drop_path: DropPath

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float,
        attn_dropout: float,
        drop_path: float,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        k_q, k_k, k_v, k_o, k_fc1, k_fc2 = jr.split(key, 6)
        self.norm1 = eqx.nn.LayerNorm(dim, eps=_LN_EPS, dtype=dtype)
        attn = skeleton(
            eqx.nn.MultiheadAttention,
            num_heads,
            dim,
            use_query_bias=True,
            use_key_bias=True,
            use_value_bias=True,
            use_output_bias=True,
            dropout_p=attn_dropout,
            dtype=dtype,
            key=key,
        )
        projections = tuple(_linear(dim, dim, dtype, k) for k in (k_q, k_k, k_v, k_o))
        self.attn = eqx.tree_at(
            lambda a: (a.query_proj, a.key_proj, a.value_proj, a.output_proj), attn, projections
        )
        self.norm2 = eqx.nn.LayerNorm(dim, eps=_LN_EPS, dtype=dtype)
        self.fc1 = _linear(dim, mlp_dim, dtype, k_fc1)
        self.fc2 = _linear(mlp_dim, dim, dtype, k_fc2)
        self.dropout = eqx.nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def __call__(
        self, x: Float[Array, "tokens dim"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "tokens dim"]:
        keys = [None] * 6 if key is None else list(jr.split(key, 6))
        h = jax.vmap(self.norm1)(x)
        h = self.attn(h, h, h, key=keys[0])
        x = x + self.drop_path(self.dropout(h, key=keys[1]), key=keys[2])
        h = jax.nn.gelu(jax.vmap(self.fc1)(jax.vmap(self.norm2)(x)), approximate=False)
        h = jax.vmap(self.fc2)(self.dropout(h, key=keys[3]))
        return x + self.drop_path(self.dropout(h, key=keys[4]), key=keys[5])


class VisionTransformer(eqx.Module):
    """A Vision Transformer: non-overlapping `patch_size` patches embedded linearly, a class
    token, learned position embeddings, `depth` pre-norm blocks, a final LayerNorm and a
    linear head on the class token. The defaults are timm's `vit_tiny_patch16_224`.

    Dropout (`dropout`, `attn_dropout`) and stochastic depth (`drop_path`, rising linearly
    from 0 at the first block to `drop_path` at the last, as in timm) are off by default;
    when on, training calls need a `key`, and `eqx.nn.inference_mode(model)` turns them off.
    """

    patch_embed: eqx.nn.Conv2d
    cls_token: Float[Array, " dim"]
    pos_embed: Float[Array, "tokens dim"]
    blocks: tuple[ViTBlock, ...]
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear
    drop: eqx.nn.Dropout
    image_size: tuple[int, int] = eqx.field(static=True)
    patch_size: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    num_heads: int = eqx.field(static=True)
    mlp_ratio: float = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    dropout: float = eqx.field(static=True)
    attn_dropout: float = eqx.field(static=True)
    drop_path: float = eqx.field(static=True)

    def __init__(
        self,
        image_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        in_channels: int = 3,
        num_classes: int = 1000,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        dtype=None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `image_size`: `int` or `(height, width)`; both must be multiples of `patch_size`.
        - `patch_size`: the side of the square patches.
        - `dim`: the token width; `depth`: the number of blocks; `num_heads`: attention
          heads (`dim` must be a multiple of it).
        - `mlp_ratio`: the MLP's hidden width as a multiple of `dim`.
        - `in_channels`, `num_classes`.
        - `dropout`: after the position embedding, the attention projection, in the MLP and
          before the head; `attn_dropout`: on the attention weights; `drop_path`: the last
          block's stochastic-depth rate.
        - `dtype`: parameter dtype; `key`: PRNG key (each block draws from its own).

        **Raises:** `ValueError` naming the argument for non-positive sizes, an image size
        that is not a multiple of `patch_size`, a `dim` that `num_heads` does not divide, or
        a rate outside [0, 1).
        """
        name = "VisionTransformer"
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = (
            positive_int(name, "image_size", image_size[0]),
            positive_int(name, "image_size", image_size[1]),
        )
        self.patch_size = positive_int(name, "patch_size", patch_size)
        if any(s % patch_size for s in self.image_size):
            raise ValueError(
                f"{name}: `image_size` {self.image_size} must be a multiple of "
                f"`patch_size`={patch_size} on both axes"
            )
        # Every argument is kept as a field of its name: zoo.hub.constructor_config reads
        # them back to rebuild the model.
        self.dim = dim = positive_int(name, "dim", dim)
        self.depth = depth = positive_int(name, "depth", depth)
        self.num_heads = positive_int(name, "num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"{name}: `dim`={dim} must be a multiple of `num_heads`={num_heads}")
        if not mlp_ratio > 0:
            raise ValueError(f"{name}: `mlp_ratio` must be positive, got {mlp_ratio!r}")
        self.mlp_ratio = float(mlp_ratio)
        mlp_dim = int(dim * mlp_ratio)
        self.in_channels = positive_int(name, "in_channels", in_channels)
        self.num_classes = num_classes = positive_int(name, "num_classes", num_classes)
        self.dropout = dropout = _check_rate("dropout", dropout)
        self.attn_dropout = attn_dropout = _check_rate("attn_dropout", attn_dropout)
        self.drop_path = drop_path = _check_rate("drop_path", drop_path)

        k_patch, k_cls, k_pos, k_head, k_blocks = jr.split(key, 5)
        p = self.patch_size
        patch = skeleton(
            eqx.nn.Conv2d, self.in_channels, dim, p, stride=p, dtype=dtype, key=k_patch
        )
        fan_in = self.in_channels * p * p
        self.patch_embed = eqx.tree_at(
            lambda c: (c.weight, c.bias),
            patch,
            (
                normal(k_patch, patch.weight.shape, patch.weight.dtype, 1 / math.sqrt(fan_in)),
                jnp.zeros(patch.bias.shape, patch.weight.dtype),
            ),
        )
        dtype = patch.weight.dtype
        num_patches = (self.image_size[0] // p) * (self.image_size[1] // p)
        self.cls_token = normal(k_cls, (dim,), dtype, 1e-6)
        self.pos_embed = normal(k_pos, (num_patches + 1, dim), dtype, _STD)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = tuple(
            ViTBlock(dim, num_heads, mlp_dim, dropout, attn_dropout, r, dtype, key=k)
            for r, k in zip(rates, jr.split(k_blocks, depth), strict=True)
        )
        self.norm = eqx.nn.LayerNorm(dim, eps=_LN_EPS, dtype=dtype)
        self.head = _linear(dim, num_classes, dtype, k_head)
        self.drop = eqx.nn.Dropout(dropout)

    @property
    def num_features(self) -> int:
        """The token width `dim`, that of the pooled features the head reads."""
        return self.dim

    def _tokens(
        self, x: Float[Array, "channels height width"], key: PRNGKeyArray | None
    ) -> Float[Array, "tokens dim"]:
        check_shape("VisionTransformer", "x", x, (self.in_channels, *self.image_size))
        c, h, w = x.shape
        p = self.patch_size
        # The patch conv as one matmul: patches in row-major order, each flattened (C, P, P)
        # as the conv's OIHW weight is.
        patches = x.reshape(c, h // p, p, w // p, p).transpose(1, 3, 0, 2, 4)
        patches = patches.reshape((h // p) * (w // p), c * p * p)
        weight = self.patch_embed.weight.reshape(self.patch_embed.out_channels, -1)
        assert self.patch_embed.bias is not None
        tokens = patches @ weight.T + self.patch_embed.bias.reshape(1, -1)
        tokens = jnp.concatenate([self.cls_token[None], tokens]) + self.pos_embed
        return self.drop(tokens, key=key)

    def forward_intermediates(
        self, x: Float[Array, "channels height width"], *, key: PRNGKeyArray | None = None
    ) -> tuple[Float[Array, "tokens dim"], ...]:
        """The token sequences: after the embedding, then after each block.

        **Arguments:** `x`, one image `(in_channels, height, width)`; `key` for dropout.

        **Returns:** `depth + 1` arrays of shape `(1 + num_patches, dim)`, the class token
        first (timm's `blocks.{i}` outputs; the final `norm` is not applied).
        """
        keys = (
            [None] * (len(self.blocks) + 1) if key is None else jr.split(key, len(self.blocks) + 1)
        )
        h = self._tokens(x, keys[0])
        out = [h]
        for block, k in zip(self.blocks, keys[1:], strict=True):
            h = block(h, key=k)
            out.append(h)
        return tuple(out)

    def forward_features(
        self, x: Float[Array, "channels height width"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " dim"]:
        """The class token after the final LayerNorm: the features the head reads."""
        return jax.vmap(self.norm)(self.forward_intermediates(x, key=key)[-1])[0]

    def __call__(
        self, x: Float[Array, "channels height width"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, " classes"]:
        """**Arguments:**

        - `x`: one image, shape `(in_channels, *image_size)`.
        - `key`: PRNG key for dropout and stochastic depth; needed only when training with
          either on.

        **Returns:** the logits, shape `(num_classes,)`.
        """
        k_features, k_head = (None, None) if key is None else jr.split(key)
        features = self.forward_features(x, key=k_features)
        return self.head(self.drop(features, key=k_head))

    def reset_head(self, num_classes: int, *, key: PRNGKeyArray) -> "VisionTransformer":
        """**Returns:** this network with a freshly initialised head for `num_classes`."""
        num_classes = positive_int("VisionTransformer", "num_classes", num_classes)
        head = _linear(self.num_features, num_classes, self.head.weight.dtype, key)
        new = eqx.tree_at(lambda m: m.head, self, head)
        # tree_at replaces leaves only; `new` is a fresh instance, so this leaves `self` alone.
        object.__setattr__(new, "num_classes", num_classes)
        return new


# --------------------------------------------------------------------------- registry


def _build(defaults: dict[str, Any], key: PRNGKeyArray, kwargs: Any):
    return eqx.nn.make_with_state(VisionTransformer)(**{**defaults, **kwargs}, key=key)


@register_model(head=lambda m: m.head)
def vit_tiny_patch16_224(
    *, key: PRNGKeyArray, **kwargs: Any
) -> tuple[VisionTransformer, eqx.nn.State]:
    """ViT-Ti/16 at 224x224, timm's layout (`zoo.VisionTransformer`: dim 192, 12 blocks,
    3 heads)."""
    return _build({"dim": 192, "depth": 12, "num_heads": 3}, key, kwargs)


@register_model(head=lambda m: m.head)
def vit_small_patch16_224(
    *, key: PRNGKeyArray, **kwargs: Any
) -> tuple[VisionTransformer, eqx.nn.State]:
    """ViT-S/16 at 224x224, timm's layout (`zoo.VisionTransformer`: dim 384, 12 blocks,
    6 heads)."""
    return _build({"dim": 384, "depth": 12, "num_heads": 6}, key, kwargs)


@register_model(head=lambda m: m.head)
def vit_base_patch16_224(
    *, key: PRNGKeyArray, **kwargs: Any
) -> tuple[VisionTransformer, eqx.nn.State]:
    """ViT-B/16 at 224x224, timm's layout (`zoo.VisionTransformer`: dim 768, 12 blocks,
    12 heads)."""
    return _build({"dim": 768, "depth": 12, "num_heads": 12}, key, kwargs)


# For 28x28 grey images (Fashion-MNIST): 7x7 = 49 patches of 4x4, six narrow blocks.
_PATCH4_28: dict[str, Any] = {
    "image_size": 28,
    "patch_size": 4,
    "dim": 128,
    "depth": 6,
    "num_heads": 4,
    "mlp_ratio": 2.0,
    "in_channels": 1,
    "num_classes": 10,
}


VIT_PATCH4_28_WEIGHTS = {
    "fashion": WeightSet(
        dataset="fashion-mnist",
        metrics={"test_accuracy": 0.877},
        preprocess={"layout": "chw", "normalize": "auto"},
        description="trained by recipes.mnist_vit (8 epochs, depth 4)",
    ),
}


@register_model(head=lambda m: m.head, default_tag="fashion", weights=VIT_PATCH4_28_WEIGHTS)
def vit_patch4_28(*, key: PRNGKeyArray, **kwargs: Any) -> tuple[VisionTransformer, eqx.nn.State]:
    """A small ViT for 28x28 grey images (`zoo.VisionTransformer`: 4x4 patches, dim 128,
    6 blocks, 4 heads, MLP ratio 2, 10 classes)."""
    return _build(_PATCH4_28, key, kwargs)
