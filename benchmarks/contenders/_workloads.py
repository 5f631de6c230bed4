"""The shared settings of every workload: models, initial weights, data and its order.

Every contender trains the same model from the same initial weights (zoo's, copied out here
into plain NumPy arrays in zoo's layouts) with the same optimiser, learning rate, batch size,
float32 and data order. Batch size, learning rate and `steps_per_dispatch` are read from the
recipes' `Config` defaults, so "zoo's default path" here is what `zoo train <recipe>` runs,
with one difference: the learning rate stays constant (the recipes' `--lr-schedule
constant`, the original experiments' setting), so that every contender runs plain Adam.
"""

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import equinox as eqx
import jax
import jax.lax as lax
import jax.random as jr
import numpy as np

import zoo
import zoo.data
import zoo.train
from recipes import mnist_cnn, mnist_mlp, ou_gru

Batch = dict[str, np.ndarray]
SEED = 0
OU_CONFIG = ou_gru.Config()


@dataclasses.dataclass(frozen=True)
class Workload:
    """One training task, as every contender runs it.

    **Fields:** `name` (`"mlp"`, `"cnn"` or `"gru"`), `title`, `batch_size`,
    `learning_rate` (Adam's), `epoch_steps` (batches in one epoch: an epoch of Fashion-MNIST,
    or the OU recipe's 1000 batches) and `steps_per_dispatch` (zoo's default K, from the
    recipe).
    """

    name: str
    title: str
    batch_size: int
    learning_rate: float
    epoch_steps: int
    steps_per_dispatch: int


def _workloads() -> dict[str, Workload]:
    mlp, cnn = mnist_mlp.Config(), mnist_cnn.Config()
    epoch = 60_000 // mlp.batch_size
    return {
        "mlp": Workload(
            "mlp",
            f"MLP 784-{mlp.width}-{mlp.width}-10 on Fashion-MNIST",
            mlp.batch_size,
            mlp.learning_rate,
            epoch,
            mlp.steps_per_dispatch,
        ),
        "cnn": Workload(
            "cnn",
            "ConvNet with BatchNorm (zoo.ConvNet defaults) on Fashion-MNIST",
            cnn.batch_size,
            cnn.learning_rate,
            60_000 // cnn.batch_size,
            cnn.steps_per_dispatch,
        ),
        "gru": Workload(
            "gru",
            f"GRU 1-{OU_CONFIG.hidden_size}-1 on the OU task, {OU_CONFIG.steps} time steps",
            OU_CONFIG.batch_size,
            OU_CONFIG.learning_rate,
            OU_CONFIG.batches,
            OU_CONFIG.steps_per_dispatch,
        ),
    }


WORKLOADS = _workloads()


