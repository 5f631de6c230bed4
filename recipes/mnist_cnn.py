"""The experiment's BatchNorm ConvNet on MNIST-format images (Fashion-MNIST by default).

    zoo train mnist_cnn                  # or: python -m recipes.mnist_cnn
    zoo train mnist_cnn --preset strong --epochs 15  # two conv blocks with BatchNorm and pooling

Adam 1e-3 (cosine-decayed), batch 100, 10 epochs; BatchNorm statistics are carried through
training in `eqx.nn.State` and evaluation runs in inference mode. Reaches 90.29% on
Fashion-MNIST in 129 s of training on 2 cores (88.78% with `--lr-schedule constant`); the
strong preset 93.56% in 15 epochs (26 min). `--augment flip` mirrors training images at
random; it did not help the strong preset here (93.23% in 15 epochs, 93.44% in 25).
Writes config.json, metrics.jsonl, training.png, results.json and the model (model/).
"""

import dataclasses
from typing import Literal

import zoo.data

from . import _cli
from ._classify import train_classifier

ARCHITECTURES = {"experiment": "cnn_mnist", "strong": "cnn_mnist_strong"}
AUGMENTATIONS = {"none": None, "flip": zoo.data.random_flip}


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: Literal["fashion-mnist", "mnist"] = "fashion-mnist"
    data_dir: str | None = None
    download: bool = True  # fetch from the mirrors when no local copy is found
    preset: Literal["experiment", "strong"] = "experiment"
    bn_momentum: float = 0.99  # BatchNorm running statistics; lower it for very short runs
    normalize: Literal["unit", "standard"] = "unit"  # pixels / 255, or standardised
    augment: Literal["none", "flip"] = "none"  # flip: mirror training images at random
    label_smoothing: float = 0.0  # weight on a uniform target in the cross-entropy
    learning_rate: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # decay to 0 by the end; or constant
    batch_size: int = 100
    epochs: int = 10
    seed: int = 0
    steps_per_dispatch: int = 1  # XLA:CPU runs convolutions ~9x slower inside a scan
    train_examples: int | None = None  # a subset, for quick trials
    test_examples: int | None = None
    devices: int | None = None  # data parallel over the first N devices (default all)
    resume: bool = False
    progress: bool = True
    publish: str | None = None  # a tag: also save as <arch>.<tag> under --publish-dir
    publish_dir: str | None = None  # default: $ZOO_HOME/weights


def _add_channel(x):
    return x[:, None, :, :]


def train(config: Config, workdir: str):
    """Train the ConvNet; returns `(model, model_state, history)`."""
    return train_classifier(
        "mnist_cnn",
        config,
        workdir,
        arch=ARCHITECTURES[config.preset],
        arch_kwargs={"bn_momentum": config.bn_momentum},
        prepare=_add_channel,
        layout="chw",
        augment=AUGMENTATIONS[config.augment],
        label_smoothing=config.label_smoothing,
    )


def main(argv: list[str] | None = None) -> int:
    return _cli.run("mnist_cnn", Config, train, argv, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
