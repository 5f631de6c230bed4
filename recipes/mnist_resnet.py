"""A CIFAR-style ResNet (ResNet-20 by default) on MNIST-format images (Fashion-MNIST).

    zoo train mnist_resnet                  # or: python -m recipes.mnist_resnet
    zoo train mnist_resnet --preset resnet32 --epochs 30

SGD with Nesterov momentum 0.9, learning rate 0.1 at batch 128 after half an epoch of
warm-up, cosine-decayed to 0; weight decay 5e-4; every training image mirrored at random
and shifted by up to 2 pixels. BatchNorm statistics travel in `eqx.nn.State`; evaluation
runs in inference mode. Writes config.json, metrics.jsonl, training.png, results.json and
the model (model/).
"""

import dataclasses
from typing import Literal

import jax.random as jr
import optax

import zoo.data

from . import _cli
from ._classify import ClassifierConfig, train_classifier
from ._config import ConfigError, number


@dataclasses.dataclass(frozen=True)
class Config(ClassifierConfig):
    """The ResNet's settings."""

    # XLA:CPU runs convolutions ~9x slower inside a scan, so one step per call.
    steps_per_dispatch: int = number(1, ge=1)  # optimiser steps per compiled call
    preset: Literal["resnet20", "resnet32"] = "resnet20"  # 3 stages of 3 (or 5) basic blocks
    learning_rate: float = number(0.1, gt=0)  # SGD's peak learning rate
    batch_size: int = number(128, ge=1)  # examples per step (split over the devices)
    epochs: int = number(5, ge=1)  # passes over the training set
    warmup_epochs: float = number(0.5, ge=0)  # linear warm-up from 0, in epochs
    momentum: float = number(0.9, ge=0, lt=1)  # Nesterov momentum
    weight_decay: float = number(5e-4, ge=0)  # L2 penalty on every parameter
    bn_momentum: float = number(0.9, gt=0, lt=1)  # BatchNorm running statistics' decay
    max_shift: int = number(2, ge=0)  # shift training images by up to this many pixels
    flip: bool = True  # mirror training images at random
    label_smoothing: float = number(0.0, ge=0, lt=1)  # weight on a uniform target


def augmentation(flip: bool, max_shift: int):
    """`(images, key) -> images`: a random mirror and a random shift of each image."""

    def augment(images, key):
        k_flip, k_shift = jr.split(key)
        if flip:
            images = zoo.data.random_flip(images, k_flip)
        return zoo.data.random_translate(images, k_shift, max_shift)

    return augment


def _add_channel(x):
    return x[:, None]  # (batch, height, width) -> (batch, 1, height, width)


def _fit_to_data(shape: tuple[int, ...], num_classes: int) -> dict:
    if len(shape) != 2:
        raise ConfigError(
            f"mnist_resnet: --data must hold single-channel images (n, height, width); its "
            f"inputs have shape (n, {', '.join(map(str, shape))})"
        )
    return {"num_classes": num_classes}


def train(config: Config, workdir: str | None = None):
    """Train the ResNet in `workdir` (default `config.workdir`, else `runs/mnist_resnet`).

    **Returns:** `(model, model_state, history)`.
    """

    def sgd(learning_rate):
        return optax.chain(
            optax.add_decayed_weights(config.weight_decay),
            optax.sgd(learning_rate, momentum=config.momentum, nesterov=True),
        )

    return train_classifier(
        "mnist_resnet",
        config,
        workdir,
        arch=config.preset,
        arch_kwargs={"in_channels": 1, "bn_momentum": config.bn_momentum},
        prepare=_add_channel,
        layout="chw",
        augment=augmentation(config.flip, config.max_shift),
        label_smoothing=config.label_smoothing,
        data_kwargs=_fit_to_data,
        optimizer=sgd,
        warmup_epochs=config.warmup_epochs,
    )


def main(argv: list[str] | None = None) -> int:
    return _cli.main("mnist_resnet", Config, train, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