# --- initial weights, framework-neutral ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MLPWeights:
    """`layers`: `(weight (out, in), bias (out,))` per layer, as `eqx.nn.Linear` holds them."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]


@dataclasses.dataclass(frozen=True)
class ConvNetWeights:
    """Conv layers `(weight (out, in, kh, kw), bias (out,))` with their `strides` and SAME
    padding, BatchNorm `(scale, offset)` or `None` per layer, and the `head` Linear, whose
    input is the last feature map of shape `feature_shape` (channels, height, width)
    flattened channel-major, as zoo does."""

    convs: tuple[tuple[np.ndarray, np.ndarray], ...]
    strides: tuple[int, ...]
    norms: tuple[tuple[np.ndarray, np.ndarray] | None, ...]
    head: tuple[np.ndarray, np.ndarray]
    feature_shape: tuple[int, int, int]
    bn_momentum: float
    bn_eps: float


@dataclasses.dataclass(frozen=True)
class GRUWeights:
    """`zoo.GRU`: `embed` Linear + ReLU, the cell's `weight_ih`/`weight_hh` (gates z, r, h
    stacked, `(3 hidden, hidden)`) and `bias`, the learned `h0`, and the `readout` Linear."""

    embed: tuple[np.ndarray, np.ndarray]
    weight_ih: np.ndarray
    weight_hh: np.ndarray
    bias: np.ndarray
    h0: np.ndarray
    readout: tuple[np.ndarray, np.ndarray]


Weights = MLPWeights | ConvNetWeights | GRUWeights


def _np(x) -> np.ndarray:
    return np.array(x, dtype=np.float32)  # a copy: contenders must not share buffers


def _linear(layer: eqx.nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    assert layer.bias is not None
    return _np(layer.weight), _np(layer.bias)


def weights_of(model: Any) -> Weights:
    """Copy a zoo model's parameters out into the framework-neutral form."""
    if isinstance(model, zoo.MLP):
        return MLPWeights(tuple(_linear(layer) for layer in model.layers))
    if isinstance(model, zoo.ConvNet):
        if model.hidden or any(p != 1 for pool in model.pools for p in pool):
            raise ValueError("only ConvNets without pooling or hidden dense layers")
        h, w = model.in_size
        strides = []
        for conv in model.convs:
            if conv.padding != "SAME" or conv.stride[0] != conv.stride[1]:
                raise ValueError("only square strides with SAME padding")
            strides.append(conv.stride[0])
            h, w = -(-h // conv.stride[0]), -(-w // conv.stride[1])  # SAME: ceil(size / s)
        norm = next((n for n in model.norms if n is not None), None)
        return ConvNetWeights(
            convs=tuple((_np(c.weight), _np(c.bias).reshape(-1)) for c in model.convs),
            strides=tuple(strides),
            norms=tuple(None if n is None else (_np(n.weight), _np(n.bias)) for n in model.norms),
            head=_linear(model.head),
            feature_shape=(model.convs[-1].out_channels, h, w),
            bn_momentum=0.99 if norm is None else float(norm.momentum),
            bn_eps=1e-5 if norm is None else float(norm.eps),
        )
    if isinstance(model, zoo.GRU):
        enc = model.encoder
        assert enc.initial_state is not None
        return GRUWeights(
            embed=_linear(enc.embed),
            weight_ih=_np(enc.cell.weight_ih),
            weight_hh=_np(enc.cell.weight_hh),
            bias=_np(enc.cell.bias),
            h0=_np(enc.initial_state),
            readout=_linear(model.readout),
        )
    raise TypeError(f"no neutral weights for {type(model).__name__}")


# --- zoo's side: the model, its loss, the train state --------------------------------------


def _flatten(x):
    return x.reshape(x.shape[0], -1)


def _add_channel(x):
    return x[:, None, :, :]


def zoo_model(name: str, **kwargs) -> tuple[Any, eqx.nn.State | None, jax.Array]:
    """The workload's zoo model as the recipe builds it, its state, and the training key.

    The keys come from `jr.split(jr.PRNGKey(SEED))` as in the recipes. `kwargs` override
    the model's defaults (smaller models for tests).

    **Returns:** `(model, model_state or None, train_key)`.
    """
    if name == "gru":
        k_model, k_train, _ = jr.split(jr.PRNGKey(SEED), 3)
        return zoo.GRU(key=k_model, **kwargs), None, k_train
    k_model, k_train = jr.split(jr.PRNGKey(SEED))
    if name == "mlp":
        return zoo.MLP(key=k_model, **kwargs), None, k_train
    if name == "cnn":
        model, state = eqx.nn.make_with_state(zoo.ConvNet)(key=k_model, **kwargs)
        return model, state, k_train
    raise ValueError(f"unknown workload {name!r}")


def zoo_loss(name: str) -> zoo.train.LossFn:
    """The recipe's loss function for workload `name`."""
    if name == "mlp":
        return zoo.train.classification_loss(prepare=_flatten)
    if name == "cnn":
        return zoo.train.classification_loss(prepare=_add_channel)
    return zoo.train.regression_loss(inputs="x", targets="y")


def ou_make_batch(key: jax.Array) -> dict[str, jax.Array]:
    """One OU training batch from `key`, exactly as the `ou_gru` recipe makes it."""
    seqs = ou_gru.make_sequences(OU_CONFIG, key, OU_CONFIG.batch_size)
    return {"x": seqs["x"], "y": seqs["y"]}


# --- data ----------------------------------------------------------------------------------


@functools.cache
def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The Fashion-MNIST training images (uint8) and labels, decoded once per process (found
    or downloaded as the recipes do)."""
    images, labels, _ = zoo.data.load("fashion-mnist", "train")
    return images, labels


def mnist_batches(batch_size: int) -> Iterator[Batch]:
    """A fresh iterator over the first epoch of the recipes' pipeline (seed 0, images /255).

    Every contender draws its batches from this, so all see the same order.
    """
    images, labels = fashion_mnist()
    ds = zoo.data.batches(
        {"image": images, "label": labels}, batch_size, seed=SEED, num_epochs=1, normalize="unit"
    )
    return iter(ds)


@functools.partial(jax.jit, static_argnums=1)
def _ou_stack(train_key: jax.Array, n: int) -> dict[str, jax.Array]:
    # The key chain of `TrainStep`'s generated steps, one batch per step as it makes them:
    # each step splits its state's key into (next key, data key, loss key). A scan, not a
    # vmap, so that even generators whose bits change under vmap give the same batches.
    def body(key, _):
        new_key, data_key, _ = jr.split(key, 3)
        return new_key, ou_make_batch(data_key)

    return lax.scan(body, train_key, None, length=n)[1]


def ou_batches(train_key: jax.Array, n: int) -> list[Batch]:
    """The first `n` OU batches that zoo's generated-data loop trains on, as host arrays."""
    stacked = jax.device_get(_ou_stack(train_key, n))
    # Copies: `device_get` may hand back read-only views, which torch warns about.
    return [{k: np.array(v[i]) for k, v in stacked.items()} for i in range(n)]


def take(batches: Iterator[Batch], n: int) -> list[Batch]:
    """The next `n` batches of an iterator, as a list."""
    return [next(batches) for _ in range(n)]


def synthetic(name: str, batch_size: int, n: int) -> list[Batch]:
    """`n` all-zero batches of the workload's shapes and dtypes (for compile timings)."""
    if name == "gru":
        x = np.zeros((batch_size, OU_CONFIG.steps - 1, 1), np.float32)
        return [{"x": x, "y": x.copy()} for _ in range(n)]
    image = np.zeros((batch_size, 28, 28), np.float32)
    return [{"image": image, "label": np.zeros(batch_size, np.int32)} for _ in range(n)]
