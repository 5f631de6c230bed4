"""Image classification on MNIST-format data, shared by `mnist_mlp` and `mnist_cnn`."""

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax

import zoo
import zoo.data
import zoo.hub
import zoo.train

from ._common import plot_classifier_history
from ._config import BaseConfig, ConfigError, number
from ._run import Plan, Publication, Report, Run, run_recipe


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(BaseConfig):
    """The data and optimiser settings both image classifiers share."""

    dataset: Literal["fashion-mnist", "mnist"] = "fashion-mnist"
    # An .npz of your own (keys x, y, x_test, y_test) to train on instead of --dataset; the
    # model's input size and classes are read from it.
    data: str | None = None
    data_dir: str | None = None  # a folder holding DATASET/ with the IDX files, searched first
    download: bool = True  # fetch from the mirrors when no local copy is found
    # auto: uint8 pixels / 255, float inputs unchanged; unit: / 255 always; or standardised
    normalize: Literal["auto", "unit", "standard"] = "auto"
    learning_rate: float = number(1e-3, gt=0)  # Adam's learning rate
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # decay to 0 by the end; or constant
    batch_size: int = number(100, ge=1)  # examples per step (split over the devices)
    epochs: int = number(10, ge=1)  # passes over the training set
    train_examples: int | None = number(None, ge=1)  # the first N training images, for trials
    test_examples: int | None = number(None, ge=1)  # the first N test images


def _subset(recipe: str, name: str, images: np.ndarray, labels: np.ndarray, n: int | None):
    if n is not None and n > len(images):
        raise ConfigError(f"{recipe}: --{name}-examples {n} exceeds the {len(images)} available")
    return (images, labels) if n is None else (images[:n], labels[:n])


def _load_npz(recipe: str, path: str):
    """`(train_x, train_y, test_x, test_y, class_names)` from a user's `.npz`."""
    try:
        train_x, train_y = zoo.data.load_npz(path, "train")
        test_x, test_y = zoo.data.load_npz(path, "test")
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{recipe}: --data {path}: {e}") from None
    classes = int(max(train_y.max(), test_y.max())) + 1
    return train_x, train_y, test_x, test_y, [str(c) for c in range(classes)]


def train_classifier(
    recipe: str,
    config: ClassifierConfig,
    workdir: str | None,
    *,
    arch: str,
    arch_kwargs: dict[str, Any],
    prepare: Callable[[jax.Array], jax.Array],
    layout: Literal["flat", "chw", "hw"],
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    label_smoothing: float = 0.0,
    data_kwargs: Callable[[tuple[int, ...], int], dict[str, Any]] | None = None,
    optimizer: Callable[[optax.ScalarOrSchedule], optax.GradientTransformation] = optax.adam,
    warmup_epochs: float = 0.0,
) -> tuple[Any, eqx.nn.State, list[dict[str, Any]]]:
    """Train the registered architecture `arch` on `config.dataset` with softmax
    cross-entropy, evaluating on the test split after every epoch.

    `optimizer(learning_rate)` builds the optimiser (Adam by default) from the learning rate
    or its schedule: `config.learning_rate`, cosine-decayed to 0 by the end when
    `config.lr_schedule` is `"cosine"`, after a linear warm-up from 0 over the first
    `warmup_epochs` epochs.

    `prepare` turns a batch of normalised images `(batch, 28, 28)` into the model's input
    (flattened for an MLP, a channel axis for a ConvNet); `augment(images, key)`, if given,
    transforms each training batch before it, inside the step. Writes `config.json`,
    `metrics.jsonl`, `training.png`, `results.json` and the final model (`model/`) into
    the run folder (`workdir`, else `config.workdir`, else `runs/<recipe>`).

    With `config.data` (an `.npz` of the user's), `data_kwargs(input_shape, num_classes)`
    gives the builder arguments that fit the model to it (input size, classes).

    Trains data parallel over `config.devices` devices per process (all by default). In a
    multi-process run (`zoo.train.initialize_distributed` called first) each process reads
    its shard of every batch, and only process 0 writes and prints.

    **Returns:** `(model, model_state, history)`, the model in inference mode.
    """

    def body(config: ClassifierConfig, run: Run) -> tuple[Any, Report | None]:
        # Data first: a missing dataset should not leave an empty run folder behind.
        nonlocal arch_kwargs
        if config.data is not None:
            train_x, train_y, test_x, test_y, class_names = _load_npz(recipe, config.data)
            assert data_kwargs is not None, f"{recipe} cannot train on --data"
            arch_kwargs = {
                **arch_kwargs,
                **data_kwargs(train_x.shape[1:], len(class_names)),
            }
        else:
            where = {"data_dir": config.data_dir, "download": config.download}
            try:
                train_x, train_y, class_names = zoo.data.load(config.dataset, "train", **where)
                test_x, test_y, _ = zoo.data.load(config.dataset, "test", **where)
            except zoo.data.CorruptDatasetError as e:
                # The message names the file; deleting it lets the next run fetch it again.
                raise ConfigError(
                    f"{recipe}: --dataset {config.dataset}: {e} (delete the file to download "
                    "it again, or pass --data-dir with a good copy)"
                ) from None
        dataset = config.dataset if config.data is None else Path(config.data).name
        if config.batch_size % run.mesh.devices.size:
            raise ConfigError(
                f"{recipe}: --batch-size {config.batch_size} must be divisible by the "
                f"{run.mesh.devices.size} devices it is split over (--devices)"
            )
        try:
            loss_fn = zoo.train.classification_loss(
                prepare=prepare, augment=augment, label_smoothing=label_smoothing
            )
        except ValueError as e:
            raise ConfigError(f"{recipe}: --label-smoothing: {e}") from None
        train_x, train_y = _subset(recipe, "train", train_x, train_y, config.train_examples)
        test_x, test_y = _subset(recipe, "test", test_x, test_y, config.test_examples)

        # Standardising uses the training set's pixel statistics, for the test set too; the
        # card records them so that `zoo eval` and users feed the model what it trained on.
        standard = config.normalize == "standard"
        mean = float(train_x.mean(dtype=np.float64)) if standard else 0.0  # what "unit" records
        std = float(train_x.std(dtype=np.float64)) if standard else 1.0
        data = zoo.data.batches(
            {"image": train_x, "label": train_y},
            config.batch_size,
            seed=config.seed,
            num_epochs=None,
            normalize=config.normalize,
            # The pipeline refuses statistics it would not use.
            mean=mean if standard else None,
            std=std if standard else None,
        )
        steps = zoo.data.steps_per_epoch(len(train_x), config.batch_size)
        test = {
            "image": zoo.hub.Preprocess(
                layout="hw", normalize=config.normalize, mean=mean, std=std
            )(test_x),
            "label": test_y.astype(np.int32),
        }

        k_model, k_train = jr.split(jr.PRNGKey(config.seed))
        model, model_state = zoo.create_model(arch, key=k_model, **arch_kwargs)
        total, warmup = steps * config.epochs, round(warmup_epochs * steps)
        if config.lr_schedule == "cosine" and warmup > 0:
            learning_rate = optax.warmup_cosine_decay_schedule(
                0.0, config.learning_rate, warmup, max(total, warmup + 1)
            )
        elif config.lr_schedule == "cosine":
            learning_rate = optax.cosine_decay_schedule(config.learning_rate, total)
        elif warmup > 0:
            learning_rate = optax.linear_schedule(0.0, config.learning_rate, warmup)
        else:
            learning_rate = config.learning_rate
        transform = optimizer(learning_rate)
        train_state = zoo.train.init_train_state(
            model, transform, key=k_train, model_state=model_state
        )
        evaluator = zoo.train.Evaluator(
            zoo.train.classification_metrics(prepare=prepare),
            test,
            batch_size=1000,
            prefix="test_",
        )
        fitted = run.fit(
            Plan(
                train_state,
                zoo.train.TrainStep(loss_fn, transform),
                data,
                num_epochs=config.epochs,
                steps_per_epoch=steps,
                eval_fn=evaluator,
            )
        )
        model, state, history = fitted.model, fitted.train_state.model_state, fitted.history
        if not run.main:
            return (model, state, history), None

        final = fitted.final
        plot_classifier_history(
            history, run.folder() / "training.png", f"{recipe} on {dataset}: {arch}"
        )
        summary = {
            "recipe": recipe,
            "dataset": dataset,
            "classes": list(class_names),
            "test_accuracy": final.get("test_accuracy"),
            "train_accuracy": final.get("train_accuracy"),
            "epochs": len(fitted.epochs),
            "train_time_s": fitted.train_time_s,
            "wall_time_s": fitted.wall_s,
        }
        message = (
            f"{recipe}: test accuracy {100 * final.get('test_accuracy', float('nan')):.2f}% "
            f"after {len(fitted.epochs)} epochs; training {fitted.train_time_s:.1f} s, wall "
            f"{fitted.wall_s:.1f} s"
        )
        preprocess = zoo.hub.Preprocess(
            layout=layout, normalize=config.normalize, mean=mean, std=std
        )
        publication = Publication(
            arch=arch,
            arch_config=arch_kwargs,
            model=model,
            state=state,
            dataset=dataset,
            metrics={
                "test_accuracy": summary["test_accuracy"],
                "train_accuracy": summary["train_accuracy"],
                "epochs": len(fitted.epochs),
            },
            preprocess=preprocess,
            golden_input=preprocess(test_x[:8]),
            description=f"{arch} trained by recipes.{recipe} on {dataset}",
        )
        return (model, state, history), Report(message, summary, publication)

    return run_recipe(recipe, config, workdir, body, arch=arch)
